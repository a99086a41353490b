"""The Django admin of listings, subscriptions, endpoints and invocation records.

Platform admins only; every change goes through the catalogue services, so it is validated and
audited like one made through the API; a refusal is a message on the page, never a 500; the
invocation records are read-only.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from accounts.models import AuditEvent
from portal.errors import Conflict
from subscriptions.models import Endpoint, Invocation, Listing, Subscription
from subscriptions.services import catalog
from tests.factories import (
    EndpointFactory,
    InvocationFactory,
    ListingFactory,
    SubscriptionFactory,
    UserFactory,
)
from tests.subscriptions.conftest import ACCOUNT_A, ProxyWorld
from tests.subscriptions.test_endpoint_sync import sagemaker_endpoint
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db

ADMIN = "/admin/subscriptions"


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def staff(world: World) -> Client:
    client = Client()
    client.force_login(world.user("platform_admin"))
    return client


@pytest.fixture
def listing() -> Listing:
    return ListingFactory(
        product_code="identity-transcoder",
        name="Identity Transcoder",
        content_types=["text/csv", "application/jsonlines"],
    )


@pytest.fixture
def subscription(world: World, listing: Listing) -> Subscription:
    subscription = SubscriptionFactory(lob=world.lob_a, listing=listing)
    EndpointFactory(subscription=subscription, name="transcoder-lob-a")
    return subscription


@pytest.fixture
def invocation(world: World, subscription: Subscription) -> Invocation:
    return InvocationFactory(
        subscription=subscription,
        principal=world.user("analyst"),
        result_uri="s3://gatehouse-results-111111111111/lob-a/invocations/2026/01/02/x",
    )


def cached_token(subscription: Subscription) -> object:
    # Imported here: a module-level ``cache`` is connected at collection, before the session's
    # Redis is chosen (see tests/subscriptions/conftest.py).
    from django.core.cache import cache

    return cache.get(f"subscriptions:seller-token:{subscription.pk}:{ACCOUNT_A}")


def cache_a_token(subscription: Subscription) -> None:
    from django.core.cache import cache

    cache.set(f"subscriptions:seller-token:{subscription.pk}:{ACCOUNT_A}", {"token": "old"})


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def listing_form(listing: Listing | None = None, **changes: object) -> dict:
    data: dict[str, object] = {
        "product_code": "fraud-score",
        "name": "Fraud Score",
        "seller_name": "Acme Risk",
        "model_package_arn": "",
        "description": "Scores card transactions.",
        "content_types": ["text/csv"],
        "token_service_url": "https://seller.acme-risk.test",
        "token_service_lambda_arn": "",
        "seller_issuer": "https://seller.acme-risk.test",
        "seller_jwks_url": "https://seller.acme-risk.test/.well-known/jwks.json",
    }
    if listing is not None:
        data.update(
            {name: getattr(listing, name) for name in catalog.LISTING_FIELDS if name in data}
        )
    data.update(changes)
    return data


def endpoint_inline(rows: list[dict], initial: int) -> dict[str, str]:
    """The Endpoint inline's management form and rows (prefix ``endpoint``)."""
    data = {
        "endpoint-TOTAL_FORMS": str(len(rows)),
        "endpoint-INITIAL_FORMS": str(initial),
        "endpoint-MIN_NUM_FORMS": "0",
        "endpoint-MAX_NUM_FORMS": "1",
    }
    for index, row in enumerate(rows):
        for key, value in row.items():
            data[f"endpoint-{index}-{key}"] = str(value)
    return data


def subscription_change_form(subscription: Subscription, **changes: object) -> dict:
    data = {
        "status": subscription.status,
        "starts_on": subscription.starts_on.isoformat(),
        "ends_on": subscription.ends_on.isoformat() if subscription.ends_on else "",
    }
    data.update({key: str(value) for key, value in changes.items()})
    return data


# --- Who may use it -------------------------------------------------------------------------------


def every_page(listing: Listing, subscription: Subscription, invocation: Invocation) -> list[str]:
    return [
        f"{ADMIN}/",
        f"{ADMIN}/listing/",
        f"{ADMIN}/listing/add/",
        f"{ADMIN}/listing/{listing.pk}/change/",
        f"{ADMIN}/subscription/",
        f"{ADMIN}/subscription/add/",
        f"{ADMIN}/subscription/{subscription.pk}/change/",
        f"{ADMIN}/endpoint/",
        f"{ADMIN}/endpoint/{subscription.endpoint.pk}/change/",
        f"{ADMIN}/invocation/",
        f"{ADMIN}/invocation/{invocation.pk}/change/",
        f"{ADMIN}/invocation/?outcome=ok",
        f"{ADMIN}/invocation/?subscription={subscription.pk}",
        f"{ADMIN}/subscription/?status=active",
    ]


def test_platform_admin_can_open_every_page(
    staff: Client, listing: Listing, subscription: Subscription, invocation: Invocation
) -> None:
    for path in every_page(listing, subscription, invocation):
        response = staff.get(path)
        assert response.status_code == 200, path


@pytest.mark.parametrize("principal", ["lob_admin", "analyst", "non_member", "anonymous"])
def test_non_staff_cannot_open_any_page(
    world: World,
    principal: str,
    listing: Listing,
    subscription: Subscription,
    invocation: Invocation,
) -> None:
    client = Client()
    if world.user(principal) is not None:
        client.force_login(world.user(principal))

    for path in every_page(listing, subscription, invocation):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/admin/login/?next="), path


def test_non_staff_cannot_change_a_listing_by_posting(world: World, listing: Listing) -> None:
    client = Client()
    client.force_login(world.user("lob_admin"))

    client.post(f"{ADMIN}/listing/{listing.pk}/change/", listing_form(listing, name="Hijacked"))

    listing.refresh_from_db()
    assert listing.name == "Identity Transcoder"
    assert not AuditEvent.objects.filter(action="listing.updated").exists()


def test_invocations_are_read_only(
    staff: Client, subscription: Subscription, invocation: Invocation
) -> None:
    assert staff.get(f"{ADMIN}/invocation/add/").status_code == 403
    staff.post(f"{ADMIN}/invocation/{invocation.pk}/change/", {"outcome": "changed"})
    staff.post(f"{ADMIN}/invocation/{invocation.pk}/delete/", {"post": "yes"})

    invocation.refresh_from_db()
    assert invocation.outcome == "ok"
    page = staff.get(f"{ADMIN}/invocation/{invocation.pk}/change/").content.decode()
    assert "Save" not in page  # a view, not a form


def test_nothing_is_deleted_without_a_service(
    staff: Client, listing: Listing, subscription: Subscription
) -> None:
    for path in (
        f"{ADMIN}/listing/{listing.pk}/delete/",
        f"{ADMIN}/subscription/{subscription.pk}/delete/",
        f"{ADMIN}/endpoint/{subscription.endpoint.pk}/delete/",
    ):
        assert staff.post(path, {"post": "yes"}).status_code == 403, path
    assert staff.get(f"{ADMIN}/endpoint/add/").status_code == 403
    assert Subscription.objects.filter(pk=subscription.pk).exists()
    assert Endpoint.objects.filter(pk=subscription.endpoint.pk).exists()


# --- Lists and filters ----------------------------------------------------------------------------


def test_invocations_are_filtered_by_outcome_and_subscription(
    staff: Client, world: World, listing: Listing, subscription: Subscription
) -> None:
    other = SubscriptionFactory(lob=world.lob_b, listing=listing)
    InvocationFactory(subscription=subscription, outcome="ok")
    InvocationFactory(subscription=subscription, outcome="model_error")
    InvocationFactory(subscription=other, outcome="ok")

    def shown(query: str) -> int:
        return staff.get(f"{ADMIN}/invocation/?{query}").context["cl"].result_count

    assert shown("outcome=ok") == 2
    assert shown("outcome=model_error") == 1
    assert shown(f"subscription={subscription.pk}") == 2
    assert shown(f"subscription={other.pk}&outcome=ok") == 1


def test_subscription_list_shows_the_endpoint_and_its_status(
    staff: Client, subscription: Subscription
) -> None:
    Endpoint.objects.filter(subscription=subscription).update(status="InService")

    page = staff.get(f"{ADMIN}/subscription/").content.decode()

    assert "transcoder-lob-a" in page
    assert "InService" in page


# --- Listings -------------------------------------------------------------------------------------


def test_listing_added_in_admin_is_audited(staff: Client, world: World) -> None:
    response = staff.post(f"{ADMIN}/listing/add/", listing_form())

    assert response.status_code == 302, response.content
    listing = Listing.objects.get(product_code="fraud-score")
    assert listing.content_types == ["text/csv"]
    event = AuditEvent.objects.get(action="listing.created")
    assert event.actor == world.user("platform_admin")
    assert event.target_type == "listing"
    assert event.detail["after"]["name"] == "Fraud Score"


def test_listing_change_in_admin_is_audited_with_before_and_after(
    staff: Client, listing: Listing, subscription: Subscription
) -> None:
    cache_a_token(subscription)

    response = staff.post(
        f"{ADMIN}/listing/{listing.pk}/change/",
        listing_form(listing, content_types=["text/csv", "application/json"]),
    )

    assert response.status_code == 302, response.content
    listing.refresh_from_db()
    assert listing.content_types == ["text/csv", "application/json"]
    event = AuditEvent.objects.get(action="listing.updated")
    assert event.detail["before"]["content_types"] == ["text/csv", "application/jsonlines"]
    assert event.detail["after"]["content_types"] == ["text/csv", "application/json"]
    # The service drops the subscriptions' cached seller tokens on a listing change.
    assert cached_token(subscription) is None


def test_listing_saved_unchanged_writes_no_audit_event(staff: Client, listing: Listing) -> None:
    staff.post(f"{ADMIN}/listing/{listing.pk}/change/", listing_form(listing))

    assert not AuditEvent.objects.filter(action="listing.updated").exists()


def test_listing_with_both_token_services_is_a_form_error(staff: Client) -> None:
    response = staff.post(
        f"{ADMIN}/listing/add/",
        listing_form(
            token_service_lambda_arn="arn:aws:lambda:us-east-1:999999999999:function:seller-token"
        ),
    )

    assert response.status_code == 200
    assert "an HTTPS URL or a Lambda function ARN, not both" in response.content.decode()
    assert not Listing.objects.filter(product_code="fraud-score").exists()


def test_service_refusal_on_a_listing_is_a_message(
    staff: Client, listing: Listing, monkeypatch
) -> None:
    def refuse(**kwargs: object) -> None:
        raise Conflict("That conflicts with an existing record.", code="duplicate")

    monkeypatch.setattr(catalog, "listing_update", refuse)

    response = staff.post(
        f"{ADMIN}/listing/{listing.pk}/change/", listing_form(listing, name="Renamed")
    )

    assert response.status_code == 302
    assert response["Location"] == f"{ADMIN}/listing/{listing.pk}/change/"
    assert messages_of(response) == ["Not saved: That conflicts with an existing record."]
    listing.refresh_from_db()
    assert listing.name == "Identity Transcoder"


# --- Subscriptions and endpoints ------------------------------------------------------------------


def test_subscription_added_with_its_endpoint_is_one_audited_change(
    staff: Client, world: World, listing: Listing
) -> None:
    response = staff.post(
        f"{ADMIN}/subscription/add/",
        {
            "lob": world.lob_b.pk,
            "listing": listing.pk,
            "status": "active",
            "starts_on": "2026-01-01",
            "ends_on": "",
            **endpoint_inline([{"name": "transcoder-lob-b", "region": ""}], initial=0),
        },
    )

    assert response.status_code == 302, response.content
    subscription = Subscription.objects.get(lob=world.lob_b)
    assert subscription.endpoint.name == "transcoder-lob-b"
    assert subscription.endpoint.region == "us-east-1"  # the LOB account's default
    event = AuditEvent.objects.get(action="subscription.created")
    assert event.lob_slug == "lob-b"
    assert event.detail["after"]["endpoint"] == {"name": "transcoder-lob-b", "region": "us-east-1"}


def test_subscription_added_without_an_endpoint(
    staff: Client, world: World, listing: Listing
) -> None:
    response = staff.post(
        f"{ADMIN}/subscription/add/",
        {
            "lob": world.lob_b.pk,
            "listing": listing.pk,
            "status": "pending",
            "starts_on": "2026-01-01",
            **endpoint_inline([{"name": "", "region": ""}], initial=0),
        },
    )

    assert response.status_code == 302, response.content
    subscription = Subscription.objects.get(lob=world.lob_b)
    assert not Endpoint.objects.filter(subscription=subscription).exists()
    assert AuditEvent.objects.get(action="subscription.created").detail["after"]["endpoint"] is None


def test_duplicate_subscription_is_a_form_error(
    staff: Client, world: World, listing: Listing, subscription: Subscription
) -> None:
    response = staff.post(
        f"{ADMIN}/subscription/add/",
        {
            "lob": world.lob_a.pk,
            "listing": listing.pk,
            "status": "active",
            "starts_on": "2026-01-01",
            **endpoint_inline([], initial=0),
        },
    )

    assert response.status_code == 200
    assert Subscription.objects.filter(lob=world.lob_a).count() == 1
    assert not AuditEvent.objects.filter(action="subscription.created").exists()


def test_subscription_expired_in_admin_is_audited_and_its_token_dropped(
    staff: Client, subscription: Subscription
) -> None:
    cache_a_token(subscription)
    endpoint = subscription.endpoint

    response = staff.post(
        f"{ADMIN}/subscription/{subscription.pk}/change/",
        {
            **subscription_change_form(
                subscription, status="expired", starts_on="2025-01-01", ends_on="2025-12-31"
            ),
            **endpoint_inline(
                [
                    {
                        "id": endpoint.pk,
                        "subscription": subscription.pk,
                        "name": endpoint.name,
                        "region": endpoint.region,
                    }
                ],
                initial=1,
            ),
        },
    )

    assert response.status_code == 302, response.content
    subscription.refresh_from_db()
    assert (subscription.status, subscription.ends_on) == ("expired", dt.date(2025, 12, 31))
    event = AuditEvent.objects.get(action="subscription.updated")
    assert (event.detail["before"]["status"], event.detail["after"]["status"]) == (
        "active",
        "expired",
    )
    assert cached_token(subscription) is None


def test_endpoint_renamed_in_the_subscription_inline_forgets_its_synced_state(
    staff: Client, subscription: Subscription
) -> None:
    endpoint = subscription.endpoint
    Endpoint.objects.filter(pk=endpoint.pk).update(status="InService", instance_type="ml.m5.large")

    response = staff.post(
        f"{ADMIN}/subscription/{subscription.pk}/change/",
        {
            **subscription_change_form(subscription),
            **endpoint_inline(
                [
                    {
                        "id": endpoint.pk,
                        "subscription": subscription.pk,
                        "name": "transcoder-lob-a-v2",
                        "region": "eu-west-1",
                    }
                ],
                initial=1,
            ),
        },
    )

    assert response.status_code == 302, response.content
    endpoint.refresh_from_db()
    assert (endpoint.name, endpoint.region, endpoint.status) == (
        "transcoder-lob-a-v2",
        "eu-west-1",
        "",
    )
    event = AuditEvent.objects.get(action="subscription.updated")
    assert event.detail["before"]["endpoint"]["name"] == "transcoder-lob-a"
    assert event.detail["after"]["endpoint"] == {
        "name": "transcoder-lob-a-v2",
        "region": "eu-west-1",
    }


def test_lob_and_listing_of_a_subscription_cannot_be_changed(
    staff: Client, world: World, subscription: Subscription
) -> None:
    other_listing = ListingFactory(product_code="fraud-score")

    staff.post(
        f"{ADMIN}/subscription/{subscription.pk}/change/",
        {
            **subscription_change_form(subscription),
            "lob": world.lob_b.pk,
            "listing": other_listing.pk,
            **endpoint_inline([], initial=0),
        },
    )

    subscription.refresh_from_db()
    assert (subscription.lob, subscription.listing.product_code) == (
        world.lob_a,
        "identity-transcoder",
    )


def test_endpoint_changed_on_its_own_page_goes_through_the_service(
    staff: Client, subscription: Subscription
) -> None:
    endpoint = subscription.endpoint

    response = staff.post(
        f"{ADMIN}/endpoint/{endpoint.pk}/change/",
        {"name": "transcoder-lob-a-v3", "region": "us-east-1"},
    )

    assert response.status_code == 302, response.content
    endpoint.refresh_from_db()
    assert endpoint.name == "transcoder-lob-a-v3"
    event = AuditEvent.objects.get(action="subscription.updated")
    assert event.detail["after"]["endpoint"]["name"] == "transcoder-lob-a-v3"


def test_service_refusal_on_a_subscription_rolls_back_and_is_a_message(
    staff: Client, subscription: Subscription, monkeypatch
) -> None:
    def refuse(**kwargs: object) -> None:
        raise Conflict("The endpoint is used by another subscription.", code="endpoint_in_use")

    monkeypatch.setattr(catalog, "subscription_update", refuse)

    response = staff.post(
        f"{ADMIN}/subscription/{subscription.pk}/change/",
        {**subscription_change_form(subscription, status="cancelled"), **endpoint_inline([], 0)},
    )

    assert response.status_code == 302
    assert messages_of(response) == ["Not saved: The endpoint is used by another subscription."]
    subscription.refresh_from_db()
    assert subscription.status == "active"


def test_refusal_by_the_service_itself_is_a_message(
    staff: Client, world: World, listing: Listing, monkeypatch
) -> None:
    """A refusal only the service sees: the database's unique pair, after a concurrent insert."""
    original = catalog.subscription_create

    def concurrent_insert_first(**kwargs):
        SubscriptionFactory(lob=kwargs["lob"], listing=kwargs["listing"])
        return original(**kwargs)

    monkeypatch.setattr(catalog, "subscription_create", concurrent_insert_first)

    response = staff.post(
        f"{ADMIN}/subscription/add/",
        {
            "lob": world.lob_b.pk,
            "listing": listing.pk,
            "status": "active",
            "starts_on": "2026-01-01",
            **endpoint_inline([], initial=0),
        },
    )

    assert response.status_code == 302
    assert messages_of(response) == ["Not saved: That conflicts with an existing record."]
    assert not Subscription.objects.filter(lob=world.lob_b).exists()  # rolled back entirely


# --- Syncing endpoints from the admin -------------------------------------------------------------


def test_sync_action_reads_sagemaker_and_reports_each_endpoint(proxy: ProxyWorld) -> None:
    name = sagemaker_endpoint(ACCOUNT_A)
    Endpoint.objects.filter(subscription=proxy.subscription_a).update(name=name)
    client = Client()
    client.force_login(proxy.world.user("platform_admin"))

    response = client.post(
        f"{ADMIN}/endpoint/",
        {
            "action": "sync_endpoints",
            "_selected_action": [
                proxy.subscription_a.endpoint.pk,
                proxy.subscription_b.endpoint.pk,
            ],
        },
    )

    assert response.status_code == 302
    reported = sorted(messages_of(response))
    assert reported[0].startswith("identity-transcoder-lob-b: NotFound — ")
    assert reported[1] == f"{name}: InService"
    assert AuditEvent.objects.filter(action="endpoint.synced").count() == 2


def test_deactivated_staff_cannot_use_the_admin(world: World, listing: Listing) -> None:
    user = UserFactory(username="former-admin", is_staff=True, is_active=False)
    client = Client()
    client.force_login(user)

    response = client.get(f"{ADMIN}/listing/")

    assert response.status_code == 302


def test_subscription_page_links_to_the_portals_page(
    staff: Client, subscription: Subscription
) -> None:
    page = staff.get(f"{ADMIN}/subscription/{subscription.pk}/change/").content.decode()

    assert f'href="/subscriptions/{subscription.pk}/"' in page  # "View on site"
