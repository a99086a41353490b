"""Browser sign-in through the Cognito hosted UI (stand-in) with mozilla-django-oidc."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import boto3
import pytest
import requests
from django.test import Client

from accounts.models import AuditEvent, User
from accounts.views import SIGNED_IN_AT_KEY
from tests.browser_flow import hosted_ui_sign_in, portal_sign_in

pytestmark = pytest.mark.django_db


def cognito_idp(cognito):
    return boto3.client(
        "cognito-idp",
        region_name="us-east-1",
        endpoint_url=cognito.moto_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_sign_in_creates_user_from_verified_claims(client: Client, cognito) -> None:
    response = portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"))

    assert response.status_code == 302
    assert response["Location"] == "/"
    user = User.objects.get(username="user-lob-a")
    assert user.idp_subject == cognito.sub("user-lob-a")
    assert user.idp_issuer == cognito.pool.issuer
    assert user.email == "user-lob-a@gatehouse.example"
    assert user.display_name == "Alice Analyst"
    assert not user.is_staff
    assert not user.has_usable_password()
    dashboard = client.get("/")
    assert dashboard.status_code == 200
    assert "Alice Analyst" in dashboard.content.decode()
    event = AuditEvent.objects.get(action="auth.sign_in")
    assert (event.outcome, event.actor, event.client_ip) == ("success", user, "127.0.0.1")


def test_sign_in_request_uses_pkce_state_and_nonce(client: Client, cognito) -> None:
    query = parse_qs(urlparse(client.get("/oidc/authenticate/")["Location"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["code_challenge"][0]
    assert query["state"][0] and query["nonce"][0]
    assert query["client_id"] == [cognito.pool.web_client_id]
    assert "openid" in query["scope"][0].split()


def test_admin_group_makes_platform_admin_until_removed(client: Client, cognito) -> None:
    idp = cognito_idp(cognito)
    portal_sign_in(client, "admin", cognito.password("admin"))
    admin = User.objects.get(username="admin")
    assert admin.is_staff and not admin.is_superuser
    assert client.get("/admin/").status_code == 200

    idp.admin_remove_user_from_group(
        UserPoolId=cognito.pool.pool_id, Username="admin", GroupName="portal-admins"
    )
    try:
        client.post("/logout/")
        portal_sign_in(Client(), "admin", cognito.password("admin"))
    finally:
        idp.admin_add_user_to_group(
            UserPoolId=cognito.pool.pool_id, Username="admin", GroupName="portal-admins"
        )
    admin.refresh_from_db()
    assert not admin.is_staff
    assert AuditEvent.objects.filter(action="user.platform_admin_revoked", actor=admin).exists()


def test_non_admin_cannot_open_django_admin(client: Client, cognito) -> None:
    portal_sign_in(client, "user-lob-b", cognito.password("user-lob-b"))
    response = client.get("/admin/")
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_email_and_name_are_refreshed_at_each_sign_in(client: Client, cognito) -> None:
    idp = cognito_idp(cognito)
    portal_sign_in(client, "user-lob-b", cognito.password("user-lob-b"))
    idp.admin_update_user_attributes(
        UserPoolId=cognito.pool.pool_id,
        Username="user-lob-b",
        UserAttributes=[{"Name": "email", "Value": "bob.new@gatehouse.example"}],
    )
    try:
        portal_sign_in(Client(), "user-lob-b", cognito.password("user-lob-b"))
    finally:
        idp.admin_update_user_attributes(
            UserPoolId=cognito.pool.pool_id,
            Username="user-lob-b",
            UserAttributes=[{"Name": "email", "Value": "user-lob-b@gatehouse.example"}],
        )
    assert User.objects.filter(idp_subject=cognito.sub("user-lob-b")).count() == 1
    assert User.objects.get(idp_subject=cognito.sub("user-lob-b")).email == (
        "bob.new@gatehouse.example"
    )


def test_users_are_matched_by_subject_never_by_email(client: Client, cognito) -> None:
    squatter = User.objects.create(
        username="squatter",
        email="user-lob-a@gatehouse.example",
        idp_issuer=cognito.pool.issuer,
        idp_subject="someone-else",
        is_staff=True,
    )
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"))

    signed_in = User.objects.get(idp_subject=cognito.sub("user-lob-a"))
    assert signed_in.pk != squatter.pk
    assert not signed_in.is_staff


def test_callback_with_unknown_state_shows_error_page(client: Client, cognito) -> None:
    client.get("/oidc/authenticate/")  # a real sign-in is pending in this session

    response = client.get("/oidc/callback/?code=abc&state=not-the-state")

    assert response.status_code == 400
    assert "Sign-in failed" in response.content.decode()
    event = AuditEvent.objects.get(action="auth.sign_in")
    assert (event.outcome, event.reason) == ("failure", "state_mismatch")


def test_callback_without_any_pending_sign_in_shows_error_page(client: Client, cognito) -> None:
    response = client.get("/oidc/callback/?code=abc&state=xyz")
    assert response.status_code == 400
    assert "state_mismatch" in response.content.decode()


def test_provider_error_shows_error_page(client: Client, cognito) -> None:
    started = client.get("/oidc/authenticate/")
    state = parse_qs(urlparse(started["Location"]).query)["state"][0]

    response = client.get(f"/oidc/callback/?error=access_denied&error_description=no&state={state}")

    assert response.status_code == 400
    assert "refused the sign-in" in response.content.decode()
    assert AuditEvent.objects.get(action="auth.sign_in").reason == "provider_error"


def test_replayed_code_is_refused(client: Client, cognito) -> None:
    started = client.get("/oidc/authenticate/")
    back = hosted_ui_sign_in(started["Location"], "user-lob-a", cognito.password("user-lob-a"))
    callback = urlparse(back.headers["Location"])
    assert client.get(f"{callback.path}?{callback.query}").status_code == 302

    replay = Client().get(f"{callback.path}?{callback.query}")

    assert replay.status_code == 400
    assert User.objects.filter(username="user-lob-a").count() == 1


def test_code_is_useless_without_the_pkce_verifier(client: Client, cognito) -> None:
    """A stolen code cannot be redeemed by someone who lacks the session's verifier."""
    started = client.get("/oidc/authenticate/")
    back = hosted_ui_sign_in(started["Location"], "user-lob-a", cognito.password("user-lob-a"))
    code = parse_qs(urlparse(back.headers["Location"]).query)["code"][0]

    stolen = requests.post(
        f"{cognito.domain}/oauth2/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://testserver/oidc/callback/",
            "client_id": cognito.pool.web_client_id,
            "client_secret": cognito.pool.web_client_secret,
        },
        timeout=10,
    )
    assert stolen.status_code == 400


def test_identity_provider_unreachable_shows_error_page(client: Client, cognito, settings) -> None:
    started = client.get("/oidc/authenticate/")
    back = hosted_ui_sign_in(started["Location"], "user-lob-a", cognito.password("user-lob-a"))
    callback = urlparse(back.headers["Location"])
    settings.OIDC_OP_TOKEN_ENDPOINT = "http://127.0.0.1:9/oauth2/token"

    response = client.get(f"{callback.path}?{callback.query}")

    assert response.status_code == 503
    assert "could not be reached" in response.content.decode()


def test_sign_out_is_post_only_and_ends_both_sessions(client: Client, cognito) -> None:
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"))
    assert client.get("/logout/").status_code == 405

    response = client.post("/logout/")

    assert response.status_code == 302
    logout = urlparse(response["Location"])
    assert f"{logout.scheme}://{logout.netloc}{logout.path}" == f"{cognito.domain}/logout"
    assert parse_qs(logout.query) == {
        "client_id": [cognito.pool.web_client_id],
        "logout_uri": ["http://testserver/signed-out/"],
    }
    assert client.get("/").status_code == 302  # the portal session is gone
    assert AuditEvent.objects.filter(action="auth.sign_out", outcome="success").count() == 1


def test_cognito_logout_ends_the_hosted_ui_session(client: Client, cognito) -> None:
    browser = requests.Session()
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"), browser=browser)
    # With the hosted-UI session alive, a new sign-in goes straight back with a code.
    again = browser.get(client.get("/oidc/authenticate/")["Location"], allow_redirects=False)
    assert again.status_code == 302

    logout_url = client.post("/logout/")["Location"]
    assert browser.get(logout_url, allow_redirects=False).status_code == 302

    form_again = browser.get(client.get("/oidc/authenticate/")["Location"], allow_redirects=False)
    assert form_again.status_code == 200
    assert 'name="password"' in form_again.text


def test_pages_require_sign_in(client: Client, cognito) -> None:
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/"
    login = client.get("/login/?next=/")
    assert "Sign in with Cognito" in login.content.decode()


def test_login_page_ignores_offsite_next(client: Client, cognito) -> None:
    login = client.get("/login/?next=https://evil.example/")
    assert "evil.example" not in login.content.decode()


def test_sign_in_not_configured_says_so(client: Client, settings) -> None:
    settings.OIDC_RP_CLIENT_ID = ""
    settings.COGNITO_USER_POOL_ID = ""
    assert "not configured" in client.get("/login/").content.decode()
    assert client.get("/oidc/authenticate/").status_code == 503


def test_deactivated_user_cannot_sign_in(client: Client, cognito) -> None:
    portal_sign_in(client, "user-lob-b", cognito.password("user-lob-b"))
    User.objects.filter(username="user-lob-b").update(is_active=False)
    assert client.get("/").status_code == 302  # the live session ends too

    response = portal_sign_in(Client(), "user-lob-b", cognito.password("user-lob-b"))

    assert response.status_code == 400
    assert AuditEvent.objects.filter(action="auth.sign_in", reason="inactive").exists()


def test_the_signed_out_page_signs_nobody_out(client: Client, cognito) -> None:
    # Any site can make a browser GET this page (SameSite=Lax sends the cookie on a top-level
    # GET): only the POST sign-out ends a session.
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"))

    landed = client.get("/signed-out/")

    assert (landed.status_code, landed["Location"]) == (302, "/")
    assert client.get("/").status_code == 200  # still signed in
    client.post("/logout/")
    assert "signed out" in client.get("/signed-out/").content.decode().lower()


# --- The session checked with Cognito again (SessionRefresh, prompt=none) ------------------------


def _renewal_due(client: Client) -> None:
    session = client.session
    session["oidc_id_token_expiration"] = 0
    session.save()


def test_a_due_session_is_renewed_silently_while_cognito_still_knows_the_user(
    client: Client, cognito
) -> None:
    browser = requests.Session()
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"), browser=browser)
    _renewal_due(client)

    check = client.get("/lobs/")
    assert check.status_code == 302
    asked = urlparse(check["Location"])
    assert asked.path.endswith("/oauth2/authorize")
    assert parse_qs(asked.query)["prompt"] == ["none"]
    back = browser.get(check["Location"], allow_redirects=False)  # the hosted-UI session is alive
    callback = urlparse(back.headers["Location"])
    landed = client.get(f"{callback.path}?{callback.query}")

    assert (landed.status_code, landed["Location"]) == (302, "/lobs/")
    assert client.get("/lobs/").status_code == 200
    assert client.session["oidc_id_token_expiration"] > 0


def _renew(client: Client, browser: requests.Session) -> None:
    """A due session checked with Cognito (prompt=none) while its hosted-UI session lives."""
    _renewal_due(client)
    check = client.get("/lobs/")
    back = browser.get(check["Location"], allow_redirects=False)
    callback = urlparse(back.headers["Location"])
    client.get(f"{callback.path}?{callback.query}")


def test_a_session_ends_its_age_after_the_sign_in_however_often_it_is_renewed(
    client: Client, cognito, settings
) -> None:
    browser = requests.Session()
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"), browser=browser)
    assert settings.SESSION_COOKIE_AGE - 60 < client.session.get_expiry_age() <= 8 * 3600
    end = client.session.get_expiry_date()

    # Pages and the renewal save the session; its end stays where the sign-in put it.
    assert client.get("/lobs/").status_code == 200
    _renew(client, browser)
    assert client.get("/lobs/").status_code == 200
    assert client.session.get_expiry_date() == end

    # Seven hours on: a renewal leaves the session its last hour, not eight new ones.
    session = client.session
    session[SIGNED_IN_AT_KEY] -= 7 * 3600
    session.save()
    _renew(client, browser)
    assert 3500 < client.session.get_expiry_age() <= 3600

    # Past its age: the renewal's sign-in ends it, and the next page asks to sign in again.
    session = client.session
    session[SIGNED_IN_AT_KEY] -= 3600
    session.save()
    _renew(client, browser)
    page = client.get("/lobs/")
    assert (page.status_code, urlparse(page["Location"]).path) == (302, "/login/")


def test_a_session_cognito_no_longer_has_ends_and_sends_the_browser_to_sign_in(
    client: Client, cognito
) -> None:
    browser = requests.Session()
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"), browser=browser)
    logout_url = client.post("/logout/")["Location"]
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"), browser=browser)
    browser.get(logout_url, allow_redirects=False)  # Cognito's own session ends (elsewhere)
    _renewal_due(client)

    check = client.get("/")
    back = browser.get(check["Location"], allow_redirects=False)
    callback = urlparse(back.headers["Location"])
    assert parse_qs(callback.query)["error"] == ["login_required"]
    landed = client.get(f"{callback.path}?{callback.query}")

    assert landed.status_code == 302 and landed["Location"].startswith("/login/?next=%2F&ended=1")
    assert "Your session has ended" in client.get(landed["Location"]).content.decode()
    assert client.get("/").status_code == 302  # signed out
    ended = AuditEvent.objects.get(action="auth.session_ended")
    assert (ended.actor.username, ended.reason) == ("user-lob-a", "login_required")


def test_an_error_answer_no_sign_in_asked_for_ends_no_session(client: Client, cognito) -> None:
    # A link anyone can send: /oidc/callback/?error=...&state=<not this browser's>.
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"))

    answer = client.get("/oidc/callback/?error=login_required&state=forged")

    assert answer.status_code == 400
    assert client.get("/").status_code == 200  # still signed in


def test_api_calls_are_not_sent_to_cognito(client: Client, cognito) -> None:
    portal_sign_in(client, "user-lob-a", cognito.password("user-lob-a"))
    _renewal_due(client)

    assert client.get("/api/v1/me/").status_code == 200
