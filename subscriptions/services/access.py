"""Who may run a subscription's model, checked where the work happens (not only when submitted)."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.http import HttpRequest

from accounts.audit import audit_record
from accounts.models import AuditEvent, Membership, User
from accounts.selectors import role_in
from portal.errors import NotPermitted
from subscriptions.models import Subscription

_INVOKING_ROLES = (Membership.Role.ADMIN, Membership.Role.ANALYST)


def _role(principal: User, subscription: Subscription) -> str | None:
    """The principal's role in the subscription's LOB: read with the subscription when it was
    (``subscriptions.selectors``), else asked now. An inactive LOB grants no role."""
    if getattr(subscription, "caller_role_user_id", None) == principal.pk:
        return subscription.caller_role if subscription.lob.is_active else None
    return role_in(principal, subscription.lob)


def invoke_permission_check(*, principal: User, subscription: Subscription) -> None:
    """NotPermitted unless the principal may invoke in the subscription's LOB and it is usable.

    Codes: ``not_a_member`` (no role in the LOB, or the person is deactivated), ``may_not_invoke``
    (a viewer), ``subscription_inactive`` (not active, not started, ended, or its LOB inactive).
    """
    lob = subscription.lob
    role = _role(principal, subscription) if principal.is_active else None
    if role not in _INVOKING_ROLES:
        if role == Membership.Role.VIEWER:
            raise NotPermitted(
                f"Viewers of {lob.slug} cannot run its models.", code="may_not_invoke"
            )
        raise NotPermitted(
            f"Only analysts and admins of {lob.slug} may run its models.", code="not_a_member"
        )
    if not subscription.is_usable():
        raise NotPermitted(
            f"The subscription is {subscription.status} or outside its dates; it cannot be used.",
            code="subscription_inactive",
        )


def unknown_subscription_record(
    *,
    action: str,
    principal: User | AnonymousUser,
    subscription_ref: str,
    request: HttpRequest | None = None,
    reason: str = "not_found",
) -> None:
    """Audit an authorize or invoke refused before its subscription was looked at: one the
    principal cannot see (404), or a caller not signed in (401, ``reason`` says why)."""
    audit_record(
        action=action,
        outcome=AuditEvent.Outcome.REFUSED,
        request=request,
        actor=principal if principal.is_authenticated else None,
        target_type="subscription",
        target_id=subscription_ref[:128],
        reason=reason,
    )
