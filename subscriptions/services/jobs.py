"""Inference jobs: a whole file run through the authorized proxy path, chunk by chunk.

* :func:`job_submit` streams the input to ``{prefix}{lob}/jobs/{job_id}/input`` in the LOB's
  results bucket while :class:`~subscriptions.services.job_input.InputScanner` validates it and
  splits it into chunks; the job and its chunks are created in one transaction and started after
  commit.
* :func:`job_chunk_run` runs one chunk as the submitting user through ``invocation_run`` (which
  re-checks membership and subscription) and writes ``part-{n:05d}.jsonl`` — a deterministic key,
  so a chunk that runs twice writes the same object and is counted once (under a row lock).
* :func:`job_finalize` writes the merged output and the manifest once every chunk is done.
* :func:`job_cancel`, :func:`jobs_reconcile` (stalled work is enqueued again), and the reads the
  API needs (:func:`jobs_visible_to`, :func:`job_for_member`, :func:`job_results`,
  :func:`job_download_url`).

Tasks own retries: :class:`ChunkRetry` marks a failure worth retrying (throttling, 5xx, timeouts,
the endpoint or seller unreachable).
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from accounts.selectors import may_invoke
from accounts.services.aws_verification import account_access
from portal import aws_gateway
from portal.errors import Conflict, NotFoundError, NotPermitted, ServiceError
from subscriptions import selectors
from subscriptions.errors import (
    EndpointUnavailable,
    InvocationThrottled,
    ModelFailed,
    SellerUnavailable,
    TokenRejected,
    UnsupportedContentType,
    UpstreamFailure,
    UpstreamTimeout,
)
from subscriptions.models import Job, JobChunk, Subscription
from subscriptions.services import job_input
from subscriptions.services.access import invoke_permission_check
from subscriptions.services.job_input import (
    JOB_CONTENT_TYPES,
    JSONLINES,
    InputRejected,
    InputScanner,
    InputTooLarge,
)
from subscriptions.services.proxy import invocation_run, media_type_of
from subscriptions.services.seller_tokens import seller_token_forget, subscription_authorize

logger = logging.getLogger(__name__)

# Refusals that mean the job can no longer run at all: it stops with that reason.
STOP_CODES = frozenset({"not_a_member", "may_not_invoke", "subscription_inactive", "not_entitled"})
_TRANSIENT = (InvocationThrottled, UpstreamTimeout, EndpointUnavailable, SellerUnavailable)
_TRANSIENT_AWS = (aws_gateway.Throttled, aws_gateway.Unreachable, aws_gateway.UpstreamError)
_ERRORS_PREVIEW = 20


class ChunkRetry(Exception):
    """A chunk failed for a reason that may pass (throttling, 5xx, timeout): retry it later."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# --- Where things are -----------------------------------------------------------------------------


def job_prefix(subscription: Subscription, job_id: uuid.UUID | str) -> str:
    """``{prefix}{lob}/jobs/{job_id}/`` in the LOB account's results bucket."""
    account = subscription.lob.aws_account
    return f"{account.results_prefix}{subscription.lob.slug}/jobs/{job_id}/"


def part_key(job: Job, index: int) -> str:
    """The deterministic key of a chunk's output."""
    return f"{job_prefix(job.subscription, job.pk)}part-{index:05d}.jsonl"


def _split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _s3(subscription: Subscription, principal: User | None) -> Any:
    session_name = (
        aws_gateway.session_name_for(principal)
        if principal is not None
        else aws_gateway.DEFAULT_SESSION_NAME
    )
    return aws_gateway.client(
        "s3", access=account_access(subscription.lob.aws_account), session_name=session_name
    )


def _enqueue(name: str, *args: Any) -> None:
    """Enqueue a job task once the current transaction commits (at once outside one)."""
    from subscriptions import tasks  # the tasks module imports this one

    task = getattr(tasks, name)
    transaction.on_commit(lambda: task.delay(*args))


# --- Reading, scoped ------------------------------------------------------------------------------


def jobs_visible_to(user: User) -> QuerySet[Job]:
    """Jobs of the subscriptions the user may read (the subscriptions' tenancy rule)."""
    visible = selectors.subscriptions_visible_to(user).order_by().values("pk")
    return Job.objects.select_related(
        "subscription__lob__aws_account", "subscription__listing", "submitted_by"
    ).filter(subscription__in=visible)


def job_for_member(user: User, job_id: uuid.UUID | str) -> Job:
    """One job the user may read; NotFoundError (404) if missing or another LOB's."""
    try:
        pk = uuid.UUID(str(job_id))
    except ValueError:
        pk = None
    job = jobs_visible_to(user).filter(pk=pk).first() if pk is not None else None
    if job is None:
        raise NotFoundError("No job with that id.", code="not_found")
    return job


def job_record_errors(job: Job, limit: int = _ERRORS_PREVIEW) -> list[dict[str, Any]]:
    """The first record errors of a job, in input order: ``{"record", "line", "error"}``."""
    errors: list[dict[str, Any]] = []
    chunks = job.chunks.filter(records_failed__gt=0).order_by("index")
    for record_errors in chunks.values_list("record_errors", flat=True):
        errors.extend(record_errors[: limit - len(errors)])
        if len(errors) >= limit:
            break
    return errors


# --- Submitting -----------------------------------------------------------------------------------


def _job_media_type(subscription: Subscription, content_type: str) -> str:
    media_type = media_type_of(content_type)
    accepted = [t for t in subscription.listing.content_types or [] if t in JOB_CONTENT_TYPES]
    if media_type not in accepted:
        raise UnsupportedContentType(
            f"Jobs of {subscription.listing.name} take {' or '.join(accepted) or 'no file type'}, "
            f"not {media_type or 'a file without a content type'}."
        )
    return media_type


def _input_location(subscription: Subscription, input_uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``input_uri`` inside the LOB's own results location, else 403."""
    account = subscription.lob.aws_account
    bucket, key = _split_uri(input_uri or "")
    lob_prefix = f"{account.results_prefix}{subscription.lob.slug}/"
    if (
        not input_uri.startswith("s3://")
        or bucket != account.results_bucket
        or not key.startswith(lob_prefix)
        or ".." in key.split("/")
        or key.endswith("/")
    ):
        raise NotPermitted(
            f"input_uri must name an object under s3://{account.results_bucket}/{lob_prefix}.",
            code="input_outside_lob",
        )
    return bucket, key


def job_submit(
    *,
    subscription: Subscription,
    principal: User,
    content_type: str,
    file: BinaryIO | None = None,
    input_uri: str = "",
    idempotency_key: str = "",
    request: HttpRequest | None = None,
) -> tuple[Job, bool]:
    """Validate and store a job's input, create the job and its chunks, start it after commit.

    Returns (job, created): a repeated ``idempotency_key`` returns the submitter's earlier job.
    Refusals: 403 ``not_a_member``/``may_not_invoke``/``subscription_inactive``/
    ``input_outside_lob``, 415 ``unsupported_content_type``, 413 ``input_too_large``, 400
    ``empty_input``/``no_header``/``wrong_delimiter``/``invalid_encoding``/``line_too_long``/
    ``unclosed_quote``/``invalid_jsonlines``/``input_not_found``; nothing is left behind.
    """
    idempotency_key = (idempotency_key or "").strip()
    try:
        if len(idempotency_key) > 128:
            raise ServiceError("Idempotency-Key is at most 128 characters.", code="invalid")
        existing = _job_for_key(principal, idempotency_key, subscription)
        if existing is not None:
            return existing, False
        invoke_permission_check(principal=principal, subscription=subscription)
        media_type = _job_media_type(subscription, content_type)
        if (file is None) == (not input_uri):
            raise ServiceError("Send either a file or an input_uri.", code="invalid")
        try:
            job = _job_create(
                subscription=subscription,
                principal=principal,
                media_type=media_type,
                file=file,
                input_uri=input_uri,
                idempotency_key=idempotency_key,
            )
        except _Reused as reused:  # the same Idempotency-Key at the same time: the other won
            return reused.job, False
    except ServiceError as exc:
        audit_record(
            action="job.submitted",
            outcome=AuditEvent.Outcome.REFUSED if exc.status < 500 else AuditEvent.Outcome.FAILURE,
            request=request,
            actor=principal,
            target_type="subscription",
            target_id=str(subscription.pk),
            lob_slug=subscription.lob.slug,
            reason=exc.code,
            detail={"message": str(exc)[:300]},
        )
        raise
    return job, True


def _job_for_key(principal: User, key: str, subscription: Subscription) -> Job | None:
    if not key:
        return None
    job = Job.objects.filter(submitted_by=principal, idempotency_key=key).first()
    if job is not None and job.subscription_id != subscription.pk:
        raise Conflict(
            "That Idempotency-Key was used for a job of another subscription.",
            code="idempotency_key_reused",
        )
    return job


def _job_create(
    *,
    subscription: Subscription,
    principal: User,
    media_type: str,
    file: BinaryIO | None,
    input_uri: str,
    idempotency_key: str,
) -> Job:
    account = subscription.lob.aws_account
    job_id = uuid.uuid4()
    input_key = f"{job_prefix(subscription, job_id)}input"
    s3 = _s3(subscription, principal)
    limit = settings.JOBS_MAX_INPUT_BYTES
    size = getattr(file, "size", None)
    if isinstance(size, int) and size > limit:
        raise InputTooLarge(f"The input is over the {limit // (1024 * 1024)} MB a job accepts.")
    if input_uri:
        bucket, key = _input_location(subscription, input_uri)
        try:
            with aws_gateway.aws_errors():
                source = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except aws_gateway.NotFound as exc:
            raise InputRejected("No object at input_uri.", code="input_not_found") from exc
        except aws_gateway.AwsError as exc:
            raise UpstreamFailure(f"The input object cannot be read: {exc}") from exc
    else:
        source = file
    scanner = InputScanner(
        source=source,
        media_type=media_type,
        records_per_chunk=max(settings.JOBS_RECORDS_PER_CHUNK, 1),
        max_chunk_bytes=settings.JOBS_MAX_CHUNK_BYTES,
        max_line_bytes=settings.JOBS_MAX_LINE_BYTES,
        max_total_bytes=limit,
    )
    try:
        try:
            with aws_gateway.aws_errors():
                s3.upload_fileobj(
                    Fileobj=scanner,
                    Bucket=account.results_bucket,
                    Key=input_key,
                    ExtraArgs={"ContentType": media_type, "ServerSideEncryption": "AES256"},
                )
        except aws_gateway.AwsError as exc:
            raise UpstreamFailure(f"The input could not be stored: {exc}") from exc
        scanner.finish()
        return _job_rows(
            job_id=job_id,
            subscription=subscription,
            principal=principal,
            media_type=media_type,
            scanner=scanner,
            input_uri=f"s3://{account.results_bucket}/{input_key}",
            idempotency_key=idempotency_key,
        )
    except BaseException:
        _delete_quietly(s3, account.results_bucket, input_key)
        raise


def _job_rows(
    *,
    job_id: uuid.UUID,
    subscription: Subscription,
    principal: User,
    media_type: str,
    scanner: InputScanner,
    input_uri: str,
    idempotency_key: str,
) -> Job:
    now = timezone.now()
    try:
        with transaction.atomic():
            job = Job.objects.create(
                id=job_id,
                subscription=subscription,
                submitted_by=principal,
                content_type=media_type,
                csv_header=scanner.csv_header,
                input_uri=input_uri,
                input_bytes=scanner.bytes_total,
                records_total=scanner.records_total,
                chunks_total=len(scanner.chunks),
                idempotency_key=idempotency_key,
                created_at=now,
                last_progress_at=now,
            )
            JobChunk.objects.bulk_create(
                [
                    JobChunk(
                        job=job,
                        index=spec.index,
                        first_line=spec.first_line,
                        first_record=spec.first_record,
                        byte_offset=spec.byte_offset,
                        byte_length=spec.byte_length,
                        record_count=spec.record_count,
                    )
                    for spec in scanner.chunks
                ],
                batch_size=1000,
            )
            audit_record(
                action="job.submitted",
                outcome=AuditEvent.Outcome.SUCCESS,
                actor=principal,
                target_type="job",
                target_id=str(job.pk),
                lob_slug=subscription.lob.slug,
                detail={
                    "subscription_id": subscription.pk,
                    "content_type": media_type,
                    "records": scanner.records_total,
                    "chunks": len(scanner.chunks),
                    "bytes": scanner.bytes_total,
                    "input_uri": input_uri,
                },
            )
            _enqueue("job_start", str(job.pk))
    except IntegrityError:
        # Two submissions with one Idempotency-Key at once: the other one won.
        earlier = _job_for_key(principal, idempotency_key, subscription)
        if earlier is None:
            raise
        raise _Reused(earlier) from None
    return job


class _Reused(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__(str(job.pk))
        self.job = job


def _delete_quietly(s3: Any, bucket: str, key: str) -> None:
    try:
        with aws_gateway.aws_errors():
            s3.delete_object(Bucket=bucket, Key=key)
    except aws_gateway.AwsError:
        logger.warning("Could not delete the rejected job input %s", key)


# --- Running --------------------------------------------------------------------------------------


def job_start(*, job_id: str) -> None:
    """Mark the job running and enqueue every chunk not done yet (again, if re-delivered)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return
        now = timezone.now()
        if job.status == Job.Status.QUEUED:
            job.status = Job.Status.RUNNING
            job.started_at = now
        job.last_progress_at = now
        job.save(update_fields=["status", "started_at", "last_progress_at"])
        pending = list(
            job.chunks.filter(status=JobChunk.Status.PENDING)
            .order_by("index")
            .values_list("index", flat=True)
        )
        for index in pending:
            _enqueue("job_chunk_run", str(job.pk), index)
        if not pending:
            _enqueue("job_finalize", str(job.pk))


def _retryable(exc: ServiceError) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, ModelFailed):
        if exc.code != ModelFailed.code:  # e.g. output_mismatch: the same call would do it again
            return False
        status = exc.original_status
        return status is None or status == 0 or status >= 500
    if isinstance(exc, UpstreamFailure):
        return True  # AWS 5xx on the way (assume role, storing the result)
    return isinstance(exc, TokenRejected) and exc.code == "token_expired"


@dataclass(frozen=True)
class _ChunkOutput:
    body: bytes
    records_failed: int
    record_errors: list[dict[str, Any]]


def job_chunk_run(*, job_id: str, index: int) -> None:
    """Run one chunk through the proxy path as the submitter; write its part; count it once.

    Raises :class:`ChunkRetry` for failures worth retrying; any other failure marks the chunk
    failed (its records become error entries), and a refusal in :data:`STOP_CODES` stops the job.
    """
    chunk = JobChunk.objects.select_related("job").filter(job_id=job_id, index=index).first()
    if chunk is None or chunk.status != JobChunk.Status.PENDING:
        return
    job = chunk.job
    if job.is_finished:
        _chunk_close(job_id=job_id, index=index, status=JobChunk.Status.SKIPPED)
        return
    JobChunk.objects.filter(pk=chunk.pk).update(attempts=F("attempts") + 1)
    subscription = selectors.subscription_by_id(job.subscription_id)
    job.subscription = subscription
    principal = job.submitted_by
    if principal is None:
        job_stop(job_id=job_id, code="not_a_member", message="The submitter no longer exists.")
        return
    try:
        seller_token = subscription_authorize(subscription=subscription, principal=principal)
        records = _chunk_input(job, chunk, principal)
        result = invocation_run(
            subscription=subscription,
            principal=principal,
            token=seller_token.token,
            body=records.payload,
            content_type=job.content_type,
            accept=JSONLINES,
        )
        output = _chunk_output(chunk, records, result.body)
        _put_part(job, chunk, principal, output.body)
    except ServiceError as exc:
        if exc.code in STOP_CODES:
            job_stop(job_id=job_id, code=exc.code, message=str(exc))
            return
        if isinstance(exc, TokenRejected) and exc.code == "token_expired":
            seller_token_forget(subscription=subscription)
        if _retryable(exc):
            raise ChunkRetry(exc.code, str(exc)) from exc
        job_chunk_fail(job_id=job_id, index=index, code=exc.code, message=str(exc))
        return
    except aws_gateway.AwsError as exc:
        if isinstance(exc, _TRANSIENT_AWS):
            raise ChunkRetry(exc.code, str(exc)) from exc
        job_chunk_fail(job_id=job_id, index=index, code=exc.code, message=str(exc))
        return
    _chunk_close(
        job_id=job_id,
        index=index,
        status=JobChunk.Status.SUCCEEDED,
        records_failed=output.records_failed,
        record_errors=output.record_errors,
        output_key=part_key(job, index),
    )


def _chunk_input(job: Job, chunk: JobChunk, principal: User | None) -> job_input.ChunkRecords:
    """The chunk's records, read back from the input object with one ranged GET."""
    bucket, key = _split_uri(job.input_uri)
    first, last = chunk.byte_offset, chunk.byte_offset + chunk.byte_length - 1
    with aws_gateway.aws_errors():
        answer = _s3(job.subscription, principal).get_object(
            Bucket=bucket, Key=key, Range=f"bytes={first}-{last}"
        )
        data = answer["Body"].read()
    return job_input.chunk_records(
        data=data,
        media_type=job.content_type,
        csv_header=job.csv_header,
        first_line=chunk.first_line,
    )


def _entry(chunk: JobChunk, records: job_input.ChunkRecords, position: int) -> dict[str, Any]:
    return {"record": chunk.first_record + position, "line": records.lines[position]}


def _chunk_output(chunk: JobChunk, records: job_input.ChunkRecords, answer: bytes) -> _ChunkOutput:
    """The model's answer with input record numbers and lines; its rejections counted."""
    results = job_input.part_lines(answer)
    if len(results) != len(records.lines):
        raise ModelFailed(
            f"The model answered {len(results)} results for {len(records.lines)} records.",
            code="output_mismatch",
        )
    lines: list[str] = []
    errors: list[dict[str, Any]] = []
    for position, result in enumerate(results):
        entry = _entry(chunk, records, position)
        entry.update((k, v) for k, v in result.items() if k not in ("record", "line"))
        if "error" in result:
            errors.append({**_entry(chunk, records, position), "error": result["error"]})
        lines.append(json.dumps(entry, separators=(",", ":")))
    body = ("\n".join(lines) + "\n").encode()
    return _ChunkOutput(body=body, records_failed=len(errors), record_errors=errors)


def _put_part(job: Job, chunk: JobChunk, principal: User | None, body: bytes) -> None:
    account = job.subscription.lob.aws_account
    with aws_gateway.aws_errors():
        _s3(job.subscription, principal).put_object(
            Bucket=account.results_bucket,
            Key=part_key(job, chunk.index),
            Body=body,
            ContentType=JSONLINES,
            ServerSideEncryption="AES256",
        )


def job_chunk_fail(*, job_id: str, index: int, code: str, message: str) -> None:
    """Give up on a chunk: its records become error entries in its part, and it is counted."""
    chunk = JobChunk.objects.select_related("job").filter(job_id=job_id, index=index).first()
    if chunk is None or chunk.status != JobChunk.Status.PENDING:
        return
    job = chunk.job
    job.subscription = selectors.subscription_by_id(job.subscription_id)
    output_key = ""
    errors: list[dict[str, Any]] = []
    try:
        records = _chunk_input(job, chunk, job.submitted_by)
        errors = [
            {**_entry(chunk, records, position), "error": code}
            for position in range(len(records.lines))
        ]
        body = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in errors).encode()
        _put_part(job, chunk, job.submitted_by, body)
        output_key = part_key(job, index)
    except aws_gateway.AwsError:
        logger.warning("job %s chunk %s: could not write its error part", job_id, index)
    _chunk_close(
        job_id=job_id,
        index=index,
        status=JobChunk.Status.FAILED,
        records_failed=chunk.record_count,
        record_errors=errors,
        output_key=output_key,
        error=f"{code}: {message}"[:1000],
    )


def _chunk_close(
    *,
    job_id: str,
    index: int,
    status: str,
    records_failed: int = 0,
    record_errors: list[dict[str, Any]] | None = None,
    output_key: str = "",
    error: str = "",
) -> None:
    """Record a chunk's end and count it on the job, once: under row locks, pending chunks only."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        chunk = JobChunk.objects.select_for_update().filter(job_id=job_id, index=index).first()
        if job is None or chunk is None or chunk.status != JobChunk.Status.PENDING:
            return
        now = timezone.now()
        chunk.status = status
        chunk.records_failed = records_failed
        chunk.record_errors = record_errors or []
        chunk.output_key = output_key
        chunk.error = error
        chunk.finished_at = now
        chunk.save()
        counted = status != JobChunk.Status.SKIPPED
        Job.objects.filter(pk=job_id).update(
            records_done=F("records_done") + (chunk.record_count if counted else 0),
            records_failed=F("records_failed") + records_failed,
            chunks_done=F("chunks_done") + 1,
            last_progress_at=now,
        )
        if job.chunks_done + 1 >= job.chunks_total and job.status == Job.Status.RUNNING:
            _enqueue("job_finalize", str(job_id))


def job_stop(*, job_id: str, code: str, message: str) -> None:
    """The job can no longer run (the submitter lost access...): failed, with the reason."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return
        _job_end(job, status=Job.Status.FAILED, code=code, message=message)
        audit_record(
            action="job.stopped",
            outcome=AuditEvent.Outcome.REFUSED,
            actor=job.submitted_by,
            target_type="job",
            target_id=str(job.pk),
            lob_slug=job.subscription.lob.slug,
            reason=code,
            detail={"message": message[:300]},
        )


def _job_end(job: Job, *, status: str, code: str = "", message: str = "") -> None:
    """Finish the job (row locked by the caller); its pending chunks are skipped."""
    now = timezone.now()
    job.status = status
    job.error_code = code
    job.error_message = message[:1000]
    job.finished_at = now
    job.last_progress_at = now
    job.save(
        update_fields=["status", "error_code", "error_message", "finished_at", "last_progress_at"]
    )
    skipped = JobChunk.objects.filter(job=job, status=JobChunk.Status.PENDING).update(
        status=JobChunk.Status.SKIPPED, finished_at=now
    )
    if skipped:
        Job.objects.filter(pk=job.pk).update(chunks_done=F("chunks_done") + skipped)


class _PartsReader:
    """The job's parts, one after the other, as one file-like object (streamed, not held)."""

    def __init__(self, s3: Any, bucket: str, keys: list[str]) -> None:
        self._s3, self._bucket, self._keys = s3, bucket, iter(keys)
        self._body: Any = None

    def read(self, size: int = -1) -> bytes:
        # s3transfer takes a short read for the end of the stream: fill ``size`` across parts.
        wanted = size if size and size > 0 else None
        data = bytearray()
        while wanted is None or len(data) < wanted:
            if self._body is None:
                key = next(self._keys, None)
                if key is None:
                    break
                with aws_gateway.aws_errors():
                    self._body = self._s3.get_object(Bucket=self._bucket, Key=key)["Body"]
            piece = self._body.read(None if wanted is None else wanted - len(data))
            if piece:
                data += piece
            else:
                self._body = None
        return bytes(data)


def job_finalize(*, job_id: str) -> None:
    """Once every chunk is done: the merged output, the manifest, and the final status."""
    job = (
        Job.objects.select_related("subscription__lob__aws_account", "submitted_by")
        .filter(pk=job_id)
        .first()
    )
    if job is None or job.status != Job.Status.RUNNING:
        return
    chunks = list(job.chunks.order_by("index"))
    if any(chunk.status == JobChunk.Status.PENDING for chunk in chunks):
        return
    account = job.subscription.lob.aws_account
    prefix = job_prefix(job.subscription, job.pk)
    s3 = _s3(job.subscription, job.submitted_by)
    output_key, manifest_key = f"{prefix}output.jsonl", f"{prefix}manifest.json"
    keys = [chunk.output_key for chunk in chunks if chunk.output_key]
    with aws_gateway.aws_errors():
        s3.upload_fileobj(
            Fileobj=_PartsReader(s3, account.results_bucket, keys),
            Bucket=account.results_bucket,
            Key=output_key,
            ExtraArgs={"ContentType": JSONLINES, "ServerSideEncryption": "AES256"},
        )
    failed_chunks = [chunk for chunk in chunks if chunk.status == JobChunk.Status.FAILED]
    job.refresh_from_db()
    if failed_chunks:
        status, code = Job.Status.FAILED, "chunks_failed"
        message = f"{len(failed_chunks)} chunk(s) failed; first: {failed_chunks[0].error}"
    elif job.records_failed >= job.records_total:
        status, code, message = (
            Job.Status.FAILED,
            "all_records_rejected",
            "The model rejected every record.",
        )
    elif job.records_failed:
        status, code, message = Job.Status.PARTIALLY_SUCCEEDED, "", ""
    else:
        status, code, message = Job.Status.SUCCEEDED, "", ""
    manifest = {
        "job_id": str(job.pk),
        "subscription_id": job.subscription_id,
        "lob": job.subscription.lob.slug,
        "content_type": job.content_type,
        "input_uri": job.input_uri,
        "output_uri": f"s3://{account.results_bucket}/{output_key}",
        "status": status,
        "records_total": job.records_total,
        "records_failed": job.records_failed,
        "parts": [
            {
                "index": chunk.index,
                "key": chunk.output_key,
                "status": chunk.status,
                "first_line": chunk.first_line,
                "first_record": chunk.first_record,
                "records": chunk.record_count,
                "records_failed": chunk.records_failed,
            }
            for chunk in chunks
        ],
    }
    with aws_gateway.aws_errors():
        s3.put_object(
            Bucket=account.results_bucket,
            Key=manifest_key,
            Body=json.dumps(manifest, indent=1).encode(),
            ContentType="application/json",
            ServerSideEncryption="AES256",
        )
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job_id).first()
        if locked is None or locked.status != Job.Status.RUNNING:
            return
        locked.output_uri = f"s3://{account.results_bucket}/{output_key}"
        locked.manifest_uri = f"s3://{account.results_bucket}/{manifest_key}"
        locked.save(update_fields=["output_uri", "manifest_uri"])
        _job_end(locked, status=status, code=code, message=message)


# --- Cancelling and reconciling -------------------------------------------------------------------


def job_cancel(*, job: Job, acting_user: User, request: HttpRequest | None = None) -> Job:
    """Stop a queued or running job: its pending chunks are skipped, finished parts kept."""
    lob = job.subscription.lob
    if not (acting_user.is_active and (acting_user.is_staff or may_invoke(acting_user, lob))):
        raise NotPermitted(f"Only analysts and admins of {lob.slug} may cancel its jobs.")
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.is_finished:
            raise Conflict(f"The job is already {locked.status}.", code="job_finished")
        _job_end(locked, status=Job.Status.CANCELLED, code="cancelled", message="Cancelled.")
        audit_record(
            action="job.cancelled",
            outcome=AuditEvent.Outcome.SUCCESS,
            request=request,
            actor=acting_user,
            target_type="job",
            target_id=str(job.pk),
            lob_slug=lob.slug,
            detail={"records_done": locked.records_done, "records_total": locked.records_total},
        )
    return jobs_visible_to(acting_user).get(pk=job.pk)


def jobs_reconcile() -> int:
    """Enqueue again what stalled jobs are missing (start, pending chunks or the final step)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.JOBS_STALL_SECONDS)
    stalled = Job.objects.filter(status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).filter(
        Q(last_progress_at__lt=cutoff) | Q(last_progress_at__isnull=True, created_at__lt=cutoff)
    )
    count = 0
    for job_id in list(stalled.values_list("pk", flat=True)):
        with transaction.atomic():
            job = Job.objects.select_for_update().filter(pk=job_id).first()
            if job is None or job.is_finished:
                continue
            # The clock restarts: the next run waits a whole stall period before trying again.
            Job.objects.filter(pk=job_id).update(last_progress_at=now)
            pending = list(
                job.chunks.filter(status=JobChunk.Status.PENDING)
                .order_by("index")
                .values_list("index", flat=True)
            )
            if job.status == Job.Status.QUEUED:
                _enqueue("job_start", str(job_id))
            elif pending:
                for index in pending:
                    _enqueue("job_chunk_run", str(job_id), index)
            else:
                _enqueue("job_finalize", str(job_id))
            logger.info("job %s stalled: enqueued again (%d chunks pending)", job_id, len(pending))
            count += 1
    return count


# --- Results --------------------------------------------------------------------------------------


def job_results(*, job: Job, principal: User, offset: int, limit: int) -> tuple[int, list[dict]]:
    """(records with output so far, the records [offset, offset+limit) of the parts, in order)."""
    chunks = list(
        job.chunks.exclude(output_key="")
        .order_by("index")
        .values_list("output_key", "first_record", "record_count")
    )
    available = sum(count for _, _, count in chunks)
    bucket = job.subscription.lob.aws_account.results_bucket
    s3 = _s3(job.subscription, principal)
    results: list[dict] = []
    seen = 0
    for key, _first_record, count in chunks:
        if len(results) >= limit:
            break
        if seen + count <= offset:
            seen += count
            continue
        with aws_gateway.aws_errors():
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        entries = job_input.part_lines(body)
        start = max(offset - seen, 0)
        results.extend(entries[start : start + limit - len(results)])
        seen += count
    return available, results


def job_download_url(*, job: Job, principal: User, request: HttpRequest | None = None) -> str:
    """A short-lived presigned URL of the job's merged output (members of its LOB only)."""
    if not job.output_uri:
        raise Conflict("The job has no merged output yet.", code="not_ready")
    bucket, key = _split_uri(job.output_uri)
    expires = settings.JOBS_DOWNLOAD_URL_EXPIRES_SECONDS
    with aws_gateway.aws_errors():
        url = _s3(job.subscription, principal).generate_presigned_url(
            "get_object",
            Params={
                "Bucket": bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="job-{job.pk}.jsonl"',
            },
            ExpiresIn=expires,
        )
    audit_record(
        action="job.downloaded",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=principal,
        target_type="job",
        target_id=str(job.pk),
        lob_slug=job.subscription.lob.slug,
        detail={"output_uri": job.output_uri, "expires_in": expires},
    )
    return url
