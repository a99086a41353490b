"""Changing AWS accounts, LOBs and memberships: the rules, the audit trail, the DynamoDB outbox.

Every function checks that the acting user may make the change (platform admins everything; LOB
admins the members of their own LOBs), validates, writes, records an audit event with before and
after values, and queues the mapping for DynamoDB publication. Interfaces stay thin.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.http import HttpRequest

from accounts.audit import audit_record
from accounts.models import AuditEvent, AwsAccount, Lob, Membership, User
from accounts.selectors import lob_slug_used_before, may_manage_members
from accounts.services.mapping_publication import mapping_outbox_enqueue
from portal.changes import audit_change, require_platform_admin, snapshot, validated_save
from portal.errors import Conflict, NotPermitted, ServiceError

ACCOUNT_FIELDS = (
    "account_id",
    "name",
    "default_region",
    "invoke_role_arn",
    "studio_role_arn",
    "external_id",
    "results_bucket",
    "results_prefix",
    "sts_endpoint_url",
    "s3_endpoint_url",
    "sagemaker_endpoint_url",
    "sagemaker_runtime_endpoint_url",
)
LOB_FIELDS = ("slug", "name", "description", "aws_account", "is_active")
# Never copied into audit records: the ExternalId is a shared secret with the account owner.
SECRET_FIELDS = frozenset({"external_id"})


def _enqueue_lob_and_members(lob: Lob, slug: str | None = None) -> None:
    mapping_outbox_enqueue(kind="lob", key=slug or lob.slug)
    for username in lob.memberships.values_list("user__username", flat=True):
        mapping_outbox_enqueue(kind="user", key=username)


# --- AWS accounts ---------------------------------------------------------------------------------


@transaction.atomic
def aws_account_create(
    *, acting_user: User, request: HttpRequest | None = None, **fields: Any
) -> AwsAccount:
    """Register an AWS account (platform admins only)."""
    require_platform_admin(acting_user)
    account = AwsAccount(**{k: v for k, v in fields.items() if k in ACCOUNT_FIELDS})
    validated_save(account)
    audit_change(
        action="aws_account.created",
        acting_user=acting_user,
        request=request,
        target=account,
        target_type="aws_account",
        before=None,
        after=snapshot(account, ACCOUNT_FIELDS, secret_fields=SECRET_FIELDS),
    )
    return account


@transaction.atomic
def aws_account_update(
    *, account: AwsAccount, acting_user: User, request: HttpRequest | None = None, **changes: Any
) -> AwsAccount:
    """Change an AWS account's settings (platform admins only). The account id is fixed."""
    require_platform_admin(acting_user)
    if "account_id" in changes and changes["account_id"] != account.account_id:
        raise ServiceError(
            "An account id cannot change; register the other account instead.",
            code="immutable",
            field="account_id",
        )
    before = snapshot(account, ACCOUNT_FIELDS, secret_fields=SECRET_FIELDS)
    secrets_before = {name: getattr(account, name) for name in SECRET_FIELDS}
    for field, value in changes.items():
        if field in ACCOUNT_FIELDS:
            setattr(account, field, value)
    validated_save(account)
    after = snapshot(account, ACCOUNT_FIELDS, secret_fields=SECRET_FIELDS)
    # A secret shows only as set or unset, so a new value in place of another looks unchanged:
    # compared here, it is recorded as changed (never the value).
    for name in sorted(SECRET_FIELDS):
        if getattr(account, name) != secrets_before[name] and before[name] == after[name]:
            after[name] = "(changed)"
    if before != after:
        audit_change(
            action="aws_account.updated",
            acting_user=acting_user,
            request=request,
            target=account,
            target_type="aws_account",
            before=before,
            after=after,
        )
    return account


@transaction.atomic
def aws_account_delete(
    *, account: AwsAccount, acting_user: User, request: HttpRequest | None = None
) -> None:
    """Remove an AWS account no LOB uses any more (platform admins only)."""
    require_platform_admin(acting_user)
    in_use = list(account.lobs.values_list("slug", flat=True))
    if in_use:
        raise Conflict(
            f"Account {account.account_id} is used by LOB(s) {', '.join(in_use)}; move them first.",
            code="account_in_use",
        )
    before = snapshot(account, ACCOUNT_FIELDS, secret_fields=SECRET_FIELDS)
    try:
        with transaction.atomic():
            account.delete()
    except ProtectedError as exc:  # a LOB was attached since the check above
        raise Conflict(
            f"Account {account.account_id} is used by a LOB; move it first.", code="account_in_use"
        ) from exc
    audit_record(
        action="aws_account.deleted",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=acting_user,
        target_type="aws_account",
        target_id=before["account_id"],
        detail={"before": before},
    )


# --- LOBs -----------------------------------------------------------------------------------------


@transaction.atomic
def lob_create(*, acting_user: User, request: HttpRequest | None = None, **fields: Any) -> Lob:
    """Create a LOB mapped to an AWS account (platform admins only).

    A slug names the LOB's S3 prefix, its audit trail and its Studio mapping, so a slug that a
    deleted LOB had is refused: the new LOB would inherit the old one's history and objects.
    """
    require_platform_admin(acting_user)
    lob = Lob(**{k: v for k, v in fields.items() if k in LOB_FIELDS})
    if lob.slug and lob_slug_used_before(lob.slug):
        raise Conflict(
            f"A LOB named {lob.slug!r} existed before; its audit trail and stored objects keep "
            "that name. Choose another slug.",
            code="slug_used_before",
        )
    validated_save(lob)
    audit_change(
        action="lob.created",
        acting_user=acting_user,
        request=request,
        target=lob,
        target_type="lob",
        lob_slug=lob.slug,
        before=None,
        after=snapshot(lob, LOB_FIELDS),
    )
    mapping_outbox_enqueue(kind="lob", key=lob.slug)
    return lob


@transaction.atomic
def lob_update(
    *, lob: Lob, acting_user: User, request: HttpRequest | None = None, **changes: Any
) -> Lob:
    """Change a LOB (platform admins only); a new account is republished. The slug is fixed."""
    require_platform_admin(acting_user)
    if "slug" in changes and changes["slug"] != lob.slug:
        raise ServiceError(
            "A LOB's slug cannot change: it names the LOB's objects in S3, its audit trail and "
            "its Studio mapping.",
            code="slug_immutable",
        )
    before = snapshot(lob, LOB_FIELDS)
    for field, value in changes.items():
        if field in LOB_FIELDS:
            setattr(lob, field, value)
    validated_save(lob)
    after = snapshot(lob, LOB_FIELDS)
    if before != after:
        audit_change(
            action="lob.updated",
            acting_user=acting_user,
            request=request,
            target=lob,
            target_type="lob",
            lob_slug=lob.slug,
            before=before,
            after=after,
        )
        _enqueue_lob_and_members(lob)
    return lob


@transaction.atomic
def lob_delete(*, lob: Lob, acting_user: User, request: HttpRequest | None = None) -> None:
    """Delete a LOB and its memberships (platform admins only)."""
    require_platform_admin(acting_user)
    # Wait for a member being added: one inserted between collecting the LOB's rows and deleting
    # them would fail the LOB's DELETE on its foreign key.
    _lob_lock(lob)
    before = snapshot(lob, LOB_FIELDS)
    usernames = list(lob.memberships.values_list("user__username", flat=True))
    slug = lob.slug
    try:
        lob.delete()
    except ProtectedError as exc:
        raise Conflict(
            f"LOB {slug} has subscriptions; they and their jobs must be removed first.",
            code="lob_in_use",
        ) from exc
    audit_record(
        action="lob.deleted",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=acting_user,
        target_type="lob",
        target_id=slug,
        lob_slug=slug,
        detail={"before": before, "members_removed": len(usernames)},
    )
    mapping_outbox_enqueue(kind="lob", key=slug)
    for username in usernames:
        mapping_outbox_enqueue(kind="user", key=username)


# --- Memberships ----------------------------------------------------------------------------------


def _lob_lock(lob: Lob) -> None:
    """Lock the LOB's row until the transaction ends: adding a member, and changing or deleting
    the LOB, then happen one after the other."""
    list(Lob.objects.select_for_update().filter(pk=lob.pk).values_list("pk", flat=True))


def _require_member_manager(user: User, lob: Lob) -> None:
    if not may_manage_members(user, lob):
        raise NotPermitted("Only platform admins and this LOB's admins manage its members.")


def _membership_snapshot(membership: Membership) -> dict[str, str]:
    return {
        "user": membership.user.username,
        "lob": membership.lob.slug,
        "role": membership.role,
    }


def _refuse_losing_last_admin(membership: Membership, acting_user: User) -> None:
    """A LOB admin may not leave their LOB without an admin; platform admins may."""
    if (acting_user.is_active and acting_user.is_staff) or membership.role != Membership.Role.ADMIN:
        return
    # Lock the LOB's admin rows so two admins demoting each other at once cannot both succeed.
    admins = list(
        Membership.objects.select_for_update()
        .filter(lob=membership.lob, role=Membership.Role.ADMIN)
        .values_list("pk", flat=True)
    )
    if not [pk for pk in admins if pk != membership.pk]:
        raise Conflict(
            "This is the LOB's last admin; name another admin first.", code="last_lob_admin"
        )


def _check_role(role: str) -> None:
    if role not in Membership.Role.values:
        raise ServiceError(
            f"Role must be one of {', '.join(Membership.Role.values)}.",
            code="invalid_role",
            field="role",
        )


@transaction.atomic
def membership_create(
    *, lob: Lob, user: User, role: str, acting_user: User, request: HttpRequest | None = None
) -> Membership:
    """Add a user to a LOB with a role."""
    _require_member_manager(acting_user, lob)
    _check_role(role)
    if not user.is_active:
        raise ServiceError("That user is deactivated.", code="user_inactive", field="user")
    # Wait for a change of the LOB in flight: a deactivation queues the members it sees, so one
    # added meanwhile (and published as in an active LOB) would stay in the users table; a
    # deletion collects the rows it deletes.
    _lob_lock(lob)
    if Membership.objects.filter(lob=lob, user=user).exists():
        raise Conflict(f"{user.username} is already a member of {lob.slug}.", code="already_member")
    membership = Membership(lob=lob, user=user, role=role)
    try:
        with transaction.atomic():
            membership.save()
    except IntegrityError as exc:
        raise Conflict(
            f"{user.username} is already a member of {lob.slug}.", code="already_member"
        ) from exc
    audit_change(
        action="membership.created",
        acting_user=acting_user,
        request=request,
        target=membership,
        target_type="membership",
        lob_slug=lob.slug,
        before=None,
        after=_membership_snapshot(membership),
    )
    mapping_outbox_enqueue(kind="user", key=user.username)
    return membership


@transaction.atomic
def membership_update(
    *,
    membership: Membership,
    role: str,
    acting_user: User,
    request: HttpRequest | None = None,
) -> Membership:
    """Change a member's role in their LOB."""
    _require_member_manager(acting_user, membership.lob)
    _check_role(role)
    if role == membership.role:
        return membership
    if role != Membership.Role.ADMIN:
        _refuse_losing_last_admin(membership, acting_user)
    before = _membership_snapshot(membership)
    membership.role = role
    membership.save(update_fields=["role", "updated_at"])
    audit_change(
        action="membership.updated",
        acting_user=acting_user,
        request=request,
        target=membership,
        target_type="membership",
        lob_slug=membership.lob.slug,
        before=before,
        after=_membership_snapshot(membership),
    )
    # The role decides whether the membership is published (viewers may not open Studio).
    mapping_outbox_enqueue(kind="user", key=membership.user.username)
    return membership


@transaction.atomic
def membership_delete(
    *, membership: Membership, acting_user: User, request: HttpRequest | None = None
) -> None:
    """Remove a member from a LOB."""
    _require_member_manager(acting_user, membership.lob)
    _refuse_losing_last_admin(membership, acting_user)
    before = _membership_snapshot(membership)
    membership_id = membership.pk
    membership.delete()
    audit_record(
        action="membership.deleted",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=acting_user,
        target_type="membership",
        target_id=str(membership_id),
        lob_slug=before["lob"],
        detail={"before": before},
    )
    mapping_outbox_enqueue(kind="user", key=before["user"])
