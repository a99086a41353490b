"""The proxy path's subscription lookup (compiled once) gives exactly what the ORM gives."""

from __future__ import annotations

import threading
from datetime import date

import pytest
from django.forms.models import model_to_dict

from accounts.models import Membership
from portal.compiled_query import CompiledQuery
from portal.errors import NotFoundError
from portal.query_count import count_queries
from subscriptions.models import Subscription
from subscriptions.selectors import (
    subscription_by_id,
    subscription_for_member,
    subscriptions_visible_to,
)
from tests.factories import EndpointFactory, SubscriptionFactory
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def subscription(world: World) -> Subscription:
    subscription = SubscriptionFactory(
        lob=world.lob_a, status="active", starts_on=date(2026, 1, 1), ends_on=date(2027, 1, 1)
    )
    EndpointFactory(subscription=subscription)
    return subscription


def as_dicts(subscription: Subscription) -> list[dict]:
    """Every field of the subscription and of what the path reads with it."""
    endpoint = getattr(subscription, "endpoint", None)
    return [
        model_to_dict(subscription),
        model_to_dict(subscription.listing),
        model_to_dict(subscription.lob),
        model_to_dict(subscription.lob.aws_account),
        model_to_dict(endpoint) if endpoint else None,
    ]


@pytest.mark.parametrize("principal", ["analyst", "viewer", "lob_admin", "platform_admin"])
def test_lookup_matches_the_orm_field_for_field_in_one_query(
    world: World, subscription: Subscription, principal: str
) -> None:
    user = world.user(principal)
    expected = subscriptions_visible_to(user).get(pk=subscription.pk)

    with count_queries() as counted:
        found = subscription_for_member(user, subscription.pk)
        dicts = as_dicts(found)

    assert counted.count == 1
    assert dicts == as_dicts(expected)
    assert found.created_at == expected.created_at and found.created_at.tzinfo is not None
    role = Membership.objects.filter(user=user, lob=world.lob_a).values_list("role", flat=True)
    assert found.caller_role == (role.first() if role else None)
    assert found.caller_role_user_id == user.pk


def test_subscription_without_endpoint_has_none(world: World) -> None:
    bare = SubscriptionFactory(lob=world.lob_a)

    found = subscription_for_member(world.user("analyst"), bare.pk)

    with count_queries() as counted:
        assert getattr(found, "endpoint", None) is None
    assert counted.count == 0


@pytest.mark.parametrize("principal", ["other_lob_member", "non_member"])
def test_another_lobs_subscription_is_not_found(
    world: World, subscription: Subscription, principal: str
) -> None:
    with pytest.raises(NotFoundError):
        subscription_for_member(world.user(principal), subscription.pk)


def test_inactive_lob_hides_it_from_members_not_from_platform_admins(
    world: World, subscription: Subscription
) -> None:
    world.lob_a.is_active = False
    world.lob_a.save()

    with pytest.raises(NotFoundError):
        subscription_for_member(world.user("analyst"), subscription.pk)
    assert subscription_for_member(world.user("platform_admin"), subscription.pk) == subscription


@pytest.mark.parametrize("pk", ["abc", "", None, "99999"])
def test_bad_or_unknown_ids_are_not_found(world: World, pk) -> None:
    with pytest.raises(NotFoundError):
        subscription_for_member(world.user("analyst"), pk)


def test_by_id_with_a_role_reads_it_in_the_same_query(
    world: World, subscription: Subscription
) -> None:
    with count_queries() as counted:
        found = subscription_by_id(subscription.pk, role_of=world.user("viewer"))
    assert counted.count == 1
    assert (found.caller_role, found.caller_role_user_id) == ("viewer", world.user("viewer").pk)
    outsider = subscription_by_id(subscription.pk, role_of=world.user("non_member"))
    assert outsider.caller_role is None


@pytest.mark.django_db(transaction=True)  # the other thread must see the rows
def test_each_thread_compiles_its_own(world: World, subscription: Subscription) -> None:
    analyst = world.user("analyst")
    subscription_for_member(analyst, subscription.pk)
    found: list = []

    def other_thread() -> None:
        try:
            found.append(subscription_for_member(analyst, subscription.pk))
        finally:
            from django.db import connection

            connection.close()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(timeout=30)

    assert found == [subscription]


def test_a_parameter_the_query_ignores_is_refused() -> None:
    query = CompiledQuery(
        lambda pk, user_id: Subscription.objects.filter(pk=pk)[:1], "pk", "user_id"
    )

    with pytest.raises(ValueError, match="user_id"):
        query.first(pk=1, user_id=2)
