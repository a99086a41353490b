"""The LOB pages in the browser: who may see and change what, and how refusals are shown.

Two LOBs, a person for every role, every page and form post of the LOB pages; then what a LOB
admin's changes leave behind (membership, audit event, DynamoDB outbox row), refusals as messages,
and query counts that do not grow with the number of LOBs or members.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from accounts.models import AuditEvent, AwsAccount, Lob, MappingOutbox, Membership, User
from portal import aws_gateway
from portal.query_count import count_queries as counting
from tests.page_tables import mislabelled_cells, stacked_tables

pytestmark = pytest.mark.django_db

ACCOUNTS = {"lob-a": "111111111111", "lob-b": "222222222222"}
PRINCIPALS = (
    "platform_admin",
    "lob_admin",
    "analyst",
    "viewer",
    "other_lob_member",
    "non_member",
    "anonymous",
)


# --- Builders -------------------------------------------------------------------------------------


def make_user(username: str, **fields: object) -> User:
    return User.objects.create(
        username=username, idp_issuer="x", idp_subject=f"sub-{username}", **fields
    )


def make_account(account_id: str, name: str) -> AwsAccount:
    return AwsAccount.objects.create(
        account_id=account_id,
        name=name,
        invoke_role_arn=f"arn:aws:iam::{account_id}:role/GatehouseInvoke",
        results_bucket=f"gatehouse-results-{account_id}",
    )


def make_lob(slug: str, account: AwsAccount | None = None, **fields: object) -> Lob:
    account = account or make_account(ACCOUNTS.get(slug, "999999999999"), f"{slug} account")
    return Lob.objects.create(
        slug=slug, name=slug.replace("-", " ").upper(), aws_account=account, **fields
    )


def join(user: User, lob: Lob, role: str) -> Membership:
    return Membership.objects.create(user=user, lob=lob, role=role)


@dataclass
class World:
    """lob-a and lob-b, one person per principal, a viewer in each LOB to act on, a newcomer."""

    lobs: dict[str, Lob]
    users: dict[str, User | None]
    targets: dict[str, Membership]  # per LOB: the membership role changes and removals act on
    newcomer: User  # signed in once, member of nothing: the one added

    def client_for(self, principal: str) -> Client:
        client = Client()
        user = self.users[principal]
        if user is not None:
            client.force_login(user)
        return client


@pytest.fixture
def world() -> World:
    lob_a = make_lob("lob-a", description="Retail credit models.")
    lob_b = make_lob("lob-b")
    users: dict[str, User | None] = {
        "platform_admin": make_user("platform-admin", is_staff=True, first_name="Pat"),
        "lob_admin": make_user("lob-a-admin", first_name="Ada", last_name="Admin"),
        "analyst": make_user("lob-a-analyst"),
        "viewer": make_user("lob-a-viewer"),
        "other_lob_member": make_user("lob-b-admin"),
        "non_member": make_user("outsider"),
        "anonymous": None,
    }
    join(users["lob_admin"], lob_a, Membership.Role.ADMIN)
    join(users["analyst"], lob_a, Membership.Role.ANALYST)
    target_a = join(users["viewer"], lob_a, Membership.Role.VIEWER)
    join(users["other_lob_member"], lob_b, Membership.Role.ADMIN)
    target_b = join(make_user("lob-b-viewer"), lob_b, Membership.Role.VIEWER)
    return World(
        lobs={"lob-a": lob_a, "lob-b": lob_b},
        users=users,
        targets={"lob-a": target_a, "lob-b": target_b},
        newcomer=make_user("alice", first_name="Alice", last_name="Newcomer"),
    )


@pytest.fixture
def moto_aws(moto_server: str, settings, monkeypatch) -> Iterator[str]:
    """The portal's credentials are moto's dummies and AWS is the suite's moto server."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = "us-east-1"
    aws_gateway.reset_caches()
    yield moto_server
    aws_gateway.reset_caches()


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def lob_url(slug: str) -> str:
    return f"/lobs/{slug}/"


# --- The authorization matrix ---------------------------------------------------------------------

# Who may read a LOB's page: 200, a 403 page, or (anonymous) 302 to the sign-in page.
READ = {
    "platform_admin": {"lob-a": 200, "lob-b": 200},
    "lob_admin": {"lob-a": 200, "lob-b": 403},
    "analyst": {"lob-a": 200, "lob-b": 403},
    "viewer": {"lob-a": 200, "lob-b": 403},
    "other_lob_member": {"lob-a": 403, "lob-b": 200},  # lob-b's admin
    "non_member": {"lob-a": 403, "lob-b": 403},
    "anonymous": {"lob-a": 302, "lob-b": 302},
}
# Who may manage a LOB's members and verify its account: "ok", 403, or "login".
MANAGE = {
    "platform_admin": {"lob-a": "ok", "lob-b": "ok"},
    "lob_admin": {"lob-a": "ok", "lob-b": 403},
    "analyst": {"lob-a": 403, "lob-b": 403},
    "viewer": {"lob-a": 403, "lob-b": 403},
    "other_lob_member": {"lob-a": 403, "lob-b": "ok"},
    "non_member": {"lob-a": 403, "lob-b": 403},
    "anonymous": {"lob-a": "login", "lob-b": "login"},
}
MATRIX = [(principal, slug) for principal in PRINCIPALS for slug in ("lob-a", "lob-b")]


def assert_outcome(response, expected: int | str, slug: str, ok_status: int = 302) -> None:
    """ "ok": the action's success answer; "login": off to sign in; else that status."""
    if expected == "login":
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")
    elif expected == "ok":
        assert response.status_code == ok_status, response.content[:500]
        if ok_status == 302:
            assert response["Location"].startswith(lob_url(slug))
    else:
        assert response.status_code == expected, response.content[:500]


@pytest.mark.parametrize("principal", ["lob_admin", "analyst"])  # with and without forms
def test_every_cell_of_the_lob_tables_names_its_column_for_narrow_screens(
    world: World, principal: str
) -> None:
    # On a phone these tables scrolled sideways and hid Open Studio and the member forms;
    # they now stack each row as "column: value", the column's name from data-label.
    join(world.users[principal], world.lobs["lob-b"], Membership.Role.ANALYST)
    client = world.client_for(principal)
    pages = {
        "/": "my-lobs",
        "/lobs/": "lob-list",
        lob_url("lob-a"): "members",
        "/studio/": "studio-lobs",
    }
    for path, testid in pages.items():
        table = stacked_tables(client.get(path).content.decode())[testid]
        assert table.rows, path
        assert mislabelled_cells(table) == [], path


@pytest.mark.parametrize(("principal", "slug"), MATRIX)
def test_lob_page_is_shown_to_members_and_platform_admins_only(
    world: World, principal: str, slug: str
) -> None:
    response = world.client_for(principal).get(lob_url(slug))

    expected = READ[principal][slug]
    assert response.status_code == expected
    if expected == 200:
        assert world.lobs[slug].name in response.content.decode()
    elif expected == 403:
        assert "You are not a member of" in response.content.decode()
    else:
        assert response["Location"] == f"/login/?next={lob_url(slug)}"


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_lob_list_shows_only_visible_lobs(world: World, principal: str) -> None:
    response = world.client_for(principal).get("/lobs/")

    if principal == "anonymous":
        assert response.status_code == 302
        assert response["Location"] == "/login/?next=/lobs/"
        return
    assert response.status_code == 200
    listed = {lob.slug for lob in response.context["lobs"]}
    expected = {slug for slug, status in READ[principal].items() if status == 200}
    assert listed == expected


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_dashboard_lists_own_lobs_and_admins_get_the_all_lobs_link(
    world: World, principal: str
) -> None:
    response = world.client_for(principal).get("/")

    if principal == "anonymous":
        assert response.status_code == 302
        return
    assert response.status_code == 200
    user = world.users[principal]
    own = {m.lob.slug for m in response.context["memberships"]}
    assert own == set(Membership.objects.filter(user=user).values_list("lob__slug", flat=True))
    body = response.content.decode()
    for slug in own:
        assert f'href="{lob_url(slug)}"' in body
        assert ACCOUNTS[slug] in body
    assert ('data-testid="all-lobs"' in body) == user.is_staff


@pytest.mark.parametrize(("principal", "slug"), MATRIX)
def test_adding_a_member_is_for_managers_only(world: World, principal: str, slug: str) -> None:
    response = world.client_for(principal).post(
        f"/lobs/{slug}/members/", {"username": "alice", "role": "analyst"}
    )

    expected = MANAGE[principal][slug]
    assert_outcome(response, expected, slug)
    added = Membership.objects.filter(user=world.newcomer, lob=world.lobs[slug]).exists()
    assert added == (expected == "ok")


@pytest.mark.parametrize(("principal", "slug"), MATRIX)
def test_changing_a_role_is_for_managers_only(world: World, principal: str, slug: str) -> None:
    target = world.targets[slug]

    response = world.client_for(principal).post(
        f"/lobs/{slug}/members/{target.pk}/", {"role": "analyst"}
    )

    expected = MANAGE[principal][slug]
    assert_outcome(response, expected, slug)
    target.refresh_from_db()
    assert target.role == ("analyst" if expected == "ok" else "viewer")


@pytest.mark.parametrize(("principal", "slug"), MATRIX)
def test_remove_confirmation_page_is_for_managers_only(
    world: World, principal: str, slug: str
) -> None:
    target = world.targets[slug]

    response = world.client_for(principal).get(f"/lobs/{slug}/members/{target.pk}/remove/")

    assert_outcome(response, MANAGE[principal][slug], slug, ok_status=200)
    assert Membership.objects.filter(pk=target.pk).exists()  # a GET never removes


@pytest.mark.parametrize(("principal", "slug"), MATRIX)
def test_removing_a_member_is_for_managers_only(world: World, principal: str, slug: str) -> None:
    target = world.targets[slug]

    response = world.client_for(principal).post(f"/lobs/{slug}/members/{target.pk}/remove/")

    expected = MANAGE[principal][slug]
    assert_outcome(response, expected, slug)
    assert Membership.objects.filter(pk=target.pk).exists() == (expected != "ok")


@pytest.mark.parametrize(("principal", "slug"), MATRIX)
def test_verifying_the_account_is_for_managers_only(
    world: World, moto_aws: str, principal: str, slug: str
) -> None:
    response = world.client_for(principal).post(f"/lobs/{slug}/verify-account/")

    expected = MANAGE[principal][slug]
    assert_outcome(response, expected, slug)
    account = AwsAccount.objects.get(account_id=ACCOUNTS[slug])
    assert (account.last_verified_at is not None) == (expected == "ok")


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/lobs/no-such-lob/"),
        ("post", "/lobs/no-such-lob/members/"),
        ("post", "/lobs/no-such-lob/members/1/"),
        ("get", "/lobs/no-such-lob/members/1/remove/"),
        ("post", "/lobs/no-such-lob/members/1/remove/"),
        ("post", "/lobs/no-such-lob/verify-account/"),
    ],
)
def test_unknown_lob_is_a_404_page(world: World, principal: str, method: str, path: str) -> None:
    response = getattr(world.client_for(principal), method)(path)

    if principal == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith("/login/")
    else:
        assert response.status_code == 404
        assert "There is no line of business called" in response.content.decode()


@pytest.mark.parametrize("principal", PRINCIPALS)
@pytest.mark.parametrize("action", ["update", "remove"])
def test_membership_of_another_lob_is_not_found_under_this_lob(
    world: World, principal: str, action: str
) -> None:
    other = world.targets["lob-b"]
    suffix = "remove/" if action == "remove" else ""

    response = world.client_for(principal).post(
        f"/lobs/lob-a/members/{other.pk}/{suffix}", {"role": "analyst"}
    )

    expected = MANAGE[principal]["lob-a"]
    if expected == "ok":
        assert response.status_code == 404
    else:
        assert_outcome(response, expected, "lob-a")
    other.refresh_from_db()
    assert other.role == "viewer"


def test_unknown_membership_id_is_a_404(world: World) -> None:
    client = world.client_for("lob_admin")

    assert client.post("/lobs/lob-a/members/999999/", {"role": "viewer"}).status_code == 404
    assert client.post("/lobs/lob-a/members/999999/remove/").status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/lobs/lob-a/members/",
        "/lobs/lob-a/verify-account/",
    ],
)
def test_changes_are_never_made_by_get(world: World, path: str) -> None:
    events = AuditEvent.objects.count()

    response = world.client_for("lob_admin").get(path)

    # Back to the page the form is on (the URL opened again from the address bar), nothing done.
    assert (response.status_code, response["Location"]) == (302, "/lobs/lob-a/")
    assert AuditEvent.objects.count() == events


def test_role_change_url_refuses_get(world: World) -> None:
    target = world.targets["lob-a"]

    role = Membership.objects.get(pk=target.pk).role

    response = world.client_for("lob_admin").get(f"/lobs/lob-a/members/{target.pk}/")

    assert (response.status_code, response["Location"]) == (302, "/lobs/lob-a/members/")
    assert Membership.objects.get(pk=target.pk).role == role


def test_inactive_lob_is_refused_to_its_members_but_shown_to_platform_admins(
    world: World,
) -> None:
    Lob.objects.filter(slug="lob-a").update(is_active=False)

    assert world.client_for("analyst").get("/lobs/lob-a/").status_code == 403
    assert world.client_for("lob_admin").get("/lobs/lob-a/").status_code == 403
    response = world.client_for("platform_admin").get("/lobs/lob-a/")
    assert response.status_code == 200
    assert "inactive" in response.content.decode()


# --- What each role sees on the page --------------------------------------------------------------


@pytest.mark.parametrize("principal", ["analyst", "viewer"])
def test_analysts_and_viewers_see_members_but_no_forms_and_no_role_arn(
    world: World, principal: str
) -> None:
    response = world.client_for(principal).get("/lobs/lob-a/")

    body = response.content.decode()
    assert response.context["may_manage"] is False
    for username in ("lob-a-admin", "lob-a-analyst", "lob-a-viewer"):
        assert username in body
    assert "lob-b-viewer" not in body
    assert "111111111111" in body
    assert "s3://gatehouse-results-111111111111/gatehouse/" in body
    assert "<form" not in body.split("<main", 1)[1]
    assert "Add member" not in body
    assert "Verify account" not in body
    assert "Remove" not in body
    assert "role/GatehouseInvoke" not in body
    assert "Last verification" not in body


@pytest.mark.parametrize("principal", ["platform_admin", "lob_admin"])
def test_managers_see_member_forms_role_arn_and_verify_button(world: World, principal: str) -> None:
    response = world.client_for(principal).get("/lobs/lob-a/")

    body = response.content.decode()
    target = world.targets["lob-a"]
    assert 'action="/lobs/lob-a/members/"' in body
    assert f'action="/lobs/lob-a/members/{target.pk}/"' in body
    assert f'href="/lobs/lob-a/members/{target.pk}/remove/"' in body
    assert 'action="/lobs/lob-a/verify-account/"' in body
    assert "arn:aws:iam::111111111111:role/GatehouseInvoke" in body
    assert "never verified" in body
    assert "Retail credit models." in body


# --- A LOB admin manages members ------------------------------------------------------------------


def test_lob_admin_adds_a_member_audited_and_queued_for_publication(world: World, settings) -> None:
    settings.DYNAMODB_PUBLICATION_ENABLED = True
    client = world.client_for("lob_admin")

    response = client.post("/lobs/lob-a/members/", {"username": " alice ", "role": "analyst"})

    assert response.status_code == 302
    assert response["Location"] == "/lobs/lob-a/#members"
    assert messages_of(response) == ["Added alice as Analyst."]
    membership = Membership.objects.get(user=world.newcomer, lob=world.lobs["lob-a"])
    assert membership.role == "analyst"
    event = AuditEvent.objects.get(action="membership.created")
    assert event.actor == world.users["lob_admin"]
    assert event.lob_slug == "lob-a"
    assert event.outcome == AuditEvent.Outcome.SUCCESS
    assert event.detail["after"] == {"user": "alice", "lob": "lob-a", "role": "analyst"}
    assert MappingOutbox.objects.filter(kind="user", key="alice", delivered_at=None).exists()
    page = client.get("/lobs/lob-a/")
    assert 'data-testid="member-alice"' in page.content.decode()


def test_lob_admin_changes_a_role_audited(world: World) -> None:
    target = world.targets["lob-a"]
    client = world.client_for("lob_admin")

    response = client.post(f"/lobs/lob-a/members/{target.pk}/", {"role": "admin"})

    assert messages_of(response) == ["lob-a-viewer is now LOB admin."]
    target.refresh_from_db()
    assert target.role == "admin"
    event = AuditEvent.objects.get(action="membership.updated")
    assert event.actor == world.users["lob_admin"]
    assert event.detail["before"]["role"] == "viewer"
    assert event.detail["after"]["role"] == "admin"


def test_saving_the_same_role_changes_nothing(world: World) -> None:
    target = world.targets["lob-a"]

    response = world.client_for("lob_admin").post(
        f"/lobs/lob-a/members/{target.pk}/", {"role": "viewer"}
    )

    assert messages_of(response) == ["lob-a-viewer is already Viewer; nothing changed."]
    assert not AuditEvent.objects.filter(action="membership.updated").exists()


def test_lob_admin_removes_a_member_after_confirming(world: World, settings) -> None:
    settings.DYNAMODB_PUBLICATION_ENABLED = True
    target = world.targets["lob-a"]
    client = world.client_for("lob_admin")

    confirm = client.get(f"/lobs/lob-a/members/{target.pk}/remove/")
    assert confirm.status_code == 200
    assert "Remove lob-a-viewer" in confirm.content.decode()
    response = client.post(f"/lobs/lob-a/members/{target.pk}/remove/")

    assert messages_of(response) == ["Removed lob-a-viewer from lob-a."]
    assert not Membership.objects.filter(pk=target.pk).exists()
    event = AuditEvent.objects.get(action="membership.deleted")
    assert event.actor == world.users["lob_admin"]
    assert event.lob_slug == "lob-a"
    assert event.detail["before"] == {"user": "lob-a-viewer", "lob": "lob-a", "role": "viewer"}
    assert MappingOutbox.objects.filter(kind="user", key="lob-a-viewer").exists()


def test_lob_admin_leaving_their_lob_lands_on_the_lob_list(world: World) -> None:
    second_admin = make_user("second-admin")
    join(second_admin, world.lobs["lob-a"], Membership.Role.ADMIN)
    own = Membership.objects.get(user=world.users["lob_admin"], lob=world.lobs["lob-a"])

    response = world.client_for("lob_admin").post(f"/lobs/lob-a/members/{own.pk}/remove/")

    assert response.status_code == 302
    assert response["Location"] == "/lobs/"
    assert messages_of(response) == ["Removed lob-a-admin from lob-a."]


# --- Refusals are messages, not 500s --------------------------------------------------------------


def post_and_follow(client: Client, path: str, data: dict | None = None):
    response = client.post(path, data or {}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain[-1][0].startswith("/lobs/lob-a/")
    return response


def error_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"] if m.level_tag == "error"]


def test_adding_an_existing_member_is_an_error_message(world: World) -> None:
    response = post_and_follow(
        world.client_for("lob_admin"),
        "/lobs/lob-a/members/",
        {"username": "lob-a-viewer", "role": "analyst"},
    )

    assert error_messages(response) == [
        "Could not add lob-a-viewer: lob-a-viewer is already a member of lob-a."
    ]
    assert Membership.objects.get(user__username="lob-a-viewer").role == "viewer"
    assert 'class="error"' in response.content.decode()


@pytest.mark.parametrize("username", ["ghost", "retired"])
def test_adding_an_unknown_or_deactivated_user_is_an_error_message(
    world: World, username: str
) -> None:
    make_user("retired", is_active=False)

    response = post_and_follow(
        world.client_for("lob_admin"),
        "/lobs/lob-a/members/",
        {"username": username, "role": "viewer"},
    )

    assert error_messages(response) == [f"No user named {username} has signed in yet."]
    assert not Membership.objects.filter(user__username=username).exists()


@pytest.mark.parametrize(("username", "role"), [("ghost", "viewer"), ("lob-a-viewer", "admin")])
def test_a_failed_add_comes_back_with_the_form_as_it_was_sent(
    world: World, username: str, role: str
) -> None:
    response = post_and_follow(
        world.client_for("lob_admin"), "/lobs/lob-a/members/", {"username": username, "role": role}
    )

    assert len(error_messages(response)) == 1
    form = response.content.decode().split('data-testid="add-member"', 1)[1].split("</form>")[0]
    assert f'value="{username}"' in form
    assert f'<option value="{role}" selected>' in form
    assert not Membership.objects.filter(user__username=username, role=role).exists()


def test_a_failed_add_of_a_name_with_a_control_character_comes_back_empty(world: World) -> None:
    client = world.client_for("lob_admin")

    response = client.post("/lobs/lob-a/members/", {"username": "out\x00sider", "role": "viewer"})

    # Multipart: the NUL check does not read it; the name finds nobody and is not sent back.
    assert response.status_code == 302
    assert "username=&" in response["Location"]
    assert client.get(response["Location"]).status_code == 200


def test_adding_without_a_username_is_an_error_message(world: World) -> None:
    response = post_and_follow(
        world.client_for("lob_admin"), "/lobs/lob-a/members/", {"username": " ", "role": "viewer"}
    )

    assert error_messages(response) == ["Enter the username of the person to add."]


@pytest.mark.parametrize("role", ["owner", ""])
def test_a_bad_role_is_an_error_message(world: World, role: str) -> None:
    client = world.client_for("lob_admin")
    target = world.targets["lob-a"]

    added = post_and_follow(client, "/lobs/lob-a/members/", {"username": "alice", "role": role})
    changed = post_and_follow(client, f"/lobs/lob-a/members/{target.pk}/", {"role": role})

    assert error_messages(added) == [
        "Could not add alice: Role must be one of admin, analyst, viewer."
    ]
    assert error_messages(changed) == [
        "Could not change lob-a-viewer's role: Role must be one of admin, analyst, viewer."
    ]
    assert not Membership.objects.filter(user=world.newcomer).exists()
    target.refresh_from_db()
    assert target.role == "viewer"


def test_the_last_lob_admin_cannot_step_down_or_leave(world: World) -> None:
    client = world.client_for("lob_admin")
    own = Membership.objects.get(user=world.users["lob_admin"], lob=world.lobs["lob-a"])

    demoted = post_and_follow(client, f"/lobs/lob-a/members/{own.pk}/", {"role": "analyst"})
    left = post_and_follow(client, f"/lobs/lob-a/members/{own.pk}/remove/")

    assert error_messages(demoted) == [
        "Could not change lob-a-admin's role: This is the LOB's last admin; name another admin "
        "first."
    ]
    assert error_messages(left) == [
        "Could not remove lob-a-admin: This is the LOB's last admin; name another admin first."
    ]
    own.refresh_from_db()
    assert own.role == "admin"


def test_a_lob_admin_demoted_meanwhile_gets_a_403_not_a_500(world: World) -> None:
    client = world.client_for("lob_admin")
    Membership.objects.filter(user=world.users["lob_admin"]).update(role="viewer")

    response = client.post("/lobs/lob-a/members/", {"username": "alice", "role": "viewer"})

    assert response.status_code == 403


# --- Verifying the AWS account --------------------------------------------------------------------


def test_verify_account_reports_success_and_the_page_shows_it(world: World, moto_aws: str) -> None:
    client = world.client_for("lob_admin")

    response = client.post("/lobs/lob-a/verify-account/", follow=True)

    assert response.redirect_chain[-1][0] == "/lobs/lob-a/#account"
    account = AwsAccount.objects.get(account_id="111111111111")
    assert account.last_verification_ok is True
    assert account.last_verification_detail == (
        "Assumed arn:aws:sts::111111111111:assumed-role/GatehouseInvoke in account 111111111111."
    )
    assert [str(m) for m in response.context["messages"]] == [
        f"Verified: {account.last_verification_detail}"
    ]
    body = response.content.decode()
    assert ">verified</span>" in body
    assert account.last_verified_at.strftime("%Y-%m-%d %H:%M") in body
    event = AuditEvent.objects.get(action="aws_account.verified")
    assert event.actor == world.users["lob_admin"]
    assert event.outcome == AuditEvent.Outcome.SUCCESS


def test_verify_account_failure_shows_the_exact_error(world: World, moto_aws: str) -> None:
    # An ExternalId AWS refuses (it must have at least 2 characters): AssumeRole fails.
    AwsAccount.objects.filter(account_id="111111111111").update(external_id="x")
    client = world.client_for("platform_admin")

    response = client.post("/lobs/lob-a/verify-account/", follow=True)

    account = AwsAccount.objects.get(account_id="111111111111")
    assert account.last_verification_ok is False
    assert "ParamValidationError" in account.last_verification_detail
    assert error_messages(response) == [f"Verification failed: {account.last_verification_detail}"]
    assert ">failed</span>" in response.content.decode()


# --- Query counts ---------------------------------------------------------------------------------


def count_queries(client: Client, path: str) -> int:
    with counting() as counted:
        response = client.get(path)
    assert response.status_code == 200
    return counted.count


@pytest.mark.parametrize("principal", ["platform_admin", "lob_admin"])
def test_lob_list_runs_the_same_queries_for_2_or_12_lobs(world: World, principal: str) -> None:
    client = world.client_for(principal)
    client.get("/lobs/")  # warm the session
    few = count_queries(client, "/lobs/")
    for n in range(10):
        lob = make_lob(f"extra-{n}", make_account(f"3000000000{n:02d}", f"extra {n}"))
        join(world.users["lob_admin"], lob, Membership.Role.ANALYST)
        join(make_user(f"extra-user-{n}"), lob, Membership.Role.VIEWER)

    many = count_queries(client, "/lobs/")

    assert many == few <= 5


@pytest.mark.parametrize("principal", ["platform_admin", "lob_admin"])
def test_lob_page_runs_the_same_queries_for_3_or_23_members(world: World, principal: str) -> None:
    client = world.client_for(principal)
    client.get("/lobs/lob-a/")
    few = count_queries(client, "/lobs/lob-a/")
    for n in range(20):
        join(make_user(f"member-{n}"), world.lobs["lob-a"], Membership.Role.VIEWER)

    many = count_queries(client, "/lobs/lob-a/")

    assert many == few <= 7


def test_dashboard_runs_the_same_queries_for_1_or_11_memberships(world: World) -> None:
    client = world.client_for("lob_admin")
    client.get("/")
    few = count_queries(client, "/")
    for n in range(10):
        lob = make_lob(f"extra-{n}", make_account(f"3000000000{n:02d}", f"extra {n}"))
        join(world.users["lob_admin"], lob, Membership.Role.ANALYST)

    assert count_queries(client, "/") == few
