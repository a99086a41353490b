"""The Activity page of a line of business: its part of the audit trail, for its admins.

Until now a LOB admin could read the audit trail only through the API. The page reads the same
events the API does (``selectors.audit_events_visible_to``, narrowed to the LOB) and filters them
with the API's own ``AuditEventFilter``: the filters the page applies are, word for word, the query
of its "Download CSV" link to ``/api/v1/audit-events/export/``, so the file holds what the page
listed. A filter value that cannot be read (a bad date, an unknown outcome) is named in a notice
and left out, from the page and from that link; the page still answers 200.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.views.decorators.http import require_GET

from accounts import selectors
from accounts.api import AuditEventFilter
from accounts.audit import FORBIDDEN_DETAIL_KEYS
from accounts.models import AuditEvent, Lob
from accounts.pages import lob_scoped, managers_only

EVENTS_PER_PAGE = 50
# One value of a generic detail summary; the whole summary is cut in the template (title: all).
VALUE_LIMIT = 60


@dataclass
class ActivityFilters:
    """The page's filters: as typed (for the form), as applied (the API's query), and why any
    was left out."""

    typed: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def filtered(self) -> bool:
        """Whether the person asked for any filter (valid or not): "Clear" is then offered."""
        return any(self.typed.values())


def _date(value: str) -> date | None:
    """A date input's ``YYYY-MM-DD``, or None for anything else (the caller names the problem)."""
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def read_filters(params: QueryDict, lob: Lob) -> ActivityFilters:
    """Read the GET form into the API's filter terms; what cannot be read is a problem, not a 500.

    Days are UTC days, like the times the page shows. ``until`` is inclusive on the page (a date
    input names a whole day), so the API's exclusive ``until`` is the next day's midnight.
    """
    typed = {
        # Lengths of the columns compared: a longer value cannot match anyway.
        "action": params.get("action", "").strip()[:64],
        "outcome": params.get("outcome", "").strip(),
        "actor": params.get("actor", "").strip()[:150],
        "since": params.get("since", "").strip(),
        "until": params.get("until", "").strip(),
    }
    filters = ActivityFilters(typed=typed, query={"lob": lob.slug})
    for name in ("action", "actor"):
        if typed[name]:
            filters.query[name] = typed[name]
    if typed["outcome"] in AuditEvent.Outcome.values:
        filters.query["outcome"] = typed["outcome"]
    elif typed["outcome"]:
        filters.problems.append(f"Outcome “{typed['outcome'][:40]}” is not one of the outcomes.")
    since, until = _date(typed["since"]), _date(typed["until"])
    if since is not None:
        filters.query["since"] = since.isoformat()
    elif typed["since"]:
        filters.problems.append(f"“{typed['since'][:40]}” is not a date (since).")
    if until is not None and until < date.max:  # the last day there is: no upper bound
        filters.query["until"] = (until + timedelta(days=1)).isoformat()
    elif typed["until"] and until is None:
        filters.problems.append(f"“{typed['until'][:40]}” is not a date (until).")
    return filters


def detail_summary(event: AuditEvent) -> str:
    """A short human reading of ``detail``: a call's status, time and sizes; else key=value pairs.

    Keys that may never be recorded are skipped here as well: an event written around
    ``audit_record`` (or before a key joined the list) still does not show one.
    """
    detail = event.detail if isinstance(event.detail, dict) else {"detail": event.detail}
    detail = {k: v for k, v in detail.items() if str(k).lower() not in FORBIDDEN_DETAIL_KEYS}
    if event.action == "subscription.invoked" and "status" in detail:
        parts = [f"HTTP {detail['status']}"]
        if isinstance(detail.get("duration_ms"), int):
            parts.append(f"{detail['duration_ms']:,} ms")
        for key, label in (("bytes_in", "in"), ("bytes_out", "out")):
            if isinstance(detail.get(key), int):
                parts.append(f"{filesizeformat(detail[key])} {label}")
        return " · ".join(parts)
    # In key order: PostgreSQL's jsonb keeps its own order (shorter keys first), and an event
    # should read the same whichever database holds it.
    return ", ".join(f"{key}={_short(value)}" for key, value in sorted(detail.items()))


# Targets with a page of their own that the Activity page's readers (the LOB's admins, platform
# admins) may open: (URL name, what the target id must look like to be one).
_TARGET_PAGES = {
    "subscription": ("subscription-detail", re.compile(r"\d{1,18}")),
    "job": ("job-detail", re.compile(r"[0-9a-fA-F-]{32,36}")),
    "lob": ("lob-detail", re.compile(r"[-a-zA-Z0-9_]{1,64}")),
}


def target_url(event: AuditEvent) -> str:
    """The page of the event's target (a subscription, a job, the LOB), or "" when it has none.

    Only ids of the right shape become links: a refusal records what the caller named, which may
    be anything.
    """
    page = _TARGET_PAGES.get(event.target_type)
    if page is None or not page[1].fullmatch(event.target_id or ""):
        return ""
    return reverse(page[0], args=[event.target_id])


def _short(value: object) -> str:
    """One value of a summary: text as it is, anything else as compact JSON; cut at VALUE_LIMIT."""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    )
    return text if len(text) <= VALUE_LIMIT else f"{text[: VALUE_LIMIT - 1]}…"


def _action_choices(present: list[str], typed: str) -> list[tuple[str, str]]:
    """The actions of the LOB's events, each family (``job.``) first when it has several: the
    API's action filter is a prefix, so a family's events are one choice away. A prefix from the
    URL that is none of these stays chosen, so the form shows the filter that is applied."""
    choices: list[tuple[str, str]] = []
    families: dict[str, list[str]] = {}
    for action in present:
        families.setdefault(action.split(".", 1)[0] + ".", []).append(action)
    for family, actions in families.items():
        if len(actions) > 1:
            choices.append((family, f"{family}* (all {len(actions)})"))
        choices.extend((action, action) for action in actions)
    if typed and typed not in {value for value, _ in choices}:
        choices.insert(0, (typed, f"{typed}*"))
    return choices


@require_GET
@login_required
@lob_scoped
@managers_only  # the rule of audit_events_visible_to: platform admins and the LOB's admins
def lob_activity(request: HttpRequest, lob: Lob) -> HttpResponse:
    """``GET /lobs/<slug>/activity/``: the LOB's audit events, newest first, filtered, 50 a page."""
    visible = selectors.audit_events_visible_to(request.user)
    filters = read_filters(request.GET, lob)
    events = AuditEventFilter(
        filters.query,
        queryset=visible.order_by("-occurred_at", "-id"),
        request=request,
    )
    # read_filters leaves the API nothing to refuse; should it still (a limit of the API's own),
    # the page says so and drops the value, and so does the CSV link (the API would answer 400).
    for name, errors in events.errors.items():
        filters.problems.append(f"{name}: {' '.join(errors)}")
        filters.query.pop(name, None)
    page = Paginator(events.qs, EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    for event in rows:
        event.summary = detail_summary(event)
        event.target_url = target_url(event)
    present = list(
        visible.filter(lob_slug=lob.slug)
        .order_by("action")
        .values_list("action", flat=True)
        .distinct()
    )
    return render(
        request,
        "accounts/lob_activity.html",
        {
            "lob": lob,
            "page": page,
            "events": rows,
            "filters": filters,
            "typed": filters.typed,
            "action_choices": _action_choices(present, filters.typed["action"]),
            "outcomes": AuditEvent.Outcome.choices,
            "csv_url": f"{reverse('v1:audit-event-export')}?{urlencode(filters.query)}",
        },
    )
