"""Opening SageMaker Studio: who gets a presigned URL for which domain, as whom, and what is kept.

AWS is the suite's moto, with two stand-ins in front of it in the LOB accounts' endpoint overrides:
the SageMaker Studio stand-in (``devstack.sagemaker_studio``: domains from moto, user profiles and
CreatePresignedDomainUrl of its own) and a small STS recorder that notes each AssumeRole (role,
session name, ExternalId) and passes it on to moto, or refuses it like AWS when told to.
"""

from __future__ import annotations

import html
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.exceptions import ValidationError
from django.test import Client
from flask import Flask, Response, request

from accounts.models import AuditEvent, AwsAccount, Lob, Membership, User
from accounts.services.aws_verification import account_access
from accounts.studio import (
    lob_studio_domain_set,
    membership_studio_profile_set,
    studio_memberships,
)
from devstack.sagemaker_studio import create_app as create_studio
from devstack.wsgi_thread import ThreadedServer, serve_in_thread
from portal import aws_gateway
from portal.errors import NotPermitted
from tests.factories import AwsAccountFactory, LobFactory, MembershipFactory, UserFactory
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
ACCOUNT_A, ACCOUNT_B = "111111111111", "222222222222"
# An account with two Studio domains, and one with none.
ACCOUNT_TWO_DOMAINS, ACCOUNT_NO_DOMAIN = "333333333333", "444444444444"
DOMAIN_A, DOMAIN_B = "d-studio-lob-a", "d-studio-lob-b"
STUDIO_ROLE_A = f"arn:aws:iam::{ACCOUNT_A}:role/SagemakerStudioAccessRole"
CLOSED_PORT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens
JSON = "application/json"


# --- The stand-ins ------------------------------------------------------------------------------


class Clock:
    """Wall-clock time plus an offset the tests move forward (the Studio stand-in's clock)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class StsRecorder:
    """STS in front of moto: records each AssumeRole's parameters; refuses them when told to."""

    def __init__(self, moto_url: str) -> None:
        self.moto_url = moto_url
        self.assume_role_calls: list[dict[str, str]] = []
        self.refuse = False
        self.app = Flask("sts-recorder")
        self.app.add_url_rule("/", "sts", self.sts, methods=["POST"])

    def sts(self) -> Response:
        body = request.get_data()
        form = {key: values[0] for key, values in parse_qs(body.decode()).items()}
        if form.get("Action") == "AssumeRole":
            self.assume_role_calls.append(form)
            if self.refuse:
                return Response(
                    "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>"
                    "<Message>User: arn:aws:iam::000000000000:user/gatehouse is not authorized "
                    f"to perform: sts:AssumeRole on resource: {form.get('RoleArn')}</Message>"
                    "</Error><RequestId>r-1</RequestId></ErrorResponse>",
                    status=403,
                    mimetype="text/xml",
                )
        headers = {k: v for k, v in request.headers if k.lower() not in ("host", "content-length")}
        answer = requests.post(self.moto_url, data=body, headers=headers, timeout=10)
        return Response(answer.content, status=answer.status_code, mimetype="text/xml")


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def studio_stand_in(moto_server: str, clock: Clock) -> Iterator[ThreadedServer]:
    """The Studio stand-in with each test account's domains and user profiles."""
    seeds = [
        (
            ACCOUNT_A,
            "studio-lob-a",
            ["lob-a-analyst", "lob-a-viewer", "studio-carol", "studio-lob-a-admin", "user-lob-a"],
        ),
        (ACCOUNT_B, "studio-lob-b", ["lob-b-analyst"]),
        (ACCOUNT_TWO_DOMAINS, "studio-one", ["lob-a-analyst"]),
        (ACCOUNT_TWO_DOMAINS, "studio-two", ["lob-a-analyst"]),
    ]
    with serve_in_thread(create_studio(moto_url=moto_server, clock=clock)) as server:
        for account, name, profiles in seeds:
            requests.post(
                f"{server.url}/_stand-in/domains",
                json={"account_id": account, "domain_name": name, "user_profiles": profiles},
                timeout=30,
            ).raise_for_status()
        yield server


@pytest.fixture(scope="module")
def sts_recorder(moto_server: str) -> Iterator[StsRecorder]:
    recorder = StsRecorder(moto_server)
    with serve_in_thread(recorder.app) as server:
        recorder.url = server.url
        yield recorder


@pytest.fixture
def aws(moto_server: str, settings, monkeypatch) -> Iterator[str]:
    """The portal's credentials are moto's dummies; one attempt per call; fresh caches."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = REGION
    settings.AWS_MAX_ATTEMPTS = 1
    aws_gateway.reset_caches()
    yield moto_server
    aws_gateway.reset_caches()


@dataclass
class StudioWorld:
    """lob-a and lob-b (tests/tenancy_world.py) whose accounts reach AWS through the stand-ins."""

    world: World
    studio: ThreadedServer
    sts: StsRecorder
    clock: Clock

    def user(self, principal: str) -> User:
        user = self.world.user(principal)
        assert user is not None
        return user

    def client(self, principal: str | User | None) -> Client:
        client = Client()
        user = self.user(principal) if isinstance(principal, str) else principal
        if user is not None:
            client.force_login(user)
        return client

    def open(self, principal: str | User | None, slug: str = "lob-a", **headers: str):
        return self.client(principal).get(f"/studio/{slug}/", **headers)

    def calls(self) -> list[dict[str, Any]]:
        """The CreatePresignedDomainUrl calls the Studio stand-in answered."""
        answer = requests.get(f"{self.studio.url}/_stand-in/presigned-url-calls", timeout=5)
        return answer.json()["calls"]

    def set_domain_status(self, account: str, domain: str, status: str | None) -> None:
        url = f"{self.studio.url}/_stand-in/domains/{account}/{domain}/status"
        if status is None:
            requests.delete(url, timeout=5).raise_for_status()
        else:
            requests.put(url, json={"status": status}, timeout=5).raise_for_status()


def point_at_stand_ins(account: AwsAccount, studio: ThreadedServer, sts: StsRecorder) -> None:
    account.sagemaker_endpoint_url = studio.url
    account.sts_endpoint_url = sts.url
    account.external_id = f"gatehouse-studio-{account.account_id}"
    account.save()


@pytest.fixture
def studio_world(
    aws: str, studio_stand_in: ThreadedServer, sts_recorder: StsRecorder, clock: Clock
) -> Iterator[StudioWorld]:
    world = build_world()
    for lob in (world.lob_a, world.lob_b):
        point_at_stand_ins(lob.aws_account, studio_stand_in, sts_recorder)
    requests.delete(f"{studio_stand_in.url}/_stand-in/presigned-url-calls", timeout=5)
    sts_recorder.assume_role_calls.clear()
    sts_recorder.refuse = False
    clock.offset = 0.0
    yield StudioWorld(world=world, studio=studio_stand_in, sts=sts_recorder, clock=clock)
    sts_recorder.refuse = False
    for account, domain in ((ACCOUNT_A, DOMAIN_A), (ACCOUNT_B, DOMAIN_B)):
        requests.delete(
            f"{studio_stand_in.url}/_stand-in/domains/{account}/{domain}/status", timeout=5
        )


def studio_lob(slug: str, account_id: str, sw: StudioWorld, **fields: object) -> Lob:
    """Another LOB, in its own account reached through the stand-ins."""
    account = AwsAccountFactory(account_id=account_id)
    point_at_stand_ins(account, sw.studio, sw.sts)
    return LobFactory(slug=slug, aws_account=account, **fields)


def location_of(response) -> tuple[str, dict[str, str]]:
    """The redirect's path and its query parameters (one value each)."""
    parts = urlsplit(response["Location"])
    return parts.path, {key: values[0] for key, values in parse_qs(parts.query).items()}


def events(**filters: object) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action="studio.open", **filters).order_by("occurred_at"))


# --- A member opens their Studio ----------------------------------------------------------------


def test_analyst_is_redirected_to_their_profile_in_their_lobs_domain(studio_world) -> None:
    response = studio_world.open("analyst")

    assert response.status_code == 302
    assert response["Location"].startswith(f"{studio_world.studio.url}/studio/")
    path, query = location_of(response)
    assert path == f"/studio/{DOMAIN_A}"
    assert (query["user"], query["account"]) == ("lob-a-analyst", ACCOUNT_A)
    assert response["Cache-Control"] == "no-store"

    studio_page = requests.get(response["Location"], timeout=5)
    assert studio_page.status_code == 200
    assert f'data-testid="studio-domain">{DOMAIN_A}<' in studio_page.text
    assert 'data-testid="studio-user">lob-a-analyst<' in studio_page.text


def test_url_life_and_session_length_come_from_the_settings(studio_world, settings) -> None:
    studio_world.open("analyst")
    settings.STUDIO_URL_EXPIRES_SECONDS = 60
    settings.STUDIO_SESSION_SECONDS = 3600
    studio_world.open("analyst")

    first, second = studio_world.calls()
    assert (first["expires_in_seconds"], first["session_expiration_seconds"]) == (20, 43200)
    assert (second["expires_in_seconds"], second["session_expiration_seconds"]) == (60, 3600)


def test_the_studio_role_is_assumed_with_the_external_id_and_a_session_naming_the_user(
    studio_world,
) -> None:
    assert studio_world.open("analyst").status_code == 302

    [assumed] = studio_world.sts.assume_role_calls
    assert assumed["RoleArn"] == STUDIO_ROLE_A
    assert assumed["RoleSessionName"] == "gatehouse-lob-a-analyst"
    assert assumed["ExternalId"] == f"gatehouse-studio-{ACCOUNT_A}"
    # CreatePresignedDomainUrl was signed with that assumed role's credentials: AWS (moto) says
    # so of the key the stand-in saw, and the same client path reports the same identity.
    [call] = studio_world.calls()
    expected_arn = f"arn:aws:sts::{ACCOUNT_A}:assumed-role/SagemakerStudioAccessRole/"
    assert call["caller_arn"] == expected_arn + "gatehouse-lob-a-analyst"
    assert call["access_key_id"].startswith("ASIA")  # temporary credentials, not the portal's
    identity = aws_gateway.caller_identity(
        access=account_access(studio_world.world.lob_a.aws_account, role_arn=STUDIO_ROLE_A),
        session_name=aws_gateway.session_name_for(studio_world.user("analyst")),
    )
    assert identity["arn"] == call["caller_arn"]


def test_two_users_are_told_apart_in_aws(studio_world) -> None:
    studio_world.open("analyst")
    studio_world.open("other_lob_member", "lob-b")

    callers = {(c["account_id"], c["caller_arn"].rsplit("/", 1)[1]) for c in studio_world.calls()}
    assert callers == {
        (ACCOUNT_A, "gatehouse-lob-a-analyst"),
        (ACCOUNT_B, "gatehouse-lob-b-analyst"),
    }


def test_lob_admin_opens_studio_too(studio_world) -> None:
    membership = Membership.objects.get(user=studio_world.user("lob_admin"))
    membership.studio_profile_name = "studio-lob-a-admin"
    membership.save()
    assert studio_world.open("lob_admin").status_code == 302


def test_a_profile_another_member_opens_is_never_presigned(studio_world) -> None:
    """Someone whose profile name is set to a colleague's profile (the colleague's username by
    default) must not land in the colleague's Studio."""
    membership = Membership.objects.get(user=studio_world.user("lob_admin"))
    membership.studio_profile_name = "lob-a-analyst"  # lob-a-analyst's own profile
    membership.save()

    refused = studio_world.open("lob_admin", HTTP_ACCEPT=JSON)

    assert refused.status_code == 409
    assert refused.json()["code"] == "studio_profile_shared"
    assert studio_world.calls() == []
    [failure] = events(outcome="failure")
    assert (failure.actor, failure.reason) == (
        studio_world.user("lob_admin"),
        "studio_profile_shared",
    )
    assert studio_world.open("analyst").status_code == 409  # nor the colleague, until it is fixed

    membership.studio_profile_name = ""
    membership.save()
    assert studio_world.open("analyst").status_code == 302


def test_membership_profile_name_replaces_the_username(studio_world) -> None:
    carol = UserFactory(username="carol@example.com")
    membership = MembershipFactory(user=carol, lob=studio_world.world.lob_a, role="analyst")
    refused = studio_world.open(carol, HTTP_ACCEPT=JSON)
    assert refused.status_code == 409
    assert refused.json()["code"] == "studio_profile_name_invalid"
    assert studio_world.calls() == []

    membership.studio_profile_name = "studio-carol"
    membership.save()
    response = studio_world.open(carol)

    assert response.status_code == 302
    assert location_of(response)[1]["user"] == "studio-carol"


def test_the_url_expires_at_the_stand_in(studio_world) -> None:
    response = studio_world.open("analyst")
    studio_world.clock.offset = 21  # the URL lives 20 s

    studio_page = requests.get(response["Location"], timeout=5)

    assert studio_page.status_code == 403
    assert 'data-reason="expired"' in studio_page.text


def test_the_url_is_never_logged_nor_audited(studio_world, caplog) -> None:
    caplog.set_level(logging.DEBUG)

    response = studio_world.open("analyst")

    url = response["Location"]
    signature = location_of(response)[1]["sig"]
    assert "Studio opened for lob-a-analyst in lob-a" in caplog.text
    assert url not in caplog.text
    assert signature not in caplog.text
    audit_trail = json.dumps(
        list(AuditEvent.objects.values("action", "target_id", "reason", "detail")), default=str
    )
    assert signature not in audit_trail
    assert "/studio/" not in audit_trail


def test_an_allowed_attempt_is_audited(studio_world) -> None:
    studio_world.open("analyst")

    [event] = events()
    assert (event.outcome, event.actor, event.lob_slug) == (
        AuditEvent.Outcome.SUCCESS,
        studio_world.user("analyst"),
        "lob-a",
    )
    assert event.detail == {
        "account_id": ACCOUNT_A,
        "role_arn": STUDIO_ROLE_A,
        "session_name": "gatehouse-lob-a-analyst",
        "profile": "lob-a-analyst",
        "domain_id": DOMAIN_A,
        "url_expires_seconds": 20,
        "session_seconds": 43200,
    }
    assert event.request_id


def test_a_program_with_a_cognito_token_is_redirected_too(studio_world, cognito) -> None:
    user = User.objects.create(
        username="user-lob-a", idp_issuer=cognito.pool.issuer, idp_subject=cognito.sub("user-lob-a")
    )
    MembershipFactory(user=user, lob=studio_world.world.lob_a, role="analyst")
    token = cognito.access_token("user-lob-a")

    response = Client().get(
        "/studio/lob-a/", HTTP_AUTHORIZATION=f"Bearer {token}", HTTP_ACCEPT=JSON
    )

    assert response.status_code == 302
    assert location_of(response)[1]["user"] == "user-lob-a"
    bad = Client().get("/studio/lob-a/", HTTP_AUTHORIZATION="Bearer not-a-jwt", HTTP_ACCEPT=JSON)
    assert bad.status_code == 401
    assert bad.json()["code"] == "token_invalid"


# --- Who is refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("principal", "code"),
    [
        ("other_lob_member", "not_a_member"),
        ("non_member", "not_a_member"),
        ("platform_admin", "not_a_member"),  # sees every LOB, but has no Studio in it
        ("viewer", "studio_role_not_allowed"),
    ],
)
def test_refused_principals_get_403_and_an_audit_event(studio_world, principal, code) -> None:
    page = studio_world.open(principal)
    api = studio_world.open(principal, HTTP_ACCEPT=JSON)

    assert page.status_code == 403
    assert page.templates[0].name == "accounts/studio_error.html"
    assert page.context["code"] == code
    assert api.status_code == 403
    assert api.json()["code"] == code
    refused = events(outcome=AuditEvent.Outcome.REFUSED, reason=code)
    assert len(refused) == 2
    assert {(e.actor, e.lob_slug) for e in refused} == {(studio_world.user(principal), "lob-a")}
    assert studio_world.calls() == []
    assert studio_world.sts.assume_role_calls == []


def test_another_lobs_path_is_403_for_a_member_of_one_lob(studio_world) -> None:
    response = studio_world.open("analyst", "lob-b")

    assert response.status_code == 403
    body = response.content.decode()
    assert "not a member of “lob-b”" in body
    assert "Ask one of its admins to add you." in body
    [event] = events(lob_slug="lob-b")
    assert (event.outcome, event.reason) == (AuditEvent.Outcome.REFUSED, "not_a_member")


def test_viewers_open_studio_when_the_setting_allows_it(studio_world, settings) -> None:
    settings.STUDIO_ALLOW_VIEWERS = True

    response = studio_world.open("viewer")

    assert response.status_code == 302
    assert location_of(response)[1]["user"] == "lob-a-viewer"


def test_unknown_lob_is_404_and_audited(studio_world) -> None:
    page = studio_world.open("analyst", "no-such-lob")
    api = studio_world.open("analyst", "no-such-lob", HTTP_ACCEPT=JSON)

    assert page.status_code == 404
    assert "no line of business called “no-such-lob”" in page.content.decode()
    assert api.status_code == 404
    assert api.json() == {
        "detail": "There is no line of business called “no-such-lob”.",
        "code": "lob_not_found",
        "hint": "Open Studio from your dashboard, which lists your lines of business.",
    }
    refused = events(reason="lob_not_found")
    assert len(refused) == 2
    assert {(e.lob_slug, e.target_id) for e in refused} == {("", "no-such-lob")}


def test_inactive_lob_is_403(studio_world) -> None:
    """An inactive LOB grants its members no role (tenancy selectors) and closes its Studio."""
    Lob.objects.filter(pk=studio_world.world.lob_a.pk).update(is_active=False)
    MembershipFactory(user=studio_world.user("platform_admin"), lob=studio_world.world.lob_a)

    member = studio_world.open("analyst", HTTP_ACCEPT=JSON)
    platform_admin_member = studio_world.open("platform_admin", HTTP_ACCEPT=JSON)

    assert (member.status_code, member.json()["code"]) == (403, "not_a_member")
    assert platform_admin_member.status_code == 403
    assert platform_admin_member.json()["code"] == "lob_inactive"
    assert studio_world.calls() == []


def test_anonymous_browser_is_sent_to_sign_in_and_a_program_gets_401(studio_world) -> None:
    browser = Client().get("/studio/lob-a/")
    program = Client().get("/studio/lob-a/", HTTP_ACCEPT=JSON)

    assert browser.status_code == 302
    assert browser["Location"] == "/login/?next=/studio/lob-a/"
    assert program.status_code == 401
    assert program.json() == {"detail": "Sign in first.", "code": "not_authenticated"}
    assert program["WWW-Authenticate"] == 'Bearer realm="gatehouse"'
    refused = events(reason="not_authenticated")
    assert [(e.actor, e.lob_slug, e.outcome) for e in refused] == [
        (None, "lob-a", AuditEvent.Outcome.REFUSED)
    ] * 2


# --- Errors a person can act on -----------------------------------------------------------------


def test_no_profile_for_the_user_is_explained(studio_world) -> None:
    page = studio_world.open("lob_admin")  # lob-a-admin has no profile in the domain
    api = studio_world.open("lob_admin", HTTP_ACCEPT=JSON)

    assert page.status_code == 409
    body = page.content.decode()
    assert "You have no Studio profile here" in body
    assert f"The Studio domain {DOMAIN_A} of “lob-a” has no user profile “lob-a-admin”." in body
    assert api.status_code == 409
    assert api.json()["code"] == "studio_profile_not_found"
    assert "profile" in api.json()["hint"]
    failure = events(outcome=AuditEvent.Outcome.FAILURE)[0]
    assert failure.reason == "studio_profile_not_found"
    assert failure.detail["aws_code"] == "ResourceNotFound"
    assert failure.detail["domain_id"] == DOMAIN_A


def test_a_role_that_cannot_be_assumed_is_explained(studio_world) -> None:
    studio_world.sts.refuse = True

    page = studio_world.open("analyst")
    api = studio_world.open("analyst", HTTP_ACCEPT=JSON)

    assert page.status_code == 502
    assert "The Studio access role cannot be assumed" in page.content.decode()
    assert api.status_code == 502
    assert api.json()["code"] == "studio_role_not_assumable"
    assert "ExternalId" in api.json()["hint"]
    assert STUDIO_ROLE_A in api.json()["detail"]
    failure = events(outcome=AuditEvent.Outcome.FAILURE)[0]
    assert (failure.reason, failure.detail["aws_code"]) == (
        "studio_role_not_assumable",
        "AccessDenied",
    )
    assert studio_world.calls() == []


def test_a_refused_assume_role_does_not_name_the_portals_own_principal(studio_world) -> None:
    # STS's refusal names who asked: the portal's own IAM principal, in the portal's account.
    studio_world.sts.refuse = True

    page = studio_world.open("analyst").content.decode()
    api = studio_world.open("analyst", HTTP_ACCEPT=JSON).json()

    failure = events(outcome=AuditEvent.Outcome.FAILURE)[0]
    for shown in (page, api["detail"], failure.detail["message"]):
        assert "000000000000" not in shown
        assert "user/gatehouse" not in shown
    assert STUDIO_ROLE_A in api["detail"]
    assert "not authorized" in api["detail"]


@pytest.mark.parametrize("configured", [False, True], ids=["discovered", "configured"])
def test_a_domain_not_in_service_is_explained(studio_world, configured: bool) -> None:
    if configured:
        Lob.objects.filter(pk=studio_world.world.lob_a.pk).update(studio_domain_id=DOMAIN_A)
    studio_world.set_domain_status(ACCOUNT_A, DOMAIN_A, "Updating")

    page = studio_world.open("analyst")
    api = studio_world.open("analyst", HTTP_ACCEPT=JSON)

    assert page.status_code == 503
    assert "Studio is not in service" in page.content.decode()
    assert api.json()["code"] == "studio_domain_not_in_service"
    assert f"{DOMAIN_A} in account {ACCOUNT_A} is Updating" in api.json()["detail"]
    assert studio_world.calls() == []
    studio_world.set_domain_status(ACCOUNT_A, DOMAIN_A, None)
    assert studio_world.open("analyst").status_code == 302


def test_several_domains_need_the_lobs_domain_id(studio_world) -> None:
    lob = studio_lob("lob-c", ACCOUNT_TWO_DOMAINS, studio_world)
    MembershipFactory(user=studio_world.user("analyst"), lob=lob, role="analyst")

    ambiguous = studio_world.open("analyst", "lob-c", HTTP_ACCEPT=JSON)
    assert ambiguous.status_code == 409
    assert ambiguous.json()["code"] == "studio_domain_ambiguous"
    assert "d-studio-one, d-studio-two" in ambiguous.json()["detail"]

    Lob.objects.filter(pk=lob.pk).update(studio_domain_id="d-studio-two")
    response = studio_world.open("analyst", "lob-c")
    assert response.status_code == 302
    assert location_of(response)[0] == "/studio/d-studio-two"


def test_no_domain_is_explained(studio_world) -> None:
    lob = studio_lob("lob-d", ACCOUNT_NO_DOMAIN, studio_world)
    MembershipFactory(user=studio_world.user("analyst"), lob=lob, role="analyst")
    Lob.objects.filter(pk=studio_world.world.lob_a.pk).update(studio_domain_id="d-nope")

    none = studio_world.open("analyst", "lob-d", HTTP_ACCEPT=JSON)
    wrong_id = studio_world.open("analyst", "lob-a", HTTP_ACCEPT=JSON)

    assert none.status_code == 409
    assert none.json()["code"] == "studio_domain_not_found"
    assert f"Account {ACCOUNT_NO_DOMAIN} has no SageMaker Studio domain." == none.json()["detail"]
    assert wrong_id.status_code == 409
    assert wrong_id.json()["code"] == "studio_domain_not_found"
    assert "d-nope" in wrong_id.json()["detail"]


def test_an_unreachable_sagemaker_endpoint_is_a_503(studio_world) -> None:
    AwsAccount.objects.filter(account_id=ACCOUNT_A).update(sagemaker_endpoint_url=CLOSED_PORT_URL)

    response = studio_world.open("analyst", HTTP_ACCEPT=JSON)

    assert response.status_code == 503
    assert response.json()["code"] == "studio_aws_unavailable"
    assert events(outcome=AuditEvent.Outcome.FAILURE)[0].reason == "studio_aws_unavailable"


def test_an_account_pointed_at_the_stand_in_still_answers_describe_endpoint(studio_world) -> None:
    """The stand-in passes every other SageMaker call to moto (the endpoint sync needs it)."""
    account = studio_world.world.lob_a.aws_account
    direct = aws_gateway.client("sagemaker", access=account_access(account))
    name = "studio-passthrough-check"
    # moto's list filters are loose: look for the exact name.
    if name not in {e["EndpointName"] for e in direct.list_endpoints()["Endpoints"]}:
        direct.create_model(
            ModelName=name,
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT_A}:role/SageMakerExecutionRole",
            PrimaryContainer={"Image": "identity-transcoder:local"},
        )
        direct.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": name,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
        )
        direct.create_endpoint(EndpointName=name, EndpointConfigName=name)

    assert direct.meta.endpoint_url == studio_world.studio.url
    assert direct.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService"


# --- Choosing a LOB, and the buttons ------------------------------------------------------------


def test_studio_home_goes_straight_to_the_only_lob(studio_world) -> None:
    response = studio_world.client("analyst").get("/studio/")
    assert response.status_code == 302
    assert response["Location"] == "/studio/lob-a/"


def test_studio_home_lists_the_lobs_to_choose_from(studio_world) -> None:
    MembershipFactory(user=studio_world.user("analyst"), lob=studio_world.world.lob_b)

    response = studio_world.client("analyst").get("/studio/")

    assert response.status_code == 200
    body = response.content.decode()
    assert 'href="/studio/lob-a/"' in body
    assert 'href="/studio/lob-b/"' in body


def test_studio_home_tells_a_viewer_why_nothing_is_listed(studio_world) -> None:
    response = studio_world.client("viewer").get("/studio/")

    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-testid="studio-none"' in body
    assert 'data-testid="studio-held-back"' in body
    assert 'href="/studio/lob-a/"' not in body


@pytest.mark.parametrize("principal", ["platform_admin", "non_member"])
def test_studio_home_tells_someone_in_no_lob_just_that(studio_world, principal: str) -> None:
    # "None of your lines of business opens Studio for you" read as if they had some.
    response = studio_world.client(principal).get("/studio/")

    assert response.status_code == 200
    body = html.unescape(response.content.decode())
    assert "You are not a member of any line of business" in body
    assert "None of your lines of business" not in body


def test_dashboard_shows_open_studio_where_the_user_may(studio_world) -> None:
    MembershipFactory(user=studio_world.user("viewer"), lob=studio_world.world.lob_b)

    analyst = studio_world.client("analyst").get("/").content.decode()
    viewer = studio_world.client("viewer").get("/").content.decode()

    assert 'href="/studio/lob-a/">Open Studio</a>' in analyst
    assert 'href="/studio/lob-a/"' not in viewer  # a viewer there
    assert 'href="/studio/lob-b/">Open Studio</a>' in viewer  # an analyst there


@pytest.mark.parametrize(
    ("principal", "shown"),
    [("analyst", True), ("lob_admin", True), ("viewer", False), ("platform_admin", False)],
)
def test_lob_page_shows_open_studio_to_members_who_may(studio_world, principal, shown) -> None:
    body = studio_world.client(principal).get("/lobs/lob-a/").content.decode()
    assert ('data-testid="open-studio"' in body) is shown


def test_studio_memberships_follow_the_viewer_setting(studio_world, settings) -> None:
    viewer = studio_world.user("viewer")
    assert studio_memberships(viewer) == []
    settings.STUDIO_ALLOW_VIEWERS = True
    assert [m.lob.slug for m in studio_memberships(viewer)] == ["lob-a"]


# --- Configuring domain and profile -------------------------------------------------------------


def test_only_platform_admins_set_a_lobs_domain_and_it_is_audited(studio_world) -> None:
    lob = studio_world.world.lob_a
    with pytest.raises(NotPermitted):
        lob_studio_domain_set(
            lob=lob, studio_domain_id=DOMAIN_A, acting_user=studio_world.user("lob_admin")
        )
    with pytest.raises(ValidationError):
        lob_studio_domain_set(
            lob=lob,
            studio_domain_id="Not A Domain",
            acting_user=studio_world.user("platform_admin"),
        )

    lob_studio_domain_set(
        lob=lob, studio_domain_id=DOMAIN_A, acting_user=studio_world.user("platform_admin")
    )

    lob.refresh_from_db()
    assert lob.studio_domain_id == DOMAIN_A
    event = AuditEvent.objects.get(action="lob.studio_domain_changed")
    assert (event.lob_slug, event.detail) == ("lob-a", {"before": "", "after": DOMAIN_A})


def test_lob_admins_set_their_members_profile_names_and_it_is_audited(studio_world) -> None:
    membership = Membership.objects.get(user=studio_world.user("analyst"))
    for outsider in ("analyst", "other_lob_member"):
        with pytest.raises(NotPermitted):
            membership_studio_profile_set(
                membership=membership,
                studio_profile_name="x",
                acting_user=studio_world.user(outsider),
            )
    with pytest.raises(ValidationError):
        membership_studio_profile_set(
            membership=membership,
            studio_profile_name="not valid",
            acting_user=studio_world.user("lob_admin"),
        )

    membership_studio_profile_set(
        membership=membership,
        studio_profile_name="studio-carol",
        acting_user=studio_world.user("lob_admin"),
    )

    membership.refresh_from_db()
    assert membership.effective_studio_profile_name == "studio-carol"
    event = AuditEvent.objects.get(action="membership.studio_profile_changed")
    assert event.actor == studio_world.user("lob_admin")
    assert event.detail == {"user": "lob-a-analyst", "before": "", "after": "studio-carol"}


def test_platform_admins_edit_domain_and_profile_in_the_django_admin(studio_world) -> None:
    staff = studio_world.client("platform_admin")
    lob = studio_world.world.lob_a
    membership = Membership.objects.get(user=studio_world.user("analyst"))

    changed = staff.post(
        f"/admin/accounts/membership/{membership.pk}/change/",
        {"role": "analyst", "studio_profile_name": "studio-carol"},
    )
    lob_changed = staff.post(
        f"/admin/accounts/lob/{lob.pk}/change/",
        {
            "slug": lob.slug,
            "name": lob.name,
            "aws_account": str(lob.aws_account_id),
            "studio_domain_id": DOMAIN_A,
            "is_active": "on",
            "memberships-TOTAL_FORMS": "0",
            "memberships-INITIAL_FORMS": "0",
            "memberships-MIN_NUM_FORMS": "0",
            "memberships-MAX_NUM_FORMS": "1000",
        },
    )

    assert changed.status_code == 302, changed.content[:2000]
    assert lob_changed.status_code == 302, lob_changed.content[:2000]
    membership.refresh_from_db()
    lob.refresh_from_db()
    assert (membership.studio_profile_name, lob.studio_domain_id) == ("studio-carol", DOMAIN_A)
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"membership.studio_profile_changed", "lob.studio_domain_changed"} <= actions
    response = studio_world.open("analyst")
    assert location_of(response)[1]["user"] == "studio-carol"


# --- Found by the sign-in and Studio review -------------------------------------------------------


def test_head_mints_no_url_and_audits_nothing(studio_world) -> None:
    response = studio_world.client("analyst").head("/studio/lob-a/")

    assert response.status_code == 405
    assert studio_world.calls() == [] and events() == []


@pytest.mark.parametrize("accept", ["text/plain", "application/xml", "image/png"])
def test_an_unusual_accept_is_still_answered_and_audited(studio_world, accept: str) -> None:
    response = studio_world.open("analyst", HTTP_ACCEPT=accept)

    assert response.status_code == 302
    assert [event.outcome for event in events()] == [AuditEvent.Outcome.SUCCESS]


def test_a_bad_bearer_token_is_a_refused_attempt_with_a_hint(studio_world) -> None:
    response = Client().get(
        "/studio/lob-a/", HTTP_AUTHORIZATION="Bearer not-a-token", HTTP_ACCEPT=JSON
    )

    assert response.status_code == 401
    body = response.json()
    assert body["code"] == "token_invalid" and body["detail"] and body["hint"]
    assert [(e.reason, e.outcome) for e in events()] == [
        ("token_invalid", AuditEvent.Outcome.REFUSED)
    ]
    assert studio_world.calls() == []
