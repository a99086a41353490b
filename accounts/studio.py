"""Opening a LOB's SageMaker Studio: who may, in which domain, as which profile, and the URL.

Seed 003 done properly. Membership and role are decided by the tenancy selectors (unknown LOB:
404; not a member, an inactive LOB or a role Studio is not open to: 403). The portal assumes the
LOB account's Studio access role with the account's ExternalId and a session name that names the
portal user, so CloudTrail attributes the call to the person. The domain is the one configured on
the LOB, else the account's only InService domain. CreatePresignedDomainUrl goes through the
account's SageMaker endpoint override (a VPC endpoint), with a URL life and a session length from
the settings.

Every attempt, allowed or refused, is an audit event. The presigned URL is a bearer credential: it
is handed to the caller and is never logged, audited or stored.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest

from accounts import selectors
from accounts.audit import audit_record
from accounts.models import (
    STUDIO_PROFILE_NAME_PATTERN,
    AuditEvent,
    AwsAccount,
    Lob,
    Membership,
    User,
)
from accounts.services.aws_verification import account_access
from portal import aws_gateway
from portal.errors import NotFoundError, NotPermitted, ServiceError

logger = logging.getLogger(__name__)

AUDIT_ACTION = "studio.open"
IN_SERVICE = "InService"
# ListDomains pages are read up to this many domains: an account with more needs a configured id.
_MAX_DOMAINS_LISTED = 100
_PROFILE_NAME = re.compile(STUDIO_PROFILE_NAME_PATTERN)


# --- Errors a person can act on -------------------------------------------------------------------


class StudioError(ServiceError):
    """Studio cannot be opened for a reason someone can fix; ``title`` and ``hint`` are for people.

    ``status`` is the HTTP status pages and JSON answers use; ``aws_code`` keeps AWS's own code
    (for the audit trail) when AWS gave the reason.
    """

    status = 409
    code = "studio_unavailable"
    title = "Studio cannot be opened"

    def __init__(self, message: str, *, hint: str = "", aws_code: str = "") -> None:
        super().__init__(message)
        self.hint = hint
        self.aws_code = aws_code


class StudioProfileNotFound(StudioError):
    """The user has no user profile in the LOB's Studio domain."""

    code = "studio_profile_not_found"
    title = "You have no Studio profile here"


class StudioProfileNameInvalid(StudioError):
    """The user's profile name (their username by default) is not a valid SageMaker name."""

    code = "studio_profile_name_invalid"
    title = "Your Studio profile name is not valid"


class StudioProfileShared(StudioError):
    """Another person's membership opens the same user profile in the same domain."""

    code = "studio_profile_shared"
    title = "Your Studio profile is someone else's too"


class StudioDomainNotFound(StudioError):
    """The account has no Studio domain, or not the one configured on the LOB."""

    code = "studio_domain_not_found"
    title = "No Studio domain"


class StudioDomainAmbiguous(StudioError):
    """The account has several InService domains and the LOB does not say which one is its."""

    code = "studio_domain_ambiguous"
    title = "Several Studio domains"


class StudioDomainNotInService(StudioError):
    """The domain exists but is not InService (being created, updated, deleted, or failed)."""

    status = 503
    code = "studio_domain_not_in_service"
    title = "Studio is not in service"


class StudioRoleNotAssumable(StudioError):
    """STS refused the portal the LOB account's Studio access role (trust policy, ExternalId)."""

    status = 502
    code = "studio_role_not_assumable"
    title = "The Studio access role cannot be assumed"


class StudioRoleNotPermitted(StudioError):
    """The role was assumed but SageMaker refused it the call (its permissions policy)."""

    status = 502
    code = "studio_role_not_permitted"
    title = "The Studio access role is not allowed to open Studio"


class StudioAwsUnavailable(StudioError):
    """SageMaker or STS did not answer, or throttled the portal: trying again later may work."""

    status = 503
    code = "studio_aws_unavailable"
    title = "AWS is not answering"


class StudioAwsError(StudioError):
    """Any other failure of the AWS calls."""

    status = 502
    code = "studio_aws_error"
    title = "AWS could not open Studio"


# --- Reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StudioLaunch:
    """A minted Studio URL and what it was minted for. ``url`` never appears in a repr."""

    lob_slug: str
    account_id: str
    domain_id: str
    profile_name: str
    session_name: str
    expires_in_seconds: int
    session_seconds: int
    url: str = field(repr=False)


def studio_memberships(user: User) -> list[Membership]:
    """The user's memberships (active LOBs) whose Studio they may open, oldest first."""
    return [
        membership for membership in selectors.memberships_of(user) if membership.may_open_studio
    ]


# --- Opening Studio -------------------------------------------------------------------------------


def studio_url_create(
    *, user: User, lob_slug: str, request: HttpRequest | None = None
) -> StudioLaunch:
    """A presigned Studio URL for the user in the LOB's domain, minted in the LOB's account.

    Raises :class:`NotFoundError` (unknown LOB), :class:`NotPermitted` (not a member, LOB inactive,
    role not allowed) or a :class:`StudioError`. Every outcome is audited, never with the URL.
    """
    membership = _studio_membership(user=user, lob_slug=lob_slug, request=request)
    lob = membership.lob
    account = lob.aws_account
    profile_name = membership.effective_studio_profile_name
    session_name = aws_gateway.session_name_for(user)
    expires_in = int(settings.STUDIO_URL_EXPIRES_SECONDS)
    session_seconds = int(settings.STUDIO_SESSION_SECONDS)
    detail: dict[str, Any] = {
        "account_id": account.account_id,
        "role_arn": account.studio_role_arn,
        "session_name": session_name,
        "profile": profile_name,
        "domain_id": lob.studio_domain_id,
    }
    try:
        if not _PROFILE_NAME.fullmatch(profile_name):
            raise StudioProfileNameInvalid(
                f"“{profile_name}” cannot be a SageMaker Studio user profile name.",
                hint="Ask a platform admin to set your Studio profile name on your membership "
                "(letters, digits and hyphens, up to 63).",
            )
        sagemaker = _studio_client(account=account, session_name=session_name)
        detail["domain_id"] = domain_id = _domain_of(sagemaker, lob=lob)
        _require_own_profile(membership, profile_name=profile_name, domain_id=domain_id)
        url = _presigned_url(
            sagemaker,
            lob=lob,
            domain_id=domain_id,
            profile_name=profile_name,
            expires_in=expires_in,
            session_seconds=session_seconds,
        )
    except StudioError as exc:
        logger.warning(
            "Studio for %s in %s not opened: %s %s",
            user.username,
            lob.slug,
            exc.code,
            exc.aws_code or "-",
        )
        _audit(
            request=request,
            user=user,
            lob_slug=lob.slug,
            target_id=lob.slug,
            outcome=AuditEvent.Outcome.FAILURE,
            reason=exc.code,
            detail={**detail, "aws_code": exc.aws_code, "message": str(exc)[:500]},
        )
        raise
    logger.info(
        "Studio opened for %s in %s: account %s, domain %s, profile %s, session %s",
        user.username,
        lob.slug,
        account.account_id,
        domain_id,
        profile_name,
        session_name,
    )
    _audit(
        request=request,
        user=user,
        lob_slug=lob.slug,
        target_id=lob.slug,
        outcome=AuditEvent.Outcome.SUCCESS,
        detail={
            **detail,
            "url_expires_seconds": expires_in,
            "session_seconds": session_seconds,
        },
    )
    return StudioLaunch(
        lob_slug=lob.slug,
        account_id=account.account_id,
        domain_id=domain_id,
        profile_name=profile_name,
        session_name=session_name,
        expires_in_seconds=expires_in,
        session_seconds=session_seconds,
        url=url,
    )


def studio_refusal_record(*, request: HttpRequest | None, lob_slug: str, reason: str) -> None:
    """Audit an attempt refused before the service could run (e.g. nobody signed in)."""
    lob_exists = Lob.objects.filter(slug=lob_slug).exists()
    _audit(
        request=request,
        user=None,
        lob_slug=lob_slug if lob_exists else "",
        target_id=lob_slug,
        outcome=AuditEvent.Outcome.REFUSED,
        reason=reason,
        detail={},
    )


def _studio_membership(*, user: User, lob_slug: str, request: HttpRequest | None) -> Membership:
    """The user's membership in the LOB if it lets them open Studio; audited refusal otherwise."""

    def refuse(error: ServiceError, *, lob_slug_for_audit: str, **detail: Any) -> ServiceError:
        _audit(
            request=request,
            user=user,
            lob_slug=lob_slug_for_audit,
            target_id=lob_slug,
            outcome=AuditEvent.Outcome.REFUSED,
            reason=error.code,
            detail=detail,
        )
        return error

    try:
        lob = selectors.lob_for_member(user, lob_slug)
    except selectors.LobNotFound:
        raise refuse(
            NotFoundError(
                f"There is no line of business called “{lob_slug}”.", code="lob_not_found"
            ),
            lob_slug_for_audit="",
        ) from None
    except selectors.LobAccessDenied:
        raise refuse(
            NotPermitted(f"You are not a member of “{lob_slug}”.", code="not_a_member"),
            lob_slug_for_audit=lob_slug,
        ) from None
    # Platform admins see every LOB, but Studio opens only for the LOB's own members.
    membership = (
        Membership.objects.select_related("lob__aws_account", "user")
        .filter(user=user, lob=lob)
        .first()
    )
    if membership is None:
        raise refuse(
            NotPermitted(
                f"You are not a member of “{lob.slug}”: Studio opens only for its members.",
                code="not_a_member",
            ),
            lob_slug_for_audit=lob.slug,
        )
    if not lob.is_active:
        raise refuse(
            NotPermitted(f"“{lob.slug}” is inactive: its Studio is closed.", code="lob_inactive"),
            lob_slug_for_audit=lob.slug,
            role=membership.role,
        )
    if not membership.may_open_studio:
        raise refuse(
            NotPermitted(
                f"Your role in “{lob.slug}” ({membership.get_role_display()}) does not open "
                "Studio. Ask one of its admins if you need it.",
                code="studio_role_not_allowed",
            ),
            lob_slug_for_audit=lob.slug,
            role=membership.role,
        )
    return membership


def _studio_client(*, account: AwsAccount, session_name: str) -> Any:
    """A SageMaker client acting as the account's Studio access role, assumed as the user."""
    role_arn = account.studio_role_arn
    try:
        access = account_access(account, role_arn=role_arn)
    except ValueError as exc:
        raise StudioRoleNotAssumable(
            f"The Studio access role of account {account.account_id} is misconfigured: {exc}.",
            hint="A platform admin corrects the account's Studio access role ARN.",
        ) from exc
    try:
        return aws_gateway.client("sagemaker", access=access, session_name=session_name)
    except aws_gateway.AwsError as exc:
        if isinstance(exc, aws_gateway.NotAuthorized | aws_gateway.NotFound):
            raise StudioRoleNotAssumable(
                f"AWS refused the portal the role {role_arn}: {exc}",
                hint="A platform admin checks that the role exists, trusts the portal and "
                "expects the account's ExternalId.",
                aws_code=exc.aws_code,
            ) from exc
        raise _aws_failure(exc, what=f"assuming {role_arn}") from exc


def _domain_of(sagemaker: Any, *, lob: Lob) -> str:
    """The LOB's configured domain if InService, else the account's only InService domain."""
    account_id = lob.aws_account.account_id
    if lob.studio_domain_id:
        try:
            with aws_gateway.aws_errors():
                domain = sagemaker.describe_domain(DomainId=lob.studio_domain_id)
        except aws_gateway.NotFound as exc:
            raise StudioDomainNotFound(
                f"The Studio domain {lob.studio_domain_id} configured for “{lob.slug}” does not "
                f"exist in account {account_id}.",
                hint="A platform admin corrects the LOB's Studio domain id.",
                aws_code=exc.aws_code,
            ) from exc
        except aws_gateway.AwsError as exc:
            raise _aws_failure(exc, what="DescribeDomain") from exc
        _require_in_service(domain, account_id=account_id)
        return str(domain["DomainId"])

    try:
        domains = _list_domains(sagemaker)
    except aws_gateway.AwsError as exc:
        raise _aws_failure(exc, what="ListDomains") from exc
    in_service = [domain for domain in domains if domain.get("Status") == IN_SERVICE]
    if len(in_service) == 1:
        return str(in_service[0]["DomainId"])
    if in_service:
        names = ", ".join(sorted(str(domain["DomainId"]) for domain in in_service))
        raise StudioDomainAmbiguous(
            f"Account {account_id} has several Studio domains in service ({names}) and "
            f"“{lob.slug}” does not say which one is its own.",
            hint="A platform admin sets the LOB's Studio domain id.",
        )
    if domains:
        _require_in_service(domains[0], account_id=account_id)
    raise StudioDomainNotFound(
        f"Account {account_id} has no SageMaker Studio domain.",
        hint="The account owner creates the LOB's Studio domain, or a platform admin "
        "points the LOB at the right account.",
    )


def _require_own_profile(membership: Membership, *, profile_name: str, domain_id: str) -> None:
    """Refuse a profile that another person's membership opens in the same domain (a profile
    name set to a colleague's, or to their username): the URL would land in their Studio."""
    account_id = membership.lob.aws_account_id
    shared = (
        Membership.objects.filter(
            lob__aws_account_id=account_id, lob__studio_domain_id__in=(domain_id, "")
        )
        .exclude(user_id=membership.user_id)
        .filter(
            Q(studio_profile_name=profile_name)
            | Q(studio_profile_name="", user__username=profile_name)
        )
        .exists()
    )
    if shared:
        raise StudioProfileShared(
            f"The Studio user profile “{profile_name}” of domain {domain_id} is opened by "
            "another member too; it is opened for nobody until each has their own.",
            hint="A platform admin sets a Studio profile name of your own on your membership.",
        )


def _list_domains(sagemaker: Any) -> list[dict[str, Any]]:
    domains: list[dict[str, Any]] = []
    with aws_gateway.aws_errors():
        for page in sagemaker.get_paginator("list_domains").paginate():
            domains.extend(page.get("Domains", []))
            if len(domains) >= _MAX_DOMAINS_LISTED:
                break
    return domains


def _require_in_service(domain: dict[str, Any], *, account_id: str) -> None:
    status = domain.get("Status", "unknown")
    if status != IN_SERVICE:
        raise StudioDomainNotInService(
            f"The Studio domain {domain.get('DomainId')} in account {account_id} is {status}, "
            "not InService.",
            hint="Try again once the domain is back in service; if it stays like this, tell "
            "the account owner.",
        )


def _presigned_url(
    sagemaker: Any,
    *,
    lob: Lob,
    domain_id: str,
    profile_name: str,
    expires_in: int,
    session_seconds: int,
) -> str:
    try:
        with aws_gateway.aws_errors():
            answer = sagemaker.create_presigned_domain_url(
                DomainId=domain_id,
                UserProfileName=profile_name,
                ExpiresInSeconds=expires_in,
                SessionExpirationDurationInSeconds=session_seconds,
            )
    except aws_gateway.NotFound as exc:
        # The domain was just found, so what is missing is the user profile.
        raise StudioProfileNotFound(
            f"The Studio domain {domain_id} of “{lob.slug}” has no user profile “{profile_name}”.",
            hint="Ask a LOB admin to have your Studio user profile created, or a platform admin "
            "to set the profile name on your membership if yours has another name.",
            aws_code=exc.aws_code,
        ) from exc
    except aws_gateway.AwsError as exc:
        raise _aws_failure(exc, what="CreatePresignedDomainUrl") from exc
    return str(answer["AuthorizedUrl"])


def _aws_failure(exc: aws_gateway.AwsError, *, what: str) -> StudioError:
    """The Studio error for a failed AWS call other than the ones with a specific meaning."""
    if isinstance(exc, aws_gateway.NotAuthorized):
        return StudioRoleNotPermitted(
            f"AWS refused {what} to the Studio access role: {exc}",
            hint="A platform admin checks the role's permissions (sagemaker:ListDomains, "
            "DescribeDomain, CreatePresignedDomainUrl).",
            aws_code=exc.aws_code,
        )
    if isinstance(exc, aws_gateway.Throttled | aws_gateway.Unreachable):
        return StudioAwsUnavailable(
            f"{what} failed: {exc}",
            hint="Try again in a minute.",
            aws_code=exc.aws_code,
        )
    return StudioAwsError(f"{what} failed: {exc}", aws_code=exc.aws_code)


def _audit(
    *,
    request: HttpRequest | None,
    user: User | None,
    lob_slug: str,
    target_id: str,
    outcome: str,
    detail: dict[str, Any],
    reason: str = "",
) -> None:
    audit_record(
        action=AUDIT_ACTION,
        outcome=outcome,
        request=request,
        actor=user,
        target_type="lob",
        target_id=target_id,
        lob_slug=lob_slug,
        reason=reason,
        detail=detail,
    )


# --- Configuring Studio ---------------------------------------------------------------------------


@transaction.atomic
def lob_studio_domain_set(
    *, lob: Lob, studio_domain_id: str, acting_user: User, request: HttpRequest | None = None
) -> Lob:
    """Say which Studio domain of its account is the LOB's (platform admins only; audited).

    Empty means "the account's only InService domain".
    """
    if not (acting_user.is_active and acting_user.is_staff):
        raise NotPermitted("Only platform admins may set a LOB's Studio domain.")
    value = Lob._meta.get_field("studio_domain_id").clean(studio_domain_id.strip(), lob)
    before = lob.studio_domain_id
    if value == before:
        return lob
    lob.studio_domain_id = value
    lob.save(update_fields=["studio_domain_id", "updated_at"])
    audit_record(
        action="lob.studio_domain_changed",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=acting_user,
        target_type="lob",
        target_id=lob.slug,
        lob_slug=lob.slug,
        detail={"before": before, "after": value},
    )
    return lob


@transaction.atomic
def membership_studio_profile_set(
    *,
    membership: Membership,
    studio_profile_name: str,
    acting_user: User,
    request: HttpRequest | None = None,
) -> Membership:
    """Set the Studio user profile a member opens (platform admins and the LOB's admins).

    Empty means "the member's username". Audited with the old and new names.
    """
    if not selectors.may_manage_members(acting_user, membership.lob):
        raise NotPermitted("Only platform admins and this LOB's admins may do this.")
    field_ = Membership._meta.get_field("studio_profile_name")
    value = field_.clean(studio_profile_name.strip(), membership)
    before = membership.studio_profile_name
    if value == before:
        return membership
    membership.studio_profile_name = value
    membership.save(update_fields=["studio_profile_name", "updated_at"])
    audit_record(
        action="membership.studio_profile_changed",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=acting_user,
        target_type="membership",
        target_id=str(membership.pk),
        lob_slug=membership.lob.slug,
        detail={"user": membership.user.username, "before": before, "after": value},
    )
    return membership
