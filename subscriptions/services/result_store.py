"""Keeping a call's answer in the LOB account's results bucket: before answering, or just after.

``INVOKE_RESULT_WRITE = "before_answer"`` (the default) writes the object before the caller gets
the answer: when the call succeeds, the object at ``X-Result-Uri`` exists. ``"after_answer"``
answers as soon as the model has and writes the object on a small per-process pool of writer
threads, so S3's latency (often as long as the model's) is off the caller's path. Then:

- the Invocation row is committed first, with its ``result_uri`` and an empty
  ``result_stored_at``, which the writer sets once the object exists;
- a write that fails, after botocore's own retries, turns the call's outcome into
  ``result_not_stored`` and leaves a failure in the audit trail;
- when every writer is busy and ``INVOKE_RESULT_QUEUE`` writes are waiting, the call writes its
  own object before answering (back-pressure instead of unbounded memory);
- the pool's threads are joined when the process exits normally, so a graceful restart finishes
  the writes it accepted. A process killed outright loses them: the rows it leaves with an empty
  ``result_stored_at`` say which.
"""

from __future__ import annotations

import logging
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, AwsAccount
from accounts.services.aws_verification import account_access
from portal import aws_gateway
from subscriptions.errors import UpstreamFailure
from subscriptions.models import Invocation

logger = logging.getLogger(__name__)

BEFORE_ANSWER = "before_answer"
AFTER_ANSWER = "after_answer"


@dataclass(frozen=True)
class ResultObject:
    """One answer to keep: where, what, and on whose behalf (for the assumed-role session)."""

    account: AwsAccount
    key: str
    body: bytes = field(repr=False)
    content_type: str
    session_name: str
    metadata: dict[str, str]

    @property
    def uri(self) -> str:
        return f"s3://{self.account.results_bucket}/{self.key}"


def result_write(result: ResultObject) -> str:
    """Put the object (SSE-S3) now; its s3:// URI, or UpstreamFailure ``result_not_stored``."""
    try:
        s3 = aws_gateway.client(
            "s3", access=account_access(result.account), session_name=result.session_name
        )
        with aws_gateway.aws_errors():
            s3.put_object(
                Bucket=result.account.results_bucket,
                Key=result.key,
                Body=result.body,
                ContentType=result.content_type,
                ServerSideEncryption="AES256",
                Metadata=result.metadata,
            )
    except aws_gateway.AwsError as exc:
        raise UpstreamFailure(
            f"The model answered but its result could not be stored: {exc}",
            code="result_not_stored",
        ) from exc
    return result.uri


def writes_after_answer() -> bool:
    """Whether answers are written after the caller has them (``INVOKE_RESULT_WRITE``)."""
    return settings.INVOKE_RESULT_WRITE == AFTER_ANSWER


class _Writers:
    """The process's writer threads and the bound on writes waiting for one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._slots: threading.BoundedSemaphore | None = None

    def submit(self, invocation_id: uuid.UUID, result: ResultObject) -> bool:
        """Queue the write; False when the queue is full (the caller writes it itself)."""
        executor, slots = self._started()
        if not slots.acquire(blocking=False):
            return False
        try:
            executor.submit(self._write, slots, invocation_id, result)
        except RuntimeError:  # the interpreter is shutting down
            slots.release()
            return False
        return True

    def _started(self) -> tuple[ThreadPoolExecutor, threading.BoundedSemaphore]:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=settings.INVOKE_RESULT_WRITERS,
                    thread_name_prefix="result-writer",
                )
                # Running and waiting writes together: each holds its answer in memory.
                self._slots = threading.BoundedSemaphore(
                    settings.INVOKE_RESULT_WRITERS + settings.INVOKE_RESULT_QUEUE
                )
            return self._executor, self._slots

    @staticmethod
    def _write(
        slots: threading.BoundedSemaphore, invocation_id: uuid.UUID, result: ResultObject
    ) -> None:
        close_old_connections()
        try:
            _write_and_mark(invocation_id, result)
        except Exception:  # a writer thread must survive anything, and say what happened
            logger.exception("Storing the result of invocation %s failed", invocation_id)
        finally:
            slots.release()
            close_old_connections()

    def drain(self) -> None:
        """Wait for every accepted write (tests; a process that is about to stop)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


writers = _Writers()


def result_write_after_answer(invocation_id: uuid.UUID, result: ResultObject) -> None:
    """Write the object on a writer thread, or now when they are all busy (back-pressure)."""
    if not writers.submit(invocation_id, result):
        _write_and_mark(invocation_id, result)


def _write_and_mark(invocation_id: uuid.UUID, result: ResultObject) -> None:
    try:
        result_write(result)
    except UpstreamFailure as exc:
        Invocation.objects.filter(pk=invocation_id).update(outcome=exc.code)
        invocation = (
            Invocation.objects.select_related("principal", "subscription__lob")
            .filter(pk=invocation_id)
            .first()
        )
        audit_record(
            action="subscription.result_stored",
            outcome=AuditEvent.Outcome.FAILURE,
            actor=invocation.principal if invocation else None,
            target_type="invocation",
            target_id=str(invocation_id),
            lob_slug=invocation.subscription.lob.slug if invocation else "",
            reason=exc.code,
            detail={"result_uri": result.uri, "message": str(exc)[:300]},
        )
        return
    Invocation.objects.filter(pk=invocation_id).update(result_stored_at=timezone.now())
