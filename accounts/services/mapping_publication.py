"""Publishing the user→LOB and LOB→account mappings to the DynamoDB tables of seed 003.

The reference Studio-access Lambda reads ``users-map-table`` (``{PK: username, LOB: slug}``) and
``lobs-map-table`` (``{PK: slug, ACCOUNT_ID: account id}``). The portal owns the mapping and keeps
those tables in step through the :class:`~accounts.models.MappingOutbox`:

* a service that changes a membership, a LOB or a user calls :func:`mapping_outbox_enqueue` inside
  its transaction; after commit a Celery task drains the outbox (beat drains it too, every 30 s, so
  a change made while Redis was down is published all the same);
* :func:`mapping_outbox_drain` computes each item from the database as it is *now* (never from the
  row) and writes or deletes it; a failed write stays in the outbox with a backoff;
* :func:`mapping_drift` / :func:`mapping_repair` compare whole tables and fix them;
* :func:`mapping_import` loads an existing deployment's tables into the portal.

Items carry ``LOBS`` (every LOB of the user, earliest membership first) beside the reference
``LOB``. AWS is reached only through :mod:`portal.aws_gateway`, with the low-level client and
attribute values marshalled here (boto3's serializer lives in boto3, which this module may not
import).
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_slug
from django.db import connection, transaction
from django.db.models import F, Min, QuerySet
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, AwsAccount, Lob, MappingOutbox, Membership, User
from accounts.selectors import lob_slug_used_before
from accounts.validators import (
    role_arn_account,
    validate_account_id,
    validate_bucket_name,
    validate_region,
)
from portal.aws_gateway import AccountAccess, AwsError, NotFound, UpstreamError, aws_errors, client

logger = logging.getLogger(__name__)

# A botocore DynamoDB client, as the gateway hands it out (only the gateway may import botocore).
DynamoDBClient = Any

# CloudTrail shows the publisher's writes under this session name when a role is assumed.
SESSION_NAME = "gatehouse-mapping-publisher"
# Backoff of a failed row: 5 s, 10 s, 20 s ... capped at 15 minutes, with jitter.
BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 15 * 60
_LAST_ERROR_MAX = 500
_IAM_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)
# The attributes the portal manages; anything else on an item is left out of comparisons.
USER_ATTRIBUTES = ("LOB", "LOBS")
LOB_ATTRIBUTES = ("ACCOUNT_ID",)


class MappingTableError(Exception):
    """A mapping table could not be read or written; the message names the table and where it is."""

    def __init__(self, *, table: str, where: str, error: AwsError) -> None:
        if isinstance(error, NotFound):
            message = f"DynamoDB table {table} was not found in {where} ({error})"
        else:
            message = f"DynamoDB table {table} in {where}: {error}"
        super().__init__(message)
        self.table = table
        self.error = error


# --- Where the tables are -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    """The tables' location, read from settings at call time."""

    users_table: str
    lobs_table: str
    region: str
    endpoint_url: str
    access: AccountAccess | None

    def describe(self) -> str:
        if self.access is not None:
            where = f"account {self.access.account_id} (role {self.access.role_arn})"
        else:
            where = "the portal's own AWS account"
        where += f", region {self.region}"
        endpoint = self.endpoint_url or settings.AWS_ENDPOINT_URL
        if endpoint:
            # Host only: a URL's path or query could carry something that must not be printed.
            where += f", endpoint {urlsplit(endpoint).netloc or endpoint}"
        return where


def _target() -> _Target:
    region = settings.DYNAMODB_REGION or settings.AWS_REGION
    endpoint_url = settings.DYNAMODB_ENDPOINT_URL
    role_arn = settings.DYNAMODB_ROLE_ARN
    access = None
    if role_arn:
        account_id = role_arn_account(role_arn)
        if account_id is None:
            raise ImproperlyConfigured(f"DYNAMODB_ROLE_ARN is not an IAM role ARN: {role_arn!r}")
        access = AccountAccess(
            account_id=account_id,
            region=region,
            role_arn=role_arn,
            external_id=settings.DYNAMODB_EXTERNAL_ID,
            endpoint_urls={"dynamodb": endpoint_url} if endpoint_url else {},
        )
    return _Target(
        users_table=settings.DYNAMODB_USERS_TABLE,
        lobs_table=settings.DYNAMODB_LOBS_TABLE,
        region=region,
        endpoint_url=endpoint_url,
        access=access,
    )


def mapping_tables_description() -> str:
    """Human-readable: which tables, in which account and region (for messages and commands)."""
    target = _target()
    return f"{target.users_table} and {target.lobs_table} in {target.describe()}"


def _dynamodb(target: _Target) -> DynamoDBClient:
    """The low-level DynamoDB client for the tables (may raise AwsError when AssumeRole fails)."""
    if target.access is not None:
        return client("dynamodb", access=target.access, session_name=SESSION_NAME)
    return client("dynamodb", region=target.region, endpoint_url=target.endpoint_url or None)


# --- Attribute values -----------------------------------------------------------------------------
def _marshal_value(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, list | tuple):
        return {"L": [_marshal_value(element) for element in value]}
    raise TypeError(f"Mapping items hold strings and lists of strings, not {type(value).__name__}")


def marshal_item(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A plain item (strings, lists of strings) in DynamoDB's low-level attribute-value form."""
    return {name: _marshal_value(value) for name, value in item.items()}


def _unmarshal_value(value: dict[str, Any]) -> Any:
    (kind, data), *_ = value.items()
    if kind in ("S", "N", "B", "BOOL"):
        return data  # numbers stay strings: "ACCOUNT_ID" may have been written as N
    if kind == "NULL":
        return None
    if kind == "L":
        return [_unmarshal_value(element) for element in data]
    if kind == "M":
        return {name: _unmarshal_value(element) for name, element in data.items()}
    if kind in ("SS", "NS", "BS"):
        return sorted(data)
    raise ValueError(f"Unknown DynamoDB attribute type {kind!r}")


def unmarshal_item(item: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A low-level DynamoDB item as plain Python values (numbers kept as their string form)."""
    return {name: _unmarshal_value(value) for name, value in item.items()}


# --- Desired state, from the database -------------------------------------------------------------
def _published_memberships() -> QuerySet[Membership]:
    """Memberships that reach the tables: active users in active LOBs, with a role that may open
    the LOB's Studio (the reference architecture's Lambda opens Studio for whoever the users table
    names, so a viewer is left out unless ``STUDIO_ALLOW_VIEWERS``), earliest first."""
    return Membership.objects.filter(
        user__is_active=True, lob__is_active=True, role__in=Membership.studio_roles()
    ).order_by("created_at", "pk")


def desired_user_item(*, username: str) -> dict[str, Any] | None:
    """``{PK, LOB, LOBS}`` for the user as the database says now; None when it must be deleted.

    ``LOB`` is the LOB of the earliest membership (by ``created_at``, then id) and ``LOBS`` all of
    them in that order. Inactive users and users with no membership in an active LOB have no item.
    """
    slugs = list(
        _published_memberships().filter(user__username=username).values_list("lob__slug", flat=True)
    )
    if not slugs:
        return None
    return {"PK": username, "LOB": slugs[0], "LOBS": slugs}


def desired_lob_item(*, slug: str) -> dict[str, Any] | None:
    """``{PK, ACCOUNT_ID}`` for an active LOB; None when the LOB is gone or inactive."""
    account_id = (
        Lob.objects.filter(slug=slug, is_active=True)
        .values_list("aws_account__account_id", flat=True)
        .first()
    )
    if account_id is None:
        return None
    return {"PK": slug, "ACCOUNT_ID": account_id}


def _all_desired_user_items() -> dict[str, dict[str, Any]]:
    slugs_by_user: dict[str, list[str]] = {}
    for username, slug in _published_memberships().values_list("user__username", "lob__slug"):
        slugs_by_user.setdefault(username, []).append(slug)
    return {
        username: {"PK": username, "LOB": slugs[0], "LOBS": slugs}
        for username, slugs in slugs_by_user.items()
    }


def _all_desired_lob_items() -> dict[str, dict[str, Any]]:
    rows = Lob.objects.filter(is_active=True).values_list("slug", "aws_account__account_id")
    return {slug: {"PK": slug, "ACCOUNT_ID": account_id} for slug, account_id in rows}


def _desired_item(kind: str, key: str) -> dict[str, Any] | None:
    if "\x00" in key:
        # Only in an item someone put in the table by hand: no user or LOB has it (and
        # PostgreSQL cannot compare it), so the item is one to delete.
        return None
    if kind == MappingOutbox.Kind.USER:
        return desired_user_item(username=key)
    if kind == MappingOutbox.Kind.LOB:
        return desired_lob_item(slug=key)
    raise ValueError(f"Unknown mapping kind {kind!r}")


def _table_for(kind: str, target: _Target) -> str:
    return target.users_table if kind == MappingOutbox.Kind.USER else target.lobs_table


def _write(dynamodb: DynamoDBClient, *, table: str, key: str, item: dict[str, Any] | None) -> None:
    """PutItem of the desired item, or DeleteItem when there is none (raises AwsError)."""
    with aws_errors():
        if item is None:
            dynamodb.delete_item(TableName=table, Key={"PK": {"S": key}})
        else:
            dynamodb.put_item(TableName=table, Item=marshal_item(item))


# --- The outbox -----------------------------------------------------------------------------------
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


def mapping_outbox_purge(*, older_than: timedelta | None = None) -> int:
    """Delete delivered rows older than ``older_than`` (default: the retention setting)."""
    if older_than is None:
        older_than = timedelta(days=settings.DYNAMODB_OUTBOX_RETENTION_DAYS)
    deleted, _ = MappingOutbox.objects.filter(
        delivered_at__isnull=False, delivered_at__lt=timezone.now() - older_than
    ).delete()
    return deleted


# --- Drift ----------------------------------------------------------------------------------------
def _scan(dynamodb: DynamoDBClient, *, table: str, where: str) -> dict[str, dict[str, Any]]:
    """Every item of the table by PK (a full, consistent, paginated Scan)."""
    items: dict[str, dict[str, Any]] = {}
    try:
        with aws_errors():
            for page in dynamodb.get_paginator("scan").paginate(
                TableName=table, ConsistentRead=True
            ):
                for raw in page.get("Items", []):
                    item = unmarshal_item(raw)
                    if isinstance(item.get("PK"), str):
                        items[item["PK"]] = item
    except AwsError as exc:
        raise MappingTableError(table=table, where=where, error=exc) from exc
    return items


def _connect(target: _Target) -> DynamoDBClient:
    try:
        return _dynamodb(target)
    except AwsError as exc:
        raise MappingTableError(
            table=f"{target.users_table}/{target.lobs_table}", where=target.describe(), error=exc
        ) from exc


def _summary(item: dict[str, Any] | None, attributes: tuple[str, ...]) -> str:
    if item is None:
        return "no item"
    parts = []
    for name in attributes:
        value = item.get(name)
        if value is None:
            continue
        shown = ",".join(str(element) for element in value) if isinstance(value, list) else value
        parts.append(f"{name}={shown}")
    return ", ".join(parts) or "no mapped attributes"


@dataclass(frozen=True)
class DriftEntry:
    """One key whose table item is not what the portal wants (``None``: no item on that side)."""

    key: str
    desired: dict[str, Any] | None
    actual: dict[str, Any] | None


@dataclass
class TableDrift:
    """Differences in one table: items missing from it, items it should not have, wrong items."""

    table: str
    attributes: tuple[str, ...]
    missing: list[DriftEntry] = field(default_factory=list)
    unexpected: list[DriftEntry] = field(default_factory=list)
    different: list[DriftEntry] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when the table holds exactly the desired items."""
        return not (self.missing or self.unexpected or self.different)

    def lines(self) -> Iterator[str]:
        """One readable line per difference, e.g. ``users-map-table: missing alice (LOB=a...)``."""
        for entry in self.missing:
            yield f"{self.table}: missing {entry.key} ({_summary(entry.desired, self.attributes)})"
        for entry in self.unexpected:
            summary = _summary(entry.actual, self.attributes)
            yield f"{self.table}: unexpected {entry.key} ({summary})"
        for entry in self.different:
            actual = _summary(entry.actual, self.attributes)
            desired = _summary(entry.desired, self.attributes)
            yield f"{self.table}: different {entry.key} ({actual}; expected {desired})"


@dataclass
class Drift:
    """Differences between the portal's mappings and both DynamoDB tables."""

    users: TableDrift
    lobs: TableDrift

    @property
    def clean(self) -> bool:
        """True when both tables match the portal."""
        return self.users.clean and self.lobs.clean

    def lines(self) -> list[str]:
        """Every difference as a readable line (empty when clean)."""
        return [*self.users.lines(), *self.lobs.lines()]


def _compare(
    *,
    table: str,
    attributes: tuple[str, ...],
    desired: dict[str, dict[str, Any]],
    actual: dict[str, dict[str, Any]],
) -> TableDrift:
    drift = TableDrift(table=table, attributes=attributes)
    for key in sorted(desired.keys() | actual.keys()):
        wanted, found = desired.get(key), actual.get(key)
        entry = DriftEntry(key=key, desired=wanted, actual=found)
        if found is None:
            drift.missing.append(entry)
        elif wanted is None:
            drift.unexpected.append(entry)
        elif any(found.get(name) != wanted.get(name) for name in attributes):
            drift.different.append(entry)
    return drift


def mapping_drift() -> Drift:
    """Compare the desired state of every user and LOB with a full Scan of both tables.

    Only the managed attributes (``LOB``, ``LOBS``; ``ACCOUNT_ID``) are compared; other attributes
    on an item are ignored. Raises :class:`MappingTableError` when a table cannot be read.
    """
    target = _target()
    dynamodb = _connect(target)
    where = target.describe()
    actual_users = _scan(dynamodb, table=target.users_table, where=where)
    actual_lobs = _scan(dynamodb, table=target.lobs_table, where=where)
    return Drift(
        users=_compare(
            table=target.users_table,
            attributes=USER_ATTRIBUTES,
            desired=_all_desired_user_items(),
            actual=actual_users,
        ),
        lobs=_compare(
            table=target.lobs_table,
            attributes=LOB_ATTRIBUTES,
            desired=_all_desired_lob_items(),
            actual=actual_lobs,
        ),
    )


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


# --- Import ---------------------------------------------------------------------------------------
@dataclass
class ImportResult:
    """What an import created, and what it refused to change (one readable line per conflict)."""

    accounts_created: int = 0
    lobs_created: int = 0
    users_created: int = 0
    memberships_created: int = 0
    conflicts: list[str] = field(default_factory=list)


def _user_slugs(item: dict[str, Any]) -> list[str]:
    """The LOBs of a users-table item, its ``LOB`` first (the one the Lambda uses)."""
    lobs = item.get("LOBS")
    slugs = [slug for slug in lobs if isinstance(slug, str)] if isinstance(lobs, list) else []
    primary = item.get("LOB")
    if isinstance(primary, str) and primary:
        slugs = [primary, *slugs]
    # A NUL names no LOB (and PostgreSQL cannot compare it): such a value is left out.
    return [slug for slug in dict.fromkeys(slugs) if "\x00" not in slug]


def _account_id_of(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    # Written as a number (N), an id loses its leading zeros; account ids always have 12 digits.
    value = value.zfill(12) if value.isdigit() else value
    try:
        validate_account_id(value)
    except ValidationError:
        return None
    return value


def _check_import_arguments(
    *, default_role: str, default_region: str, invoke_role_name: str, results_bucket: str
) -> None:
    if default_role not in Membership.Role.values:
        raise ValueError(f"default_role must be one of {Membership.Role.values}")
    if not _IAM_ROLE_NAME.fullmatch(invoke_role_name):
        raise ValueError(f"Not an IAM role name: {invoke_role_name!r}")
    try:
        validate_region(default_region)
        validate_bucket_name(results_bucket)
    except ValidationError as exc:
        raise ValueError(" ".join(exc.messages)) from exc


def _import_lobs(
    *,
    items: dict[str, dict[str, Any]],
    table: str,
    default_region: str,
    invoke_role_name: str,
    results_bucket: str,
    result: ImportResult,
) -> None:
    for slug, item in sorted(items.items()):
        account_id = _account_id_of(item.get("ACCOUNT_ID"))
        try:
            validate_slug(slug)
        except ValidationError:
            result.conflicts.append(f"{table}: skipped {slug!r}: not a valid LOB slug")
            continue
        if len(slug) > Lob._meta.get_field("slug").max_length or account_id is None:
            result.conflicts.append(
                f"{table}: skipped {slug}: needs a slug of at most 64 characters "
                f"and a 12-digit ACCOUNT_ID (got {item.get('ACCOUNT_ID')!r})"
            )
            continue
        lob = Lob.objects.select_related("aws_account").filter(slug=slug).first()
        if lob is None and lob_slug_used_before(slug):
            result.conflicts.append(
                f"{table}: skipped {slug}: a deleted LOB had this slug (its audit trail and "
                "stored objects keep it); not re-created"
            )
            continue
        if lob is not None:
            if lob.aws_account.account_id != account_id:
                result.conflicts.append(
                    f"{table}: LOB {slug} is in account {lob.aws_account.account_id} in the portal "
                    f"but {account_id} in the table; left unchanged"
                )
            continue
        account = AwsAccount.objects.filter(account_id=account_id).first()
        if account is None:
            account = AwsAccount.objects.create(
                account_id=account_id,
                name=f"Imported {account_id}",
                default_region=default_region,
                invoke_role_arn=f"arn:aws:iam::{account_id}:role/{invoke_role_name}",
                results_bucket=results_bucket,
            )
            result.accounts_created += 1
        Lob.objects.create(slug=slug, name=slug, aws_account=account)
        result.lobs_created += 1


def _import_users(
    *, items: dict[str, dict[str, Any]], table: str, default_role: str, result: ImportResult
) -> None:
    max_username = User._meta.get_field("username").max_length
    for username, item in sorted(items.items()):
        slugs = _user_slugs(item)
        try:
            User.username_validator(username)
        except ValidationError:
            result.conflicts.append(f"{table}: skipped {username!r}: not a valid username")
            continue
        if len(username) > max_username or not slugs:
            result.conflicts.append(f"{table}: skipped {username}: too long or without a LOB")
            continue
        user = User.objects.filter(username=username).first()
        if user is None:
            # A placeholder: the user-sync service binds the real identity at first sign-in.
            user = User(username=username, idp_issuer="", idp_subject="")
            user.set_unusable_password()
            user.save()
            result.users_created += 1
        lobs = {lob.slug: lob for lob in Lob.objects.filter(slug__in=slugs)}
        member_of = set(Membership.objects.filter(user=user).values_list("lob__slug", flat=True))
        for slug in slugs:  # in order, so the table's LOB becomes the earliest membership
            if slug in member_of:
                continue
            if slug not in lobs:
                result.conflicts.append(
                    f"{table}: {username} is in LOB {slug}, which the portal does not have; "
                    "membership skipped"
                )
                continue
            Membership.objects.create(user=user, lob=lobs[slug], role=default_role)
            result.memberships_created += 1
        earliest = (
            Membership.objects.filter(user=user)
            .order_by("created_at", "pk")
            .values_list("lob__slug", flat=True)
            .first()
        )
        if earliest is not None and slugs[0] in lobs and earliest != slugs[0]:
            result.conflicts.append(
                f"{table}: {username} has LOB={slugs[0]} in the table but the portal's earliest "
                f"membership is {earliest}; publishing will change LOB to {earliest}"
            )


def mapping_import(
    *,
    default_role: str = Membership.Role.ANALYST,
    default_region: str,
    invoke_role_name: str = "GatehouseInvokeRole",
    results_bucket: str,
    acting_user: User | None = None,
) -> ImportResult:
    """Load an existing deployment's tables into the portal (idempotent).

    Creates what is missing: AWS accounts (``Imported <id>``, invoke role
    ``arn:aws:iam::<id>:role/<invoke_role_name>``, the given region and results bucket), LOBs
    (name = slug), placeholder users (username = PK, no identity yet, unusable password) and
    memberships with ``default_role`` for every LOB of ``LOBS`` (else ``LOB``), the table's ``LOB``
    first. Existing rows are never changed: a LOB in another account is reported as a conflict.
    Raises ValueError for bad arguments and :class:`MappingTableError` when a table cannot be read.
    """
    _check_import_arguments(
        default_role=default_role,
        default_region=default_region,
        invoke_role_name=invoke_role_name,
        results_bucket=results_bucket,
    )
    target = _target()
    dynamodb = _connect(target)
    where = target.describe()
    lob_items = _scan(dynamodb, table=target.lobs_table, where=where)
    user_items = _scan(dynamodb, table=target.users_table, where=where)
    result = ImportResult()
    with transaction.atomic():
        _import_lobs(
            items=lob_items,
            table=target.lobs_table,
            default_region=default_region,
            invoke_role_name=invoke_role_name,
            results_bucket=results_bucket,
            result=result,
        )
        _import_users(
            items=user_items, table=target.users_table, default_role=default_role, result=result
        )
        audit_record(
            action="mapping.imported",
            outcome=AuditEvent.Outcome.SUCCESS,
            actor=acting_user,
            target_type="dynamodb",
            target_id=f"{target.users_table},{target.lobs_table}",
            detail={
                "users_table": target.users_table,
                "lobs_table": target.lobs_table,
                "accounts_created": result.accounts_created,
                "lobs_created": result.lobs_created,
                "users_created": result.users_created,
                "memberships_created": result.memberships_created,
                "conflicts": len(result.conflicts),
            },
        )
    return result
