"""Tenancy, decided in one place: every read of LOB-owned data starts from these selectors.

Rules: platform admins see everything. Everyone else sees only the LOBs they are a member of and
what belongs to them. An object of another LOB answers "not found" (404), never "forbidden", so
its existence does not leak; a LOB-scoped URL for a LOB the user is not in answers 403.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from accounts.models import AuditEvent, AwsAccount, Lob, Membership, User


class LobAccessDenied(Exception):
    """The LOB exists but the user is not a member (403 on LOB-scoped URLs)."""


class LobNotFound(Exception):
    """No LOB with that slug (404)."""


def _sees_everything(user: User) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def member_lob_ids(user: User, *, roles: tuple[str, ...] | None = None) -> QuerySet:
    """Ids of the active LOBs the user is a member of (optionally with one of ``roles``)."""
    memberships = Membership.objects.filter(user=user, lob__is_active=True)
    if roles is not None:
        memberships = memberships.filter(role__in=roles)
    return memberships.values("lob_id")


def lobs_visible_to(user: User) -> QuerySet[Lob]:
    """LOBs the user may read: all for platform admins, else their active memberships."""
    lobs = Lob.objects.select_related("aws_account")
    if _sees_everything(user):
        return lobs
    if not user.is_authenticated:
        return lobs.none()
    return lobs.filter(id__in=member_lob_ids(user))


def lob_for_member(user: User, slug: str) -> Lob:
    """The LOB behind a LOB-scoped URL: LobNotFound if none, LobAccessDenied if not a member."""
    lob = Lob.objects.select_related("aws_account").filter(slug=slug).first()
    if lob is None:
        raise LobNotFound(slug)
    if not lobs_visible_to(user).filter(pk=lob.pk).exists():
        raise LobAccessDenied(slug)
    return lob


def role_in(user: User, lob: Lob) -> str | None:
    """The user's role in the LOB, or None (inactive LOBs grant no role)."""
    if not user.is_authenticated or not lob.is_active:
        return None
    return Membership.objects.filter(user=user, lob=lob).values_list("role", flat=True).first()


def may_manage_members(user: User, lob: Lob) -> bool:
    """Platform admins and the LOB's own admins manage its members."""
    return _sees_everything(user) or role_in(user, lob) == Membership.Role.ADMIN


def may_invoke(user: User, lob: Lob) -> bool:
    """Analysts and admins of an active LOB may run its models (checked again when work runs)."""
    return role_in(user, lob) in (Membership.Role.ADMIN, Membership.Role.ANALYST)


def memberships_visible_to(user: User) -> QuerySet[Membership]:
    """Memberships of the LOBs the user can see (members see their co-members)."""
    memberships = Membership.objects.select_related("user", "lob")
    if _sees_everything(user):
        return memberships
    if not user.is_authenticated:
        return memberships.none()
    return memberships.filter(lob_id__in=member_lob_ids(user))


def memberships_of(user: User) -> QuerySet[Membership]:
    """The user's own memberships in active LOBs, oldest first."""
    return (
        Membership.objects.select_related("lob", "lob__aws_account")
        .filter(user=user, lob__is_active=True)
        .order_by("created_at", "pk")
    )


def aws_accounts_visible_to(user: User) -> QuerySet[AwsAccount]:
    """AWS accounts: all for platform admins; LOB admins see the accounts of their LOBs."""
    accounts = AwsAccount.objects.all()
    if _sees_everything(user):
        return accounts
    if not user.is_authenticated:
        return accounts.none()
    admin_lobs = member_lob_ids(user, roles=(Membership.Role.ADMIN,))
    return accounts.filter(lobs__id__in=admin_lobs).distinct()


def audit_events_visible_to(user: User) -> QuerySet[AuditEvent]:
    """Audit events: all for platform admins; LOB admins see their LOBs' events; others none."""
    events = AuditEvent.objects.select_related("actor")
    if _sees_everything(user):
        return events
    if not user.is_authenticated:
        return events.none()
    admin_slugs = Lob.objects.filter(
        id__in=member_lob_ids(user, roles=(Membership.Role.ADMIN,))
    ).values("slug")
    return events.filter(Q(lob_slug__in=admin_slugs) & ~Q(lob_slug=""))


def lob_slug_used_before(slug: str) -> bool:
    """Whether a LOB that no longer exists had this slug (its creation or deletion is audited).

    Such a slug names that LOB's audit trail and S3 objects: it is never given to another LOB.
    Only the LOB's own events count, so a refused request naming a slug reserves nothing.
    """
    return (
        not Lob.objects.filter(slug=slug).exists()
        and AuditEvent.objects.filter(
            action__in=("lob.created", "lob.deleted"), lob_slug=slug
        ).exists()
    )
