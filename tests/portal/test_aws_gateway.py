"""The AWS gateway: clients per account, assumed-role credentials, endpoints, timeouts, errors.

Everything that can run against the real wire path does so, against the suite's moto server.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Iterator

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ParamValidationError,
    ReadTimeoutError,
)
from botocore.stub import Stubber
from django.contrib.auth import get_user_model

from portal import aws_gateway
from portal.aws_gateway import (
    AccountAccess,
    AwsError,
    NotAuthorized,
    NotFound,
    Throttled,
    Unreachable,
    UpstreamError,
    aws_errors,
    caller_identity,
    client,
    session_name_for,
    translate_error,
)

ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"
REGION = "us-east-1"
CLOSED_PORT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens


def account(account_id: str, **overrides) -> AccountAccess:
    """The access of one LOB account, through its GatehouseInvoke role."""
    return AccountAccess(
        account_id=account_id,
        region=REGION,
        role_arn=f"arn:aws:iam::{account_id}:role/GatehouseInvoke",
        **overrides,
    )


@pytest.fixture(autouse=True)
def moto_aws(moto_server: str, settings, monkeypatch) -> Iterator[str]:
    """The portal's own credentials are moto's dummies and every endpoint is moto's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = REGION
    settings.AWS_CONNECT_TIMEOUT = 3
    settings.AWS_READ_TIMEOUT = 15
    settings.AWS_MAX_ATTEMPTS = 3
    settings.AWS_CREDENTIALS_REFRESH_MARGIN = 300
    aws_gateway.reset_caches()
    yield moto_server
    aws_gateway.reset_caches()


@pytest.fixture
def assume_calls(monkeypatch) -> list[dict]:
    """Every AssumeRole the gateway makes (the real call still runs), with what it returned."""
    calls: list[dict] = []
    real_assume_role = aws_gateway._assume_role

    def spy(**kwargs):
        result = real_assume_role(**kwargs)
        calls.append({"session_name": kwargs["session_name"], "credentials": result})
        return result

    monkeypatch.setattr(aws_gateway, "_assume_role", spy)
    return calls


def client_error(code: str, status: int, message: str = "", operation: str = "Op") -> ClientError:
    """A ClientError as botocore builds it from an AWS error answer."""
    response = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, operation)


# --- Assumed roles, through moto ------------------------------------------------------------------
def test_caller_identity_through_assumed_role_reports_account_and_session() -> None:
    identity = caller_identity(access=account(ACCOUNT_A), session_name="gatehouse-alice")

    assert identity["account_id"] == ACCOUNT_A
    assert identity["arn"].startswith(f"arn:aws:sts::{ACCOUNT_A}:assumed-role/GatehouseInvoke/")
    assert "gatehouse-alice" in identity["arn"]
    assert identity["user_id"].endswith(":gatehouse-alice")


def test_caller_identity_of_a_user_names_that_user() -> None:
    alice = get_user_model()(username="alice")

    identity = caller_identity(access=account(ACCOUNT_A), session_name=session_name_for(alice))

    assert identity["arn"].endswith("/gatehouse-alice")


def test_assumed_credentials_are_reused_across_calls_and_services(assume_calls) -> None:
    access = account(ACCOUNT_A)

    caller_identity(access=access, session_name="gatehouse-alice")
    caller_identity(access=access, session_name="gatehouse-alice")
    client("s3", access=access, session_name="gatehouse-alice").list_buckets()

    assert [call["session_name"] for call in assume_calls] == ["gatehouse-alice"]


def test_each_session_name_gets_its_own_credentials(assume_calls) -> None:
    access = account(ACCOUNT_A)

    alice = caller_identity(access=access, session_name="gatehouse-alice")
    bob = caller_identity(access=access, session_name="gatehouse-bob")

    assert [call["session_name"] for call in assume_calls] == ["gatehouse-alice", "gatehouse-bob"]
    assert alice["arn"].endswith("/gatehouse-alice")
    assert bob["arn"].endswith("/gatehouse-bob")


def test_credentials_inside_the_refresh_margin_are_renewed_by_the_same_client(
    assume_calls, settings
) -> None:
    access = account(ACCOUNT_A)
    sts = client("sts", access=access, session_name="gatehouse-alice")
    sts.get_caller_identity()
    assert len(assume_calls) == 1

    # moto's credentials last an hour: a two-hour margin puts them inside it.
    settings.AWS_CREDENTIALS_REFRESH_MARGIN = 2 * 3600
    identity = caller_identity(access=access, session_name="gatehouse-alice")

    assert len(assume_calls) == 2
    assert client("sts", access=access, session_name="gatehouse-alice") is sts
    assert identity["account_id"] == ACCOUNT_A
    assert (
        assume_calls[1]["credentials"]["access_key"] != assume_calls[0]["credentials"]["access_key"]
    )

    settings.AWS_CREDENTIALS_REFRESH_MARGIN = 300
    caller_identity(access=access, session_name="gatehouse-alice")

    assert len(assume_calls) == 2


def test_concurrent_first_calls_assume_the_role_once_and_share_one_client(assume_calls) -> None:
    access = account(ACCOUNT_A)
    clients = []
    start = threading.Barrier(8)

    def first_call() -> None:
        start.wait()
        clients.append(client("s3", access=access, session_name="gatehouse-alice"))

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(clients) == 8
    assert len({id(c) for c in clients}) == 1
    assert len(assume_calls) == 1


def test_bucket_created_in_one_account_is_invisible_from_another() -> None:
    bucket = f"gatehouse-results-{uuid.uuid4().hex[:12]}"
    s3_a = client("s3", access=account(ACCOUNT_A))
    s3_b = client("s3", access=account(ACCOUNT_B))

    s3_a.create_bucket(Bucket=bucket)

    assert bucket in [b["Name"] for b in s3_a.list_buckets()["Buckets"]]
    assert bucket not in [b["Name"] for b in s3_b.list_buckets()["Buckets"]]


def test_missing_object_is_not_found() -> None:
    bucket = f"gatehouse-results-{uuid.uuid4().hex[:12]}"
    s3 = client("s3", access=account(ACCOUNT_A))
    s3.create_bucket(Bucket=bucket)

    with pytest.raises(NotFound) as raised, aws_errors():
        s3.get_object(Bucket=bucket, Key="jobs/1/chunk-0001.json")

    assert raised.value.aws_code == "NoSuchKey"
    assert raised.value.operation == "GetObject"


def test_assume_role_sends_external_id_and_session_name() -> None:
    access = account(ACCOUNT_A, external_id="lob-a-external-id")
    portal_sts = client("sts")  # the portal's own STS client, which makes the AssumeRole calls
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    answer = {
        "Credentials": {
            "AccessKeyId": "ASIAEXAMPLEEXAMPLE00",
            "SecretAccessKey": "secret-example",
            "SessionToken": "token-example",
            "Expiration": expires,
        }
    }

    with Stubber(portal_sts) as stub:
        stub.add_response(
            "assume_role",
            answer,
            expected_params={
                "RoleArn": access.role_arn,
                "RoleSessionName": "gatehouse-alice",
                "ExternalId": "lob-a-external-id",
            },
        )
        client("s3", access=access, session_name="gatehouse-alice")
        stub.assert_no_pending_responses()


def test_refused_assume_role_is_not_authorized_and_is_not_cached() -> None:
    access = account(ACCOUNT_A)
    portal_sts = client("sts")

    with Stubber(portal_sts) as stub:
        stub.add_client_error(
            "assume_role",
            service_error_code="AccessDenied",
            service_message="User is not authorized to perform: sts:AssumeRole",
            http_status_code=403,
        )
        with pytest.raises(NotAuthorized) as raised:
            client("s3", access=access)

    assert raised.value.code == "aws_not_authorized"
    assert raised.value.aws_code == "AccessDenied"
    assert raised.value.operation == "AssumeRole"
    assert "not authorized" in str(raised.value)
    # The refusal is not remembered: once the role trusts the portal, the next call works.
    assert client("s3", access=access).list_buckets()["Buckets"] is not None


def test_a_refused_assume_role_keeps_the_portals_principal_out_of_the_message(caplog) -> None:
    access = account(ACCOUNT_A)
    portal_sts = client("sts")
    refusal = (
        "User: arn:aws:sts::999999999999:assumed-role/gatehouse-portal/i-0abc is not authorized "
        f"to perform: sts:AssumeRole on resource: {access.role_arn}"
    )

    with Stubber(portal_sts) as stub:
        stub.add_client_error(
            "assume_role",
            service_error_code="AccessDenied",
            service_message=refusal,
            http_status_code=403,
        )
        with pytest.raises(NotAuthorized) as raised:
            client("s3", access=access)

    # The message reaches people of the LOB (API answers, Studio pages, job errors): it names
    # the role and why, not the portal's own principal; AWS's text stays in the portal's log.
    assert "999999999999" not in str(raised.value)
    assert access.role_arn in str(raised.value)
    assert (raised.value.aws_code, raised.value.operation) == ("AccessDenied", "AssumeRole")
    assert any(refusal in record.getMessage() for record in caplog.records)


def test_credentials_and_tokens_are_never_logged(assume_calls, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="portal.aws_gateway")

    caller_identity(access=account(ACCOUNT_A), session_name="gatehouse-alice")

    gateway_logs = [r.getMessage() for r in caplog.records if r.name == "portal.aws_gateway"]
    assert any("GatehouseInvoke" in line for line in gateway_logs)
    secrets = [assume_calls[0]["credentials"][k] for k in ("access_key", "secret_key", "token")]
    assert not [line for line in gateway_logs for secret in secrets if secret in line]


# --- Endpoints ------------------------------------------------------------------------------------
def test_account_endpoint_override_wins_over_the_global_endpoint(settings) -> None:
    settings.AWS_MAX_ATTEMPTS = 1
    access = account(ACCOUNT_A, endpoint_urls={"s3": CLOSED_PORT_URL})
    s3 = client("s3", access=access)

    assert s3.meta.endpoint_url == CLOSED_PORT_URL
    with pytest.raises(Unreachable) as raised, aws_errors():
        s3.list_buckets()
    assert raised.value.code == "aws_unreachable"
    assert "127.0.0.1:9" in str(raised.value)
    # Other services of the account, and the portal's own clients, keep the global endpoint.
    assert caller_identity(access=access, session_name="gatehouse")["account_id"] == ACCOUNT_A
    assert "Buckets" in client("s3").list_buckets()


def test_account_sts_override_is_where_the_role_is_assumed(settings) -> None:
    settings.AWS_MAX_ATTEMPTS = 1
    access = account(ACCOUNT_B, endpoint_urls={"sts": CLOSED_PORT_URL})

    with pytest.raises(Unreachable):
        client("s3", access=access)


def test_empty_override_means_the_global_endpoint(moto_aws: str) -> None:
    access = account(ACCOUNT_A, endpoint_urls={"s3": ""})

    assert client("s3", access=access).meta.endpoint_url == moto_aws


# --- Client configuration and caching -------------------------------------------------------------
def test_clients_carry_the_timeouts_and_retries_of_the_settings() -> None:
    s3 = client("s3", access=account(ACCOUNT_A))

    assert s3.meta.config.connect_timeout == 3
    assert s3.meta.config.read_timeout == 15
    assert s3.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}


def test_invoke_endpoint_client_can_wait_seventy_seconds() -> None:
    runtime = client("sagemaker-runtime", access=account(ACCOUNT_A), read_timeout=70)

    assert runtime.meta.config.read_timeout == 70
    assert runtime.meta.config.connect_timeout == 3
    assert client("sagemaker-runtime", access=account(ACCOUNT_A)).meta.config.read_timeout == 15


def test_a_call_that_must_not_repeat_gets_one_attempt() -> None:
    once = client("sagemaker-runtime", access=account(ACCOUNT_A), max_attempts=1)
    default = client("sagemaker-runtime", access=account(ACCOUNT_A))

    assert once.meta.config.retries == {"mode": "standard", "total_max_attempts": 1}
    assert default.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert once is not default


def test_settings_are_read_at_call_time(settings) -> None:
    before = client("dynamodb")

    settings.AWS_READ_TIMEOUT = 40
    settings.AWS_REGION = "eu-west-1"
    after = client("dynamodb")

    assert after is not before
    assert after.meta.config.read_timeout == 40
    assert after.meta.region_name == "eu-west-1"


def test_clients_are_cached_per_account_service_and_session() -> None:
    a = account(ACCOUNT_A)

    first = client("s3", access=a, session_name="gatehouse-alice")

    assert client("s3", access=account(ACCOUNT_A), session_name="gatehouse-alice") is first
    assert client("s3", access=a, session_name="gatehouse-bob") is not first
    assert client("s3", access=account(ACCOUNT_B), session_name="gatehouse-alice") is not first
    assert client("dynamodb", access=a, session_name="gatehouse-alice") is not first
    assert client("s3", access=a, session_name="gatehouse-alice").meta.region_name == REGION


def test_account_region_is_the_default_region_of_its_clients() -> None:
    access = AccountAccess(
        account_id=ACCOUNT_A,
        region="eu-central-1",
        role_arn=f"arn:aws:iam::{ACCOUNT_A}:role/GatehouseInvoke",
    )

    assert client("sagemaker", access=access).meta.region_name == "eu-central-1"
    assert client("sagemaker", access=access, region="us-west-2").meta.region_name == "us-west-2"


def test_invalid_session_name_is_refused_before_any_call(assume_calls) -> None:
    with pytest.raises(ValueError, match="session name"):
        client("s3", access=account(ACCOUNT_A), session_name="alice smith")

    assert assume_calls == []


# --- Account access and session names -------------------------------------------------------------
def test_account_access_is_immutable_and_hashable() -> None:
    first = account(ACCOUNT_A, endpoint_urls={"s3": "http://vpce-s3.example"})
    same = account(ACCOUNT_A, endpoint_urls={"s3": "http://vpce-s3.example"})

    assert first == same
    assert hash(first) == hash(same)
    assert first.endpoint_urls["s3"] == "http://vpce-s3.example"
    with pytest.raises(TypeError):
        first.endpoint_urls["s3"] = "http://elsewhere.example"  # type: ignore[index]
    with pytest.raises(AttributeError):
        first.region = "eu-west-1"  # type: ignore[misc]


def test_external_id_is_kept_out_of_the_repr() -> None:
    assert "lob-a-external-id" not in repr(account(ACCOUNT_A, external_id="lob-a-external-id"))


@pytest.mark.parametrize(
    ("account_id", "role_arn"),
    [
        ("11111111111", "arn:aws:iam::11111111111:role/GatehouseInvoke"),
        (ACCOUNT_A, "arn:aws:iam::222222222222:role/GatehouseInvoke"),
        (ACCOUNT_A, "arn:aws:iam::111111111111:user/alice"),
    ],
    ids=["short-account-id", "role-in-another-account", "not-a-role"],
)
def test_account_access_refuses_inconsistent_accounts(account_id: str, role_arn: str) -> None:
    with pytest.raises(ValueError):
        AccountAccess(account_id=account_id, region=REGION, role_arn=role_arn)


@pytest.mark.parametrize(
    "username",
    ["alice", "alice.smith@example.com", "Bob Smith/ü", "x" * 100, "ab"],
)
def test_session_name_of_a_user_is_valid_and_carries_the_username(username: str) -> None:
    name = session_name_for(get_user_model()(username=username))

    assert 2 <= len(name) <= 64
    assert aws_gateway._SESSION_NAME.fullmatch(name)
    assert name.startswith("gatehouse-")
    assert username[:10].replace(" ", "-").replace("/", "-").replace("ü", "-") in name


def test_session_names_keep_users_apart_when_usernames_are_rewritten() -> None:
    User = get_user_model()
    names = {
        session_name_for(User(username=username))
        for username in ("bob smith", "bob-smith", "bob/smith", "y" * 80 + "1", "y" * 80 + "2")
    }

    assert len(names) == 5


def test_session_name_needs_a_username() -> None:
    with pytest.raises(ValueError):
        session_name_for(get_user_model()(username=""))


# --- Error translation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "status", "message", "expected"),
    [
        ("AccessDenied", 403, "User is not authorized to perform: sts:AssumeRole", NotAuthorized),
        ("AccessDeniedException", 400, "not authorized to perform InvokeEndpoint", NotAuthorized),
        ("ExpiredToken", 400, "The security token is expired", NotAuthorized),
        ("UnrecognizedClientException", 400, "The security token is invalid", NotAuthorized),
        ("Throttling", 400, "Rate exceeded", Throttled),
        ("ThrottlingException", 400, "Rate exceeded", Throttled),
        ("ProvisionedThroughputExceededException", 400, "", Throttled),
        ("SlowDown", 503, "Please reduce your request rate.", Throttled),
        ("ResourceNotFoundException", 400, "Requested resource not found", NotFound),
        ("NoSuchBucket", 404, "The specified bucket does not exist", NotFound),
        ("ValidationException", 400, 'Could not find endpoint "fraud-v2".', NotFound),
        ("ValidationException", 400, "1 validation error detected", UpstreamError),
        ("InternalFailure", 500, "An internal error occurred", UpstreamError),
        ("ServiceUnavailable", 503, "Service Unavailable", UpstreamError),
        ("SomethingNew", 403, "", NotAuthorized),
        ("SomethingNew", 429, "", Throttled),
    ],
)
def test_aws_error_answers_translate_to_portal_errors(
    code: str, status: int, message: str, expected: type[AwsError]
) -> None:
    error = translate_error(client_error(code, status, message, operation="InvokeEndpoint"))

    assert type(error) is expected
    assert error.aws_code == code
    assert error.operation == "InvokeEndpoint"
    assert error.code == expected.code
    assert code in str(error)
    assert message in str(error)


@pytest.mark.parametrize(
    "exception",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:9/"),
        ConnectTimeoutError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com/x"),
        ReadTimeoutError(endpoint_url="https://runtime.sagemaker.us-east-1.amazonaws.com/x"),
        ConnectionClosedError(endpoint_url="https://s3.amazonaws.com/bucket/key?X-Amz-Signature=s"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_connection_failures_are_unreachable_without_urls_in_the_message(exception) -> None:
    error = translate_error(exception)

    assert type(error) is Unreachable
    assert error.code == "aws_unreachable"
    assert error.aws_code == ""
    assert "/x" not in str(error)
    assert "Signature" not in str(error)


def test_library_errors_are_upstream_errors_without_parameter_values() -> None:
    error = translate_error(ParamValidationError(report="Invalid type for Body, value: top-secret"))

    assert type(error) is UpstreamError
    assert "top-secret" not in str(error)


def test_aws_errors_reraises_as_the_portal_error_with_the_cause() -> None:
    original = client_error("Throttling", 400, "Rate exceeded")

    with pytest.raises(Throttled) as raised, aws_errors():
        raise original

    assert raised.value.__cause__ is original
    assert isinstance(raised.value, AwsError)


def test_aws_errors_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError), aws_errors():
        raise KeyError("not an AWS error")


def test_portal_errors_pass_through_unchanged() -> None:
    error = NotFound("gone", aws_code="NoSuchKey")

    assert translate_error(error) is error
