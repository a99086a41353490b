"""Background work for subscriptions: endpoint status in step with SageMaker, inference jobs."""

from __future__ import annotations

import logging
import random

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_shutdown
from django.conf import settings
from django.db import InterfaceError, OperationalError

from portal import aws_gateway
from subscriptions.models import Endpoint, Subscription
from subscriptions.services import jobs
from subscriptions.services.endpoints import endpoint_sync

logger = logging.getLogger(__name__)


@shared_task(
    name="subscriptions.sync_endpoints",
    acks_late=True,
    time_limit=120,
    soft_time_limit=90,
    ignore_result=True,
)
def sync_endpoints() -> int:
    """Enqueue one sync per endpoint of a live subscription (beat, every 5 minutes)."""
    endpoint_ids = list(
        Endpoint.objects.exclude(subscription__status=Subscription.Status.CANCELLED)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for endpoint_id in endpoint_ids:
        sync_endpoint.delay(endpoint_id)
    return len(endpoint_ids)


# No retries: the service records a failure on the row and the next beat run tries again.
@shared_task(
    name="subscriptions.sync_endpoint",
    acks_late=True,
    time_limit=60,
    soft_time_limit=45,
    ignore_result=True,
)
def sync_endpoint(endpoint_id: int) -> None:
    """Refresh one endpoint's status and instance type from SageMaker."""
    endpoint = (
        Endpoint.objects.select_related("subscription__lob__aws_account")
        .filter(pk=endpoint_id)
        .first()
    )
    if endpoint is None:  # deleted since it was enqueued
        return
    endpoint_sync(endpoint=endpoint)


# --- Inference jobs -------------------------------------------------------------------------------
# Ids in; acks_late (settings) so a killed worker's task is delivered again; every step is
# idempotent (deterministic S3 keys, chunks counted once under a row lock). A chunk's time limits
# cover a 70 s model call, the S3 reads and writes and the seller token; the Redis visibility
# timeout (CELERY_VISIBILITY_TIMEOUT) is far above them, also for a run of JOBS_CHUNKS_PER_TASK.
# Jobs run as job_chunks_run tasks (a few chunks each); job_chunk_run runs one chunk on its own
# (a retry, or what the reconciler finds).


# The database briefly out of reach or busy (a failover, a restart, a lock wait that ran out): the
# chunk is tried again with backoff rather than left for the reconciler (JOBS_STALL_SECONDS).
DATABASE_TRANSIENT = (OperationalError, InterfaceError)


def retry_countdown(retries: int) -> float:
    """Exponential backoff (1, 2, 4... s, capped) with full jitter."""
    cap = settings.JOBS_RETRY_BACKOFF_MAX_SECONDS
    return random.uniform(0, min(cap, 2**retries))  # noqa: S311 (jitter, not security)


@shared_task(
    name="subscriptions.job_start",
    acks_late=True,
    time_limit=120,
    soft_time_limit=90,
    ignore_result=True,
)
def job_start(job_id: str) -> None:
    """Mark the job running and fan out its chunks."""
    jobs.job_start(job_id=job_id)


@shared_task(
    bind=True,
    name="subscriptions.job_chunk_run",
    acks_late=True,
    time_limit=240,
    soft_time_limit=200,
    ignore_result=True,
)
def job_chunk_run(self, job_id: str, index: int) -> None:
    """Run one chunk; transient failures are retried with backoff, then the chunk is failed."""
    try:
        jobs.job_chunk_run(job_id=job_id, index=index)
    except (jobs.ChunkRetry, SoftTimeLimitExceeded) as exc:
        code = getattr(exc, "code", "timeout")
        if self.request.retries >= settings.JOBS_CHUNK_MAX_RETRIES:
            logger.warning("job %s chunk %s: giving up after retries (%s)", job_id, index, code)
            jobs.job_chunk_fail(job_id=job_id, index=index, code=code, message=str(exc))
            return
        raise self.retry(
            exc=exc,
            countdown=retry_countdown(self.request.retries),
            max_retries=settings.JOBS_CHUNK_MAX_RETRIES,
        ) from exc
    except DATABASE_TRANSIENT as exc:
        # Nothing can be recorded while the database is away: after the retries the chunk stays
        # pending, and the reconciler finds it.
        logger.warning("job %s chunk %s: database error, tried again later", job_id, index)
        raise self.retry(
            exc=exc,
            countdown=retry_countdown(self.request.retries),
            max_retries=settings.JOBS_CHUNK_MAX_RETRIES,
        ) from exc


# A run of chunks may take each chunk's time limit; it stays far below the visibility timeout.
_CHUNKS_PER_TASK = max(settings.JOBS_CHUNKS_PER_TASK, 1)


@shared_task(
    name="subscriptions.job_chunks_run",
    acks_late=True,
    time_limit=240 * _CHUNKS_PER_TASK,
    soft_time_limit=200 * _CHUNKS_PER_TASK,
    ignore_result=True,
)
def job_chunks_run(job_id: str, indices: list[int]) -> None:
    """Run consecutive chunks with their model calls back to back; a chunk worth retrying is
    retried on its own (job_chunk_run, with backoff)."""

    def retry_later(index: int, exc: jobs.ChunkRetry) -> None:
        job_chunk_run.apply_async((job_id, index), countdown=retry_countdown(0))

    try:
        jobs.job_chunks_run(job_id=job_id, indices=indices, retry_later=retry_later)
    except (SoftTimeLimitExceeded, *DATABASE_TRANSIENT) as exc:
        # Out of time, or the database away: each chunk goes on in a task of its own (finished
        # ones end at once) — after a database error a little later, with backoff from there on.
        out_of_time = isinstance(exc, SoftTimeLimitExceeded)
        logger.warning(
            "job %s chunks %s: %s, run one by one",
            job_id,
            indices,
            "out of time" if out_of_time else "database error",
        )
        for index in indices:
            job_chunk_run.apply_async(
                (job_id, index), countdown=0 if out_of_time else retry_countdown(0)
            )


@worker_process_shutdown.connect
def _chunk_helper_stop(**_: object) -> None:
    # The pool process's helper thread (job_chunks_run) closes its connections as the process ends.
    jobs.chunk_helper_stop()


@shared_task(
    name="subscriptions.job_finalize",
    acks_late=True,
    time_limit=1800,
    soft_time_limit=1700,
    ignore_result=True,
    autoretry_for=(
        aws_gateway.Throttled,
        aws_gateway.Unreachable,
        aws_gateway.UpstreamError,
    ),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def job_finalize(job_id: str) -> None:
    """Merge the parts, write the manifest, set the final status."""
    jobs.job_finalize(job_id=job_id)


@shared_task(
    name="subscriptions.jobs_reconcile",
    acks_late=True,
    time_limit=120,
    soft_time_limit=90,
    ignore_result=True,
)
def jobs_reconcile() -> int:
    """Find jobs without progress for JOBS_STALL_SECONDS and enqueue what they miss (beat)."""
    return jobs.jobs_reconcile()
