"""The job pages that show jobs: the jobs list, one job, and the job page's live part.

Holds :data:`JOBS_PER_PAGE`, :func:`job_list` (``GET /jobs/``), :func:`job_detail`
(``GET /jobs/<id>/``) and :func:`job_live` (``GET /jobs/<id>/live/``); the job's context comes
from :mod:`subscriptions.job_pages.reading`.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import urlencode
from django.views.decorators.http import require_GET

from accounts.selectors import lobs_visible_to
from portal.keys import key_from_text
from subscriptions import selectors
from subscriptions.job_pages.reading import _job_context, _job_or_404, _render_job, with_progress
from subscriptions.models import Job
from subscriptions.services import jobs

JOBS_PER_PAGE = 25


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
