"""The authorized proxy: one call from a principal with a seller token to the model and back.

``invocation_run`` re-checks the principal and the subscription when the call runs, checks the
payload, verifies the seller token, calls SageMaker InvokeEndpoint in the LOB's account (assumed
role, cached), stores the answer in the account's results location with server-side encryption,
and records the call (an ``Invocation`` row and an audit event), whether it was allowed or not.

Neither the token nor the payload is ever logged or recorded; only their sizes are.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from accounts.services.aws_verification import account_access
from portal import aws_gateway
from portal.errors import ServiceError
from subscriptions.errors import (
    EndpointUnavailable,
    InvocationThrottled,
    ModelFailed,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedContentType,
    UpstreamFailure,
    UpstreamTimeout,
)
from subscriptions.models import Invocation, Subscription
from subscriptions.services import result_store
from subscriptions.services.access import invoke_permission_check
from subscriptions.services.seller_tokens import seller_token_verify

logger = logging.getLogger(__name__)

_MODEL_MESSAGE_MAX = 1000


@dataclass(frozen=True)
class InvocationResult:
    """The model's answer, where it is stored, and the record of the call.

    ``timings`` splits the call's wall time in milliseconds: ``authorization`` (permission,
    payload and token checks), ``credentials`` (clients and assumed-role credentials), ``invoke``
    (InvokeEndpoint), ``store`` (the S3 write) and ``record`` (the Invocation row and audit event).

    ``record`` is set when the caller asked to write the record itself (``defer_record``): until
    it is called, ``invocation`` is the row as it will be saved, not yet in the database.
    """

    invocation: Invocation
    body: bytes = field(repr=False)
    content_type: str
    result_uri: str
    timings: dict[str, float] = field(default_factory=dict, compare=False)
    record: Callable[[], Invocation] | None = field(default=None, repr=False, compare=False)


@dataclass
class _Call:
    """What is known about a call so far, for its record."""

    id: uuid.UUID
    started_at: datetime
    started: float
    bytes_in: int
    records: int = 0
    bytes_out: int = 0
    result_uri: str = ""
    stored: bool = False
    job_id: uuid.UUID | str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _mark: float = 0.0

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = (now - (self._mark or self.started)) * 1000
        self._mark = now


def media_type_of(content_type: str | None) -> str:
    """``text/csv; charset=utf-8`` → ``text/csv``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def invocation_run(
    *,
    subscription: Subscription,
    principal: User,
    token: str,
    body: bytes,
    content_type: str,
    accept: str | None = None,
    custom_attributes: str | None = None,
    request: HttpRequest | None = None,
    store_result: bool = True,
    defer_record: bool = False,
    job_id: uuid.UUID | str | None = None,
) -> InvocationResult:
    """Run one call through the authorized proxy path and store its answer.

    ``subscription`` should come with ``listing``, ``lob__aws_account`` and ``endpoint`` selected.
    Refusals and failures are :class:`ServiceError` s carrying the HTTP status and code: 403
    ``not_a_member``/``may_not_invoke``/``subscription_inactive``, 413 ``payload_too_large``, 415
    ``unsupported_content_type``, 401 ``token_invalid``/``token_expired``, 403
    ``token_subscription_mismatch``, 429 ``throttled`` (with ``retry_after``), 502 ``model_error``
    and ``upstream_error``, 503 ``endpoint_unavailable``, 504 ``upstream_timeout``. Each call,
    allowed or refused, leaves an Invocation row and an audit event.

    ``store_result=False`` is for callers that keep the answer themselves (a job chunk writes its
    own part object): the answer is not written a second time and ``result_uri`` is empty. When
    the answer is written is ``INVOKE_RESULT_WRITE``'s choice (see ``result_store``).

    ``defer_record=True`` (with ``store_result=False``) hands the record of a successful call to
    the caller: the result's ``record`` writes it and must be called once. A job runs it on its
    helper thread while its next call is made, so the model does not wait for the database.
    Refusals and failures are recorded before they are raised, as always.

    ``job_id``: the job whose chunk this call runs, kept on its record (allowed or refused).
    """
    if defer_record and store_result:
        # The after-answer S3 writer updates the saved row; the two are not combined.
        raise ValueError("defer_record is for callers that keep the answer themselves")
    call = _Call(
        id=uuid.uuid4(),
        started_at=timezone.now(),
        started=time.perf_counter(),
        bytes_in=len(body),
        job_id=job_id,
    )
    try:
        media_type = _authorize(
            subscription=subscription,
            principal=principal,
            token=token,
            body=body,
            content_type=content_type,
        )
        call.records = _count_records(body, media_type)
        call.lap("authorization")
        answer_body, answer_type = _invoke(
            call=call,
            subscription=subscription,
            principal=principal,
            body=body,
            content_type=content_type,
            accept=accept,
            custom_attributes=custom_attributes,
        )
        call.bytes_out = len(answer_body)
        pending = None
        if store_result:
            result = _result_object(
                call=call,
                subscription=subscription,
                principal=principal,
                body=answer_body,
                content_type=answer_type,
            )
            if result_store.writes_after_answer():
                pending = result
                call.result_uri = result.uri
            else:
                call.result_uri = result_store.result_write(result)
                call.stored = True
        call.lap("store")
    except ServiceError as exc:
        _record(
            call=call,
            subscription=subscription,
            principal=principal,
            request=request,
            outcome=exc.code,
            status=exc.status,
        )
        raise
    except Exception:
        _record(
            call=call,
            subscription=subscription,
            principal=principal,
            request=request,
            outcome="internal_error",
            status=500,
        )
        raise
    invocation, audit = _record_of(
        call=call,
        subscription=subscription,
        principal=principal,
        request=request,
        outcome=Invocation.OUTCOME_OK,
        status=200,
    )
    record = partial(_record_save, invocation, audit)
    if not defer_record:
        record()
        record = None
        if pending is not None:
            # After the row is committed (the writer updates it), then on a writer thread.
            invocation_id = call.id
            transaction.on_commit(
                lambda: result_store.result_write_after_answer(invocation_id, pending)
            )
        call.lap("record")
    return InvocationResult(
        invocation=invocation,
        body=answer_body,
        content_type=answer_type,
        result_uri=call.result_uri,
        timings=call.timings,
        record=record,
    )


def invocation_refused_unread(
    *,
    subscription: Subscription,
    principal: User,
    bytes_in: int,
    refusal: ServiceError,
    request: HttpRequest | None = None,
) -> Invocation:
    """Record a call refused before its body was read (a form over Django's size limit).

    The Invocation row and audit event are those of :func:`invocation_run`'s refusals: every call,
    allowed or refused, is recorded. ``bytes_in`` is what the request said it carried.
    """
    call = _Call(
        id=uuid.uuid4(), started_at=timezone.now(), started=time.perf_counter(), bytes_in=bytes_in
    )
    return _record(
        call=call,
        subscription=subscription,
        principal=principal,
        request=request,
        outcome=refusal.code,
        status=refusal.status,
    )


def _authorize(
    *, subscription: Subscription, principal: User, token: str, body: bytes, content_type: str
) -> str:
    """Every check before AWS is called; returns the request's media type."""
    invoke_permission_check(principal=principal, subscription=subscription)
    limit = settings.INVOKE_MAX_PAYLOAD_BYTES
    if len(body) > limit:
        raise PayloadTooLarge(
            f"The payload is over the {limit // (1024 * 1024)} MB a real-time call accepts; "
            "use a batch job for larger inputs."
        )
    media_type = media_type_of(content_type)
    accepted = subscription.listing.content_types or []
    if media_type not in accepted:
        raise UnsupportedContentType(
            f"{subscription.listing.name} accepts {', '.join(accepted) or 'no content type'}, "
            f"not {media_type or 'a body without Content-Type'}."
        )
    seller_token_verify(token=token, subscription=subscription)
    return media_type


def _invoke(
    *,
    call: _Call,
    subscription: Subscription,
    principal: User,
    body: bytes,
    content_type: str,
    accept: str | None,
    custom_attributes: str | None,
) -> tuple[bytes, str]:
    """InvokeEndpoint on the subscription's endpoint; (body, content type) or the mapped error."""
    endpoint = getattr(subscription, "endpoint", None)
    if endpoint is None:
        raise EndpointUnavailable("This subscription has no SageMaker endpoint yet.")
    try:
        runtime = aws_gateway.client(
            "sagemaker-runtime",
            access=account_access(subscription.lob.aws_account),
            session_name=aws_gateway.session_name_for(principal),
            region=endpoint.region,
            read_timeout=settings.INVOKE_READ_TIMEOUT,
            # A model call is not idempotent and may take 70 s: one attempt; callers (jobs) own
            # the retry policy.
            max_attempts=1,
        )
    except aws_gateway.AwsError as exc:
        raise _credentials_error(exc) from exc
    call.lap("credentials")
    parameters = {"EndpointName": endpoint.name, "Body": body, "ContentType": content_type}
    if accept and accept != "*/*":
        parameters["Accept"] = accept
    if custom_attributes:
        parameters["CustomAttributes"] = custom_attributes
    try:
        with aws_gateway.aws_errors():
            answer = runtime.invoke_endpoint(**parameters)
            answer_body = answer["Body"].read()
    except aws_gateway.AwsError as exc:
        raise _invoke_error(exc, endpoint.name) from exc
    call.lap("invoke")
    return answer_body, answer.get("ContentType") or "application/octet-stream"


def _credentials_error(exc: aws_gateway.AwsError) -> ServiceError:
    if isinstance(exc, aws_gateway.Unreachable | aws_gateway.Throttled):
        return EndpointUnavailable(f"The LOB's AWS account cannot be reached: {exc}")
    return UpstreamFailure(f"The portal cannot act in the LOB's AWS account: {exc}")


def _invoke_error(exc: aws_gateway.AwsError, endpoint_name: str) -> ServiceError:
    """The portal's answer for an InvokeEndpoint failure (the gateway has already retried)."""
    cause = exc.__cause__
    if isinstance(exc, aws_gateway.Throttled):
        return InvocationThrottled(
            "The endpoint is throttling calls; retry later.",
            retry_after=settings.INVOKE_RETRY_AFTER_SECONDS,
        )
    if exc.aws_code == "ModelError":
        response = getattr(cause, "response", None) or {}
        original = str(response.get("OriginalMessage") or "")[:_MODEL_MESSAGE_MAX]
        message = str(response.get("Error", {}).get("Message", ""))
        # SageMaker reports a container that outlived its 60 s as a ModelError with status 0.
        if str(response.get("OriginalStatusCode", "")) == "0" and "timed out" in message:
            return UpstreamTimeout("The model did not answer in time.")
        try:
            original_status = int(response.get("OriginalStatusCode"))
        except (TypeError, ValueError):
            original_status = None
        if original_status == 406:  # the caller's Accept, not a failure of the model
            return NotAcceptable(
                f"The model cannot answer in the type asked for (Accept): {original or message}"
            )
        return ModelFailed(
            f"The model failed: {_model_message(original) or message or exc}",
            original_status=original_status,
        )
    if isinstance(exc, aws_gateway.Unreachable):
        if type(cause).__name__ == "ReadTimeoutError":
            return UpstreamTimeout(
                f"The endpoint {endpoint_name} did not answer within "
                f"{settings.INVOKE_READ_TIMEOUT:g} s."
            )
        return EndpointUnavailable(f"The endpoint {endpoint_name} cannot be reached.")
    if isinstance(exc, aws_gateway.NotFound) or exc.aws_code in (
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "InternalFailure",
    ):
        return EndpointUnavailable(f"The endpoint {endpoint_name} is not available: {exc}")
    if exc.aws_code in ("ValidationError", "ValidationException"):
        return EndpointUnavailable(f"SageMaker refused the call to {endpoint_name}: {exc}")
    return UpstreamFailure(f"The call to {endpoint_name} failed: {exc}")


def _model_message(original: str) -> str:
    """The container's error as people read it: its ``message`` (and ``error`` code) when it
    answered a JSON object with them, as most containers do, else its body as it came."""
    try:
        body = json.loads(original)
    except (ValueError, RecursionError):
        return original
    if not isinstance(body, dict):
        return original
    message, code = body.get("message"), body.get("error") or body.get("code")
    message = message if isinstance(message, str) and message else ""
    code = code if isinstance(code, str) and code else ""
    if message and code:
        return f"{message} ({code})"
    return message or code or original


def result_key(*, subscription: Subscription, invocation_id: uuid.UUID, at: datetime) -> str:
    """``{prefix}{lob}/invocations/{yyyy}/{mm}/{dd}/{invocation_id}`` in the results bucket."""
    account = subscription.lob.aws_account
    day = at.astimezone(UTC) if timezone.is_aware(at) else at
    return (
        f"{account.results_prefix}{subscription.lob.slug}/invocations/"
        f"{day:%Y}/{day:%m}/{day:%d}/{invocation_id}"
    )


def _result_object(
    *, call: _Call, subscription: Subscription, principal: User, body: bytes, content_type: str
) -> result_store.ResultObject:
    """The answer as an object of the LOB account's results bucket."""
    return result_store.ResultObject(
        account=subscription.lob.aws_account,
        key=result_key(subscription=subscription, invocation_id=call.id, at=call.started_at),
        body=body,
        content_type=content_type,
        session_name=aws_gateway.session_name_for(principal),
        metadata={"invocation-id": str(call.id), "subscription-id": str(subscription.pk)},
    )


def _count_records(body: bytes, media_type: str) -> int:
    """Records in the request when cheap to know: lines for CSV (less the header) and JSON lines."""
    if media_type == "application/jsonlines":
        return sum(1 for line in body.splitlines() if line.strip())
    if media_type == "text/csv":
        return max(sum(1 for line in body.splitlines() if line.strip()) - 1, 0)
    if media_type == "application/json":
        # A parse, as the model makes one: the body is within the payload limit (6 MB) by now.
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, or nested past the parser's depth
            return 0
        if isinstance(document, dict):
            document = document.get("records", document.get("instances"))
        return len(document) if isinstance(document, list) else 0
    return 0


def _record(**call_and_outcome: Any) -> Invocation:
    """Write the Invocation row and the audit event of a call now (:func:`_record_of`'s
    arguments), in one transaction."""
    return _record_save(*_record_of(**call_and_outcome))


def _record_of(
    *,
    call: _Call,
    subscription: Subscription,
    principal: User,
    request: HttpRequest | None,
    outcome: str,
    status: int,
) -> tuple[Invocation, Callable[[], object]]:
    """The call's Invocation row (unsaved) and the writing of its audit event, ready to save.

    The duration is taken here, at the call's end: a record saved later still carries it.
    """
    duration_ms = round((time.perf_counter() - call.started) * 1000)
    if status < 400:
        audit_outcome = AuditEvent.Outcome.SUCCESS
    elif status < 500 and status != 429:
        audit_outcome = AuditEvent.Outcome.REFUSED
    else:
        audit_outcome = AuditEvent.Outcome.FAILURE
    invocation = Invocation(
        id=call.id,
        subscription=subscription,
        principal=principal,
        started_at=call.started_at,
        duration_ms=duration_ms,
        bytes_in=call.bytes_in,
        bytes_out=call.bytes_out,
        records=call.records if outcome == Invocation.OUTCOME_OK else 0,
        outcome=outcome,
        result_uri=call.result_uri,
        result_stored_at=timezone.now() if call.stored else None,
        job_id=call.job_id,
    )
    audit = partial(
        audit_record,
        action="subscription.invoked",
        outcome=audit_outcome,
        request=request,
        actor=principal,
        target_type="subscription",
        target_id=str(subscription.pk),
        lob_slug=subscription.lob.slug,
        reason="" if outcome == Invocation.OUTCOME_OK else outcome,
        detail={
            "invocation_id": str(call.id),
            "status": status,
            "duration_ms": duration_ms,
            "bytes_in": call.bytes_in,
            "bytes_out": call.bytes_out,
            "result_uri": call.result_uri,
            **({"job_id": str(call.job_id)} if call.job_id else {}),
        },
    )
    if outcome != Invocation.OUTCOME_OK:
        logger.info(
            "invocation %s of subscription %s refused or failed: %s",
            call.id,
            subscription.pk,
            outcome,
        )
    return invocation, audit


def _record_save(invocation: Invocation, audit: Callable[[], object]) -> Invocation:
    """Save a call's Invocation row and write its audit event, in one transaction."""
    with transaction.atomic():
        invocation.save(force_insert=True)
        audit()
    return invocation
