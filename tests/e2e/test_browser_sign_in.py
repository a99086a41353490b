"""End to end in headless Chromium: sign in through the hosted UI, see the dashboard, sign out."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ARTIFACTS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


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
