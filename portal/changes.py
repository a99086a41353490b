"""What every service that changes an object does: check the actor, validate, save, audit.

Shared by accounts (AWS accounts, LOBs, memberships) and subscriptions (listings, subscriptions).
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Model
from django.http import HttpRequest

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from portal.errors import Conflict, NotPermitted

# The attribute that names an object in the audit trail, by preference.
_NATURAL_KEYS = ("account_id", "slug", "product_code", "username")


def audit_label(instance: Model) -> str:
    """How an object is named in audit records: its natural key, else its primary key."""
    for attribute in _NATURAL_KEYS:
        value = getattr(instance, attribute, None)
        if value:
            return str(value)
    return str(instance.pk)


def snapshot(
    instance: Model, fields: tuple[str, ...], *, secret_fields: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Plain values of fields for before/after audit records (secrets only as set or unset)."""
    values: dict[str, Any] = {}
    for field in fields:
        value = getattr(instance, field)
        if isinstance(value, Model):
            value = audit_label(value)
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        if field in secret_fields:
            value = "(set)" if value else ""
        values[field] = value
    return values


def require_platform_admin(user: User) -> None:
    """Refuse (403) anyone but an active platform admin."""
    if not (user.is_active and user.is_staff):
        raise NotPermitted("Only platform admins may do this.")


def validated_save(instance: Model) -> None:
    """full_clean, then save; a duplicate (checked by the database, so races too) is a 409."""
    instance.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:
        raise Conflict("That conflicts with an existing record.", code="duplicate") from exc


def audit_change(
    *,
    action: str,
    acting_user: User,
    request: HttpRequest | None,
    target: Model,
    target_type: str,
    lob_slug: str = "",
    before: dict | None,
    after: dict | None,
) -> None:
    """One audit event for a create (before=None), update or delete (after=None)."""
    detail = {
        name: value for name, value in (("before", before), ("after", after)) if value is not None
    }
    audit_record(
        action=action,
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=acting_user,
        target_type=target_type,
        target_id=audit_label(target),
        lob_slug=lob_slug,
        detail=detail,
    )
