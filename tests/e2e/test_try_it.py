"""End to end in headless Chromium: an analyst signs in, opens lob-a's subscription, tries it.

The whole path is real: the hosted-UI stand-in signs the analyst in, the portal asks the seller's
token service stand-in for a token, calls the SageMaker runtime stand-in (which forwards to the
model container) with credentials assumed in moto, and stores the answer in moto's S3.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from playwright.sync_api import expect

from accounts.models import User
from subscriptions.models import Invocation, Subscription
from tests.e2e.conftest import ARTIFACTS, pool_analyst, sign_in, watch_external_requests
from tests.subscriptions.conftest import (  # noqa: F401 (fixtures)
    ACCOUNT_A,
    ProxyWorld,
    _fresh_token_cache,
    aws,
    proxy,
    standins,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RESULT_URI = re.compile(
    r"^s3://gatehouse-results-111111111111/(?:[\w-]+/)?lob-a/invocations/"
    r"\d{4}/\d{2}/\d{2}/[0-9a-f-]{36}$"
)
PSEUDONYMOUS_ID = re.compile(r'"(?:email|phone)": "[0-9a-f]{32}"')


def test_analyst_tries_the_model_and_sees_ids_and_where_they_are_stored(
    portal: str,
    cognito_stack,
    proxy: ProxyWorld,  # noqa: F811
    analyst: User,
    page,
    settings,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    external_requests = watch_external_requests(page)

    sign_in(page, portal, cognito_stack, "user-lob-a", "Alice Analyst")

    page.get_by_role("link", name="Subscriptions", exact=True).click()
    expect(page).to_have_url(f"{portal}/subscriptions/")
    listed = page.get_by_test_id("subscription-list")
    expect(listed.locator("tbody tr")).to_have_count(1)  # lob-a's only, not lob-b's
    row = page.get_by_test_id(f"subscription-{proxy.subscription_a.pk}")
    expect(row).to_contain_text("lob-a")
    expect(row.get_by_test_id("status")).to_have_text("active")
    expect(row.get_by_test_id("endpoint-health")).to_contain_text("InService")
    page.screenshot(path=ARTIFACTS / "subscriptions.png", full_page=True)
    row.get_by_role("link", name="Identity Transcoder").click()

    expect(page).to_have_url(f"{portal}/subscriptions/{proxy.subscription_a.pk}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Identity Transcoder")
    expect(page.get_by_test_id("usage-calls")).to_have_text("0")
    form = page.get_by_test_id("try-form")
    expect(form.get_by_label("Content type")).to_have_value("text/csv")
    expect(form.get_by_label("Records")).to_have_value(re.compile(r"^email,phone\n"))
    form.get_by_role("button", name="Run the model").click()

    result_uri = page.get_by_test_id("result-uri")
    expect(result_uri).to_have_text(RESULT_URI)
    answer = page.get_by_test_id("answer")
    expect(answer).to_contain_text(PSEUDONYMOUS_ID)
    expect(answer).not_to_contain_text("jane.doe")
    expect(page.get_by_test_id("usage-calls")).to_have_text("1")
    expect(page.get_by_test_id("invocations")).to_contain_text("user-lob-a")
    page.get_by_test_id("try-result").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "try-it.png", full_page=True)

    # The answer on the page is the object in S3, at the location the page shows.
    bucket, key = result_uri.inner_text().removeprefix("s3://").split("/", 1)
    stored = proxy.s3(ACCOUNT_A).get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    assert len(re.findall(r"[0-9a-f]{32}", stored)) == len(
        PSEUDONYMOUS_ID.findall(answer.inner_text())
    )
    invocation = Invocation.objects.get()
    assert (invocation.outcome, invocation.principal) == ("ok", analyst)

    # The model failing is a message on the same page, with its code, not an error page.
    proxy.knobs(error_rate=1.0)
    page.get_by_test_id("try-form").get_by_role("button", name="Run the model").click()
    expect(page.get_by_test_id("try-error-code")).to_have_text("model_error")
    expect(page.get_by_test_id("try-error")).to_contain_text("The model failed")
    expect(page.get_by_test_id("usage-errors")).to_have_text("1")
    page.get_by_test_id("try-error").scroll_into_view_if_needed()
    page.screenshot(path=ARTIFACTS / "try-it-error.png", full_page=True)

    # Records over the form's size limit: the page says so, and the refusal is recorded, as the
    # browser says the form came from the portal's own page (Origin).
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    form = page.get_by_test_id("try-form")
    form.get_by_label("Records").fill("email,phone\n" + "bob@example.org,\n" * 1000)
    form.get_by_role("button", name="Run the model").click()
    expect(page.get_by_test_id("try-error-code")).to_have_text("payload_too_large")
    expect(page.get_by_test_id("usage-errors")).to_have_text("2")
    assert Invocation.objects.filter(outcome="payload_too_large").count() == 1
    assert external_requests == []


def test_member_of_lob_b_sees_why_its_expired_subscription_cannot_be_used(
    portal: str,
    cognito_stack,
    proxy: ProxyWorld,  # noqa: F811
    page,
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pool_analyst(cognito_stack, proxy.world.lob_b, "user-lob-b", "Bob")
    Subscription.objects.filter(pk=proxy.subscription_b.pk).update(
        status=Subscription.Status.EXPIRED,
        starts_on=dt.date(2025, 1, 1),
        ends_on=dt.date(2025, 12, 31),
    )

    page.goto(f"{portal}/subscriptions/")
    page.get_by_role("link", name="Sign in with Cognito").click()
    page.get_by_label("Username").fill("user-lob-b")
    page.get_by_label("Password").fill(cognito_stack.password("user-lob-b"))
    page.get_by_role("button", name="Sign in").click()

    expect(page).to_have_url(f"{portal}/subscriptions/")
    row = page.get_by_test_id(f"subscription-{proxy.subscription_b.pk}")
    expect(row.get_by_test_id("status")).to_have_text("expired")
    expect(page.get_by_test_id(f"subscription-{proxy.subscription_a.pk}")).to_have_count(0)
    row.get_by_role("link", name="Identity Transcoder").click()

    expect(page.get_by_test_id("unusable")).to_contain_text("expired on 2025-12-31")
    expect(page.get_by_test_id("try-unavailable")).to_be_visible()
    expect(page.get_by_test_id("try-form")).to_have_count(0)
    page.screenshot(path=ARTIFACTS / "try-it-expired.png", full_page=True)

    page.goto(f"{portal}/subscriptions/{proxy.subscription_a.pk}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
    assert not Invocation.objects.exists()
