"""Database keys typed by people: in query strings and forms, as text."""

from __future__ import annotations

# Primary keys are signed 64-bit integers: a larger number is no key, and the database (SQLite
# with OverflowError, PostgreSQL with an out-of-range error) refuses to compare it.
KEY_LIMIT = 2**63


def key_from_text(value: str) -> int | None:
    """The positive key an ASCII decimal text names, or None (not a number, 0, out of range)."""
    if not (value.isascii() and value.isdigit()):
        return None
    key = int(value)
    return key if 0 < key < KEY_LIMIT else None
