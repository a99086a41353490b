"""The Django admin: platform admins only, and every change goes through the tenancy services.

A change made in the admin is checked, audited and queued for DynamoDB like one made through the
API or the LOB pages; a refusal is an error message on the page, never a 500, and leaves nothing
half-saved.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent, AwsAccount, Lob, MappingOutbox, Membership, User
from accounts.services import tenancy
from portal import aws_gateway
from portal.errors import Conflict

pytestmark = pytest.mark.django_db

ADMIN = "/admin/accounts"


def make_user(username: str, **fields: object) -> User:
    return User.objects.create(
        username=username, idp_issuer="x", idp_subject=f"sub-{username}", **fields
    )


def make_account(account_id: str = "111111111111", **fields: object) -> AwsAccount:
    values = {
        "name": f"Account {account_id}",
        "invoke_role_arn": f"arn:aws:iam::{account_id}:role/GatehouseInvoke",
        "results_bucket": f"gatehouse-results-{account_id}",
        **fields,
    }
    return AwsAccount.objects.create(account_id=account_id, **values)


@pytest.fixture
def platform_admin() -> User:
    return make_user("platform-admin", is_staff=True)


@pytest.fixture
def staff(platform_admin: User) -> Client:
    client = Client()
    client.force_login(platform_admin)
    return client


@pytest.fixture
def lob() -> Lob:
    return Lob.objects.create(slug="lob-a", name="LOB A", aws_account=make_account())


@pytest.fixture
def lob_admin(lob: Lob) -> User:
    user = make_user("lob-a-admin")
    Membership.objects.create(user=user, lob=lob, role=Membership.Role.ADMIN)
    return user


@pytest.fixture
def outbox_entry() -> MappingOutbox:
    return MappingOutbox.objects.create(kind="user", key="lob-a-admin", last_error="Throttled")


@pytest.fixture
def audit_event() -> AuditEvent:
    return AuditEvent.objects.create(
        action="membership.created", outcome=AuditEvent.Outcome.SUCCESS, lob_slug="lob-a"
    )


@pytest.fixture
def publication_on(settings) -> None:
    settings.DYNAMODB_PUBLICATION_ENABLED = True


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def inline_data(memberships: list[dict], initial: int) -> dict[str, str]:
    """The Membership inline's formset fields (prefix ``memberships``)."""
    data = {
        "memberships-TOTAL_FORMS": str(len(memberships)),
        "memberships-INITIAL_FORMS": str(initial),
        "memberships-MIN_NUM_FORMS": "0",
        "memberships-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(memberships):
        for key, value in row.items():
            data[f"memberships-{index}-{key}"] = str(value)
    return data


def lob_form(lob: Lob, **changes: object) -> dict[str, str]:
    data = {
        "slug": lob.slug,
        "name": lob.name,
        "description": lob.description,
        "aws_account": str(lob.aws_account_id),
        "is_active": "on" if lob.is_active else "",
    }
    data.update({key: str(value) for key, value in changes.items()})
    return {key: value for key, value in data.items() if value != ""}


# --- Who may use it -------------------------------------------------------------------------------


def every_admin_page(lob: Lob, outbox: MappingOutbox, event: AuditEvent) -> list[str]:
    membership = lob.memberships.first()
    return [
        "/admin/",
        f"{ADMIN}/awsaccount/",
        f"{ADMIN}/awsaccount/add/",
        f"{ADMIN}/awsaccount/{lob.aws_account_id}/change/",
        f"{ADMIN}/lob/",
        f"{ADMIN}/lob/add/",
        f"{ADMIN}/lob/{lob.pk}/change/",
        f"{ADMIN}/membership/",
        f"{ADMIN}/membership/add/",
        f"{ADMIN}/membership/{membership.pk}/change/",
        f"{ADMIN}/mappingoutbox/",
        f"{ADMIN}/mappingoutbox/{outbox.pk}/change/",
        f"{ADMIN}/auditevent/",
        f"{ADMIN}/auditevent/{event.pk}/change/",
        f"{ADMIN}/user/",
        f"{ADMIN}/user/{membership.user_id}/change/",
    ]


def test_platform_admin_can_list_and_open_every_model(
    staff: Client, lob: Lob, lob_admin: User, outbox_entry: MappingOutbox, audit_event: AuditEvent
) -> None:
    for path in every_admin_page(lob, outbox_entry, audit_event):
        response = staff.get(path)
        assert response.status_code == 200, path


@pytest.mark.parametrize("who", ["lob_admin", "signed_in_member_of_nothing", "anonymous"])
def test_non_staff_cannot_open_any_admin_page(
    who: str, lob: Lob, lob_admin: User, outbox_entry: MappingOutbox, audit_event: AuditEvent
) -> None:
    client = Client()
    if who == "lob_admin":
        client.force_login(lob_admin)
    elif who == "signed_in_member_of_nothing":
        client.force_login(make_user("outsider"))

    for path in every_admin_page(lob, outbox_entry, audit_event):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith("/admin/login/?next="), path


def test_signed_in_non_staff_are_told_the_admin_is_not_for_them(lob_admin: User) -> None:
    # /admin/ → /admin/login/ → /login/ → (signed in) back to /admin/ was a redirect loop: the
    # browser showed its own "too many redirects" error instead of a page.
    client = Client()
    client.force_login(lob_admin)

    response = client.get("/admin/", follow=True)

    assert response.status_code == 403
    assert [url for url, _ in response.redirect_chain] == ["/admin/login/?next=/admin/"]
    assert "The Django admin is for platform admins" in response.content.decode()
    assert "Go to the dashboard" in response.content.decode()


def test_the_admins_sign_in_form_signs_nobody_in_even_with_a_right_password(
    platform_admin: User,
) -> None:
    # Sessions end SESSION_COOKIE_AGE after the Cognito sign-in (accounts.views.session_end_fix):
    # a session made any other way would slide on for ever. Django's own admin login is not
    # served, and no backend checks passwords.
    platform_admin.set_password("right-password")
    platform_admin.save()
    client = Client()

    response = client.post(
        "/admin/login/",
        {"username": "platform-admin", "password": "right-password", "next": "/admin/"},
    )

    assert response.status_code == 302 and response["Location"].startswith("/login/")
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/")["Location"].startswith("/admin/login/")


def test_anonymous_people_go_from_the_admin_to_sign_in_with_the_page_to_come_back_to() -> None:
    response = Client().get("/admin/accounts/lob/", follow=True)

    assert response.redirect_chain[-1][0] == "/login/?next=%2Fadmin%2Faccounts%2Flob%2F"
    assert response.status_code == 200
    assert response.context["next"] == "/admin/accounts/lob/"


def test_non_staff_cannot_add_a_membership_by_posting(lob: Lob, lob_admin: User) -> None:
    client = Client()
    client.force_login(lob_admin)
    newcomer = make_user("alice")

    client.post(f"{ADMIN}/membership/add/", {"user": newcomer.pk, "lob": lob.pk, "role": "admin"})

    assert not Membership.objects.filter(user=newcomer).exists()


def test_outbox_and_audit_trail_are_read_only(
    staff: Client, outbox_entry: MappingOutbox, audit_event: AuditEvent
) -> None:
    assert staff.get(f"{ADMIN}/mappingoutbox/add/").status_code == 403
    assert staff.get(f"{ADMIN}/auditevent/add/").status_code == 403
    staff.post(f"{ADMIN}/mappingoutbox/{outbox_entry.pk}/change/", {"key": "changed"})
    staff.post(f"{ADMIN}/mappingoutbox/{outbox_entry.pk}/delete/", {"post": "yes"})
    staff.post(f"{ADMIN}/auditevent/{audit_event.pk}/delete/", {"post": "yes"})
    outbox_entry.refresh_from_db()
    assert outbox_entry.key == "lob-a-admin"
    assert AuditEvent.objects.filter(pk=audit_event.pk).exists()


# --- Lists, search and filters --------------------------------------------------------------------


def test_outbox_is_filtered_by_delivery_state(staff: Client) -> None:
    pending = MappingOutbox.objects.create(kind="user", key="alice")
    delivered = MappingOutbox.objects.create(kind="lob", key="lob-a", delivered_at=timezone.now())

    pending_page = staff.get(f"{ADMIN}/mappingoutbox/?delivery=pending")
    delivered_page = staff.get(f"{ADMIN}/mappingoutbox/?delivery=delivered")

    assert list(pending_page.context["cl"].result_list) == [pending]
    assert list(delivered_page.context["cl"].result_list) == [delivered]
    assert "pending" in pending_page.content.decode()


def test_audit_trail_is_filtered_by_lob_and_outcome(staff: Client) -> None:
    wanted = AuditEvent.objects.create(action="x", outcome="refused", lob_slug="lob-a")
    AuditEvent.objects.create(action="x", outcome="success", lob_slug="lob-a")
    AuditEvent.objects.create(action="x", outcome="refused", lob_slug="lob-b")

    response = staff.get(f"{ADMIN}/auditevent/?lob_slug=lob-a&outcome=refused")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == [wanted]


def test_lob_list_shows_member_counts_and_searches(staff: Client, lob: Lob, lob_admin) -> None:
    Lob.objects.create(slug="lob-b", name="LOB B", aws_account=make_account("222222222222"))

    response = staff.get(f"{ADMIN}/lob/?q=lob-a")

    rows = list(response.context["cl"].result_list)
    assert [row.slug for row in rows] == ["lob-a"]
    assert rows[0].member_count == 1


def test_accounts_are_filtered_by_region_and_verification(staff: Client) -> None:

    ok = make_account("111111111111", last_verified_at=timezone.now(), last_verification_ok=True)
    failed = make_account(
        "222222222222",
        default_region="eu-west-1",
        last_verified_at=timezone.now(),
        last_verification_ok=False,
    )
    never = make_account("333333333333")

    def listed(query: str) -> list[AwsAccount]:
        return list(staff.get(f"{ADMIN}/awsaccount/?{query}").context["cl"].result_list)

    assert listed("verification=ok") == [ok]
    assert listed("verification=failed") == [failed]
    assert listed("verification=never") == [never]
    assert listed("default_region=eu-west-1") == [failed]


def test_memberships_are_searched_by_username_and_lob(staff: Client, lob: Lob, lob_admin) -> None:
    other = Lob.objects.create(slug="lob-b", name="LOB B", aws_account=make_account("222222222222"))
    bob = make_user("bob")
    Membership.objects.create(user=bob, lob=other, role="viewer")

    by_user = staff.get(f"{ADMIN}/membership/?q=bob").context["cl"].result_list
    by_lob = staff.get(f"{ADMIN}/membership/?q=lob-a").context["cl"].result_list
    by_role = staff.get(f"{ADMIN}/membership/?role=admin").context["cl"].result_list

    assert [m.user.username for m in by_user] == ["bob"]
    assert [m.user.username for m in by_lob] == ["lob-a-admin"]
    assert [m.user.username for m in by_role] == ["lob-a-admin"]


# --- Changes go through the services --------------------------------------------------------------


def test_membership_added_in_admin_is_audited_and_queued(
    staff: Client, platform_admin: User, lob: Lob, publication_on: None
) -> None:
    newcomer = make_user("alice")

    response = staff.post(
        f"{ADMIN}/membership/add/", {"user": newcomer.pk, "lob": lob.pk, "role": "analyst"}
    )

    assert response.status_code == 302
    membership = Membership.objects.get(user=newcomer, lob=lob)
    assert membership.role == "analyst"
    event = AuditEvent.objects.get(action="membership.created")
    assert event.actor == platform_admin
    assert event.lob_slug == "lob-a"
    assert event.detail["after"] == {"user": "alice", "lob": "lob-a", "role": "analyst"}
    assert MappingOutbox.objects.filter(kind="user", key="alice").exists()


def test_membership_role_change_and_deletion_in_admin_are_audited(
    staff: Client, lob: Lob, lob_admin: User, publication_on: None
) -> None:
    membership = Membership.objects.get(user=lob_admin)

    staff.post(f"{ADMIN}/membership/{membership.pk}/change/", {"role": "viewer"})
    membership.refresh_from_db()
    assert membership.role == "viewer"
    updated = AuditEvent.objects.get(action="membership.updated")
    assert updated.detail["before"]["role"] == "admin"
    assert updated.detail["after"]["role"] == "viewer"

    response = staff.post(f"{ADMIN}/membership/{membership.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert AuditEvent.objects.filter(action="membership.deleted", lob_slug="lob-a").exists()
    assert MappingOutbox.objects.filter(kind="user", key="lob-a-admin").exists()


def test_a_membership_cannot_be_moved_to_another_user_or_lob(
    staff: Client, lob: Lob, lob_admin: User
) -> None:
    membership = Membership.objects.get(user=lob_admin)
    other = Lob.objects.create(slug="lob-b", name="LOB B", aws_account=make_account("222222222222"))

    staff.post(
        f"{ADMIN}/membership/{membership.pk}/change/",
        {"user": make_user("bob").pk, "lob": other.pk, "role": "admin"},
    )

    membership.refresh_from_db()
    assert (membership.user, membership.lob) == (lob_admin, lob)


def test_lob_inline_adds_changes_and_removes_members_through_the_services(
    staff: Client, lob: Lob, lob_admin: User, publication_on: None
) -> None:
    viewer = make_user("vera")
    leaving = Membership.objects.create(user=viewer, lob=lob, role="viewer")
    admin_membership = Membership.objects.get(user=lob_admin)
    newcomer = make_user("alice")
    rows = [
        {"id": admin_membership.pk, "lob": lob.pk, "role": "analyst"},
        {"id": leaving.pk, "lob": lob.pk, "role": "viewer", "DELETE": "on"},
        {"lob": lob.pk, "user": newcomer.pk, "role": "admin"},
    ]

    response = staff.post(
        f"{ADMIN}/lob/{lob.pk}/change/", {**lob_form(lob), **inline_data(rows, initial=2)}
    )

    assert response.status_code == 302, response.content[:2000]
    roles = dict(lob.memberships.values_list("user__username", "role"))
    assert roles == {"lob-a-admin": "analyst", "alice": "admin"}
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"membership.created", "membership.updated", "membership.deleted"} <= actions
    queued = set(MappingOutbox.objects.filter(kind="user").values_list("key", flat=True))
    assert {"alice", "vera"} <= queued


def test_lob_created_in_admin_with_members_is_audited_and_queued(
    staff: Client, platform_admin: User, publication_on: None
) -> None:
    account = make_account("222222222222")
    alice = make_user("alice")
    data = {
        "slug": "lob-new",
        "name": "New LOB",
        "aws_account": str(account.pk),
        "is_active": "on",
        **inline_data([{"user": alice.pk, "role": "admin"}], initial=0),
    }

    response = staff.post(f"{ADMIN}/lob/add/", data)

    assert response.status_code == 302, response.content[:2000]
    lob = Lob.objects.get(slug="lob-new")
    assert list(lob.memberships.values_list("user__username", "role")) == [("alice", "admin")]
    assert AuditEvent.objects.filter(action="lob.created", actor=platform_admin).exists()
    assert AuditEvent.objects.filter(action="membership.created", lob_slug="lob-new").exists()
    assert MappingOutbox.objects.filter(kind="lob", key="lob-new").exists()
    assert MappingOutbox.objects.filter(kind="user", key="alice").exists()


def test_lob_change_in_admin_is_audited_with_before_and_after(
    staff: Client, lob: Lob, publication_on: None
) -> None:
    response = staff.post(
        f"{ADMIN}/lob/{lob.pk}/change/",
        {**lob_form(lob, name="Retail"), **inline_data([], initial=0)},
    )

    assert response.status_code == 302, response.content[:2000]
    lob.refresh_from_db()
    assert lob.name == "Retail"
    event = AuditEvent.objects.get(action="lob.updated")
    assert (event.detail["before"]["name"], event.detail["after"]["name"]) == ("LOB A", "Retail")


def test_lob_deleted_in_admin_is_audited_and_queued(
    staff: Client, lob: Lob, lob_admin: User, publication_on: None
) -> None:
    response = staff.post(f"{ADMIN}/lob/{lob.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not Lob.objects.filter(pk=lob.pk).exists()
    assert AuditEvent.objects.filter(action="lob.deleted", lob_slug="lob-a").exists()
    assert MappingOutbox.objects.filter(kind="lob", key="lob-a").exists()
    assert MappingOutbox.objects.filter(kind="user", key="lob-a-admin").exists()


def account_form(**fields: str) -> dict[str, str]:
    data = {
        "account_id": "444444444444",
        "name": "Fraud",
        "default_region": "us-east-1",
        "invoke_role_arn": "arn:aws:iam::444444444444:role/GatehouseInvoke",
        "results_bucket": "fraud-results",
        "results_prefix": "gatehouse/",
    }
    data.update(fields)
    return data


def test_account_added_in_admin_is_audited_without_its_external_id(
    staff: Client, platform_admin: User
) -> None:
    response = staff.post(f"{ADMIN}/awsaccount/add/", account_form(external_id="s3cr3t-id"))

    assert response.status_code == 302, response.content[:2000]
    account = AwsAccount.objects.get(account_id="444444444444")
    assert account.external_id == "s3cr3t-id"
    assert account.studio_role_arn == "arn:aws:iam::444444444444:role/SagemakerStudioAccessRole"
    event = AuditEvent.objects.get(action="aws_account.created")
    assert event.actor == platform_admin
    assert event.detail["after"]["external_id"] == "(set)"
    assert "s3cr3t-id" not in str(event.detail)


def test_account_external_id_is_never_shown_and_kept_when_left_empty(staff: Client) -> None:
    account = make_account("444444444444", external_id="s3cr3t-id")

    page = staff.get(f"{ADMIN}/awsaccount/{account.pk}/change/")
    assert "s3cr3t-id" not in page.content.decode()
    staff.post(f"{ADMIN}/awsaccount/{account.pk}/change/", account_form(name="Fraud (prod)"))

    account.refresh_from_db()
    assert account.name == "Fraud (prod)"
    assert account.external_id == "s3cr3t-id"
    event = AuditEvent.objects.get(action="aws_account.updated")
    assert event.detail["before"]["name"] == "Account 444444444444"
    assert event.detail["after"]["name"] == "Fraud (prod)"

    staff.post(f"{ADMIN}/awsaccount/{account.pk}/change/", account_form(clear_external_id="on"))
    account.refresh_from_db()
    assert account.external_id == ""


def test_a_role_in_another_account_is_a_form_error(staff: Client) -> None:
    response = staff.post(
        f"{ADMIN}/awsaccount/add/",
        account_form(invoke_role_arn="arn:aws:iam::555555555555:role/GatehouseInvoke"),
    )

    assert response.status_code == 200
    assert "This role is in account 555555555555" in response.content.decode()
    assert not AwsAccount.objects.filter(account_id="444444444444").exists()


# --- Refusals are messages, not 500s --------------------------------------------------------------


def test_deleting_an_account_in_use_is_refused_with_an_explanation(staff: Client, lob: Lob) -> None:
    account = lob.aws_account

    response = staff.post(f"{ADMIN}/awsaccount/{account.pk}/delete/", {"post": "yes"})

    assert response.status_code == 200
    assert "Cannot delete" in response.content.decode()
    assert "lob-a" in response.content.decode()
    assert AwsAccount.objects.filter(pk=account.pk).exists()


def test_bulk_deleting_accounts_in_use_deletes_none(staff: Client, lob: Lob) -> None:
    unused = make_account("222222222222")

    response = staff.post(
        f"{ADMIN}/awsaccount/",
        {
            "action": "delete_selected",
            "_selected_action": [lob.aws_account_id, unused.pk],
            "post": "yes",
        },
    )

    assert response.status_code == 200
    assert "Cannot delete" in response.content.decode()
    assert AwsAccount.objects.count() == 2


def test_unused_account_is_deleted_through_the_service(staff: Client) -> None:
    account = make_account("222222222222")

    response = staff.post(f"{ADMIN}/awsaccount/{account.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not AwsAccount.objects.filter(pk=account.pk).exists()
    assert AuditEvent.objects.filter(
        action="aws_account.deleted", target_id="222222222222"
    ).exists()


def test_service_refusal_on_delete_is_a_message(staff: Client, lob: Lob, monkeypatch) -> None:
    # A LOB attached between the confirmation and the delete: the service refuses.
    account = make_account("222222222222")

    def in_use(**kwargs: object) -> None:
        raise Conflict("Account 222222222222 is used by LOB(s) lob-z; move them first.")

    monkeypatch.setattr(tenancy, "aws_account_delete", in_use)

    response = staff.post(f"{ADMIN}/awsaccount/{account.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert response["Location"] == f"{ADMIN}/awsaccount/{account.pk}/change/"
    assert messages_of(response) == [
        "Not deleted: Account 222222222222 is used by LOB(s) lob-z; move them first."
    ]
    assert AwsAccount.objects.filter(pk=account.pk).exists()


def test_service_refusal_in_bulk_delete_rolls_back_every_deletion(
    staff: Client, lob: Lob, monkeypatch
) -> None:
    first = make_account("222222222222")
    second = make_account("333333333333")
    real_delete = tenancy.aws_account_delete

    def refuse_the_second(*, account: AwsAccount, **kwargs: object) -> None:
        if account.account_id == "333333333333":
            raise Conflict("Account 333333333333 is in use.", code="account_in_use")
        real_delete(account=account, **kwargs)

    monkeypatch.setattr(tenancy, "aws_account_delete", refuse_the_second)

    response = staff.post(
        f"{ADMIN}/awsaccount/",
        {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"},
    )

    assert response.status_code == 302
    assert messages_of(response) == ["Nothing was deleted: Account 333333333333 is in use."]
    assert AwsAccount.objects.filter(pk__in=[first.pk, second.pk]).count() == 2
    assert not AuditEvent.objects.filter(action="aws_account.deleted").exists()


def test_service_refusal_while_saving_rolls_back_the_whole_change(
    staff: Client, lob: Lob, monkeypatch
) -> None:
    def refuse(**kwargs: object) -> None:
        raise Conflict("alice is already a member of lob-a.", code="already_member")

    monkeypatch.setattr(tenancy, "membership_create", refuse)
    alice = make_user("alice")

    response = staff.post(
        f"{ADMIN}/lob/{lob.pk}/change/",
        {
            **lob_form(lob, name="Renamed"),
            **inline_data([{"lob": lob.pk, "user": alice.pk, "role": "viewer"}], initial=0),
        },
    )

    assert response.status_code == 302
    assert response["Location"] == f"{ADMIN}/lob/{lob.pk}/change/"
    assert messages_of(response) == ["Not saved: alice is already a member of lob-a."]
    lob.refresh_from_db()
    assert lob.name == "LOB A"  # the LOB change made before the refusal is rolled back
    assert not AuditEvent.objects.filter(action="lob.updated").exists()


def test_adding_a_duplicate_membership_is_a_form_error(staff: Client, lob: Lob, lob_admin) -> None:
    response = staff.post(
        f"{ADMIN}/membership/add/", {"user": lob_admin.pk, "lob": lob.pk, "role": "viewer"}
    )

    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert Membership.objects.get(user=lob_admin).role == "admin"


def test_a_deactivated_user_cannot_be_added(staff: Client, lob: Lob) -> None:
    retired = make_user("retired", is_active=False)

    response = staff.post(
        f"{ADMIN}/membership/add/", {"user": retired.pk, "lob": lob.pk, "role": "viewer"}
    )

    assert response.status_code == 200
    assert not Membership.objects.filter(user=retired).exists()


# --- Verifying accounts ---------------------------------------------------------------------------


@pytest.fixture
def moto_aws(moto_server: str, settings, monkeypatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_STS"):
        monkeypatch.delenv(name, raising=False)
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = "us-east-1"
    aws_gateway.reset_caches()
    yield moto_server
    aws_gateway.reset_caches()


def test_verify_selected_accounts_action_records_each_outcome(
    staff: Client, platform_admin: User, moto_aws: str
) -> None:
    good = make_account("111111111111")
    bad = make_account("222222222222", external_id="x")  # AWS refuses a 1-character ExternalId

    response = staff.post(
        f"{ADMIN}/awsaccount/",
        {"action": "verify_accounts", "_selected_action": [good.pk, bad.pk]},
    )

    assert response.status_code == 302
    good.refresh_from_db()
    bad.refresh_from_db()
    assert good.last_verification_ok is True
    assert bad.last_verification_ok is False
    assert sorted(messages_of(response)) == [
        f"111111111111 verified: {good.last_verification_detail}",
        f"222222222222 verification failed: {bad.last_verification_detail}",
    ]
    assert (
        AuditEvent.objects.filter(action="aws_account.verified", actor=platform_admin).count() == 2
    )


@pytest.mark.django_db
def test_deactivating_a_user_in_the_admin_is_audited_and_published(client: Client) -> None:
    admin = User.objects.create(username="root-admin", is_staff=True, idp_subject="root")
    target = User.objects.create(username="leaver", idp_subject="leaver")
    client.force_login(admin)
    page = client.get(f"/admin/accounts/user/{target.pk}/change/")
    assert page.status_code == 200

    response = client.post(
        f"/admin/accounts/user/{target.pk}/change/",
        {"is_active": "", "_save": "Save"},
    )

    assert response.status_code == 302, response.content[:500]
    target.refresh_from_db()
    assert target.is_active is False
    assert AuditEvent.objects.filter(action="user.deactivated", actor=admin).exists()
    assert MappingOutbox.objects.filter(kind="user", key="leaver").exists()


def test_users_are_deactivated_never_deleted_in_the_admin(staff: Client, lob_admin: User) -> None:
    # A deletion would bypass the audit trail and leave the person in the Studio mapping table.
    page = staff.get(f"{ADMIN}/user/{lob_admin.pk}/delete/")
    listing = staff.get(f"{ADMIN}/user/")

    assert page.status_code == 403
    assert "delete_selected" not in listing.content.decode()
    assert User.objects.filter(pk=lob_admin.pk).exists()


def test_a_member_id_beyond_a_64_bit_key_is_a_form_error_not_a_500(staff: Client, lob: Lob) -> None:
    big = "9" * 30
    response = staff.post(
        f"{ADMIN}/membership/add/", {"user": big, "lob": big, "role": "analyst", "_save": "Save"}
    )

    assert response.status_code == 200  # the form again, with its errors
    assert response.context["adminform"].form.errors.keys() >= {"user", "lob"}
    assert not Membership.objects.exists()


@pytest.mark.parametrize(
    "changelist",
    ["/admin/accounts/auditevent/", "/admin/accounts/lob/", "/admin/subscriptions/invocation/"],
)
def test_a_search_longer_than_any_column_matches_nothing_instead_of_failing(
    staff: Client, lob: Lob, changelist: str
) -> None:
    AuditEvent.objects.create(action="lob.created", outcome="success", lob_slug=lob.slug)

    # SQLite refuses a LIKE pattern over 50,000 bytes: this answered 500 before.
    response = staff.get(changelist, {"q": "x" * 60_000})

    assert response.status_code == 200
    notices = [str(message) for message in get_messages(response.wsgi_request)]
    assert notices == ["The search is over 1000 characters; nothing matches it."]
    assert staff.get(changelist, {"q": lob.slug}).status_code == 200
