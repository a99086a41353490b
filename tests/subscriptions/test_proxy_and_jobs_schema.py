"""The proxy path's and the jobs' answers are the ones the OpenAPI schema describes: statuses,
and the headers a client reads (X-Invocation-Id, X-Result-Uri, Retry-After, Location)."""

from __future__ import annotations

from typing import Any

import pytest

from subscriptions.models import Job
from tests.api_schema import assert_documented, load_schema
from tests.factories import JobFactory
from tests.subscriptions.conftest import ACCOUNT_A, ProxyWorld

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(proxy: ProxyWorld) -> dict[str, Any]:
    return load_schema(proxy.client("analyst"))


def _headers_of(schema: dict[str, Any], path: str, method: str, status: str) -> set[str]:
    return set(schema["paths"][path][method]["responses"][status].get("headers", {}))


def test_an_invocations_answer_documents_its_headers(
    proxy: ProxyWorld, schema: dict[str, Any]
) -> None:
    response = proxy.invoke("analyst", proxy.subscription_a, token=proxy.token())

    assert response.status_code == 200, response.content
    path = f"/api/v1/subscriptions/{proxy.subscription_a.pk}/invocations/"
    assert_documented(schema, "post", path, response)
    # Only named in the description: a client generated from the schema could not read them.
    documented = _headers_of(schema, "/api/v1/subscriptions/{id}/invocations/", "post", "200")
    assert documented == {"X-Invocation-Id", "X-Result-Uri"}


def test_a_throttled_invocation_documents_retry_after(
    proxy: ProxyWorld, schema: dict[str, Any]
) -> None:
    token = proxy.token()
    proxy.knobs(throttle_rate=1.0)

    response = proxy.invoke("analyst", proxy.subscription_a, token=token)

    assert response.status_code == 429
    assert_documented(
        schema, "post", f"/api/v1/subscriptions/{proxy.subscription_a.pk}/invocations/", response
    )
    assert _headers_of(schema, "/api/v1/subscriptions/{id}/invocations/", "post", "429") == {
        "Retry-After"
    }


def test_a_download_documents_its_location(proxy: ProxyWorld, schema: dict[str, Any]) -> None:
    job = JobFactory(
        subscription=proxy.subscription_a,
        status=Job.Status.SUCCEEDED,
        output_uri=f"s3://gatehouse-results-{ACCOUNT_A}/gatehouse/lob-a/jobs/x/output.jsonl",
    )
    path = f"/api/v1/jobs/{job.pk}/download/"

    response = proxy.client("analyst").get(path)

    assert response.status_code == 302
    assert_documented(schema, "get", path, response)
    assert _headers_of(schema, "/api/v1/jobs/{id}/download/", "get", "302") == {"Location"}


def test_a_results_page_that_is_not_a_number_is_a_documented_400(
    proxy: ProxyWorld, schema: dict[str, Any]
) -> None:
    job = JobFactory(subscription=proxy.subscription_a, status=Job.Status.RUNNING)
    path = f"/api/v1/jobs/{job.pk}/results/?page=first"

    response = proxy.client("analyst").get(path)

    assert response.status_code == 400
    assert_documented(schema, "get", path, response)
    assert response.json()["errors"] == {"page": ["page and page_size are numbers."]}


def test_a_part_that_cannot_be_read_is_a_documented_502(
    proxy: ProxyWorld, schema: dict[str, Any]
) -> None:
    # The portal's upstream failed (S3 has no object under the part's key): 502 upstream_error.
    job = JobFactory(subscription=proxy.subscription_a, status=Job.Status.RUNNING)
    job.chunks.create(
        index=0,
        first_line=2,
        first_record=0,
        byte_offset=0,
        byte_length=10,
        record_count=1,
        output_key="gatehouse/lob-a/jobs/missing/part-00000.jsonl",
    )
    path = f"/api/v1/jobs/{job.pk}/results/"

    response = proxy.client("analyst").get(path)

    assert response.status_code == 502, response.content
    assert response.json()["code"] == "upstream_error"
    assert_documented(schema, "get", path, response)
