"""The drain: publishing due outbox rows to the tables, with a backoff for failed writes."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Min
from django.utils import timezone

from accounts.models import MappingOutbox
from accounts.services.mapping_publication.desired import _desired_item
from accounts.services.mapping_publication.tables import (
    DynamoDBClient,
    _dynamodb,
    _table_for,
    _Target,
    _target,
    _write,
)
from portal.aws_gateway import AwsError, UpstreamError

# Named for the package: the publisher logs under one name, whichever module logs.
logger = logging.getLogger(__package__)

# Backoff of a failed row: 5 s, 10 s, 20 s ... capped at 15 minutes, with jitter.
BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 15 * 60
_LAST_ERROR_MAX = 500


@dataclass(frozen=True)
class DrainResult:
    """What one drain did: keys written (or deleted), keys that failed, rows still undelivered."""

    delivered: int
    failed: int
    pending: int


def _backoff(attempts: int) -> timedelta:
    """Exponential backoff with jitter: half the step fixed, half random, capped."""
    step = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    # Jitter spreads retries of many rows; it has nothing to do with security.
    return timedelta(seconds=step / 2 + random.uniform(0, step / 2))  # noqa: S311


def _short_error(error: AwsError) -> str:
    """AWS's code and the gateway's message (which never carries credentials or URLs' queries)."""
    code = error.aws_code or error.code
    return f"{code}: {error}"[:_LAST_ERROR_MAX]


def _due_keys(*, limit: int) -> list[tuple[str, str]]:
    """Distinct (kind, key) with a due undelivered row, the longest-waiting first."""
    rows = (
        MappingOutbox.objects.filter(delivered_at__isnull=True, next_attempt_at__lte=timezone.now())
        .values("kind", "key")
        .annotate(first_due=Min("next_attempt_at"), first_id=Min("id"))
        .order_by("first_due", "first_id")[:limit]
    )
    return [(row["kind"], row["key"]) for row in rows]


def _drain_key(
    *,
    kind: str,
    key: str,
    target: _Target,
    get_client: Callable[[], DynamoDBClient],
    systemic_error: AwsError | None,
) -> tuple[str, AwsError | None]:
    """Publish one (kind, key) and settle its rows: ("delivered"|"failed"|"skipped", error).

    The key's undelivered rows are locked for the duration of one DynamoDB call, so two drains
    never write the same key at once (a row locked elsewhere means another drain has the key: skip
    it). The item is computed after the rows are locked, so a change committed later leaves a row
    of its own and is published by the next drain. A ``systemic_error`` (table unreachable, role
    refused...) defers the rows without calling AWS again.
    """
    now = timezone.now()
    undelivered = MappingOutbox.objects.filter(kind=kind, key=key, delivered_at__isnull=True)
    with transaction.atomic():
        rows = list(
            undelivered.select_for_update(skip_locked=True).values_list(
                "id", "attempts", "next_attempt_at"
            )
        )
        if not rows or len(rows) < undelivered.count():
            return "skipped", None
        if not any(next_attempt_at <= now for _, _, next_attempt_at in rows):
            return "skipped", None  # another drain deferred them meanwhile
        ids = [row_id for row_id, _, _ in rows]
        error = systemic_error
        if error is None:
            try:
                _write(
                    get_client(),
                    table=_table_for(kind, target),
                    key=key,
                    item=_desired_item(kind, key),
                )
            except AwsError as exc:
                error = exc
        claimed = MappingOutbox.objects.filter(id__in=ids)
        if error is None:
            claimed.update(delivered_at=timezone.now(), last_error="")
            return "delivered", None
        attempts = max(row_attempts for _, row_attempts, _ in rows) + 1
        next_attempt_at = timezone.now() + _backoff(attempts)
        claimed.update(
            attempts=F("attempts") + 1,
            last_error=_short_error(error),
            next_attempt_at=next_attempt_at,
        )
    logger.warning(
        "DynamoDB publication of %s %s failed (attempt %d, next at %s): %s",
        kind,
        key,
        attempts,
        next_attempt_at.isoformat(),
        _short_error(error),
    )
    return "failed", error


def mapping_outbox_drain(*, limit: int = 500) -> DrainResult:
    """Publish due outbox rows: at most ``limit`` keys, each one PutItem or DeleteItem.

    Rows of the same (kind, key) are merged into one write of the current desired item and all
    marked delivered. A failed write leaves its rows undelivered with ``attempts``, ``last_error``
    and a backed-off ``next_attempt_at``; an error that is not about the item (unreachable,
    refused, throttled, table missing) defers the rest of the batch without further calls. Safe to
    run concurrently (row locks with SKIP LOCKED where the database has them).
    """
    if not settings.DYNAMODB_PUBLICATION_ENABLED:
        return DrainResult(delivered=0, failed=0, pending=_pending_count())
    target = _target()
    cached: list[DynamoDBClient] = []

    def get_client() -> DynamoDBClient:
        if not cached:
            cached.append(_dynamodb(target))
        return cached[0]

    delivered = failed = 0
    systemic_error: AwsError | None = None
    for kind, key in _due_keys(limit=limit):
        outcome, error = _drain_key(
            kind=kind, key=key, target=target, get_client=get_client, systemic_error=systemic_error
        )
        if outcome == "delivered":
            delivered += 1
        elif outcome == "failed":
            failed += 1
            # Only an item-level refusal (validation...) is about this key; anything else would
            # fail every key of the batch the same way.
            if error is not None and type(error) is not UpstreamError:
                systemic_error = error
    return DrainResult(delivered=delivered, failed=failed, pending=_pending_count())


def _pending_count() -> int:
    return MappingOutbox.objects.filter(delivered_at__isnull=True).count()
