"""The LOB boundary in the REST API: every endpoint × every kind of principal × own/other LOB."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import AuditEvent, AwsAccount, Lob, MappingOutbox, Membership
from portal.query_count import count_queries
from tests.factories import LobFactory, MembershipFactory, UserFactory
from tests.tenancy_world import PRINCIPALS, World, build_world

pytestmark = pytest.mark.django_db

ADMIN, LOB_ADMIN, ANALYST, VIEWER, OTHER, OUTSIDER, ANON = PRINCIPALS


@pytest.fixture
def world() -> World:
    return build_world()


def api_as(world: World, principal: str) -> APIClient:
    client = APIClient()
    user = world.user(principal)
    if user is not None:
        client.force_authenticate(user)
    return client


def membership_in(world: World, lob: str) -> Membership:
    """A membership of a plain analyst in that LOB (a target that is safe to change)."""
    target = world.lob_a if lob == "a" else world.lob_b
    return MembershipFactory(lob=target, role=Membership.Role.ANALYST)


# (principal, expected status for lob-a, expected status for lob-b)
READ_LOB = [
    (ADMIN, 200, 200),
    (LOB_ADMIN, 200, 404),
    (ANALYST, 200, 404),
    (VIEWER, 200, 404),
    (OTHER, 404, 200),
    (OUTSIDER, 404, 404),
    (ANON, 401, 401),
]
CHANGE_LOB = [
    (ADMIN, 200, 200),
    (LOB_ADMIN, 403, 404),
    (ANALYST, 403, 404),
    (VIEWER, 403, 404),
    (OTHER, 404, 403),
    (OUTSIDER, 404, 404),
    (ANON, 401, 401),
]
READ_ACCOUNT = [
    (ADMIN, 200, 200),
    (LOB_ADMIN, 200, 404),
    (ANALYST, 404, 404),
    (VIEWER, 404, 404),
    (OTHER, 404, 200),  # OTHER is lob-b's admin
    (OUTSIDER, 404, 404),
    (ANON, 401, 401),
]
CHANGE_ACCOUNT = [
    (ADMIN, 200, 200),
    (LOB_ADMIN, 403, 404),
    (ANALYST, 404, 404),
    (VIEWER, 404, 404),
    (OTHER, 404, 403),
    (OUTSIDER, 404, 404),
    (ANON, 401, 401),
]
READ_MEMBERSHIP = READ_LOB
MANAGE_MEMBERSHIP = [
    (ADMIN, 200, 200),
    (LOB_ADMIN, 200, 404),
    (ANALYST, 403, 404),
    (VIEWER, 403, 404),
    (OTHER, 404, 200),
    (OUTSIDER, 404, 404),
    (ANON, 401, 401),
]


def status_for(row: tuple, lob: str) -> int:
    return row[1] if lob == "a" else row[2]


def cases(table: list[tuple]) -> list:
    return [
        pytest.param(row[0], lob, status_for(row, lob), id=f"{row[0]}-lob-{lob}")
        for row in table
        for lob in ("a", "b")
    ]


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(READ_LOB))
def test_retrieve_lob(world: World, principal: str, lob: str, expected: int) -> None:
    response = api_as(world, principal).get(f"/api/v1/lobs/lob-{lob}/")
    assert response.status_code == expected
    if expected != 200:
        assert response.json()["code"]


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(CHANGE_LOB))
def test_update_lob(world: World, principal: str, lob: str, expected: int) -> None:
    response = api_as(world, principal).patch(
        f"/api/v1/lobs/lob-{lob}/", {"description": "changed"}, format="json"
    )
    assert response.status_code == expected
    changed = Lob.objects.get(slug=f"lob-{lob}").description == "changed"
    assert changed is (expected == 200)


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(CHANGE_LOB))
def test_delete_lob(world: World, principal: str, lob: str, expected: int) -> None:
    response = api_as(world, principal).delete(f"/api/v1/lobs/lob-{lob}/")
    expected = 204 if expected == 200 else expected
    assert response.status_code == expected
    assert Lob.objects.filter(slug=f"lob-{lob}").exists() is (expected != 204)


@pytest.mark.parametrize(
    ("principal", "expected"),
    [(ADMIN, 201), (LOB_ADMIN, 403), (ANALYST, 403), (VIEWER, 403), (OTHER, 403),
     (OUTSIDER, 403), (ANON, 401)],
)  # fmt: skip
def test_create_lob_is_for_platform_admins(world: World, principal: str, expected: int) -> None:
    response = api_as(world, principal).post(
        "/api/v1/lobs/",
        {"slug": "lob-c", "name": "LOB C", "aws_account": "111111111111"},
        format="json",
    )
    assert response.status_code == expected
    assert Lob.objects.filter(slug="lob-c").exists() is (expected == 201)


@pytest.mark.parametrize(
    ("principal", "visible"),
    [(ADMIN, ["lob-a", "lob-b"]), (LOB_ADMIN, ["lob-a"]), (ANALYST, ["lob-a"]),
     (VIEWER, ["lob-a"]), (OTHER, ["lob-b"]), (OUTSIDER, [])],
)  # fmt: skip
def test_lob_list_shows_only_own_lobs(world: World, principal: str, visible: list[str]) -> None:
    body = api_as(world, principal).get("/api/v1/lobs/").json()
    assert [lob["slug"] for lob in body["results"]] == visible


def test_lob_list_carries_role_and_member_count(world: World) -> None:
    body = api_as(world, ANALYST).get("/api/v1/lobs/").json()
    assert body["results"][0]["my_role"] == "analyst"
    assert body["results"][0]["member_count"] == 3
    assert body["results"][0]["aws_account"] == "111111111111"


def test_anonymous_list_is_refused(world: World) -> None:
    assert api_as(world, ANON).get("/api/v1/lobs/").status_code == 401


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(READ_ACCOUNT))
def test_retrieve_account(world: World, principal: str, lob: str, expected: int) -> None:
    account_id = "111111111111" if lob == "a" else "222222222222"
    response = api_as(world, principal).get(f"/api/v1/aws-accounts/{account_id}/")
    assert response.status_code == expected
    if expected == 200:
        assert "external_id" not in response.json()


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(CHANGE_ACCOUNT))
def test_update_account(world: World, principal: str, lob: str, expected: int) -> None:
    account_id = "111111111111" if lob == "a" else "222222222222"
    response = api_as(world, principal).patch(
        f"/api/v1/aws-accounts/{account_id}/", {"name": "Renamed"}, format="json"
    )
    assert response.status_code == expected
    assert (AwsAccount.objects.get(account_id=account_id).name == "Renamed") is (expected == 200)


@pytest.mark.parametrize(
    ("principal", "visible"),
    [(ADMIN, ["111111111111", "222222222222"]), (LOB_ADMIN, ["111111111111"]), (ANALYST, []),
     (VIEWER, []), (OTHER, ["222222222222"]), (OUTSIDER, [])],
)  # fmt: skip
def test_account_list_is_scoped(world: World, principal: str, visible: list[str]) -> None:
    body = api_as(world, principal).get("/api/v1/aws-accounts/").json()
    assert [account["account_id"] for account in body["results"]] == visible


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(READ_MEMBERSHIP))
def test_retrieve_membership(world: World, principal: str, lob: str, expected: int) -> None:
    membership = membership_in(world, lob)
    response = api_as(world, principal).get(f"/api/v1/memberships/{membership.pk}/")
    assert response.status_code == expected


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(MANAGE_MEMBERSHIP))
def test_change_membership_role(world: World, principal: str, lob: str, expected: int) -> None:
    membership = membership_in(world, lob)
    response = api_as(world, principal).patch(
        f"/api/v1/memberships/{membership.pk}/", {"role": "viewer"}, format="json"
    )
    assert response.status_code == expected
    membership.refresh_from_db()
    assert (membership.role == "viewer") is (expected == 200)


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(MANAGE_MEMBERSHIP))
def test_delete_membership(world: World, principal: str, lob: str, expected: int) -> None:
    membership = membership_in(world, lob)
    response = api_as(world, principal).delete(f"/api/v1/memberships/{membership.pk}/")
    expected = 204 if expected == 200 else expected
    assert response.status_code == expected
    assert Membership.objects.filter(pk=membership.pk).exists() is (expected != 204)


@pytest.mark.parametrize(
    ("principal", "lob", "expected"),
    [pytest.param(p, lob, {200: 201, 404: 400}.get(status_for(row, lob), status_for(row, lob)),
                  id=f"{p}-lob-{lob}")
     for row in MANAGE_MEMBERSHIP for p in [row[0]] for lob in ("a", "b")],
)  # fmt: skip
def test_add_member(world: World, principal: str, lob: str, expected: int) -> None:
    """Adding to a LOB one cannot see is a validation error: the LOB does not exist for them."""
    newcomer = UserFactory(username="newcomer")
    response = api_as(world, principal).post(
        "/api/v1/memberships/",
        {"lob": f"lob-{lob}", "user": "newcomer", "role": "viewer"},
        format="json",
    )
    assert response.status_code == expected, response.content
    assert Membership.objects.filter(user=newcomer).exists() is (expected == 201)


def test_member_list_is_scoped_and_filterable(world: World) -> None:
    client = api_as(world, ANALYST)
    everyone = client.get("/api/v1/memberships/").json()["results"]
    assert {m["lob"] for m in everyone} == {"lob-a"}
    viewers = client.get("/api/v1/memberships/?role=viewer").json()["results"]
    assert [m["user"] for m in viewers] == ["lob-a-viewer"]
    assert client.get("/api/v1/memberships/?lob=lob-b").json()["results"] == []
    by_user = api_as(world, ADMIN).get("/api/v1/memberships/?user=lob-b-analyst").json()
    assert [m["lob"] for m in by_user["results"]] == ["lob-b"]


def test_lob_admin_adds_member_with_audit_and_outbox(world: World) -> None:
    newcomer = UserFactory(username="newcomer")

    response = api_as(world, LOB_ADMIN).post(
        "/api/v1/memberships/",
        {"lob": "lob-a", "user": "newcomer", "role": "analyst"},
        format="json",
        HTTP_X_REQUEST_ID="req-12345678",
    )

    assert response.status_code == 201
    event = AuditEvent.objects.get(action="membership.created")
    assert event.actor == world.user(LOB_ADMIN)
    assert event.lob_slug == "lob-a"
    assert event.request_id == "req-12345678"
    assert event.detail["after"] == {"user": "newcomer", "lob": "lob-a", "role": "analyst"}
    assert MappingOutbox.objects.filter(kind="user", key=newcomer.username).exists()


def test_duplicate_membership_is_409(world: World) -> None:
    response = api_as(world, ADMIN).post(
        "/api/v1/memberships/",
        {"lob": "lob-a", "user": "lob-a-analyst", "role": "viewer"},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["code"] == "already_member"


def test_lob_admin_cannot_remove_the_last_admin(world: World) -> None:
    own = Membership.objects.get(user=world.user(LOB_ADMIN), lob=world.lob_a)
    client = api_as(world, LOB_ADMIN)

    demote = client.patch(f"/api/v1/memberships/{own.pk}/", {"role": "viewer"}, format="json")
    remove = client.delete(f"/api/v1/memberships/{own.pk}/")

    assert (demote.status_code, demote.json()["code"]) == (409, "last_lob_admin")
    assert (remove.status_code, remove.json()["code"]) == (409, "last_lob_admin")


def test_membership_cannot_move_to_another_lob(world: World) -> None:
    membership = membership_in(world, "a")
    response = api_as(world, ADMIN).patch(
        f"/api/v1/memberships/{membership.pk}/", {"lob": "lob-b"}, format="json"
    )
    assert response.status_code == 400
    assert "lob" in response.json()["errors"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"account_id": "12345"}, "account_id"),
        ({"account_id": "0123456789012"}, "account_id"),
        ({"invoke_role_arn": "arn:aws:iam::999999999999:role/X"}, "invoke_role_arn"),
        ({"invoke_role_arn": "not-an-arn"}, "invoke_role_arn"),
        ({"results_bucket": "Bad_Bucket"}, "results_bucket"),
        ({"results_bucket": "192.168.1.1"}, "results_bucket"),
        ({"default_region": "mars-north-1"}, "default_region"),
        ({"sts_endpoint_url": "not a url"}, "sts_endpoint_url"),
    ],
)
def test_account_validation_names_the_field(world: World, payload: dict, field: str) -> None:
    body = {
        "account_id": "012345678901",
        "name": "New",
        "default_region": "eu-west-1",
        "invoke_role_arn": "arn:aws:iam::012345678901:role/GatehouseInvokeRole",
        "results_bucket": "gatehouse-results-new",
        **payload,
    }
    response = api_as(world, ADMIN).post("/api/v1/aws-accounts/", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid"
    assert field in response.json()["errors"]
    assert not AwsAccount.objects.filter(name="New").exists()


def test_account_id_keeps_leading_zeros_and_defaults_studio_role(world: World) -> None:
    response = api_as(world, ADMIN).post(
        "/api/v1/aws-accounts/",
        {
            "account_id": "012345678901",
            "name": "Zero",
            "invoke_role_arn": "arn:aws:iam::012345678901:role/GatehouseInvokeRole",
            "results_bucket": "gatehouse-results-zero",
            "external_id": "shared-secret",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["account_id"] == "012345678901"
    assert body["studio_role_arn"] == "arn:aws:iam::012345678901:role/SagemakerStudioAccessRole"
    assert body["has_external_id"] is True and "external_id" not in body
    event = AuditEvent.objects.get(action="aws_account.created")
    assert event.detail["after"]["external_id"] == "(set)"


def test_duplicate_lob_slug_is_409_not_500(world: World) -> None:
    response = api_as(world, ADMIN).post(
        "/api/v1/lobs/",
        {"slug": "lob-a", "name": "Again", "aws_account": "111111111111"},
        format="json",
    )
    assert response.status_code in (400, 409)
    assert response.json()["code"]


def test_account_in_use_cannot_be_deleted(world: World) -> None:
    response = api_as(world, ADMIN).delete("/api/v1/aws-accounts/111111111111/")
    assert (response.status_code, response.json()["code"]) == (409, "account_in_use")


def test_lob_update_is_audited_with_before_and_after(world: World) -> None:
    api_as(world, ADMIN).patch("/api/v1/lobs/lob-a/", {"name": "Alpha"}, format="json")
    event = AuditEvent.objects.get(action="lob.updated")
    assert event.detail["before"]["name"] == "Lob A"
    assert event.detail["after"]["name"] == "Alpha"


def test_me_lists_memberships(world: World) -> None:
    MembershipFactory(user=world.user(ANALYST), lob=world.lob_b, role=Membership.Role.VIEWER)
    body = api_as(world, ANALYST).get("/api/v1/me/").json()
    assert [(m["lob"], m["role"]) for m in body["memberships"]] == [
        ("lob-a", "analyst"),
        ("lob-b", "viewer"),
    ]


# --- Audit trail ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "expected", "lobs"),
    [(ADMIN, 200, {"lob-a", "lob-b"}), (LOB_ADMIN, 200, {"lob-a"}), (ANALYST, 403, None),
     (VIEWER, 403, None), (OTHER, 200, {"lob-b"}), (OUTSIDER, 403, None), (ANON, 401, None)],
)  # fmt: skip
def test_audit_events_are_scoped(world: World, principal: str, expected: int, lobs) -> None:
    admin = api_as(world, ADMIN)
    admin.patch("/api/v1/lobs/lob-a/", {"description": "x"}, format="json")
    admin.patch("/api/v1/lobs/lob-b/", {"description": "y"}, format="json")

    response = api_as(world, principal).get("/api/v1/audit-events/")

    assert response.status_code == expected
    if lobs is not None:
        seen = {event["lob_slug"] for event in response.json()["results"]}
        assert seen == lobs if principal != ADMIN else lobs <= seen


def _events_of_both_lobs() -> dict[str, AuditEvent]:
    """An event of lob-a, and one of lob-b whose action lob-a never had."""
    return {
        "a": AuditEvent.objects.create(action="lob.updated", outcome="success", lob_slug="lob-a"),
        "b": AuditEvent.objects.create(
            action="studio.open", outcome="success", lob_slug="lob-b", target_id="lob-b-only"
        ),
    }


# Platform admins, and the LOB's own admins (another LOB's event is not found); someone who is
# no LOB's admin reads no event at all (403).
READ_AUDIT_EVENT = [
    (ADMIN, 200, 200),
    (LOB_ADMIN, 200, 404),
    (ANALYST, 403, 403),
    (VIEWER, 403, 403),
    (OTHER, 404, 200),  # OTHER is lob-b's admin
    (OUTSIDER, 403, 403),
    (ANON, 401, 401),
]


@pytest.mark.parametrize(("principal", "lob", "expected"), cases(READ_AUDIT_EVENT))
def test_retrieve_audit_event(world: World, principal: str, lob: str, expected: int) -> None:
    event = _events_of_both_lobs()[lob]

    response = api_as(world, principal).get(f"/api/v1/audit-events/{event.pk}/")

    assert response.status_code == expected
    if expected == 200:
        assert response.json()["lob_slug"] == f"lob-{lob}"


def export_rows(client: APIClient, query: str) -> list[dict[str, str]]:
    response = client.get(f"/api/v1/audit-events/export/?{query}")
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.mark.parametrize(
    "query",
    ["", "lob=lob-b", "action=studio.", "action=studio.open&lob=lob-b", "lob=", "lob=lob-a"],
)
def test_a_lob_admins_export_names_no_other_lobs_event_whatever_the_filters(
    world: World, query: str
) -> None:
    events = _events_of_both_lobs()

    rows = export_rows(api_as(world, LOB_ADMIN), query)

    assert str(events["b"].pk) not in {row["id"] for row in rows}
    assert {row["lob_slug"] for row in rows} <= {"lob-a"}
    assert (str(events["a"].pk) in {row["id"] for row in rows}) is (
        query in ("", "lob=", "lob=lob-a")
    )
    # The platform admin's export, by the same query, is the control: lob-b's event is there.
    everything = {row["id"] for row in export_rows(api_as(world, ADMIN), query)}
    assert (str(events["b"].pk) in everything) is (query not in ("lob=lob-a",))


@pytest.mark.parametrize(
    ("principal", "expected"),
    [(ANALYST, 403), (VIEWER, 403), (OUTSIDER, 403), (ANON, 401)],
)
def test_the_export_is_refused_to_those_who_read_no_audit_trail(
    world: World, principal: str, expected: int
) -> None:
    _events_of_both_lobs()

    response = api_as(world, principal).get("/api/v1/audit-events/export/?lob=lob-a")

    assert response.status_code == expected
    assert "lob.updated" not in response.content.decode()


def test_audit_csv_export_is_filtered_and_safe(world: World) -> None:
    admin = api_as(world, ADMIN)
    admin.patch("/api/v1/lobs/lob-a/", {"name": "=HYPERLINK(1)"}, format="json")
    admin.patch("/api/v1/lobs/lob-b/", {"name": "B"}, format="json")

    response = admin.get("/api/v1/audit-events/export/?lob=lob-a")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert {row["lob_slug"] for row in rows} == {"lob-a"}
    assert all(not row["detail"].startswith("=") for row in rows)


def test_audit_filters(world: World) -> None:
    admin = api_as(world, ADMIN)
    admin.patch("/api/v1/lobs/lob-a/", {"description": "x"}, format="json")
    body = admin.get("/api/v1/audit-events/?action=lob.&outcome=success&actor=platform-admin")
    assert [e["action"] for e in body.json()["results"]] == ["lob.updated"]
    assert admin.get("/api/v1/audit-events/?since=2000-01-01T00:00:00Z").json()["count"] >= 1
    assert admin.get("/api/v1/audit-events/?until=2000-01-01T00:00:00Z").json()["count"] == 0


# --- Query counts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/lobs/", "/api/v1/memberships/", "/api/v1/aws-accounts/"])
def test_list_query_count_does_not_grow_with_page_size(world: World, path: str) -> None:
    for n in range(30):
        lob = LobFactory(slug=f"bulk-{n:02d}")
        MembershipFactory(lob=lob, role=Membership.Role.VIEWER)
    client = api_as(world, ADMIN)

    def queries(page_size: int) -> int:
        with count_queries() as counted:
            response = client.get(f"{path}?page_size={page_size}")
        assert response.status_code == 200
        assert len(response.json()["results"]) == page_size
        return counted.count

    assert queries(5) == queries(30) > 0


def test_a_new_external_id_in_place_of_another_is_audited_as_changed(world: World) -> None:
    admin = api_as(world, ADMIN)
    admin.patch("/api/v1/aws-accounts/111111111111/", {"external_id": "first"}, format="json")
    AuditEvent.objects.filter(action="aws_account.updated").delete()

    admin.patch("/api/v1/aws-accounts/111111111111/", {"external_id": "second"}, format="json")

    event = AuditEvent.objects.get(action="aws_account.updated")
    assert (event.detail["before"]["external_id"], event.detail["after"]["external_id"]) == (
        "(set)",
        "(changed)",
    )
    assert "second" not in str(event.detail)


def test_the_audit_export_answers_accept_text_csv_with_detail_as_json(world: World) -> None:
    admin = api_as(world, ADMIN)
    admin.patch("/api/v1/lobs/lob-a/", {"name": "Alpha"}, format="json")

    response = admin.get("/api/v1/audit-events/export/", HTTP_ACCEPT="text/csv")

    assert response.status_code == 200
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    (row,) = [row for row in rows if row["action"] == "lob.updated"]
    assert json.loads(row["detail"])["after"]["name"] == "Alpha"


def test_audit_pages_neither_skip_nor_repeat_events_of_the_same_moment(world: World) -> None:
    moment = timezone.now()
    made = [
        AuditEvent.objects.create(action="x.same", outcome="success", occurred_at=moment).pk
        for _ in range(7)
    ]
    AuditEvent.objects.filter(pk__in=made).update(occurred_at=moment)
    admin = api_as(world, ADMIN)

    seen = []
    for page in range(1, 8):
        body = admin.get(f"/api/v1/audit-events/?action=x.same&page_size=1&page={page}").json()
        seen += [event["id"] for event in body["results"]]

    assert sorted(seen) == sorted(str(pk) for pk in made)
