"""Repair: writing every drifted item so the tables match the portal (``dynamodb_sync --apply``).

Each write holds the key's outbox rows, as a drain does, so that a drain is never overtaken by
a stale write.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, MappingOutbox, User
from accounts.services.mapping_publication.desired import _desired_item
from accounts.services.mapping_publication.drift import Drift
from accounts.services.mapping_publication.tables import (
    DynamoDBClient,
    MappingTableError,
    _connect,
    _table_for,
    _target,
    _write,
)
from portal.aws_gateway import AwsError


def _repair_key(
    dynamodb: DynamoDBClient, *, kind: str, key: str, table: str
) -> dict[str, Any] | None:
    """Write one key's desired item the way a drain does: holding the key's outbox rows.

    Without the lock, a change committed after the item was read could be drained (its row marked
    delivered) before this write landed, leaving the stale item for good. So a row of the repair's
    own is committed first, then every undelivered row of the key is locked (waiting for a drain
    that holds them), the item read and written: a drain of a later change finds the key held and
    leaves its row for the next drain. Returns the item written (None: deleted); raises AwsError
    (the repair's row then stays undelivered, for the drain to retry).
    """
    if "\x00" in key or len(key) > MappingOutbox._meta.get_field("key").max_length:
        # No user or LOB has such a key (nor can a row name it): nothing races its deletion.
        _write(dynamodb, table=table, key=key, item=None)
        return None
    MappingOutbox.objects.create(kind=kind, key=key)
    with transaction.atomic():
        ids = list(
            MappingOutbox.objects.select_for_update()
            .filter(kind=kind, key=key, delivered_at__isnull=True)
            .values_list("id", flat=True)
        )
        item = _desired_item(kind, key)
        _write(dynamodb, table=table, key=key, item=item)
        MappingOutbox.objects.filter(id__in=ids).update(delivered_at=timezone.now(), last_error="")
    return item


def mapping_repair(*, drift: Drift, acting_user: User | None = None) -> int:
    """Write or delete every drifted item so the tables match the portal; returns the writes made.

    Each item is computed again at write time (the drift may be a moment old), under the key's
    outbox lock so a concurrent drain cannot be overtaken by a stale write. Writes an audit
    event ``mapping.sync_repaired``; raises :class:`MappingTableError` on the first failed write.
    """
    target = _target()
    dynamodb = _connect(target)
    counts = {"put": 0, "deleted": 0}
    for kind, table_drift in (
        (MappingOutbox.Kind.USER, drift.users),
        (MappingOutbox.Kind.LOB, drift.lobs),
    ):
        table = _table_for(kind, target)
        for entry in [*table_drift.missing, *table_drift.different, *table_drift.unexpected]:
            try:
                item = _repair_key(dynamodb, kind=kind, key=entry.key, table=table)
            except AwsError as exc:
                raise MappingTableError(table=table, where=target.describe(), error=exc) from exc
            counts["deleted" if item is None else "put"] += 1
    total = counts["put"] + counts["deleted"]
    audit_record(
        action="mapping.sync_repaired",
        outcome=AuditEvent.Outcome.SUCCESS,
        actor=acting_user,
        target_type="dynamodb",
        target_id=f"{target.users_table},{target.lobs_table}",
        detail={**counts, "users_table": target.users_table, "lobs_table": target.lobs_table},
    )
    return total
