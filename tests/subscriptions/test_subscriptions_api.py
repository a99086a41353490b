"""Listings and subscriptions over the API: who sees and changes what, and cross-LOB refusals."""

from __future__ import annotations

import datetime as dt

import pytest
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from subscriptions.models import Endpoint, Listing, Subscription
from tests.factories import (
    EndpointFactory,
    InvocationFactory,
    ListingFactory,
    LobFactory,
    SubscriptionFactory,
)
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def listing() -> Listing:
    return ListingFactory(product_code="identity-transcoder", name="Identity Transcoder")


@pytest.fixture
def subscriptions(world: World, listing: Listing) -> dict[str, Subscription]:
    subscription_a = SubscriptionFactory(lob=world.lob_a, listing=listing)
    subscription_b = SubscriptionFactory(lob=world.lob_b, listing=listing)
    EndpointFactory(subscription=subscription_a, name="identity-transcoder-lob-a")
    EndpointFactory(subscription=subscription_b, name="identity-transcoder-lob-b")
    return {"a": subscription_a, "b": subscription_b}


def api(world: World, principal: str) -> APIClient:
    client = APIClient()
    user = world.user(principal)
    if user is not None:
        client.force_authenticate(user)
    return client


# --- Listings -------------------------------------------------------------------------------------

NEW_LISTING = {
    "product_code": "address-verifier",
    "name": "Address Verifier",
    "seller_name": "Acme Geo",
    "content_types": ["text/csv"],
    "token_service_url": "https://seller.acme-geo.test",
    "seller_issuer": "https://seller.acme-geo.test",
    "seller_jwks_url": "https://seller.acme-geo.test/.well-known/jwks.json",
}


@pytest.mark.parametrize(
    "principal", ["platform_admin", "lob_admin", "analyst", "viewer", "non_member"]
)
def test_everyone_signed_in_reads_the_catalogue(
    world: World, listing: Listing, principal: str
) -> None:
    response = api(world, principal).get("/api/v1/listings/")

    assert response.status_code == 200
    assert [item["product_code"] for item in response.json()["results"]] == ["identity-transcoder"]
    detail = api(world, principal).get("/api/v1/listings/identity-transcoder/")
    assert detail.json()["content_types"] == listing.content_types


def test_anonymous_cannot_read_the_catalogue(world: World, listing: Listing) -> None:
    assert APIClient().get("/api/v1/listings/").status_code == 401


def test_platform_admin_adds_a_listing_and_it_is_audited(world: World) -> None:
    response = api(world, "platform_admin").post("/api/v1/listings/", NEW_LISTING, format="json")

    assert response.status_code == 201, response.json()
    assert Listing.objects.get(product_code="address-verifier").seller_name == "Acme Geo"
    event = AuditEvent.objects.get(action="listing.created")
    assert event.actor == world.user("platform_admin")
    assert event.detail["after"]["product_code"] == "address-verifier"


@pytest.mark.parametrize("principal", ["lob_admin", "analyst", "viewer", "non_member"])
def test_only_platform_admins_change_the_catalogue(
    world: World, listing: Listing, principal: str
) -> None:
    client = api(world, principal)

    created = client.post("/api/v1/listings/", NEW_LISTING, format="json")
    changed = client.patch("/api/v1/listings/identity-transcoder/", {"name": "Mine"}, format="json")

    assert created.status_code == changed.status_code == 403
    assert not Listing.objects.filter(product_code="address-verifier").exists()
    assert Listing.objects.get(pk=listing.pk).name == "Identity Transcoder"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"content_types": ["text/xml"]}, "content_types"),
        ({"content_types": []}, "content_types"),
        (
            {"token_service_lambda_arn": "arn:aws:lambda:us-east-1:999999999999:function:x"},
            "token_service_url",
        ),
        ({"token_service_url": ""}, "token_service_url"),
        (
            {"token_service_url": "", "token_service_lambda_arn": "arn:aws:s3:::bucket"},
            "token_service_lambda_arn",
        ),
        ({"token_service_url": "http://seller.acme-geo.test"}, "token_service_url"),
        ({"seller_jwks_url": "http://10.0.0.8/.well-known/jwks.json"}, "seller_jwks_url"),
        ({"seller_jwks_url": "ftp://seller.acme-geo.test/jwks.json"}, "seller_jwks_url"),
    ],
)
def test_listing_needs_known_content_types_and_one_token_service(
    world: World, change: dict, field: str
) -> None:
    response = api(world, "platform_admin").post(
        "/api/v1/listings/", {**NEW_LISTING, **change}, format="json"
    )

    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"]


def test_listing_with_a_lambda_token_service_is_accepted(world: World) -> None:
    data = {
        **NEW_LISTING,
        "token_service_url": "",
        "token_service_lambda_arn": "arn:aws:lambda:us-east-1:999999999999:function:auth-init",
    }

    response = api(world, "platform_admin").post("/api/v1/listings/", data, format="json")

    assert response.status_code == 201, response.json()


def test_duplicate_product_code_is_a_conflict(world: World, listing: Listing) -> None:
    response = api(world, "platform_admin").post(
        "/api/v1/listings/", {**NEW_LISTING, "product_code": listing.product_code}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["code"] == "duplicate"


# --- Subscriptions: reading -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "visible"),
    [
        ("platform_admin", {"lob-a", "lob-b"}),
        ("lob_admin", {"lob-a"}),
        ("analyst", {"lob-a"}),
        ("viewer", {"lob-a"}),
        ("other_lob_member", {"lob-b"}),
        ("non_member", set()),
    ],
)
def test_subscriptions_are_scoped_to_the_callers_lobs(
    world: World, subscriptions: dict, principal: str, visible: set
) -> None:
    response = api(world, principal).get("/api/v1/subscriptions/")

    assert response.status_code == 200
    assert {item["lob"] for item in response.json()["results"]} == visible


def test_subscription_shows_its_endpoint_and_whether_it_can_be_used(
    world: World, subscriptions: dict
) -> None:
    response = api(world, "viewer").get(f"/api/v1/subscriptions/{subscriptions['a'].pk}/")

    body = response.json()
    assert body["listing"] == "identity-transcoder"
    assert body["is_usable"] is True
    assert body["endpoint"]["name"] == "identity-transcoder-lob-a"
    assert body["content_types"] == ["text/csv", "application/json", "application/jsonlines"]


def test_subscriptions_filter_by_lob_status_and_listing(world: World, subscriptions: dict) -> None:
    Subscription.objects.filter(pk=subscriptions["b"].pk).update(status="expired")
    other = SubscriptionFactory(lob=world.lob_a, listing=ListingFactory(product_code="other"))
    client = api(world, "platform_admin")

    def ids(query: str) -> set[int]:
        return {
            item["id"] for item in client.get(f"/api/v1/subscriptions/?{query}").json()["results"]
        }

    assert ids("lob=lob-a") == {subscriptions["a"].pk, other.pk}
    assert ids("status=expired") == {subscriptions["b"].pk}
    assert ids("listing=other") == {other.pk}
    assert ids("lob=lob-a&listing=identity-transcoder") == {subscriptions["a"].pk}


def test_inactive_lobs_subscriptions_are_hidden_from_members(
    world: World, subscriptions: dict
) -> None:
    world.lob_a.is_active = False
    world.lob_a.save()

    assert api(world, "analyst").get("/api/v1/subscriptions/").json()["results"] == []


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "usage/"),
        ("post", "authorize/"),
        ("post", "invocations/"),
        ("post", "sync-endpoint/"),
        ("patch", ""),
    ],
)
@pytest.mark.parametrize("principal", ["other_lob_member", "non_member"])
def test_another_lobs_subscription_is_not_found_on_every_endpoint(
    world: World, subscriptions: dict, method: str, suffix: str, principal: str
) -> None:
    url = f"/api/v1/subscriptions/{subscriptions['a'].pk}/{suffix}"

    response = getattr(api(world, principal), method)(url, {}, format="json")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("get", ""), ("get", "usage/"), ("post", "authorize/"), ("post", "invocations/")],
)
def test_unknown_subscription_id_is_not_found(
    world: World, subscriptions: dict, method: str, suffix: str
) -> None:
    for pk in ("999999", "not-a-number"):
        response = getattr(api(world, "analyst"), method)(f"/api/v1/subscriptions/{pk}/{suffix}")
        assert response.status_code == 404


def test_refused_authorize_and_invoke_of_another_lob_are_audited(
    world: World, subscriptions: dict
) -> None:
    client = api(world, "other_lob_member")
    client.post(f"/api/v1/subscriptions/{subscriptions['a'].pk}/authorize/")
    client.generic(
        "POST",
        f"/api/v1/subscriptions/{subscriptions['a'].pk}/invocations/",
        b"{}",
        content_type="application/json",
    )

    events = AuditEvent.objects.filter(reason="not_found").order_by("occurred_at")
    assert [(e.action, e.outcome, e.target_id) for e in events] == [
        ("subscription.authorized", "refused", str(subscriptions["a"].pk)),
        ("subscription.invoked", "refused", str(subscriptions["a"].pk)),
    ]
    assert all(e.actor == world.user("other_lob_member") for e in events)


@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("get", ""),
        ("get", "usage/"),
        ("post", "authorize/"),
        ("post", "invocations/"),
        ("post", "sync-endpoint/"),
    ],
)
def test_anonymous_callers_are_refused(subscriptions: dict, method: str, suffix: str) -> None:
    url = f"/api/v1/subscriptions/{subscriptions['a'].pk}/{suffix}"

    assert getattr(APIClient(), method)(url).status_code == 401


def test_usage_counts_calls_records_and_errors(world: World, subscriptions: dict) -> None:
    InvocationFactory.create_batch(3, subscription=subscriptions["a"], records=10)
    InvocationFactory(subscription=subscriptions["a"], outcome="model_error", records=0)
    InvocationFactory(subscription=subscriptions["b"], records=99)

    body = api(world, "viewer").get(f"/api/v1/subscriptions/{subscriptions['a'].pk}/usage/").json()

    assert (body["calls"], body["succeeded"], body["errors"], body["records"]) == (4, 3, 1, 30)


# --- Subscriptions: changing ----------------------------------------------------------------------


def test_platform_admin_subscribes_a_lob_with_its_endpoint(world: World, listing: Listing) -> None:
    lob = LobFactory(slug="lob-c")
    response = api(world, "platform_admin").post(
        "/api/v1/subscriptions/",
        {
            "lob": "lob-c",
            "listing": "identity-transcoder",
            "status": "active",
            "starts_on": "2026-01-01",
            "endpoint_name": "identity-transcoder-lob-c",
        },
        format="json",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["endpoint"]["name"] == "identity-transcoder-lob-c"
    # The endpoint's region defaults to the LOB account's.
    assert body["endpoint"]["region"] == lob.aws_account.default_region
    event = AuditEvent.objects.get(action="subscription.created")
    assert event.lob_slug == "lob-c"
    assert event.detail["after"]["endpoint"] == {
        "name": "identity-transcoder-lob-c",
        "region": lob.aws_account.default_region,
    }


@pytest.mark.parametrize("principal", ["lob_admin", "analyst", "viewer"])
def test_only_platform_admins_create_and_change_subscriptions(
    world: World, subscriptions: dict, principal: str
) -> None:
    client = api(world, principal)
    url = f"/api/v1/subscriptions/{subscriptions['a'].pk}/"

    changed = client.patch(url, {"status": "cancelled"}, format="json")
    created = client.post(
        "/api/v1/subscriptions/",
        {"lob": "lob-a", "listing": ListingFactory(product_code="p2").product_code},
        format="json",
    )

    assert changed.status_code == created.status_code == 403
    assert Subscription.objects.get(pk=subscriptions["a"].pk).status == "active"
    assert Subscription.objects.count() == 2


def test_platform_admin_changes_status_dates_and_endpoint(
    world: World, subscriptions: dict
) -> None:
    url = f"/api/v1/subscriptions/{subscriptions['a'].pk}/"
    Endpoint.objects.filter(subscription=subscriptions["a"]).update(status="InService")

    response = api(world, "platform_admin").patch(
        url,
        {"status": "expired", "ends_on": "2099-06-30", "endpoint_name": "renamed-endpoint"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["status"], body["ends_on"], body["is_usable"]) == ("expired", "2099-06-30", False)
    # A new name is another endpoint: what was synced about the old one is forgotten.
    assert (body["endpoint"]["name"], body["endpoint"]["status"]) == ("renamed-endpoint", "")
    event = AuditEvent.objects.get(action="subscription.updated")
    assert event.detail["before"]["status"] == "active"
    assert event.detail["after"]["endpoint"]["name"] == "renamed-endpoint"


def test_lob_and_listing_of_a_subscription_cannot_change(world: World, subscriptions: dict) -> None:
    response = api(world, "platform_admin").patch(
        f"/api/v1/subscriptions/{subscriptions['a'].pk}/", {"lob": "lob-b"}, format="json"
    )

    assert response.status_code == 400
    assert "lob" in response.json()["errors"]


def test_end_before_start_is_refused(world: World, subscriptions: dict) -> None:
    response = api(world, "platform_admin").patch(
        f"/api/v1/subscriptions/{subscriptions['a'].pk}/",
        {"starts_on": "2026-05-01", "ends_on": "2026-04-01"},
        format="json",
    )

    assert response.status_code == 400
    assert "ends_on" in response.json()["errors"]


def test_second_subscription_of_a_lob_to_a_listing_is_a_conflict(
    world: World, subscriptions: dict
) -> None:
    response = api(world, "platform_admin").post(
        "/api/v1/subscriptions/",
        {"lob": "lob-a", "listing": "identity-transcoder", "starts_on": str(dt.date.today())},
        format="json",
    )

    assert response.status_code == 409


def test_the_schema_documents_the_proxy_path(world: World, subscriptions: dict) -> None:
    response = api(world, "analyst").get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    paths = response.json()["paths"]
    invoke = paths["/api/v1/subscriptions/{id}/invocations/"]["post"]
    assert set(invoke["requestBody"]["content"]) == {
        "text/csv",
        "application/json",
        "application/jsonlines",
    }
    headers = {p["name"] for p in invoke["parameters"] if p["in"] == "header"}
    assert "X-Subscription-Token" in headers
    assert {"401", "403", "413", "415", "429", "502", "503", "504"} <= set(invoke["responses"])
    assert "/api/v1/subscriptions/{id}/authorize/" in paths
    assert "/api/v1/listings/{product_code}/" in paths


def test_a_seller_stand_in_on_this_machine_may_use_plain_http(world: World) -> None:
    response = api(world, "platform_admin").post(
        "/api/v1/listings/",
        {
            **NEW_LISTING,
            "token_service_url": "http://127.0.0.1:8120",
            "seller_jwks_url": "http://localhost:8120/.well-known/jwks.json",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
