"""Seller tokens: asking the seller to vouch for a subscription, and checking what it signed.

``subscription_authorize`` is steps 1–2 of the proxy path: the portal checks the principal and the
subscription, then asks the seller's token service (``POST {url}/auth/init``, or its Lambda
function) for a short-lived token, which is cached until most of its life is spent.
``seller_token_verify`` is the authorizer of step 3: the token's signature against the seller's
published keys (cached), its issuer, audience, expiry, buyer account and subscription.

Tokens are secrets: they are never logged nor written to the audit trail.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import requests
from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

from accounts import tokens
from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from accounts.services.aws_verification import account_access
from portal import aws_gateway
from portal.errors import NotPermitted, ServiceError
from subscriptions.errors import SellerError, SellerUnavailable, TokenMismatch, TokenRejected
from subscriptions.models import Listing, Subscription
from subscriptions.services.access import invoke_permission_check

logger = logging.getLogger(__name__)

# The algorithms a seller may sign with; anything else (HS256, none...) is refused outright.
SELLER_ALGORITHMS = ("ES256", "RS256")
# The account is in the key: a LOB moved to another account must not reuse the old account's token.
_CACHE_KEY = "subscriptions:seller-token:{subscription_id}:{account_id}"
_SELLER_MESSAGE_MAX = 300


@dataclass(frozen=True)
class SellerToken:
    """A token the seller signed for one subscription, and when it stops being valid (UTC)."""

    token: str = field(repr=False)
    expires_at: datetime
    cached: bool = field(default=False, compare=False)  # from the cache, not the seller just now


def _cache_key(subscription: Subscription) -> str:
    return _CACHE_KEY.format(
        subscription_id=subscription.pk, account_id=subscription.lob.aws_account.account_id
    )


def seller_token_forget(*, subscription: Subscription) -> None:
    """Drop the cached seller token of a subscription (after it is changed or cancelled)."""
    try:
        cache.delete(_cache_key(subscription))
    except Exception:  # the cache is an optimisation: its outage must not block a change
        logger.warning("Could not drop the cached seller token of subscription %s", subscription.pk)


def subscription_authorize(
    *,
    subscription: Subscription,
    principal: User,
    request: HttpRequest | None = None,
    audit_reuse: bool = True,
) -> SellerToken:
    """A seller token for the subscription, for an analyst or admin of its LOB.

    Refusals: ``not_a_member``/``may_not_invoke`` and ``subscription_inactive`` (403) by the portal,
    ``not_entitled`` (403) by the seller; ``seller_unavailable`` (503) when the seller is down,
    slow or failing. Every request is audited, allowed or refused; the token never is.
    ``audit_reuse=False`` (a job reusing its token chunk after chunk) audits refusals and every
    token the seller issues, but not each reuse of a cached one: the chunk's invocation is audited.
    """
    lob = subscription.lob
    try:
        invoke_permission_check(principal=principal, subscription=subscription)
        seller_token = _cached_token(subscription)
        if seller_token is None:
            with _one_fetch_at_a_time(subscription):
                # Another caller may have fetched it while this one waited.
                seller_token = _cached_token(subscription)
                if seller_token is None:
                    seller_token = _seller_token_fetch(
                        subscription=subscription, principal=principal
                    )
                    _cache_token(subscription, seller_token)
    except ServiceError as exc:
        audit_record(
            action="subscription.authorized",
            outcome=(
                AuditEvent.Outcome.REFUSED if exc.status < 500 else AuditEvent.Outcome.FAILURE
            ),
            request=request,
            actor=principal,
            target_type="subscription",
            target_id=str(subscription.pk),
            lob_slug=lob.slug,
            reason=exc.code,
            detail={"product_code": subscription.listing.product_code, "message": str(exc)[:300]},
        )
        raise
    if seller_token.cached and not audit_reuse:
        return seller_token
    audit_record(
        action="subscription.authorized",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=principal,
        target_type="subscription",
        target_id=str(subscription.pk),
        lob_slug=lob.slug,
        detail={
            "product_code": subscription.listing.product_code,
            "expires_at": seller_token.expires_at.isoformat(),
            "cached": seller_token.cached,
        },
    )
    return seller_token


# --- The cache ------------------------------------------------------------------------------------


# How long callers wait for another caller's seller request before asking the seller themselves.
_FETCH_WAIT_SECONDS = 10.0
_FETCH_POLL_SECONDS = 0.05


@contextmanager
def _one_fetch_at_a_time(subscription: Subscription) -> Iterator[None]:
    """One seller request per subscription at a time, across processes (a lock in the cache).

    Many calls arriving together with no cached token (a job's workers starting, a burst of API
    calls) would each ask the seller and each get a token of their own. The lock's holder asks;
    the others wait until its token is in the cache, or until the lock's time is up (the holder
    died, or the seller is slow) and then ask for themselves. A cache outage locks nothing.
    """
    key = f"{_cache_key(subscription)}:fetching"
    deadline = time.monotonic() + _FETCH_WAIT_SECONDS
    held = False
    while True:
        try:
            held = cache.add(key, 1, timeout=int(_FETCH_WAIT_SECONDS) + 1)
        except Exception:
            break
        if held or time.monotonic() >= deadline or _cached_token(subscription) is not None:
            break
        time.sleep(_FETCH_POLL_SECONDS)
    try:
        yield
    finally:
        if held:
            try:
                cache.delete(key)
            except Exception:
                logger.warning("Could not release the seller request lock; it expires by itself")


def _cached_token(subscription: Subscription) -> SellerToken | None:
    try:
        value = cache.get(_cache_key(subscription))
    except Exception:  # a cache outage costs a seller call, not the request
        logger.warning("The token cache is unavailable; asking the seller")
        return None
    if not isinstance(value, dict):
        return None
    expires_at = datetime.fromisoformat(value["expires_at"])
    if expires_at <= timezone.now():
        return None
    return SellerToken(token=value["token"], expires_at=expires_at, cached=True)


def _cache_token(subscription: Subscription, seller_token: SellerToken) -> None:
    """Keep the token until ``SELLER_TOKEN_CACHE_FRACTION`` of its remaining life is spent."""
    life = (seller_token.expires_at - timezone.now()).total_seconds()
    timeout = int(life * settings.SELLER_TOKEN_CACHE_FRACTION)
    if timeout < 1:
        return
    try:
        cache.set(
            _cache_key(subscription),
            {"token": seller_token.token, "expires_at": seller_token.expires_at.isoformat()},
            timeout=timeout,
        )
    except Exception:
        logger.warning("The token cache is unavailable; the seller token is not cached")


# --- Asking the seller ----------------------------------------------------------------------------


def _init_request(subscription: Subscription) -> dict[str, str]:
    """The body of the seller's ``/auth/init`` (the same JSON is the Lambda's event)."""
    return {
        "product_code": subscription.listing.product_code,
        "customer_account_id": subscription.lob.aws_account.account_id,
        "subscription_ref": str(subscription.pk),
    }


def _seller_token_fetch(*, subscription: Subscription, principal: User) -> SellerToken:
    listing = subscription.listing
    payload = _init_request(subscription)
    if listing.token_service_url:
        status, body = _ask_over_https(listing.token_service_url, payload)
    elif listing.token_service_lambda_arn:
        status, body = _ask_lambda(subscription, principal, payload)
    else:
        raise SellerError(
            f"The listing {listing.product_code} names no token service.", code="seller_error"
        )
    return _token_from_answer(status, body, listing.seller_name)


def _ask_over_https(url: str, payload: dict[str, str]) -> tuple[int, Any]:
    """POST the request to ``{url}/auth/init``; (status, parsed JSON body or None)."""
    endpoint = f"{url.rstrip('/')}/auth/init"
    try:
        response = requests.post(
            endpoint,
            json=payload,
            timeout=(settings.SELLER_TOKEN_CONNECT_TIMEOUT, settings.SELLER_TOKEN_READ_TIMEOUT),
            headers={"Accept": "application/json"},
            allow_redirects=False,  # a redirect could point the portal anywhere inside its network
        )
    except requests.Timeout as exc:
        raise SellerUnavailable(
            "The seller's token service did not answer in time; try again shortly."
        ) from exc
    except requests.RequestException as exc:
        raise SellerUnavailable(
            f"The seller's token service cannot be reached ({type(exc).__name__})."
        ) from exc
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    return response.status_code, body


def _ask_lambda(
    subscription: Subscription, principal: User, payload: dict[str, str]
) -> tuple[int, Any]:
    """Invoke the seller's Lambda with the LOB account's role; (status, parsed body).

    The function may answer with the body itself (a 200), or API-Gateway style with
    ``statusCode`` and a JSON ``body``.
    """
    arn = subscription.listing.token_service_lambda_arn
    parts = arn.split(":")
    region = parts[3] if len(parts) > 4 and parts[3] else None
    try:
        function = aws_gateway.client(
            "lambda",
            access=account_access(subscription.lob.aws_account),
            session_name=aws_gateway.session_name_for(principal),
            region=region,
            read_timeout=settings.SELLER_TOKEN_READ_TIMEOUT,
        )
        with aws_gateway.aws_errors():
            answer = function.invoke(
                FunctionName=arn,
                InvocationType="RequestResponse",
                Payload=json.dumps(payload).encode(),
            )
            raw = answer["Payload"].read()
    except aws_gateway.AwsError as exc:
        raise SellerUnavailable(f"The seller's token function failed: {exc}") from exc
    if answer.get("FunctionError"):
        raise SellerUnavailable("The seller's token function raised an error.")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return 502, None
    if isinstance(body, dict) and "statusCode" in body:
        try:
            status = int(body.get("statusCode") or 502)
        except (TypeError, ValueError):
            return 502, None
        inner = body.get("body")
        try:
            body = json.loads(inner) if isinstance(inner, str | bytes) else inner
        except (ValueError, RecursionError):
            body = None
        return status, body
    if isinstance(body, dict) and body.get("error") == "not_entitled":
        return 403, body
    return 200, body


def _seller_message(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"][:_SELLER_MESSAGE_MAX]
    return ""


def _token_from_answer(status: int, body: Any, seller_name: str) -> SellerToken:
    if status == 403:
        message = _seller_message(body) or "no current entitlement to this product"
        raise NotPermitted(f"{seller_name} refused: {message}", code="not_entitled")
    if status >= 500 or status in (408, 429):
        raise SellerUnavailable(
            f"The seller's token service failed (HTTP {status}); try again shortly."
        )
    if status != 200:
        detail = _seller_message(body)
        raise SellerError(
            f"The seller's token service refused the request (HTTP {status})"
            f"{f': {detail}' if detail else ''}."
        )
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        raise SellerError("The seller's token service answered without a token.")
    try:
        expires_at = _expiry(body)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SellerError("The seller's token service answered without a valid expiry.") from exc
    signed_expiry = _signed_expiry(body["token"])
    if signed_expiry is not None and signed_expiry < expires_at:
        # The token's own exp is what the authorizer enforces: it is kept no longer than that.
        expires_at = signed_expiry
    return SellerToken(token=body["token"], expires_at=expires_at)


def _signed_expiry(token: str) -> datetime | None:
    """The token's ``exp``, read without checking its signature (only to bound how long it is
    cached; every call verifies it); None when it has none or is not a JWT."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
        return datetime.fromtimestamp(float(claims["exp"]), tz=UTC)
    except (jwt.InvalidTokenError, RecursionError, KeyError, TypeError, ValueError, OverflowError):
        return None


def _expiry(body: dict[str, Any]) -> datetime:
    """``expires_at`` (ISO-8601) as an aware UTC datetime, else now + ``expires_in`` seconds."""
    if body.get("expires_at"):
        value = str(body["expires_at"]).replace("Z", "+00:00")
        expires_at = datetime.fromisoformat(value)
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=UTC)
        return expires_at.astimezone(UTC)
    return timezone.now() + timedelta(seconds=float(body["expires_in"]))


# --- The authorizer -------------------------------------------------------------------------------


def seller_token_verify(*, token: str, subscription: Subscription) -> dict[str, Any]:
    """The claims of a seller token valid for this subscription, else the refusal.

    Checks: ES256/RS256 signature by a key published at the listing's JWKS URL (cached), ``iss`` =
    the listing's seller issuer, ``exp`` (``token_expired``), and then ``aud`` = the product code,
    ``sub`` = the LOB's account and ``subscription_ref`` = this subscription
    (``token_subscription_mismatch``, 403). Anything else wrong is ``token_invalid`` (401); the
    seller's keys being unreachable is ``seller_unavailable`` (503).

    A token whose signature verified is remembered until it expires (:data:`verified_tokens`), so
    the calls it makes skip the signature check; the claims are compared with the subscription on
    every call.
    """
    listing = subscription.listing
    if not token or not isinstance(token, str):
        raise TokenRejected("Send the subscription token in X-Subscription-Token.")
    cache_key = (token, listing.seller_issuer, listing.seller_jwks_url)
    claims = verified_tokens.get(cache_key)
    if claims is None:
        claims = _signature_verify(token, listing)
        verified_tokens.put(cache_key, claims, expires_at=float(claims["exp"]))
    _claims_match(claims, subscription)
    return claims


class VerifiedTokens:
    """Claims of seller tokens whose signature and issuer verified, kept until their ``exp``.

    Process-wide and bounded (least recently used out first). Verifying an ES256 signature costs
    more than the rest of the authorizer together, and a token is typically sent thousands of
    times (a job's chunks, a client's calls) in its 15 minutes. Only what the seller signed is
    kept: whether it fits the subscription is decided on each call. A key the seller withdraws
    from its JWKS stops new tokens at once; tokens already seen stay valid until they expire, as
    they would for any verifier that caches the JWKS.
    """

    def __init__(self, size: int = 4096) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str, str], tuple[dict[str, Any], float]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            claims, expires_at = entry
            if time.time() >= expires_at:
                # From here on the full check decides (leeway, token_expired).
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return claims

    def put(self, key: tuple[str, str, str], claims: dict[str, Any], *, expires_at: float) -> None:
        with self._lock:
            self._entries[key] = (claims, expires_at)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


verified_tokens = VerifiedTokens()


def _signature_verify(token: str, listing: Listing) -> dict[str, Any]:
    """The claims of a token signed by a key of the listing's seller and issued by it."""
    if token.count(".") != 2:
        raise TokenRejected("The subscription token is not a JWT.")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.InvalidTokenError, RecursionError) as exc:  # a header PyJWT refuses, or too deep
        raise TokenRejected("The subscription token is not a JWT.") from exc
    algorithm = header.get("alg")
    if algorithm not in SELLER_ALGORITHMS:
        raise TokenRejected(f"Only {' and '.join(SELLER_ALGORITHMS)} seller tokens are accepted.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("The subscription token names no signing key.")
    try:
        key = tokens.jwks_cache(
            listing.seller_jwks_url,
            algorithms=SELLER_ALGORITHMS,
            timeout=(settings.SELLER_TOKEN_CONNECT_TIMEOUT, settings.SELLER_TOKEN_READ_TIMEOUT),
        ).signing_key(kid)
    except tokens.TokenError as exc:
        raise TokenRejected("The subscription token is signed with an unknown key.") from exc
    except tokens.IdentityProviderUnavailable as exc:
        raise SellerUnavailable(
            "The seller's signing keys cannot be fetched; try again shortly."
        ) from exc
    if key.algorithm_name != algorithm:
        raise TokenRejected("The subscription token's algorithm does not match its key.")
    try:
        return jwt.decode(
            token,
            key=key.key,
            algorithms=[algorithm],
            issuer=listing.seller_issuer,
            leeway=settings.SELLER_TOKEN_LEEWAY_SECONDS,
            options={
                "require": ["exp", "iss", "aud", "sub", "subscription_ref"],
                # The audience is compared in _claims_match, so a token for another product is a
                # mismatch (403), not an invalid token.
                "verify_aud": False,
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected(
            "The subscription token has expired; authorize again.", code="token_expired"
        ) from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenRejected("The subscription token was issued by someone else.") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRejected(f"The subscription token lacks the '{exc.claim}' claim.") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenRejected("The subscription token's signature does not verify.") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRejected("The subscription token is not valid.") from exc


def _claims_match(claims: dict[str, Any], subscription: Subscription) -> None:
    """TokenMismatch unless the token names this product, LOB account and subscription."""
    audience = claims["aud"]
    audiences = audience if isinstance(audience, list) else [audience]
    if subscription.listing.product_code not in audiences:
        raise TokenMismatch("The subscription token is for another product.")
    if str(claims["sub"]) != subscription.lob.aws_account.account_id:
        raise TokenMismatch("The subscription token is for another AWS account.")
    if str(claims["subscription_ref"]) != str(subscription.pk):
        raise TokenMismatch("The subscription token is for another subscription.")
