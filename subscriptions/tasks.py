"""Background work for subscriptions: endpoint status in step with SageMaker, inference jobs."""

from __future__ import annotations

import logging
import random

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

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
# timeout (CELERY_VISIBILITY_TIMEOUT) is far above them.


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


@shared_task(
    name="subscriptions.job_finalize",
    acks_late=True,
    time_limit=1800,
    soft_time_limit=1700,
    ignore_result=True,
    autoretry_for=(jobs.aws_gateway.Throttled, jobs.aws_gateway.Unreachable),
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
