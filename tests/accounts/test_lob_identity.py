"""A LOB's slug is its identity (S3 prefix, audit trail, Studio mapping): it never changes and is
never given to a second LOB. And refusals come before lookups, so they tell nobody which account
ids, usernames or other LOBs exist."""

from __future__ import annotations

import csv
import io

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import AuditEvent, Lob, MappingOutbox, Membership
from accounts.services import mapping_publication
from tests.factories import AwsAccountFactory, LobFactory, MembershipFactory, UserFactory
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def world() -> World:
    return build_world()


def api_as(world: World, principal: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(world.user(principal))
    return client


# --- The slug is fixed ----------------------------------------------------------------------------


def test_a_lobs_slug_cannot_change_through_the_api(world: World) -> None:
    response = api_as(world, "platform_admin").patch(
        "/api/v1/lobs/lob-a/", {"slug": "lob-z", "name": "Renamed"}, format="json"
    )

    assert (response.status_code, response.json()["code"]) == (400, "slug_immutable")
    assert Lob.objects.get(pk=world.lob_a.pk).slug == "lob-a"
    assert Lob.objects.get(pk=world.lob_a.pk).name != "Renamed"


def test_the_admin_shows_the_slug_read_only_once_the_lob_exists(world: World) -> None:
    staff = Client()
    staff.force_login(world.user("platform_admin"))
    page = staff.get(f"/admin/accounts/lob/{world.lob_a.pk}/change/")
    adding = staff.get("/admin/accounts/lob/add/")

    assert page.status_code == 200
    assert 'name="slug"' not in page.content.decode()
    assert 'name="slug"' in adding.content.decode()


def test_a_deleted_lobs_slug_is_not_given_to_a_new_lob(world: World) -> None:
    admin = api_as(world, "platform_admin")
    assert admin.delete("/api/v1/lobs/lob-b/").status_code == 204

    again = admin.post(
        "/api/v1/lobs/",
        {"slug": "lob-b", "name": "Someone else", "aws_account": "222222222222"},
        format="json",
    )
    fresh = admin.post(
        "/api/v1/lobs/",
        {"slug": "lob-c", "name": "New", "aws_account": "222222222222"},
        format="json",
    )

    assert (again.status_code, again.json()["code"]) == (409, "slug_used_before")
    assert not Lob.objects.filter(slug="lob-b").exists()
    assert fresh.status_code == 201


# --- Refused before anything is looked up ---------------------------------------------------------


@pytest.mark.parametrize("username", ["outsider", "nobody-by-this-name"])
def test_a_viewer_adding_a_member_is_refused_whoever_is_named(world: World, username: str) -> None:
    response = api_as(world, "viewer").post(
        "/api/v1/memberships/", {"lob": "lob-a", "user": username, "role": "viewer"}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")


@pytest.mark.parametrize("account", ["111111111111", "999999999999"])
def test_a_lob_admin_creating_a_lob_is_refused_whatever_account_is_named(
    world: World, account: str
) -> None:
    response = api_as(world, "lob_admin").post(
        "/api/v1/lobs/", {"slug": "lob-x", "name": "X", "aws_account": account}, format="json"
    )
    assert (response.status_code, response.json()["code"]) == (403, "permission_denied")


def test_a_lob_admin_changing_their_lob_is_refused_before_the_body_is_read(world: World) -> None:
    response = api_as(world, "lob_admin").patch(
        "/api/v1/lobs/lob-a/", {"aws_account": "999999999999"}, format="json"
    )
    assert response.status_code == 403


def test_another_lob_on_the_same_account_is_not_named_to_a_lob_admin(world: World) -> None:
    LobFactory(slug="secret-project", aws_account=world.lob_a.aws_account)

    mine = api_as(world, "lob_admin").get("/api/v1/aws-accounts/111111111111/")
    everything = api_as(world, "platform_admin").get("/api/v1/aws-accounts/111111111111/")

    assert mine.json()["lobs"] == ["lob-a"]
    assert everything.json()["lobs"] == ["lob-a", "secret-project"]


def test_filtering_accounts_by_another_lob_sharing_one_finds_nothing(world: World) -> None:
    LobFactory(slug="secret-project", aws_account=world.lob_a.aws_account)

    mine = api_as(world, "lob_admin").get("/api/v1/aws-accounts/?lob=secret-project")
    everything = api_as(world, "platform_admin").get("/api/v1/aws-accounts/?lob=secret-project")

    # A match would tell the LOB admin that secret-project exists and shares their account.
    assert mine.json()["count"] == 0
    assert [a["account_id"] for a in everything.json()["results"]] == ["111111111111"]
    own = api_as(world, "lob_admin").get("/api/v1/aws-accounts/?lob=lob-a")
    assert [a["account_id"] for a in own.json()["results"]] == ["111111111111"]


@pytest.mark.parametrize("path", ["/api/v1/memberships/", "/api/v1/memberships/{pk}/"])
@pytest.mark.parametrize("principal", ["viewer", "lob_admin"])
def test_the_browsable_api_lists_no_usernames_in_its_forms(
    world: World, principal: str, path: str
) -> None:
    own = Membership.objects.get(user=world.user(principal))
    browser = Client()
    browser.force_login(world.user(principal))

    page = browser.get(path.format(pk=own.pk), HTTP_ACCEPT="text/html")

    assert page.status_code == 200
    assert page["Content-Type"].startswith("text/html")
    # Other LOBs' people and people in no LOB are not offered as choices (nor named at all).
    body = page.content.decode()
    assert "lob-b-analyst" not in body
    assert "outsider" not in body
    assert "platform-admin" not in body


# --- The Studio mapping names only who may open Studio --------------------------------------------


def test_viewers_are_published_only_when_they_may_open_studio(world: World, settings) -> None:
    settings.STUDIO_ALLOW_VIEWERS = False
    assert mapping_publication.desired_user_item(username="lob-a-viewer") is None
    assert mapping_publication.desired_user_item(username="lob-a-analyst")["LOB"] == "lob-a"

    settings.STUDIO_ALLOW_VIEWERS = True
    assert mapping_publication.desired_user_item(username="lob-a-viewer")["LOB"] == "lob-a"


def test_a_role_change_republishes_the_member(world: World, settings) -> None:
    settings.STUDIO_ALLOW_VIEWERS = False
    person = UserFactory(username="changing")
    membership = MembershipFactory(user=person, lob=world.lob_a, role=Membership.Role.ANALYST)
    MappingOutbox.objects.all().delete()

    response = api_as(world, "lob_admin").patch(
        f"/api/v1/memberships/{membership.pk}/", {"role": "viewer"}, format="json"
    )

    assert response.status_code == 200
    assert MappingOutbox.objects.filter(kind="user", key="changing").exists()
    assert mapping_publication.desired_user_item(username="changing") is None


# --- The CSV export ------------------------------------------------------------------------------


@pytest.mark.parametrize("lead", ["\t", "\r", "=", "+", "-", "@"])
def test_the_audit_export_neutralises_formulas_behind_tabs_and_returns(
    world: World, lead: str
) -> None:
    AuditEvent.objects.create(
        action="studio.open", outcome="refused", target_id=f'{lead}=HYPERLINK("x")'
    )

    response = api_as(world, "platform_admin").get("/api/v1/audit-events/export/")

    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    (row,) = [row for row in rows if row["action"] == "studio.open"]
    assert row["target_id"].startswith("'")


def test_the_slug_check_reads_only_lob_creations(world: World) -> None:
    # A refused request naming a slug (anyone may send one) does not reserve it.
    AuditEvent.objects.create(action="studio.open", outcome="refused", lob_slug="lob-q")
    response = api_as(world, "platform_admin").post(
        "/api/v1/lobs/",
        {"slug": "lob-q", "name": "Q", "aws_account": AwsAccountFactory().account_id},
        format="json",
    )
    assert response.status_code == 201
