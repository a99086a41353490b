"""Bearer authentication of the REST API with Cognito access tokens, verified locally."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.test import Client

from accounts.models import AuditEvent, User
from accounts.services.users import Identity, user_sync_from_identity

pytestmark = pytest.mark.django_db

ME = "/api/v1/me/"


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def assert_refused(response, code: str) -> None:
    assert response.status_code == 401, response.content
    body = response.json()
    assert body["code"] == code
    assert body["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_moto_access_token_gets_me(client: Client, cognito) -> None:
    token = cognito.access_token("user-lob-a")

    response = client.get(ME, **bearer(token))

    assert response.status_code == 200
    body = response.json()
    assert body["username"] == "user-lob-a"
    assert body["is_platform_admin"] is False
    assert body["memberships"] == []
    user = User.objects.get(username="user-lob-a")
    assert user.idp_subject == cognito.sub("user-lob-a")
    assert user.idp_issuer == cognito.pool.issuer


def test_admin_group_member_is_platform_admin_but_not_superuser(client: Client, cognito) -> None:
    response = client.get(ME, **bearer(cognito.access_token("admin")))

    assert response.status_code == 200
    assert response.json()["is_platform_admin"] is True
    admin = User.objects.get(username="admin")
    assert admin.is_staff and not admin.is_superuser


def test_token_of_web_client_is_accepted_too(client: Client, cognito, forge_token) -> None:
    token = forge_token(client_id=cognito.pool.web_client_id)
    assert client.get(ME, **bearer(token)).status_code == 200


def test_repeated_calls_reuse_one_user_row(client: Client, cognito) -> None:
    token = cognito.access_token("user-lob-b")
    for _ in range(3):
        assert client.get(ME, **bearer(token)).status_code == 200
    assert User.objects.filter(idp_subject=cognito.sub("user-lob-b")).count() == 1


def test_expired_token_is_refused(client: Client, forge_token) -> None:
    now = int(time.time())
    token = forge_token(iat=now - 7200, exp=now - 3600)
    assert_refused(client.get(ME, **bearer(token)), "token_expired")


def test_token_not_yet_valid_is_refused(client: Client, forge_token) -> None:
    token = forge_token(nbf=int(time.time()) + 3600)
    assert_refused(client.get(ME, **bearer(token)), "token_not_yet_valid")


def test_tampered_payload_is_refused(client: Client, cognito) -> None:
    header, payload, signature = cognito.access_token("user-lob-a").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["username"] = "admin"
    claims["cognito:groups"] = ["portal-admins"]
    forged = b64url(json.dumps(claims).encode())

    assert_refused(client.get(ME, **bearer(f"{header}.{forged}.{signature}")), "token_invalid")
    assert not User.objects.filter(is_staff=True).exists()


def test_wrong_issuer_is_refused(client: Client, forge_token) -> None:
    token = forge_token(iss="https://cognito-idp.us-east-1.amazonaws.com/us-east-1_other")
    assert_refused(client.get(ME, **bearer(token)), "token_invalid")


def test_id_token_is_refused_as_access_token(client: Client, cognito) -> None:
    assert_refused(
        client.get(ME, **bearer(cognito.id_token_from_moto("user-lob-a"))), "token_wrong_use"
    )


def test_app_client_not_allowed_is_refused(client: Client, forge_token) -> None:
    assert_refused(
        client.get(ME, **bearer(forge_token(client_id="someone-else"))), "client_not_allowed"
    )


def test_hs256_token_signed_with_public_key_is_refused(
    client: Client, cognito, moto_signing_key
) -> None:
    """The classic algorithm-confusion attack: HMAC keyed with the public key."""
    public_pem = moto_signing_key.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {
        "iss": cognito.pool.issuer,
        "sub": cognito.sub("admin"),
        "client_id": cognito.pool.api_client_id,
        "token_use": "access",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    header = b64url(json.dumps({"alg": "HS256", "kid": "dummy"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = b64url(hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest())

    assert_refused(client.get(ME, **bearer(f"{header}.{body}.{signature}")), "token_invalid")


def test_unsigned_token_is_refused(client: Client, forge_token) -> None:
    _, payload, _ = forge_token().split(".")
    none_header = b64url(b'{"alg":"none","kid":"dummy"}')
    assert_refused(client.get(ME, **bearer(f"{none_header}.{payload}.")), "token_invalid")


def test_unknown_key_is_refused_after_one_refetch(
    client: Client, cognito, settings, monkeypatch
) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": cognito.pool.issuer,
        "sub": cognito.sub("user-lob-a"),
        "client_id": cognito.pool.api_client_id,
        "token_use": "access",
        "iat": now,
        "exp": now + 600,
    }
    token = jwt.encode(claims, other_key, algorithm="RS256", headers={"kid": "rotated-away"})
    fetches = []
    real_get = requests.get

    def counting_get(url, *args, **kwargs):
        fetches.append(url)
        return real_get(url, *args, **kwargs)

    monkeypatch.setattr("accounts.tokens.requests.get", counting_get)
    settings.JWKS_MIN_REFRESH_SECONDS = 3600

    for _ in range(3):
        assert_refused(client.get(ME, **bearer(token)), "token_invalid")
    # One fetch to fill the cache; the unknown kid may not trigger more within the interval.
    # (requests.get is patched process-wide, so count only the portal's JWKS fetches.)
    assert [url for url in fetches if url == cognito.jwks_url] == [cognito.jwks_url]


def test_key_signed_by_stranger_with_known_kid_is_refused(client: Client, cognito) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {
        "iss": cognito.pool.issuer,
        "sub": cognito.sub("user-lob-a"),
        "client_id": cognito.pool.api_client_id,
        "token_use": "access",
        "iat": now,
        "exp": now + 600,
    }
    token = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "dummy"})
    assert_refused(client.get(ME, **bearer(token)), "token_invalid")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer", "authorization_malformed"),
        ("Bearer a b", "authorization_malformed"),
        ("Bearer not-a-jwt", "token_invalid"),
        ("Bearer a.b.c", "token_invalid"),
    ],
)
def test_malformed_authorization_header_is_refused(
    client: Client, cognito, header: str, code: str
) -> None:
    assert_refused(client.get(ME, HTTP_AUTHORIZATION=header), code)


def test_no_credentials_is_401_with_code(client: Client, cognito) -> None:
    response = client.get(ME)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_refusal_is_audited_without_the_token(client: Client, forge_token, caplog) -> None:
    token = forge_token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    caplog.set_level(logging.DEBUG)

    client.get(ME, **bearer(token))

    event = AuditEvent.objects.get(action="api.authenticate")
    assert event.outcome == "refused"
    assert event.reason == "token_expired"
    assert event.request_id
    assert event.client_ip == "127.0.0.1"
    assert token not in json.dumps(event.detail)
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


def test_identity_provider_down_is_503(client: Client, cognito, forge_token, settings) -> None:
    settings.COGNITO_JWKS_URL = "http://127.0.0.1:9/unreachable/jwks.json"
    response = client.get(ME, **bearer(forge_token()))
    assert response.status_code == 503
    assert response.json()["code"] == "identity_provider_unavailable"


def test_removal_from_admin_group_takes_effect_with_next_token(client: Client, forge_token) -> None:
    admin_token = forge_token("admin", **{"cognito:groups": ["portal-admins"]})
    assert client.get(ME, **bearer(admin_token)).json()["is_platform_admin"] is True

    plain_token = forge_token("admin", **{"cognito:groups": []})
    assert client.get(ME, **bearer(plain_token)).json()["is_platform_admin"] is False
    assert AuditEvent.objects.filter(action="user.platform_admin_revoked").count() == 1


def test_deactivated_user_is_refused(client: Client, cognito) -> None:
    token = cognito.access_token("user-lob-a")
    assert client.get(ME, **bearer(token)).status_code == 200
    User.objects.filter(username="user-lob-a").update(is_active=False)
    assert_refused(client.get(ME, **bearer(token)), "user_inactive")


def test_session_authentication_works_and_enforces_csrf(cognito) -> None:
    user = User.objects.create(username="session-user", idp_issuer="x", idp_subject="s-1")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)

    assert browser.get(ME).json()["username"] == "session-user"
    response = browser.post(ME)
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_imported_placeholder_is_claimed_by_its_cognito_user(client: Client, cognito) -> None:
    placeholder = User.objects.create(username="user-lob-b", idp_issuer="", idp_subject="")

    assert client.get(ME, **bearer(cognito.access_token("user-lob-b"))).status_code == 200

    placeholder.refresh_from_db()
    assert placeholder.idp_subject == cognito.sub("user-lob-b")
    assert placeholder.idp_issuer == cognito.pool.issuer
    assert User.objects.filter(username__startswith="user-lob-b").count() == 1


def test_an_api_token_never_gives_back_platform_admin_taken_away(client: Client, cognito) -> None:
    # Cognito does not revoke tokens when a group changes: a token issued while the person was
    # an admin still names the group after a sign-in has taken admin away.
    old_token = cognito.access_token("admin")
    assert client.get(ME, **bearer(old_token)).json()["is_platform_admin"] is True
    admin = User.objects.get(username="admin")
    user_sync_from_identity(
        identity=Identity(subject=admin.idp_subject, username="admin", groups=()),
        channel="browser",
    )  # signed in after leaving the group

    response = client.get(ME, **bearer(old_token))

    assert response.status_code == 200 and response.json()["is_platform_admin"] is False
    assert not User.objects.get(pk=admin.pk).is_staff
    assert not AuditEvent.objects.filter(
        action="user.platform_admin_granted", target_id=str(admin.pk)
    ).exists()
    # ... while a browser sign-in in the group grants it again.
    user_sync_from_identity(
        identity=Identity(subject=admin.idp_subject, username="admin", groups=("portal-admins",)),
        channel="browser",
    )
    assert User.objects.get(pk=admin.pk).is_staff
