"""OpenAPI schema and Swagger UI served offline; request ids on every response."""

from __future__ import annotations

import logging
import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from portal.middleware import RequestIdLogFilter

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(client: Client, django_user_model) -> Client:
    """Signed in: the API's description is for its users."""
    client.force_login(django_user_model.objects.create(username="reader", idp_subject="sub-r"))
    return client


def test_the_api_description_is_for_signed_in_users_only() -> None:
    anonymous = Client()
    schema = anonymous.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = anonymous.get("/api/docs/")

    assert schema.status_code in (401, 403) and schema.json()["code"]
    assert docs.status_code == 302 and docs["Location"].startswith("/login/?next=/api/docs/")


def test_the_favicon_is_the_portals_icon() -> None:
    response = Client().get("/favicon.ico")
    assert (response.status_code, response["Location"]) == (301, "/static/img/gatehouse.svg")


def test_schema_documents_me_and_bearer_auth(client: Client) -> None:
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert "/api/v1/me/" in schema["paths"]
    scheme = schema["components"]["securitySchemes"]["cognitoAccessToken"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}


def test_swagger_ui_loads_only_assets_served_by_the_portal(client: Client) -> None:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", html)
    assert external == []
    assets = re.findall(r"""(?:src|href)=["'](/static/[^"']+)""", html)
    assert assets, "Swagger UI should load its bundle from /static/"
    for asset in assets:
        assert finders.find(asset.removeprefix("/static/")), asset


def test_swagger_ui_leads_back_to_the_portal(client: Client) -> None:
    # The only page of the top bar's without the portal's bar: Back was the only way out.
    html = client.get("/api/docs/").content.decode()

    assert '<a href="/">Back to the portal</a>' in html
    assert 'id="swagger-ui"' in html and "swagger-ui-bundle.js" in html  # the page itself


def test_pages_reference_no_external_asset(client: Client) -> None:
    html = client.get("/login/").content.decode()
    assert re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", html) == []


def test_response_carries_a_fresh_request_id(client: Client) -> None:
    first = client.get("/healthz")["X-Request-Id"]
    second = client.get("/healthz")["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_well_formed_incoming_request_id_is_kept(client: Client) -> None:
    response = client.get("/healthz", HTTP_X_REQUEST_ID="lb-1234-abcd")
    assert response["X-Request-Id"] == "lb-1234-abcd"


def test_suspicious_incoming_request_id_is_replaced(client: Client) -> None:
    response = client.get("/healthz", HTTP_X_REQUEST_ID="evil\nline injected")
    assert response["X-Request-Id"] != "evil\nline injected"
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-Id"])


def test_djangos_own_request_log_lines_carry_the_request_id(client: Client, caplog) -> None:
    # django.request logs 4xx answers after the middleware chain has returned.
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get("/api/v1/no-such-thing/")

    (record,) = [r for r in caplog.records if r.name == "django.request"]
    RequestIdLogFilter().filter(record)
    assert record.request_id == response["X-Request-Id"]
