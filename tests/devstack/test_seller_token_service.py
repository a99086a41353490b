"""The seller token service stand-in: entitlement checks and ES256 tokens verifiable via JWKS."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import jwt
import pytest
import requests

from devstack.seller_token_service import build_parser, create_app, parse_entitlement
from devstack.wsgi_thread import ThreadedServer, serve_in_thread

ISSUER = "http://seller.test"
PRODUCT = "identity-transcoder"
ENTITLED = "111111111111"
LAPSED = "222222222222"
STRANGER = "333333333333"


def today() -> date:
    return datetime.now(UTC).date()


@pytest.fixture(scope="module")
def service() -> Iterator[ThreadedServer]:
    app = create_app(
        issuer=ISSUER,
        entitlements=[
            (PRODUCT, ENTITLED, None),
            (PRODUCT, LAPSED, today() - timedelta(days=1)),
        ],
    )
    with serve_in_thread(app) as server:
        yield server


def init(
    service: ThreadedServer, account: str = ENTITLED, product: str = PRODUCT, ref: str = "42"
) -> requests.Response:
    body = {"product_code": product, "customer_account_id": account, "subscription_ref": ref}
    return requests.post(f"{service.url}/auth/init", json=body, timeout=5)


def verify(service: ThreadedServer, token: str, audience: str = PRODUCT) -> dict:
    """Verify as the portal's authorizer does: key from the published JWKS, aud and iss."""
    key = jwt.PyJWKClient(f"{service.url}/.well-known/jwks.json", cache_keys=False)
    signing_key = key.get_signing_key_from_jwt(token)
    return jwt.decode(
        token, signing_key.key, algorithms=["ES256"], audience=audience, issuer=ISSUER
    )


# --- Tokens ------------------------------------------------------------------------------------


def test_an_entitled_account_gets_a_token_that_verifies_against_the_jwks(service) -> None:
    response = init(service, ref="sub-42")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900

    claims = verify(service, body["token"])
    assert claims["iss"] == ISSUER
    assert claims["aud"] == PRODUCT
    assert claims["sub"] == ENTITLED
    assert claims["subscription_ref"] == "sub-42"
    assert claims["exp"] - claims["iat"] == 900
    assert abs(claims["iat"] - datetime.now(UTC).timestamp()) < 60
    assert claims["jti"]
    # expires_at is the exp claim, in ISO-8601 UTC.
    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    assert expires_at.tzinfo is not None
    assert expires_at.timestamp() == claims["exp"]

    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "ES256"
    jwks = requests.get(f"{service.url}/.well-known/jwks.json", timeout=5).json()
    assert header["kid"] in {key["kid"] for key in jwks["keys"]}


def test_each_token_has_its_own_jti(service) -> None:
    first = verify(service, init(service).json()["token"])
    second = verify(service, init(service).json()["token"])
    assert first["jti"] != second["jti"]


def test_a_token_does_not_verify_for_another_product(service) -> None:
    token = init(service).json()["token"]
    with pytest.raises(jwt.InvalidAudienceError):
        verify(service, token, audience="another-product")


def test_the_jwks_publishes_public_es256_keys_only(service) -> None:
    keys = requests.get(f"{service.url}/.well-known/jwks.json", timeout=5).json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "EC"
        assert key["crv"] == "P-256"
        assert key["alg"] == "ES256"
        assert key["use"] == "sig"
        assert key["kid"]
        assert "d" not in key


def test_token_ttl_is_configurable() -> None:
    app = create_app(issuer=ISSUER, entitlements=[(PRODUCT, ENTITLED, None)], token_ttl_s=60)
    with serve_in_thread(app) as server:
        body = init(server).json()
        claims = verify(server, body["token"])
    assert body["expires_in"] == 60
    assert claims["exp"] - claims["iat"] == 60


# --- Entitlements ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account", "product"),
    [(STRANGER, PRODUCT), (ENTITLED, "another-product"), (LAPSED, PRODUCT)],
    ids=["unknown account", "other product", "expired entitlement"],
)
def test_no_current_entitlement_is_403(service, account: str, product: str) -> None:
    response = init(service, account=account, product=product)
    assert response.status_code == 403
    assert response.json()["error"] == "not_entitled"
    assert response.json()["message"]
    assert "token" not in response.json()


def test_an_entitlement_lasts_through_its_last_day(service) -> None:
    url = f"{service.url}/_stand-in/entitlements/{PRODUCT}/{STRANGER}"
    put = requests.put(url, json={"expires_on": today().isoformat()}, timeout=5)
    assert put.json() == {
        "product_code": PRODUCT,
        "customer_account_id": STRANGER,
        "expires_on": today().isoformat(),
    }
    try:
        assert init(service, account=STRANGER).status_code == 200
    finally:
        requests.delete(url, timeout=5)


def test_revoking_an_entitlement_refuses_new_tokens(service) -> None:
    url = f"{service.url}/_stand-in/entitlements/{PRODUCT}/{STRANGER}"
    assert requests.put(url, json={"expires_on": None}, timeout=5).status_code == 200
    assert init(service, account=STRANGER).status_code == 200

    assert requests.delete(url, timeout=5).status_code == 204
    response = init(service, account=STRANGER)
    assert response.status_code == 403
    assert response.json()["error"] == "not_entitled"
    listed = requests.get(f"{service.url}/_stand-in/entitlements", timeout=5).json()
    assert STRANGER not in {item["customer_account_id"] for item in listed["entitlements"]}
    # Deleting again is harmless.
    assert requests.delete(url, timeout=5).status_code == 204


def test_renewing_a_lapsed_entitlement_lets_it_through_again() -> None:
    yesterday = today() - timedelta(days=1)
    app = create_app(issuer=ISSUER, entitlements=[(PRODUCT, LAPSED, yesterday)])
    with serve_in_thread(app) as server:
        assert init(server, account=LAPSED).status_code == 403
        next_year = (today() + timedelta(days=365)).isoformat()
        url = f"{server.url}/_stand-in/entitlements/{PRODUCT}/{LAPSED}"
        requests.put(url, json={"expires_on": next_year}, timeout=5).raise_for_status()
        assert init(server, account=LAPSED).status_code == 200


@pytest.mark.parametrize(
    ("account", "body"),
    [
        (STRANGER, {"expires_on": "31/12/2030"}),
        (STRANGER, {"expires_on": 20301231}),
        (STRANGER, ["2030-12-31"]),
        ("12345", {"expires_on": None}),
    ],
)
def test_bad_entitlement_changes_are_400(service, account: str, body: object) -> None:
    url = f"{service.url}/_stand-in/entitlements/{PRODUCT}/{account}"
    response = requests.put(url, json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- Malformed requests ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"customer_account_id": ENTITLED, "subscription_ref": "1"},
        {"product_code": PRODUCT, "subscription_ref": "1"},
        {"product_code": PRODUCT, "customer_account_id": ENTITLED},
        {"product_code": PRODUCT, "customer_account_id": "1111", "subscription_ref": "1"},
        {"product_code": PRODUCT, "customer_account_id": 111111111111, "subscription_ref": "1"},
        {"product_code": "", "customer_account_id": ENTITLED, "subscription_ref": "1"},
        {"product_code": PRODUCT, "customer_account_id": ENTITLED, "subscription_ref": 7},
        [PRODUCT, ENTITLED, "1"],
    ],
)
def test_a_malformed_body_is_400(service, body: object) -> None:
    response = requests.post(f"{service.url}/auth/init", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.json()["message"]


def test_a_body_that_is_not_json_is_400(service) -> None:
    response = requests.post(
        f"{service.url}/auth/init",
        data=b"product_code=identity-transcoder",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- Key rotation ------------------------------------------------------------------------------


def test_rotation_signs_with_a_new_key_and_old_tokens_still_verify() -> None:
    app = create_app(issuer=ISSUER, entitlements=[(PRODUCT, ENTITLED, None)])
    with serve_in_thread(app) as server:
        old_token = init(server).json()["token"]
        old_kid = jwt.get_unverified_header(old_token)["kid"]

        rotated = requests.post(f"{server.url}/_stand-in/rotate-key", timeout=5)
        assert rotated.status_code == 200
        new_kid = rotated.json()["kid"]
        assert new_kid != old_kid

        new_token = init(server).json()["token"]
        assert jwt.get_unverified_header(new_token)["kid"] == new_kid
        jwks = requests.get(f"{server.url}/.well-known/jwks.json", timeout=5).json()
        assert [key["kid"] for key in jwks["keys"]] == [old_kid, new_kid]
        assert verify(server, old_token)["sub"] == ENTITLED
        assert verify(server, new_token)["sub"] == ENTITLED

        # The keys really differ: the old key cannot verify the new token.
        old_key = jwt.PyJWKSet.from_dict(jwks)[old_kid].key
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(new_token, old_key, algorithms=["ES256"], audience=PRODUCT)


# --- Logging -----------------------------------------------------------------------------------


def test_tokens_never_reach_the_log(service, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = init(service).json()["token"]
    assert "/auth/init" in caplog.text  # the request is logged ...
    assert token not in caplog.text  # ... its token is not
    assert token.split(".")[2] not in caplog.text


# --- Construction and CLI ----------------------------------------------------------------------


def test_cli_parses_entitlements_and_defaults() -> None:
    args = build_parser().parse_args(
        [
            "--entitle",
            f"{PRODUCT}:{ENTITLED}",
            "--entitle",
            f"{PRODUCT}:{LAPSED}:2024-12-31",
            "--token-ttl",
            "300",
        ]
    )
    assert args.port == 8130
    assert args.issuer is None  # main() then uses http://HOST:PORT
    assert args.token_ttl == 300
    assert args.entitle == [(PRODUCT, ENTITLED, None), (PRODUCT, LAPSED, date(2024, 12, 31))]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (PRODUCT, "expected"),
        (f":{ENTITLED}", "expected"),
        (f"{PRODUCT}:1234", "12 digits"),
        (f"{PRODUCT}:{ENTITLED}:tomorrow", "bad date"),
    ],
)
def test_cli_refuses_malformed_entitlements(text: str, why: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=why):
        parse_entitlement(text)


def test_create_app_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="issuer"):
        create_app(issuer="")
    with pytest.raises(ValueError, match="token_ttl_s"):
        create_app(issuer=ISSUER, token_ttl_s=0)
    with pytest.raises(ValueError, match="12 digits"):
        create_app(issuer=ISSUER, entitlements=[(PRODUCT, "not-an-account", None)])
