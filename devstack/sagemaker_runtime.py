"""A local stand-in for the SageMaker runtime API (InvokeEndpoint) in front of model containers.

moto has no sagemaker-runtime that runs a real model, so this app speaks InvokeEndpoint's wire
format (REST-JSON: ``POST /endpoints/{EndpointName}/invocations``, raw body, the model's answer
as the raw response body) and forwards each call to the container registered for the endpoint
name, the way SageMaker forwards to ``/invocations`` inside the endpoint. Errors come back in
AWS's own format (JSON ``{"message": ...}`` plus ``x-amzn-ErrorType``), so botocore raises the
same ``ClientError`` codes it raises against AWS. Signatures are not checked (like moto).

Endpoints are registered with ``--endpoint NAME=URL`` or ``PUT /_stand-in/endpoints/{name}``.

Run it with ``python -m devstack.sagemaker_runtime --port 8140 --endpoint NAME=URL``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from devstack.wsgi_thread import PathOnlyRequestHandler

log = logging.getLogger(__name__)

DEFAULT_PORT = 8140
DEFAULT_MODEL_TIMEOUT_S = 60.0
# The stand-in serves one pretend account (moto's default), in messages and ARNs only.
ACCOUNT_ID = "123456789012"
DEFAULT_REGION = "us-east-1"
VARIANT = "AllTraffic"
# InvokeEndpoint's payload limit ("6 MB", which AWS counts in MiB).
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
# How much of a failing container's answer ModelError quotes.
ORIGINAL_MESSAGE_LIMIT = 1024
# Loopback containers accept at once; a connect that takes this long means nothing listens.
CONNECT_TIMEOUT_S = 5.0
TIMEOUT_MESSAGE = "Your invocation timed out while waiting for a response from container primary"

CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
# The request headers InvokeEndpoint passes on to the container (SageMaker strips the rest).
FORWARDED_HEADERS = ("Content-Type", "Accept", CUSTOM_ATTRIBUTES_HEADER)
# The region from a SigV4 credential scope: Credential=AKID/20240101/us-east-1/sagemaker/...
_SCOPE_REGION = re.compile(r"Credential=[^/,\s]+/\d{8}/([a-z0-9-]+)/")


class EndpointRegistry:
    """Endpoint name → container base URL; names are global (not per account)."""

    def __init__(self, endpoints: Mapping[str, str] | None = None) -> None:
        self._lock = threading.Lock()
        self._urls: dict[str, str] = {}
        for name, url in (endpoints or {}).items():
            self.register(name, url)

    def register(self, name: str, url: str) -> str:
        """Point ``name`` at the container at ``url``; raises ValueError for a bad URL."""
        base = validated_container_url(url)
        with self._lock:
            self._urls[name] = base
        return base

    def remove(self, name: str) -> bool:
        """Forget ``name``; False when it was not registered."""
        with self._lock:
            return self._urls.pop(name, None) is not None

    def url(self, name: str) -> str | None:
        """The container base URL of ``name``, or None."""
        with self._lock:
            return self._urls.get(name)

    def snapshot(self) -> dict[str, str]:
        """Every registration, as a copy."""
        with self._lock:
            return dict(self._urls)


def validated_container_url(url: object) -> str:
    """An ``http(s)://host[:port]`` base URL without a trailing slash; ValueError otherwise."""
    if not isinstance(url, str):
        raise ValueError("url must be a string")
    parts = urlsplit(url.strip())
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("url must be an http(s) URL with a host, e.g. http://127.0.0.1:8120")
    if parts.query or parts.fragment:
        raise ValueError("url must not have a query string or fragment")
    return url.strip().rstrip("/")


# --- AWS-format answers ------------------------------------------------------------------------


def _request_id() -> str:
    return str(uuid.uuid4())


def aws_error(status: int, code: str, message: str, **fields: Any) -> Response:
    """An error as AWS's REST-JSON services send it; botocore reads the code from the header."""
    body = {"message": message, **fields}
    response = Response(json.dumps(body), status=status, mimetype="application/json")
    response.headers["x-amzn-ErrorType"] = code
    response.headers["x-amzn-RequestId"] = _request_id()
    return response


def _region() -> str:
    """The region the caller signed for (the ARN in ModelError names it), else us-east-1."""
    match = _SCOPE_REGION.search(request.headers.get("Authorization", ""))
    return match.group(1) if match else DEFAULT_REGION


def log_stream_arn(endpoint_name: str, region: str) -> str:
    """The CloudWatch log group SageMaker writes an endpoint's container logs to."""
    return f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/{endpoint_name}"


def model_error(endpoint_name: str, status: int, original: str) -> Response:
    """424 ModelError: the container answered ``status`` (0: no answer in time)."""
    arn = log_stream_arn(endpoint_name, _region())
    kind = "client" if 400 <= status < 500 else "server"
    message = (
        f'Received {kind} error ({status}) from model with message "{original}". '
        f"See {arn} in account {ACCOUNT_ID} for more information."
    )
    return aws_error(
        424,
        "ModelError",
        message,
        OriginalStatusCode=status,
        OriginalMessage=original,
        LogStreamArn=arn,
    )


def _original_message(response: requests.Response) -> str:
    """The container's answer as text, truncated: it goes back inside a JSON error."""
    # A UTF-8 character is at most 4 bytes: decode no more than the limit can use.
    head = response.content[: ORIGINAL_MESSAGE_LIMIT * 4]
    return head.decode("utf-8", errors="replace")[:ORIGINAL_MESSAGE_LIMIT]


def _is_read_timeout(exc: requests.ConnectionError) -> bool:
    """requests reports a read timeout while streaming the body as a ConnectionError."""
    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


# --- The app -----------------------------------------------------------------------------------


def _pooled_session() -> requests.Session:
    """One keep-alive pool for all forwards; no default headers, so only the caller's go on."""
    session = requests.Session()
    session.headers.clear()
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=64, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def create_app(
    *, endpoints: dict[str, str] | None = None, model_timeout_s: float = DEFAULT_MODEL_TIMEOUT_S
) -> Flask:
    """The runtime stand-in with ``endpoints`` (name → container base URL) registered."""
    if model_timeout_s <= 0:
        raise ValueError("model_timeout_s must be positive")
    app = Flask(__name__)
    registry = EndpointRegistry(endpoints)
    session = _pooled_session()
    app.extensions["sagemaker_runtime"] = {"registry": registry, "session": session}

    @app.post("/endpoints/<endpoint_name>/invocations")
    def invoke_endpoint(endpoint_name: str) -> Response:
        """InvokeEndpoint: forward the body to the endpoint's container, relay its answer."""
        # Read the whole body even when it is too large: answering before the client finished
        # sending would break its connection instead of giving it the ValidationError.
        body = request.get_data(cache=False)
        base_url = registry.url(endpoint_name)
        if base_url is None:
            return aws_error(
                400,
                "ValidationError",
                f"Endpoint {endpoint_name} of account {ACCOUNT_ID} not found.",
            )
        if len(body) > MAX_PAYLOAD_BYTES:
            return aws_error(400, "ValidationError", "Request payload size exceeds 6 MB")
        headers = {
            name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers
        }
        try:
            answer = session.post(
                f"{base_url}/invocations",
                data=body,
                headers=headers,
                timeout=(CONNECT_TIMEOUT_S, model_timeout_s),
                allow_redirects=False,
            )
        except requests.ConnectTimeout:
            return _unavailable(endpoint_name)
        except requests.ReadTimeout:
            return model_error(endpoint_name, 0, TIMEOUT_MESSAGE)
        except requests.ConnectionError as exc:
            if _is_read_timeout(exc):
                return model_error(endpoint_name, 0, TIMEOUT_MESSAGE)
            return _unavailable(endpoint_name)
        if answer.status_code == 429:
            return aws_error(
                400,
                "ThrottlingException",
                f"The model behind endpoint {endpoint_name} is throttling requests (429); "
                "slow down and retry.",
            )
        if not 200 <= answer.status_code < 300:
            return model_error(endpoint_name, answer.status_code, _original_message(answer))
        return _relay(answer)

    @app.get("/_stand-in/endpoints")
    def list_endpoints() -> Response:
        """Every registered endpoint and its container URL."""
        return _json({"endpoints": registry.snapshot()})

    @app.put("/_stand-in/endpoints/<endpoint_name>")
    def put_endpoint(endpoint_name: str) -> Response:
        """Register (or re-point) an endpoint: JSON ``{"url": "http://127.0.0.1:8120"}``."""
        document = request.get_json(force=True, silent=True)
        if not isinstance(document, dict):
            return _json({"error": "invalid_request", "message": 'expected {"url": ...}'}, 400)
        try:
            url = registry.register(endpoint_name, document.get("url"))
        except ValueError as exc:
            return _json({"error": "invalid_request", "message": str(exc)}, 400)
        return _json({"name": endpoint_name, "url": url})

    @app.delete("/_stand-in/endpoints/<endpoint_name>")
    def delete_endpoint(endpoint_name: str) -> Response:
        """Forget an endpoint (idempotent: deleting an unknown name is not an error)."""
        registry.remove(endpoint_name)
        return Response(status=204)

    @app.errorhandler(HTTPException)
    def unknown_operation(exc: HTTPException) -> Response:
        """Paths and methods InvokeEndpoint does not have, answered in AWS's format."""
        return aws_error(exc.code or 404, "UnknownOperationException", exc.description or "")

    return app


def _unavailable(endpoint_name: str) -> Response:
    """503 ServiceUnavailable: the endpoint's container cannot be reached."""
    return aws_error(
        503,
        "ServiceUnavailable",
        f"The model container of endpoint {endpoint_name} is not reachable. Try again later.",
    )


def _relay(answer: requests.Response) -> Response:
    """InvokeEndpoint's 200: the container's body and Content-Type, plus SageMaker's headers."""
    response = Response(answer.content, status=200)
    response.headers["Content-Type"] = answer.headers.get(
        "Content-Type", "application/octet-stream"
    )
    response.headers["x-Amzn-Invoked-Production-Variant"] = VARIANT
    response.headers["x-amzn-RequestId"] = _request_id()
    custom_attributes = answer.headers.get(CUSTOM_ATTRIBUTES_HEADER)
    if custom_attributes is not None:
        response.headers[CUSTOM_ATTRIBUTES_HEADER] = custom_attributes
    return response


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")


# --- Command line ------------------------------------------------------------------------------


def parse_endpoint(text: str) -> tuple[str, str]:
    """argparse type for ``NAME=URL``."""
    name, sep, url = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=URL, got {text!r}")
    try:
        return name.strip(), validated_container_url(url)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    parser = argparse.ArgumentParser(description="Local stand-in for the SageMaker runtime API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument(
        "--endpoint",
        type=parse_endpoint,
        action="append",
        default=[],
        metavar="NAME=URL",
        help="register an endpoint and its container's base URL (repeatable)",
    )
    parser.add_argument(
        "--model-timeout",
        type=float,
        default=DEFAULT_MODEL_TIMEOUT_S,
        metavar="SECONDS",
        help="how long to wait for a container's answer (AWS: 60)",
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command line: serve the stand-in (threaded werkzeug) until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model_timeout <= 0:
        parser.error("--model-timeout must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(endpoints=dict(args.endpoint), model_timeout_s=args.model_timeout)
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=PathOnlyRequestHandler
    )
    for name, url in args.endpoint:
        log.info("endpoint %s -> %s", name, url)
    log.info("SageMaker runtime stand-in on http://%s:%s", args.host, args.port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
