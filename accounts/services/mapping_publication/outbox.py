"""The mapping outbox: recording a change in the caller's transaction, and purging old rows.

A recorded change asks a worker to drain once the transaction commits (at most once per
transaction); the drain itself is in :mod:`.drain`.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import MappingOutbox

# Named for the package: the publisher logs under one name, whichever module logs.
logger = logging.getLogger(__package__)


def _enqueue_drain() -> None:
    """Ask a worker to drain now; if the broker is down, beat's periodic drain publishes later."""
    from accounts.tasks import publish_mappings  # the tasks module imports this one

    try:
        publish_mappings.delay()
    except Exception as exc:  # any broker failure: the caller's change is committed and safe
        logger.warning(
            "Could not enqueue the DynamoDB publication (%s: %s); the periodic drain will do it",
            type(exc).__name__,
            exc,
        )


def _drain_already_scheduled() -> bool:
    """True when this transaction already has a drain queued for after commit."""
    return any(callback is _enqueue_drain for _, callback, _ in connection.run_on_commit)


def mapping_outbox_enqueue(*, kind: str, key: str) -> None:
    """Record that a mapping changed and drain the outbox once the caller's transaction commits.

    ``kind`` is ``"user"`` (key: username) or ``"lob"`` (key: slug). Call it in the transaction
    that makes the change. It never fails that transaction because of Redis: when the task cannot be
    enqueued, a warning is logged and the periodic drain publishes the row. With
    ``DYNAMODB_PUBLICATION_ENABLED`` off nothing is recorded (``dynamodb_sync --apply`` catches up
    when it is turned on).
    """
    if kind not in MappingOutbox.Kind.values:
        raise ValueError(f"kind must be one of {MappingOutbox.Kind.values}, not {kind!r}")
    if not key:
        raise ValueError("A mapping key (username or LOB slug) is required")
    if not settings.DYNAMODB_PUBLICATION_ENABLED:
        return
    MappingOutbox.objects.create(kind=kind, key=key)
    # One drain per transaction is enough: a LOB change enqueues a row per member.
    if not (connection.in_atomic_block and _drain_already_scheduled()):
        transaction.on_commit(_enqueue_drain)


def mapping_outbox_purge(*, older_than: timedelta | None = None) -> int:
    """Delete delivered rows older than ``older_than`` (default: the retention setting)."""
    if older_than is None:
        older_than = timedelta(days=settings.DYNAMODB_OUTBOX_RETENTION_DAYS)
    deleted, _ = MappingOutbox.objects.filter(
        delivered_at__isnull=False, delivered_at__lt=timezone.now() - older_than
    ).delete()
    return deleted
