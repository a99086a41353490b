"""The API answers what its OpenAPI schema says: statuses, content types, headers and bodies.

A contract test (schemathesis, run against every operation as an analyst, a LOB admin, a platform
admin and an anonymous caller) found these; each is pinned here with a request that showed it.
"""

from __future__ import annotations

from typing import Any

import pytest

from accounts.models import AuditEvent, Membership
from tests.accounts.test_tenancy_api import api_as
from tests.api_schema import assert_documented, load_schema
from tests.factories import JobFactory, SubscriptionFactory
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> World:
    return build_world()


@pytest.fixture
def schema(world: World) -> dict[str, Any]:
    return load_schema(api_as(world, "analyst"))


def _viewer_membership(world: World) -> str:
    return str(Membership.objects.get(user=world.user("viewer")).pk)


LOB_A_AGAIN = {"slug": "lob-a", "name": "A", "aws_account": "111111111111"}
LOB_C = {"slug": "lob-c", "name": "C", "aws_account": "111111111111"}

# (principal, method, path, JSON body or None): each answers an error status. Until the schema
# listed errors at all, every one of them was a status the schema said could not happen.
ERROR_ANSWERS = [
    ("anonymous", "get", "/api/v1/me/", None),  # 401
    ("anonymous", "post", "/api/v1/subscriptions/1/authorize/", None),  # 401
    ("analyst", "get", "/api/v1/lobs/lob-b/", None),  # 404: another LOB's
    ("analyst", "get", "/api/v1/lobs/?page=99", None),  # 404: no such page
    ("analyst", "get", "/api/v1/jobs/?cursor=%25ZZ", None),  # 404: not a cursor
    ("analyst", "get", "/api/v1/memberships/?role=owner", None),  # 400: not a role
    ("analyst", "get", "/api/v1/subscriptions/?status=gone", None),  # 400
    ("analyst", "post", "/api/v1/lobs/", {"slug": "lob-c"}),  # 403
    ("analyst", "delete", "/api/v1/memberships/{viewer}/", None),  # 403
    ("lob_admin", "patch", "/api/v1/lobs/lob-a/", {"name": "A"}),  # 403
    ("platform_admin", "post", "/api/v1/lobs/", {"slug": "lob-c"}),  # 400
    ("platform_admin", "put", "/api/v1/aws-accounts/111111111111/", {}),  # 400
    ("platform_admin", "post", "/api/v1/lobs/", LOB_A_AGAIN),  # 409
    ("platform_admin", "delete", "/api/v1/aws-accounts/111111111111/", None),  # 409: in use
    ("platform_admin", "delete", "/api/v1/lobs/nope/", None),  # 404
    ("platform_admin", "patch", "/api/v1/memberships/999999/", {"role": "viewer"}),  # 404
]


@pytest.mark.parametrize(("principal", "method", "path", "body"), ERROR_ANSWERS)
def test_error_answers_are_documented_with_the_error_shape(
    world: World, schema: dict[str, Any], principal: str, method: str, path: str, body: Any
) -> None:
    path = path.replace("{viewer}", _viewer_membership(world))
    client = api_as(world, principal)
    response = getattr(client, method)(path, body, format="json")

    assert response.status_code >= 400
    assert_documented(schema, method, path, response)


def test_a_body_of_a_type_no_parser_reads_is_a_documented_415(
    world: World, schema: dict[str, Any]
) -> None:
    response = api_as(world, "platform_admin").generic(
        "POST", "/api/v1/listings/", b"<listing/>", content_type="application/xml"
    )

    assert response.status_code == 415
    assert_documented(schema, "post", "/api/v1/listings/", response)


def test_every_operation_documents_the_refusal_of_an_anonymous_caller(
    schema: dict[str, Any],
) -> None:
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            refusal = operation["responses"].get("401")
            assert refusal is not None, f"{method.upper()} {path}"
            assert refusal["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }
            assert refusal["headers"]["WWW-Authenticate"]["required"] is True


def test_the_proxy_paths_own_401_names_the_scheme_too(world: World, schema: dict[str, Any]) -> None:
    # The seller token's refusal came from the service, past the handler's WWW-Authenticate: a
    # 401 without the header that RFC 9110 requires and the schema lists.
    subscription = SubscriptionFactory(lob=world.lob_a)
    path = f"/api/v1/subscriptions/{subscription.pk}/invocations/"

    response = api_as(world, "analyst").generic(
        "POST", path, b"email\na@example.com\n", content_type="text/csv"
    )

    assert response.status_code == 401
    assert response.json()["code"] == "token_invalid"
    assert response["WWW-Authenticate"] == 'Bearer realm="gatehouse"'
    assert_documented(schema, "post", path, response)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/audit-events/", "/api/v1/audit-events/{event}/", "/api/v1/audit-events/export/"],
)
def test_the_audit_trails_refusal_of_a_member_who_is_no_admin_is_documented(
    world: World, schema: dict[str, Any], path: str
) -> None:
    event = AuditEvent.objects.create(action="x.y", outcome="success", lob_slug="lob-a")
    path = path.replace("{event}", str(event.pk))

    response = api_as(world, "analyst").get(path)

    assert response.status_code == 403
    assert_documented(schema, "get", path, response)


def test_the_audit_export_is_documented_as_csv_with_the_lists_filters(
    world: World, schema: dict[str, Any]
) -> None:
    admin = api_as(world, "platform_admin")

    export = admin.get("/api/v1/audit-events/export/?lob=lob-a")
    refused = admin.get("/api/v1/audit-events/export/?outcome=maybe")

    assert export.status_code == 200
    assert_documented(schema, "get", "/api/v1/audit-events/export/", export)
    assert refused.status_code == 400
    assert_documented(schema, "get", "/api/v1/audit-events/export/", refused)
    documented = schema["paths"]["/api/v1/audit-events/export/"]["get"]["parameters"]
    assert {p["name"] for p in documented} >= {"action", "outcome", "actor", "lob", "since"}


@pytest.mark.parametrize("path", ["/api/v1/jobs/", "/api/v1/jobs/{job}/"])
def test_a_job_whose_submitter_is_gone_is_documented(
    world: World, schema: dict[str, Any], path: str
) -> None:
    # The schema said submitted_by is a string (optional, writable); a job outlives the user
    # who submitted it (SET_NULL) and then shows null.
    job = JobFactory(subscription=SubscriptionFactory(lob=world.lob_a), submitted_by=None)
    path = path.replace("{job}", str(job.pk))

    response = api_as(world, "analyst").get(path)

    assert response.status_code == 200
    assert_documented(schema, "get", path, response)
    job_schema = schema["components"]["schemas"]["Job"]
    assert "submitted_by" in job_schema["required"]
    assert job_schema["properties"]["submitted_by"]["readOnly"] is True


def test_a_new_lob_is_answered_with_every_field_the_schema_requires(
    world: World, schema: dict[str, Any]
) -> None:
    # The 201 showed the unannotated row: no member_count, which the schema requires.
    response = api_as(world, "platform_admin").post("/api/v1/lobs/", LOB_C, format="json")

    assert response.status_code == 201, response.content
    assert_documented(schema, "post", "/api/v1/lobs/", response)
    assert response.json()["member_count"] == 0
    assert response.json()["my_role"] is None


def test_a_jobs_file_is_described_as_a_file_part_not_as_a_url(schema: dict[str, Any]) -> None:
    # A FileField was described as {"type": "string", "format": "uri"}: a client built from the
    # schema sent the file as a text field, refused with "The submitted data was not a file".
    body = schema["paths"]["/api/v1/jobs/"]["post"]["requestBody"]["content"]
    components = schema["components"]["schemas"]
    multipart = components[body["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]]
    as_json = components[body["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]

    assert multipart["properties"]["file"] == {"type": "string", "format": "binary"}
    assert "file" not in as_json["properties"]
    assert {"subscription", "input_uri"} <= set(as_json["required"])
