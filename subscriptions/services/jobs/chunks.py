"""Running chunks: one (:func:`job_chunk_run`), or a few consecutive ones with their model calls
back to back while the process's helper thread does their S3 and database work
(:func:`job_chunks_run`); each checked, called, written and counted once. Which failures are
retried (:class:`ChunkRetry`), which stop the job (:data:`STOP_CODES`), and a chunk given up
on (:func:`job_chunk_fail`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from django.db import close_old_connections, connections, transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import User
from portal import aws_gateway
from portal.errors import ServiceError
from subscriptions import selectors
from subscriptions.errors import (
    EndpointUnavailable,
    InvocationThrottled,
    ModelFailed,
    SellerUnavailable,
    TokenRejected,
    UpstreamFailure,
    UpstreamTimeout,
)
from subscriptions.models import Job, JobChunk, Subscription
from subscriptions.services import job_input
from subscriptions.services.job_input import JSONLINES
from subscriptions.services.jobs.common import TRANSIENT_AWS, enqueue, failed_part_key, part_key
from subscriptions.services.jobs.lifecycle import job_stop
from subscriptions.services.jobs.parts import chunk_input, chunk_output, chunk_output_of, put_part
from subscriptions.services.proxy import invocation_run
from subscriptions.services.seller_tokens import seller_token_forget, subscription_authorize

logger = logging.getLogger(__name__)

# Refusals that mean the job can no longer run at all: it stops with that reason.
STOP_CODES = frozenset({"not_a_member", "may_not_invoke", "subscription_inactive", "not_entitled"})
_TRANSIENT = (InvocationThrottled, UpstreamTimeout, EndpointUnavailable, SellerUnavailable)


class ChunkRetry(Exception):
    """A chunk failed for a reason that may pass (throttling, 5xx, timeout): retry it later."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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
        records = chunk_input(job, chunk, principal)
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
            output = chunk_output(chunk, run.records, answer)
        except ModelFailed as exc:
            if exc.code != "output_mismatch":
                raise
            output = chunk_output_of(chunk, run.records, _results_by_halves(run))
        put_part(job, part_key(job, chunk.index), run.principal, output.body)
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
    elif isinstance(exc, TRANSIENT_AWS):
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
        # The chunk's part is its result: no second copy under {lob}/invocations/; the call's
        # record names the job instead.
        store_result=False,
        defer_record=keep_record,
        job_id=run.job.pk,
    )
    if keep_record:
        run.record = result.record
    return result.body


def _entry(chunk: JobChunk, records: job_input.ChunkRecords, position: int) -> dict[str, Any]:
    return {"record": chunk.first_record + position, "line": records.lines[position]}


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
        records = chunk_input(job, chunk, job.submitted_by)
        errors = [
            {**_entry(chunk, records, position), "error": code}
            for position in range(len(records.lines))
        ]
        body = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in errors).encode()
        put_part(job, failed_part_key(job, index), job.submitted_by, body)
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
                enqueue("job_finalize", str(job_id))
        elif (
            output_key
            and job["status"] in (Job.Status.CANCELLED, Job.Status.FAILED)
            and chunks.filter(status=JobChunk.Status.SKIPPED).update(**fields)
        ):
            Job.objects.filter(pk=job_id).update(
                records_done=F("records_done") + record_count,
                records_failed=F("records_failed") + records_failed,
            )
