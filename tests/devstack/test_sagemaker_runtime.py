"""The SageMaker runtime stand-in, driven by a real botocore ``sagemaker-runtime`` client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
import requests
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from flask import Flask, Response

from devstack.model_container import create_app as create_container
from devstack.sagemaker_runtime import (
    MAX_PAYLOAD_BYTES,
    build_parser,
)
from devstack.sagemaker_runtime import (
    create_app as create_runtime,
)
from devstack.wsgi_thread import ThreadedServer, free_port, serve_in_thread

ENDPOINT = "identity-transcoder-test"
JSON = "application/json"
MASTER_KEY = b"runtime test key"


@pytest.fixture(scope="module")
def container() -> Iterator[ThreadedServer]:
    """A real model container stand-in."""
    with serve_in_thread(create_container(master_key=MASTER_KEY)) as server:
        yield server


@pytest.fixture(scope="module")
def bare_container() -> Iterator[ThreadedServer]:
    """A minimal container that answers plain text and sets no custom attributes."""
    app = Flask("bare")

    @app.post("/invocations")
    def invocations() -> Response:
        return Response(b"plain answer", mimetype="text/plain")

    with serve_in_thread(app) as server:
        yield server


@pytest.fixture(scope="module")
def runtime(container: ThreadedServer) -> Iterator[ThreadedServer]:
    """The runtime stand-in with the test endpoint registered; a short model timeout."""
    app = create_runtime(endpoints={ENDPOINT: container.url}, model_timeout_s=0.5)
    with serve_in_thread(app) as server:
        yield server


@pytest.fixture(autouse=True)
def _calm_container(container: ThreadedServer) -> None:
    """Each test starts with a well-behaved container."""
    knobs = {"latency_ms": 0, "error_rate": 0, "throttle_rate": 0}
    requests.put(f"{container.url}/_stand-in/knobs", json=knobs, timeout=5).raise_for_status()


def sagemaker_client(url: str) -> BaseClient:
    """The client the portal uses, pointed at the stand-in; no retries, so each error is seen."""
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


@pytest.fixture
def client(runtime: ThreadedServer) -> BaseClient:
    return sagemaker_client(runtime.url)


def invoke(client: BaseClient, endpoint: str = ENDPOINT, body: bytes | None = None) -> dict:
    return client.invoke_endpoint(
        EndpointName=endpoint,
        Body=body if body is not None else json.dumps({"records": [{"email": "jane@example.com"}]}),
        ContentType=JSON,
        Accept=JSON,
        CustomAttributes="domain=acme",
    )


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = excinfo.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


# --- Success -----------------------------------------------------------------------------------


def test_invoke_endpoint_returns_the_containers_body_and_headers(client, container) -> None:
    body = json.dumps({"records": [{"email": "jane@example.com"}, {"phone": "bad"}]})
    answer = invoke(client, body=body.encode())
    direct = requests.post(
        f"{container.url}/invocations",
        data=body,
        headers={"Content-Type": JSON, "X-Amzn-SageMaker-Custom-Attributes": "domain=acme"},
        timeout=5,
    )
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert answer["Body"].read() == direct.content
    assert answer["ContentType"] == JSON
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    # The container's custom attributes come back: the ids are acme's.
    assert answer["CustomAttributes"] == "domain=acme"
    assert answer["ResponseMetadata"]["RequestId"]


def test_accept_and_content_type_reach_the_container(client) -> None:
    answer = client.invoke_endpoint(
        EndpointName=ENDPOINT,
        Body=b"email,phone\njane@example.com,5551234567\n",
        ContentType="text/csv",
        Accept="text/csv",
    )
    assert answer["ContentType"] == "text/csv"
    assert (
        answer["Body"].read().decode().splitlines()[0] == "record,email_id,phone_id,maid_id,error"
    )
    assert answer["CustomAttributes"] == "domain=default"


def test_no_custom_attributes_are_invented_when_the_container_sets_none(bare_container) -> None:
    app = create_runtime(endpoints={"bare": bare_container.url})
    with serve_in_thread(app) as runtime:
        answer = sagemaker_client(runtime.url).invoke_endpoint(
            EndpointName="bare", Body=b"x", ContentType="text/plain"
        )
    assert answer["Body"].read() == b"plain answer"
    assert answer["ContentType"].startswith("text/plain")
    assert "CustomAttributes" not in answer
    assert answer["InvokedProductionVariant"] == "AllTraffic"


# --- Errors in AWS's format --------------------------------------------------------------------


def test_unknown_endpoint_is_a_validation_error(client) -> None:
    with pytest.raises(ClientError) as excinfo:
        invoke(client, endpoint="no-such-endpoint")
    assert error_of(excinfo) == (
        400,
        "ValidationError",
        "Endpoint no-such-endpoint of account 123456789012 not found.",
    )


def test_container_429_is_a_throttling_exception(client, container) -> None:
    requests.put(f"{container.url}/_stand-in/knobs", json={"throttle_rate": 1}, timeout=5)
    with pytest.raises(ClientError) as excinfo:
        invoke(client)
    status, code, _ = error_of(excinfo)
    assert (status, code) == (400, "ThrottlingException")


def test_container_500_is_a_model_error_with_the_original_answer(client, container) -> None:
    requests.put(f"{container.url}/_stand-in/knobs", json={"error_rate": 1}, timeout=5)
    with pytest.raises(ClientError) as excinfo:
        invoke(client)
    status, code, message = error_of(excinfo)
    assert (status, code) == (424, "ModelError")
    response = excinfo.value.response
    assert response["OriginalStatusCode"] == 500
    assert json.loads(response["OriginalMessage"]) == {"error": "internal"}
    assert response["LogStreamArn"] == (
        f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/{ENDPOINT}"
    )
    assert message.startswith("Received server error (500) from model with message")


def test_container_400_is_a_model_error(client) -> None:
    with pytest.raises(ClientError) as excinfo:
        invoke(client, body=b"{not json")
    status, code, message = error_of(excinfo)
    assert (status, code) == (424, "ModelError")
    response = excinfo.value.response
    assert response["OriginalStatusCode"] == 400
    assert json.loads(response["OriginalMessage"])["error"] == "invalid_json"
    assert message.startswith("Received client error (400)")


def test_unreachable_container_is_service_unavailable(runtime, client) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    requests.put(f"{runtime.url}/_stand-in/endpoints/dead", json={"url": dead}, timeout=5)
    try:
        with pytest.raises(ClientError) as excinfo:
            invoke(client, endpoint="dead")
    finally:
        requests.delete(f"{runtime.url}/_stand-in/endpoints/dead", timeout=5)
    status, code, _ = error_of(excinfo)
    assert (status, code) == (503, "ServiceUnavailable")


def test_slow_container_is_a_model_error_that_says_it_timed_out(client, container) -> None:
    requests.put(f"{container.url}/_stand-in/knobs", json={"latency_ms": 1500}, timeout=5)
    with pytest.raises(ClientError) as excinfo:
        invoke(client)
    status, code, message = error_of(excinfo)
    assert (status, code) == (424, "ModelError")
    assert excinfo.value.response["OriginalStatusCode"] == 0
    assert message.startswith(
        'Received server error (0) from model with message "Your invocation timed out while '
        'waiting for a response from container primary"'
    )


def test_payload_over_6_mb_is_a_validation_error(client) -> None:
    with pytest.raises(ClientError) as excinfo:
        invoke(client, body=b"x" * (MAX_PAYLOAD_BYTES + 1))
    assert error_of(excinfo) == (400, "ValidationError", "Request payload size exceeds 6 MB")


def test_payload_of_exactly_6_mb_is_forwarded(client) -> None:
    # Not JSON, so the container refuses it: proof that it got past the size check.
    with pytest.raises(ClientError) as excinfo:
        invoke(client, body=b"x" * MAX_PAYLOAD_BYTES)
    assert error_of(excinfo)[1] == "ModelError"


def test_throttling_is_retried_by_botocores_default_policy(runtime, container) -> None:
    """What the portal gets for free: botocore retries ThrottlingException by itself."""
    requests.put(f"{container.url}/_stand-in/knobs", json={"throttle_rate": 1}, timeout=5)
    retrying = boto3.client(
        "sagemaker-runtime",
        endpoint_url=runtime.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )
    with pytest.raises(ClientError) as excinfo:
        invoke(retrying)
    assert excinfo.value.response["ResponseMetadata"]["RetryAttempts"] == 1


# --- Endpoint registry -------------------------------------------------------------------------


def test_endpoints_can_be_registered_and_removed_at_run_time(runtime, container, client) -> None:
    put = requests.put(
        f"{runtime.url}/_stand-in/endpoints/late-endpoint",
        json={"url": f"{container.url}/"},
        timeout=5,
    )
    assert put.json() == {"name": "late-endpoint", "url": container.url}
    listed = requests.get(f"{runtime.url}/_stand-in/endpoints", timeout=5).json()
    assert listed["endpoints"]["late-endpoint"] == container.url
    assert invoke(client, endpoint="late-endpoint")["ResponseMetadata"]["HTTPStatusCode"] == 200

    assert requests.delete(f"{runtime.url}/_stand-in/endpoints/late-endpoint", timeout=5).ok
    with pytest.raises(ClientError) as excinfo:
        invoke(client, endpoint="late-endpoint")
    assert error_of(excinfo)[1] == "ValidationError"


@pytest.mark.parametrize("body", [{"url": "ftp://host"}, {"url": 5}, {}, ["http://x"]])
def test_registering_a_bad_url_is_refused(runtime, body: object) -> None:
    response = requests.put(f"{runtime.url}/_stand-in/endpoints/bad", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert (
        "bad"
        not in requests.get(f"{runtime.url}/_stand-in/endpoints", timeout=5).json()["endpoints"]
    )


def test_other_paths_answer_in_aws_format(runtime) -> None:
    response = requests.get(f"{runtime.url}/endpoints/{ENDPOINT}/invocations", timeout=5)
    assert response.status_code == 405
    assert response.headers["x-amzn-ErrorType"] == "UnknownOperationException"


def test_cli_parses_repeated_endpoints() -> None:
    args = build_parser().parse_args(
        ["--endpoint", "a=http://127.0.0.1:8120", "--endpoint", "b=http://127.0.0.1:8121/"]
    )
    assert args.port == 8140
    assert dict(args.endpoint) == {"a": "http://127.0.0.1:8120", "b": "http://127.0.0.1:8121"}
    assert args.model_timeout == 60.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--endpoint", "no-url"])


def test_create_app_refuses_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="model_timeout_s"):
        create_runtime(model_timeout_s=0)
