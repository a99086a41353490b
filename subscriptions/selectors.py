"""Reading listings, subscriptions and invocations, scoped by the principal's LOB memberships.

Tenancy is decided here, on top of ``accounts.selectors``: platform admins see every subscription,
members see their active LOBs' subscriptions, and a subscription of another LOB is "not found".
Listings (the catalogue) are visible to everyone signed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import Coalesce

from accounts.models import User
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


def subscription_for_member(user: User, subscription_id: int | str) -> Subscription:
    """One subscription the user may read; NotFoundError (404) if missing or another LOB's."""
    try:
        pk = int(subscription_id)
    except (TypeError, ValueError):
        pk = None
    # order_by(): one row needs no ordering, whose joins cost compile time on the hot path.
    subscription = (
        subscriptions_visible_to(user).filter(pk=pk).order_by().first() if pk is not None else None
    )
    if subscription is None:
        raise NotFoundError("No subscription with that id.", code="not_found")
    return subscription


def may_manage_subscription(user: User, subscription: Subscription) -> bool:
    """Platform admins and the LOB's admins manage a subscription's endpoint (e.g. sync it)."""
    return may_manage_members(user, subscription.lob)


def subscription_by_id(subscription_id: int) -> Subscription | None:
    """A subscription with everything the proxy path reads, unscoped (for tasks that re-check)."""
    return (
        Subscription.objects.select_related(*_SUBSCRIPTION_RELATED)
        .filter(pk=subscription_id)
        .first()
    )


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
