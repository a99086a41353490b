"""End to end in headless Chromium: a LOB admin signs in, opens their LOB, adds a viewer."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from accounts.models import AuditEvent, AwsAccount, Lob, Membership, User
from portal import aws_gateway
from tests.e2e.conftest import ARTIFACTS, sign_in, watch_external_requests

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def cognito_user(cognito_stack, username: str, first_name: str, last_name: str) -> User:
    """The portal user that signing in as ``username`` resolves to (issuer + subject)."""
    return User.objects.create(
        username=username,
        first_name=first_name,
        last_name=last_name,
        idp_issuer=cognito_stack.pool.issuer,
        idp_subject=cognito_stack.sub(username),
    )


@pytest.fixture
def lob_a(cognito_stack, moto_server, settings, monkeypatch) -> Lob:
    """lob-a in account 111111111111 (AWS is the suite's moto), with user-lob-a as its admin."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = "us-east-1"
    aws_gateway.reset_caches()
    account = AwsAccount.objects.create(
        account_id="111111111111",
        name="Retail lending (prod)",
        invoke_role_arn="arn:aws:iam::111111111111:role/GatehouseInvoke",
        results_bucket="retail-lending-results",
    )
    lob = Lob.objects.create(
        slug="lob-a",
        name="Retail Lending",
        description="Credit-risk and fraud models for the retail lending book.",
        aws_account=account,
    )
    admin = cognito_user(cognito_stack, "user-lob-a", "Alice", "Analyst")
    Membership.objects.create(user=admin, lob=lob, role=Membership.Role.ADMIN)
    analyst = User.objects.create(
        username="carol", first_name="Carol", last_name="Quant", idp_issuer="x", idp_subject="c"
    )
    Membership.objects.create(user=analyst, lob=lob, role=Membership.Role.ANALYST)
    cognito_user(cognito_stack, "user-lob-b", "Bob", "Analyst")
    yield lob
    aws_gateway.reset_caches()


def test_lob_admin_adds_a_viewer_and_verifies_the_account(
    portal: str,
    cognito_stack,
    lob_a: Lob,
    page,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    external_requests = watch_external_requests(page)

    sign_in(page, portal, cognito_stack, "user-lob-a", "Alice Analyst")
    my_lobs = page.get_by_test_id("my-lobs")
    expect(my_lobs).to_contain_text("lob-a")
    expect(my_lobs).to_contain_text("LOB admin")
    expect(my_lobs).to_contain_text("111111111111")
    page.screenshot(path=ARTIFACTS / "dashboard-lobs.png", full_page=True)
    my_lobs.get_by_role("link", name="Retail Lending").click()

    expect(page).to_have_url(f"{portal}/lobs/lob-a/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Retail Lending")
    members = page.get_by_test_id("members")
    expect(members.locator("tbody tr")).to_have_count(2)

    add = page.get_by_test_id("add-member")
    add.get_by_label("Username").fill("user-lob-b")
    add.get_by_label("Role", exact=True).select_option("viewer")
    add.get_by_role("button", name="Add member").click()

    expect(page.locator(".messages")).to_have_text("Added user-lob-b as Viewer.")
    row = page.get_by_test_id("member-user-lob-b")
    expect(row).to_contain_text("Bob Analyst")
    expect(row.get_by_label("Role of user-lob-b")).to_have_value("viewer")
    expect(members.locator("tbody tr")).to_have_count(3)
    assert Membership.objects.get(user__username="user-lob-b", lob=lob_a).role == "viewer"
    assert AuditEvent.objects.filter(
        action="membership.created", actor__username="user-lob-a", lob_slug="lob-a"
    ).exists()

    page.get_by_role("button", name="Verify account").click()

    expect(page.locator(".messages")).to_contain_text(
        re.compile(r"^Verified: Assumed arn:aws:sts::111111111111:assumed-role/GatehouseInvoke ")
    )
    expect(page.get_by_test_id("verification")).to_contain_text("verified")
    page.screenshot(path=ARTIFACTS / "lob-page.png", full_page=True)

    page.get_by_test_id("member-user-lob-b").get_by_role("link", name="Remove").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Remove a member?")
    page.screenshot(path=ARTIFACTS / "lob-remove-confirm.png")
    page.get_by_role("link", name="Cancel").click()
    expect(page.get_by_test_id("member-user-lob-b")).to_be_visible()

    page.get_by_role("link", name="LOBs").click()
    expect(page.get_by_test_id("lob-list")).to_contain_text("Retail Lending")
    page.screenshot(path=ARTIFACTS / "lob-list.png")
    page.goto(f"{portal}/lobs/no-such-lob/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    page.screenshot(path=ARTIFACTS / "lob-not-found.png")

    assert external_requests == []
