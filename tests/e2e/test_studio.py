"""End to end in headless Chromium: an analyst opens their LOB's SageMaker Studio from the portal.

user-lob-a signs in through the hosted UI, clicks "Open Studio" on the dashboard and lands on the
Studio stand-in's page for lob-a's domain (minted in lob-a's account, through the account's
SageMaker endpoint override); lob-b's Studio answers 403; a URL used too late is refused; the audit
trail has every attempt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import requests
from playwright.sync_api import expect

from accounts.models import AuditEvent, AwsAccount, Lob, Membership
from devstack.sagemaker_studio import create_app as create_studio
from devstack.wsgi_thread import ThreadedServer, serve_in_thread
from portal import aws_gateway
from tests.e2e.conftest import ARTIFACTS, sign_in, watch_external_requests
from tests.e2e.test_lob_admin_page import cognito_user

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class Clock:
    """Wall-clock time plus an offset the test moves forward (the Studio stand-in's clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def studio_clock() -> Clock:
    return Clock()


@pytest.fixture
def studio_stand_in(moto_server: str, studio_clock: Clock) -> Iterator[ThreadedServer]:
    """The Studio stand-in with lob-a's and lob-b's domains, each with its user's profile."""
    with serve_in_thread(create_studio(moto_url=moto_server, clock=studio_clock)) as server:
        for account, name, profile in (
            ("111111111111", "studio-lob-a", "user-lob-a"),
            ("222222222222", "studio-lob-b", "user-lob-b"),
        ):
            requests.post(
                f"{server.url}/_stand-in/domains",
                json={"account_id": account, "domain_name": name, "user_profiles": [profile]},
                timeout=30,
            ).raise_for_status()
        yield server


@pytest.fixture
def lobs(cognito_stack, moto_server, studio_stand_in, settings, monkeypatch) -> Iterator[None]:
    """lob-a (user-lob-a analyst) and lob-b (user-lob-b), accounts pointed at the stand-in."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = "us-east-1"
    aws_gateway.reset_caches()
    for account_id, slug, name, username, first in (
        ("111111111111", "lob-a", "Retail Lending", "user-lob-a", "Alice"),
        ("222222222222", "lob-b", "Risk Models", "user-lob-b", "Bob"),
    ):
        account = AwsAccount.objects.create(
            account_id=account_id,
            name=f"{name} (prod)",
            invoke_role_arn=f"arn:aws:iam::{account_id}:role/GatehouseInvoke",
            external_id=f"gatehouse-{slug}",
            results_bucket=f"gatehouse-results-{account_id}",
            sagemaker_endpoint_url=studio_stand_in.url,
        )
        lob = Lob.objects.create(slug=slug, name=name, aws_account=account)
        user = cognito_user(cognito_stack, username, first, "Analyst")
        Membership.objects.create(user=user, lob=lob, role=Membership.Role.ANALYST)
    yield
    aws_gateway.reset_caches()


def test_analyst_opens_their_lobs_studio_and_not_another(
    portal: str,
    cognito_stack,
    lobs: None,
    studio_stand_in: ThreadedServer,
    studio_clock: Clock,
    page,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    external_requests = watch_external_requests(page)

    sign_in(page, portal, cognito_stack, "user-lob-a", "Alice Analyst")
    page.screenshot(path=ARTIFACTS / "studio-dashboard.png", full_page=True)

    page.get_by_test_id("my-lob-lob-a").get_by_role("link", name="Open Studio").click()

    expect(page.get_by_test_id("studio-domain")).to_have_text("d-studio-lob-a")
    expect(page.get_by_test_id("studio-user")).to_have_text("user-lob-a")
    expect(page.get_by_test_id("studio-account")).to_have_text("111111111111")
    assert page.url.startswith(f"{studio_stand_in.url}/studio/d-studio-lob-a?")
    page.screenshot(path=ARTIFACTS / "studio-page.png", full_page=True)
    studio_url = page.url

    # Presigned URLs live 20 s: the same URL used later is refused by "Studio".
    studio_clock.offset = 21
    page.goto(studio_url)
    expect(page.get_by_test_id("studio-refusal")).to_have_attribute("data-reason", "expired")
    page.screenshot(path=ARTIFACTS / "studio-expired.png", full_page=True)

    # The LOB page has the button too.
    page.goto(f"{portal}/lobs/lob-a/")
    expect(page.get_by_test_id("open-studio")).to_have_text("Open Studio")

    page.goto(f"{portal}/studio/lob-b/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not allowed")
    expect(page.get_by_test_id("refusal")).to_contain_text("You are not a member of “lob-b”")
    page.screenshot(path=ARTIFACTS / "studio-other-lob.png", full_page=True)

    outcomes = sorted(
        AuditEvent.objects.filter(action="studio.open", actor__username="user-lob-a").values_list(
            "lob_slug", "outcome"
        )
    )
    assert outcomes == [("lob-a", "success"), ("lob-b", "refused")]
    assert external_requests == []
