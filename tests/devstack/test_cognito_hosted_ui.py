"""The Cognito hosted-UI stand-in speaks the OIDC code flow (with PKCE) in front of a real moto."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
import requests
from moto.server import ThreadedMotoServer

from devstack.cognito_bootstrap import BootstrapResult, api_token, bootstrap, cognito_client
from devstack.cognito_hosted_ui import (
    SESSION_COOKIE_NAME,
    HostedUIStore,
    IssuedCode,
    MotoTokens,
    UserProfile,
    create_app,
)
from devstack.wsgi_thread import ThreadedServer, free_port, serve_in_thread

# Not the shared conftest stack's region: moto keeps one backend per region and process, so
# this module's pool cannot disturb the pool the portal tests use.
REGION = "eu-west-1"
CALLBACK = "http://127.0.0.1:9/oidc/callback/"
LOGGED_OUT = "http://127.0.0.1:9/signed-out/"
PASSWORD = "Gatehouse-demo-1"


# --- Fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """A moto server of its own for this module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def pool(moto_url: str) -> BootstrapResult:
    """The Gatehouse pool, clients and demo users."""
    return bootstrap(
        moto_url=moto_url, region=REGION, callback_urls=[CALLBACK], logout_urls=[LOGGED_OUT]
    )


@pytest.fixture(scope="module")
def hosted_ui(moto_url: str, pool: BootstrapResult) -> Iterator[ThreadedServer]:
    """The stand-in, served from a thread."""
    app = create_app(moto_url=moto_url, region=REGION, pool_id=pool.pool_id)
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture
def browser() -> Iterator[requests.Session]:
    """A cookie jar per test, like a fresh browser."""
    with requests.Session() as session:
        yield session


# --- Helpers -----------------------------------------------------------------------------------


class _InputCollector(HTMLParser):
    """Collects ``<input>`` names and values, and the page title."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, str] = {}
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "input" and found.get("name"):
            self.inputs[str(found["name"])] = found.get("value") or ""
        self._in_title = tag == "title"

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False


def parse_page(html: str) -> _InputCollector:
    """The inputs and title of an HTML page."""
    collector = _InputCollector()
    collector.feed(html)
    return collector


def pkce_pair() -> tuple[str, str]:
    """A PKCE verifier and its S256 challenge."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorize_params(pool: BootstrapResult, challenge: str, **overrides: str) -> dict[str, str]:
    """The parameters mozilla-django-oidc sends to /oauth2/authorize."""
    params = {
        "client_id": pool.web_client_id,
        "redirect_uri": CALLBACK,
        "response_type": "code",
        "scope": "openid email profile",
        "state": secrets.token_urlsafe(16),
        "nonce": secrets.token_urlsafe(16),
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return params


def open_form(
    browser: requests.Session, hosted_ui: ThreadedServer, params: dict[str, str]
) -> requests.Response:
    """GET /oauth2/authorize without following redirects."""
    return browser.get(
        f"{hosted_ui.url}/oauth2/authorize", params=params, allow_redirects=False, timeout=10
    )


def submit_form(
    browser: requests.Session,
    hosted_ui: ThreadedServer,
    form_page: str,
    username: str,
    password: str,
) -> requests.Response:
    """POST the sign-in form as a browser would: hidden fields plus credentials."""
    fields = parse_page(form_page).inputs
    fields.update({"username": username, "password": password})
    return browser.post(f"{hosted_ui.url}/login", data=fields, allow_redirects=False, timeout=10)


def location_query(response: requests.Response) -> dict[str, str]:
    """The query parameters of a redirect's Location."""
    assert response.status_code == 302, response.text
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    return {name: values[0] for name, values in query.items()}


def sign_in(
    browser: requests.Session,
    hosted_ui: ThreadedServer,
    pool: BootstrapResult,
    username: str,
) -> tuple[dict[str, str], dict[str, str], str]:
    """Run authorize + form; returns (authorize params, redirect query, code verifier)."""
    verifier, challenge = pkce_pair()
    params = authorize_params(pool, challenge)
    form = open_form(browser, hosted_ui, params)
    assert form.status_code == 200
    answer = submit_form(browser, hosted_ui, form.text, username, PASSWORD)
    return params, location_query(answer), verifier


def exchange(
    hosted_ui: ThreadedServer,
    pool: BootstrapResult,
    code: str,
    verifier: str | None,
    *,
    secret: str | None = None,
    basic: bool = False,
    redirect_uri: str = CALLBACK,
) -> requests.Response:
    """POST /oauth2/token for a code (client_secret_post by default, like mozilla-django-oidc)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    if verifier is not None:
        data["code_verifier"] = verifier
    client_secret = pool.web_client_secret if secret is None else secret
    auth = None
    if basic:
        auth = (pool.web_client_id, client_secret)
    else:
        data.update({"client_id": pool.web_client_id, "client_secret": client_secret})
    return requests.post(f"{hosted_ui.url}/oauth2/token", data=data, auth=auth, timeout=10)


def verify_id_token(hosted_ui: ThreadedServer, pool: BootstrapResult, token: str) -> dict:
    """Verify an ID token the way the portal does: JWKS, RS256, audience and issuer."""
    jwks = jwt.PyJWKClient(f"{hosted_ui.url}/{pool.pool_id}/.well-known/jwks.json")
    return jwt.decode(
        token,
        jwks.get_signing_key_from_jwt(token).key,
        algorithms=["RS256"],
        audience=pool.web_client_id,
        issuer=pool.issuer,
    )


# --- The code flow -----------------------------------------------------------------------------


def test_authorize_shows_a_self_contained_sign_in_form(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(pool, challenge)

    answer = open_form(browser, hosted_ui, params)

    assert answer.status_code == 200
    page = parse_page(answer.text)
    assert page.title == "Sign in — Gatehouse (local Cognito)"
    assert {"username", "password"} <= set(page.inputs)
    assert page.inputs["state"] == params["state"]
    assert page.inputs["code_challenge"] == challenge
    assert ">Sign in</button>" in answer.text
    assert "<script" not in answer.text and "<link" not in answer.text
    assert answer.headers["Cache-Control"] == "no-store"


def test_code_flow_with_pkce_gives_verifiable_tokens(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    params, query, verifier = sign_in(browser, hosted_ui, pool, "admin")
    assert query["state"] == params["state"]
    assert SESSION_COOKIE_NAME in browser.cookies

    answer = exchange(hosted_ui, pool, query["code"], verifier)

    assert answer.status_code == 200, answer.text
    assert answer.headers["Cache-Control"] == "no-store"
    tokens = answer.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] > 0
    assert tokens["refresh_token"]
    claims = verify_id_token(hosted_ui, pool, tokens["id_token"])
    admin = next(user for user in pool.users if user["username"] == "admin")
    assert claims["sub"] == admin["sub"]
    assert claims["nonce"] == params["nonce"]
    assert claims["email"] == "admin@gatehouse.example"
    assert claims["email_verified"] is True
    assert claims["name"] == "Ada Admin"
    assert claims["cognito:username"] == "admin"
    assert claims["cognito:groups"] == ["portal-admins"]
    assert claims["token_use"] == "id"
    assert claims["exp"] - claims["iat"] == 3600


def test_access_token_verifies_against_the_same_jwks(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, query, verifier = sign_in(browser, hosted_ui, pool, "admin")
    access_token = exchange(hosted_ui, pool, query["code"], verifier).json()["access_token"]

    jwks = jwt.PyJWKClient(f"{hosted_ui.url}/{pool.pool_id}/.well-known/jwks.json")
    claims = jwt.decode(
        access_token,
        jwks.get_signing_key_from_jwt(access_token).key,
        algorithms=["RS256"],
        issuer=pool.issuer,
    )

    assert claims["token_use"] == "access"
    assert claims["client_id"] == pool.web_client_id
    assert claims["username"] == "admin"


def test_user_without_groups_gets_no_groups_claim(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, query, verifier = sign_in(browser, hosted_ui, pool, "user-lob-a")

    # HTTP Basic client authentication works as well as the form fields.
    answer = exchange(hosted_ui, pool, query["code"], verifier, basic=True)

    assert answer.status_code == 200, answer.text
    claims = verify_id_token(hosted_ui, pool, answer.json()["id_token"])
    assert claims["email"] == "user-lob-a@gatehouse.example"
    assert claims["name"] == "Alice Analyst"
    assert "cognito:groups" not in claims


def test_wrong_password_shows_the_form_again_without_a_code(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, challenge = pkce_pair()
    form = open_form(browser, hosted_ui, authorize_params(pool, challenge))

    answer = submit_form(browser, hosted_ui, form.text, "admin", "not-the-password")

    assert answer.status_code == 400
    assert "Incorrect username or password." in answer.text
    assert "Location" not in answer.headers
    assert "password" in parse_page(answer.text).inputs


def test_unknown_user_gets_the_same_message(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, challenge = pkce_pair()
    form = open_form(browser, hosted_ui, authorize_params(pool, challenge))

    answer = submit_form(browser, hosted_ui, form.text, "nobody", PASSWORD)

    assert answer.status_code == 400
    assert "Incorrect username or password." in answer.text


def test_form_post_without_csrf_token_is_refused(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, challenge = pkce_pair()
    fields = {**authorize_params(pool, challenge), "username": "admin", "password": PASSWORD}

    answer = browser.post(f"{hosted_ui.url}/login", data=fields, allow_redirects=False, timeout=10)

    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(pool, challenge, redirect_uri="https://evil.example/callback")

    answer = open_form(browser, hosted_ui, params)

    assert answer.status_code == 400
    assert "Location" not in answer.headers
    assert answer.headers["Content-Type"].startswith("text/html")


def test_unknown_client_gets_an_error_page(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, challenge = pkce_pair()

    answer = open_form(browser, hosted_ui, authorize_params(pool, challenge, client_id="nope"))

    assert answer.status_code == 400
    assert "Location" not in answer.headers


@pytest.mark.parametrize(
    ("override", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": "email profile"}, "invalid_scope"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
    ],
)
def test_bad_authorize_parameters_go_back_as_errors(
    browser: requests.Session,
    hosted_ui: ThreadedServer,
    pool: BootstrapResult,
    override: dict[str, str],
    error: str,
) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(pool, challenge, **override)

    query = location_query(open_form(browser, hosted_ui, params))

    assert query["error"] == error
    assert query["error_description"]
    assert query["state"] == params["state"]


# --- Token endpoint ----------------------------------------------------------------------------


def test_wrong_code_verifier_is_refused(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, query, _ = sign_in(browser, hosted_ui, pool, "admin")
    other_verifier, _ = pkce_pair()

    answer = exchange(hosted_ui, pool, query["code"], other_verifier)

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_missing_code_verifier_is_refused(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, query, _ = sign_in(browser, hosted_ui, pool, "admin")

    answer = exchange(hosted_ui, pool, query["code"], None)

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


def test_code_is_single_use(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, query, verifier = sign_in(browser, hosted_ui, pool, "admin")
    assert exchange(hosted_ui, pool, query["code"], verifier).status_code == 200

    again = exchange(hosted_ui, pool, query["code"], verifier)

    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_redirect_uri_must_match_the_authorize_request(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, query, verifier = sign_in(browser, hosted_ui, pool, "admin")

    answer = exchange(hosted_ui, pool, query["code"], verifier, redirect_uri=LOGGED_OUT)

    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("basic", [False, True])
def test_wrong_client_secret_is_refused(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult, basic: bool
) -> None:
    _, query, verifier = sign_in(browser, hosted_ui, pool, "admin")

    answer = exchange(hosted_ui, pool, query["code"], verifier, secret="wrong", basic=basic)

    assert answer.status_code == 401
    assert answer.json()["error"] == "invalid_client"


def test_expired_code_is_not_redeemable() -> None:
    store = HostedUIStore()
    profile = UserProfile("admin", "sub-1", {"sub": "sub-1"}, (), enabled=True)
    code = store.issue_code(
        IssuedCode(
            client_id="client",
            redirect_uri=CALLBACK,
            nonce=None,
            code_challenge=None,
            tokens=MotoTokens("access", "refresh", 3600),
            profile=profile,
            auth_time=0,
            expires_at=time.time() - 1,
        )
    )

    assert store.redeem_code(code) is None


def test_refresh_token_grant_gives_new_tokens(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, query, verifier = sign_in(browser, hosted_ui, pool, "admin")
    first = exchange(hosted_ui, pool, query["code"], verifier).json()

    answer = requests.post(
        f"{hosted_ui.url}/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        auth=(pool.web_client_id, pool.web_client_secret),
        timeout=10,
    )

    assert answer.status_code == 200, answer.text
    tokens = answer.json()
    assert tokens["access_token"] != first["access_token"]
    assert "refresh_token" not in tokens
    claims = verify_id_token(hosted_ui, pool, tokens["id_token"])
    assert claims["cognito:username"] == "admin"
    assert "nonce" not in claims


# --- Sessions, prompt and logout ---------------------------------------------------------------


def test_live_session_skips_the_form(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    sign_in(browser, hosted_ui, pool, "user-lob-b")
    verifier, challenge = pkce_pair()
    params = authorize_params(pool, challenge)

    query = location_query(open_form(browser, hosted_ui, params))

    assert query["state"] == params["state"]
    answer = exchange(hosted_ui, pool, query["code"], verifier)
    assert answer.status_code == 200, answer.text
    claims = verify_id_token(hosted_ui, pool, answer.json()["id_token"])
    assert claims["cognito:username"] == "user-lob-b"
    assert claims["nonce"] == params["nonce"]


def test_group_changes_show_at_the_next_sign_in(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult, moto_url: str
) -> None:
    client = cognito_client(moto_url, REGION)
    client.create_group(UserPoolId=pool.pool_id, GroupName="lob-b-readers")
    client.admin_add_user_to_group(
        UserPoolId=pool.pool_id, Username="user-lob-b", GroupName="lob-b-readers"
    )

    _, query, verifier = sign_in(browser, hosted_ui, pool, "user-lob-b")

    answer = exchange(hosted_ui, pool, query["code"], verifier)
    claims = verify_id_token(hosted_ui, pool, answer.json()["id_token"])
    assert claims["cognito:groups"] == ["lob-b-readers"]


def test_prompt_login_shows_the_form_despite_a_session(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    sign_in(browser, hosted_ui, pool, "admin")
    _, challenge = pkce_pair()

    answer = open_form(browser, hosted_ui, authorize_params(pool, challenge, prompt="login"))

    assert answer.status_code == 200
    assert "password" in parse_page(answer.text).inputs


def test_prompt_none_without_session_is_login_required(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, challenge = pkce_pair()
    params = authorize_params(pool, challenge, prompt="none")

    query = location_query(open_form(browser, hosted_ui, params))

    assert query["error"] == "login_required"
    assert query["state"] == params["state"]
    assert "code" not in query


def test_prompt_none_with_session_issues_a_code(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    sign_in(browser, hosted_ui, pool, "admin")
    _, challenge = pkce_pair()

    query = location_query(
        open_form(browser, hosted_ui, authorize_params(pool, challenge, prompt="none"))
    )

    assert query["code"]
    assert "error" not in query


def test_logout_with_unregistered_logout_uri_is_refused(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    query = urlencode({"client_id": pool.web_client_id, "logout_uri": "https://evil.example/"})

    answer = browser.get(f"{hosted_ui.url}/logout?{query}", allow_redirects=False, timeout=10)

    assert answer.status_code == 400
    assert "Location" not in answer.headers


def test_logout_ends_the_session(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    sign_in(browser, hosted_ui, pool, "admin")
    query = urlencode({"client_id": pool.web_client_id, "logout_uri": LOGGED_OUT})

    answer = browser.get(f"{hosted_ui.url}/logout?{query}", allow_redirects=False, timeout=10)

    assert answer.status_code == 302
    assert answer.headers["Location"] == LOGGED_OUT
    _, challenge = pkce_pair()
    after = open_form(browser, hosted_ui, authorize_params(pool, challenge))
    assert after.status_code == 200
    assert "password" in parse_page(after.text).inputs


# --- userInfo, keys, discovery -----------------------------------------------------------------


def test_user_info_with_a_good_token(
    browser: requests.Session, hosted_ui: ThreadedServer, pool: BootstrapResult
) -> None:
    _, query, verifier = sign_in(browser, hosted_ui, pool, "user-lob-a")
    access_token = exchange(hosted_ui, pool, query["code"], verifier).json()["access_token"]

    answer = requests.get(
        f"{hosted_ui.url}/oauth2/userInfo",
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=10,
    )

    assert answer.status_code == 200, answer.text
    info = answer.json()
    user = next(user for user in pool.users if user["username"] == "user-lob-a")
    assert info["sub"] == user["sub"]
    assert info["username"] == "user-lob-a"
    assert info["email"] == "user-lob-a@gatehouse.example"
    assert info["email_verified"] == "true"
    assert info["name"] == "Alice Analyst"


@pytest.mark.parametrize("authorization", ["Bearer not-a-token", "", "Basic abc"])
def test_user_info_with_a_bad_token(hosted_ui: ThreadedServer, authorization: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    answer = requests.get(f"{hosted_ui.url}/oauth2/userInfo", headers=headers, timeout=10)

    assert answer.status_code == 401
    assert answer.json() == {"error": "invalid_token"}


def test_jwks_and_discovery(hosted_ui: ThreadedServer, pool: BootstrapResult) -> None:
    keys = requests.get(f"{hosted_ui.url}/{pool.pool_id}/.well-known/jwks.json", timeout=10).json()[
        "keys"
    ]
    discovery = requests.get(
        f"{hosted_ui.url}/{pool.pool_id}/.well-known/openid-configuration", timeout=10
    ).json()

    kids = {key["kid"] for key in keys}
    assert "dummy" in kids  # moto's key for access tokens
    assert len(kids) == 2
    assert discovery["issuer"] == pool.issuer
    assert discovery["authorization_endpoint"] == f"{hosted_ui.url}/oauth2/authorize"
    assert discovery["token_endpoint"] == f"{hosted_ui.url}/oauth2/token"
    assert discovery["jwks_uri"] == f"{hosted_ui.url}/{pool.pool_id}/.well-known/jwks.json"


def test_request_log_leaves_out_query_strings(
    hosted_ui: ThreadedServer, pool: BootstrapResult, caplog: pytest.LogCaptureFixture
) -> None:
    secret_value = "do-not-log-me"
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        requests.get(f"{hosted_ui.url}/logout?client_id={secret_value}", timeout=10)
        # The log line is written after the response; give the server thread a moment.
        deadline = time.time() + 2
        while "/logout" not in caplog.text and time.time() < deadline:
            time.sleep(0.02)

    assert "/logout" in caplog.text
    assert secret_value not in caplog.text


# --- Bootstrap ---------------------------------------------------------------------------------


def test_bootstrap_is_idempotent(moto_url: str, pool: BootstrapResult) -> None:
    again = bootstrap(
        moto_url=moto_url, region=REGION, callback_urls=[CALLBACK], logout_urls=[LOGGED_OUT]
    )

    assert again.pool_id == pool.pool_id
    assert again.web_client_id == pool.web_client_id
    assert again.web_client_secret == pool.web_client_secret
    assert again.api_client_id == pool.api_client_id
    assert [user["sub"] for user in again.users] == [user["sub"] for user in pool.users]
    assert again.issuer == f"https://cognito-idp.{REGION}.amazonaws.com/{pool.pool_id}"


def test_api_token_for_the_cli_client(moto_url: str, pool: BootstrapResult) -> None:
    result: dict[str, Any] = api_token(
        moto_url=moto_url,
        region=REGION,
        client_id=pool.api_client_id,
        username="user-lob-a",
        password=PASSWORD,
    )

    claims = jwt.decode(result["AccessToken"], options={"verify_signature": False})
    assert claims["client_id"] == pool.api_client_id
    assert claims["username"] == "user-lob-a"


def test_bootstrap_adds_urls_without_dropping_registered_ones(
    moto_url: str, pool: BootstrapResult, browser: requests.Session, hosted_ui: ThreadedServer
) -> None:
    other_callback = "http://127.0.0.1:10/oidc/callback/"
    bootstrap(
        moto_url=moto_url, region=REGION, callback_urls=[other_callback], logout_urls=[LOGGED_OUT]
    )
    _, challenge = pkce_pair()

    for callback in (CALLBACK, other_callback):
        params = authorize_params(pool, challenge, redirect_uri=callback)
        assert open_form(browser, hosted_ui, params).status_code == 200
