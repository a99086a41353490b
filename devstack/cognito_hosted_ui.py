"""A local stand-in for Amazon Cognito's hosted UI, in front of moto's cognito-idp emulation.

moto emulates the user-pool API (InitiateAuth, GetUser, ...) with real RS256 tokens but has no
hosted UI. This Flask app adds the OAuth 2.0 / OpenID Connect endpoints Cognito's hosted UI
offers (/oauth2/authorize, /login, /oauth2/token, /oauth2/userInfo, /logout, the JWKS and the
discovery document) with Cognito's wire behaviour, so the portal's real OIDC client code runs
unchanged on a laptop and in tests.

Passwords are checked by moto (InitiateAuth USER_PASSWORD_AUTH); access and refresh tokens are
moto's own. moto's ID token has neither ``email`` nor ``nonce``, so this app signs its own ID
tokens with a key generated at start-up and publishes it next to moto's key in one JWKS.

Run it with ``python -m devstack.cognito_hosted_ui --moto-url ... --pool-id ...``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import jwt
import requests
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify, redirect, render_template_string, request, session
from jwt.algorithms import RSAAlgorithm
from werkzeug.serving import make_server

from devstack.cognito_bootstrap import cognito_client, cognito_issuer, secret_hash
from devstack.wsgi_thread import PathOnlyRequestHandler

log = logging.getLogger(__name__)

SESSION_COOKIE_NAME = "gatehouse_hosted_ui"
CODE_TTL_SECONDS = 5 * 60
ID_TOKEN_TTL_SECONDS = 60 * 60
PAGE_TITLE = "Sign in — Gatehouse (local Cognito)"
WRONG_CREDENTIALS = "Incorrect username or password."
AUTHORIZE_FIELDS = (
    "client_id",
    "redirect_uri",
    "response_type",
    "scope",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "prompt",
)
# RFC 7636: a verifier (and an S256 challenge) is 43 to 128 unreserved characters.
PKCE_VALUE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
# Cognito puts these attributes in tokens as JSON booleans, the rest as strings.
BOOLEAN_ATTRIBUTES = frozenset({"email_verified", "phone_number_verified"})

PAGE_STYLE = """
body { font-family: system-ui, sans-serif; background: #f3f4f6; color: #111827; margin: 0; }
main { max-width: 22rem; margin: 4rem auto; background: #fff; padding: 2rem;
       border-radius: .5rem; box-shadow: 0 1px 3px rgba(0,0,0,.15); }
h1 { font-size: 1.4rem; margin-top: 0; }
label { display: block; margin-top: 1rem; font-weight: 600; }
input { width: 100%; box-sizing: border-box; padding: .5rem; margin-top: .25rem;
        border: 1px solid #9ca3af; border-radius: .25rem; font-size: 1rem; }
button { margin-top: 1.5rem; width: 100%; padding: .6rem; font-size: 1rem; color: #fff;
         background: #1d4ed8; border: 0; border-radius: .25rem; cursor: pointer; }
.error { color: #991b1b; background: #fee2e2; padding: .5rem; border-radius: .25rem; }
.note { color: #4b5563; font-size: .85rem; }
"""

SIGN_IN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
<body>
<main>
<h1>Sign in to Gatehouse</h1>
<p class="note">Local stand-in for the Amazon Cognito hosted UI.</p>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" action="/login">
{% for name, value in hidden %}<input type="hidden" name="{{ name }}" value="{{ value }}">
{% endfor %}
<label for="username">Username</label>
<input id="username" name="username" autocomplete="username" value="{{ username }}"
       required autofocus>
<label for="password">Password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
"""

ERROR_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Error — Gatehouse (local Cognito)</title>
<style>{{ style }}</style>
</head>
<body>
<main>
<h1>An error was encountered with the requested page.</h1>
<p class="error" role="alert">{{ message }}</p>
</main>
</body>
</html>
"""


# --- Keys and tokens -------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    """Base64url without padding, as JOSE uses it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of an RSA public JWK."""
    required = {"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}
    canonical = json.dumps(required, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


@dataclass(frozen=True)
class SigningKey:
    """The stand-in's RSA key for ID tokens, with its public JWK (kid = RFC 7638 thumbprint)."""

    private_key: rsa.RSAPrivateKey
    kid: str
    public_jwk: dict[str, str]

    @classmethod
    def generate(cls) -> SigningKey:
        """A fresh RSA-2048 key; a restart changes it, which is fine for short-lived ID tokens."""
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
        kid = jwk_thumbprint(public)
        jwk = {"kty": "RSA", "n": public["n"], "e": public["e"]}
        return cls(private_key, kid, {**jwk, "kid": kid, "alg": "RS256", "use": "sig"})

    def sign(self, claims: Mapping[str, Any]) -> str:
        """An RS256 JWT over ``claims`` with this key's kid in the header."""
        return jwt.encode(
            dict(claims), self.private_key, algorithm="RS256", headers={"kid": self.kid}
        )


def at_hash(access_token: str) -> str:
    """OIDC ``at_hash``: the left half of SHA-256 over the access token, base64url."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return _b64url(digest[: len(digest) // 2])


def pkce_s256(verifier: str) -> str:
    """The S256 code challenge of a PKCE code verifier."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


# --- What moto knows ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AppClient:
    """The parts of a Cognito app client the hosted UI acts on."""

    client_id: str
    secret: str | None
    callback_urls: tuple[str, ...]
    logout_urls: tuple[str, ...]
    scopes: frozenset[str]
    code_flow_enabled: bool

    @classmethod
    def from_description(cls, described: Mapping[str, Any]) -> AppClient:
        """Build from DescribeUserPoolClient's ``UserPoolClient``."""
        return cls(
            client_id=str(described["ClientId"]),
            secret=described.get("ClientSecret") or None,
            callback_urls=tuple(described.get("CallbackURLs") or ()),
            logout_urls=tuple(described.get("LogoutURLs") or ()),
            scopes=frozenset(described.get("AllowedOAuthScopes") or ()),
            code_flow_enabled=bool(described.get("AllowedOAuthFlowsUserPoolClient"))
            and "code" in (described.get("AllowedOAuthFlows") or ()),
        )

    def auth_parameters(self, username: str, **parameters: str) -> dict[str, str]:
        """InitiateAuth parameters, with SECRET_HASH added for a confidential client."""
        if self.secret:
            parameters["SECRET_HASH"] = secret_hash(self.secret, username, self.client_id)
        return parameters


@dataclass(frozen=True)
class UserProfile:
    """A user's attributes and groups, read from moto at sign-in."""

    username: str
    sub: str
    attributes: dict[str, str]
    groups: tuple[str, ...]
    enabled: bool


@dataclass(frozen=True)
class MotoTokens:
    """The access and refresh tokens moto issued for a sign-in."""

    access_token: str
    refresh_token: str
    expires_in: int


class SignInFailed(Exception):
    """moto refused a password sign-in; the message is safe to show on the form."""


class InvalidToken(Exception):
    """An access token that is not one of this pool's valid access tokens."""


class MotoCognito:
    """The calls the hosted UI makes to moto's cognito-idp API for one user pool."""

    def __init__(self, *, moto_url: str, region: str, pool_id: str) -> None:
        self.pool_id = pool_id
        self.issuer = cognito_issuer(region, pool_id)
        self.jwks_url = f"{moto_url.rstrip('/')}/{pool_id}/.well-known/jwks.json"
        self._client: BaseClient = cognito_client(moto_url, region)

    def app_client(self, client_id: str | None) -> AppClient | None:
        """The pool's app client with this id, or None when there is none."""
        if not client_id:
            return None
        try:
            described = self._client.describe_user_pool_client(
                UserPoolId=self.pool_id, ClientId=client_id
            )
        except ClientError as exc:
            if _error_code(exc) in {"ResourceNotFoundException", "InvalidParameterException"}:
                return None
            raise
        return AppClient.from_description(described["UserPoolClient"])

    def password_sign_in(self, client: AppClient, username: str, password: str) -> MotoTokens:
        """USER_PASSWORD_AUTH; raises SignInFailed with a message fit for the form."""
        parameters = client.auth_parameters(username, USERNAME=username, PASSWORD=password)
        try:
            answer = self._client.initiate_auth(
                ClientId=client.client_id, AuthFlow="USER_PASSWORD_AUTH", AuthParameters=parameters
            )
        except ClientError as exc:
            raise SignInFailed(_sign_in_message(exc)) from None
        result = answer.get("AuthenticationResult")
        if not result:
            # NEW_PASSWORD_REQUIRED or MFA: the demo users never need these.
            raise SignInFailed("This account needs a sign-in step the local page does not offer.")
        return MotoTokens(result["AccessToken"], result["RefreshToken"], int(result["ExpiresIn"]))

    def refresh(self, client: AppClient, username: str, refresh_token: str) -> MotoTokens | None:
        """REFRESH_TOKEN_AUTH; None when moto refuses the refresh token."""
        parameters = client.auth_parameters(username, REFRESH_TOKEN=refresh_token)
        try:
            answer = self._client.initiate_auth(
                ClientId=client.client_id, AuthFlow="REFRESH_TOKEN_AUTH", AuthParameters=parameters
            )
        except ClientError:
            return None
        result = answer["AuthenticationResult"]
        return MotoTokens(result["AccessToken"], refresh_token, int(result["ExpiresIn"]))

    def profile(self, username: str) -> UserProfile | None:
        """The user's current attributes and groups; None when the user no longer exists."""
        try:
            user = self._client.admin_get_user(UserPoolId=self.pool_id, Username=username)
        except ClientError as exc:
            if _error_code(exc) == "UserNotFoundException":
                return None
            raise
        attributes = {item["Name"]: item["Value"] for item in user["UserAttributes"]}
        return UserProfile(
            username=str(user["Username"]),
            sub=attributes["sub"],
            attributes=attributes,
            groups=self._groups(str(user["Username"])),
            enabled=bool(user.get("Enabled", True)),
        )

    def _groups(self, username: str) -> tuple[str, ...]:
        """Names of the groups the user belongs to."""
        paginator = self._client.get_paginator("admin_list_groups_for_user")
        pages = paginator.paginate(UserPoolId=self.pool_id, Username=username)
        return tuple(group["GroupName"] for page in pages for group in page["Groups"])

    def moto_keys(self) -> list[dict[str, Any]]:
        """The public keys moto signs access tokens with."""
        answer = requests.get(self.jwks_url, timeout=5)
        answer.raise_for_status()
        return list(answer.json()["keys"])

    def user_for_access_token(self, access_token: str) -> dict[str, str]:
        """The user's attributes (plus ``username``) for a valid access token of this pool."""
        self._verify_access_token(access_token)
        try:
            user = self._client.get_user(AccessToken=access_token)
        except ClientError:
            raise InvalidToken from None
        attributes = {item["Name"]: item["Value"] for item in user["UserAttributes"]}
        return {"username": str(user["Username"]), **attributes}

    def _verify_access_token(self, access_token: str) -> None:
        """Check signature, expiry, issuer and token_use; moto's GetUser checks none of these."""
        try:
            kid = jwt.get_unverified_header(access_token).get("kid")
            keys = {key.get("kid"): key for key in self.moto_keys()}
            if kid not in keys:
                raise InvalidToken
            claims = jwt.decode(
                access_token,
                jwt.PyJWK(keys[kid]).key,
                algorithms=["RS256"],
                issuer=self.issuer,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
            )
        except jwt.PyJWTError:
            raise InvalidToken from None
        if claims.get("token_use") != "access":
            raise InvalidToken


def _error_code(exc: ClientError) -> str:
    """The AWS error code of a botocore ClientError."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def _sign_in_message(exc: ClientError) -> str:
    """What the sign-in form says for a refused password sign-in (never which part was wrong)."""
    code = _error_code(exc)
    message = str(exc.response.get("Error", {}).get("Message", ""))
    if code == "NotAuthorizedException" and "disabled" in message.lower():
        return "User is disabled."
    if code == "UserNotConfirmedException":
        return "User is not confirmed."
    return WRONG_CREDENTIALS


# --- Server-side state -------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedCode:
    """What an authorization code stands for until it is redeemed (once) or expires."""

    client_id: str
    redirect_uri: str
    nonce: str | None
    code_challenge: str | None
    tokens: MotoTokens
    profile: UserProfile
    auth_time: int
    expires_at: float


@dataclass
class HostedSession:
    """A browser's hosted-UI sign-in: who, when, and a moto refresh token per app client."""

    username: str
    auth_time: int
    refresh_tokens: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RefreshGrant:
    """Whom a refresh token we handed out belongs to (moto needs the username for SECRET_HASH)."""

    client_id: str
    username: str
    auth_time: int


class HostedUIStore:
    """In-memory codes, hosted-UI sessions and refresh-token owners, safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[str, IssuedCode] = {}
        self._sessions: dict[str, HostedSession] = {}
        self._refresh_grants: dict[str, RefreshGrant] = {}

    def issue_code(self, issued: IssuedCode) -> str:
        """Store ``issued`` under a new random code and return the code."""
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._drop_expired_codes()
            self._codes[code] = issued
        return code

    def redeem_code(self, code: str) -> IssuedCode | None:
        """The code's record, removed so it cannot be used again; None if unknown or expired."""
        with self._lock:
            issued = self._codes.pop(code, None)
        if issued is None or issued.expires_at < time.time():
            return None
        return issued

    def _drop_expired_codes(self) -> None:
        """Forget codes nobody redeemed (called with the lock held)."""
        now = time.time()
        for code in [code for code, issued in self._codes.items() if issued.expires_at < now]:
            del self._codes[code]

    def start_session(self, username: str, auth_time: int) -> str:
        """A new hosted-UI session; returns its id (which goes into the signed cookie)."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = HostedSession(username, auth_time)
        return session_id

    def session(self, session_id: str | None) -> HostedSession | None:
        """The session with this id, if it still exists."""
        if not session_id:
            return None
        with self._lock:
            return self._sessions.get(session_id)

    def end_session(self, session_id: str | None) -> None:
        """Forget the session (sign-out, or its refresh token stopped working)."""
        if session_id:
            with self._lock:
                self._sessions.pop(session_id, None)

    def remember_refresh_token(
        self, session_id: str, client_id: str, refresh_token: str, username: str, auth_time: int
    ) -> None:
        """Keep the refresh token for session reuse and for the refresh_token grant."""
        with self._lock:
            hosted = self._sessions.get(session_id)
            if hosted is not None:
                hosted.refresh_tokens[client_id] = refresh_token
            self._refresh_grants[refresh_token] = RefreshGrant(client_id, username, auth_time)

    def refresh_grant(self, refresh_token: str) -> RefreshGrant | None:
        """Whom a refresh token handed out by this server belongs to."""
        with self._lock:
            return self._refresh_grants.get(refresh_token)


# --- Requests and responses --------------------------------------------------------------------


@dataclass(frozen=True)
class AuthorizeRequest:
    """A validated /oauth2/authorize (or /login) request."""

    client: AppClient
    redirect_uri: str
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: str
    carried: tuple[tuple[str, str], ...]


class ErrorPage(Exception):
    """An authorize or logout problem that must not redirect (unknown client or URL)."""


class RedirectError(Exception):
    """An authorize problem reported back to the (valid) redirect_uri."""

    def __init__(self, redirect_uri: str, state: str | None, error: str, description: str):
        super().__init__(error)
        self.redirect_uri = redirect_uri
        self.state = state
        self.error = error
        self.description = description


def with_query(url: str, params: Mapping[str, str | None]) -> str:
    """``url`` with ``params`` (None values left out) added to its query string."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [(name, value) for name, value in params.items() if value is not None]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _no_store(response: Response) -> Response:
    """Forbid caching: responses carry tokens, codes or a sign-in form."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _html(template: str, status: int, **context: Any) -> Response:
    """Render an HTML page (Flask autoescapes string templates) with defensive headers."""
    response = Response(
        render_template_string(template, style=PAGE_STYLE, **context),
        status=status,
        mimetype="text/html",
    )
    # No script, no external asset; never framed (clickjacking on a password form).
    response.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    # The page's own URL carries state and nonce: keep it out of Referer headers.
    response.headers["Referrer-Policy"] = "no-referrer"
    return _no_store(response)


def _oauth_error(error: str, status: int = 400, description: str | None = None) -> Response:
    """An RFC 6749 JSON error response."""
    body = {"error": error}
    if description:
        body["error_description"] = description
    response = jsonify(body)
    response.status_code = status
    return _no_store(response)


def _scope_error(client: AppClient, scope: str) -> str | None:
    """Why the requested scope is unacceptable, or None."""
    requested = set(scope.split())
    if "openid" not in requested:
        return "scope must include openid"
    if not requested <= client.scopes:
        return "scope includes a scope the client is not allowed"
    return None


def _pkce_error(challenge: str | None, method: str | None) -> str | None:
    """Why the PKCE parameters are unacceptable, or None (Cognito supports S256 only)."""
    if challenge is None:
        return "code_challenge_method without code_challenge" if method else None
    if method != "S256":
        return "code_challenge_method must be S256"
    if not PKCE_VALUE.match(challenge):
        return "malformed code_challenge"
    return None


def client_credentials(form: Mapping[str, str], authorization: str | None) -> tuple[str, str]:
    """(client_id, client_secret) from HTTP Basic or the form; empty strings when absent."""
    if authorization and authorization[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
        except ValueError:
            return "", ""
        client_id, _, client_secret = decoded.partition(":")
        # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
        return unquote(client_id.replace("+", " ")), unquote(client_secret.replace("+", " "))
    return form.get("client_id", ""), form.get("client_secret", "")


# --- The app -----------------------------------------------------------------------------------


class HostedUI:
    """The hosted-UI endpoints for one user pool; ``create_app`` wires them into Flask."""

    def __init__(self, moto: MotoCognito, store: HostedUIStore, key: SigningKey) -> None:
        self.moto = moto
        self.store = store
        self.key = key

    # Discovery and keys

    def jwks(self, pool_id: str) -> Response:
        """moto's access-token keys plus the stand-in's ID-token key, as one JWKS."""
        if pool_id != self.moto.pool_id:
            return _oauth_error("not_found", 404)
        try:
            keys = self.moto.moto_keys()
        except requests.RequestException:
            return _oauth_error("temporarily_unavailable", 502, "moto's JWKS is unreachable")
        return jsonify({"keys": [*keys, self.key.public_jwk]})

    def openid_configuration(self, pool_id: str) -> Response:
        """The OIDC discovery document: the AWS-style issuer, endpoints on this server."""
        if pool_id != self.moto.pool_id:
            return _oauth_error("not_found", 404)
        base = request.host_url.rstrip("/")
        return jsonify(
            {
                "issuer": self.moto.issuer,
                "authorization_endpoint": f"{base}/oauth2/authorize",
                "token_endpoint": f"{base}/oauth2/token",
                "userinfo_endpoint": f"{base}/oauth2/userInfo",
                "jwks_uri": f"{base}/{pool_id}/.well-known/jwks.json",
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "scopes_supported": ["openid", "email", "phone", "profile"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                ],
                "code_challenge_methods_supported": ["S256"],
            }
        )

    # Authorize and sign-in

    def parse_authorize(self, values: Mapping[str, str]) -> AuthorizeRequest:
        """Validate authorize parameters; raises ErrorPage or RedirectError."""
        client = self.moto.app_client(values.get("client_id"))
        if client is None:
            raise ErrorPage("Invalid client_id.")
        redirect_uri = values.get("redirect_uri", "")
        if redirect_uri not in client.callback_urls:
            raise ErrorPage("redirect_mismatch: redirect_uri is not registered for this client.")
        state = values.get("state")

        def refuse(error: str, description: str) -> RedirectError:
            return RedirectError(redirect_uri, state, error, description)

        if not client.code_flow_enabled:
            raise refuse("unauthorized_client", "the client may not use the code flow")
        if values.get("response_type") != "code":
            raise refuse("unsupported_response_type", "response_type must be code")
        scope_problem = _scope_error(client, values.get("scope", ""))
        if scope_problem:
            raise refuse("invalid_scope", scope_problem)
        challenge = values.get("code_challenge") or None
        pkce_problem = _pkce_error(challenge, values.get("code_challenge_method") or None)
        if pkce_problem:
            raise refuse("invalid_request", pkce_problem)
        carried = tuple((name, values[name]) for name in AUTHORIZE_FIELDS if values.get(name))
        return AuthorizeRequest(
            client=client,
            redirect_uri=redirect_uri,
            state=state,
            nonce=values.get("nonce") or None,
            code_challenge=challenge,
            prompt=values.get("prompt", ""),
            carried=carried,
        )

    def authorize(self) -> Response:
        """GET /oauth2/authorize and /login: reuse the hosted-UI session or show the form."""
        authorize_request = self.parse_authorize(request.args)
        if authorize_request.prompt != "login":
            reused = self._code_from_session(authorize_request)
            if reused is not None:
                return reused
        if authorize_request.prompt == "none":
            raise RedirectError(
                authorize_request.redirect_uri,
                authorize_request.state,
                "login_required",
                "the user is not signed in",
            )
        return self._sign_in_form(authorize_request, status=200)

    def sign_in(self) -> Response:
        """POST of the sign-in form: check the password with moto, start a session, redirect."""
        authorize_request = self.parse_authorize(request.form)
        if not self._csrf_ok(request.form.get("_csrf", "")):
            return self._sign_in_form(
                authorize_request, status=400, error="The sign-in page expired. Please try again."
            )
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        try:
            tokens = self.moto.password_sign_in(authorize_request.client, username, password)
        except SignInFailed as failure:
            return self._sign_in_form(
                authorize_request, status=400, error=str(failure), username=username
            )
        profile = self.moto.profile(username)
        if profile is None:
            return self._sign_in_form(authorize_request, status=400, error=WRONG_CREDENTIALS)
        auth_time = int(time.time())
        session_id = self._start_browser_session(profile.username, auth_time)
        self.store.remember_refresh_token(
            session_id,
            authorize_request.client.client_id,
            tokens.refresh_token,
            profile.username,
            auth_time,
        )
        return self._redirect_with_code(authorize_request, tokens, profile, auth_time)

    def _sign_in_form(
        self,
        authorize_request: AuthorizeRequest,
        *,
        status: int,
        error: str = "",
        username: str = "",
    ) -> Response:
        """The sign-in page, carrying the authorize parameters and a CSRF token."""
        hidden = [*authorize_request.carried, ("_csrf", self._csrf_token())]
        return _html(
            SIGN_IN_PAGE, status, title=PAGE_TITLE, hidden=hidden, error=error, username=username
        )

    def _csrf_token(self) -> str:
        """This browser's CSRF token for the sign-in form, created on first use."""
        if "csrf" not in session:
            session["csrf"] = secrets.token_urlsafe(24)
        return str(session["csrf"])

    def _csrf_ok(self, submitted: str) -> bool:
        """Whether the form came from a page this server rendered for this browser."""
        expected = session.get("csrf")
        return bool(expected) and hmac.compare_digest(str(expected), submitted)

    def _start_browser_session(self, username: str, auth_time: int) -> str:
        """Replace any previous hosted-UI session (a new id after sign-in stops fixation)."""
        self.store.end_session(session.get("sid"))
        session_id = self.store.start_session(username, auth_time)
        session.clear()
        session["sid"] = session_id
        session["pool"] = self.moto.pool_id
        return session_id

    def _current_session(self) -> tuple[str, HostedSession] | None:
        """The browser's hosted-UI session for this pool, if it has one."""
        if session.get("pool") != self.moto.pool_id:
            return None
        session_id = session.get("sid")
        hosted = self.store.session(session_id)
        return (session_id, hosted) if hosted is not None else None

    def _code_from_session(self, authorize_request: AuthorizeRequest) -> Response | None:
        """Issue a code without the form when the browser is signed in; None when it is not.

        moto can only mint tokens from a password or a refresh token, so a session is reusable
        for the clients it holds a refresh token for (the usual single-portal case).
        """
        current = self._current_session()
        if current is None:
            return None
        session_id, hosted = current
        client = authorize_request.client
        refresh_token = hosted.refresh_tokens.get(client.client_id)
        if refresh_token is None:
            return None
        tokens = self.moto.refresh(client, hosted.username, refresh_token)
        profile = self.moto.profile(hosted.username)
        if tokens is None or profile is None or not profile.enabled:
            self.store.end_session(session_id)
            session.clear()
            return None
        return self._redirect_with_code(authorize_request, tokens, profile, hosted.auth_time)

    def _redirect_with_code(
        self,
        authorize_request: AuthorizeRequest,
        tokens: MotoTokens,
        profile: UserProfile,
        auth_time: int,
    ) -> Response:
        """302 to the client's redirect_uri with a fresh single-use code and the state."""
        code = self.store.issue_code(
            IssuedCode(
                client_id=authorize_request.client.client_id,
                redirect_uri=authorize_request.redirect_uri,
                nonce=authorize_request.nonce,
                code_challenge=authorize_request.code_challenge,
                tokens=tokens,
                profile=profile,
                auth_time=auth_time,
                expires_at=time.time() + CODE_TTL_SECONDS,
            )
        )
        target = with_query(
            authorize_request.redirect_uri, {"code": code, "state": authorize_request.state}
        )
        return _no_store(redirect(target, code=302))

    # Token endpoint

    def token(self) -> Response:
        """POST /oauth2/token: authorization_code and refresh_token grants."""
        client = self._authenticated_client()
        if client is None:
            response = _oauth_error("invalid_client", 401)
            response.headers["WWW-Authenticate"] = 'Basic realm="oauth2/token"'
            return response
        grant_type = request.form.get("grant_type")
        if grant_type == "authorization_code":
            return self._exchange_code(client)
        if grant_type == "refresh_token":
            return self._refresh(client)
        return _oauth_error("unsupported_grant_type")

    def _authenticated_client(self) -> AppClient | None:
        """The calling client, if it authenticated (a secret is required iff it has one)."""
        client_id, client_secret = client_credentials(
            request.form, request.headers.get("Authorization")
        )
        client = self.moto.app_client(client_id)
        if client is None:
            return None
        if client.secret is None:
            return client if not client_secret else None
        return client if hmac.compare_digest(client.secret, client_secret) else None

    def _exchange_code(self, client: AppClient) -> Response:
        """Redeem a code: same client and redirect_uri, and the PKCE verifier must match."""
        code = request.form.get("code")
        if not code:
            return _oauth_error("invalid_request", description="code is required")
        issued = self.store.redeem_code(code)
        if issued is None or issued.client_id != client.client_id:
            return _oauth_error("invalid_grant")
        if request.form.get("redirect_uri") != issued.redirect_uri:
            return _oauth_error("invalid_grant", description="redirect_uri mismatch")
        if not _pkce_ok(issued.code_challenge, request.form.get("code_verifier")):
            return _oauth_error("invalid_grant", description="code_verifier mismatch")
        id_token = self._id_token(
            client.client_id, issued.profile, issued.auth_time, issued.nonce, issued.tokens
        )
        return _token_response(id_token, issued.tokens, include_refresh_token=True)

    def _refresh(self, client: AppClient) -> Response:
        """refresh_token grant; like Cognito, answers without a new refresh token."""
        refresh_token = request.form.get("refresh_token")
        if not refresh_token:
            return _oauth_error("invalid_request", description="refresh_token is required")
        grant = self.store.refresh_grant(refresh_token)
        if grant is None or grant.client_id != client.client_id:
            return _oauth_error("invalid_grant")
        tokens = self.moto.refresh(client, grant.username, refresh_token)
        profile = self.moto.profile(grant.username)
        if tokens is None or profile is None or not profile.enabled:
            return _oauth_error("invalid_grant")
        id_token = self._id_token(client.client_id, profile, grant.auth_time, None, tokens)
        return _token_response(id_token, tokens, include_refresh_token=False)

    def _id_token(
        self,
        client_id: str,
        profile: UserProfile,
        auth_time: int,
        nonce: str | None,
        tokens: MotoTokens,
    ) -> str:
        """Sign an ID token shaped like Cognito's."""
        claims = id_token_claims(
            issuer=self.moto.issuer,
            client_id=client_id,
            profile=profile,
            auth_time=auth_time,
            nonce=nonce,
            access_token=tokens.access_token,
            now=int(time.time()),
        )
        return self.key.sign(claims)

    # userInfo and logout

    def user_info(self) -> Response:
        """GET|POST /oauth2/userInfo: the user's attributes for a Bearer access token."""
        authorization = request.headers.get("Authorization", "")
        scheme, _, access_token = authorization.partition(" ")
        try:
            if scheme.lower() != "bearer" or not access_token.strip():
                raise InvalidToken
            attributes = self.moto.user_for_access_token(access_token.strip())
        except InvalidToken:
            response = _oauth_error("invalid_token", 401)
            response.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            return response
        return _no_store(jsonify(attributes))

    def logout(self) -> Response:
        """GET /logout: end the hosted-UI session and go back to a registered logout_uri."""
        client = self.moto.app_client(request.args.get("client_id"))
        if client is None:
            raise ErrorPage("Invalid client_id.")
        logout_uri = request.args.get("logout_uri", "")
        if logout_uri not in client.logout_urls:
            raise ErrorPage("logout_uri is not registered for this client.")
        self.store.end_session(session.get("sid"))
        session.clear()
        return _no_store(redirect(logout_uri, code=302))


def _pkce_ok(challenge: str | None, verifier: str | None) -> bool:
    """Whether the verifier answers the code's S256 challenge (no challenge: nothing to check)."""
    if challenge is None:
        return True
    if not verifier or not PKCE_VALUE.match(verifier):
        return False
    return hmac.compare_digest(pkce_s256(verifier), challenge)


def id_token_claims(
    *,
    issuer: str,
    client_id: str,
    profile: UserProfile,
    auth_time: int,
    nonce: str | None,
    access_token: str,
    now: int,
) -> dict[str, Any]:
    """Claims of a Cognito-style ID token (attributes as Cognito types them, groups if any)."""
    claims: dict[str, Any] = {
        name: (value == "true") if name in BOOLEAN_ATTRIBUTES else value
        for name, value in profile.attributes.items()
    }
    claims.update(
        {
            "sub": profile.sub,
            "aud": client_id,
            "iss": issuer,
            "token_use": "id",
            "auth_time": auth_time,
            "iat": now,
            "exp": now + ID_TOKEN_TTL_SECONDS,
            "jti": str(uuid.uuid4()),
            "at_hash": at_hash(access_token),
            "cognito:username": profile.username,
        }
    )
    if nonce:
        claims["nonce"] = nonce
    if profile.groups:
        claims["cognito:groups"] = list(profile.groups)
    return claims


def _token_response(id_token: str, tokens: MotoTokens, *, include_refresh_token: bool) -> Response:
    """The token endpoint's JSON answer."""
    body: dict[str, Any] = {
        "id_token": id_token,
        "access_token": tokens.access_token,
        "token_type": "Bearer",
        "expires_in": tokens.expires_in,
    }
    if include_refresh_token:
        body["refresh_token"] = tokens.refresh_token
    return _no_store(jsonify(body))


def _error_page_response(error: ErrorPage) -> Response:
    """400 HTML page for a request that cannot be redirected anywhere safely."""
    return _html(ERROR_PAGE, 400, message=str(error))


def _redirect_error_response(error: RedirectError) -> Response:
    """302 back to the client with ``error``, ``error_description`` and ``state``."""
    target = with_query(
        error.redirect_uri,
        {"error": error.error, "error_description": error.description, "state": error.state},
    )
    return _no_store(redirect(target, code=302))


def create_app(*, moto_url: str, region: str, pool_id: str) -> Flask:
    """The hosted-UI stand-in for ``pool_id`` in front of the moto server at ``moto_url``."""
    app = Flask(__name__)
    app.config.update(
        # A new secret per start: a restarted stand-in simply forgets who was signed in.
        SECRET_KEY=secrets.token_bytes(32),
        # Its own name: the portal also runs on 127.0.0.1, and cookies ignore ports.
        SESSION_COOKIE_NAME=SESSION_COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )
    hosted_ui = HostedUI(
        MotoCognito(moto_url=moto_url, region=region, pool_id=pool_id),
        HostedUIStore(),
        SigningKey.generate(),
    )
    app.extensions["hosted_ui"] = hosted_ui
    _add_routes(app, hosted_ui)
    app.register_error_handler(ErrorPage, _error_page_response)
    app.register_error_handler(RedirectError, _redirect_error_response)
    return app


def _add_routes(app: Flask, hosted_ui: HostedUI) -> None:
    """Mount the endpoints at Cognito's paths."""
    app.add_url_rule("/<pool_id>/.well-known/jwks.json", "jwks", hosted_ui.jwks, methods=["GET"])
    app.add_url_rule(
        "/<pool_id>/.well-known/openid-configuration",
        "openid_configuration",
        hosted_ui.openid_configuration,
        methods=["GET"],
    )
    for path in ("/oauth2/authorize", "/login"):
        app.add_url_rule(path, f"{path}:get", hosted_ui.authorize, methods=["GET"])
        app.add_url_rule(path, f"{path}:post", hosted_ui.sign_in, methods=["POST"])
    app.add_url_rule("/oauth2/token", "token", hosted_ui.token, methods=["POST"])
    app.add_url_rule("/oauth2/userInfo", "user_info", hosted_ui.user_info, methods=["GET", "POST"])
    app.add_url_rule("/logout", "logout", hosted_ui.logout, methods=["GET"])


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the stand-in (threaded werkzeug) until interrupted."""
    parser = argparse.ArgumentParser(description="Local stand-in for Cognito's hosted UI.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8110)
    parser.add_argument("--moto-url", required=True, help="e.g. http://127.0.0.1:5000")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--pool-id", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(moto_url=args.moto_url, region=args.region, pool_id=args.pool_id)
    # The path-only handler keeps codes, states and tokens in query strings out of the log.
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=PathOnlyRequestHandler
    )
    log.info(
        "Cognito hosted-UI stand-in for %s on http://%s:%s", args.pool_id, args.host, args.port
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
