"""Verifying an AWS account: can the portal assume its invoke role, and is it the right account?"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, AwsAccount, User
from accounts.selectors import aws_accounts_visible_to
from portal import aws_gateway
from portal.errors import NotPermitted


@dataclass(frozen=True)
class Verification:
    """The outcome of one verification, as recorded on the account."""

    ok: bool
    detail: str
    caller_arn: str = ""
    aws_code: str = ""


def account_access(
    account: AwsAccount, *, role_arn: str | None = None
) -> aws_gateway.AccountAccess:
    """How the gateway reaches this account: region, role (invoke role by default), overrides."""
    return aws_gateway.AccountAccess(
        account_id=account.account_id,
        region=account.default_region,
        role_arn=role_arn or account.invoke_role_arn,
        external_id=account.external_id,
        endpoint_urls=account.endpoint_urls,
    )


def aws_account_verify(
    *, account: AwsAccount, acting_user: User, request: HttpRequest | None = None
) -> Verification:
    """Assume the invoke role as the acting user, call GetCallerIdentity, record the result.

    Platform admins and the admins of a LOB using the account may ask (the ones who can see the
    account); the outcome is stored on the account and audited, with the exact AWS error.
    """
    if not aws_accounts_visible_to(acting_user).filter(pk=account.pk).exists():
        raise NotPermitted("Only platform admins and the account's LOB admins may verify it.")
    try:
        identity = aws_gateway.caller_identity(
            access=account_access(account),
            session_name=aws_gateway.session_name_for(acting_user),
        )
    except aws_gateway.AwsError as exc:
        result = Verification(ok=False, detail=str(exc)[:1000], aws_code=exc.aws_code or exc.code)
    else:
        if identity["account_id"] == account.account_id:
            result = Verification(
                ok=True,
                detail=f"Assumed {_without_session(identity['arn'])} in account "
                f"{identity['account_id']}.",
                caller_arn=identity["arn"],
            )
        else:
            result = Verification(
                ok=False,
                detail=(
                    f"The role answered from account {identity['account_id']}, "
                    f"not {account.account_id}."
                ),
                caller_arn=identity["arn"],
                aws_code="account_mismatch",
            )
    with transaction.atomic():
        AwsAccount.objects.filter(pk=account.pk).update(
            last_verified_at=timezone.now(),
            last_verification_ok=result.ok,
            last_verification_detail=result.detail,
        )
        audit_record(
            action="aws_account.verified",
            outcome=AuditEvent.Outcome.SUCCESS if result.ok else AuditEvent.Outcome.FAILURE,
            request=request,
            actor=acting_user,
            target_type="aws_account",
            target_id=account.account_id,
            reason=result.aws_code,
            detail={"detail": result.detail},
        )
    account.refresh_from_db()
    return result


def _without_session(arn: str) -> str:
    """An assumed-role ARN without its session name (``gatehouse-<username>``): the detail is
    kept on the account and shown to the admins of every LOB using it, and the person who
    verified may belong to another of them."""
    head, marker, rest = arn.partition(":assumed-role/")
    return f"{head}{marker}{rest.split('/', 1)[0]}" if marker else arn
