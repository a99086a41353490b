"""Services that change users: create them from identity-provider claims, sync their roles."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from accounts.services.mapping_publication import mapping_outbox_enqueue
from portal.errors import NotPermitted


@dataclass(frozen=True)
class Identity:
    """What a verified token says about a person. Fields left as None were not in the token."""

    subject: str
    username: str
    groups: tuple[str, ...]
    email: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    name: str | None = None

    @classmethod
    def from_claims(cls, claims: dict) -> Identity:
        """Read an identity from ID-token, userinfo or access-token claims (Cognito's names)."""
        groups = claims.get("cognito:groups") or ()
        if isinstance(groups, str):
            groups = (groups,)
        username = claims.get("cognito:username") or claims.get("username") or claims["sub"]
        return cls(
            subject=str(claims["sub"]),
            username=str(username)[:150],
            groups=tuple(str(group) for group in groups),
            email=claims.get("email"),
            given_name=claims.get("given_name"),
            family_name=claims.get("family_name"),
            name=claims.get("name"),
        )


def _names(identity: Identity) -> tuple[str | None, str | None]:
    if identity.given_name or identity.family_name:
        return identity.given_name or "", identity.family_name or ""
    if identity.name:
        first, _, last = identity.name.partition(" ")
        return first, last
    return None, None


def _needs_update(user: User, identity: Identity, is_admin: bool) -> bool:
    first, last = _names(identity)
    return (
        user.is_staff != is_admin
        or (identity.email is not None and user.email != identity.email)
        or (first is not None and (user.first_name, user.last_name) != (first[:150], last[:150]))
    )


def _free_username(wanted: str, subject: str) -> str:
    """The wanted username, or one made unique with the subject if another identity holds it."""
    if not User.objects.filter(username=wanted).exists():
        return wanted
    return f"{wanted[:140]}-{subject[:8]}"


def _admin_after(is_staff: bool, in_group: bool, channel: str) -> bool:
    """Platform admin after this identity is seen. A browser sign-in decides; an API access token
    may only take admin away, never give it back: Cognito does not revoke tokens when a group
    changes, so a token issued before a revocation still names the group for up to its life."""
    if channel == "api":
        return is_staff and in_group
    return in_group


def user_sync_from_identity(
    *, identity: Identity, request: HttpRequest | None = None, channel: str
) -> User:
    """Find or create the user for this identity and refresh profile and platform-admin flag.

    Called at every browser sign-in and on every API call. Profile fields the token does not
    carry (access tokens have no email) are left as they are; an API token never grants platform
    admin to an existing user (see :func:`_admin_after`).
    """
    issuer = settings.COGNITO_ISSUER
    in_group = settings.PORTAL_ADMIN_GROUP in identity.groups
    existing = User.objects.filter(idp_issuer=issuer, idp_subject=identity.subject).first()
    if existing is not None and not _needs_update(
        existing, identity, _admin_after(existing.is_staff, in_group, channel)
    ):
        # The common case on the API path: nothing to write.
        return existing
    try:
        with transaction.atomic():
            user = (
                User.objects.select_for_update()
                .filter(idp_issuer=issuer, idp_subject=identity.subject)
                .first()
            )
            if user is None:
                # A placeholder made by an import (username only, no identity yet) is claimed
                # by the Cognito user of that username: usernames are unique within the pool.
                user = (
                    User.objects.select_for_update()
                    .filter(username=identity.username, idp_subject="")
                    .first()
                )
                if user is not None:
                    user.idp_issuer, user.idp_subject = issuer, identity.subject
            created = user is None
            if created:
                user = User(
                    idp_issuer=issuer,
                    idp_subject=identity.subject,
                    username=_free_username(identity.username, identity.subject),
                )
                user.set_unusable_password()
            was_admin = user.is_staff
            is_admin = in_group if created else _admin_after(was_admin, in_group, channel)
            if identity.email is not None:
                user.email = identity.email
            first, last = _names(identity)
            if first is not None:
                user.first_name, user.last_name = first[:150], last[:150]
            user.is_staff = is_admin
            user.save()
    except IntegrityError:
        # Another request created the same identity at the same moment: use that row.
        user = User.objects.get(idp_issuer=issuer, idp_subject=identity.subject)
        created, was_admin = False, user.is_staff
        is_admin = was_admin
    if created:
        audit_record(
            action="user.created",
            outcome=AuditEvent.Outcome.SUCCESS,
            request=request,
            actor=user,
            target_type="user",
            target_id=str(user.pk),
            detail={"channel": channel, "platform_admin": is_admin},
        )
    elif was_admin != is_admin:
        audit_record(
            action="user.platform_admin_granted" if is_admin else "user.platform_admin_revoked",
            outcome=AuditEvent.Outcome.SUCCESS,
            request=request,
            actor=user,
            target_type="user",
            target_id=str(user.pk),
            detail={"channel": channel, "group": settings.PORTAL_ADMIN_GROUP},
        )
    return user


@transaction.atomic
def user_set_active(
    *, user: User, is_active: bool, acting_user: User, request: HttpRequest | None = None
) -> User:
    """Deactivate (or reactivate) a user: sign-in and API refuse them; Studio mapping withdrawn."""
    if not (acting_user.is_active and acting_user.is_staff):
        raise NotPermitted("Only platform admins may deactivate users.")
    if user.is_active == is_active:
        return user
    user.is_active = is_active
    user.save(update_fields=["is_active"])
    audit_record(
        action="user.reactivated" if is_active else "user.deactivated",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=acting_user,
        target_type="user",
        target_id=str(user.pk),
        detail={"username": user.username},
    )
    # The users table is derived from active users only.
    mapping_outbox_enqueue(kind="user", key=user.username)
    return user
