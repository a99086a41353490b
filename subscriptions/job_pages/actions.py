"""What a person does to a job from its page: download its output, cancel it, run it again.

Holds :func:`job_download` (``GET /jobs/<id>/download/``), :func:`job_cancel`
(``POST /jobs/<id>/cancel/``) and :func:`job_run_again` (``POST /jobs/<id>/run-again/``); each
goes through the service the API calls, and a refusal is shown on the job's page.
"""

from __future__ import annotations

import logging

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_GET

from portal import aws_gateway
from portal.errors import NotFoundError, NotPermitted, ServiceError
from portal.views import form_action
from subscriptions import selectors
from subscriptions.errors import UpstreamFailure
from subscriptions.job_pages.reading import (
    _job_or_404,
    _no_such_job,
    _render_job,
    _unavailable,
)
from subscriptions.pages import page_status_for
from subscriptions.services import jobs
from subscriptions.services.job_input import InputRejected

logger = logging.getLogger(__name__)


# --- Pages ----------------------------------------------------------------------------------------


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
