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
from portal.compiled_query import CompiledQuery
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


def _remember_role_of(subscription: Subscription | None, user: User) -> Subscription | None:
    """Say whose ``caller_role`` the subscription carries, so it is never taken for another's."""
    if subscription is not None:
        subscription.caller_role_user_id = user.pk
    return subscription


def _subscription_with_role(*, user_id: int, pk: int) -> QuerySet[Subscription]:
    """The subscription with everything the proxy path reads and the user's role in its LOB."""
    role = (
        # order_by(): Membership's default ordering would join the LOB and user tables for nothing.
        Membership.objects.filter(user_id=user_id, lob_id=OuterRef("lob_id"))
        .order_by()
        .values("role")[:1]
    )
    return (
        Subscription.objects.select_related(*_SUBSCRIPTION_RELATED)
        .annotate(caller_role=Subquery(role))
        .filter(pk=pk)
        .order_by()
    )


_MAX_ID = 2**63 - 1

# The proxy path's lookup, compiled once per thread (see portal.compiled_query): for platform
# admins any subscription, for everyone else one of an active LOB they have a role in (the rule of
# subscriptions_visible_to, read from the role already selected).
_ANY_SUBSCRIPTION = CompiledQuery(
    lambda user_id, pk: _subscription_with_role(user_id=user_id, pk=pk)[:1], "user_id", "pk"
)
_MEMBER_SUBSCRIPTION = CompiledQuery(
    lambda user_id, pk: _subscription_with_role(user_id=user_id, pk=pk).filter(
        caller_role__isnull=False, lob__is_active=True
    )[:1],
    "user_id",
    "pk",
)


def subscription_for_member(user: User, subscription_id: int | str) -> Subscription:
    """One subscription the user may read; NotFoundError (404) if missing or another LOB's.

    It comes with the user's role in its LOB (``caller_role``), which the proxy path's permission
    re-check uses instead of asking again. This is the busiest query of the portal: one round trip,
    compiled once per thread.
    """
    try:
        pk = int(subscription_id)
    except (TypeError, ValueError):
        pk = None
    subscription = None
    # The range check the ORM would make: a raw query passes ids beyond any row to the driver.
    if pk is not None and 0 < pk <= _MAX_ID and user.is_authenticated and user.is_active:
        lookup = _ANY_SUBSCRIPTION if _sees_everything(user) else _MEMBER_SUBSCRIPTION
        subscription = _remember_role_of(lookup.first(user_id=user.pk, pk=pk), user)
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
    if role_of is None:
        return (
            Subscription.objects.select_related(*_SUBSCRIPTION_RELATED)
            .filter(pk=subscription_id)
            .first()
        )
    subscription = _ANY_SUBSCRIPTION.first(user_id=role_of.pk, pk=subscription_id)
    return _remember_role_of(subscription, role_of)


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
