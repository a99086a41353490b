"""Verifying an AWS account assumes its invoke role as the acting user (against moto's STS)."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from accounts.models import AuditEvent, AwsAccount, Membership
from portal import aws_gateway
from tests.factories import LobFactory, MembershipFactory, UserFactory
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def aws(moto_server: str, settings, monkeypatch) -> str:
    settings.AWS_ENDPOINT_URL = moto_server
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    aws_gateway.reset_caches()
    yield moto_server
    aws_gateway.reset_caches()


@pytest.fixture
def world() -> World:
    return build_world()


def verify(world: World, principal: str, account_id: str = "111111111111"):
    client = APIClient()
    client.force_authenticate(world.user(principal))
    return client.post(f"/api/v1/aws-accounts/{account_id}/verify/")


def test_lob_admin_verifies_their_account(world: World, aws: str) -> None:
    response = verify(world, "lob_admin")

    assert response.status_code == 200
    body = response.json()
    assert body["ok"] is True
    # The session name carries the person, so CloudTrail attributes the call to them.
    assert body["caller_arn"].endswith("/gatehouse-lob-a-admin")
    assert ":111111111111:" in body["caller_arn"]
    account = AwsAccount.objects.get(account_id="111111111111")
    assert account.last_verification_ok is True and account.last_verified_at is not None
    event = AuditEvent.objects.get(action="aws_account.verified")
    assert (event.outcome, event.target_id, event.actor) == (
        "success",
        "111111111111",
        world.user("lob_admin"),
    )


def test_unreachable_sts_is_recorded_with_the_error(world: World, aws: str) -> None:
    AwsAccount.objects.filter(account_id="111111111111").update(
        sts_endpoint_url="http://127.0.0.1:9"
    )

    body = verify(world, "platform_admin").json()

    assert body["ok"] is False
    assert body["aws_code"] == "aws_unreachable"
    assert "127.0.0.1:9" in body["detail"]
    assert AwsAccount.objects.get(account_id="111111111111").last_verification_ok is False
    assert AuditEvent.objects.get(action="aws_account.verified").outcome == "failure"


@pytest.mark.parametrize("principal", ["analyst", "viewer", "other_lob_member", "non_member"])
def test_others_cannot_verify(world: World, aws: str, principal: str) -> None:
    assert verify(world, principal).status_code == 404
    assert not AuditEvent.objects.filter(action="aws_account.verified").exists()


def test_anonymous_cannot_verify(world: World) -> None:
    assert APIClient().post("/api/v1/aws-accounts/111111111111/verify/").status_code == 401


def test_a_verification_by_another_lobs_admin_does_not_name_them(world: World, aws: str) -> None:
    # lob-c shares lob-a's account; its admin verifies it, then lob-a's admin reads the account.
    lob_c = LobFactory(slug="lob-c", aws_account=world.lob_a.aws_account)
    lob_c_admin = UserFactory(username="lob-c-admin")
    MembershipFactory(user=lob_c_admin, lob=lob_c, role=Membership.Role.ADMIN)
    client = APIClient()
    client.force_authenticate(lob_c_admin)
    assert client.post("/api/v1/aws-accounts/111111111111/verify/").json()["ok"] is True

    api = APIClient()
    api.force_authenticate(world.user("lob_admin"))
    account = api.get("/api/v1/aws-accounts/111111111111/").json()
    browser = Client()
    browser.force_login(world.user("lob_admin"))
    page = browser.get("/lobs/lob-a/").content.decode()

    assert account["last_verification_ok"] is True
    assert "GatehouseInvoke" in account["last_verification_detail"]
    assert "lob-c-admin" not in account["last_verification_detail"]
    assert "lob-c-admin" not in page
