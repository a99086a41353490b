"""Browser pages for inference jobs: submitting a file, the jobs list, one job, download, cancel.

Views are thin, as in :mod:`subscriptions.pages`: jobs are read through the tenancy rule of the
API (``jobs_visible_to`` / ``job_for_member``: another LOB's job is "not found"), and every change
goes through the very services the API calls (``job_submit``, ``job_cancel``,
``job_download_url``), which decide who may do what and write the audit trail. Progress moves in
the browser without a reload: ``static/js/job_progress.js`` polls ``/api/v1/jobs/`` (session
authentication) for unfinished jobs and asks :func:`job_live` for the page's changing part when a
job's status changes.

Modules: ``reading`` (the job's context: refusal pages, what the page offers, progress and status
pills, chunk counts, the timeline, the results preview), ``views`` (the jobs list, one job, its
live part), ``actions`` (download, cancel, run again), ``submit`` (the upload from the
subscription page, its content type and refusals, the form's idempotency key). The URL
configuration and the template tags use the names below, as ``job_pages.job_list``; tests that
replace a name patch it in the module that looks it up.
"""

from subscriptions.job_pages.actions import job_cancel, job_download, job_run_again
from subscriptions.job_pages.reading import (
    PREVIEW_RECORDS,
    STATUS_PILLS,
    TIMELINE_EVENTS,
    ChunkCounts,
    Preview,
    Progress,
    TimelineEntry,
    chunk_counts,
    job_preview,
    job_timeline,
    may_cancel,
    may_run_again,
    progress_of,
    with_progress,
)
from subscriptions.job_pages.submit import (
    EXTENSION_TYPES,
    job_content_type,
    new_idempotency_key,
    subscription_job_submit,
)
from subscriptions.job_pages.views import JOBS_PER_PAGE, job_detail, job_list, job_live

__all__ = [
    "EXTENSION_TYPES",
    "JOBS_PER_PAGE",
    "PREVIEW_RECORDS",
    "STATUS_PILLS",
    "TIMELINE_EVENTS",
    "ChunkCounts",
    "Preview",
    "Progress",
    "TimelineEntry",
    "chunk_counts",
    "job_cancel",
    "job_content_type",
    "job_detail",
    "job_download",
    "job_list",
    "job_live",
    "job_preview",
    "job_run_again",
    "job_timeline",
    "may_cancel",
    "may_run_again",
    "new_idempotency_key",
    "progress_of",
    "subscription_job_submit",
    "with_progress",
]
