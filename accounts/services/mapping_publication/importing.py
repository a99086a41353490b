"""Import: loading an existing deployment's mapping tables into the portal.

What ``manage.py dynamodb_import`` runs: accounts, LOBs, placeholder users and memberships are
created from the tables' items; existing rows are never changed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from accounts.audit import audit_record
from accounts.models import AuditEvent, AwsAccount, Lob, Membership, User
from accounts.selectors import lob_slug_used_before
from accounts.services.mapping_publication.tables import _connect, _scan, _target
from accounts.validators import validate_account_id, validate_bucket_name, validate_region

_IAM_ROLE_NAME = re.compile(r"[\w+=,.@-]{1,64}", re.ASCII)


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
