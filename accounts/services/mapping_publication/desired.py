"""The desired state of the mapping tables, computed from the database as it is now.

One user's or LOB's item (None: the item must be deleted), and every item of each table.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from accounts.models import Lob, MappingOutbox, Membership


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
