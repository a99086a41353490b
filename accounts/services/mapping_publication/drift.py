"""Drift: the differences between the portal's mappings and a full Scan of both tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from accounts.services.mapping_publication.desired import (
    _all_desired_lob_items,
    _all_desired_user_items,
)
from accounts.services.mapping_publication.tables import _connect, _scan, _target

# The attributes the portal manages; anything else on an item is left out of comparisons.
USER_ATTRIBUTES = ("LOB", "LOBS")
LOB_ATTRIBUTES = ("ACCOUNT_ID",)


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
