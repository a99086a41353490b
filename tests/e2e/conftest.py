"""Fixtures and steps shared by the end-to-end tests in headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connections
from django.utils import timezone
from playwright.sync_api import Page, expect, sync_playwright

from accounts.models import Membership, User
from devstack.cognito_bootstrap import bootstrap
from subscriptions.models import Endpoint
from tests.conftest import REGION, cognito_settings_for

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Chromium's own background traffic would be refused on this closed network; keep it quiet.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def portal(live_server, cognito_stack, settings, monkeypatch):
    """The live portal, registered with the pool as a callback and logout URL."""
    # Playwright's sync API runs an event loop in this thread; the ORM calls made here are
    # ordinary synchronous ones.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    bootstrap(
        moto_url=cognito_stack.moto_url,
        region=REGION,
        callback_urls=[f"{live_server.url}/oidc/callback/"],
        logout_urls=[f"{live_server.url}/signed-out/"],
    )
    cognito_settings_for(cognito_stack, settings)
    return live_server.url


@pytest.fixture
def page():
    """A fresh headless Chromium page (Debian's chromium, no downloaded browser)."""
    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: apt-get install chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 800})
        yield context.new_page()
        context.close()
        browser.close()
        # Playwright's sync API runs the test in a greenlet of its own, with its own context
        # variables: the ORM calls made there opened connections no other code can see or close.
        connections.close_all()


LOCAL_ORIGINS = ("http://localhost", "http://127.0.0.1", "data:")


def watch_external_requests(page: Page) -> list[str]:
    """Every URL the page requests outside this machine (the portal must make none)."""
    external: list[str] = []
    page.on(
        "request",
        lambda request: (
            external.append(request.url) if not request.url.startswith(LOCAL_ORIGINS) else None
        ),
    )
    return external


def sign_in(page: Page, portal: str, cognito_stack, username: str, name: str) -> None:
    """Sign in through the hosted UI from the portal's front page and land on the dashboard."""
    page.goto(f"{portal}/")
    page.get_by_role("link", name="Sign in with Cognito").click()
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(cognito_stack.password(username))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Welcome, {name}")


def pool_analyst(cognito_stack, lob, username: str, first_name: str) -> User:
    """The pool's user ``username`` as the portal knows it after sign-in, an analyst of ``lob``."""
    user = User.objects.create(
        username=username,
        first_name=first_name,
        last_name="Analyst",
        idp_issuer=cognito_stack.pool.issuer,
        idp_subject=cognito_stack.sub(username),
    )
    Membership.objects.create(user=user, lob=lob, role=Membership.Role.ANALYST)
    return user


@pytest.fixture
def analyst(proxy, cognito_stack) -> User:
    """user-lob-a (signing in through the hosted UI) as an analyst of lob-a.

    For tests that bring the proxy world (``proxy`` from tests/subscriptions/conftest.py).
    """
    user = pool_analyst(cognito_stack, proxy.world.lob_a, "user-lob-a", "Alice")
    # As the beat task would have left it (the endpoint exists only in the runtime stand-in).
    Endpoint.objects.filter(subscription=proxy.subscription_a).update(
        status="InService", instance_type="ml.m5.large", synced_at=timezone.now()
    )
    return user
