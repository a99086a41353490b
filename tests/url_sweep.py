"""Every URL the portal serves, filled in with one LOB's objects: for tests that sweep them all.

:func:`urls_of` walks Django's resolver (the admin site aside: its own tests cover it) and fills
each route's path parameters from ``values`` — by the route's kind of object (``jobs`` in
``api/v1/^jobs/...``), then the parameter's name. A route with a parameter ``values`` does not
name fails the sweep that reaches it: whoever adds one decides what it names.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import AuditEvent, Lob, Membership
from subscriptions.models import Job, Listing, Subscription

# Parameters that name nothing (DRF's format suffix).
FREE_PARAMETERS = {"format": "json"}

SKIPPED_PREFIXES = ("admin/",)


def _patterns(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, route)
        else:
            yield route, entry


def _kind(route: str) -> str:
    """The first path segment that names a kind of object: ``jobs`` in ``api/v1/^jobs/...``."""
    for segment in route.replace("^", "").split("/"):
        if segment and segment not in ("api", "v1") and not segment.startswith("("):
            return segment.split("\\")[0]
    return ""


def _reverse(route: str, kwargs: dict[str, str]) -> str:
    """Fill a route (Django path converters or DRF regex groups) without needing its name."""
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: kwargs[m.group(1)], route)
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: kwargs[m.group(1)], path)
    path = path.replace("^", "").replace("$", "").replace("\\.", ".").replace("/?", "/")
    return "/" + path


def urls_of(values: dict[str, dict[str, str]]) -> Iterator[tuple[str, str, bool]]:
    """(route, URL, whether it takes a parameter that names an object) for every route."""
    for route, pattern in _patterns(get_resolver()):
        if route.startswith(SKIPPED_PREFIXES):
            continue
        parameters = set(pattern.pattern.regex.groupindex) - set(FREE_PARAMETERS)
        known = values.get(_kind(route), {})
        unknown = parameters - set(known)
        assert not unknown, f"{route} takes {sorted(unknown)}: say in the sweep what it names"
        kwargs = {name: known[name] for name in parameters}
        kwargs.update({name: value for name, value in FREE_PARAMETERS.items() if name in route})
        yield route, _reverse(route, kwargs), bool(parameters)


def lob_values(
    *, lob: Lob, membership: Membership, subscription: Subscription, job: Job, listing: Listing
) -> dict[str, dict[str, str]]:
    """What each kind of URL parameter names, among one LOB's objects (and an audit event of
    the LOB's, created here)."""
    event = AuditEvent.objects.create(
        action="lob.member_added",
        outcome=AuditEvent.Outcome.SUCCESS,
        lob_slug=lob.slug,
        target_type="membership",
        target_id=str(membership.pk),
    )
    by_slug = {"slug": lob.slug, "lob_slug": lob.slug, "membership_id": str(membership.pk)}
    return {
        "lobs": by_slug,
        "studio": by_slug,
        "aws-accounts": {"account_id": lob.aws_account.account_id},
        "memberships": {"pk": str(membership.pk)},
        "audit-events": {"pk": str(event.pk)},
        "subscriptions": {"pk": str(subscription.pk), "subscription_id": str(subscription.pk)},
        "jobs": {"pk": str(job.pk), "job_id": str(job.pk)},
        "listings": {"product_code": listing.product_code},
    }
