"""The whole authorized proxy path, end to end: seller token → InvokeEndpoint → result in S3."""

from __future__ import annotations

import json
import re
import time

import pytest

from accounts.models import AuditEvent
from subscriptions.models import Invocation
from tests.subscriptions.conftest import ACCOUNT_A, PRODUCT, ProxyWorld

pytestmark = pytest.mark.django_db

RESULT_URI = re.compile(
    r"s3://gatehouse-results-111111111111/gatehouse/lob-a/invocations/"
    r"(\d{4})/(\d{2})/(\d{2})/([0-9a-f-]{36})"
)


def _s3_object(proxy: ProxyWorld, uri: str) -> dict:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return proxy.s3().get_object(Bucket=bucket, Key=key)


def test_analyst_gets_transcoded_ids_and_the_result_is_stored_encrypted(
    proxy: ProxyWorld,
) -> None:
    authorized = proxy.authorize("analyst", proxy.subscription_a)
    assert authorized.status_code == 200
    assert authorized["Cache-Control"] == "no-store"
    token = authorized.json()["token"]

    response = proxy.invoke("analyst", proxy.subscription_a, token=token)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/jsonlines"
    lines = [json.loads(line) for line in response.content.decode().splitlines()]
    assert [line["record"] for line in lines] == [0, 1]
    assert set(lines[0]["ids"]) == {"email"} and len(lines[0]["ids"]["email"]) == 32
    assert set(lines[1]["ids"]) == {"phone"}
    # Raw identifiers never come back.
    assert b"Jane" not in response.content and b"0199" not in response.content

    invocation_id = response["X-Invocation-Id"]
    match = RESULT_URI.fullmatch(response["X-Result-Uri"])
    assert match is not None, response["X-Result-Uri"]
    assert match.group(4) == invocation_id
    stored = _s3_object(proxy, response["X-Result-Uri"])
    assert stored["Body"].read() == response.content
    assert stored["ServerSideEncryption"] == "AES256"
    assert stored["ContentType"] == "application/jsonlines"

    invocation = Invocation.objects.get(pk=invocation_id)
    assert invocation.outcome == "ok"
    assert invocation.principal == proxy.world.user("analyst")
    assert invocation.subscription == proxy.subscription_a
    assert invocation.result_uri == response["X-Result-Uri"]
    assert invocation.records == 2
    assert invocation.bytes_in == len(
        b'{"email": "Jane.Doe@Example.com"}\n{"phone": "(555) 010-0199"}\n'
    )
    assert invocation.bytes_out == len(response.content)
    yyyy, mm, dd = match.group(1, 2, 3)
    assert invocation.started_at.strftime("%Y/%m/%d") == f"{yyyy}/{mm}/{dd}"

    authorized_event = AuditEvent.objects.get(action="subscription.authorized")
    assert authorized_event.outcome == "success"
    assert authorized_event.lob_slug == "lob-a"
    assert authorized_event.actor == proxy.world.user("analyst")
    invoked_event = AuditEvent.objects.get(action="subscription.invoked")
    assert invoked_event.outcome == "success"
    assert invoked_event.detail["invocation_id"] == invocation_id
    assert invoked_event.detail["result_uri"] == response["X-Result-Uri"]
    # Neither the token nor the payload is ever recorded.
    for event in AuditEvent.objects.all():
        dumped = json.dumps(event.detail)
        assert token not in dumped and "Jane" not in dumped


def test_the_calls_are_made_as_the_person_in_the_lob_account(proxy: ProxyWorld) -> None:
    token = proxy.token("lob_admin")

    response = proxy.invoke("lob_admin", proxy.subscription_a, token=token)

    assert response.status_code == 200
    # The result is in lob-a's own account: another account's S3 does not have the bucket.
    stored = _s3_object(proxy, response["X-Result-Uri"])
    assert stored["Metadata"]["invocation-id"] == response["X-Invocation-Id"]
    assert ACCOUNT_A in response["X-Result-Uri"]


def test_csv_in_and_out_with_accept_and_custom_attributes_passed_to_the_model(
    proxy: ProxyWorld,
) -> None:
    token = proxy.token()
    body = b"email,phone\njane@example.com,5550100199\n,\n"

    default = proxy.invoke(
        "analyst",
        proxy.subscription_a,
        token=token,
        body=body,
        content_type="text/csv",
        accept="text/csv",
    )
    other_domain = proxy.invoke(
        "analyst",
        proxy.subscription_a,
        token=token,
        body=body,
        content_type="text/csv; charset=utf-8",
        accept="text/csv",
        x_amzn_sagemaker_custom_attributes="domain=buyer.example",
    )

    assert default.status_code == other_domain.status_code == 200
    assert default["Content-Type"].startswith("text/csv")
    rows = default.content.decode().splitlines()
    assert rows[0] == "record,email_id,phone_id,maid_id,error"
    assert rows[2].endswith("no_identifier")
    # The pseudonyms are keyed to the buyer's domain, which reached the model.
    assert default.content != other_domain.content
    assert Invocation.objects.filter(outcome="ok", records=2).count() == 2


def test_json_payload_is_accepted_and_answered_as_json(proxy: ProxyWorld) -> None:
    body = json.dumps({"records": [{"email": "a@example.com"}, {"maid": "bad"}]}).encode()

    response = proxy.invoke(
        "analyst",
        proxy.subscription_a,
        token=proxy.token(),
        body=body,
        content_type="application/json",
    )

    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["record"] for r in results] == [0, 1]
    assert "error" in results[1]
    assert Invocation.objects.get().records == 2


def test_seller_token_is_reused_from_the_cache(proxy: ProxyWorld) -> None:
    first = proxy.authorize("analyst", proxy.subscription_a).json()
    second = proxy.authorize("lob_admin", proxy.subscription_a).json()

    assert first == second
    assert proxy.seller_counter.calls["/auth/init"] == 1
    events = AuditEvent.objects.filter(action="subscription.authorized").order_by("occurred_at")
    assert [e.detail["cached"] for e in events] == [False, True]


def test_cached_token_is_renewed_once_most_of_its_life_is_spent(
    proxy: ProxyWorld, settings
) -> None:
    # A 15-minute token cached for 0.1 % of its life: about one second.
    settings.SELLER_TOKEN_CACHE_FRACTION = 0.0012
    proxy.authorize("analyst", proxy.subscription_a)
    time.sleep(1.3)

    proxy.authorize("analyst", proxy.subscription_a)

    assert proxy.seller_counter.calls["/auth/init"] == 2


def test_each_subscription_gets_its_own_token(proxy: ProxyWorld) -> None:
    token_a = proxy.token("analyst", proxy.subscription_a)
    token_b = proxy.token("other_lob_member", proxy.subscription_b)

    assert token_a != token_b
    assert proxy.seller_counter.calls["/auth/init"] == 2


def test_seller_key_rotation_is_picked_up_from_the_jwks(proxy: ProxyWorld) -> None:
    assert proxy.invoke("analyst", proxy.subscription_a, token=proxy.token()).status_code == 200
    proxy.seller_app.extensions["seller_token_service"]["keys"].rotate()

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.sign())

    assert response.status_code == 200
    assert proxy.seller_counter.calls["/.well-known/jwks.json"] == 2


def test_jwks_is_fetched_once_for_many_calls(proxy: ProxyWorld) -> None:
    token = proxy.token()
    for _ in range(5):
        assert proxy.invoke("analyst", proxy.subscription_a, token=token).status_code == 200

    assert proxy.seller_counter.calls["/.well-known/jwks.json"] == 1
    assert Invocation.objects.filter(outcome="ok").count() == 5


def test_usage_is_counted_from_the_invocation_records(proxy: ProxyWorld) -> None:
    token = proxy.token()
    proxy.invoke("analyst", proxy.subscription_a, token=token)
    proxy.invoke("analyst", proxy.subscription_a, token=token)
    proxy.invoke("analyst", proxy.subscription_a, token="not-a-token")

    usage = proxy.client("viewer").get(f"/api/v1/subscriptions/{proxy.subscription_a.pk}/usage/")

    assert usage.status_code == 200
    assert usage.json() == {
        "calls": 3,
        "succeeded": 2,
        "errors": 1,
        "records": 4,
        "bytes_in": usage.json()["bytes_in"],
        "bytes_out": usage.json()["bytes_out"],
    }
    assert usage.json()["bytes_in"] > 0 and usage.json()["bytes_out"] > 0


def test_the_listing_product_code_names_the_token_audience(proxy: ProxyWorld) -> None:
    import jwt

    claims = jwt.decode(proxy.token(), options={"verify_signature": False})

    assert claims["aud"] == PRODUCT
    assert claims["sub"] == ACCOUNT_A
    assert claims["subscription_ref"] == str(proxy.subscription_a.pk)


def test_neither_the_token_nor_the_payload_is_logged(proxy: ProxyWorld, caplog) -> None:
    caplog.set_level("DEBUG")  # as with LOG_LEVEL=DEBUG: the settings keep botocore quiet
    token = proxy.token()
    body = b'{"email": "Jane.Doe@Example.com"}\n'

    allowed = proxy.invoke("analyst", proxy.subscription_a, token=token, body=body)
    refused = proxy.invoke("analyst", proxy.subscription_a, token=token[:-4] + "AAAA", body=body)
    proxy.knobs(error_rate=1.0)
    failed = proxy.invoke("analyst", proxy.subscription_a, token=token, body=body)

    assert (allowed.status_code, refused.status_code, failed.status_code) == (200, 401, 502)
    assert "subscription.invoked" in caplog.text
    for secret in (token, token.split(".")[2], "Jane.Doe", "Example.com"):
        assert secret not in caplog.text
