"""The portal's one door to AWS: the only module that imports boto3 or botocore.

Services, tasks and views ask it for a client and get

* a botocore client per (service, account, session name, region, timeouts), cached in-process, with
  the connect/read timeouts and standard retries of the settings, read at call time;
* pointed at the account's endpoint override for that service (VPC endpoints in production), else at
  ``AWS_ENDPOINT_URL`` (one URL for all services: moto locally), else at AWS's default endpoint;
* for an account, signed with credentials from STS AssumeRole of the account's role, made with the
  portal's own credentials. They are botocore ``RefreshableCredentials``: every client, including a
  long-lived one, renews them by itself once fewer than ``AWS_CREDENTIALS_REFRESH_MARGIN`` seconds
  of validity remain.

Failures surface as :class:`AwsError` subclasses (wrap client calls in :func:`aws_errors`), never
as botocore exceptions. Credentials, session tokens and presigned URLs are never logged.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3.exceptions
import boto3.utils
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.client import BaseClient
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, RefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotocoreConnectionError
from botocore.loaders import create_loader
from django.conf import settings

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser

__all__ = [
    "DEFAULT_SESSION_NAME",
    "TRANSIENT_ERRORS",
    "AccountAccess",
    "AwsError",
    "NotAuthorized",
    "NotFound",
    "Throttled",
    "Unreachable",
    "UpstreamError",
    "aws_errors",
    "caller_identity",
    "client",
    "reset_caches",
    "session_name_for",
    "translate_error",
]

logger = logging.getLogger(__name__)

DEFAULT_SESSION_NAME = "gatehouse"
SESSION_NAME_PREFIX = "gatehouse-"
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}", re.ASCII)
_SESSION_NAME_INVALID_CHAR = re.compile(r"[^\w+=,.@-]", re.ASCII)
_ACCOUNT_ID = re.compile(r"\d{12}", re.ASCII)
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]{1,512}", re.ASCII)

# Per-user session names make these caches grow with the user base; old entries go first.
_MAX_CLIENTS = 512
_MAX_ROLE_SESSIONS = 256
_AWS_MESSAGE_MAX = 300


# --- Errors ---------------------------------------------------------------------------------------
class AwsError(Exception):
    """An AWS call failed; ``code`` is the portal's reason for machines, ``aws_code`` AWS's own."""

    code = "aws_error"
    summary = "The AWS call failed"

    def __init__(self, message: str = "", *, aws_code: str = "", operation: str = "") -> None:
        super().__init__(message or self.summary)
        self.aws_code = aws_code
        self.operation = operation


class NotAuthorized(AwsError):
    """AWS refused the credentials or the permission (AccessDenied, expired or unknown token...)."""

    code = "aws_not_authorized"
    summary = "AWS refused the request"


class Throttled(AwsError):
    """AWS asked the portal to slow down; retrying later may succeed."""

    code = "aws_throttled"
    summary = "AWS throttled the request"


class NotFound(AwsError):
    """The resource named in the call does not exist (or is not visible to these credentials)."""

    code = "aws_not_found"
    summary = "AWS could not find the resource"


class Unreachable(AwsError):
    """No answer from the endpoint: connection refused, connect or read timeout, connection cut."""

    code = "aws_unreachable"
    summary = "AWS could not be reached"


class UpstreamError(AwsError):
    """Any other failure: AWS's 5xx answers, unclassified refusals, client-side library errors."""

    code = "aws_upstream_error"
    summary = "AWS failed the request"


# The errors a task may retry: nothing about the request itself was wrong.
TRANSIENT_ERRORS: tuple[type[AwsError], ...] = (Throttled, Unreachable)

_NOT_AUTHORIZED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "AllAccessDisabled",
        "AuthFailure",
        "AuthorizationError",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidToken",
        "MissingAuthenticationToken",
        "NotAuthorized",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
    }
)
_THROTTLED_CODES = frozenset(
    {
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "ThrottledException",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
    }
)
_NOT_FOUND_CODES = frozenset(
    {
        "404",
        "NoSuchBucket",
        "NoSuchEntity",
        "NoSuchKey",
        "NoSuchUpload",
        "NoSuchVersion",
        "NotFound",
        "ResourceNotFound",
        "ResourceNotFoundException",
    }
)
# SageMaker answers a missing endpoint or model with a validation error ("Could not find endpoint",
# "Endpoint x of account y not found"); these phrases make such an error a NotFound.
_VALIDATION_CODES = frozenset({"ValidationError", "ValidationException"})
_NOT_FOUND_MESSAGE = re.compile(r"could not find|not found|does not exist", re.IGNORECASE)


def translate_error(exc: BaseException) -> AwsError:
    """The portal's error for a botocore/boto3 exception (an :class:`AwsError` is returned as is).

    AWS error codes decide first (see the code sets above); a ``ValidationError`` whose message says
    the resource could not be found is a :class:`NotFound`; otherwise the HTTP status decides
    (401/403 not authorized, 404 not found, 429 throttled), and everything else, 5xx included, is an
    :class:`UpstreamError`. Connection failures and timeouts are :class:`Unreachable`. The message
    keeps AWS's own explanation but never request URLs' query strings, parameters or credentials.
    """
    if isinstance(exc, AwsError):
        return exc
    if isinstance(exc, ClientError):
        return _translate_client_error(exc)
    if isinstance(exc, BotocoreConnectionError | HTTPClientError):
        where = _host_of(getattr(exc, "kwargs", {}).get("endpoint_url", ""))
        message = f"{Unreachable.summary}{f' at {where}' if where else ''} ({type(exc).__name__})"
        return Unreachable(message)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return NotAuthorized(f"The portal has no usable AWS credentials ({type(exc).__name__})")
    # Library-side failures (bad parameters, unknown service...): their text can quote parameter
    # values, so only the type goes into the message; the chained exception keeps the detail.
    return UpstreamError(f"{UpstreamError.summary} ({type(exc).__name__})")


def _translate_client_error(exc: ClientError) -> AwsError:
    error = exc.response.get("Error", {})
    aws_code = str(error.get("Code", ""))
    aws_message = str(error.get("Message", ""))[:_AWS_MESSAGE_MAX]
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    error_class: type[AwsError]
    if aws_code in _NOT_AUTHORIZED_CODES:
        error_class = NotAuthorized
    elif aws_code in _THROTTLED_CODES:
        error_class = Throttled
    elif aws_code in _NOT_FOUND_CODES or (
        aws_code in _VALIDATION_CODES and _NOT_FOUND_MESSAGE.search(aws_message)
    ):
        error_class = NotFound
    elif status in (401, 403):
        error_class = NotAuthorized
    elif status == 404:
        error_class = NotFound
    elif status == 429:
        error_class = Throttled
    else:
        error_class = UpstreamError
    operation = exc.operation_name or ""
    detail = ", ".join(part for part in (aws_code, operation) if part)
    message = error_class.summary
    if aws_message:
        message += f": {aws_message}"
    if detail:
        message += f" ({detail})"
    return error_class(message, aws_code=aws_code, operation=operation)


def _host_of(url: str) -> str:
    """Only the host and port of a URL: paths and query strings may carry keys or signatures."""
    return urlsplit(url).netloc if url else ""


@contextmanager
def aws_errors() -> Iterator[None]:
    """Re-raise botocore and boto3 exceptions from the block as the portal's :class:`AwsError`."""
    try:
        yield
    except (ClientError, BotoCoreError, boto3.exceptions.Boto3Error) as exc:
        raise translate_error(exc) from exc


# --- Accounts and session names -------------------------------------------------------------------
class _FrozenMapping(Mapping[str, str]):
    """A read-only, hashable mapping, so an :class:`AccountAccess` can key a cache."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = dict(items or {})

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)


@dataclass(frozen=True)
class AccountAccess:
    """How the portal reaches one AWS account: its region, the role to assume, endpoint overrides.

    ``endpoint_urls`` maps a service name as boto3 spells it ("sts", "s3", "sagemaker",
    "sagemaker-runtime", "dynamodb") to the URL to use for it in this account; services without an
    entry (or with an empty one) use the global endpoint setting.
    """

    account_id: str
    region: str
    role_arn: str
    external_id: str = field(default="", repr=False)
    endpoint_urls: Mapping[str, str] = field(default_factory=_FrozenMapping)

    def __post_init__(self) -> None:
        if not _ACCOUNT_ID.fullmatch(self.account_id):
            raise ValueError(f"An AWS account id has 12 digits, not {self.account_id!r}")
        if not self.region:
            raise ValueError("An AWS account needs a region")
        match = _ROLE_ARN.fullmatch(self.role_arn)
        if match is None:
            raise ValueError(f"Not an IAM role ARN: {self.role_arn!r}")
        # The role decides which account the credentials act in: a role elsewhere would quietly
        # send this account's work to another one.
        if match.group(1) != self.account_id:
            raise ValueError(f"The role {self.role_arn} is not in account {self.account_id}")
        overrides = {service: url for service, url in self.endpoint_urls.items() if url}
        object.__setattr__(self, "endpoint_urls", _FrozenMapping(overrides))


def session_name_for(user: AbstractBaseUser) -> str:
    """A valid STS RoleSessionName naming the portal user, so CloudTrail attributes calls to them.

    ``gatehouse-<username>``; when the username had to be changed to fit (characters outside
    ``[\\w+=,.@-]`` replaced, or cut to 64 characters), a short hash of the real one is appended so
    two users never share a session name.
    """
    username = user.get_username()
    if not username:
        raise ValueError("AWS calls are attributed to a person: the user has no username")
    cleaned = _SESSION_NAME_INVALID_CHAR.sub("-", username)
    name = f"{SESSION_NAME_PREFIX}{cleaned}"
    if cleaned != username or len(name) > 64:
        digest = hashlib.sha256(username.encode("utf-8")).hexdigest()[:8]
        room = 64 - len(SESSION_NAME_PREFIX) - len(digest) - 1
        name = f"{SESSION_NAME_PREFIX}{cleaned[:room]}-{digest}"
    return name


# --- Clients and credentials ----------------------------------------------------------------------
# One loader for every botocore session: service models are parsed once, not once per role session.
_LOADER = create_loader()
_lock = threading.Lock()
_clients: OrderedDict[Hashable, BaseClient] = OrderedDict()
_role_sessions: OrderedDict[Hashable, botocore.session.Session] = OrderedDict()
_assume_locks: dict[Hashable, threading.Lock] = {}
_own_session: botocore.session.Session | None = None


class _AssumedRoleCredentials(RefreshableCredentials):
    """Assumed-role credentials renewed inside the refresh margin, read from settings when checked.

    Between the margin and half of it, one caller renews while the others keep signing with the
    current credentials (a failed renewal is retried on the next call); inside half the margin every
    caller waits for the renewal and a failure is raised.
    """

    @property  # type: ignore[override]
    def _advisory_refresh_timeout(self) -> int:
        return int(settings.AWS_CREDENTIALS_REFRESH_MARGIN)

    @property  # type: ignore[override]
    def _mandatory_refresh_timeout(self) -> int:
        return int(settings.AWS_CREDENTIALS_REFRESH_MARGIN) // 2


class _GivenCredentials(CredentialProvider):
    """A credential provider that hands a botocore session the credentials it was built with."""

    METHOD = "gatehouse-assume-role"
    CANONICAL_NAME = "custom-gatehouse-assume-role"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        super().__init__()
        self._credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self._credentials


def _new_session(credentials: RefreshableCredentials | None = None) -> botocore.session.Session:
    """A botocore session on the shared loader; ``None`` uses the default credential chain."""
    session = botocore.session.Session()
    session.register_component("data_loader", _LOADER)
    # What boto3's own sessions add to S3 clients: upload_fileobj, download_fileobj...
    session.register(
        "creating-client-class.s3",
        boto3.utils.lazy_call("boto3.s3.inject.inject_s3_transfer_methods"),
    )
    if credentials is not None:
        session.register_component(
            "credential_provider", CredentialResolver([_GivenCredentials(credentials)])
        )
    return session


def _remember(cache: OrderedDict[Hashable, Any], key: Hashable, value: Any, limit: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > limit:
        cache.popitem(last=False)


def _endpoint_url(service: str, access: AccountAccess | None) -> str | None:
    """The account's override for the service, else the global setting, else None (AWS's own)."""
    if access is not None and access.endpoint_urls.get(service):
        return access.endpoint_urls[service]
    return settings.AWS_ENDPOINT_URL or None


def _check_session_name(session_name: str) -> None:
    if not _SESSION_NAME.fullmatch(session_name):
        raise ValueError(
            f"A role session name is 2-64 characters of [\\w+=,.@-], not {session_name!r}"
        )


# A stream (an upload being received, parts being merged) is sent to S3 in parts of 8 MB. boto3
# holds up to ten parts by default: 80 MB (and more while each is read and copied) of a worker's
# memory, which took its peak past 300 MB while merging a 1 GB job's output. Two parts sent at
# once keep the link busy; S3 takes 8 MB faster than a worker produces it.
STREAM_PART_BYTES = 8 * 1024 * 1024
STREAM_PARTS_IN_MEMORY = 2


def stream_upload_config() -> TransferConfig:
    """For ``upload_fileobj`` from a stream: at most STREAM_PARTS_IN_MEMORY parts held at once."""
    config = TransferConfig(
        multipart_threshold=STREAM_PART_BYTES,
        multipart_chunksize=STREAM_PART_BYTES,
        max_concurrency=STREAM_PARTS_IN_MEMORY,
    )
    # Not among boto3's own arguments, but read by s3transfer, which boto3's config extends.
    config.max_in_memory_upload_chunks = STREAM_PARTS_IN_MEMORY
    return config


def client(
    service: str,
    *,
    access: AccountAccess | None = None,
    session_name: str = DEFAULT_SESSION_NAME,
    region: str | None = None,
    read_timeout: float | None = None,
    endpoint_url: str | None = None,
    max_attempts: int | None = None,
) -> BaseClient:
    """A botocore client for ``service`` in ``access``'s account, or with the portal's credentials.

    With ``access``, the client signs with credentials of ``access.role_arn`` assumed as
    ``session_name`` (see :func:`session_name_for`); the first call for a role and session name
    makes the AssumeRole call and raises :class:`AwsError` if it fails. ``region`` defaults to the
    account's region, or ``AWS_REGION`` without an account. ``read_timeout`` overrides
    ``AWS_READ_TIMEOUT`` (SageMaker InvokeEndpoint needs 70 s). ``endpoint_url`` overrides the
    endpoint for a client without an account (e.g. a VPC endpoint for the portal's own tables).
    ``max_attempts`` overrides ``AWS_MAX_ATTEMPTS`` (1 for calls that must not repeat, such as a
    model invocation). Clients are cached and thread-safe.
    """
    _check_session_name(session_name)
    return _cached_client(
        service,
        access=access,
        session_name=session_name,
        region=region or (access.region if access is not None else settings.AWS_REGION),
        endpoint_url=endpoint_url or _endpoint_url(service, access),
        read_timeout=read_timeout,
        max_attempts=max_attempts,
    )


def _cached_client(
    service: str,
    *,
    access: AccountAccess | None,
    session_name: str,
    region: str,
    endpoint_url: str | None,
    read_timeout: float | None,
    max_attempts: int | None = None,
) -> BaseClient:
    attempts = settings.AWS_MAX_ATTEMPTS if max_attempts is None else max_attempts
    config = Config(
        connect_timeout=settings.AWS_CONNECT_TIMEOUT,
        read_timeout=settings.AWS_READ_TIMEOUT if read_timeout is None else read_timeout,
        # botocore's "max_attempts" counts retries only; "total_max_attempts" includes the first
        # try, which is what AWS_MAX_ATTEMPTS means here and in the AWS SDKs' own configuration.
        retries={"mode": "standard", "total_max_attempts": attempts},
        user_agent_appid="gatehouse",
    )
    key = (
        service,
        access,
        session_name if access is not None else "",
        region,
        endpoint_url,
        config.connect_timeout,
        config.read_timeout,
        attempts,
    )
    with _lock:
        cached = _clients.get(key)
        if cached is not None:
            _clients.move_to_end(key)
            return cached
    session = _role_session(access, session_name) if access is not None else _portal_session()
    with _lock, aws_errors():
        cached = _clients.get(key)
        if cached is None:
            # Session.create_client is not thread-safe; the lock serialises it (no network here).
            cached = session.create_client(
                service, region_name=region, endpoint_url=endpoint_url, config=config
            )
            _remember(_clients, key, cached, _MAX_CLIENTS)
        return cached


def _portal_session() -> botocore.session.Session:
    """The session with the portal's own credentials (the default credential chain)."""
    global _own_session
    with _lock:
        if _own_session is None:
            _own_session = _new_session()
        return _own_session


def _role_session(access: AccountAccess, session_name: str) -> botocore.session.Session:
    """The session signing as ``access.role_arn`` assumed as ``session_name``, made once per key."""
    key = (access.role_arn, access.external_id, session_name)
    with _lock:
        session = _role_sessions.get(key)
        if session is not None:
            _role_sessions.move_to_end(key)
            return session
        key_lock = _assume_locks.setdefault(key, threading.Lock())
    # A lock per role and session name: one slow STS endpoint must not hold up other accounts.
    with key_lock:
        try:
            with _lock:
                session = _role_sessions.get(key)
            if session is None:
                credentials = _AssumedRoleCredentials.create_from_metadata(
                    metadata=_assume_role(access=access, session_name=session_name),
                    # Looked up at each refresh, not bound now: the current function is called.
                    refresh_using=lambda: _assume_role(access=access, session_name=session_name),
                    method=_GivenCredentials.METHOD,
                )
                session = _new_session(credentials)
                with _lock:
                    _remember(_role_sessions, key, session, _MAX_ROLE_SESSIONS)
        finally:
            # Waiters still hold this lock and re-check the cache; later callers find the session.
            with _lock:
                _assume_locks.pop(key, None)
    return session


def _assume_role(*, access: AccountAccess, session_name: str) -> dict[str, str]:
    """STS AssumeRole of the account's role with the portal's own credentials.

    Returns the credentials in the form botocore's RefreshableCredentials takes. The STS call uses
    the account's STS endpoint override, else the global endpoint setting.
    """
    sts = _cached_client(
        "sts",
        access=None,
        session_name="",
        region=access.region,
        endpoint_url=_endpoint_url("sts", access),
        read_timeout=None,
    )
    parameters = {"RoleArn": access.role_arn, "RoleSessionName": session_name}
    if access.external_id:
        parameters["ExternalId"] = access.external_id
    try:
        with aws_errors():
            answer = sts.assume_role(**parameters)
    except AwsError as exc:
        logger.warning(
            "AssumeRole of %s as %s failed: %s %s (%s)",
            access.role_arn,
            session_name,
            exc.code,
            exc.aws_code,
            exc,
        )
        if not isinstance(exc.__cause__, ClientError):
            raise
        # STS's own text names who asked: the portal's IAM principal in the portal's account.
        # The message reaches the LOB's people (API answers, Studio pages, job errors), so it
        # names the role instead; AWS's text is in the log line above.
        raise type(exc)(
            f"{exc.summary}: the portal is not authorized to assume {access.role_arn} "
            f"({exc.aws_code}, AssumeRole)"
            if isinstance(exc, NotAuthorized)
            else f"{exc.summary}: AssumeRole of {access.role_arn} failed ({exc.aws_code})",
            aws_code=exc.aws_code,
            operation=exc.operation,
        ) from exc.__cause__
    credentials = answer["Credentials"]
    logger.info(
        "Assumed %s as %s; credentials valid until %s",
        access.role_arn,
        session_name,
        credentials["Expiration"].isoformat(),
    )
    return {
        "access_key": credentials["AccessKeyId"],
        "secret_key": credentials["SecretAccessKey"],
        "token": credentials["SessionToken"],
        "expiry_time": credentials["Expiration"].isoformat(),
    }


def caller_identity(*, access: AccountAccess, session_name: str) -> dict[str, str]:
    """Who AWS sees through the account's assumed role: ``account_id``, ``arn`` and ``user_id``."""
    sts = client("sts", access=access, session_name=session_name)
    with aws_errors():
        answer = sts.get_caller_identity()
    return {"account_id": answer["Account"], "arn": answer["Arn"], "user_id": answer["UserId"]}


def reset_caches() -> None:
    """Forget every cached client, assumed-role credential and session (for tests)."""
    global _own_session
    with _lock:
        _clients.clear()
        _role_sessions.clear()
        _assume_locks.clear()
        _own_session = None
