"""Periodic housekeeping for accounts, and the DynamoDB mapping publication."""

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.contrib.sessions.models import Session
from django.utils import timezone

from accounts.services.mapping_publication import mapping_outbox_drain, mapping_outbox_purge

logger = logging.getLogger(__name__)

# Keys one drain publishes; a fuller outbox is continued by a follow-up drain.
PUBLISH_BATCH = 500


@shared_task(
    name="accounts.sessions_clear_expired", acks_late=True, time_limit=300, soft_time_limit=240
)
def sessions_clear_expired() -> int:
    """Delete expired browser sessions (run by beat every hour); returns how many went."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted


# No Celery retries: a failed write stays in the outbox with its own backoff (next_attempt_at),
# and beat runs this every 30 s. A drain cut short leaves its current key's rows undelivered.
@shared_task(
    name="accounts.publish_mappings",
    acks_late=True,
    time_limit=150,
    soft_time_limit=120,
    ignore_result=True,
)
def publish_mappings() -> None:
    """Drain the DynamoDB mapping outbox (after each change, and every 30 s from beat)."""
    try:
        result = mapping_outbox_drain(limit=PUBLISH_BATCH)
    except SoftTimeLimitExceeded:
        logger.warning("DynamoDB publication hit its time limit; the next drain continues")
        return
    if result.delivered or result.failed:
        logger.info(
            "DynamoDB publication: %d delivered, %d failed, %d pending",
            result.delivered,
            result.failed,
            result.pending,
        )
    if result.delivered + result.failed >= PUBLISH_BATCH:
        publish_mappings.delay()


@shared_task(
    name="accounts.purge_delivered_mappings",
    acks_late=True,
    time_limit=300,
    soft_time_limit=240,
    ignore_result=True,
)
def purge_delivered_mappings() -> None:
    """Delete delivered outbox rows past their retention (run by beat daily)."""
    mapping_outbox_purge()
