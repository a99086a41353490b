"""Every refusal and failure of the proxy path: its status, code, record and audit event."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import AuditEvent, AwsAccount, Membership
from subscriptions.errors import ModelFailed
from subscriptions.models import Endpoint, Invocation, Subscription
from subscriptions.services import seller_tokens
from subscriptions.services.proxy import invocation_run
from tests.subscriptions.conftest import (
    ACCOUNT_A,
    ACCOUNT_B,
    CLOSED_PORT_URL,
    PRODUCT,
    SELLER_ISSUER,
    ProxyWorld,
)

pytestmark = pytest.mark.django_db


def assert_refused(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code, body
    assert body["detail"]
    return body


def assert_recorded(code: str, audit_outcome: str = "refused") -> Invocation:
    """The call left one Invocation row and one audit event with that code."""
    invocation = Invocation.objects.get()
    assert invocation.outcome == code
    assert invocation.result_uri == ""
    event = AuditEvent.objects.get(action="subscription.invoked")
    assert (event.outcome, event.reason) == (audit_outcome, code)
    assert event.detail["invocation_id"] == str(invocation.pk)
    return invocation


def entitlements(proxy: ProxyWorld):
    return proxy.seller_app.extensions["seller_token_service"]["entitlements"]


# --- authorize ------------------------------------------------------------------------------------


def test_expired_subscription_is_refused_at_authorize(proxy: ProxyWorld) -> None:
    yesterday = dt.date.today() - dt.timedelta(days=1)
    Subscription.objects.filter(pk=proxy.subscription_b.pk).update(
        status=Subscription.Status.EXPIRED, ends_on=yesterday
    )

    response = proxy.authorize("other_lob_member", proxy.subscription_b)

    assert_refused(response, 403, "subscription_inactive")
    assert proxy.seller_counter.calls["/auth/init"] == 0
    event = AuditEvent.objects.get(action="subscription.authorized")
    assert (event.outcome, event.reason, event.lob_slug) == (
        "refused",
        "subscription_inactive",
        "lob-b",
    )


@pytest.mark.parametrize(
    "change",
    [
        {"status": Subscription.Status.PENDING},
        {"status": Subscription.Status.CANCELLED},
        {"ends_on": dt.date(2020, 1, 1), "starts_on": dt.date(2019, 1, 1)},
        {"starts_on": dt.date.today() + dt.timedelta(days=3)},
    ],
)
def test_subscription_not_in_force_is_refused(proxy: ProxyWorld, change: dict) -> None:
    Subscription.objects.filter(pk=proxy.subscription_a.pk).update(**change)

    assert_refused(proxy.authorize("analyst", proxy.subscription_a), 403, "subscription_inactive")


def test_seller_refusing_the_entitlement_is_not_entitled(proxy: ProxyWorld) -> None:
    entitlements(proxy).revoke(PRODUCT, ACCOUNT_A)

    body = assert_refused(proxy.authorize("analyst", proxy.subscription_a), 403, "not_entitled")

    assert "Acme Identity" in body["detail"]
    event = AuditEvent.objects.get(action="subscription.authorized")
    assert (event.outcome, event.reason) == ("refused", "not_entitled")


def test_entitlement_past_its_end_is_not_entitled(proxy: ProxyWorld) -> None:
    entitlements(proxy).grant(PRODUCT, ACCOUNT_A, dt.date(2020, 1, 1))

    assert_refused(proxy.authorize("analyst", proxy.subscription_a), 403, "not_entitled")


def test_seller_down_is_seller_unavailable(proxy: ProxyWorld) -> None:
    proxy.listing.token_service_url = CLOSED_PORT_URL
    proxy.listing.save()

    assert_refused(proxy.authorize("analyst", proxy.subscription_a), 503, "seller_unavailable")
    event = AuditEvent.objects.get(action="subscription.authorized")
    assert (event.outcome, event.reason) == ("failure", "seller_unavailable")


def test_seller_failing_is_seller_unavailable(proxy: ProxyWorld) -> None:
    proxy.seller_counter.fail_with = 500

    assert_refused(proxy.authorize("analyst", proxy.subscription_a), 503, "seller_unavailable")


def test_seller_too_slow_is_seller_unavailable(proxy: ProxyWorld, settings) -> None:
    settings.SELLER_TOKEN_READ_TIMEOUT = 0.2
    proxy.seller_counter.delay_s = 5

    started = time.monotonic()
    response = proxy.authorize("analyst", proxy.subscription_a)

    assert_refused(response, 503, "seller_unavailable")
    # Given up after the read timeout, long before the seller would have answered.
    assert time.monotonic() - started < 5


def test_refusals_are_not_cached(proxy: ProxyWorld) -> None:
    proxy.seller_counter.fail_with = 503
    proxy.authorize("analyst", proxy.subscription_a)
    proxy.seller_counter.fail_with = None

    assert proxy.authorize("analyst", proxy.subscription_a).status_code == 200
    assert proxy.seller_counter.calls["/auth/init"] == 2


@pytest.mark.parametrize(
    ("principal", "code"),
    [("viewer", "may_not_invoke"), ("platform_admin", "not_a_member")],
)
def test_members_who_may_not_invoke_are_refused_a_token(
    proxy: ProxyWorld, principal: str, code: str
) -> None:
    assert_refused(proxy.authorize(principal, proxy.subscription_a), 403, code)
    assert proxy.seller_counter.calls["/auth/init"] == 0
    assert AuditEvent.objects.get(action="subscription.authorized").reason == code


def test_lambda_token_service_is_invoked_in_the_lob_account(proxy: ProxyWorld) -> None:
    # moto cannot run Lambda code here (no Docker): a function that does not exist shows the
    # portal reached the Lambda API with the LOB account's role and mapped its refusal.
    proxy.listing.token_service_url = ""
    proxy.listing.token_service_lambda_arn = (
        "arn:aws:lambda:us-east-1:999999999999:function:seller-auth-init"
    )
    proxy.listing.save()

    body = assert_refused(
        proxy.authorize("analyst", proxy.subscription_a), 503, "seller_unavailable"
    )

    assert "token function" in body["detail"]


# --- invoke: checks before AWS --------------------------------------------------------------------


def test_missing_token_is_token_invalid(proxy: ProxyWorld) -> None:
    assert_refused(proxy.invoke("analyst", proxy.subscription_a, token=None), 401, "token_invalid")
    assert_recorded("token_invalid")
    assert proxy.container_counter.calls["/invocations"] == 0


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b.c",
        "e30.e30.e30",
        "eyJhbGciOiJFUzI1NiIsImtpZCI6WzFdfQ.e30.c2ln",  # {"alg":"ES256","kid":[1]}: PyJWT refuses
        "W1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tbW1tb" * 400 + ".e30.c2ln",  # nested too deep
    ],
)
def test_malformed_token_is_token_invalid(proxy: ProxyWorld, token: str) -> None:
    assert_refused(proxy.invoke("analyst", proxy.subscription_a, token=token), 401, "token_invalid")


def test_expired_token_is_token_expired(proxy: ProxyWorld) -> None:
    past = int(time.time()) - 3600
    token = proxy.sign(iat=past - 900, exp=past)

    assert_refused(proxy.invoke("analyst", proxy.subscription_a, token=token), 401, "token_expired")
    assert_recorded("token_expired")


def test_token_forged_with_another_key_is_token_invalid(proxy: ProxyWorld) -> None:
    forger = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    claims = {
        "iss": SELLER_ISSUER,
        "aud": PRODUCT,
        "sub": ACCOUNT_A,
        "iat": now,
        "exp": now + 900,
        "subscription_ref": str(proxy.subscription_a.pk),
    }
    # The seller's own kid, so only the signature itself can give it away.
    same_kid = jwt.encode(claims, forger, algorithm="ES256", headers={"kid": proxy.seller_kid()})
    unknown_kid = jwt.encode(claims, forger, algorithm="ES256", headers={"kid": "forged"})

    for token in (same_kid, unknown_kid):
        response = proxy.invoke("analyst", proxy.subscription_a, token=token)
        assert_refused(response, 401, "token_invalid")
    assert proxy.container_counter.calls["/invocations"] == 0


def test_token_with_a_symmetric_algorithm_is_refused(proxy: ProxyWorld) -> None:
    token = jwt.encode(
        {"iss": SELLER_ISSUER, "aud": PRODUCT, "sub": ACCOUNT_A, "exp": time.time() + 60},
        "shared-secret-guess-00000000000000",
        algorithm="HS256",
        headers={"kid": proxy.seller_kid()},
    )

    assert_refused(proxy.invoke("analyst", proxy.subscription_a, token=token), 401, "token_invalid")


def test_token_from_another_issuer_is_token_invalid(proxy: ProxyWorld) -> None:
    token = proxy.sign(iss="https://someone-else.test")

    assert_refused(proxy.invoke("analyst", proxy.subscription_a, token=token), 401, "token_invalid")


def test_token_without_subscription_ref_is_token_invalid(proxy: ProxyWorld) -> None:
    token = proxy.sign(subscription_ref=None)

    assert_refused(proxy.invoke("analyst", proxy.subscription_a, token=token), 401, "token_invalid")


def test_token_of_another_accounts_subscription_is_a_mismatch(proxy: ProxyWorld) -> None:
    token_b = proxy.token("other_lob_member", proxy.subscription_b)

    response = proxy.invoke("analyst", proxy.subscription_a, token=token_b)

    assert_refused(response, 403, "token_subscription_mismatch")
    assert_recorded("token_subscription_mismatch")
    assert proxy.container_counter.calls["/invocations"] == 0


@pytest.mark.parametrize(
    "claims",
    [
        {"subscription_ref": "999999"},  # another subscription of the same account
        {"sub": ACCOUNT_B},  # another account, this subscription's ref
        {"aud": "another-product"},  # another product of the same seller
    ],
)
def test_token_for_something_else_is_a_mismatch(proxy: ProxyWorld, claims: dict) -> None:
    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.sign(**claims))

    assert_refused(response, 403, "token_subscription_mismatch")


def test_payload_over_6_mb_is_refused(proxy: ProxyWorld) -> None:
    body = b"email\n" + b"x@example.com\n" * (6 * 1024 * 1024 // 14 + 10)

    response = proxy.invoke(
        "analyst", proxy.subscription_a, token=proxy.token(), body=body, content_type="text/csv"
    )

    assert_refused(response, 413, "payload_too_large")
    assert assert_recorded("payload_too_large").bytes_in > 6 * 1024 * 1024
    assert proxy.container_counter.calls["/invocations"] == 0


def test_payload_limit_is_a_setting(proxy: ProxyWorld, settings) -> None:
    settings.INVOKE_MAX_PAYLOAD_BYTES = 10

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert_refused(response, 413, "payload_too_large")


@pytest.mark.parametrize("content_type", ["application/xml", "text/plain", ""])
def test_content_type_the_listing_does_not_accept_is_refused(
    proxy: ProxyWorld, content_type: str
) -> None:
    response = proxy.invoke(
        "analyst", proxy.subscription_a, token=proxy.token(), content_type=content_type
    )

    assert_refused(response, 415, "unsupported_content_type")
    assert_recorded("unsupported_content_type")


def test_content_types_are_per_listing(proxy: ProxyWorld) -> None:
    token = proxy.token()
    proxy.listing.content_types = ["text/csv"]
    proxy.listing.save()

    response = proxy.invoke("analyst", proxy.subscription_a, token=token)

    assert_refused(response, 415, "unsupported_content_type")


# --- permission re-checked when the call runs -----------------------------------------------------


def test_member_removed_after_obtaining_a_token_is_refused(proxy: ProxyWorld) -> None:
    token = proxy.token("analyst")
    Membership.objects.filter(user=proxy.world.user("analyst")).delete()

    response = proxy.invoke("analyst", proxy.subscription_a, token=token)

    # The subscription is now another LOB's to them: not found, and the attempt is audited.
    assert_refused(response, 404, "not_found")
    event = AuditEvent.objects.get(action="subscription.invoked")
    assert (event.outcome, event.reason, event.actor) == (
        "refused",
        "not_found",
        proxy.world.user("analyst"),
    )
    assert proxy.container_counter.calls["/invocations"] == 0


def test_member_demoted_to_viewer_after_obtaining_a_token_is_refused(proxy: ProxyWorld) -> None:
    token = proxy.token("analyst")
    Membership.objects.filter(user=proxy.world.user("analyst")).update(role=Membership.Role.VIEWER)

    response = proxy.invoke("analyst", proxy.subscription_a, token=token)

    assert_refused(response, 403, "may_not_invoke")
    assert_recorded("may_not_invoke")


def test_subscription_cancelled_after_the_token_was_issued_is_refused(proxy: ProxyWorld) -> None:
    token = proxy.token("analyst")
    Subscription.objects.filter(pk=proxy.subscription_a.pk).update(
        status=Subscription.Status.CANCELLED
    )

    response = proxy.invoke("analyst", proxy.subscription_a, token=token)

    assert_refused(response, 403, "subscription_inactive")
    assert_recorded("subscription_inactive")


def test_viewer_cannot_invoke_even_with_a_valid_token(proxy: ProxyWorld) -> None:
    response = proxy.invoke("viewer", proxy.subscription_a, token=proxy.token("analyst"))

    assert_refused(response, 403, "may_not_invoke")


# --- invoke: failures on the way ------------------------------------------------------------------


def test_throttled_endpoint_is_429_with_retry_after(proxy: ProxyWorld, settings) -> None:
    settings.INVOKE_RETRY_AFTER_SECONDS = 7
    proxy.knobs(throttle_rate=1.0)

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert_refused(response, 429, "throttled")
    assert response["Retry-After"] == "7"
    assert_recorded("throttled", audit_outcome="failure")


def test_model_error_is_502_with_the_containers_message(proxy: ProxyWorld) -> None:
    proxy.knobs(error_rate=1.0)

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    body = assert_refused(response, 502, "model_error")
    # The container's JSON error read as its message and code, not quoted as JSON.
    assert body["detail"] == "The model failed: internal"
    assert_recorded("model_error", audit_outcome="failure")


def test_container_rejecting_the_payload_is_a_model_error(proxy: ProxyWorld) -> None:
    response = proxy.invoke(
        "analyst",
        proxy.subscription_a,
        token=proxy.token(),
        body=b"{not json",
        content_type="application/json",
    )

    body = assert_refused(response, 502, "model_error")
    assert (
        body["detail"] == "The model failed: the body is not JSON (Expecting property name "
        "enclosed in double quotes at line 1) (invalid_json)"
    )


def test_unknown_endpoint_is_503_endpoint_unavailable(proxy: ProxyWorld) -> None:
    Endpoint.objects.filter(subscription=proxy.subscription_a).update(name="no-such-endpoint")
    proxy.subscription_a.refresh_from_db()

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert_refused(response, 503, "endpoint_unavailable")
    assert_recorded("endpoint_unavailable", audit_outcome="failure")


def test_subscription_without_endpoint_is_503(proxy: ProxyWorld) -> None:
    Endpoint.objects.filter(subscription=proxy.subscription_a).delete()

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert_refused(response, 503, "endpoint_unavailable")


def test_container_down_is_503_endpoint_unavailable(proxy: ProxyWorld) -> None:
    registry = proxy.runtime_app.extensions["sagemaker_runtime"]["registry"]
    registry.register(f"{PRODUCT}-lob-a", CLOSED_PORT_URL)

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert_refused(response, 503, "endpoint_unavailable")


def test_runtime_unreachable_is_503_endpoint_unavailable(proxy: ProxyWorld) -> None:
    AwsAccount.objects.filter(account_id=ACCOUNT_A).update(
        sagemaker_runtime_endpoint_url=CLOSED_PORT_URL
    )

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert_refused(response, 503, "endpoint_unavailable")


def test_model_slower_than_sagemakers_limit_is_504(proxy: ProxyWorld) -> None:
    # The runtime stand-in gives the container 1 s (SageMaker: 60 s) and answers ModelError.
    proxy.knobs(latency_ms=1500)

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert_refused(response, 504, "upstream_timeout")
    assert_recorded("upstream_timeout", audit_outcome="failure")


def test_no_answer_within_the_read_timeout_is_504(proxy: ProxyWorld, settings) -> None:
    settings.INVOKE_READ_TIMEOUT = 0.3
    token = proxy.token()
    proxy.knobs(latency_ms=5000)

    response = proxy.invoke("analyst", proxy.subscription_a, token=token)

    assert_refused(response, 504, "upstream_timeout")
    # Given up after the read timeout, long before the model would have answered.
    assert 300 <= assert_recorded("upstream_timeout", audit_outcome="failure").duration_ms < 5000


def test_result_that_cannot_be_stored_is_502(proxy: ProxyWorld) -> None:
    AwsAccount.objects.filter(account_id=ACCOUNT_A).update(results_bucket="no-such-bucket-here")

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert_refused(response, 502, "result_not_stored")
    invocation = assert_recorded("result_not_stored", audit_outcome="failure")
    assert invocation.bytes_out > 0


@pytest.mark.parametrize(
    ("error_rate", "body", "content_type", "original_status"),
    [
        (1.0, b'{"email": "a@example.com"}\n', "application/jsonlines", 500),
        (0.0, b"{not json", "application/json", 400),
    ],
)
def test_model_failure_carries_the_containers_own_status(
    proxy: ProxyWorld, error_rate: float, body: bytes, content_type: str, original_status: int
) -> None:
    """Jobs retry a container's 5xx but not its 4xx: the status must survive the mapping."""
    proxy.knobs(error_rate=error_rate)
    subscription = Subscription.objects.select_related(
        "listing", "lob__aws_account", "endpoint"
    ).get(pk=proxy.subscription_a.pk)

    with pytest.raises(ModelFailed) as failed:
        invocation_run(
            subscription=subscription,
            principal=proxy.world.user("analyst"),
            token=proxy.token(),
            body=body,
            content_type=content_type,
        )

    assert failed.value.code == "model_error"
    assert failed.value.original_status == original_status


# --- Found by a review of the path against its specification ------------------------------------


def test_a_call_without_sign_in_is_refused_and_audited(proxy: ProxyWorld) -> None:
    token = proxy.token()
    anonymous = APIClient()
    response = anonymous.generic(
        "POST",
        f"/api/v1/subscriptions/{proxy.subscription_a.pk}/invocations/",
        b'{"email": "a@example.com"}\n',
        content_type="application/jsonlines",
        HTTP_X_SUBSCRIPTION_TOKEN=token,
    )
    bad_bearer = anonymous.post(
        f"/api/v1/subscriptions/{proxy.subscription_a.pk}/authorize/",
        HTTP_AUTHORIZATION="Bearer not-a-token",
    )

    assert response.status_code == 401 and bad_bearer.status_code == 401
    invoked = AuditEvent.objects.get(action="subscription.invoked")
    assert (invoked.outcome, invoked.reason, invoked.actor) == (
        "refused",
        "not_authenticated",
        None,
    )
    assert invoked.target_id == str(proxy.subscription_a.pk)
    authorized = AuditEvent.objects.filter(action="subscription.authorized", outcome="refused")
    assert [event.reason for event in authorized] == ["token_invalid"]  # the bearer token's code
    assert proxy.container_counter.calls["/invocations"] == 0


def test_an_accept_the_model_cannot_answer_in_is_406_not_a_model_error(proxy: ProxyWorld) -> None:
    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token(), accept="text/xml")

    body = assert_refused(response, 406, "not_acceptable")
    assert "Accept" in body["detail"]
    assert_recorded("not_acceptable")


def test_the_records_of_a_large_json_call_are_counted(proxy: ProxyWorld) -> None:
    # Over 1 MiB in few records: the model's work (and time, under the stand-in's 1 s timeout)
    # grows with identifiers, not bytes; "note" is not one.
    records = [{"email": f"person{n}@example.com", "note": "x" * 400} for n in range(3_000)]
    body = json.dumps({"records": records}).encode()
    assert len(body) > 1024 * 1024

    response = proxy.invoke(
        "analyst", proxy.subscription_a, token=proxy.token(), body=body,
        content_type="application/json",
    )  # fmt: skip

    assert response.status_code == 200, response.content[:300]
    assert Invocation.objects.get().records == 3_000
    assert len(response.json()["results"]) == 3_000


def test_a_token_is_kept_no_longer_than_its_own_exp(proxy: ProxyWorld, monkeypatch) -> None:
    # The seller says "valid an hour", but the token it signed expires in 5 s.
    signed = proxy.sign(exp=int(time.time()) + 5)
    monkeypatch.setattr(
        seller_tokens,
        "_ask_over_https",
        lambda url, payload: (200, {"token": signed, "expires_in": 3600}),
    )

    answer = proxy.authorize("analyst", proxy.subscription_a).json()

    expires_at = dt.datetime.fromisoformat(answer["expires_at"].replace("Z", "+00:00"))
    assert expires_at.timestamp() <= time.time() + 5
    assert seller_tokens._cached_token(proxy.subscription_a) is not None  # kept for ~4 s


@pytest.mark.django_db(transaction=True)
def test_callers_arriving_together_share_one_seller_request(proxy: ProxyWorld) -> None:
    proxy.seller_counter.delay_s = 0.3
    subscription = Subscription.objects.select_related("listing", "lob__aws_account").get(
        pk=proxy.subscription_a.pk
    )
    analyst = proxy.world.user("analyst")
    tokens: list[str] = []

    def authorize() -> None:
        try:
            tokens.append(
                seller_tokens.subscription_authorize(
                    subscription=subscription, principal=analyst
                ).token
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=authorize) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(tokens) == 6 and len(set(tokens)) == 1
    assert proxy.seller_counter.calls["/auth/init"] == 1
