"""A local stand-in for the seller's token service (the partner-side "init" Lambda).

Before the buyer's proxy may call the model, it asks the seller to vouch for the subscription
(reference flow, steps 6–7): ``POST /auth/init`` with the product code, the buyer's AWS account
and the portal's subscription reference. The seller checks its own view of the Marketplace
entitlements and answers a short-lived ES256 JWT (``aud`` = product code, ``sub`` = buyer
account) that the portal's authorizer verifies against the JWKS published here.

Endpoints:

* ``POST /auth/init`` – a token, 403 ``not_entitled`` or 400 ``invalid_request``.
* ``GET /.well-known/jwks.json`` – every signing key ever used by this process.
* ``POST /_stand-in/rotate-key`` – sign with a new key from now on (old keys stay published).
* ``GET /_stand-in/entitlements``, ``PUT``/``DELETE /_stand-in/entitlements/{product}/{account}``.

Tokens appear in response bodies only, never in a log line.

Run it with ``python -m devstack.seller_token_service --port 8130 --entitle PRODUCT:ACCOUNT``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, Response, request
from jwt.algorithms import ECAlgorithm
from werkzeug.serving import make_server

from devstack.wsgi_thread import PathOnlyRequestHandler

log = logging.getLogger(__name__)

DEFAULT_PORT = 8130
DEFAULT_TOKEN_TTL_S = 15 * 60
ALGORITHM = "ES256"
ACCOUNT_ID = re.compile(r"[0-9]{12}")


# --- Keys --------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE uses it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ec_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of an EC public JWK."""
    required = {name: jwk[name] for name in ("crv", "kty", "x", "y")}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass(frozen=True)
class SigningKey:
    """A P-256 key and its public JWK (kid = RFC 7638 thumbprint)."""

    private_key: ec.EllipticCurvePrivateKey
    kid: str
    public_jwk: dict[str, str]

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh key; a restart changes it, which only invalidates tokens of <= 15 minutes."""
        private_key = ec.generate_private_key(ec.SECP256R1())
        public = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        jwk = {"kty": "EC", "crv": public["crv"], "x": public["x"], "y": public["y"]}
        kid = ec_thumbprint(jwk)
        return cls(private_key, kid, {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"})

    def sign(self, claims: Mapping[str, Any]) -> str:
        """An ES256 JWT over ``claims`` with this key's kid in the header."""
        return jwt.encode(
            dict(claims), self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid}
        )


class KeyRing:
    """The signing keys: the newest signs, all stay published so older tokens still verify."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = [SigningKey.generate()]

    @property
    def current(self) -> SigningKey:
        """The key new tokens are signed with."""
        with self._lock:
            return self._keys[-1]

    def rotate(self) -> SigningKey:
        """Add a new key and sign with it from now on; returns it."""
        key = SigningKey.generate()
        with self._lock:
            self._keys.append(key)
        return key

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK set of every key's public half."""
        with self._lock:
            return {"keys": [dict(key.public_jwk) for key in self._keys]}


# --- Entitlements ------------------------------------------------------------------------------


def utc_today() -> date:
    """Today's date in UTC: entitlement dates are UTC dates, like the portal's subscriptions."""
    return datetime.now(UTC).date()


class Entitlements:
    """The seller's view of Marketplace entitlements: (product, account) → last day or None."""

    def __init__(self, entries: Iterable[tuple[str, str, date | None]] = ()) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], date | None] = {}
        for product_code, account_id, expires_on in entries:
            self.grant(product_code, account_id, expires_on)

    def grant(self, product_code: str, account_id: str, expires_on: date | None) -> None:
        """Entitle ``account_id`` to ``product_code`` through ``expires_on`` (None: no end)."""
        if not product_code:
            raise ValueError("product code must not be empty")
        if not ACCOUNT_ID.fullmatch(account_id):
            raise ValueError("account id must be 12 digits")
        with self._lock:
            self._entries[(product_code, account_id)] = expires_on

    def revoke(self, product_code: str, account_id: str) -> bool:
        """Remove the entitlement; False when there was none."""
        with self._lock:
            return self._entries.pop((product_code, account_id), None) is not None

    def is_entitled(self, product_code: str, account_id: str, today: date) -> bool:
        """True when the entitlement exists and ``today`` is on or before its last day."""
        with self._lock:
            key = (product_code, account_id)
            if key not in self._entries:
                return False
            expires_on = self._entries[key]
        return expires_on is None or today <= expires_on

    def snapshot(self) -> list[dict[str, str | None]]:
        """Every entitlement, for inspection."""
        with self._lock:
            items = sorted(self._entries.items())
        return [
            {
                "product_code": product_code,
                "customer_account_id": account_id,
                "expires_on": expires_on.isoformat() if expires_on else None,
            }
            for (product_code, account_id), expires_on in items
        ]


# --- Requests ----------------------------------------------------------------------------------


class InvalidRequest(Exception):
    """A malformed request body; the message says what is wrong (never echoing a value)."""


@dataclass(frozen=True)
class InitRequest:
    """A validated ``POST /auth/init`` body."""

    product_code: str
    customer_account_id: str
    subscription_ref: str

    @classmethod
    def from_json(cls, document: object) -> InitRequest:
        """Validate the JSON body; raises InvalidRequest."""
        if not isinstance(document, dict):
            raise InvalidRequest("the body must be a JSON object")
        values = {}
        for name in ("product_code", "customer_account_id", "subscription_ref"):
            value = document.get(name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidRequest(f"{name} must be a non-empty string")
            values[name] = value.strip()
        if not ACCOUNT_ID.fullmatch(values["customer_account_id"]):
            raise InvalidRequest("customer_account_id must be a 12-digit AWS account id")
        return cls(**values)


def parse_expires_on(value: object) -> date | None:
    """``"YYYY-MM-DD"`` or null; raises InvalidRequest."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise InvalidRequest('expires_on must be "YYYY-MM-DD" or null')


def iso_utc(timestamp: int) -> str:
    """``2025-01-31T12:00:00Z`` for a POSIX timestamp."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- The app -----------------------------------------------------------------------------------


def _json(document: Any, status: int = 200) -> Response:
    response = Response(json.dumps(document), status=status, mimetype="application/json")
    return response


def _problem(status: int, error: str, message: str) -> Response:
    return _json({"error": error, "message": message}, status)


def create_app(
    *,
    issuer: str,
    entitlements: Iterable[tuple[str, str, date | None]] = (),
    token_ttl_s: int = DEFAULT_TOKEN_TTL_S,
) -> Flask:
    """The token service: tokens for entitled accounts, signed with its own ES256 keys."""
    if not issuer:
        raise ValueError("issuer must not be empty")
    if token_ttl_s <= 0:
        raise ValueError("token_ttl_s must be positive")
    app = Flask(__name__)
    keys = KeyRing()
    registry = Entitlements(entitlements)
    app.extensions["seller_token_service"] = {"keys": keys, "entitlements": registry}

    @app.post("/auth/init")
    def auth_init() -> Response:
        """Vouch for a subscription: a signed, expiring token, or why not."""
        try:
            init = InitRequest.from_json(request.get_json(force=True, silent=True))
        except InvalidRequest as exc:
            return _problem(400, "invalid_request", str(exc))
        if not registry.is_entitled(init.product_code, init.customer_account_id, utc_today()):
            return _problem(
                403,
                "not_entitled",
                "The account has no current entitlement to this product.",
            )
        now = int(time.time())
        expires = now + token_ttl_s
        token = keys.current.sign(
            {
                "iss": issuer,
                "aud": init.product_code,
                "sub": init.customer_account_id,
                "iat": now,
                "exp": expires,
                "jti": str(uuid.uuid4()),
                "subscription_ref": init.subscription_ref,
            }
        )
        response = _json(
            {
                "token": token,
                "token_type": "Bearer",
                "expires_at": iso_utc(expires),
                "expires_in": token_ttl_s,
            }
        )
        # A bearer token: no cache anywhere may keep it.
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    @app.get("/.well-known/jwks.json")
    def jwks() -> Response:
        """The public keys, current and retired, that tokens of this service are signed with."""
        return _json(keys.jwks())

    @app.post("/_stand-in/rotate-key")
    def rotate_key() -> Response:
        """Start signing with a new key (tests of the authorizer's JWKS refresh)."""
        return _json({"kid": keys.rotate().kid})

    @app.get("/_stand-in/entitlements")
    def list_entitlements() -> Response:
        """Every entitlement the seller knows of."""
        return _json({"entitlements": registry.snapshot()})

    @app.put("/_stand-in/entitlements/<product_code>/<account_id>")
    def put_entitlement(product_code: str, account_id: str) -> Response:
        """Entitle an account: JSON ``{"expires_on": "YYYY-MM-DD" | null}``."""
        document = request.get_json(force=True, silent=True)
        try:
            if not isinstance(document, dict):
                raise InvalidRequest('the body must be a JSON object {"expires_on": ...}')
            expires_on = parse_expires_on(document.get("expires_on"))
            registry.grant(product_code, account_id, expires_on)
        except (InvalidRequest, ValueError) as exc:
            return _problem(400, "invalid_request", str(exc))
        return _json(
            {
                "product_code": product_code,
                "customer_account_id": account_id,
                "expires_on": expires_on.isoformat() if expires_on else None,
            }
        )

    @app.delete("/_stand-in/entitlements/<product_code>/<account_id>")
    def delete_entitlement(product_code: str, account_id: str) -> Response:
        """Revoke an entitlement (idempotent)."""
        registry.revoke(product_code, account_id)
        return Response(status=204)

    return app


# --- Command line ------------------------------------------------------------------------------


def parse_entitlement(text: str) -> tuple[str, str, date | None]:
    """argparse type for ``PRODUCT:ACCOUNT[:YYYY-MM-DD]``."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise argparse.ArgumentTypeError(f"expected PRODUCT:ACCOUNT[:YYYY-MM-DD], got {text!r}")
    product_code, account_id = parts[0], parts[1]
    if not ACCOUNT_ID.fullmatch(account_id):
        raise argparse.ArgumentTypeError(f"account id must be 12 digits in {text!r}")
    expires_on = None
    if len(parts) == 3:
        try:
            expires_on = date.fromisoformat(parts[2])
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad date in {text!r}") from None
    return product_code, account_id, expires_on


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    parser = argparse.ArgumentParser(description="Local stand-in for the seller's token service.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--issuer", default=None, help="the iss claim (default: http://HOST:PORT)")
    parser.add_argument(
        "--entitle",
        type=parse_entitlement,
        action="append",
        default=[],
        metavar="PRODUCT:ACCOUNT[:YYYY-MM-DD]",
        help="entitle an account to a product, through the given UTC date (repeatable)",
    )
    parser.add_argument(
        "--token-ttl",
        type=int,
        default=DEFAULT_TOKEN_TTL_S,
        metavar="SECONDS",
        help="token lifetime (default 900)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the token service (threaded werkzeug) until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.token_ttl <= 0:
        parser.error("--token-ttl must be positive")
    issuer = args.issuer or f"http://{args.host}:{args.port}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(issuer=issuer, entitlements=args.entitle, token_ttl_s=args.token_ttl)
    # Path-only request log; tokens travel in bodies, which nothing here logs.
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=PathOnlyRequestHandler
    )
    for product_code, account_id, expires_on in args.entitle:
        log.info("entitled %s to %s through %s", account_id, product_code, expires_on or "-")
    log.info("seller token service on http://%s:%s (issuer %s)", args.host, args.port, issuer)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
