"""Reading a job for its pages: the context the job page and its live part render.

Holds the not-found and refusal pages (``_unavailable``, ``_job_or_404``, ``_no_such_job``), what
the page offers (:func:`may_cancel`, :func:`may_run_again`), the progress bar
(:class:`Progress`, :func:`progress_of`, :func:`with_progress` with :data:`STATUS_PILLS`), chunk
counts (:class:`ChunkCounts`, :func:`chunk_counts`), the timeline (:class:`TimelineEntry`,
:func:`job_timeline`), the results preview (:class:`Preview`, :func:`job_preview`), and the job
page's context and rendering (``_job_context``, ``_render_job``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Min, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from accounts.models import AuditEvent, User
from accounts.selectors import may_invoke
from portal import aws_gateway
from portal.errors import NotFoundError, ServiceError
from subscriptions.job_pages.submit import new_idempotency_key
from subscriptions.models import Job, JobChunk
from subscriptions.services import jobs

logger = logging.getLogger(__name__)

# The job page previews this many output records; the whole output is one download away.
PREVIEW_RECORDS = 20
# Audit events shown in a job's timeline (downloads can be many; the audit log has them all).
TIMELINE_EVENTS = 20
# Status → the pill it wears (the same map is in job_progress.js, which recolours live pills).
STATUS_PILLS = {
    "queued": "off",
    "running": "run",
    "succeeded": "ok",
    "partially_succeeded": "warn",
    "failed": "bad",
    "cancelled": "off",
}


# --- Reading a job ------------------------------------------------------------------------------


def _unavailable(request: HttpRequest, *, status: int, message: str) -> HttpResponse:
    return render(
        request,
        "subscriptions/job_unavailable.html",
        {"status": status, "message": message},
        status=status,
    )


def _job_or_404(request: HttpRequest, job_id: str) -> tuple[Job | None, HttpResponse | None]:
    """The job through the tenancy rule, or the 404 page (missing, malformed or another LOB's)."""
    try:
        return jobs.job_for_member(request.user, job_id), None
    except NotFoundError:
        return None, _no_such_job(request)


def _no_such_job(request: HttpRequest) -> HttpResponse:
    return _unavailable(
        request, status=404, message="There is no such job among your lines of business' jobs."
    )


def may_cancel(user: User, job: Job) -> bool:
    """Whether the page offers Cancel: the rule of ``job_cancel``, for an unfinished job."""
    lob = job.subscription.lob
    return not job.is_finished and user.is_active and (user.is_staff or may_invoke(user, lob))


def may_run_again(user: User, job: Job) -> bool:
    """Whether the page offers Run again: a finished job, to those who may submit its LOB's jobs."""
    return job.is_finished and user.is_active and may_invoke(user, job.subscription.lob)


@dataclass(frozen=True)
class Progress:
    """A job's bar: the share of records done well and done but rejected, in percent."""

    percent: int  # floored, so the bar says 100 only when every record is done
    ok_width: str
    failed_width: str


def progress_of(job: Job) -> Progress:
    """The bar of a job (widths pre-formatted: a locale must not put a comma in CSS)."""
    total = job.records_total
    if not total:
        return Progress(percent=0, ok_width="0", failed_width="0")
    done = min(job.records_done, total)
    failed = min(job.records_failed, done)
    return Progress(
        percent=done * 100 // total,
        ok_width=f"{(done - failed) * 100 / total:.2f}",
        failed_width=f"{failed * 100 / total:.2f}",
    )


def with_progress(job_list: list[Job]) -> list[Job]:
    """The jobs, each with ``progress`` and ``pill`` for the templates."""
    for job in job_list:
        job.progress = progress_of(job)
        job.pill = STATUS_PILLS.get(job.status, "off")
    return job_list


@dataclass(frozen=True)
class ChunkCounts:
    """How a job's chunks stand, and when the first and the last of them finished."""

    pending: int
    succeeded: int
    failed: int
    skipped: int
    first_finished_at: datetime | None
    last_finished_at: datetime | None


def chunk_counts(job: Job) -> ChunkCounts:
    """The job's chunks by status and the span in which they ran, in one query."""
    ran = ~Q(status=JobChunk.Status.SKIPPED) & Q(finished_at__isnull=False)
    figures = JobChunk.objects.filter(job=job).aggregate(
        pending=Count("pk", filter=Q(status=JobChunk.Status.PENDING)),
        succeeded=Count("pk", filter=Q(status=JobChunk.Status.SUCCEEDED)),
        failed=Count("pk", filter=Q(status=JobChunk.Status.FAILED)),
        skipped=Count("pk", filter=Q(status=JobChunk.Status.SKIPPED)),
        first_finished_at=Min("finished_at", filter=ran),
        last_finished_at=Max("finished_at", filter=ran),
    )
    return ChunkCounts(**figures)


@dataclass(frozen=True)
class TimelineEntry:
    """One moment in a job's life."""

    at: datetime
    title: str
    detail: str = ""
    tone: str = "off"  # a pill colour: ok, bad, run, warn, off
    kind: str = ""  # for tests and styling: submitted, started, chunk, finished, downloaded...


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def job_timeline(job: Job, chunks: ChunkCounts) -> list[TimelineEntry]:
    """The job's states in order, from its timestamps, its chunks and its audit events."""
    submitter = job.submitted_by.username if job.submitted_by else "a deleted user"
    entries = [
        TimelineEntry(
            at=job.created_at,
            title=f"Submitted by {submitter}",
            detail=(
                f"{_plural(job.records_total, 'record')} in {_plural(job.chunks_total, 'chunk')}, "
                f"{job.content_type}"
            ),
            kind="submitted",
        )
    ]
    if job.started_at:
        entries.append(
            TimelineEntry(at=job.started_at, title="Started", tone="run", kind="started")
        )
    ran = chunks.succeeded + chunks.failed
    if chunks.first_finished_at:
        entries.append(
            TimelineEntry(
                at=chunks.first_finished_at,
                title="First chunk finished",
                tone="run",
                kind="first-chunk",
            )
        )
    if chunks.last_finished_at and ran > 1:
        last_title = "Last chunk finished" if chunks.pending == 0 else "Latest chunk finished"
        entries.append(
            TimelineEntry(
                at=chunks.last_finished_at,
                title=last_title,
                detail=f"{ran} of {_plural(job.chunks_total, 'chunk')} run",
                tone="run",
                kind="last-chunk",
            )
        )
    events = list(
        AuditEvent.objects.filter(target_type="job", target_id=str(job.pk))
        .filter(action__in=("job.cancelled", "job.downloaded"))
        .order_by("occurred_at")[:TIMELINE_EVENTS]
    )
    cancelled_by = next(
        (e.actor_username or "a deleted user" for e in events if e.action == "job.cancelled"), ""
    )
    if job.finished_at:
        entries.append(_finished_entry(job, job.finished_at, cancelled_by))
    entries.extend(
        TimelineEntry(
            at=event.occurred_at,
            title=f"Output downloaded by {event.actor_username or 'a deleted user'}",
            kind="downloaded",
        )
        for event in events
        if event.action == "job.downloaded"
    )
    return sorted(entries, key=lambda entry: entry.at)


def _finished_entry(job: Job, at: datetime, cancelled_by: str) -> TimelineEntry:
    if job.status == Job.Status.SUCCEEDED:
        return TimelineEntry(
            at=at,
            title="Succeeded",
            detail=f"every one of {_plural(job.records_total, 'record')} has its result",
            tone="ok",
            kind="finished",
        )
    if job.status == Job.Status.PARTIALLY_SUCCEEDED:
        return TimelineEntry(
            at=at,
            title="Partially succeeded",
            detail=f"the model rejected {_plural(job.records_failed, 'record')}",
            tone="warn",
            kind="finished",
        )
    if job.status == Job.Status.CANCELLED:
        who = f" by {cancelled_by}" if cancelled_by else ""
        return TimelineEntry(
            at=at,
            title=f"Cancelled{who}",
            # Counted at the end: chunks already running when it was cancelled finished too.
            detail=f"{job.records_done:,} of {_plural(job.records_total, 'record')} have results",
            kind="finished",
        )
    return TimelineEntry(
        at=at,
        title="Failed",
        detail=f"{job.error_code}: {job.error_message}" if job.error_code else job.error_message,
        tone="bad",
        kind="finished",
    )


@dataclass
class Preview:
    """The first output records as a table: one column per result field."""

    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    available: int = 0
    error: str = ""


def _flat(entry: dict[str, Any]) -> dict[str, str]:
    """A result record flattened one level (``ids.email``) into printable cells."""
    cells: dict[str, str] = {}
    for key, value in entry.items():
        if isinstance(value, dict):
            for inner, item in value.items():
                cells[f"{key}.{inner}"] = _cell(item)
        else:
            cells[key] = _cell(value)
    return cells


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def job_preview(job: Job, principal: User) -> Preview | None:
    """The first output records of a finished job: from its merged output, or for a job stopped
    before the merge (cancelled) from the parts its finished chunks wrote; None when there are
    none."""
    if not job.is_finished:
        return None
    if not job.output_uri and not job.chunks.exclude(output_key="").exists():
        return None
    try:
        available, records = jobs.job_results(
            job=job, principal=principal, offset=0, limit=PREVIEW_RECORDS
        )
    except (aws_gateway.AwsError, ServiceError) as exc:
        # The page still works without the preview; the download may well work too.
        logger.warning("job %s: no preview (%s)", job.pk, type(exc).__name__)
        return Preview(error="The results cannot be read right now; try again in a moment.")
    rows = [_flat(record) for record in records]
    # "record" and "line" lead; "error" closes; the model's own fields in between, as they come.
    columns: list[str] = []
    for row in rows:
        columns.extend(name for name in row if name not in columns)
    middle = [c for c in columns if c not in ("record", "line", "error")]
    ordered = ["record", "line", *middle] + (["error"] if "error" in columns else [])
    return Preview(
        columns=ordered,
        rows=[{"cells": [row.get(c, "") for c in ordered], "bad": "error" in row} for row in rows],
        available=available,
    )


def _job_context(request: HttpRequest, job: Job, **extra: Any) -> dict[str, Any]:
    user = request.user
    with_progress([job])
    chunks = chunk_counts(job)
    errors = jobs.job_record_errors(job, limit=PREVIEW_RECORDS)
    return {
        "job": job,
        "subscription": job.subscription,
        "listing": job.subscription.listing,
        "lob": job.subscription.lob,
        "chunks": chunks,
        "timeline": job_timeline(job, chunks),
        "record_errors": errors,
        "more_record_errors": max(job.records_failed - len(errors), 0),
        "preview": job_preview(job, user),
        "may_cancel": may_cancel(user, job),
        "may_run_again": may_run_again(user, job),
        # One key per rendering of the button: a double click starts one job, not two.
        "run_again_key": new_idempotency_key(),
        **extra,
    }


def _render_job(request: HttpRequest, job: Job, *, status: int = 200, **extra: Any) -> HttpResponse:
    response = render(
        request, "subscriptions/job_detail.html", _job_context(request, job, **extra), status=status
    )
    response["Cache-Control"] = "no-store"  # the preview is the LOB's data
    return response
