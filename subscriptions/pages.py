"""Browser pages for subscriptions: the list, one subscription, "Try it" and the endpoint sync.

Views are thin: subscriptions are read through the scoped selectors (another LOB's subscription is
"not found", as in the API), and the model is run through the very services the API uses
(``subscription_authorize`` then ``invocation_run``), which check who may do what, record the call
and write the audit trail. A refusal or failure comes back on the page as a message with its code,
never as a 500.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Max, Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET

from accounts.models import User
from accounts.selectors import may_invoke
from portal.errors import NotFoundError, NotPermitted, ServiceError
from portal.middleware import form_body_over_limit
from portal.views import form_action
from subscriptions import selectors
from subscriptions.errors import PayloadTooLarge
from subscriptions.models import CONTENT_TYPES, Endpoint, Invocation, Subscription
from subscriptions.services import access, endpoints, proxy, seller_tokens
from subscriptions.services.access import invoke_permission_check

logger = logging.getLogger(__name__)

# How many of the latest calls the subscription page lists.
LATEST_INVOCATIONS = 10
# The answer shown on the page is cut here; the whole answer is in S3 at its result URI.
ANSWER_DISPLAY_MAX_BYTES = 64 * 1024
# What "Try it" is pre-filled with, per request content type: a few records of the transcoder.
EXAMPLES = {
    "text/csv": (
        "email,phone\n"
        "jane.doe@example.com,+1 (555) 010-0199\n"
        "John.Smith@Example.org,555-010-0123\n"
        "m.garcia@example.net,\n"
    ),
    "application/jsonlines": (
        '{"email": "jane.doe@example.com", "phone": "+1 (555) 010-0199"}\n'
        '{"email": "John.Smith@Example.org"}\n'
    ),
    "application/json": (
        '{"records": [\n'
        '  {"email": "jane.doe@example.com", "phone": "+1 (555) 010-0199"},\n'
        '  {"email": "John.Smith@Example.org"}\n'
        "]}\n"
    ),
}
# Endpoint statuses from DescribeEndpoint, by the pill they get.
_HEALTHY = {"InService"}
_UNHEALTHY = {"Failed", "OutOfService", "NotFound", "Deleting", "RollingBack"}


# --- Helpers --------------------------------------------------------------------------------------


def _unavailable(
    request: HttpRequest, *, status: int, message: str, subscription_id: object = None
) -> HttpResponse:
    return render(
        request,
        "subscriptions/unavailable.html",
        {"status": status, "message": message, "subscription_id": subscription_id},
        status=status,
    )


def _subscription_or_404(
    request: HttpRequest, subscription_id: int
) -> tuple[Subscription | None, HttpResponse | None]:
    """The subscription through the tenancy selector, or the 404 page (missing or another LOB's)."""
    try:
        return selectors.subscription_for_member(request.user, subscription_id), None
    except NotFoundError:
        return None, _unavailable(
            request,
            status=404,
            message=f"There is no subscription {subscription_id} among your LOBs' subscriptions.",
            subscription_id=subscription_id,
        )


def endpoint_of(subscription: Subscription) -> Endpoint | None:
    """The subscription's endpoint, or None (it is selected with the subscription: no query)."""
    return getattr(subscription, "endpoint", None)


def endpoint_health(endpoint: Endpoint | None) -> str:
    """``ok``, ``bad`` or ``off``: the pill for the endpoint's last synced status."""
    if endpoint is None or not endpoint.status:
        return "off"
    if endpoint.status in _HEALTHY and not endpoint.sync_error:
        return "ok"
    if endpoint.status in _UNHEALTHY:
        return "bad"
    return "off"


def unusable_reason(subscription: Subscription, today: date | None = None) -> str:
    """Why the subscription cannot be used now; empty when it can."""
    today = today or timezone.localdate()
    if subscription.is_usable(today):
        return ""
    if not subscription.lob.is_active:
        return f"The line of business {subscription.lob.slug} is inactive."
    if subscription.status == Subscription.Status.EXPIRED:
        ended = f" on {subscription.ends_on:%Y-%m-%d}" if subscription.ends_on else ""
        return f"This subscription expired{ended}; a platform admin must renew it."
    if subscription.status == Subscription.Status.CANCELLED:
        return "This subscription was cancelled."
    if subscription.status == Subscription.Status.PENDING:
        return "This subscription is pending: the Marketplace subscription is not active yet."
    if subscription.starts_on > today:
        return f"This subscription starts on {subscription.starts_on:%Y-%m-%d}."
    return f"This subscription ended on {subscription.ends_on:%Y-%m-%d}."


def subscriptions_with_usage(user: User) -> QuerySet[Subscription]:
    """The user's visible subscriptions, each with its usage counters, in one query."""
    ok = Q(invocations__outcome=Invocation.OUTCOME_OK)
    return selectors.subscriptions_visible_to(user).annotate(
        calls=Count("invocations"),
        succeeded=Count("invocations", filter=ok),
        records=Coalesce(Sum("invocations__records", filter=ok), 0),
        last_call_at=Max("invocations__started_at"),
    )


@dataclass(frozen=True)
class Answer:
    """The model's answer as the page shows it."""

    text: str
    content_type: str
    truncated: bool


def answer_for_display(body: bytes, content_type: str) -> Answer:
    """The answer as text, pretty-printed when JSON or JSON lines (the template escapes it)."""
    truncated = len(body) > ANSWER_DISPLAY_MAX_BYTES
    text = body[:ANSWER_DISPLAY_MAX_BYTES].decode("utf-8", errors="replace")
    media_type = proxy.media_type_of(content_type)
    if not truncated:
        try:
            if media_type == "application/json":
                text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
            elif media_type == "application/jsonlines":
                text = "\n".join(
                    json.dumps(json.loads(line), ensure_ascii=False)
                    for line in text.splitlines()
                    if line.strip()
                )
        except (ValueError, RecursionError):
            pass  # not what it claims to be (or nested past the parser's depth): shown as it came
    return Answer(text=text, content_type=content_type, truncated=truncated)


def subscription_page_context(request: HttpRequest, subscription: Subscription) -> dict[str, Any]:
    """What the subscription page shows (the jobs upload re-renders it with its error)."""
    user = request.user
    listing = subscription.listing
    invocations = list(
        selectors.invocations_visible_to(user)
        .filter(subscription=subscription)
        .order_by("-started_at")[:LATEST_INVOCATIONS]
    )
    reason = unusable_reason(subscription)
    content_types = [t for t in listing.content_types if t in CONTENT_TYPES] or list(CONTENT_TYPES)
    default_type = "text/csv" if "text/csv" in content_types else content_types[0]
    endpoint = endpoint_of(subscription)
    return {
        "subscription": subscription,
        "listing": listing,
        "lob": subscription.lob,
        "endpoint": endpoint,
        "endpoint_health": endpoint_health(endpoint),
        "unusable_reason": reason,
        "usable": not reason,
        "usage": selectors.subscription_usage(subscription),
        "last_call_at": invocations[0].started_at if invocations else None,
        "invocations": invocations,
        "may_invoke": may_invoke(user, subscription.lob),
        "may_manage": selectors.may_manage_subscription(user, subscription),
        "content_types": content_types,
        "try_content_type": default_type,
        "try_body": EXAMPLES.get(default_type, ""),
    }


# --- Reading --------------------------------------------------------------------------------------


@require_GET
@login_required
def subscription_list(request: HttpRequest) -> HttpResponse:
    """``GET /subscriptions/``: my LOBs' subscriptions (all for platform admins), with usage."""
    subscriptions = list(subscriptions_with_usage(request.user))
    today = timezone.localdate()
    for subscription in subscriptions:
        endpoint = endpoint_of(subscription)
        subscription.endpoint_or_none = endpoint
        subscription.health = endpoint_health(endpoint)
        subscription.usable = subscription.is_usable(today)
        subscription.errors = subscription.calls - subscription.succeeded
    return render(request, "subscriptions/subscription_list.html", {"subscriptions": subscriptions})


@require_GET
@login_required
def subscription_detail(request: HttpRequest, subscription_id: int) -> HttpResponse:
    """``GET /subscriptions/<id>/``: the listing, endpoint health, usage, latest calls, Try it."""
    subscription, refusal = _subscription_or_404(request, subscription_id)
    if refusal is not None:
        return refusal
    return render(
        request,
        "subscriptions/subscription_detail.html",
        subscription_page_context(request, subscription),
    )


# --- Try it ---------------------------------------------------------------------------------------


def page_status_for(exc: ServiceError) -> int:
    """A refusal keeps its status (as in the API); an upstream failure is shown with a 200.

    The page itself worked: a 5xx would count as the portal failing, and a proxy in front of it
    may swap the page (and its explanation) for a generic error page.
    """
    return exc.status if exc.status < 500 else 200


@csrf_exempt
@form_action
@login_required
def subscription_try(request: HttpRequest, subscription_id: int) -> HttpResponse:
    """``POST /subscriptions/<id>/try/``: run the model on pasted records through the proxy path.

    The same services as the API: a seller token (cached), then the authorized call, which stores
    the answer in S3 and records it. People who may not run the LOB's models get a 403 page.

    Records over the form's size limit (``DATA_UPLOAD_MAX_MEMORY_SIZE``) get the page back with
    a 413 rather than Django's bare "Bad Request": that is decided before anything reads the body
    (CsrfViewMiddleware would), so it is exempt here and the call itself is CSRF protected. The
    body is never read then and no call is made; the refusal is recorded like the API's when the
    form came from the portal's own page (see :func:`_over_limit_refusal`).
    """
    limit = form_body_over_limit(request)
    if limit is None:
        return _subscription_try(request, subscription_id)
    subscription, refusal = _subscription_or_404(request, subscription_id)
    if refusal is not None:
        return refusal
    error = _over_limit_refusal(request, subscription, limit)
    if error.code in ("not_a_member", "may_not_invoke"):
        return _unavailable(
            request, status=403, message=str(error), subscription_id=subscription.pk
        )
    page = subscription_page_context(request, subscription)
    page["try_error"] = error
    response = render(request, "subscriptions/subscription_detail.html", page, status=error.status)
    response["Cache-Control"] = "no-store"
    return response


def _over_limit_refusal(
    request: HttpRequest, subscription: Subscription, limit: int
) -> ServiceError:
    """Why a Try it over the form's size limit is refused, recorded when it is the person's own.

    The refusal is the API's for the same call: the person's right to invoke first, then the size.
    Without reading the body its CSRF token cannot be checked, so the call is recorded only when
    the browser says the form came from the portal's own origin (browsers send Origin on every
    cross-site POST): another site's page cannot write refusals into someone's audit trail.
    """
    error: ServiceError
    try:
        invoke_permission_check(principal=request.user, subscription=subscription)
    except ServiceError as exc:
        error = exc
    else:
        error = PayloadTooLarge(
            f"The records are over the {limit // 1024:,} KB this form takes; send up to "
            f"{settings.INVOKE_MAX_PAYLOAD_BYTES // (1024 * 1024)} MB to the API, or upload a "
            "file as a job."
        )
    origin = f"{'https' if request.is_secure() else 'http'}://{request.get_host()}"
    if request.META.get("HTTP_ORIGIN") == origin:
        proxy.invocation_refused_unread(
            subscription=subscription,
            principal=request.user,
            bytes_in=int(request.META.get("CONTENT_LENGTH") or 0),
            refusal=error,
            request=request,
        )
    return error


@csrf_protect
def _subscription_try(request: HttpRequest, subscription_id: int) -> HttpResponse:
    subscription, refusal = _subscription_or_404(request, subscription_id)
    if refusal is not None:
        # As in the API: a call aimed at a subscription the person cannot see is audited too.
        access.unknown_subscription_record(
            action="subscription.invoked",
            principal=request.user,
            subscription_ref=str(subscription_id),
            request=request,
        )
        return refusal
    content_type = request.POST.get("content_type", "")[:100]
    body_text = request.POST.get("body", "")
    context: dict[str, Any] = {}
    status = 200
    try:
        seller_token = seller_tokens.subscription_authorize(
            subscription=subscription, principal=request.user, request=request
        )
        result = proxy.invocation_run(
            subscription=subscription,
            principal=request.user,
            token=seller_token.token,
            body=body_text.encode("utf-8"),
            content_type=content_type,
            request=request,
        )
    except NotPermitted as exc:
        if exc.code in ("not_a_member", "may_not_invoke"):
            return _unavailable(
                request, status=403, message=str(exc), subscription_id=subscription.pk
            )
        context["try_error"] = exc
        status = page_status_for(exc)
    except ServiceError as exc:
        context["try_error"] = exc
        status = page_status_for(exc)
    except Exception:
        # A bug, not a refusal: logged with its traceback (the call is already recorded as
        # internal_error), and the person gets the page back rather than a bare 500.
        logger.exception("Try it failed on subscription %s", subscription.pk)
        context["try_error"] = ServiceError(
            "Something went wrong on the portal's side; the call was recorded.",
            code="internal_error",
        )
    else:
        context["try_result"] = result
        context["answer"] = answer_for_display(result.body, result.content_type)
    # Read after the call, so the new invocation shows in the usage and the latest calls.
    page = subscription_page_context(request, subscription)
    page.update(context, try_content_type=content_type, try_body=body_text)
    response = render(request, "subscriptions/subscription_detail.html", page, status=status)
    response["Cache-Control"] = "no-store"  # the answer is the LOB's data
    return response


# --- The endpoint ---------------------------------------------------------------------------------


@form_action
@login_required
def subscription_sync_endpoint(request: HttpRequest, subscription_id: int) -> HttpResponse:
    """``POST /subscriptions/<id>/sync-endpoint/``: DescribeEndpoint now (platform/LOB admins)."""
    subscription, refusal = _subscription_or_404(request, subscription_id)
    if refusal is not None:
        return refusal
    if not selectors.may_manage_subscription(request.user, subscription):
        return _unavailable(
            request,
            status=403,
            message="Only platform admins and this LOB's admins may sync its endpoint.",
            subscription_id=subscription.pk,
        )
    endpoint = endpoint_of(subscription)
    if endpoint is None:
        messages.error(request, "This subscription has no endpoint to sync yet.")
        return redirect("subscription-detail", subscription.pk)
    try:
        endpoint = endpoints.endpoint_sync(
            endpoint=endpoint, acting_user=request.user, request=request
        )
    except ServiceError as exc:
        messages.error(request, f"Could not sync the endpoint: {exc}")
    else:
        if endpoint.sync_error:
            messages.error(
                request,
                f"Endpoint {endpoint.name}: {endpoint.status or 'status unknown'} — "
                f"{endpoint.sync_error}",
            )
        else:
            messages.success(
                request,
                f"Endpoint {endpoint.name} is {endpoint.status}"
                f"{f' on {endpoint.instance_type}' if endpoint.instance_type else ''}.",
            )
    return redirect("subscription-detail", subscription.pk)
