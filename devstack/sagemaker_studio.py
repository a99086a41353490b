"""A local stand-in for SageMaker Studio's presigned URLs, in front of moto's SageMaker API.

moto implements SageMaker's control plane, Studio domains included (CreateDomain, DescribeDomain,
ListDomains; a domain is InService at once), but has no user profiles and no
CreatePresignedDomainUrl. This app speaks SageMaker's JSON 1.1 wire format (``POST /`` with
``X-Amz-Target: SageMaker.<Operation>``) and

* answers CreatePresignedDomainUrl and the user-profile operations (CreateUserProfile,
  DescribeUserProfile, ListUserProfiles, DeleteUserProfile) itself, in AWS's format;
* forwards every other operation to moto unchanged (DescribeEndpoint, ListDomains...), so an
  account's SageMaker endpoint override can point here and everything else keeps working;
* can report a domain as not InService (``PUT /_stand-in/domains/{account}/{domain}/status``),
  which moto cannot, by rewriting the Status of DescribeDomain and ListDomains answers.

Who calls is what moto says the request's credentials are: STS GetCallerIdentity with the caller's
access key id and session token (moto does not check signatures; neither does this app). So an
assumed role's account decides which account's domains and profiles a call sees, and every
CreatePresignedDomainUrl is recorded with the caller's ARN — which carries the STS session name —
at ``GET /_stand-in/presigned-url-calls``. The URL itself is never recorded or logged.

The URLs lead to this app's own "Studio" page, ``/studio/{domain}?account=&user=&expires=&session=
&sig=``, HMAC-signed with a key of this process: the page checks the signature and the expiry and
shows the domain and user profile, or answers 403 "expired" or "invalid" as Studio answers
"Invalid or Expired Auth Token".

Domains and profiles are seeded with ``--domain ACCOUNT:DOMAIN_NAME=PROFILE,PROFILE`` (the domain
is created in moto, in that account, if it does not exist) or ``POST /_stand-in/domains``.

Run it with ``python -m devstack.sagemaker_studio --port 8150 --moto-url http://127.0.0.1:4566``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import json
import logging
import re
import secrets
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import botocore.session
import requests
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.loaders import create_loader
from flask import Flask, Response, request
from werkzeug.serving import make_server

from devstack.wsgi_thread import PathOnlyRequestHandler

log = logging.getLogger(__name__)

DEFAULT_PORT = 8150
DEFAULT_REGION = "us-east-1"
JSON_11 = "application/x-amz-json-1.1"
# CreatePresignedDomainUrl's limits and defaults, as AWS documents them.
URL_EXPIRES_RANGE = (5, 300)
URL_EXPIRES_DEFAULT = 300
SESSION_RANGE = (1800, 43200)
SESSION_DEFAULT = 43200
# SageMaker's name patterns (the same ones the API model declares).
DOMAIN_ID = re.compile(r"d-(-*[a-z0-9]){1,61}")
PROFILE_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
ACCOUNT_ID = re.compile(r"\d{12}")
# The access key id and region from a SigV4 credential scope: Credential=AKID/20240101/region/...
_CREDENTIAL_SCOPE = re.compile(r"Credential=([A-Za-z0-9]+)/\d{8}/([a-z0-9-]+)/")
# One loader for every botocore session: service models are parsed once, not once per client.
_LOADER = create_loader()
# How many callers' identities (and clients) and recorded calls are kept.
_IDENTITY_CACHE_SIZE = 1024
_CALL_LOG_SIZE = 500
# Headers that describe one hop, not the message: never passed on when forwarding.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "content-encoding",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
OWN_OPERATIONS = frozenset(
    {
        "CreatePresignedDomainUrl",
        "CreateUserProfile",
        "DescribeUserProfile",
        "ListUserProfiles",
        "DeleteUserProfile",
    }
)
# The device role the stand-in assumes in an account to create its demo domains there.
SEED_ROLE = "arn:aws:iam::{account}:role/devstack-sagemaker-studio"


class AwsFault(Exception):
    """An error to answer in SageMaker's JSON 1.1 format."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Caller:
    """Who signed a request, as moto sees the credentials."""

    access_key_id: str
    region: str
    account_id: str
    arn: str
    session_token: str = field(default="", repr=False)


@dataclass
class UserProfile:
    """A Studio user profile in one domain."""

    domain_id: str
    name: str
    account_id: str
    region: str
    created_at: float

    @property
    def arn(self) -> str:
        return (
            f"arn:aws:sagemaker:{self.region}:{self.account_id}:"
            f"user-profile/{self.domain_id}/{self.name}"
        )

    def summary(self) -> dict[str, Any]:
        """The profile as ListUserProfiles lists it."""
        return {
            "DomainId": self.domain_id,
            "UserProfileName": self.name,
            "Status": "InService",
            "CreationTime": self.created_at,
            "LastModifiedTime": self.created_at,
        }


DomainKey = tuple[str, str, str]  # (account id, region, domain id)


class StudioState:
    """Profiles per domain, domain status overrides, recorded calls; safe across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: dict[DomainKey, dict[str, UserProfile]] = {}
        self._statuses: dict[DomainKey, str] = {}
        self._calls: deque[dict[str, Any]] = deque(maxlen=_CALL_LOG_SIZE)

    # --- profiles ---
    def add_profile(self, key: DomainKey, name: str, now: float) -> UserProfile:
        """Create a profile; AwsFault ResourceInUse if the domain already has one by that name."""
        account_id, region, domain_id = key
        with self._lock:
            profiles = self._profiles.setdefault(key, {})
            if name in profiles:
                raise AwsFault(
                    "ResourceInUse", f"User profile {name} already exists in domain {domain_id}."
                )
            profile = UserProfile(domain_id, name, account_id, region, now)
            profiles[name] = profile
            return profile

    def ensure_profile(self, key: DomainKey, name: str, now: float) -> UserProfile:
        """The profile, created if missing (seeding is idempotent)."""
        try:
            return self.add_profile(key, name, now)
        except AwsFault:
            profile = self.profile(key, name)
            assert profile is not None
            return profile

    def profile(self, key: DomainKey, name: str) -> UserProfile | None:
        """The named profile of the domain, or None."""
        with self._lock:
            return self._profiles.get(key, {}).get(name)

    def profiles(self, account_id: str, region: str) -> list[UserProfile]:
        """Every profile of the account in the region."""
        with self._lock:
            return [
                profile
                for (account, reg, _), profiles in self._profiles.items()
                if account == account_id and reg == region
                for profile in profiles.values()
            ]

    def remove_profile(self, key: DomainKey, name: str) -> bool:
        """Delete a profile; False when it did not exist."""
        with self._lock:
            return self._profiles.get(key, {}).pop(name, None) is not None

    # --- domain status ---
    def set_status(self, key: DomainKey, status: str | None) -> None:
        """Report the domain with this status from now on (None: moto's own again)."""
        with self._lock:
            if status is None:
                self._statuses.pop(key, None)
            else:
                self._statuses[key] = status

    def status_overrides(self, account_id: str, region: str) -> dict[str, str]:
        """Domain id → overridden status, for one account and region."""
        with self._lock:
            return {
                domain: status
                for (account, reg, domain), status in self._statuses.items()
                if account == account_id and reg == region
            }

    def has_status_overrides(self) -> bool:
        """Whether any domain's status is overridden (else answers pass through untouched)."""
        with self._lock:
            return bool(self._statuses)

    # --- what was asked ---
    def record_call(self, call: dict[str, Any]) -> None:
        """Remember one CreatePresignedDomainUrl call (never the URL it answered)."""
        with self._lock:
            self._calls.append(call)

    def calls(self) -> list[dict[str, Any]]:
        """The recorded calls, oldest first."""
        with self._lock:
            return list(self._calls)

    def clear_calls(self) -> None:
        """Forget the recorded calls."""
        with self._lock:
            self._calls.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        """Every domain that has profiles or a status override, for the admin endpoint."""
        with self._lock:
            keys = set(self._profiles) | set(self._statuses)
            return [
                {
                    "account_id": account,
                    "region": region,
                    "domain_id": domain,
                    "user_profiles": sorted(self._profiles.get((account, region, domain), {})),
                    "status_override": self._statuses.get((account, region, domain)),
                }
                for account, region, domain in sorted(keys)
            ]


# --- Signed Studio URLs --------------------------------------------------------------------------


@dataclass(frozen=True)
class StudioGrant:
    """What a presigned URL grants: a user profile of a domain, until ``expires``."""

    account_id: str
    domain_id: str
    user: str
    expires: int
    session_seconds: int

    def payload(self) -> bytes:
        fields = (self.account_id, self.domain_id, self.user, self.expires, self.session_seconds)
        return "\n".join(str(part) for part in fields).encode("utf-8")


def sign(key: bytes, grant: StudioGrant) -> str:
    """The grant's HMAC-SHA256, hex."""
    return hmac.new(key, grant.payload(), hashlib.sha256).hexdigest()


def studio_url(base_url: str, key: bytes, grant: StudioGrant) -> str:
    """The presigned URL of a grant on this stand-in's Studio page."""
    query = urlencode(
        {
            "account": grant.account_id,
            "user": grant.user,
            "expires": grant.expires,
            "session": grant.session_seconds,
            "sig": sign(key, grant),
        }
    )
    return f"{base_url.rstrip('/')}/studio/{grant.domain_id}?{query}"


# --- Talking to moto -----------------------------------------------------------------------------


class Moto:
    """moto's API, reached with a caller's own access key (moto identifies accounts by it)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self._lock = threading.Lock()
        self._identities: OrderedDict[str, Caller] = OrderedDict()
        self._clients: OrderedDict[tuple[str, str, str, str], BaseClient] = OrderedDict()
        self._http = requests.Session()
        self._http.headers.clear()

    def _client(
        self, service: str, region: str, access_key_id: str, session_token: str = ""
    ) -> BaseClient:
        """A client signing with the caller's key id, cached per credentials (clients are slow
        to build; calls on one are thread-safe)."""
        key = (service, region, access_key_id, session_token)
        with self._lock:
            cached = self._clients.get(key)
            if cached is not None:
                self._clients.move_to_end(key)
                return cached
        # A new botocore session per client: creating clients on a shared one is not thread-safe.
        # The shared loader parses each service model once.
        session = botocore.session.Session()
        session.register_component("data_loader", _LOADER)
        client = session.create_client(
            service,
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id=access_key_id,
            # A placeholder: moto reads the key id and does not check signatures.
            aws_secret_access_key="devstack-stand-in",  # noqa: S106
            aws_session_token=session_token or None,
            config=Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=30),
        )
        with self._lock:
            self._clients[key] = client
            while len(self._clients) > _IDENTITY_CACHE_SIZE:
                self._clients.popitem(last=False)
        return client

    def caller(self, access_key_id: str, region: str, session_token: str) -> Caller:
        """Who moto says the credentials belong to (cached per access key id)."""
        with self._lock:
            known = self._identities.get(access_key_id)
            if known is not None and known.region == region:
                self._identities.move_to_end(access_key_id)
                return known
        sts = self._client("sts", region, access_key_id, session_token)
        try:
            identity = sts.get_caller_identity()
        except ClientError as exc:
            raise AwsFault(
                "UnrecognizedClientException", "The security token included is invalid.", 400
            ) from exc
        caller = Caller(
            access_key_id=access_key_id,
            region=region,
            account_id=identity["Account"],
            arn=identity["Arn"],
            session_token=session_token,
        )
        with self._lock:
            self._identities[access_key_id] = caller
            while len(self._identities) > _IDENTITY_CACHE_SIZE:
                self._identities.popitem(last=False)
        return caller

    def sagemaker_for(self, caller: Caller) -> BaseClient:
        """A SageMaker client on moto acting as the caller."""
        return self._client("sagemaker", caller.region, caller.access_key_id, caller.session_token)

    def describe_domain(self, caller: Caller, domain_id: str) -> dict[str, Any] | None:
        """moto's DescribeDomain in the caller's account, or None when there is no such domain."""
        try:
            return self.sagemaker_for(caller).describe_domain(DomainId=domain_id)
        except ClientError as exc:
            # moto answers an unknown domain with ValidationException "Could not find domain".
            if exc.response["Error"]["Code"] in ("ResourceNotFound", "ValidationException"):
                return None
            raise AwsFault("InternalFailure", "moto failed DescribeDomain.", 500) from exc

    def ensure_domain(self, account_id: str, region: str, domain_name: str) -> str:
        """The id of the named domain in the account, created there first if missing."""
        sts = self._client("sts", region, "testing")
        credentials = sts.assume_role(
            RoleArn=SEED_ROLE.format(account=account_id), RoleSessionName="devstack-studio"
        )["Credentials"]
        sagemaker = self._client(
            "sagemaker", region, credentials["AccessKeyId"], credentials["SessionToken"]
        )
        for domain in sagemaker.list_domains()["Domains"]:
            if domain["DomainName"] == domain_name:
                return domain["DomainId"]
        sagemaker.create_domain(
            DomainName=domain_name,
            AuthMode="IAM",
            DefaultUserSettings={
                "ExecutionRole": f"arn:aws:iam::{account_id}:role/SageMakerExecutionRole"
            },
            SubnetIds=["subnet-devstack"],
            VpcId="vpc-devstack",
        )
        for domain in sagemaker.list_domains()["Domains"]:
            if domain["DomainName"] == domain_name:
                return domain["DomainId"]
        raise RuntimeError(f"moto did not list the domain {domain_name} it just created")

    def forward(self) -> Response:
        """Send the current request to moto unchanged and relay its answer."""
        headers = {
            name: value for name, value in request.headers if name.lower() not in _HOP_HEADERS
        }
        url = f"{self.url}{request.full_path if request.query_string else request.path}"
        try:
            answer = self._http.request(
                request.method,
                url,
                headers=headers,
                data=request.get_data(),
                timeout=(5, 60),
                allow_redirects=False,
            )
        except requests.RequestException:
            return aws_error(
                AwsFault("ServiceUnavailable", "moto is not reachable from the stand-in.", 503)
            )
        relayed = Response(answer.content, status=answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in _HOP_HEADERS:
                relayed.headers[name] = value
        return relayed


# --- AWS-format answers --------------------------------------------------------------------------


def _request_id() -> str:
    return str(uuid.uuid4())


def aws_json(document: dict[str, Any], status: int = 200) -> Response:
    """A JSON 1.1 answer as SageMaker sends it."""
    response = Response(json.dumps(document), status=status, content_type=JSON_11)
    response.headers["x-amzn-RequestId"] = _request_id()
    return response


def aws_error(fault: AwsFault) -> Response:
    """A JSON 1.1 error: botocore reads the code from ``__type``."""
    return aws_json({"__type": fault.code, "message": fault.message}, fault.status)


def _caller_credentials() -> tuple[str, str, str]:
    """(access key id, region, session token) of the current request's SigV4 signature."""
    match = _CREDENTIAL_SCOPE.search(request.headers.get("Authorization", ""))
    if match is None:
        raise AwsFault("MissingAuthenticationTokenException", "Missing Authentication Token", 403)
    return match.group(1), match.group(2), request.headers.get("X-Amz-Security-Token", "")


def _parameters() -> dict[str, Any]:
    try:
        document = json.loads(request.get_data() or b"{}")
    except ValueError:
        raise AwsFault("SerializationException", "The request body is not JSON.") from None
    if not isinstance(document, dict):
        raise AwsFault("SerializationException", "The request body is not a JSON object.")
    return document


def _required(parameters: dict[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = parameters.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise AwsFault(
            "ValidationException",
            f"1 validation error detected: Value {value!r} at '{name[0].lower()}{name[1:]}' "
            f"failed to satisfy constraint: Member must satisfy regular expression pattern: "
            f"{pattern.pattern}",
        )
    return value


def _bounded(parameters: dict[str, Any], name: str, bounds: tuple[int, int], default: int) -> int:
    value = parameters.get(name, default)
    low, high = bounds
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise AwsFault(
            "ValidationException",
            f"1 validation error detected: Value {value!r} at '{name[0].lower()}{name[1:]}' "
            f"failed to satisfy constraint: Member must have value between {low} and {high}",
        )
    return value


# --- The app -------------------------------------------------------------------------------------


def create_app(
    *,
    moto_url: str,
    signing_key: bytes | None = None,
    public_url: str | None = None,
    clock: Callable[[], float] = time.time,
) -> Flask:
    """The Studio stand-in in front of the moto at ``moto_url``.

    ``signing_key`` signs the Studio URLs (random per process by default); ``public_url`` is the
    base of those URLs (default: the address the caller used to reach this app); ``clock`` gives
    the time, so tests can let a URL expire without waiting.
    """
    app = Flask(__name__)
    key = signing_key or secrets.token_bytes(32)
    state = StudioState()
    moto = Moto(moto_url)
    app.extensions["sagemaker_studio"] = {"state": state, "moto": moto}

    def domain_key(caller: Caller, domain_id: str) -> DomainKey:
        return (caller.account_id, caller.region, domain_id)

    def existing_domain(caller: Caller, domain_id: str) -> dict[str, Any]:
        domain = moto.describe_domain(caller, domain_id)
        if domain is None:
            raise AwsFault("ResourceNotFound", f"Domain {domain_id} does not exist.")
        override = state.status_overrides(caller.account_id, caller.region).get(domain_id)
        if override:
            domain["Status"] = override
        return domain

    def existing_profile(caller: Caller, domain_id: str, name: str) -> UserProfile:
        profile = state.profile(domain_key(caller, domain_id), name)
        if profile is None:
            raise AwsFault(
                "ResourceNotFound",
                f"Resource Not Found: User profile {name} does not exist in domain {domain_id}.",
            )
        return profile

    # --- SageMaker operations answered here ---

    def create_presigned_domain_url(caller: Caller, parameters: dict[str, Any]) -> Response:
        domain_id = _required(parameters, "DomainId", DOMAIN_ID)
        user = _required(parameters, "UserProfileName", PROFILE_NAME)
        session_seconds = _bounded(
            parameters, "SessionExpirationDurationInSeconds", SESSION_RANGE, SESSION_DEFAULT
        )
        expires_in = _bounded(
            parameters, "ExpiresInSeconds", URL_EXPIRES_RANGE, URL_EXPIRES_DEFAULT
        )
        domain = existing_domain(caller, domain_id)
        if domain["Status"] != "InService":
            raise AwsFault(
                "ValidationException",
                f"Domain {domain_id} is not InService (status: {domain['Status']}).",
            )
        existing_profile(caller, domain_id, user)
        now = clock()
        grant = StudioGrant(
            account_id=caller.account_id,
            domain_id=domain_id,
            user=user,
            expires=int(now) + expires_in,
            session_seconds=session_seconds,
        )
        state.record_call(
            {
                "at": now,
                "account_id": caller.account_id,
                "region": caller.region,
                "caller_arn": caller.arn,
                "access_key_id": caller.access_key_id,
                "domain_id": domain_id,
                "user_profile_name": user,
                "expires_in_seconds": expires_in,
                "session_expiration_seconds": session_seconds,
            }
        )
        log.info(
            "presigned Studio URL for %s in %s (account %s) requested by %s",
            user,
            domain_id,
            caller.account_id,
            caller.arn,
        )
        return aws_json({"AuthorizedUrl": studio_url(public_url or request.host_url, key, grant)})

    def create_user_profile(caller: Caller, parameters: dict[str, Any]) -> Response:
        domain_id = _required(parameters, "DomainId", DOMAIN_ID)
        name = _required(parameters, "UserProfileName", PROFILE_NAME)
        existing_domain(caller, domain_id)
        profile = state.add_profile(domain_key(caller, domain_id), name, clock())
        return aws_json({"UserProfileArn": profile.arn})

    def describe_user_profile(caller: Caller, parameters: dict[str, Any]) -> Response:
        domain_id = _required(parameters, "DomainId", DOMAIN_ID)
        name = _required(parameters, "UserProfileName", PROFILE_NAME)
        profile = existing_profile(caller, domain_id, name)
        return aws_json({**profile.summary(), "UserProfileArn": profile.arn})

    def list_user_profiles(caller: Caller, parameters: dict[str, Any]) -> Response:
        domain_id = parameters.get("DomainIdEquals")
        contains = parameters.get("UserProfileNameContains") or ""
        profiles = [
            profile.summary()
            for profile in state.profiles(caller.account_id, caller.region)
            if (not domain_id or profile.domain_id == domain_id) and contains in profile.name
        ]
        profiles.sort(key=lambda summary: (summary["DomainId"], summary["UserProfileName"]))
        return aws_json({"UserProfiles": profiles})

    def delete_user_profile(caller: Caller, parameters: dict[str, Any]) -> Response:
        domain_id = _required(parameters, "DomainId", DOMAIN_ID)
        name = _required(parameters, "UserProfileName", PROFILE_NAME)
        existing_profile(caller, domain_id, name)
        state.remove_profile(domain_key(caller, domain_id), name)
        return aws_json({})

    operations: dict[str, Callable[[Caller, dict[str, Any]], Response]] = {
        "CreatePresignedDomainUrl": create_presigned_domain_url,
        "CreateUserProfile": create_user_profile,
        "DescribeUserProfile": describe_user_profile,
        "ListUserProfiles": list_user_profiles,
        "DeleteUserProfile": delete_user_profile,
    }

    def with_status_overrides(operation: str) -> Response:
        """Forward DescribeDomain/ListDomains to moto, then report overridden statuses."""
        answer = moto.forward()
        if answer.status_code != 200:
            return answer
        caller = moto.caller(*_caller_credentials())
        overrides = state.status_overrides(caller.account_id, caller.region)
        if not overrides:
            return answer
        document = json.loads(answer.get_data())
        domains = document.get("Domains", []) if operation == "ListDomains" else [document]
        for domain in domains:
            if domain.get("DomainId") in overrides:
                domain["Status"] = overrides[domain["DomainId"]]
        answer.set_data(json.dumps(document))
        return answer

    @app.route("/", methods=["POST"])
    def sagemaker_api() -> Response:
        """The SageMaker JSON 1.1 API: some operations answered here, the rest by moto."""
        service, _, operation = request.headers.get("X-Amz-Target", "").partition(".")
        if service != "SageMaker":
            return moto.forward()
        try:
            if operation in OWN_OPERATIONS:
                caller = moto.caller(*_caller_credentials())
                return operations[operation](caller, _parameters())
            if operation in ("DescribeDomain", "ListDomains") and state.has_status_overrides():
                return with_status_overrides(operation)
        except AwsFault as fault:
            return aws_error(fault)
        return moto.forward()

    # --- The Studio page the URLs lead to ---

    @app.get("/studio/<domain_id>")
    def studio_page(domain_id: str) -> Response:
        """Studio for a valid, unexpired URL; 403 "expired" or "invalid" otherwise."""
        arguments = request.args
        try:
            grant = StudioGrant(
                account_id=arguments["account"],
                domain_id=domain_id,
                user=arguments["user"],
                expires=int(arguments["expires"]),
                session_seconds=int(arguments["session"]),
            )
            signature = arguments["sig"]
        except (KeyError, ValueError):
            return studio_refusal("invalid")
        if not hmac.compare_digest(sign(key, grant), signature):
            return studio_refusal("invalid")
        now = clock()
        if now > grant.expires:
            return studio_refusal("expired")
        return page(
            "SageMaker Studio",
            f"""
            <p class="tag">SageMaker Studio (local stand-in)</p>
            <h1 data-testid="studio-domain">{html.escape(grant.domain_id)}</h1>
            <dl>
              <dt>User profile</dt><dd data-testid="studio-user">{html.escape(grant.user)}</dd>
              <dt>Domain</dt><dd>{html.escape(grant.domain_id)}</dd>
              <dt>AWS account</dt>
              <dd data-testid="studio-account">{html.escape(grant.account_id)}</dd>
              <dt>Session ends</dt><dd>{_utc(now + grant.session_seconds)}</dd>
            </dl>
            <p class="note">A real domain opens JupyterLab here. This page only proves that the
            presigned URL was signed for this domain and user and was used before it expired.</p>
            """,
            status=200,
        )

    def studio_refusal(reason: str) -> Response:
        title = "This link has expired" if reason == "expired" else "This link is not valid"
        return page(
            title,
            f"""
            <p class="tag">SageMaker Studio (local stand-in)</p>
            <h1>{title}</h1>
            <p class="refusal" data-testid="studio-refusal" data-reason="{reason}">
              Invalid or Expired Auth Token</p>
            <p class="note">Presigned Studio URLs are valid for seconds. Go back to the portal
            and open Studio again for a new one.</p>
            """,
            status=403,
        )

    # --- Administration of the stand-in ---

    @app.get("/_stand-in/domains")
    def list_seeded_domains() -> Response:
        """Every domain with profiles or a status override."""
        return _json({"domains": state.snapshot()})

    @app.post("/_stand-in/domains")
    def seed_domain() -> Response:
        """Ensure a domain in moto and its profiles here.

        JSON ``{"account_id", "domain_name", "region"?, "user_profiles": [names]}``.
        """
        document = request.get_json(force=True, silent=True)
        if not isinstance(document, dict):
            return _json({"error": "invalid_request", "message": "expected a JSON object"}, 400)
        try:
            seeded = seed(
                state,
                moto,
                account_id=document.get("account_id"),
                domain_name=document.get("domain_name"),
                region=document.get("region") or DEFAULT_REGION,
                user_profiles=document.get("user_profiles") or [],
                now=clock(),
            )
        except ValueError as exc:
            return _json({"error": "invalid_request", "message": str(exc)}, 400)
        return _json(seeded, 201)

    @app.put("/_stand-in/domains/<account_id>/<domain_id>/status")
    def put_domain_status(account_id: str, domain_id: str) -> Response:
        """Report a domain with a status (``{"status": "Updating", "region"?}``)."""
        document = request.get_json(force=True, silent=True)
        if not isinstance(document, dict) or not isinstance(document.get("status"), str):
            return _json({"error": "invalid_request", "message": 'expected {"status": ...}'}, 400)
        region = document.get("region") or DEFAULT_REGION
        state.set_status((account_id, region, domain_id), document["status"])
        return _json({"account_id": account_id, "domain_id": domain_id, **document})

    @app.delete("/_stand-in/domains/<account_id>/<domain_id>/status")
    def delete_domain_status(account_id: str, domain_id: str) -> Response:
        """Report the domain's status as moto has it again."""
        region = request.args.get("region") or DEFAULT_REGION
        state.set_status((account_id, region, domain_id), None)
        return Response(status=204)

    @app.get("/_stand-in/presigned-url-calls")
    def presigned_url_calls() -> Response:
        """Every CreatePresignedDomainUrl answered: who called, for what. Never the URL."""
        return _json({"calls": state.calls()})

    @app.delete("/_stand-in/presigned-url-calls")
    def clear_presigned_url_calls() -> Response:
        """Forget the recorded calls."""
        state.clear_calls()
        return Response(status=204)

    @app.route("/<path:path>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    def other_paths(path: str) -> Response:
        """Anything else is moto's (other protocols, other services)."""
        return moto.forward()

    return app


def seed(
    state: StudioState,
    moto: Moto,
    *,
    account_id: object,
    domain_name: object,
    region: str,
    user_profiles: Iterable[object],
    now: float,
) -> dict[str, Any]:
    """Ensure the domain in moto (in that account) and its user profiles; idempotent."""
    if not isinstance(account_id, str) or not ACCOUNT_ID.fullmatch(account_id):
        raise ValueError("account_id must be 12 digits")
    if not isinstance(domain_name, str) or not re.fullmatch(
        r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", domain_name
    ):
        raise ValueError("domain_name must be letters, digits and hyphens")
    names = list(user_profiles)
    for name in names:
        if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
            raise ValueError(f"not a user profile name: {name!r}")
    domain_id = moto.ensure_domain(account_id, region, domain_name)
    for name in names:
        state.ensure_profile((account_id, region, domain_id), name, now)
    return {
        "account_id": account_id,
        "region": region,
        "domain_id": domain_id,
        "user_profiles": sorted(names),
    }


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _json(document: Any, status: int = 200) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")


_PAGE_STYLE = """
body { margin: 0; font: 15px/1.5 system-ui, sans-serif; background: #f3f5f8; color: #16202c; }
header { background: #232f3e; color: #fff; padding: 12px 24px; font-weight: 600; }
main { max-width: 720px; margin: 40px auto; background: #fff; border-radius: 8px;
       padding: 28px 32px; box-shadow: 0 1px 3px rgba(0,0,0,.12); }
h1 { margin: 4px 0 16px; font-size: 26px; }
.tag { margin: 0; color: #5f6b7a; text-transform: uppercase; font-size: 12px;
       letter-spacing: .06em; }
dl { display: grid; grid-template-columns: 160px 1fr; gap: 6px 16px; }
dt { color: #5f6b7a; } dd { margin: 0; font-family: ui-monospace, monospace; }
.refusal { color: #b3261e; font-weight: 600; } .note { color: #5f6b7a; }
"""


def page(title: str, body: str, *, status: int) -> Response:
    """A self-contained HTML page (no external assets: the demo runs offline)."""
    document = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_PAGE_STYLE}</style></head>
<body><header>Amazon SageMaker Studio</header><main>{body}</main></body></html>"""
    response = Response(document, status=status, mimetype="text/html")
    # The page's URL carries a bearer credential: keep it out of caches and referrers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


# --- Command line --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DomainSeed:
    """A ``--domain ACCOUNT:DOMAIN_NAME=PROFILE,PROFILE`` argument."""

    account_id: str
    domain_name: str
    user_profiles: tuple[str, ...]


def parse_domain(text: str) -> DomainSeed:
    """argparse type for ``ACCOUNT:DOMAIN_NAME=PROFILE,PROFILE`` (profiles may be empty)."""
    head, _, profiles = text.partition("=")
    account_id, sep, domain_name = head.partition(":")
    names = tuple(name.strip() for name in profiles.split(",") if name.strip())
    if not sep or not ACCOUNT_ID.fullmatch(account_id) or not domain_name:
        raise argparse.ArgumentTypeError(
            f"expected ACCOUNT:DOMAIN_NAME=PROFILE,PROFILE, got {text!r}"
        )
    for name in names:
        if not PROFILE_NAME.fullmatch(name):
            raise argparse.ArgumentTypeError(f"not a user profile name: {name!r}")
    return DomainSeed(account_id, domain_name, names)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's arguments."""
    parser = argparse.ArgumentParser(description="Local stand-in for SageMaker Studio URLs.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--moto-url", default="http://127.0.0.1:4566", help="moto's server")
    parser.add_argument("--region", default=DEFAULT_REGION, help="region of seeded domains")
    parser.add_argument(
        "--public-url", help="base of the Studio URLs (default: the address callers use)"
    )
    parser.add_argument(
        "--domain",
        type=parse_domain,
        action="append",
        default=[],
        metavar="ACCOUNT:DOMAIN_NAME=PROFILE,PROFILE",
        help="create the domain in moto (if missing) with these user profiles (repeatable)",
    )
    return parser


def wait_for(url: str, timeout: float = 60.0) -> None:
    """Block until something answers HTTP at ``url`` (moto starts alongside this process)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered at {url} within {timeout:.0f}s")


def main(argv: list[str] | None = None) -> None:
    """Command line: seed the domains, then serve the stand-in until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app = create_app(moto_url=args.moto_url, public_url=args.public_url)
    extensions = app.extensions["sagemaker_studio"]
    if args.domain:
        wait_for(f"{args.moto_url.rstrip('/')}/moto-api/")
    for seeding in args.domain:
        seeded = seed(
            extensions["state"],
            extensions["moto"],
            account_id=seeding.account_id,
            domain_name=seeding.domain_name,
            region=args.region,
            user_profiles=seeding.user_profiles,
            now=time.time(),
        )
        log.info(
            "domain %s in account %s with user profiles %s",
            seeded["domain_id"],
            seeded["account_id"],
            ", ".join(seeded["user_profiles"]) or "-",
        )
    # Path-only request log: the Studio URLs' query strings carry their signatures.
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=PathOnlyRequestHandler
    )
    log.info(
        "SageMaker Studio stand-in on http://%s:%s (moto: %s)", args.host, args.port, args.moto_url
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
