"""Verifying Cognito-issued JWTs locally: ID tokens at sign-in, access tokens on every API call.

Keys come from the user pool's JWKS, cached in-process. A token signed with a key we do not know
triggers one refetch (key rotation), but never more often than JWKS_MIN_REFRESH_SECONDS, so forged
tokens cannot turn the portal into a JWKS-fetching loop. Only RS256 is accepted from Cognito.

:class:`JwksCache` also serves other issuers' key sets (the sellers' ES256/RS256 tokens): each cache
keeps only the keys of the algorithms it was built for.
"""

from __future__ import annotations

import hmac
import threading
import time
from typing import Any

import jwt
import requests
from django.conf import settings

ALGORITHM = "RS256"


class TokenError(Exception):
    """A token was refused; ``code`` is the machine-readable reason shown to API clients."""

    def __init__(self, message: str, code: str = "token_invalid") -> None:
        super().__init__(message)
        self.code = code


class IdentityProviderUnavailable(Exception):
    """The JWKS could not be fetched, so no token can be checked right now."""


class JwksCache:
    """The signing keys of ``algorithms`` published at one JWKS URL, with a rate-limited refresh.

    ``timeout`` is the (connect, read) timeout of the fetch; ``None`` reads ``OIDC_TIMEOUT``.
    """

    def __init__(
        self,
        url: str,
        *,
        algorithms: tuple[str, ...] = (ALGORITHM,),
        timeout: float | tuple[float, float] | None = None,
    ) -> None:
        self.url = url
        self.algorithms = tuple(algorithms)
        self.timeout = timeout
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """The key with this ``kid``; refetches once when unknown or stale."""
        now = time.monotonic()
        if now - self._fetched_at > settings.JWKS_CACHE_SECONDS:
            self._refresh()
        key = self._keys.get(kid)
        if key is None and now - self._fetched_at >= settings.JWKS_MIN_REFRESH_SECONDS:
            self._refresh()
            key = self._keys.get(kid)
        if key is None:
            raise TokenError("The token is signed with a key the portal does not know.")
        return key

    def _refresh(self) -> None:
        with self._lock:
            try:
                timeout = self.timeout if self.timeout is not None else settings.OIDC_TIMEOUT
                # No redirects: the key set is at its URL, and a redirect could point the portal
                # anywhere inside its network.
                response = requests.get(self.url, timeout=timeout, allow_redirects=False)
                response.raise_for_status()
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                key_set = jwt.PyJWKSet.from_dict(response.json())
            except (
                requests.RequestException,
                ValueError,
                RecursionError,
                jwt.PyJWKSetError,
            ) as exc:
                raise IdentityProviderUnavailable(
                    f"Could not load signing keys ({type(exc).__name__})."
                ) from exc
            self._keys = {
                key.key_id: key
                for key in key_set.keys
                if key.key_id and key.algorithm_name in self.algorithms
            }
            self._fetched_at = time.monotonic()


_caches: dict[tuple[str, tuple[str, ...]], JwksCache] = {}
_caches_lock = threading.Lock()


def jwks_cache(
    url: str,
    *,
    algorithms: tuple[str, ...] = (ALGORITHM,),
    timeout: float | tuple[float, float] | None = None,
) -> JwksCache:
    """The process-wide cache for one JWKS URL and set of algorithms (Cognito's RS256 by default).

    Settings are read at call time, not import. ``timeout`` applies when the cache is first made.
    """
    key = (url, tuple(algorithms))
    with _caches_lock:
        cache = _caches.get(key)
        if cache is None:
            cache = _caches[key] = JwksCache(url, algorithms=key[1], timeout=timeout)
        return cache


def _decode(token: str, *, jwks_url: str, audience: str | None) -> dict[str, Any]:
    if not isinstance(token, str) or token.count(".") != 2:
        raise TokenError("The token is not a JWT.")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.InvalidTokenError, RecursionError) as exc:  # a header PyJWT refuses, or too deep
        raise TokenError("The token is not a JWT.") from exc
    if header.get("alg") != ALGORITHM:
        raise TokenError(f"Only {ALGORITHM} tokens are accepted.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenError("The token names no signing key.")
    key = jwks_cache(jwks_url).signing_key(kid)
    try:
        return jwt.decode(
            token,
            key=key.key,
            algorithms=[ALGORITHM],
            audience=audience,
            issuer=settings.COGNITO_ISSUER,
            leeway=settings.TOKEN_LEEWAY_SECONDS,
            options={
                "require": ["exp", "iat", "iss", "sub", "token_use"],
                "verify_aud": audience is not None,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("The token has expired.", "token_expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenError("The token is not valid yet.", "token_not_yet_valid") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("The token was issued by another identity provider.") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("The token was issued for another application.") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"The token lacks the '{exc.claim}' claim.") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("The token's signature does not verify.") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError("The token is not valid.") from exc


def access_token_verify(token: str) -> dict[str, Any]:
    """Claims of a Cognito access token, or TokenError. Checks sig, iss, exp/nbf, use, client."""
    claims = _decode(token, jwks_url=settings.COGNITO_JWKS_URL, audience=None)
    if claims.get("token_use") != "access":
        raise TokenError("Only access tokens are accepted here.", "token_wrong_use")
    if claims.get("client_id") not in settings.API_ALLOWED_CLIENT_IDS:
        raise TokenError(
            "The token was issued to an app client not allowed here.", "client_not_allowed"
        )
    return claims


def id_token_verify(token: str, *, nonce: str | None) -> dict[str, Any]:
    """Claims of a Cognito ID token from the sign-in callback, or TokenError.

    Checks RS256 signature against the JWKS, ``iss``, ``aud`` = our client id, ``exp``, that it is
    an ID token, and the nonce we put in the authorization request.
    """
    claims = _decode(
        token, jwks_url=settings.OIDC_OP_JWKS_ENDPOINT, audience=settings.OIDC_RP_CLIENT_ID
    )
    if claims.get("token_use") != "id":
        raise TokenError("Only ID tokens are accepted at sign-in.", "token_wrong_use")
    if settings.OIDC_USE_NONCE:
        token_nonce = claims.get("nonce")
        if (
            not nonce
            or not isinstance(token_nonce, str)
            or not hmac.compare_digest(token_nonce, nonce)
        ):
            raise TokenError(
                "The sign-in response does not match this browser's request.", "nonce_mismatch"
            )
    return claims
