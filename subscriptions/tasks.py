"""Periodic work for subscriptions: keeping endpoint status in step with SageMaker."""

from __future__ import annotations

import logging

from celery import shared_task

from subscriptions.models import Endpoint, Subscription
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
