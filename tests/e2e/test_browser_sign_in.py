"""End to end in headless Chromium: sign in through the hosted UI, see the dashboard, sign out."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from devstack.cognito_bootstrap import bootstrap
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

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


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


def test_sign_in_see_dashboard_and_sign_out(portal: str, cognito_stack, page) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    external_requests = []
    page.on(
        "request",
        lambda request: (
            external_requests.append(request.url)
            if not request.url.startswith(("http://localhost", "http://127.0.0.1", "data:"))
            else None
        ),
    )

    page.goto(f"{portal}/")
    expect(page).to_have_url(f"{portal}/login/?next=/")
    page.screenshot(path=ARTIFACTS / "login.png")
    page.get_by_role("link", name="Sign in with Cognito").click()

    page.get_by_label("Username").fill("user-lob-a")
    page.get_by_label("Password").fill(cognito_stack.password("user-lob-a"))
    page.screenshot(path=ARTIFACTS / "hosted-ui.png")
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{portal}/")
    expect(page.get_by_test_id("signed-in-user")).to_have_text("Alice Analyst")
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome, Alice Analyst")
    page.screenshot(path=ARTIFACTS / "dashboard.png", full_page=True)

    page.get_by_role("button", name="Sign out").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("You are signed out")
    page.screenshot(path=ARTIFACTS / "signed-out.png")
    page.goto(f"{portal}/")
    expect(page).to_have_url(f"{portal}/login/?next=/")
    assert external_requests == []
