"""Template tags for inference jobs: the upload card on the subscription page, and status pills.

The subscription page is rendered by :mod:`subscriptions.pages`; the jobs card brings its own
context here, so that page needs to know nothing about jobs.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings
from django.utils import timezone

from subscriptions import job_pages
from subscriptions.models import Job, Subscription
from subscriptions.services import jobs
from subscriptions.services.job_input import JOB_CONTENT_TYPES

register = template.Library()

# How many of the subscription's latest jobs its page lists.
LATEST_JOBS = 5


@register.inclusion_tag("subscriptions/_job_upload.html", takes_context=True)
def job_upload_card(context: template.Context, subscription: Subscription) -> dict[str, Any]:
    """The subscription page's Jobs card: the upload form (for those who may run the model),
    the error of a refused submission, and the subscription's latest jobs with live progress."""
    request = context["request"]
    listing = subscription.listing
    job_types = [t for t in JOB_CONTENT_TYPES if t in (listing.content_types or [])]
    latest = job_pages.with_progress(
        list(jobs.jobs_visible_to(request.user).filter(subscription=subscription)[:LATEST_JOBS])
    )
    return {
        "subscription": subscription,
        "lob": subscription.lob,
        "job_types": job_types,
        "unusable_reason": context.get("unusable_reason", ""),
        "may_submit": bool(context.get("may_invoke")) and not context.get("unusable_reason"),
        "job_error": context.get("job_error"),
        "idempotency_key": job_pages.new_idempotency_key(),
        "max_bytes": settings.JOBS_MAX_INPUT_BYTES,
        "latest_jobs": latest,
        "csrf_token": context.get("csrf_token"),
    }


# After a cancel, a chunk whose model call was under way still writes its part and is counted
# (within a chunk's call and write: seconds). The page follows the job this much longer.
CANCEL_SETTLE_SECONDS = 30


@register.filter
def settling_ms(job: Job) -> int:
    """Milliseconds the page should still follow a job cancelled moments ago; 0 otherwise."""
    if job.status != Job.Status.CANCELLED or job.finished_at is None:
        return 0
    left = CANCEL_SETTLE_SECONDS - (timezone.now() - job.finished_at).total_seconds()
    return max(int(left * 1000), 0)


@register.filter
def count(value: int | None) -> str:
    """A count as people read it, thousands grouped: ``100,000`` (as job_progress.js shows it)."""
    return f"{value:,}" if isinstance(value, int) else ""


@register.filter
def job_pill(status: str) -> str:
    """The pill colour of a job status."""
    return job_pages.STATUS_PILLS.get(status, "off")


@register.filter
def job_status_label(status: str) -> str:
    """A job status as people read it: ``partially succeeded``."""
    return str(Job.Status(status).label).lower() if status in Job.Status.values else status
