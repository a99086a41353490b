"""Requests anyone can send that once answered 500: each is now a 4xx with the API's error shape
(``{"detail", "code"}``) or an error page, and changes nothing."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, urlencode

import pytest
import responses
from rest_framework.test import APIClient

from accounts import tokens
from accounts.models import AuditEvent, Lob
from portal import aws_gateway
from subscriptions.models import Job
from subscriptions.services import jobs, proxy
from tests.factories import SubscriptionFactory
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> World:
    return build_world()


def api_as(world: World, principal: str) -> APIClient:
    client = APIClient(raise_request_exception=False)
    user = world.user(principal)
    if user is not None:
        client.force_authenticate(user)
    return client


def _job(subscription, user) -> Job:
    return Job.objects.create(
        subscription=subscription,
        submitted_by=user,
        content_type="text/csv",
        input_uri="s3://bucket/key",
        records_total=1,
        chunks_total=1,
    )


def _segment(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def _error(response, status: int) -> str:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    return body["code"]


# --- Tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [{"alg": "RS256", "kid": [1]}, {"alg": "RS256", "kid": 7}],
    ids=["kid-a-list", "kid-a-number"],
)
def test_a_bearer_token_whose_key_id_is_not_a_string_is_401(header: dict) -> None:
    token = f"{_segment(header)}.{_segment({})}.c2ln"
    response = APIClient(raise_request_exception=False).get(
        "/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert _error(response, 401)


def test_a_bearer_token_with_a_header_nested_too_deeply_is_401() -> None:
    header = base64.urlsafe_b64encode(b"[" * 100_000).rstrip(b"=").decode()
    response = APIClient(raise_request_exception=False).get(
        "/api/v1/me/", HTTP_AUTHORIZATION=f"Bearer {header}.e30.c2ln"
    )
    assert _error(response, 401)


@responses.activate
def test_the_signing_keys_are_not_fetched_through_a_redirect() -> None:
    responses.add(
        responses.GET,
        "https://idp.example/jwks.json",
        status=302,
        headers={"Location": "http://169.254.169.254/latest/meta-data/"},
    )
    cache = tokens.JwksCache("https://idp.example/jwks.json", algorithms=("RS256",), timeout=1)

    with pytest.raises(tokens.IdentityProviderUnavailable):
        cache.signing_key("any")
    assert [call.request.url for call in responses.calls] == ["https://idp.example/jwks.json"]


# --- Bodies ---------------------------------------------------------------------------------------


def test_json_nested_past_the_recursion_limit_is_a_400(world: World) -> None:
    response = api_as(world, "platform_admin").post(
        "/api/v1/lobs/", "[" * 100_000, content_type="application/json"
    )
    assert _error(response, 400) == "parse_error"


def test_records_of_json_nested_past_the_recursion_limit_count_as_none() -> None:
    assert proxy._count_records(b"[" * 10_000, "application/json") == 0


def test_a_nul_character_in_a_json_body_is_a_400_not_a_database_error(world: World) -> None:
    response = api_as(world, "lob_admin").post(
        "/api/v1/memberships/",
        {"lob": "lob-a\u0000", "user": "outsider", "role": "viewer"},
        format="json",
    )
    assert _error(response, 400) == "parse_error"


@pytest.mark.parametrize("method", ["post", "put", "patch"])
@pytest.mark.parametrize("encoding", ["form", "multipart"])
def test_a_nul_character_in_an_api_form_body_is_a_400_not_a_database_error(
    world: World, method: str, encoding: str
) -> None:
    # Found by the schemathesis contract test on PostgreSQL: a form-encoded PUT with NUL in the
    # user's name reached the slug lookup (the NUL-check middleware reads only POSTed forms).
    membership = world.lob_a.memberships.first()
    path = "/api/v1/memberships/" + ("" if method == "post" else f"{membership.pk}/")
    fields = {"lob": "lob-a", "user": "out\x00sider", "role": "viewer"}
    client = api_as(world, "lob_admin")
    if encoding == "form":
        response = getattr(client, method)(
            path, urlencode(fields), content_type="application/x-www-form-urlencoded"
        )
    else:
        response = getattr(client, method)(path, fields, format="multipart")

    # A POSTed form is refused by the middleware before DRF parses it.
    expected = "invalid" if (method, encoding) == ("post", "form") else "parse_error"
    assert _error(response, 400) == expected
    assert not world.lob_a.memberships.filter(user__username="outsider").exists()


@pytest.mark.parametrize(
    "path",
    ["/api/v1/lobs/%00/", "/api/v1/jobs/?lob=%00", "/api/v1/memberships/?user=a%00b"],
)
def test_a_nul_character_in_an_api_path_or_query_is_a_400(world: World, path: str) -> None:
    assert _error(api_as(world, "analyst").get(path), 400) == "invalid"


def test_a_nul_character_in_a_page_query_or_form_is_a_400(world: World, client) -> None:
    client.force_login(world.user("lob_admin"))

    assert client.get("/jobs/?lob=%00").status_code == 400
    form = client.post(
        "/lobs/lob-a/members/",
        "username=out%00sider&role=viewer",
        content_type="application/x-www-form-urlencoded",
    )
    assert form.status_code == 400
    # Multipart bodies are not read by the check (uploads stream): the form finds nobody.
    multipart = client.post("/lobs/lob-a/members/", {"username": "out\x00sider", "role": "viewer"})
    assert multipart.status_code == 302
    assert not world.lob_a.memberships.filter(user__username="outsider").exists()


# --- Query parameters -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    ["since=9999-12-31T23:59:59-14:00", "until=0001-01-01T00:00:00%2B14:00"],
)
def test_a_time_beyond_what_utc_can_hold_is_a_400(world: World, query: str) -> None:
    response = api_as(world, "platform_admin").get(f"/api/v1/audit-events/?{query}")
    assert _error(response, 400) == "invalid"
    export = api_as(world, "platform_admin").get(f"/api/v1/audit-events/export/?{query}")
    assert export.status_code == 400


@pytest.mark.parametrize("path", ["/api/v1/audit-events/", "/api/v1/audit-events/export/"])
def test_an_action_prefix_longer_than_any_action_is_a_400(world: World, path: str) -> None:
    # The prefix is a LIKE pattern, and SQLite (the embedded database) refuses one over 50,000
    # bytes with an OperationalError (once a row is compared): a 500, or a CSV cut off after its
    # header. No action is longer than the column's 64.
    AuditEvent.objects.create(action="lob.updated", outcome="success", lob_slug="lob-a")
    client = api_as(world, "lob_admin")
    assert client.get(path, {"action": "a" * 64}).status_code == 200
    response = client.get(path, {"action": "a" * 60_000})
    assert _error(response, 400) == "invalid"


@pytest.mark.parametrize("position", ["9999-12-31T23:59:59-14:00", "not-a-time"])
def test_a_jobs_cursor_holding_an_unusable_time_is_404(world: World, position: str) -> None:
    cursor = base64.b64encode(f"p={position}".encode()).decode()
    response = api_as(world, "analyst").get(f"/api/v1/jobs/?cursor={quote(cursor)}")
    assert _error(response, 404) == "not_found"


def test_the_jobs_page_takes_a_subscription_that_is_not_an_ascii_number(world: World, client):
    client.force_login(world.user("analyst"))
    response = client.get("/jobs/?subscription=%C2%B2")  # "²": isdigit() but not int()
    assert response.status_code == 200


def test_the_subscription_filter_does_not_tell_other_lobs_ids_from_missing_ones(
    world: World,
) -> None:
    theirs = SubscriptionFactory(lob=world.lob_b)
    _job(theirs, world.user("other_lob_member"))
    mine = SubscriptionFactory(lob=world.lob_a)
    my_job = _job(mine, world.user("analyst"))
    client = api_as(world, "analyst")

    other = client.get(f"/api/v1/jobs/?subscription={theirs.pk}")
    missing = client.get("/api/v1/jobs/?subscription=987654321")
    not_a_number = client.get("/api/v1/jobs/?subscription=abc")
    own = client.get(f"/api/v1/jobs/?subscription={mine.pk}")

    for response in (other, missing, not_a_number):
        assert (response.status_code, response.json()["results"]) == (200, [])
    assert [job["id"] for job in own.json()["results"]] == [str(my_job.pk)]


# --- Paths, methods, upstream failures ------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/v1/nope/", "/api/v1/aws-accounts/abc/", "/api/v1/subscriptions/1.5/usage/"]
)
def test_an_api_path_that_names_nothing_is_a_json_404(world: World, path: str) -> None:
    assert _error(api_as(world, "analyst").get(path), 404) == "not_found"


MANY_FIELDS = "&".join(f"f{n}=1" for n in range(1200))
BIG_FIELD = (
    b'--xx\r\nContent-Disposition: form-data; name="role"\r\n\r\n'
    + b"x" * (3 * 1024 * 1024)
    + b"\r\n--xx--\r\n"
)


@pytest.mark.parametrize(
    ("method", "path", "content_type", "body", "code"),
    [
        ("GET", f"/api/v1/lobs/?{MANY_FIELDS}", None, b"", "too_many_fields"),
        (
            "POST",
            "/api/v1/memberships/",
            "application/x-www-form-urlencoded",
            MANY_FIELDS.encode(),
            "too_many_fields",
        ),
        (
            "POST",
            "/api/v1/memberships/",
            "multipart/form-data; boundary=xx",
            BIG_FIELD,
            "request_too_large",
        ),
    ],
)
def test_a_request_django_refuses_is_the_apis_json_400(
    world: World, method: str, path: str, content_type: str | None, body: bytes, code: str
) -> None:
    # Django refuses these itself (SuspiciousOperation): its HTML "Bad Request (400)" page was
    # the only answer of the API that had not the API's error shape.
    extra = {"content_type": content_type} if content_type else {}
    response = api_as(world, "lob_admin").generic(method, path, body, **extra)

    assert response["Content-Type"] == "application/json"
    assert _error(response, 400) == code


def test_a_page_django_refuses_is_still_the_html_400(world: World, client) -> None:
    client.force_login(world.user("analyst"))
    response = client.get(f"/jobs/?{MANY_FIELDS}")
    assert response.status_code == 400
    assert "json" not in response["Content-Type"]


def test_a_page_path_that_names_nothing_is_an_html_404(client) -> None:
    response = client.get("/nothing-here/")
    assert response.status_code == 404
    assert "json" not in response["Content-Type"]
    page = response.content.decode()
    assert "Not found" in page and "/nothing-here/" in page and 'href="/"' in page


@pytest.mark.parametrize(
    ("path", "back"),
    [
        ("/subscriptions/{sub}/try/", "/subscriptions/{sub}/"),
        ("/subscriptions/{sub}/jobs/", "/subscriptions/{sub}/"),
        ("/lobs/lob-a/members/", "/lobs/lob-a/"),
    ],
)
def test_a_form_actions_url_opened_again_goes_back_to_its_page(
    world: World, client, path: str, back: str
) -> None:
    # The URL a form posted to stays in the address bar after an error; opening it again (a new
    # tab, a bookmark, Enter) lands on the form's page, not a blank 405.
    subscription = SubscriptionFactory(lob=world.lob_a)
    client.force_login(world.user("lob_admin"))

    response = client.get(path.format(sub=subscription.pk))

    assert response.status_code == 302
    assert response["Location"] == back.format(sub=subscription.pk)
    assert client.get(response["Location"]).status_code == 200


def test_deleting_a_lob_with_subscriptions_is_409_and_keeps_it(world: World) -> None:
    SubscriptionFactory(lob=world.lob_a)
    response = api_as(world, "platform_admin").delete("/api/v1/lobs/lob-a/")
    assert _error(response, 409) == "lob_in_use"
    assert Lob.objects.filter(slug="lob-a").exists()
    assert not AuditEvent.objects.filter(action="lob.deleted").exists()


def test_an_aws_failure_reading_a_jobs_results_is_a_502(world: World, monkeypatch) -> None:
    job = _job(SubscriptionFactory(lob=world.lob_a), world.user("analyst"))

    def fail(**_: object) -> None:
        raise aws_gateway.NotFound("NoSuchKey", aws_code="NoSuchKey", operation="GetObject")

    monkeypatch.setattr(jobs, "job_results", fail)
    response = api_as(world, "analyst").get(f"/api/v1/jobs/{job.pk}/results/")
    assert _error(response, 502) == "upstream_error"
    assert "NoSuchKey" not in response.json()["detail"]
    assert Job.objects.filter(pk=job.pk).exists()
