"""Submitting a job from the subscription page: the upload, its content type, the refusals.

Holds :data:`EXTENSION_TYPES` and :func:`job_content_type` (the type to submit as),
:func:`subscription_job_submit` (``POST /subscriptions/<id>/jobs/``, which sets the upload
handlers before the CSRF-protected ``_subscription_job_submit``), ``_submit_refused`` (the
subscription page again, with why) and :func:`new_idempotency_key` (one key per rendering of a
form that starts a job).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect

from portal import aws_gateway
from portal.errors import NotFoundError, NotPermitted, ServiceError
from portal.views import form_action
from subscriptions import selectors
from subscriptions.errors import UpstreamFailure
from subscriptions.models import Subscription
from subscriptions.pages import page_status_for, subscription_page_context
from subscriptions.services import access, jobs
from subscriptions.services.job_input import JOB_CONTENT_TYPES
from subscriptions.uploads import job_upload_handlers

logger = logging.getLogger(__name__)

# As the API: the file's extension names its type before the browser's own guess does.
EXTENSION_TYPES = {".csv": "text/csv", ".jsonl": "application/jsonlines"}


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
