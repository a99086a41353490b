"""Endpoint status and instance type synced from SageMaker (moto), by button and by beat."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from accounts.models import AuditEvent, AwsAccount
from accounts.services.aws_verification import account_access
from portal import aws_gateway
from subscriptions import tasks
from subscriptions.models import Endpoint, Subscription
from subscriptions.services import catalog
from subscriptions.services.endpoints import endpoint_sync
from tests.factories import EndpointFactory, ListingFactory, SubscriptionFactory
from tests.subscriptions.conftest import ACCOUNT_A, CLOSED_PORT_URL
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> World:
    return build_world()


def sagemaker_endpoint(account_id: str, instance_type: str = "ml.m5.large") -> str:
    """Create a model, endpoint config and endpoint in the account (moto: InService at once)."""
    account = AwsAccount.objects.get(account_id=account_id)
    sagemaker = aws_gateway.client("sagemaker", access=account_access(account))
    name = f"transcoder-{uuid.uuid4().hex[:8]}"
    sagemaker.create_model(
        ModelName=name,
        ExecutionRoleArn=f"arn:aws:iam::{account_id}:role/SageMakerExecution",
        PrimaryContainer={"Image": f"{account_id}.dkr.ecr.us-east-1.amazonaws.com/transcoder:1"},
    )
    sagemaker.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": instance_type,
            }
        ],
    )
    sagemaker.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return name


@pytest.fixture
def endpoint(world: World, aws: str) -> Endpoint:
    subscription = SubscriptionFactory(lob=world.lob_a, listing=ListingFactory())
    return EndpointFactory(subscription=subscription, name=sagemaker_endpoint(ACCOUNT_A))


def test_sync_reads_status_and_instance_type(endpoint: Endpoint) -> None:
    endpoint_sync(endpoint=endpoint)

    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.instance_type, endpoint.sync_error) == (
        "InService",
        "ml.m5.large",
        "",
    )
    assert endpoint.synced_at is not None
    # The periodic sync is not a person's action: no audit event.
    assert not AuditEvent.objects.filter(action="endpoint.synced").exists()


def test_endpoint_missing_in_the_account_is_recorded(world: World, aws: str) -> None:
    subscription = SubscriptionFactory(lob=world.lob_a, listing=ListingFactory())
    endpoint = EndpointFactory(subscription=subscription, name="never-created")

    endpoint_sync(endpoint=endpoint)

    endpoint.refresh_from_db()
    assert endpoint.status == "NotFound"
    assert "never-created" in endpoint.sync_error, endpoint.sync_error


def test_endpoint_in_another_account_is_not_found(world: World, aws: str) -> None:
    # Created in lob-a's account; lob-b's subscription names it but lives in 222222222222.
    name = sagemaker_endpoint(ACCOUNT_A)
    subscription = SubscriptionFactory(lob=world.lob_b, listing=ListingFactory())
    endpoint = EndpointFactory(subscription=subscription, name=name)

    endpoint_sync(endpoint=endpoint)

    assert Endpoint.objects.get(pk=endpoint.pk).status == "NotFound"


def test_unreachable_sagemaker_keeps_the_last_known_status(endpoint: Endpoint) -> None:
    Endpoint.objects.filter(pk=endpoint.pk).update(status="InService")
    AwsAccount.objects.filter(account_id=ACCOUNT_A).update(sagemaker_endpoint_url=CLOSED_PORT_URL)
    endpoint = Endpoint.objects.select_related("subscription__lob__aws_account").get(pk=endpoint.pk)

    endpoint_sync(endpoint=endpoint)

    endpoint.refresh_from_db()
    assert endpoint.status == "InService"
    assert "127.0.0.1:9" in endpoint.sync_error


@pytest.mark.parametrize("principal", ["platform_admin", "lob_admin"])
def test_admins_sync_from_the_api_and_it_is_audited(
    world: World, endpoint: Endpoint, principal: str
) -> None:
    client = APIClient()
    client.force_authenticate(world.user(principal))

    response = client.post(f"/api/v1/subscriptions/{endpoint.subscription_id}/sync-endpoint/")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["instance_type"]) == (
        "InService",
        "ml.m5.large",
    )
    event = AuditEvent.objects.get(action="endpoint.synced")
    assert (event.actor, event.outcome, event.lob_slug) == (
        world.user(principal),
        "success",
        "lob-a",
    )


@pytest.mark.parametrize("principal", ["analyst", "viewer"])
def test_members_who_are_not_admins_cannot_sync(
    world: World, endpoint: Endpoint, principal: str
) -> None:
    client = APIClient()
    client.force_authenticate(world.user(principal))

    response = client.post(f"/api/v1/subscriptions/{endpoint.subscription_id}/sync-endpoint/")

    assert response.status_code == 403
    assert Endpoint.objects.get(pk=endpoint.pk).synced_at is None


def test_beat_task_syncs_every_live_endpoint(world: World, aws: str, monkeypatch) -> None:
    listing = ListingFactory()
    live = EndpointFactory(
        subscription=SubscriptionFactory(lob=world.lob_a, listing=listing),
        name=sagemaker_endpoint(ACCOUNT_A, "ml.c5.xlarge"),
    )
    cancelled = EndpointFactory(
        subscription=SubscriptionFactory(
            lob=world.lob_b, listing=listing, status=Subscription.Status.CANCELLED
        ),
        name="cancelled-endpoint",
    )
    # Run the fanned-out tasks in-process, as a worker would.
    monkeypatch.setattr(tasks.sync_endpoint, "delay", lambda pk: tasks.sync_endpoint.apply((pk,)))

    assert tasks.sync_endpoints.apply().get() == 1

    live.refresh_from_db()
    cancelled.refresh_from_db()
    assert (live.status, live.instance_type) == ("InService", "ml.c5.xlarge")
    assert cancelled.synced_at is None


def test_sync_of_a_deleted_endpoint_is_a_no_op(db) -> None:
    tasks.sync_endpoint.apply((987654,)).get()


def test_beat_runs_the_sync_every_five_minutes() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["sync-endpoints"]

    assert entry["task"] == tasks.sync_endpoints.name
    assert entry["schedule"] == 300.0


# --- Synced as soon as it is added or re-pointed --------------------------------------------------


def update_endpoint(world: World, endpoint: Endpoint, *, region: str) -> None:
    """Save the endpoint's subscription through the service, the endpoint's name unchanged."""
    catalog.subscription_update(
        subscription=Subscription.objects.get(pk=endpoint.subscription_id),
        acting_user=world.user("platform_admin"),
        endpoint_name=endpoint.name,
        endpoint_region=region,
    )


def test_an_endpoint_added_with_its_subscription_is_synced_once_committed(
    world: World, aws: str, eager: None, django_capture_on_commit_callbacks
) -> None:
    name = sagemaker_endpoint(ACCOUNT_A, "ml.c5.xlarge")

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        subscription = catalog.subscription_create(
            acting_user=world.user("platform_admin"),
            lob=world.lob_a,
            listing=ListingFactory(),
            endpoint_name=name,
        )

    assert len(callbacks) == 1
    endpoint = Endpoint.objects.get(subscription=subscription)
    assert (endpoint.status, endpoint.instance_type) == ("InService", "ml.c5.xlarge")
    assert endpoint.synced_at is not None


def test_an_endpoint_given_another_region_forgets_its_state_and_is_synced_again(
    world: World, endpoint: Endpoint, eager: None, django_capture_on_commit_callbacks
) -> None:
    endpoint_sync(endpoint=endpoint)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        update_endpoint(world, endpoint, region="eu-west-1")

    endpoint.refresh_from_db()
    # Another region is another endpoint: none of the old one's state is kept for it.
    assert (endpoint.region, endpoint.status, endpoint.instance_type, endpoint.synced_at) == (
        "eu-west-1",
        "",
        "",
        None,
    )
    assert len(callbacks) == 1
    callbacks[0]()
    endpoint.refresh_from_db()
    # moto's eu-west-1 has no endpoint of that name.
    assert endpoint.status == "NotFound"


def test_an_endpoint_left_as_it_was_keeps_its_state_and_is_not_synced(
    world: World, endpoint: Endpoint, django_capture_on_commit_callbacks
) -> None:
    endpoint_sync(endpoint=endpoint)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        update_endpoint(world, endpoint, region=endpoint.region)

    endpoint.refresh_from_db()
    assert (endpoint.status, endpoint.instance_type) == ("InService", "ml.m5.large")
    assert callbacks == []


def test_a_broker_away_when_an_endpoint_is_added_does_not_undo_the_change(
    world: World, monkeypatch, django_capture_on_commit_callbacks
) -> None:
    def broker_away(*args: object) -> None:
        raise ConnectionError("Redis is restarting")

    monkeypatch.setattr(tasks.sync_endpoint, "delay", broker_away)

    with django_capture_on_commit_callbacks(execute=True):
        subscription = catalog.subscription_create(
            acting_user=world.user("platform_admin"),
            lob=world.lob_a,
            listing=ListingFactory(),
            endpoint_name="transcoder-added-while-redis-restarts",
        )

    endpoint = Endpoint.objects.get(subscription=subscription)
    assert endpoint.synced_at is None  # the periodic sync will catch up
