"""Inference jobs: a whole file run through the authorized proxy path, chunk by chunk.

* :func:`job_submit` streams the input to ``{prefix}{lob}/jobs/{job_id}/input`` in the LOB's
  results bucket while :class:`~subscriptions.services.job_input.InputScanner` validates it and
  splits it into chunks; the job and its chunks are created in one transaction and started after
  commit.
* :func:`job_chunk_run` runs one chunk as the submitting user through ``invocation_run`` (which
  re-checks membership and subscription) and writes ``part-{n:05d}.jsonl`` — a deterministic key,
  so a chunk that runs twice writes the same object and is counted once (under a row lock); a
  chunk given up on writes its error entries to ``part-{n:05d}.failed.jsonl`` instead.
  :func:`job_chunks_run` runs a few consecutive chunks the same way, with their model calls back to
  back while a helper thread does each chunk's S3 and database work (how jobs normally run).
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
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, BinaryIO

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connections, transaction
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
from subscriptions.services import job_input, queued_tasks
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


def failed_part_key(job: Job, index: int) -> str:
    """The key of a failed chunk's error entries: not :func:`part_key`, which another run of the
    chunk may have written (and counted) meanwhile — the chunk's output_key names the one kept."""
    return f"{job_prefix(job.subscription, job.pk)}part-{index:05d}.failed.jsonl"


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
    """Enqueue a job task once the current transaction commits (at once outside one).

    Robust: the rows are committed by then, so a broker away at that moment (a Redis restart) is
    logged, not raised — a job just created must not answer 500 and lose its input; the
    reconciler enqueues whatever is missing once the job has stalled.
    """
    from subscriptions import tasks  # the tasks module imports this one

    task = getattr(tasks, name)
    transaction.on_commit(lambda: task.delay(*args), robust=True)


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
        if not idempotency_key.isprintable():  # NUL (which PostgreSQL cannot compare), controls
            raise ServiceError("Idempotency-Key holds a control character.", code="invalid")
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
            _upload(s3, account.results_bucket, input_key, scanner, media_type)
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
        logger.warning("Could not delete %s", key)


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
        _enqueue_chunks(str(job.pk), pending)
        if not pending:
            _enqueue("job_finalize", str(job.pk))


def _enqueue_chunks(job_id: str, indices: list[int]) -> None:
    """Enqueue the chunks in runs of JOBS_CHUNKS_PER_TASK consecutive ones (one task each)."""
    size = max(settings.JOBS_CHUNKS_PER_TASK, 1)
    for start in range(0, len(indices), size):
        _enqueue("job_chunks_run", job_id, indices[start : start + size])


def _retryable(exc: ServiceError) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    if isinstance(exc, ModelFailed):
        if exc.code != ModelFailed.code:  # e.g. output_mismatch: the same call would do it again
            return False
        status = exc.original_status
        return status is None or status == 0 or status >= 500
    if isinstance(exc, UpstreamFailure):
        # AWS 5xx on the way (assume role, storing the result); AWS refusing the LOB's role
        # (AccessDenied...) is not transient: every try would fail the same way.
        return not isinstance(exc.__cause__, aws_gateway.NotAuthorized)
    return isinstance(exc, TokenRejected) and exc.code == "token_expired"


@dataclass(frozen=True)
class _ChunkOutput:
    body: bytes
    records_failed: int
    record_errors: list[dict[str, Any]]


@dataclass
class _ChunkRun:
    """A chunk ready for its model call: checked, with the seller token and its records."""

    job: Job
    chunk: JobChunk
    subscription: Subscription
    principal: User
    token: str = field(repr=False)
    records: job_input.ChunkRecords
    checked_at: float  # time.monotonic() when the chunk was seen pending
    # The record of the chunk's model call (Invocation row and audit event), written first thing
    # after it by _chunk_finish: on the helper thread, while the next chunk's call is made.
    record: Callable[[], object] | None = field(default=None, repr=False)


# A prepared chunk older than this is checked again before its call: cancelling a job stops its
# remaining chunks within this long (plus the calls already made).
_RECHECK_AFTER_SECONDS = 1.0


def job_chunk_run(*, job_id: str, index: int) -> None:
    """Run one chunk through the proxy path as the submitter; write its part; count it once.

    Raises :class:`ChunkRetry` for failures worth retrying; any other failure marks the chunk
    failed (its records become error entries), and a refusal in :data:`STOP_CODES` stops the job.
    A chunk of a cancelled or stopped job is not run: cancelling marks the pending chunks skipped,
    and each queued task sees that in its first query.
    """
    run = _chunk_prepare(job_id, index)
    if run is None:
        return
    answer = _chunk_call(run)
    if answer is not None:
        _chunk_finish(run, answer)


def _chunk_prepare(job_id: str, index: int) -> _ChunkRun | None:
    """Everything before the model call: the run-time checks, the seller token, the records.

    None when the chunk is not to run (done already, its job finished, or it failed here).
    """
    checked_at = time.monotonic()
    chunk = (
        JobChunk.objects.select_related("job__submitted_by")
        .filter(job_id=job_id, index=index)
        .first()
    )
    if chunk is None or chunk.status != JobChunk.Status.PENDING:
        return None
    job = chunk.job
    if job.is_finished:
        _chunk_close(
            job_id=job_id,
            index=index,
            record_count=chunk.record_count,
            status=JobChunk.Status.SKIPPED,
        )
        return None
    principal = job.submitted_by
    if principal is None:
        job_stop(job_id=job_id, code="not_a_member", message="The submitter no longer exists.")
        return None
    JobChunk.objects.filter(pk=chunk.pk).update(attempts=F("attempts") + 1)
    # The submitter's role comes with the subscription (one query): the proxy path re-checks it
    # on every chunk without asking again.
    subscription = selectors.subscription_by_id(job.subscription_id, role_of=principal)
    job.subscription = subscription
    try:
        # audit_reuse=False: every chunk's call is audited as subscription.invoked; a token the
        # seller issues (or refuses) is audited, its reuse chunk after chunk is not.
        seller_token = subscription_authorize(
            subscription=subscription, principal=principal, audit_reuse=False
        )
        records = _chunk_input(job, chunk, principal)
    except (ServiceError, aws_gateway.AwsError) as exc:
        _chunk_trouble(job_id=job_id, index=index, subscription=subscription, exc=exc)
        return None
    return _ChunkRun(
        job=job,
        chunk=chunk,
        subscription=subscription,
        principal=principal,
        token=seller_token.token,
        records=records,
        checked_at=checked_at,
    )


def _chunk_call(run: _ChunkRun) -> bytes | None:
    """The model call through the proxy path (which re-checks the submitter); None if it failed.

    A successful call's record is left on ``run`` for :func:`_chunk_finish` to write.
    """
    try:
        return _model_answer(run, run.records.payload, keep_record=True)
    except (ServiceError, aws_gateway.AwsError) as exc:
        _chunk_trouble(
            job_id=str(run.job.pk), index=run.chunk.index, subscription=run.subscription, exc=exc
        )
        return None


def _chunk_finish(run: _ChunkRun, answer: bytes) -> None:
    """Everything after the model call: its record, the part, then the chunk counted on the job."""
    if run.record is not None:
        run.record()
        run.record = None
    job, chunk = run.job, run.chunk
    try:
        try:
            output = _chunk_output(chunk, run.records, answer)
        except ModelFailed as exc:
            if exc.code != "output_mismatch":
                raise
            output = _chunk_output_of(chunk, run.records, _results_by_halves(run))
        _put_part(job, part_key(job, chunk.index), run.principal, output.body)
    except (ServiceError, aws_gateway.AwsError) as exc:
        _chunk_trouble(
            job_id=str(job.pk), index=chunk.index, subscription=run.subscription, exc=exc
        )
        return
    _chunk_close(
        job_id=str(job.pk),
        index=chunk.index,
        record_count=chunk.record_count,
        status=JobChunk.Status.SUCCEEDED,
        records_failed=output.records_failed,
        record_errors=output.record_errors,
        output_key=part_key(job, chunk.index),
    )


def _chunk_trouble(*, job_id: str, index: int, subscription: Subscription, exc: Exception) -> None:
    """A chunk's failure: the job stops (STOP_CODES), the chunk is retried later (ChunkRetry is
    raised) or it fails (its records become error entries)."""
    if isinstance(exc, ServiceError):
        if exc.code in STOP_CODES:
            job_stop(job_id=job_id, code=exc.code, message=str(exc))
            return
        if isinstance(exc, TokenRejected) and exc.code == "token_expired":
            seller_token_forget(subscription=subscription)
        if _retryable(exc):
            raise ChunkRetry(exc.code, str(exc)) from exc
    elif isinstance(exc, _TRANSIENT_AWS):
        raise ChunkRetry(exc.code, str(exc)) from exc
    code = getattr(exc, "code", "error")
    job_chunk_fail(job_id=job_id, index=index, code=code, message=str(exc))


def job_chunks_run(
    *, job_id: str, indices: list[int], retry_later: Callable[[int, ChunkRetry], None]
) -> None:
    """Run consecutive chunks of a job with their model calls back to back.

    A chunk's own work around its model call — the checks, the seller token and reading its
    records before; the call's record, its output, part and count after — takes about as long as
    the call itself, and the model would wait through it. Here a helper thread does that work for
    the chunks before and after while this thread makes the calls, one at a time: the model sees
    no more calls at once than with :func:`job_chunk_run`, without the pauses. Each chunk is still
    checked, written and counted on its own as :func:`job_chunk_run` does it; a chunk whose
    failure is worth retrying goes to ``retry_later`` (index, the failure) and the others go on.
    """
    helper = _chunk_helper()

    def guarded(index: int, step: Callable[..., Any], *args: Any) -> Any:
        try:
            return step(*args)
        except ChunkRetry as exc:
            retry_later(index, exc)
            return None

    pending: list[Future] = []
    try:
        # The helper thread's connection lives across tasks: like the task's own, it is dropped
        # when too old or broken, once a task (each check costs the database a round trip). Not
        # inline: there it is the caller's connection, in the caller's transaction.
        if not isinstance(helper, _Inline):
            pending.append(helper.submit(close_old_connections))
        upcoming = helper.submit(guarded, indices[0], _chunk_prepare, job_id, indices[0])
        pending.append(upcoming)
        for position, index in enumerate(indices):
            run = upcoming.result()
            if position + 1 < len(indices):
                following = indices[position + 1]
                upcoming = helper.submit(guarded, following, _chunk_prepare, job_id, following)
                pending.append(upcoming)
            # Cancelled (or the job stopped) since it was prepared: the call is not made. A chunk
            # prepared moments ago (while a fast model answered the one before) was pending then;
            # asking again would cost every chunk a database round trip for nothing.
            if run is None or (
                time.monotonic() - run.checked_at > _RECHECK_AFTER_SECONDS
                and not JobChunk.objects.filter(
                    pk=run.chunk.pk, status=JobChunk.Status.PENDING
                ).exists()
            ):
                continue
            answer = guarded(index, _chunk_call, run)
            if answer is not None:
                pending.append(helper.submit(guarded, index, _chunk_finish, run, answer))
    finally:
        # Nothing of this task goes on after it ends (and is acknowledged).
        wait(pending)
    for future in pending:
        future.result()  # a step's unexpected error fails the task (after every step ended)


class _Inline:
    """An executor that runs each step at once, in the calling thread."""

    def submit(self, step: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        try:
            future.set_result(step(*args))
        except BaseException as exc:  # the caller sees it from result(), as from a thread
            future.set_exception(exc)
        return future


_helper_executor: ThreadPoolExecutor | None = None


def _chunk_helper() -> ThreadPoolExecutor | _Inline:
    """The process's helper thread for chunk work, or inline steps inside a transaction.

    Inside a transaction (tests run each in one) another thread's database connection would not
    see its rows, and an in-memory SQLite database belongs to one connection:
    there the steps run one after the other in this thread.
    """
    global _helper_executor
    connection = transaction.get_connection()
    if connection.in_atomic_block or (
        connection.vendor == "sqlite" and connection.is_in_memory_db()
    ):
        return _Inline()
    if _helper_executor is None:
        # Created in the process that runs tasks (after a prefork pool forked it), never shared.
        _helper_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-chunks")
    return _helper_executor


def chunk_helper_stop() -> None:
    """End the helper thread, closing its database connections first (only it can close them).

    Called when a worker process shuts down, and after each test, so that no connection of the
    helper outlives what opened it (PostgreSQL refuses to drop a database someone is connected to).
    """
    global _helper_executor
    executor, _helper_executor = _helper_executor, None
    if executor is None:
        return
    executor.submit(connections.close_all).result()
    executor.shutdown(wait=True)


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


_MODEL_RECORD_PREFIX = '{"record":'


def _entry_line(record: int, line: int, result: dict[str, Any]) -> str:
    """``{"record", "line", ...the model's other keys}`` encoded from the parsed result."""
    entry = {"record": record, "line": line}
    entry.update((k, v) for k, v in result.items() if k not in ("record", "line"))
    return json.dumps(entry, separators=(",", ":"))


def _results_by_halves(run: _ChunkRun) -> list[tuple[str, dict[str, Any]]]:
    """One result per record of a chunk whose answer had more or fewer results than records.

    The model and the portal read some record differently (a seller's parser may split or skip
    a line the csv module keeps whole). Rather than fail every record of the chunk, its records
    are sent again in halves, and a half that still does not match in halves again, down to
    single records: only a record that alone gets no single result becomes an error entry
    (``output_mismatch``). One odd record among n costs about 2·log2(n) calls. These calls are
    made by the helper thread, beside the next chunk's: the only time a worker has two at once.
    """
    media_type = run.job.content_type
    prefix = run.job.csv_header.encode("utf-8") if media_type == job_input.CSV else b""
    records = job_input.payload_records(
        run.records.payload, media_type=media_type, csv_header=run.job.csv_header
    )
    results: list[tuple[str, dict[str, Any]]] = []

    def resolve(group: list[bytes], answered: list[tuple[str, dict[str, Any]]] | None) -> None:
        if answered is not None and len(answered) == len(group):
            results.extend(answered)
            return
        if len(group) == 1:
            results.append(("", {"error": "output_mismatch"}))
            return
        middle = len(group) // 2
        for half in (group[:middle], group[middle:]):
            resolve(half, list(job_input.answer_lines(_model_answer(run, prefix + b"".join(half)))))

    resolve(records, None)  # the whole chunk's answer did not match
    return results


def _model_answer(run: _ChunkRun, body: bytes, *, keep_record: bool = False) -> bytes:
    """The model's answer to a chunk's records (or some of them) through the proxy path.

    ``keep_record``: a successful call's record is not written here but left on ``run``.
    """
    result = invocation_run(
        subscription=run.subscription,
        principal=run.principal,
        token=run.token,
        body=body,
        content_type=run.job.content_type,
        accept=JSONLINES,
        # The chunk's part is its result: no second copy under {lob}/invocations/.
        store_result=False,
        defer_record=keep_record,
    )
    if keep_record:
        run.record = result.record
    return result.body


def _chunk_output(chunk: JobChunk, records: job_input.ChunkRecords, answer: bytes) -> _ChunkOutput:
    """The model's answer with input record numbers and lines; its rejections counted."""
    return _chunk_output_of(chunk, records, job_input.answer_lines(answer))


def _chunk_output_of(
    chunk: JobChunk,
    records: job_input.ChunkRecords,
    results: Iterable[tuple[str, dict[str, Any]]],
) -> _ChunkOutput:
    """The model's results (line text, object) with input record numbers and lines; its
    rejections counted.

    Each part line is ``{"record", "line", ...the model's other keys}``. Most models (the
    transcoder among them) answer ``{"record":<n>,...}`` compactly: the rest of the model's own
    text is then kept as it is, which costs a fraction of encoding the parsed object again. Anything
    else — a "line" key, "record" not first or written twice, spaces — is encoded from the parsed
    object. One pass, for every record of a job: the parse and the part line share the loop.
    """
    lines: list[str] = []
    errors: list[dict[str, Any]] = []
    append, numbers, first = lines.append, records.lines, chunk.first_record
    prefix, skip = _MODEL_RECORD_PREFIX, len(_MODEL_RECORD_PREFIX)
    position = 0
    for text, result in results:
        if position >= len(numbers):
            position += 1
            continue  # more results than records: refused below, once counted
        record, line = first + position, numbers[position]
        position += 1
        if "error" in result:
            errors.append({"record": record, "line": line, "error": result["error"]})
        if text.startswith(prefix) and "line" not in result:
            comma = text.find(",", skip)
            # Between the prefix and the first comma a valid line can only hold a number; no
            # second '"record"' after it means no second "record" key (a string holding it only
            # takes the slow way).
            if comma > skip and text[skip:comma].isdigit() and text.find('"record"', comma) < 0:
                append(f'{{"record":{record},"line":{line},{text[comma + 1 :]}')
                continue
        append(_entry_line(record, line, result))
    if position != len(numbers):
        raise ModelFailed(
            f"The model answered {position} results for {len(numbers)} records.",
            code="output_mismatch",
        )
    append("")
    return _ChunkOutput(
        body="\n".join(lines).encode(), records_failed=len(errors), record_errors=errors
    )


def _put_part(job: Job, key: str, principal: User | None, body: bytes) -> None:
    account = job.subscription.lob.aws_account
    with aws_gateway.aws_errors():
        _s3(job.subscription, principal).put_object(
            Bucket=account.results_bucket,
            Key=key,
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
        _put_part(job, failed_part_key(job, index), job.submitted_by, body)
        output_key = failed_part_key(job, index)
    except aws_gateway.AwsError:
        logger.warning("job %s chunk %s: could not write its error part", job_id, index)
    _chunk_close(
        job_id=job_id,
        index=index,
        record_count=chunk.record_count,
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
    record_count: int,
    status: str,
    records_failed: int = 0,
    record_errors: list[dict[str, Any]] | None = None,
    output_key: str = "",
    error: str = "",
) -> None:
    """Record a chunk's end and count it on the job, once.

    The job row is locked first (the order cancellation locks in, so the two never deadlock);
    the chunk is claimed by an UPDATE that only matches it while pending, so a chunk delivered
    twice is counted once. A chunk that was running when its job was cancelled or stopped has
    been marked skipped meanwhile: if it wrote its part, the part is kept and its records are
    counted (it is already among the chunks done).
    """
    now = timezone.now()
    fields = {
        "status": status,
        "records_failed": records_failed,
        "record_errors": record_errors or [],
        "output_key": output_key,
        "error": error,
        "finished_at": now,
    }
    counted = status != JobChunk.Status.SKIPPED
    with transaction.atomic():
        job = (
            Job.objects.select_for_update()
            .filter(pk=job_id)
            .values("status", "chunks_done", "chunks_total")
            .first()
        )
        if job is None:
            return
        chunks = JobChunk.objects.filter(job_id=job_id, index=index)
        if chunks.filter(status=JobChunk.Status.PENDING).update(**fields):
            Job.objects.filter(pk=job_id).update(
                records_done=F("records_done") + (record_count if counted else 0),
                records_failed=F("records_failed") + records_failed,
                chunks_done=F("chunks_done") + 1,
                last_progress_at=now,
            )
            last = job["chunks_done"] + 1 >= job["chunks_total"]
            if last and job["status"] == Job.Status.RUNNING:
                _enqueue("job_finalize", str(job_id))
        elif (
            output_key
            and job["status"] in (Job.Status.CANCELLED, Job.Status.FAILED)
            and chunks.filter(status=JobChunk.Status.SKIPPED).update(**fields)
        ):
            Job.objects.filter(pk=job_id).update(
                records_done=F("records_done") + record_count,
                records_failed=F("records_failed") + records_failed,
            )


def job_stop(
    *, job_id: str, code: str, message: str, outcome: str = AuditEvent.Outcome.REFUSED
) -> None:
    """The job can no longer run (the submitter lost access...): failed, with the reason."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return
        _job_end(job, status=Job.Status.FAILED, code=code, message=message)
        audit_record(
            action="job.stopped",
            outcome=outcome,
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


def _upload(s3: Any, bucket: str, key: str, fileobj: Any, content_type: str) -> None:
    """Stream ``fileobj`` to S3 (in parts of 8 MB, a few at a time, never whole), encrypted."""
    with aws_gateway.aws_errors():
        s3.upload_fileobj(
            Fileobj=fileobj,
            Bucket=bucket,
            Key=key,
            ExtraArgs={"ContentType": content_type, "ServerSideEncryption": "AES256"},
            Config=aws_gateway.stream_upload_config(),
        )


# Parts fetched ahead while the merge uploads: S3 is waited for once per few parts, not per part.
_PARTS_AHEAD = 4


class _PartsReader:
    """The job's parts, one after the other, as one file-like object.

    Streamed: it holds the part being read and at most :data:`_PARTS_AHEAD` parts fetched ahead
    (each one chunk's output), never the whole output.
    """

    def __init__(self, s3: Any, bucket: str, keys: list[str]) -> None:
        self._s3, self._bucket, self._keys = s3, bucket, iter(keys)
        self._pool = ThreadPoolExecutor(max_workers=_PARTS_AHEAD, thread_name_prefix="job-parts")
        self._ahead: deque[Future[bytes]] = deque()
        self._part = b""
        self._offset = 0
        self._fetch_ahead()

    def _get(self, key: str) -> bytes:
        with aws_gateway.aws_errors():
            return self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()

    def _fetch_ahead(self) -> None:
        while len(self._ahead) < _PARTS_AHEAD:
            key = next(self._keys, None)
            if key is None:
                return
            self._ahead.append(self._pool.submit(self._get, key))

    def read(self, size: int = -1) -> bytes:
        # s3transfer takes a short read for the end of the stream: fill ``size`` across parts.
        wanted = size if size and size > 0 else None
        pieces: list[bytes] = []
        count = 0
        while wanted is None or count < wanted:
            if self._offset >= len(self._part):
                if not self._ahead:
                    break
                self._part, self._offset = self._ahead.popleft().result(), 0
                self._fetch_ahead()
                continue
            end = len(self._part) if wanted is None else self._offset + wanted - count
            piece = self._part[self._offset : end]
            self._offset += len(piece)
            count += len(piece)
            pieces.append(piece)
        return b"".join(pieces)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _output_not_written(job_id: str, what: str, exc: aws_gateway.AwsError) -> None:
    """A write of the final step failed: raised again when it is worth trying again (the task
    retries with backoff), else the job fails — trying again would change nothing, and the job
    must not stay "running" and be merged again every stall period for ever."""
    if isinstance(exc, _TRANSIENT_AWS):
        raise exc
    job_stop(
        job_id=job_id,
        code="output_not_written",
        message=f"The {what} could not be written: {exc}",
        outcome=AuditEvent.Outcome.FAILURE,
    )


def job_finalize(*, job_id: str) -> None:
    """Once every chunk is done: the merged output, the manifest, and the final status."""
    job = (
        Job.objects.select_related("subscription__lob__aws_account", "submitted_by")
        .filter(pk=job_id)
        .first()
    )
    if job is None or job.status != Job.Status.RUNNING:
        return
    # Without their record errors: a 1 GB job has thousands of chunks, and the merge needs none.
    chunks = list(job.chunks.defer("record_errors").order_by("index"))
    if any(chunk.status == JobChunk.Status.PENDING for chunk in chunks):
        return
    account = job.subscription.lob.aws_account
    prefix = job_prefix(job.subscription, job.pk)
    s3 = _s3(job.subscription, job.submitted_by)
    output_key, manifest_key = f"{prefix}output.jsonl", f"{prefix}manifest.json"
    keys = [chunk.output_key for chunk in chunks if chunk.output_key]
    parts = _PartsReader(s3, account.results_bucket, keys)
    try:
        _upload(s3, account.results_bucket, output_key, parts, JSONLINES)
    except aws_gateway.AwsError as exc:
        # A part gone (deleted, expired by a lifecycle rule) or access lost.
        _output_not_written(job_id, "merged output", exc)
        return
    finally:
        parts.close()
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
    # The manifest is written under the row lock: a cancel (or a stop) during the merge either
    # waits for it and finds the job finished, or ends the job first, and then no manifest says
    # otherwise and its merged output goes (unless another finalize ended the job with it).
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job_id).first()
        if locked is None or locked.status != Job.Status.RUNNING:
            if locked is not None and not locked.output_uri:
                _delete_quietly(s3, account.results_bucket, output_key)
            return
        try:
            with aws_gateway.aws_errors():
                s3.put_object(
                    Bucket=account.results_bucket,
                    Key=manifest_key,
                    Body=json.dumps(manifest, indent=1).encode(),
                    ContentType="application/json",
                    ServerSideEncryption="AES256",
                )
        except aws_gateway.AwsError as exc:
            # Access lost, a bucket policy refusing the key...
            _output_not_written(job_id, "manifest", exc)
            _delete_quietly(s3, account.results_bucket, output_key)
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
    """Enqueue again what stalled jobs are missing (start, pending chunks or the final step).

    What still waits in the broker's queue (a job behind others in a long queue) is not missing:
    it is left alone. Returns how many jobs had something enqueued again.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.JOBS_STALL_SECONDS)
    stalled = Job.objects.filter(status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).filter(
        Q(last_progress_at__lt=cutoff) | Q(last_progress_at__isnull=True, created_at__lt=cutoff)
    )
    job_ids = list(stalled.values_list("pk", flat=True))
    if not job_ids:
        return 0
    # Read once a run, before the locks: a message taken meanwhile is running, which is progress.
    try:
        queued = queued_tasks.queued_job_work() or {}
    except queued_tasks.QueueTooLong as exc:
        # The workers are busy; whatever a job lost is looked for once the queue is shorter (the
        # clocks are left as they are, so the next run looks again).
        logger.info("reconciler: the broker's queue is too long to read (%s), next run", exc)
        return 0
    count = 0
    for job_id in job_ids:
        with transaction.atomic():
            # Still stalled once locked: another run of the reconciler (or a chunk) may have
            # restarted the clock since the listing, and then everything is enqueued already.
            job = stalled.select_for_update().filter(pk=job_id).first()
            if job is None:
                continue
            # The clock restarts: the next run waits a whole stall period before trying again.
            Job.objects.filter(pk=job_id).update(last_progress_at=now)
            if _enqueue_missing(job, queued.get(str(job_id), queued_tasks.QueuedWork())):
                count += 1
    return count


def _enqueue_missing(job: Job, waiting: queued_tasks.QueuedWork) -> bool:
    """Enqueue the stalled job's next step, unless it waits in the queue; True if enqueued."""
    pending = list(
        job.chunks.filter(status=JobChunk.Status.PENDING)
        .order_by("index")
        .values_list("index", flat=True)
    )
    missing = [index for index in pending if index not in waiting.chunks]
    if waiting.start:  # when it runs, it enqueues every pending chunk itself
        return _left_waiting(job)
    if job.status == Job.Status.QUEUED:
        _enqueue("job_start", str(job.pk))
    elif missing:
        _enqueue_chunks(str(job.pk), missing)
    elif pending or waiting.finalize:  # every pending chunk, or the final step, waits
        return _left_waiting(job)
    else:
        _enqueue("job_finalize", str(job.pk))
    logger.info(
        "job %s stalled: enqueued again (%d chunks pending, %d of them waiting in the queue)",
        job.pk,
        len(pending),
        len(pending) - len(missing),
    )
    return True


def _left_waiting(job: Job) -> bool:
    logger.info("job %s without progress: its tasks wait in the queue, none enqueued again", job.pk)
    return False


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
