"""The SageMaker Studio stand-in, driven by real botocore ``sagemaker`` clients over HTTP.

Callers act in an account the way the portal does: STS AssumeRole on moto, then SageMaker through
the stand-in. Domains live in moto (per account); user profiles, presigned URLs and the Studio
page are the stand-in's own; everything else is moto's, unchanged.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, ParamValidationError

from devstack.sagemaker_studio import build_parser, create_app, parse_domain
from devstack.wsgi_thread import ThreadedServer, serve_in_thread

REGION = "us-east-1"
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
DOMAIN_A = "d-studio-lob-a"
DOMAIN_B = "d-studio-lob-b"
ROLE = "arn:aws:iam::{account}:role/SagemakerStudioAccessRole"


class Clock:
    """Wall-clock time plus an offset the tests move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def studio(moto_server: str, clock: Clock) -> Iterator[ThreadedServer]:
    """The stand-in in front of the suite's moto, with a domain and profiles in two accounts."""
    app = create_app(moto_url=moto_server, signing_key=b"studio test key", clock=clock)
    with serve_in_thread(app) as server:
        for account, name, profiles in (
            (ACCOUNT_A, "studio-lob-a", ["user-lob-a", "lob-a-admin"]),
            (ACCOUNT_B, "studio-lob-b", ["user-lob-b"]),
        ):
            seeded = requests.post(
                f"{server.url}/_stand-in/domains",
                json={"account_id": account, "domain_name": name, "user_profiles": profiles},
                timeout=30,
            )
            assert seeded.status_code == 201, seeded.text
        yield server


@pytest.fixture(autouse=True)
def _fresh_state(studio: ThreadedServer, clock: Clock) -> Iterator[None]:
    """Each test starts at the real time, with no recorded calls and no status overrides."""
    clock.offset = 0.0
    requests.delete(f"{studio.url}/_stand-in/presigned-url-calls", timeout=5)
    yield
    for account, domain in ((ACCOUNT_A, DOMAIN_A), (ACCOUNT_B, DOMAIN_B)):
        requests.delete(f"{studio.url}/_stand-in/domains/{account}/{domain}/status", timeout=5)


def assumed_credentials(moto_server: str, account: str, session_name: str) -> dict[str, str]:
    """Credentials of the account's Studio access role, assumed on moto as ``session_name``."""
    sts = boto3.client(
        "sts",
        region_name=REGION,
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    return sts.assume_role(
        RoleArn=ROLE.format(account=account),
        RoleSessionName=session_name,
        ExternalId="gatehouse-studio",
    )["Credentials"]


def sagemaker_as(url: str, credentials: dict[str, str], *, region: str = REGION) -> BaseClient:
    """A SageMaker client with the given credentials pointed at ``url``; no retries."""
    return boto3.client(
        "sagemaker",
        region_name=region,
        endpoint_url=url,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def lob_a_credentials(moto_server: str) -> dict[str, str]:
    return assumed_credentials(moto_server, ACCOUNT_A, "gatehouse-user-lob-a")


@pytest.fixture
def lob_a(studio: ThreadedServer, lob_a_credentials: dict[str, str]) -> BaseClient:
    """SageMaker in lob-a's account (111111111111), through the stand-in."""
    return sagemaker_as(studio.url, lob_a_credentials)


@pytest.fixture
def lob_b(studio: ThreadedServer, moto_server: str) -> BaseClient:
    """SageMaker in lob-b's account (222222222222), through the stand-in."""
    return sagemaker_as(
        studio.url, assumed_credentials(moto_server, ACCOUNT_B, "gatehouse-user-lob-b")
    )


def presign(client: BaseClient, domain: str = DOMAIN_A, user: str = "user-lob-a", **extra) -> str:
    answer = client.create_presigned_domain_url(DomainId=domain, UserProfileName=user, **extra)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    return answer["AuthorizedUrl"]


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = excinfo.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def recorded_calls(studio: ThreadedServer) -> list[dict]:
    return requests.get(f"{studio.url}/_stand-in/presigned-url-calls", timeout=5).json()["calls"]


# --- CreatePresignedDomainUrl and the Studio page -----------------------------------------------


def test_presigned_url_names_domain_and_profile_and_opens_the_studio_page(studio, lob_a) -> None:
    url = presign(lob_a, ExpiresInSeconds=20, SessionExpirationDurationInSeconds=3600)

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}" == studio.url
    assert parts.path == f"/studio/{DOMAIN_A}"
    assert query["user"] == ["user-lob-a"]
    assert query["account"] == [ACCOUNT_A]
    assert query["session"] == ["3600"]
    assert abs(int(query["expires"][0]) - (time.time() + 20)) < 5

    page = requests.get(url, timeout=5)
    assert page.status_code == 200
    assert f'data-testid="studio-domain">{DOMAIN_A}<' in page.text
    assert 'data-testid="studio-user">user-lob-a<' in page.text
    assert f'data-testid="studio-account">{ACCOUNT_A}<' in page.text
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["Referrer-Policy"] == "no-referrer"


def test_each_call_is_recorded_with_the_callers_assumed_role_session(
    studio, lob_a, lob_a_credentials
) -> None:
    url = presign(lob_a, ExpiresInSeconds=20, SessionExpirationDurationInSeconds=43200)

    [call] = recorded_calls(studio)
    assert call["caller_arn"] == (
        f"arn:aws:sts::{ACCOUNT_A}:assumed-role/SagemakerStudioAccessRole/gatehouse-user-lob-a"
    )
    assert call["access_key_id"] == lob_a_credentials["AccessKeyId"]
    assert (call["account_id"], call["region"]) == (ACCOUNT_A, REGION)
    assert (call["domain_id"], call["user_profile_name"]) == (DOMAIN_A, "user-lob-a")
    assert (call["expires_in_seconds"], call["session_expiration_seconds"]) == (20, 43200)
    # What was asked is recorded, never the credential it was answered with.
    assert url not in str(call)
    assert parse_qs(urlsplit(url).query)["sig"][0] not in str(call)


def test_defaults_are_aws_defaults(lob_a) -> None:
    query = parse_qs(urlsplit(presign(lob_a)).query)
    assert query["session"] == ["43200"]
    assert abs(int(query["expires"][0]) - (time.time() + 300)) < 5


def test_an_expired_url_is_refused(lob_a, clock: Clock) -> None:
    url = presign(lob_a, ExpiresInSeconds=5)
    clock.offset = 6

    page = requests.get(url, timeout=5)

    assert page.status_code == 403
    assert 'data-reason="expired"' in page.text
    assert "Invalid or Expired Auth Token" in page.text
    assert "user-lob-a" not in page.text


@pytest.mark.parametrize(
    "tamper",
    [
        lambda url: url.replace("user=user-lob-a", "user=lob-a-admin"),
        lambda url: url.replace(DOMAIN_A, DOMAIN_B),
        lambda url: url.replace(f"account={ACCOUNT_A}", f"account={ACCOUNT_B}"),
        lambda url: url.replace("session=43200", "session=86400"),
        lambda url: url.split("&sig=")[0],
        lambda url: url.split("&sig=")[0] + "&sig=" + "0" * 64,
        lambda url: url.replace("expires=", "expires=x"),
    ],
    ids=["user", "domain", "account", "session", "no-signature", "wrong-signature", "bad-expiry"],
)
def test_a_tampered_url_is_invalid(lob_a, tamper) -> None:
    url = presign(lob_a)
    page = requests.get(tamper(url), timeout=5)
    assert page.status_code == 403
    assert 'data-reason="invalid"' in page.text


def test_a_url_from_another_stand_in_key_is_invalid(moto_server, lob_a_credentials) -> None:
    other = create_app(moto_url=moto_server, signing_key=b"another key")
    with serve_in_thread(other) as server:
        requests.post(
            f"{server.url}/_stand-in/domains",
            json={"account_id": ACCOUNT_A, "domain_name": "studio-lob-a", "user_profiles": ["x1"]},
            timeout=30,
        ).raise_for_status()
        url = presign(sagemaker_as(server.url, lob_a_credentials), user="x1")
    forged = url.replace(server.url, "")
    with serve_in_thread(create_app(moto_url=moto_server, signing_key=b"mine")) as mine:
        page = requests.get(f"{mine.url}{forged}", timeout=5)
    assert page.status_code == 403
    assert 'data-reason="invalid"' in page.text


def test_unknown_profile_is_resource_not_found(lob_a) -> None:
    with pytest.raises(ClientError) as excinfo:
        presign(lob_a, user="nobody")
    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "ResourceNotFound")
    assert "nobody" in message and DOMAIN_A in message


def test_unknown_domain_is_resource_not_found(lob_a) -> None:
    with pytest.raises(ClientError) as excinfo:
        presign(lob_a, domain="d-nowhere")
    assert error_of(excinfo)[:2] == (400, "ResourceNotFound")


def test_another_accounts_domain_is_not_visible(lob_b) -> None:
    """lob-b's credentials act in 222222222222: lob-a's domain does not exist there."""
    with pytest.raises(ClientError) as excinfo:
        presign(lob_b, domain=DOMAIN_A, user="user-lob-a")
    assert error_of(excinfo)[1] == "ResourceNotFound"
    assert presign(lob_b, domain=DOMAIN_B, user="user-lob-b")


def test_limits_beyond_aws_maxima_are_validation_errors(lob_a) -> None:
    for extra in ({"ExpiresInSeconds": 301}, {"SessionExpirationDurationInSeconds": 43201}):
        with pytest.raises(ClientError) as excinfo:
            presign(lob_a, **extra)
        assert error_of(excinfo)[1] == "ValidationException"
    # Below the minima, botocore itself refuses before sending anything.
    with pytest.raises(ParamValidationError):
        presign(lob_a, ExpiresInSeconds=4)


def test_a_domain_not_in_service_is_reported_and_mints_nothing(studio, lob_a) -> None:
    requests.put(
        f"{studio.url}/_stand-in/domains/{ACCOUNT_A}/{DOMAIN_A}/status",
        json={"status": "Updating"},
        timeout=5,
    ).raise_for_status()

    assert lob_a.describe_domain(DomainId=DOMAIN_A)["Status"] == "Updating"
    listed = {d["DomainId"]: d["Status"] for d in lob_a.list_domains()["Domains"]}
    assert listed[DOMAIN_A] == "Updating"
    with pytest.raises(ClientError) as excinfo:
        presign(lob_a)
    assert error_of(excinfo)[1] == "ValidationException"
    assert recorded_calls(studio) == []

    requests.delete(f"{studio.url}/_stand-in/domains/{ACCOUNT_A}/{DOMAIN_A}/status", timeout=5)
    assert lob_a.describe_domain(DomainId=DOMAIN_A)["Status"] == "InService"


def test_a_request_without_a_signature_is_refused(studio) -> None:
    response = requests.post(
        f"{studio.url}/",
        data="{}",
        headers={
            "X-Amz-Target": "SageMaker.CreatePresignedDomainUrl",
            "Content-Type": "application/x-amz-json-1.1",
        },
        timeout=5,
    )
    assert response.status_code == 403
    assert response.json()["__type"] == "MissingAuthenticationTokenException"


def test_the_url_and_its_signature_are_not_logged(lob_a, caplog) -> None:
    """Neither the stand-in's own log nor its request log (werkzeug) shows the signature."""
    caplog.set_level(logging.DEBUG)
    url = presign(lob_a)
    requests.get(url, timeout=5)
    signature = parse_qs(urlsplit(url).query)["sig"][0]
    # The test's own HTTP client (urllib3) logs the URL it fetches; that is not the stand-in.
    stand_in_lines = [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("devstack", "werkzeug"))
    ]
    assert any("presigned Studio URL for user-lob-a" in line for line in stand_in_lines)
    assert any(f"GET /studio/{DOMAIN_A}" in line for line in stand_in_lines)
    assert not any(signature in line for line in stand_in_lines)


# --- User profiles (moto has none) ---------------------------------------------------------------


def test_user_profiles_are_created_described_listed_and_deleted(lob_a) -> None:
    created = lob_a.create_user_profile(DomainId=DOMAIN_A, UserProfileName="carol")
    assert created["UserProfileArn"] == (
        f"arn:aws:sagemaker:{REGION}:{ACCOUNT_A}:user-profile/{DOMAIN_A}/carol"
    )
    described = lob_a.describe_user_profile(DomainId=DOMAIN_A, UserProfileName="carol")
    assert (described["UserProfileName"], described["Status"]) == ("carol", "InService")
    listed = lob_a.list_user_profiles(DomainIdEquals=DOMAIN_A)["UserProfiles"]
    assert {"carol", "user-lob-a", "lob-a-admin"} <= {p["UserProfileName"] for p in listed}
    assert presign(lob_a, user="carol")

    with pytest.raises(ClientError) as excinfo:
        lob_a.create_user_profile(DomainId=DOMAIN_A, UserProfileName="carol")
    assert error_of(excinfo)[1] == "ResourceInUse"

    lob_a.delete_user_profile(DomainId=DOMAIN_A, UserProfileName="carol")
    with pytest.raises(ClientError) as excinfo:
        lob_a.describe_user_profile(DomainId=DOMAIN_A, UserProfileName="carol")
    assert error_of(excinfo)[1] == "ResourceNotFound"


def test_profiles_are_per_account(lob_a, lob_b) -> None:
    listed_in_b = lob_b.list_user_profiles()["UserProfiles"]
    assert {p["UserProfileName"] for p in listed_in_b} >= {"user-lob-b"}
    assert all(p["DomainId"] == DOMAIN_B for p in listed_in_b)
    with pytest.raises(ClientError) as excinfo:
        lob_b.create_user_profile(DomainId=DOMAIN_A, UserProfileName="mallory")
    assert error_of(excinfo)[1] == "ResourceNotFound"


# --- Everything else is moto's ------------------------------------------------------------------


def test_other_operations_reach_moto_unchanged(studio, moto_server, lob_a_credentials) -> None:
    through_stand_in = sagemaker_as(studio.url, lob_a_credentials)
    direct = sagemaker_as(moto_server, lob_a_credentials)
    name = "studio-forwarding-check"
    # moto's list filters are loose: look for the exact name.
    if name not in {e["EndpointName"] for e in direct.list_endpoints()["Endpoints"]}:
        through_stand_in.create_model(
            ModelName=name,
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT_A}:role/SageMakerExecutionRole",
            PrimaryContainer={"Image": "identity-transcoder:local"},
        )
        through_stand_in.create_endpoint_config(
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
        through_stand_in.create_endpoint(EndpointName=name, EndpointConfigName=name)

    described = through_stand_in.describe_endpoint(EndpointName=name)
    assert described["EndpointStatus"] == "InService"
    assert described["EndpointArn"] == direct.describe_endpoint(EndpointName=name)["EndpointArn"]
    assert through_stand_in.list_domains()["Domains"] == direct.list_domains()["Domains"]
    with pytest.raises(ClientError) as excinfo:
        through_stand_in.describe_endpoint(EndpointName="no-such-endpoint")
    assert error_of(excinfo)[1] == "ValidationException"


# --- Seeding and the command line ----------------------------------------------------------------


def test_seeding_is_idempotent_and_listed(studio) -> None:
    again = requests.post(
        f"{studio.url}/_stand-in/domains",
        json={"account_id": ACCOUNT_A, "domain_name": "studio-lob-a", "user_profiles": []},
        timeout=30,
    )
    assert again.status_code == 201
    assert again.json()["domain_id"] == DOMAIN_A
    domains = requests.get(f"{studio.url}/_stand-in/domains", timeout=5).json()["domains"]
    lob_a_domain = next(d for d in domains if d["domain_id"] == DOMAIN_A)
    assert {"user-lob-a", "lob-a-admin"} <= set(lob_a_domain["user_profiles"])


@pytest.mark.parametrize(
    "body",
    [
        {"account_id": "1234", "domain_name": "x"},
        {"account_id": ACCOUNT_A, "domain_name": "bad name"},
        {"account_id": ACCOUNT_A, "domain_name": "ok", "user_profiles": ["bad name"]},
        ["not", "an", "object"],
    ],
)
def test_seeding_refuses_bad_input(studio, body) -> None:
    response = requests.post(f"{studio.url}/_stand-in/domains", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_cli_parses_domains_and_profiles() -> None:
    args = build_parser().parse_args(
        [
            "--moto-url",
            "http://127.0.0.1:4566",
            "--domain",
            f"{ACCOUNT_A}:studio-lob-a=user-lob-a,lob-a-admin",
            "--domain",
            f"{ACCOUNT_B}:studio-lob-b=",
        ]
    )
    assert args.port == 8150
    assert [(d.account_id, d.domain_name, d.user_profiles) for d in args.domain] == [
        (ACCOUNT_A, "studio-lob-a", ("user-lob-a", "lob-a-admin")),
        (ACCOUNT_B, "studio-lob-b", ()),
    ]
    for bad in ("studio-lob-a=x", "1234:studio=x", f"{ACCOUNT_A}:studio=bad name"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"expected|not a user profile"):
            parse_domain(bad)
