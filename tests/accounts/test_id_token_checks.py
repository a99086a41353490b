"""The ID token at the sign-in callback is checked in full: signature, iss, aud, exp, use, nonce."""

from __future__ import annotations

import time

import pytest

from accounts.oidc import CognitoOIDCBackend, SignInError


@pytest.fixture
def id_token(cognito, forge_token):
    def make(**overrides) -> str:
        claims = {
            "token_use": "id",
            "aud": cognito.pool.web_client_id,
            "client_id": None,
            "nonce": "the-nonce",
            "cognito:username": "user-lob-a",
        }
        claims.update(overrides)
        return forge_token(**claims)

    return make


def verify(token: str, nonce: str = "the-nonce") -> dict:
    return CognitoOIDCBackend().verify_token(token, nonce=nonce)


def test_valid_id_token_passes(id_token, cognito) -> None:
    claims = verify(id_token())
    assert claims["sub"] == cognito.sub("user-lob-a")


@pytest.mark.parametrize(
    ("overrides", "nonce", "code"),
    [
        ({"aud": "another-client"}, "the-nonce", "token_invalid"),
        ({"iss": "https://evil.example/"}, "the-nonce", "token_invalid"),
        (
            {"exp": int(time.time()) - 600, "iat": int(time.time()) - 4000},
            "the-nonce",
            "token_expired",
        ),
        ({"token_use": "access"}, "the-nonce", "token_wrong_use"),
        ({}, "another-nonce", "nonce_mismatch"),
        ({"nonce": None}, "the-nonce", "nonce_mismatch"),
    ],
)
def test_bad_id_tokens_are_refused(id_token, overrides, nonce, code) -> None:
    with pytest.raises(SignInError) as refused:
        verify(id_token(**overrides), nonce=nonce)
    assert refused.value.code == code


def test_tampered_id_token_is_refused(id_token) -> None:
    header, payload, signature = id_token().split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    with pytest.raises(SignInError) as refused:
        verify(f"{header}.{payload}.{flipped}")
    assert refused.value.code == "token_invalid"


def test_missing_id_token_is_refused(cognito) -> None:
    with pytest.raises(SignInError) as refused:
        verify("")
    assert refused.value.code == "no_id_token"
