"""The subscription pages in the browser: who sees what, "Try it" end to end, and its refusals.

Two LOBs and a person for every role (``tests.tenancy_world``); lob-a's subscription is "own" for
lob-a's people and lob-b's is "other". "Try it" runs against the stand-ins and moto
(``tests/subscriptions/conftest.py``): the seller's token service, the SageMaker runtime
stand-in, the model container, and S3 in the LOB's account.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, Lob, Membership
from portal.query_count import count_queries
from subscriptions import pages
from subscriptions.models import Endpoint, Invocation, Listing, Subscription
from subscriptions.services import proxy as proxy_service
from subscriptions.services import seller_tokens
from subscriptions.services.proxy import InvocationResult
from tests.factories import (
    EndpointFactory,
    InvocationFactory,
    JobFactory,
    ListingFactory,
    LobFactory,
    SubscriptionFactory,
)
from tests.page_tables import mislabelled_cells, stacked_tables
from tests.subscriptions.conftest import ACCOUNT_A, ProxyWorld
from tests.subscriptions.test_endpoint_sync import sagemaker_endpoint
from tests.tenancy_world import PRINCIPALS, World, build_world, client_for

pytestmark = pytest.mark.django_db

RESULT_URI = re.compile(
    r"s3://gatehouse-results-111111111111/(?:[\w-]+/)?lob-a/invocations/\d{4}/\d{2}/\d{2}/[0-9a-f-]{36}"
)
PSEUDONYMOUS_ID = re.compile(r'"(email|phone)": "([0-9a-f]{32})"')
CSV_RECORDS = "email,phone\r\njane.doe@example.com,+1 (555) 010-0199\r\nbob@example.org,\r\n"


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


@dataclass
class Catalog:
    """lob-a's and lob-b's subscriptions to the transcoder, each with its endpoint."""

    world: World
    listing: Listing
    own: Subscription  # lob-a's
    other: Subscription  # lob-b's

    def client(self, principal: str) -> Client:
        return client_for(self.world, principal)


@pytest.fixture
def catalog() -> Catalog:
    world = build_world()
    listing = ListingFactory(
        product_code="identity-transcoder",
        name="Identity Transcoder",
        seller_name="Acme Identity",
        description="Pseudonymous ids for emails and phone numbers.",
        content_types=["text/csv", "application/jsonlines"],
    )
    own = SubscriptionFactory(lob=world.lob_a, listing=listing)
    other = SubscriptionFactory(lob=world.lob_b, listing=listing)
    EndpointFactory(
        subscription=own,
        status="InService",
        instance_type="ml.m5.large",
        synced_at=timezone.now(),
    )
    EndpointFactory(subscription=other)
    return Catalog(world=world, listing=listing, own=own, other=other)


# --- Who sees which page --------------------------------------------------------------------------

LIST_SHOWS = {
    "platform_admin": {"lob-a", "lob-b"},
    "lob_admin": {"lob-a"},
    "analyst": {"lob-a"},
    "viewer": {"lob-a"},
    "other_lob_member": {"lob-b"},
    "non_member": set(),
}
# principal: (status of lob-a's subscription page, status of lob-b's)
DETAIL_STATUS = {
    "platform_admin": (200, 200),
    "lob_admin": (200, 404),
    "analyst": (200, 404),
    "viewer": (200, 404),
    "other_lob_member": (404, 200),
    "non_member": (404, 404),
    "anonymous": (302, 302),
}
# principal: status of POST try on lob-a's subscription, for those refused before any call
TRY_REFUSED = {
    "platform_admin": 403,  # sees every LOB, but runs models only where they are a member
    "viewer": 403,
    "other_lob_member": 404,
    "non_member": 404,
    "anonymous": 302,
}
# principal: status of POST sync-endpoint on lob-a's subscription, for those refused
SYNC_REFUSED = {
    "analyst": 403,
    "viewer": 403,
    "other_lob_member": 404,
    "non_member": 404,
    "anonymous": 302,
}


@pytest.mark.parametrize("principal", sorted(LIST_SHOWS))
def test_list_shows_the_subscriptions_of_my_lobs(catalog: Catalog, principal: str) -> None:
    response = catalog.client(principal).get("/subscriptions/")

    assert response.status_code == 200
    shown = {s.lob.slug for s in response.context["subscriptions"]}
    assert shown == LIST_SHOWS[principal]
    text = page_text(response)
    for subscription, slug in ((catalog.own, "lob-a"), (catalog.other, "lob-b")):
        assert (f'href="/subscriptions/{subscription.pk}/"' in text) == (slug in shown)


def test_list_asks_anonymous_people_to_sign_in(catalog: Catalog) -> None:
    response = catalog.client("anonymous").get("/subscriptions/")

    assert response.status_code == 302
    assert response["Location"] == "/login/?next=/subscriptions/"


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("which", ["own", "other"])
def test_subscription_page_status_by_principal(
    catalog: Catalog, principal: str, which: str
) -> None:
    subscription = getattr(catalog, which)
    expected = DETAIL_STATUS[principal][0 if which == "own" else 1]

    response = catalog.client(principal).get(f"/subscriptions/{subscription.pk}/")

    assert response.status_code == expected
    if expected == 302:
        assert response["Location"] == f"/login/?next=/subscriptions/{subscription.pk}/"
    if expected == 404:
        # The same answer as for an id that does not exist: another LOB's subscription is unseen.
        assert "Identity Transcoder" not in page_text(response)
        missing = catalog.client(principal).get("/subscriptions/999999/")
        assert missing.status_code == 404


def test_ids_beyond_any_row_are_simply_not_found(catalog: Catalog) -> None:
    client = catalog.client("platform_admin")

    assert client.get("/subscriptions/99999999999999999999999/").status_code == 404
    assert client.post("/subscriptions/9223372036854775808/try/").status_code == 404
    assert client.get("/subscriptions/abc/").status_code == 404


def test_subscription_page_shows_listing_status_endpoint_and_usage(catalog: Catalog) -> None:
    analyst = catalog.world.user("analyst")
    base = timezone.now() - dt.timedelta(hours=1)
    for minutes, outcome, records in ((1, "ok", 10), (2, "ok", 5), (3, "model_error", 0)):
        InvocationFactory(
            subscription=catalog.own,
            principal=analyst,
            outcome=outcome,
            records=records,
            started_at=base + dt.timedelta(minutes=minutes),
            duration_ms=40 + minutes,
            result_uri=f"s3://bucket/lob-a/invocations/{minutes}" if outcome == "ok" else "",
        )
    InvocationFactory(subscription=catalog.other, records=99)  # lob-b's: not counted here

    response = catalog.client("viewer").get(f"/subscriptions/{catalog.own.pk}/")

    text = page_text(response)
    for fact in (
        "Identity Transcoder",
        "Acme Identity",
        "Pseudonymous ids for emails and phone numbers.",
        "text/csv",
        "application/jsonlines",
        "identity-transcoder-lob-a",
        "InService",
        "ml.m5.large",
        "lob-a-analyst",
        "model_error",
        "s3://bucket/lob-a/invocations/2",
        "43 ms",
    ):
        assert fact in text, fact
    usage = response.context["usage"]
    assert (usage.calls, usage.records, usage.errors) == (3, 15, 1)
    assert response.context["last_call_at"] == base + dt.timedelta(minutes=3)
    assert [i.outcome for i in response.context["invocations"]] == ["model_error", "ok", "ok"]


def test_a_call_a_job_made_links_to_the_job_whose_output_holds_its_answer(
    catalog: Catalog,
) -> None:
    job = JobFactory(subscription=catalog.own)
    InvocationFactory(subscription=catalog.own, job=job)

    response = catalog.client("viewer").get(f"/subscriptions/{catalog.own.pk}/")

    content = response.content.decode()
    table = content[content.index('data-testid="invocations"') :]
    link = re.search(r'"Result location"><a class="keep" href="([^"]+)"[^>]*>([^<]+)</a>', table)
    assert link is not None
    assert link.groups() == (f"/jobs/{job.pk}/", f"job {str(job.pk)[:8]}")


def test_every_cell_of_the_subscription_tables_names_its_column_for_narrow_screens(
    catalog: Catalog,
) -> None:
    # On a phone these tables scrolled sideways inside their card (a call's outcome and its
    # result location off screen); they now stack each row as "column: value".
    InvocationFactory(subscription=catalog.own, result_uri="s3://bucket/lob-a/invocations/1")
    InvocationFactory(subscription=catalog.own, outcome="model_error", records=0)
    client = catalog.client("platform_admin")
    pages = {
        "/subscriptions/": "subscription-list",
        f"/subscriptions/{catalog.own.pk}/": "invocations",
    }
    for path, testid in pages.items():
        table = stacked_tables(client.get(path).content.decode())[testid]
        assert len(table.rows) == 2, path
        assert mislabelled_cells(table) == [], path


@pytest.mark.parametrize(
    ("principal", "sees_form", "sees_sync"),
    [
        ("platform_admin", False, True),
        ("lob_admin", True, True),
        ("analyst", True, False),
        ("viewer", False, False),
    ],
)
def test_try_form_for_analysts_and_admins_sync_for_managers(
    catalog: Catalog, principal: str, sees_form: bool, sees_sync: bool
) -> None:
    response = catalog.client(principal).get(f"/subscriptions/{catalog.own.pk}/")

    text = page_text(response)
    assert ('data-testid="try-form"' in text) == sees_form
    assert ('data-testid="sync-endpoint"' in text) == sees_sync
    edit = f'href="/admin/subscriptions/subscription/{catalog.own.pk}/change/"'
    assert (edit in text) == (principal == "platform_admin")
    if sees_form:
        # Pre-filled with CSV email,phone rows, among the listing's own content types only.
        assert response.context["try_content_type"] == "text/csv"
        assert response.context["try_body"].startswith("email,phone\n")
        assert response.context["content_types"] == ["text/csv", "application/jsonlines"]
    else:
        assert "can run its models" in text


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"status": "expired", "ends_on": dt.date(2024, 1, 31)}, "expired on 2024-01-31"),
        ({"status": "cancelled"}, "cancelled"),
        ({"status": "pending"}, "pending"),
        ({"ends_on": dt.date(2024, 1, 31)}, "ended on 2024-01-31"),
        ({"starts_on": dt.date(2999, 1, 1)}, "starts on 2999-01-01"),
    ],
)
def test_unusable_subscription_says_why_and_offers_no_form(
    catalog: Catalog, change: dict, reason: str
) -> None:
    if "starts_on" not in change:
        change = {"starts_on": dt.date(2024, 1, 1), **change}
    Subscription.objects.filter(pk=catalog.own.pk).update(**change)

    response = catalog.client("analyst").get(f"/subscriptions/{catalog.own.pk}/")

    text = page_text(response)
    assert reason in response.context["unusable_reason"]
    assert 'data-testid="unusable"' in text
    assert 'data-testid="try-form"' not in text
    assert "Try it is unavailable" in text


def test_inactive_lob_is_shown_to_platform_admins_as_unusable(catalog: Catalog) -> None:
    Lob.objects.filter(pk=catalog.world.lob_a.pk).update(is_active=False)

    admin = catalog.client("platform_admin").get(f"/subscriptions/{catalog.own.pk}/")
    member = catalog.client("analyst").get(f"/subscriptions/{catalog.own.pk}/")

    assert "lob-a is inactive" in admin.context["unusable_reason"]
    assert member.status_code == 404  # an inactive LOB's members no longer see its subscriptions


def test_list_shows_status_endpoint_health_and_usage(catalog: Catalog) -> None:
    Subscription.objects.filter(pk=catalog.other.pk).update(
        status="expired", starts_on=dt.date(2024, 1, 1), ends_on=dt.date(2024, 12, 31)
    )
    InvocationFactory.create_batch(2, subscription=catalog.own, records=7)
    InvocationFactory(subscription=catalog.own, outcome="throttled", records=0)

    response = catalog.client("platform_admin").get("/subscriptions/")

    rows = {s.lob.slug: s for s in response.context["subscriptions"]}
    assert (rows["lob-a"].calls, rows["lob-a"].records, rows["lob-a"].errors) == (3, 14, 1)
    assert (rows["lob-b"].calls, rows["lob-b"].records, rows["lob-b"].errors) == (0, 0, 0)
    text = page_text(response)
    own_row = text.split(f'data-testid="subscription-{catalog.own.pk}"')[1].split("</tr>")[0]
    other_row = text.split(f'data-testid="subscription-{catalog.other.pk}"')[1].split("</tr>")[0]
    assert ">active<" in own_row and "InService" in own_row and "synced" in own_row
    assert ">expired<" in other_row and "not synced" in other_row
    assert "2024-01-01 → 2024-12-31" in other_row


def test_list_makes_the_same_number_of_queries_for_one_or_many_rows(catalog: Catalog) -> None:
    client = catalog.client("platform_admin")
    client.get("/subscriptions/")  # warm the session and content types
    with count_queries() as few:
        assert client.get("/subscriptions/").status_code == 200

    for index in range(6):
        lob = LobFactory(slug=f"lob-x{index}")
        subscription = SubscriptionFactory(lob=lob, listing=catalog.listing)
        if index % 2:
            EndpointFactory(subscription=subscription, status="InService")
        InvocationFactory.create_batch(3, subscription=subscription)
    with count_queries() as many:
        response = client.get("/subscriptions/")

    assert len(response.context["subscriptions"]) == 8
    assert many.count == few.count
    assert few.count <= 4  # session, user, the annotated subscriptions (+ a possible savepoint)


def test_subscription_page_queries_do_not_grow_with_calls(catalog: Catalog) -> None:
    client = catalog.client("lob_admin")
    InvocationFactory(subscription=catalog.own, principal=catalog.world.user("analyst"))
    with count_queries() as few:
        client.get(f"/subscriptions/{catalog.own.pk}/")
    for user in ("analyst", "lob_admin", "viewer"):
        InvocationFactory.create_batch(
            4, subscription=catalog.own, principal=catalog.world.user(user)
        )
    with count_queries() as many:
        client.get(f"/subscriptions/{catalog.own.pk}/")

    assert many.count == few.count


# --- Refusals of Try it and Sync, before any call -------------------------------------------------


@pytest.mark.parametrize("principal", sorted(TRY_REFUSED))
def test_try_is_refused_to_those_who_may_not_run_the_model(
    catalog: Catalog, principal: str
) -> None:
    response = catalog.client(principal).post(
        f"/subscriptions/{catalog.own.pk}/try/",
        {"content_type": "text/csv", "body": CSV_RECORDS},
    )

    assert response.status_code == TRY_REFUSED[principal]
    assert not Invocation.objects.exists()
    if response.status_code == 403:
        assert "cannot run" in page_text(response) or "may run" in page_text(response)
        event = AuditEvent.objects.get(action="subscription.authorized")
        assert event.outcome == "refused"


@pytest.mark.parametrize("principal", ["lob_admin", "analyst", "viewer"])
def test_try_and_sync_on_another_lobs_subscription_are_not_found(
    catalog: Catalog, principal: str
) -> None:
    client = catalog.client(principal)

    tried = client.post(f"/subscriptions/{catalog.other.pk}/try/", {"body": CSV_RECORDS})
    synced = client.post(f"/subscriptions/{catalog.other.pk}/sync-endpoint/")

    assert (tried.status_code, synced.status_code) == (404, 404)
    assert not Invocation.objects.exists()
    refusal = AuditEvent.objects.get(action="subscription.invoked")
    assert (refusal.outcome, refusal.reason, refusal.target_id) == (
        "refused",
        "not_found",
        str(catalog.other.pk),
    )
    assert not AuditEvent.objects.filter(action="endpoint.synced").exists()


@pytest.mark.parametrize("principal", sorted(SYNC_REFUSED))
def test_sync_is_refused_to_those_who_may_not_manage(catalog: Catalog, principal: str) -> None:
    response = catalog.client(principal).post(f"/subscriptions/{catalog.own.pk}/sync-endpoint/")

    assert response.status_code == SYNC_REFUSED[principal]
    assert not AuditEvent.objects.filter(action="endpoint.synced").exists()


def test_pages_refuse_the_wrong_method(catalog: Catalog) -> None:
    client = catalog.client("analyst")

    # A form action opened with GET goes back to its page; nothing is run.
    for action in ("try", "sync-endpoint"):
        response = client.get(f"/subscriptions/{catalog.own.pk}/{action}/")
        assert (response.status_code, response["Location"]) == (
            302,
            f"/subscriptions/{catalog.own.pk}/",
        )
    assert not Invocation.objects.exists()
    assert client.post("/subscriptions/").status_code == 405


# --- Try it, end to end with the stand-ins and moto -----------------------------------------------


def try_it(
    proxy: ProxyWorld, principal: str, body: str = CSV_RECORDS, origin: str = "", **fields: str
):
    """Post the Try it form as a browser does (URL-encoded: it has no file input)."""
    client = client_for(proxy.world, principal)
    data = {"content_type": "text/csv", "body": body, **fields}
    return client.post(
        f"/subscriptions/{proxy.subscription_a.pk}/try/",
        urlencode(data),
        content_type="application/x-www-form-urlencoded",
        **({"HTTP_ORIGIN": origin} if origin else {}),
    )


@pytest.mark.parametrize("principal", ["analyst", "lob_admin"])
def test_try_it_shows_the_models_answer_and_where_it_is_stored(
    proxy: ProxyWorld, principal: str
) -> None:
    response = try_it(proxy, principal)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    text = page_text(response)
    result_uri = RESULT_URI.search(text).group(0)
    assert response.context["try_result"].result_uri == result_uri
    answer = response.context["answer"].text
    ids = PSEUDONYMOUS_ID.findall(answer)
    assert [kind for kind, _ in ids] == ["email", "phone", "email"]
    assert "jane.doe" not in answer and "555" not in answer  # never the raw identifiers
    assert answer in text
    # The very answer is in S3, encrypted, where the page says.
    bucket, key = result_uri.removeprefix("s3://").split("/", 1)
    stored = proxy.s3(ACCOUNT_A).get_object(Bucket=bucket, Key=key)
    assert stored["ServerSideEncryption"] == "AES256"
    stored_lines = stored["Body"].read().decode().splitlines()
    assert [id_ for _, id_ in ids] == [
        value for line in stored_lines for value in re.findall(r"[0-9a-f]{32}", line)
    ]
    invocation = Invocation.objects.get()
    assert (invocation.outcome, invocation.records, invocation.result_uri) == ("ok", 2, result_uri)
    assert invocation.principal == proxy.world.user(principal)
    # The page is read after the call: the new call is in the usage and the latest calls.
    assert response.context["usage"].calls == 1
    assert response.context["invocations"][0].pk == invocation.pk
    # The form keeps what was sent, for the next try.
    assert response.context["try_body"] == CSV_RECORDS


def test_try_it_with_json_pretty_prints_the_answer(proxy: ProxyWorld) -> None:
    body = '{"records": [{"email": "jane.doe@example.com"}, {"phone": "555-010-0199"}]}'

    response = try_it(proxy, "analyst", body=body, content_type="application/json")

    assert response.status_code == 200
    answer = response.context["answer"].text
    assert answer.startswith('{\n  "results": [\n    {\n')
    assert len(PSEUDONYMOUS_ID.findall(answer)) == 2


def test_try_it_reuses_the_cached_seller_token(proxy: ProxyWorld) -> None:
    try_it(proxy, "analyst")
    try_it(proxy, "analyst")

    assert proxy.seller_counter.calls["/auth/init"] == 1
    assert Invocation.objects.filter(outcome="ok").count() == 2


def test_try_it_escapes_the_models_answer(proxy: ProxyWorld, monkeypatch) -> None:
    def answer_with_markup(**kwargs) -> InvocationResult:
        invocation = InvocationFactory(subscription=kwargs["subscription"], result_uri="s3://b/k")
        return InvocationResult(
            invocation=invocation,
            body=b'{"note": "<script>alert(1)</script>"}',
            content_type="application/json",
            result_uri="s3://b/k",
        )

    monkeypatch.setattr(proxy_service, "invocation_run", answer_with_markup)

    response = try_it(proxy, "analyst")

    content = response.content.decode()
    assert "<script>alert(1)</script>" not in content
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in content


def test_try_it_on_an_expired_subscription_says_why(proxy: ProxyWorld) -> None:
    Subscription.objects.filter(pk=proxy.subscription_a.pk).update(
        status=Subscription.Status.EXPIRED,
        starts_on=dt.date(2024, 1, 1),
        ends_on=dt.date(2024, 12, 31),
    )

    response = try_it(proxy, "analyst")

    assert response.status_code == 403
    assert response.context["try_error"].code == "subscription_inactive"
    text = page_text(response)
    assert 'data-testid="try-error"' in text
    assert "subscription_inactive" in text
    assert "expired on 2024-12-31" in text
    assert proxy.seller_counter.calls["/auth/init"] == 0
    assert proxy.container_counter.calls["/invocations"] == 0


def test_try_it_with_a_content_type_the_listing_does_not_accept(proxy: ProxyWorld) -> None:
    Listing.objects.filter(pk=proxy.listing.pk).update(content_types=["text/csv"])

    response = try_it(
        proxy, "analyst", body='{"email": "a@example.com"}', content_type="application/json"
    )

    assert response.status_code == 415
    assert response.context["try_error"].code == "unsupported_content_type"
    assert "accepts text/csv, not application/json" in page_text(response)
    assert Invocation.objects.get().outcome == "unsupported_content_type"


@pytest.fixture
def over_limit_records(settings) -> str:
    """Records over the Try it form's size limit (Django's DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    return CSV_RECORDS + "bob@example.org,\r\n" * 1000


def test_try_it_with_records_over_the_forms_size_limit_says_so_with_413(
    proxy: ProxyWorld, over_limit_records: str
) -> None:
    # Django refuses a form body over DATA_UPLOAD_MAX_MEMORY_SIZE before any view reads it: the
    # person gets the page with the reason, not a bare "Bad Request".
    body = over_limit_records

    response = try_it(proxy, "analyst", body=body)

    assert response.status_code == 413
    assert response.templates[0].name == "subscriptions/subscription_detail.html"
    assert response.context["try_error"].code == "payload_too_large"
    assert "job" in str(response.context["try_error"])
    assert str(response.context["try_error"]) in page_text(response)
    assert 'data-testid="try-form"' in response.content.decode()
    assert proxy.container_counter.calls["/invocations"] == 0
    assert not Invocation.objects.exists()
    # Another LOB's subscription is still not found, whatever the size.
    other = client_for(proxy.world, "other_lob_member").post(
        f"/subscriptions/{proxy.subscription_a.pk}/try/", {"body": body}
    )
    assert other.status_code == 404


OWN_ORIGIN = "http://testserver"


def test_an_over_size_try_it_from_the_portals_own_page_is_recorded_as_refused(
    proxy: ProxyWorld, over_limit_records: str
) -> None:
    body = over_limit_records

    response = try_it(proxy, "analyst", body=body, origin=OWN_ORIGIN)

    assert response.status_code == 413
    invocation = Invocation.objects.get()
    assert invocation.outcome == "payload_too_large"
    assert invocation.principal == proxy.world.user("analyst")
    assert invocation.bytes_in == len(urlencode({"content_type": "text/csv", "body": body}))
    event = AuditEvent.objects.get(action="subscription.invoked")
    assert (event.outcome, event.reason) == (AuditEvent.Outcome.REFUSED, "payload_too_large")
    assert event.lob_slug == proxy.subscription_a.lob.slug
    assert proxy.container_counter.calls["/invocations"] == 0
    # The page's usage counts it, as it counts the API's refusals.
    usage = response.context["usage"]
    assert (usage.calls, usage.errors) == (1, 1)


def test_an_over_size_try_it_from_another_site_is_refused_and_not_recorded(
    proxy: ProxyWorld, over_limit_records: str
) -> None:
    body = over_limit_records

    # Its CSRF token cannot be checked without reading the body: a forged post must not write
    # into the person's audit trail.
    response = try_it(proxy, "analyst", body=body, origin="https://elsewhere.example")

    assert response.status_code == 413
    assert not Invocation.objects.exists()
    assert not AuditEvent.objects.filter(action="subscription.invoked").exists()


def test_an_over_size_try_it_by_a_viewer_is_refused_for_the_role_first(
    proxy: ProxyWorld, over_limit_records: str
) -> None:
    body = over_limit_records

    response = try_it(proxy, "viewer", body=body, origin=OWN_ORIGIN)

    # As the API answers the same call: the role is checked before the size.
    assert response.status_code == 403
    assert Invocation.objects.get().outcome == "may_not_invoke"


def test_try_it_is_csrf_protected(proxy: ProxyWorld) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(proxy.world.user("analyst"))

    response = client.post(
        f"/subscriptions/{proxy.subscription_a.pk}/try/",
        {"content_type": "text/csv", "body": CSV_RECORDS},
    )

    assert response.status_code == 403
    assert proxy.container_counter.calls["/invocations"] == 0
    assert not Invocation.objects.exists()


def test_try_it_escapes_error_messages(proxy: ProxyWorld) -> None:
    response = try_it(proxy, "analyst", content_type="text/<b>bold</b>")

    content = response.content.decode()
    assert response.status_code == 415
    assert "<b>bold</b>" not in content
    assert "text/&lt;b&gt;bold&lt;/b&gt;" in content


@pytest.mark.parametrize(
    ("knobs", "code", "status", "message"),
    [
        ({"error_rate": 1.0}, "model_error", 200, "The model failed: internal"),
        ({"throttle_rate": 1.0}, "throttled", 429, "throttling"),
    ],
)
def test_try_it_shows_the_model_failing_as_a_message(
    proxy: ProxyWorld, knobs: dict, code: str, status: int, message: str
) -> None:
    proxy.knobs(**knobs)

    response = try_it(proxy, "analyst")

    assert response.status_code == status
    assert response.context["try_error"].code == code
    text = page_text(response)
    assert message in text
    assert f'data-testid="try-error-code">{code}<' in text
    assert "try_result" not in response.context
    assert Invocation.objects.get().outcome == code


def test_try_it_with_records_the_model_cannot_read(proxy: ProxyWorld) -> None:
    response = try_it(proxy, "analyst", body="name,city\nJane,Paris\n")

    assert response.status_code == 200
    assert response.context["try_error"].code == "model_error"
    assert "names none of the columns email, phone, maid" in page_text(response)


def test_try_it_with_the_seller_down(proxy: ProxyWorld) -> None:
    proxy.seller_counter.fail_with = 503

    response = try_it(proxy, "analyst")

    assert response.status_code == 200
    assert response.context["try_error"].code == "seller_unavailable"
    assert not Invocation.objects.exists()  # nothing was sent to the model


def test_try_it_without_an_endpoint(proxy: ProxyWorld) -> None:
    Endpoint.objects.filter(subscription=proxy.subscription_a).delete()

    response = try_it(proxy, "analyst")

    assert response.status_code == 200
    assert response.context["try_error"].code == "endpoint_unavailable"
    assert "has no SageMaker endpoint yet" in page_text(response)


def test_try_it_never_answers_500_on_an_unexpected_failure(proxy: ProxyWorld, monkeypatch) -> None:
    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxy_service, "invocation_run", broken)

    response = try_it(proxy, "analyst")

    assert response.status_code == 200
    assert response.context["try_error"].code == "internal_error"
    assert "a bug" not in page_text(response)


def test_try_it_logs_neither_the_seller_token_nor_the_records(proxy: ProxyWorld, caplog) -> None:
    caplog.set_level("DEBUG")  # as with LOG_LEVEL=DEBUG: the settings keep botocore quiet

    answered = try_it(proxy, "analyst")
    proxy.knobs(error_rate=1.0)
    failed = try_it(proxy, "analyst")

    assert answered.context["try_result"] and failed.context["try_error"].code == "model_error"
    assert "subscription.invoked" in caplog.text  # the log was captured
    token = seller_tokens._cached_token(proxy.subscription_a).token
    for secret in (token, token.split(".")[2], "jane.doe", "bob@example.org", "010-0199"):
        assert secret not in caplog.text


def test_viewer_posting_try_gets_403_and_nothing_is_called(proxy: ProxyWorld) -> None:
    response = try_it(proxy, "viewer")

    assert response.status_code == 403
    assert "Viewers of lob-a cannot run its models." in page_text(response)
    assert not Invocation.objects.exists()
    assert proxy.seller_counter.calls["/auth/init"] == 0
    assert proxy.container_counter.calls["/invocations"] == 0


def test_member_demoted_to_viewer_cannot_try_any_more(proxy: ProxyWorld) -> None:
    assert try_it(proxy, "analyst").status_code == 200
    Membership.objects.filter(user=proxy.world.user("analyst")).update(role="viewer")

    response = try_it(proxy, "analyst")

    assert response.status_code == 403
    assert proxy.container_counter.calls["/invocations"] == 1


# --- Sync endpoint --------------------------------------------------------------------------------


@pytest.mark.parametrize("principal", ["platform_admin", "lob_admin"])
def test_sync_endpoint_reads_sagemaker_and_is_audited(proxy: ProxyWorld, principal: str) -> None:
    name = sagemaker_endpoint(ACCOUNT_A, instance_type="ml.c5.xlarge")
    Endpoint.objects.filter(subscription=proxy.subscription_a).update(name=name)
    client = client_for(proxy.world, principal)

    response = client.post(f"/subscriptions/{proxy.subscription_a.pk}/sync-endpoint/")

    assert response.status_code == 302
    assert response["Location"] == f"/subscriptions/{proxy.subscription_a.pk}/"
    assert messages_of(response) == [f"Endpoint {name} is InService on ml.c5.xlarge."]
    endpoint = Endpoint.objects.get(subscription=proxy.subscription_a)
    assert (endpoint.status, endpoint.instance_type) == ("InService", "ml.c5.xlarge")
    event = AuditEvent.objects.get(action="endpoint.synced")
    assert (event.actor, event.outcome, event.lob_slug) == (
        proxy.world.user(principal),
        "success",
        "lob-a",
    )
    page = client.get(response["Location"])
    text = page_text(page)
    assert "InService" in text and "ml.c5.xlarge" in text and "synced " in text


def test_sync_of_a_missing_endpoint_is_shown_as_an_error(proxy: ProxyWorld) -> None:
    client = client_for(proxy.world, "lob_admin")

    response = client.post(f"/subscriptions/{proxy.subscription_a.pk}/sync-endpoint/")

    assert response.status_code == 302
    [message] = messages_of(response)
    assert message.startswith("Endpoint identity-transcoder-lob-a: NotFound — ")
    page = client.get(response["Location"])
    assert '<span class="pill bad">NotFound</span>' in page.content.decode()


def test_sync_without_an_endpoint_is_a_message(catalog: Catalog) -> None:
    Endpoint.objects.filter(subscription=catalog.own).delete()
    client = catalog.client("lob_admin")

    response = client.post(f"/subscriptions/{catalog.own.pk}/sync-endpoint/")

    assert response.status_code == 302
    assert messages_of(response) == ["This subscription has no endpoint to sync yet."]
    assert "no SageMaker endpoint yet" in page_text(client.get(response["Location"]))


# --- Helpers of the pages -------------------------------------------------------------------------


def test_answer_display_is_cut_for_large_answers() -> None:
    body = b"x" * (pages.ANSWER_DISPLAY_MAX_BYTES + 10)

    answer = pages.answer_for_display(body, "application/json")

    assert answer.truncated
    assert len(answer.text) == pages.ANSWER_DISPLAY_MAX_BYTES


def test_answer_display_keeps_what_is_not_json() -> None:
    answer = pages.answer_for_display(b"not json\n", "application/jsonlines; charset=utf-8")

    assert (answer.text, answer.truncated) == ("not json\n", False)
