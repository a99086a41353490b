"""Browser pages for inference jobs: submitting a file, the jobs list, one job, download, cancel.

Views are thin, as in :mod:`subscriptions.pages`: jobs are read through the tenancy rule of the
API (``jobs_visible_to`` / ``job_for_member``: another LOB's job is "not found"), and every change
goes through the very services the API calls (``job_submit``, ``job_cancel``,
``job_download_url``), which decide who may do what and write the audit trail. Progress moves in
the browser without a reload: ``static/js/job_progress.js`` polls ``/api/v1/jobs/`` (session
authentication) for unfinished jobs and asks :func:`job_live` for the page's changing part when a
job's status changes.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Max, Min, Q
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET

from accounts.models import AuditEvent, User
from accounts.selectors import lobs_visible_to, may_invoke
from portal import aws_gateway
from portal.errors import NotFoundError, NotPermitted, ServiceError
from portal.keys import key_from_text
from portal.views import form_action
from subscriptions import selectors
from subscriptions.errors import UpstreamFailure
from subscriptions.models import Job, JobChunk, Subscription
from subscriptions.pages import page_status_for, subscription_page_context
from subscriptions.services import access, jobs
from subscriptions.services.job_input import JOB_CONTENT_TYPES, InputRejected
from subscriptions.uploads import job_upload_handlers

logger = logging.getLogger(__name__)

JOBS_PER_PAGE = 25
# The job page previews this many output records; the whole output is one download away.
PREVIEW_RECORDS = 20
# Audit events shown in a job's timeline (downloads can be many; the audit log has them all).
TIMELINE_EVENTS = 20
# As the API: the file's extension names its type before the browser's own guess does.
EXTENSION_TYPES = {".csv": "text/csv", ".jsonl": "application/jsonlines"}
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


# --- Pages ----------------------------------------------------------------------------------------


@require_GET
@login_required
def job_list(request: HttpRequest) -> HttpResponse:
    """``GET /jobs/``: my LOBs' jobs, newest first, by LOB, status and subscription."""
    user = request.user
    lobs = list(lobs_visible_to(user).order_by("slug"))
    queryset = jobs.jobs_visible_to(user).order_by("-created_at", "-pk")
    # Values that name nothing the person can see filter nothing in, never something out of reach.
    lob = request.GET.get("lob", "")
    if lob:
        queryset = queryset.filter(subscription__lob__slug=lob)
    status = request.GET.get("status", "")
    if status in Job.Status.values:
        queryset = queryset.filter(status=status)
    else:
        status = ""
    subscription_id = request.GET.get("subscription", "")
    if subscription_id:
        pk = key_from_text(subscription_id)
        queryset = queryset.filter(subscription_id=pk) if pk else queryset.none()
        chosen = (
            selectors.subscriptions_visible_to(user)
            .select_related("listing", "lob")
            .filter(pk=pk)
            .first()
            if pk
            else None
        )
        subscription_label = f"{chosen.listing.name} · {chosen.lob.slug}" if chosen else ""
    else:
        subscription_label = ""
    page = Paginator(queryset, JOBS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "subscriptions/job_list.html",
        {
            "page": page,
            "jobs": with_progress(list(page.object_list)),
            "lobs": lobs,
            "statuses": Job.Status.choices,
            "chosen_lob": lob,
            "chosen_status": status,
            "chosen_subscription": subscription_id,
            "subscription_label": subscription_label,
            "without_subscription": urlencode(
                {k: v for k, v in (("lob", lob), ("status", status)) if v}
            ),
            "filtered": bool(lob or status or subscription_id),
        },
    )


@require_GET
@login_required
def job_detail(request: HttpRequest, job_id: str) -> HttpResponse:
    """``GET /jobs/<id>/``: status, live progress, timeline, record errors, results preview."""
    job, refusal = _job_or_404(request, job_id)
    if refusal is not None:
        return refusal
    return _render_job(request, job)


@require_GET
@login_required
def job_live(request: HttpRequest, job_id: str) -> HttpResponse:
    """``GET /jobs/<id>/live/``: the job page's changing part, fetched when the status changes."""
    job, refusal = _job_or_404(request, job_id)
    if refusal is not None:
        return refusal
    response = render(request, "subscriptions/_job_live.html", _job_context(request, job))
    response["Cache-Control"] = "no-store"
    return response


@require_GET
@login_required
def job_download(request: HttpRequest, job_id: str) -> HttpResponse:
    """``GET /jobs/<id>/download/``: 302 to a short-lived URL of the merged output.

    The URL is a bearer credential for a minute: it goes in the Location header only, never in a
    log line or a page.
    """
    job, refusal = _job_or_404(request, job_id)
    if refusal is not None:
        return refusal
    try:
        url = jobs.job_download_url(job=job, principal=request.user, request=request)
    except ServiceError as exc:
        return _render_job(request, job, status=page_status_for(exc), action_error=exc)
    except aws_gateway.AwsError:
        logger.warning("job %s: no download URL (AWS error)", job.pk)
        failure = UpstreamFailure(
            "The download link cannot be made right now; try again in a moment."
        )
        return _render_job(request, job, status=page_status_for(failure), action_error=failure)
    response = HttpResponseRedirect(url)
    response["Cache-Control"] = "no-store"
    return response


@form_action
@login_required
def job_cancel(request: HttpRequest, job_id: str) -> HttpResponse:
    """``POST /jobs/<id>/cancel/``: stop the job (analysts and admins of its LOB)."""
    job, refusal = _job_or_404(request, job_id)
    if refusal is not None:
        return refusal
    try:
        job = jobs.job_cancel(job=job, acting_user=request.user, request=request)
    except NotPermitted as exc:
        return _unavailable(request, status=403, message=str(exc))
    except ServiceError as exc:  # already finished (409)
        return _render_job(request, job, status=page_status_for(exc), action_error=exc)
    messages.success(
        request,
        f"Job cancelled: {job.records_done:,} of {job.records_total:,} records were done so far, "
        "and chunks already running will finish; their results are kept and shown below (a "
        "cancelled job writes no merged file).",
    )
    return redirect("job-detail", job.pk)


@form_action
@login_required
def job_run_again(request: HttpRequest, job_id: str) -> HttpResponse:
    """``POST /jobs/<id>/run-again/``: a new job over the same input (its LOB's analysts, admins).

    Nothing is uploaded again: the input is read back from the job's own copy in the LOB's results
    location, checked again as any input is, and copied to the new job's. The finished job stays
    as it is. A failure (subscription inactive, input gone) is shown on the finished job's page.
    """
    job, refusal = _job_or_404(request, job_id)
    if refusal is not None:
        return refusal
    try:
        subscription = selectors.subscription_for_member(request.user, job.subscription_id)
        again, created = jobs.job_submit(
            subscription=subscription,
            principal=request.user,
            content_type=job.content_type,
            input_uri=job.input_uri,
            idempotency_key=request.POST.get("idempotency_key", ""),
            request=request,
        )
    except NotPermitted as exc:
        if exc.code in ("not_a_member", "may_not_invoke"):
            return _unavailable(request, status=403, message=str(exc))
        return _render_job(request, job, status=page_status_for(exc), action_error=exc)
    except NotFoundError:  # the person left the LOB since the page was shown
        return _no_such_job(request)
    except ServiceError as exc:
        if exc.code == "input_not_found":  # the API's wording names input_uri, not this page's
            exc = InputRejected(
                "This job's input is no longer in the LOB's results location (deleted, or "
                "expired by a lifecycle rule): upload the file again from the subscription page.",
                code=exc.code,
            )
        return _render_job(request, job, status=page_status_for(exc), action_error=exc)
    except aws_gateway.AwsError:
        logger.warning("job %s run again: AWS error", job.pk)
        failure = UpstreamFailure("The input could not be read right now; try again in a moment.")
        return _render_job(request, job, status=page_status_for(failure), action_error=failure)
    if created:
        messages.success(
            request,
            f"Running again as a new job, over the same input as job {str(job.pk)[:8]}.",
        )
    else:
        messages.info(request, "This form was already submitted: here is the job it started.")
    return HttpResponseRedirect(reverse("job-detail", args=[again.pk]) + "#progress")


# --- Submitting from the subscription page --------------------------------------------------------


def job_content_type(upload: Any, chosen: str) -> str:
    """The file type to submit as: the one chosen, else by extension, else the browser's guess."""
    if chosen in JOB_CONTENT_TYPES:
        return chosen
    name = getattr(upload, "name", "") or ""
    extension = "." + name.rpartition(".")[2].lower() if "." in name else ""
    return EXTENSION_TYPES.get(extension) or getattr(upload, "content_type", "") or ""


@csrf_exempt
@form_action
@login_required
def subscription_job_submit(request: HttpRequest, subscription_id: int) -> HttpResponse:
    """``POST /subscriptions/<id>/jobs/``: submit the uploaded file as a job, then show the job.

    Exempt here only to set the upload handlers, which must happen before anything reads the
    body, and CsrfViewMiddleware reads it; the inner view is CSRF protected (Django's documented
    pattern for custom upload handlers).
    """
    request.upload_handlers = job_upload_handlers(request)
    return _subscription_job_submit(request, subscription_id)


def _submit_refused(
    request: HttpRequest, subscription: Subscription, exc: ServiceError
) -> HttpResponse:
    """The subscription page again, with why the job was not submitted (and a fresh key)."""
    page = subscription_page_context(request, subscription)
    page["job_error"] = exc
    response = render(
        request, "subscriptions/subscription_detail.html", page, status=page_status_for(exc)
    )
    response["Cache-Control"] = "no-store"
    return response


@csrf_protect
def _subscription_job_submit(request: HttpRequest, subscription_id: int) -> HttpResponse:
    try:
        subscription = selectors.subscription_for_member(request.user, subscription_id)
    except NotFoundError:
        # As in the API: a submission aimed at a subscription the person cannot see is audited.
        access.unknown_subscription_record(
            action="job.submitted",
            principal=request.user,
            subscription_ref=str(subscription_id),
            request=request,
        )
        return render(
            request,
            "subscriptions/unavailable.html",
            {
                "status": 404,
                "message": (
                    f"There is no subscription {subscription_id} among your LOBs' subscriptions."
                ),
            },
            status=404,
        )
    upload = request.FILES.get("file")
    if upload is None:
        return _submit_refused(
            request, subscription, ServiceError("Choose a file to upload.", code="no_file")
        )
    try:
        job, created = jobs.job_submit(
            subscription=subscription,
            principal=request.user,
            content_type=job_content_type(upload, request.POST.get("file_type", "")),
            file=upload,
            idempotency_key=request.POST.get("idempotency_key", ""),
            request=request,
        )
    except NotPermitted as exc:
        if exc.code in ("not_a_member", "may_not_invoke"):
            return render(
                request,
                "subscriptions/unavailable.html",
                {"status": 403, "message": str(exc), "subscription_id": subscription.pk},
                status=403,
            )
        return _submit_refused(request, subscription, exc)
    except ServiceError as exc:
        return _submit_refused(request, subscription, exc)
    except aws_gateway.AwsError:
        logger.warning("job submission on subscription %s: AWS error", subscription.pk)
        return _submit_refused(
            request,
            subscription,
            UpstreamFailure("The input could not be stored right now; try again in a moment."),
        )
    finally:
        upload.close()  # the temporary file goes now, not when the request is collected
    if not created:
        messages.info(request, "This form was already submitted: here is the job it started.")
    # The form posts to .../jobs/#jobs (a refusal shows under it); a fragment of its own keeps the
    # browser from carrying "#jobs" over to the job page.
    return HttpResponseRedirect(reverse("job-detail", args=[job.pk]) + "#progress")


def new_idempotency_key() -> str:
    """A key for one rendering of the upload form: submitting it twice starts one job."""
    return f"form-{uuid.uuid4()}"
