"""Reading listings, subscriptions and invocations, scoped by the principal's LOB memberships.

Tenancy is decided here, on top of ``accounts.selectors``: platform admins see every subscription,
members see their active LOBs' subscriptions, and a subscription of another LOB is "not found".
Listings (the catalogue) are visible to everyone signed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import Coalesce

from accounts.models import Membership, User
from accounts.selectors import may_manage_members, member_lob_ids
from portal.errors import NotFoundError
from subscriptions.models import Invocation, Listing, Subscription

# What the proxy path reads with a subscription, in the one query that fetches it.
_SUBSCRIPTION_RELATED = ("listing", "lob", "lob__aws_account", "endpoint")


def _sees_everything(user: User) -> bool:
    return bool(user.is_authenticated and user.is_active and user.is_staff)


def listings_visible_to(user: User) -> QuerySet[Listing]:
    """The catalogue: every listing, for anyone signed in."""
    if not (user.is_authenticated and user.is_active):
        return Listing.objects.none()
    return Listing.objects.all()


def subscriptions_visible_to(user: User) -> QuerySet[Subscription]:
    """Subscriptions the user may read: all for platform admins, else their active LOBs'."""
    subscriptions = Subscription.objects.select_related(*_SUBSCRIPTION_RELATED)
    if _sees_everything(user):
        return subscriptions
    if not (user.is_authenticated and user.is_active):
        return subscriptions.none()
    return subscriptions.filter(lob_id__in=member_lob_ids(user))


def _with_role_of(subscriptions: QuerySet[Subscription], user: User) -> QuerySet[Subscription]:
    """Annotate ``caller_role``: the user's role in the subscription's LOB (None if not a member).

    The proxy path re-checks the caller's role on every call; reading it in the query that fetches
    the subscription saves that check a round trip. ``caller_role_user_id`` (set by
    :func:`_remember_role_of`) says whose role it is, so it is never taken for someone else's.
    """
    # order_by(): Membership's default ordering would join the LOB and user tables for nothing.
    role = (
        Membership.objects.filter(user_id=user.pk, lob_id=OuterRef("lob_id"))
        .order_by()
        .values("role")[:1]
    )
    return subscriptions.annotate(caller_role=Subquery(role))


def _remember_role_of(subscription: Subscription | None, user: User) -> Subscription | None:
    if subscription is not None:
        subscription.caller_role_user_id = user.pk
    return subscription


def subscription_for_member(user: User, subscription_id: int | str) -> Subscription:
    """One subscription the user may read; NotFoundError (404) if missing or another LOB's.

    It comes with the user's role in its LOB (see :func:`_with_role_of`), for the proxy path: the
    busiest query of the portal, so it is one query, and as small as it can be to compile.
    """
    try:
        pk = int(subscription_id)
    except (TypeError, ValueError):
        pk = None
    subscription = None
    if pk is not None and user.is_authenticated and user.is_active:
        subscriptions = _with_role_of(
            Subscription.objects.select_related(*_SUBSCRIPTION_RELATED).filter(pk=pk), user
        )
        if not _sees_everything(user):
            # The same rule as subscriptions_visible_to, read from the role already selected.
            subscriptions = subscriptions.filter(caller_role__isnull=False, lob__is_active=True)
        # order_by(): one row needs no ordering, whose joins cost compile time on the hot path.
        subscription = _remember_role_of(subscriptions.order_by().first(), user)
    if subscription is None:
        raise NotFoundError("No subscription with that id.", code="not_found")
    return subscription


def may_manage_subscription(user: User, subscription: Subscription) -> bool:
    """Platform admins and the LOB's admins manage a subscription's endpoint (e.g. sync it)."""
    return may_manage_members(user, subscription.lob)


def subscription_by_id(subscription_id: int, *, role_of: User | None = None) -> Subscription | None:
    """A subscription with everything the proxy path reads, unscoped (for tasks that re-check).

    With ``role_of``, it also carries that user's role in its LOB, read in the same query.
    """
    subscriptions = Subscription.objects.select_related(*_SUBSCRIPTION_RELATED).filter(
        pk=subscription_id
    )
    if role_of is None:
        return subscriptions.first()
    return _remember_role_of(_with_role_of(subscriptions, role_of).order_by().first(), role_of)


def invocations_visible_to(user: User) -> QuerySet[Invocation]:
    """Invocation records of the subscriptions the user may read."""
    invocations = Invocation.objects.select_related("subscription__lob", "principal")
    if _sees_everything(user):
        return invocations
    if not (user.is_authenticated and user.is_active):
        return invocations.none()
    return invocations.filter(subscription__lob_id__in=member_lob_ids(user))


@dataclass(frozen=True)
class Usage:
    """Calls through the proxy path for one subscription, counted from its Invocation rows."""

    calls: int
    succeeded: int
    errors: int
    records: int
    bytes_in: int
    bytes_out: int


def subscription_usage(
    subscription: Subscription, *, since: datetime | None = None, until: datetime | None = None
) -> Usage:
    """Usage of a subscription (optionally within [since, until)), from its Invocation rows."""
    invocations = Invocation.objects.filter(subscription=subscription)
    if since is not None:
        invocations = invocations.filter(started_at__gte=since)
    if until is not None:
        invocations = invocations.filter(started_at__lt=until)
    ok = Q(outcome=Invocation.OUTCOME_OK)
    totals = invocations.aggregate(
        calls=Count("pk"),
        succeeded=Count("pk", filter=ok),
        records=Coalesce(Sum("records", filter=ok), 0),
        bytes_in=Coalesce(Sum("bytes_in"), 0),
        bytes_out=Coalesce(Sum("bytes_out"), 0),
    )
    return Usage(
        calls=totals["calls"],
        succeeded=totals["succeeded"],
        errors=totals["calls"] - totals["succeeded"],
        records=totals["records"],
        bytes_in=totals["bytes_in"],
        bytes_out=totals["bytes_out"],
    )
