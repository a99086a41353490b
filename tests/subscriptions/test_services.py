"""The proxy path's services called directly, as Celery jobs will call them."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from accounts import tokens
from accounts.models import AuditEvent, Membership
from devstack.wsgi_thread import serve_in_thread
from portal.errors import NotPermitted
from subscriptions.errors import SellerUnavailable, TokenMismatch, TokenRejected
from subscriptions.models import Invocation
from subscriptions.selectors import subscription_by_id, subscription_for_member
from subscriptions.services.proxy import invocation_run
from subscriptions.services.seller_tokens import (
    SellerToken,
    VerifiedTokens,
    seller_token_verify,
    subscription_authorize,
)
from tests.factories import JobFactory
from tests.subscriptions.conftest import ACCOUNT_A, PRODUCT, SELLER_ISSUER, ProxyWorld

pytestmark = pytest.mark.django_db

PAYLOAD = b'{"email": "jane@example.com"}\n'


def run(proxy: ProxyWorld, principal: str, token: str, **overrides):
    subscription = subscription_by_id(proxy.subscription_a.pk)
    arguments = {
        "subscription": subscription,
        "principal": proxy.world.user(principal),
        "token": token,
        "body": PAYLOAD,
        "content_type": "application/jsonlines",
        **overrides,
    }
    return invocation_run(**arguments)


def test_service_returns_the_answer_its_record_and_where_it_is_stored(proxy: ProxyWorld) -> None:
    result = run(proxy, "analyst", proxy.token())

    assert json.loads(result.body)["record"] == 0
    assert result.content_type == "application/jsonlines"
    assert result.invocation.outcome == "ok"
    assert result.result_uri.endswith(f"/{result.invocation.pk}")
    assert set(result.timings) == {"authorization", "credentials", "invoke", "store", "record"}
    assert all(value >= 0 for value in result.timings.values())


def test_member_removed_after_obtaining_a_token_is_refused_when_the_job_runs(
    proxy: ProxyWorld,
) -> None:
    token = proxy.token("analyst")
    Membership.objects.filter(user=proxy.world.user("analyst")).delete()

    with pytest.raises(NotPermitted) as refused:
        run(proxy, "analyst", token)

    assert (refused.value.status, refused.value.code) == (403, "not_a_member")
    invocation = Invocation.objects.get()
    assert (invocation.outcome, invocation.principal) == (
        "not_a_member",
        proxy.world.user("analyst"),
    )
    event = AuditEvent.objects.get(action="subscription.invoked")
    assert (event.outcome, event.reason) == ("refused", "not_a_member")
    assert proxy.container_counter.calls["/invocations"] == 0


def test_deactivated_person_is_refused_even_with_a_role(proxy: ProxyWorld) -> None:
    token = proxy.token("analyst")
    analyst = proxy.world.user("analyst")
    analyst.is_active = False
    analyst.save()

    with pytest.raises(NotPermitted) as refused:
        run(proxy, "analyst", token)

    assert refused.value.code == "not_a_member"


def test_authorize_returns_a_token_with_its_expiry(proxy: ProxyWorld) -> None:
    seller_token = subscription_authorize(
        subscription=subscription_by_id(proxy.subscription_a.pk),
        principal=proxy.world.user("analyst"),
    )

    assert isinstance(seller_token, SellerToken)
    assert seller_token.token not in repr(seller_token)
    claims = jwt.decode(seller_token.token, options={"verify_signature": False})
    assert int(seller_token.expires_at.timestamp()) == claims["exp"]


def test_verify_returns_the_claims_of_a_good_token(proxy: ProxyWorld) -> None:
    claims = seller_token_verify(
        token=proxy.token(), subscription=subscription_by_id(proxy.subscription_a.pk)
    )

    assert (claims["iss"], claims["aud"], claims["sub"]) == (SELLER_ISSUER, PRODUCT, ACCOUNT_A)


def test_hot_path_reads_the_subscription_once_and_writes_two_rows(
    proxy: ProxyWorld, django_assert_max_num_queries
) -> None:
    token = proxy.token()
    analyst = proxy.world.user("analyst")
    run(proxy, "analyst", token)  # warm: JWKS, assumed role, clients

    # Selector with the caller's role (1) + Invocation and audit inserts (2) + savepoint pair (2).
    with django_assert_max_num_queries(5):
        subscription = subscription_for_member(analyst, proxy.subscription_a.pk)
        invocation_run(
            subscription=subscription,
            principal=analyst,
            token=token,
            body=PAYLOAD,
            content_type="application/jsonlines",
        )


def test_api_call_makes_no_extra_queries(proxy: ProxyWorld, django_assert_max_num_queries) -> None:
    token = proxy.token()
    proxy.invoke("analyst", proxy.subscription_a, token=token)

    # As above (the caller is force-authenticated here: no user lookup).
    with django_assert_max_num_queries(5):
        response = proxy.invoke("analyst", proxy.subscription_a, token=token)

    assert response.status_code == 200


def test_role_read_with_the_subscription_is_used_only_for_that_person(proxy: ProxyWorld) -> None:
    token = proxy.token()
    # Fetched by the LOB's admin, carrying the admin's role...
    subscription = subscription_for_member(proxy.world.user("lob_admin"), proxy.subscription_a.pk)
    assert subscription.caller_role == Membership.Role.ADMIN

    # ...then run for a viewer: the viewer's own role is asked for, and refuses.
    with pytest.raises(NotPermitted) as refused:
        invocation_run(
            subscription=subscription,
            principal=proxy.world.user("viewer"),
            token=token,
            body=PAYLOAD,
            content_type="application/jsonlines",
        )

    assert refused.value.code == "may_not_invoke"


def test_role_read_with_the_subscription_follows_the_lob_being_deactivated(
    proxy: ProxyWorld,
) -> None:
    token = proxy.token()
    proxy.subscription_a.lob.__class__.objects.filter(pk=proxy.subscription_a.lob_id).update(
        is_active=False
    )
    analyst = proxy.world.user("analyst")
    subscription = subscription_by_id(proxy.subscription_a.pk, role_of=analyst)

    with pytest.raises(NotPermitted) as refused:
        invocation_run(
            subscription=subscription,
            principal=analyst,
            token=token,
            body=PAYLOAD,
            content_type="application/jsonlines",
        )

    assert refused.value.code == "not_a_member"


# --- Verified seller tokens are remembered until they expire -------------------------------------


def test_verified_token_is_not_verified_again(proxy: ProxyWorld) -> None:
    token = proxy.token()
    subscription = subscription_by_id(proxy.subscription_a.pk)
    seller_token_verify(token=token, subscription=subscription)
    # The seller's keys vanish: only a remembered verification lets the next call through.
    proxy.listing.seller_jwks_url = "http://127.0.0.1:9/.well-known/jwks.json"
    proxy.listing.save()
    tokens._caches.clear()
    subscription = subscription_by_id(proxy.subscription_a.pk)

    with pytest.raises(SellerUnavailable):
        # Another listing URL is another cache entry: this one must fetch the keys.
        seller_token_verify(token=proxy.sign(), subscription=subscription)
    proxy.listing.seller_jwks_url = f"{proxy.seller.url}/.well-known/jwks.json"
    proxy.listing.save()
    jwks_fetches = proxy.seller_counter.calls["/.well-known/jwks.json"]
    tokens._caches.clear()

    claims = seller_token_verify(
        token=token, subscription=subscription_by_id(proxy.subscription_a.pk)
    )

    assert claims["sub"] == ACCOUNT_A
    assert proxy.seller_counter.calls["/.well-known/jwks.json"] == jwks_fetches


def test_remembered_token_is_still_matched_against_the_subscription(proxy: ProxyWorld) -> None:
    token = proxy.token()
    seller_token_verify(token=token, subscription=subscription_by_id(proxy.subscription_a.pk))

    response = proxy.invoke("lob_admin", proxy.subscription_b, token=token)
    assert response.status_code == 404  # lob-a's admin cannot see lob-b's subscription
    with pytest.raises(TokenMismatch):
        seller_token_verify(token=token, subscription=subscription_by_id(proxy.subscription_b.pk))


def test_remembered_token_expires_with_its_exp(proxy: ProxyWorld, settings) -> None:
    settings.SELLER_TOKEN_LEEWAY_SECONDS = 0
    # At least a second of life: with one, a first check that crossed the second (the JWKS
    # fetched on a busy machine) found the token expired already.
    expires = int(time.time()) + 2
    token = proxy.sign(iat=expires - 60, exp=expires)
    subscription = subscription_by_id(proxy.subscription_a.pk)
    seller_token_verify(token=token, subscription=subscription)

    time.sleep(max(expires - time.time(), 0) + 0.05)  # two seconds at most: PyJWT reads the clock
    with pytest.raises(TokenRejected) as refused:
        seller_token_verify(token=token, subscription=subscription)

    assert refused.value.code == "token_expired"


def test_remembered_tokens_are_bounded() -> None:
    remembered = VerifiedTokens(size=2)
    far = time.time() + 900
    for name in ("a", "b", "c"):
        remembered.put((name, "iss", "jwks"), {"n": name}, expires_at=far)

    assert remembered.get(("a", "iss", "jwks")) is None
    assert remembered.get(("c", "iss", "jwks")) == {"n": "c"}


def test_forged_token_is_refused_even_after_the_real_one_was_seen(proxy: ProxyWorld) -> None:
    real = proxy.token()
    seller_token_verify(token=real, subscription=subscription_by_id(proxy.subscription_a.pk))
    header, payload, _signature = real.split(".")
    forged = f"{header}.{payload}.{'A' * 86}"

    with pytest.raises(TokenRejected):
        seller_token_verify(token=forged, subscription=subscription_by_id(proxy.subscription_a.pk))


# --- What jobs ask of the path ------------------------------------------------------------------


def test_answer_kept_by_the_caller_is_not_stored_again(proxy: ProxyWorld) -> None:
    account = proxy.subscription_a.lob.aws_account

    def stored() -> int:  # the moto server, and so the bucket, outlives a test
        return proxy.s3().list_objects_v2(Bucket=account.results_bucket).get("KeyCount", 0)

    token = proxy.token()
    before = stored()
    result = run(proxy, "analyst", token, store_result=False)

    assert (result.result_uri, result.invocation.result_uri) == ("", "")
    assert result.invocation.outcome == "ok"
    assert stored() == before
    run(proxy, "analyst", token)
    assert stored() == before + 1


def test_a_record_left_to_the_caller_is_written_when_the_caller_says(proxy: ProxyWorld) -> None:
    token = proxy.token()
    started = time.perf_counter()
    result = run(proxy, "analyst", token, store_result=False, defer_record=True)
    call_ms = (time.perf_counter() - started) * 1000

    # The answer is back; nothing of the call is in the database until the caller writes it.
    assert json.loads(result.body.splitlines()[0])["record"] == 0
    assert not Invocation.objects.exists()
    assert not AuditEvent.objects.filter(action="subscription.invoked").exists()
    time.sleep(0.2)  # a record written later still carries the call's own duration
    assert result.record is not None
    saved = result.record()

    invocation = Invocation.objects.get()
    assert (invocation.pk, invocation.outcome, invocation.records) == (
        result.invocation.pk,
        "ok",
        1,
    )
    assert saved.pk == invocation.pk and invocation.duration_ms <= call_ms + 1
    event = AuditEvent.objects.get(action="subscription.invoked")
    assert (event.outcome, event.detail["invocation_id"]) == ("success", str(invocation.pk))


def test_a_refused_call_is_recorded_at_once_even_when_the_caller_keeps_the_record(
    proxy: ProxyWorld,
) -> None:
    with pytest.raises(TokenRejected):
        run(proxy, "analyst", "not-a-token", store_result=False, defer_record=True)

    assert Invocation.objects.get().outcome == "token_invalid"
    assert AuditEvent.objects.get(action="subscription.invoked").outcome == "refused"


def test_only_a_caller_keeping_the_answer_may_keep_the_record(proxy: ProxyWorld) -> None:
    with pytest.raises(ValueError, match="defer_record"):
        run(proxy, "analyst", proxy.token(), defer_record=True)

    assert proxy.container_counter.calls["/invocations"] == 0


def test_a_call_made_for_a_job_names_the_job_on_its_record_allowed_or_refused(
    proxy: ProxyWorld,
) -> None:
    job = JobFactory(subscription=proxy.subscription_a, submitted_by=proxy.world.user("analyst"))

    run(proxy, "analyst", proxy.token(), store_result=False, job_id=job.pk)
    with pytest.raises(TokenRejected):
        run(proxy, "analyst", "not-a-token", store_result=False, job_id=str(job.pk))
    run(proxy, "analyst", proxy.token())  # an interactive call names no job

    records = Invocation.objects.order_by("started_at").values_list("outcome", "job_id")
    assert list(records) == [("ok", job.pk), ("token_invalid", job.pk), ("ok", None)]
    events = AuditEvent.objects.filter(action="subscription.invoked")
    assert sorted(e.detail.get("job_id", "") for e in events) == ["", str(job.pk), str(job.pk)]


def test_reusing_a_cached_token_quietly_audits_only_new_tokens(proxy: ProxyWorld) -> None:
    subscription = subscription_by_id(proxy.subscription_a.pk)
    analyst = proxy.world.user("analyst")

    first = subscription_authorize(subscription=subscription, principal=analyst, audit_reuse=False)
    again = subscription_authorize(subscription=subscription, principal=analyst, audit_reuse=False)

    assert first.token == again.token
    events = AuditEvent.objects.filter(action="subscription.authorized")
    assert [event.detail["cached"] for event in events] == [False]


# --- The JWKS cache, generalised for sellers ------------------------------------------------------


@pytest.fixture
def mixed_jwks():
    """A JWKS with one RSA and one EC key, served over HTTP; yields (url, rsa_key, ec_key)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    keys = [
        {**RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True), "kid": "rsa", "alg": "RS256"},
        {**ECAlgorithm.to_jwk(ec_key.public_key(), as_dict=True), "kid": "ec", "alg": "ES256"},
    ]
    document = json.dumps({"keys": keys}).encode()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json")])
        return [document]

    server = serve_in_thread(app)
    yield f"{server.url}/jwks.json", rsa_key, ec_key
    server.shutdown()


def test_cognito_cache_keeps_only_rs256_keys(mixed_jwks) -> None:
    url, _, _ = mixed_jwks
    cache = tokens.jwks_cache(url)

    assert cache.signing_key("rsa").algorithm_name == "RS256"
    with pytest.raises(tokens.TokenError):
        cache.signing_key("ec")


def test_seller_cache_keeps_es256_and_rs256_keys(mixed_jwks) -> None:
    url, _, _ = mixed_jwks
    cache = tokens.jwks_cache(url, algorithms=("ES256", "RS256"))

    assert cache.signing_key("ec").algorithm_name == "ES256"
    assert cache.signing_key("rsa").algorithm_name == "RS256"
    # One cache per URL and algorithms: Cognito's stays RS256-only.
    assert tokens.jwks_cache(url) is not cache


def test_rs256_seller_tokens_verify_too(proxy: ProxyWorld, mixed_jwks) -> None:
    url, rsa_key, ec_key = mixed_jwks
    proxy.listing.seller_jwks_url = url
    proxy.listing.save()
    subscription = subscription_by_id(proxy.subscription_a.pk)
    claims = {
        "iss": SELLER_ISSUER,
        "aud": PRODUCT,
        "sub": ACCOUNT_A,
        "exp": 4102444800,
        "subscription_ref": str(subscription.pk),
    }

    for key, kid, algorithm in ((rsa_key, "rsa", "RS256"), (ec_key, "ec", "ES256")):
        token = jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})
        assert seller_token_verify(token=token, subscription=subscription)["sub"] == ACCOUNT_A
    # A token claiming ES256 under the RSA key's kid is refused (no algorithm confusion).
    mislabelled = jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": "rsa"})
    with pytest.raises(TokenRejected):
        seller_token_verify(token=mislabelled, subscription=subscription)


def test_unreachable_seller_jwks_is_seller_unavailable(proxy: ProxyWorld) -> None:
    proxy.listing.seller_jwks_url = "http://127.0.0.1:9/.well-known/jwks.json"
    proxy.listing.save()

    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.sign())

    assert (response.status_code, response.json()["code"]) == (503, "seller_unavailable")
    assert Invocation.objects.get().outcome == "seller_unavailable"
