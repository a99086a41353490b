"""Create (or find again) the local Cognito user pool, app clients, group and demo users in moto.

Running it twice is safe: everything is looked up by name first, so a devstack restart against a
moto that is still running keeps the same pool id, client ids and user subjects.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

POOL_NAME = "gatehouse"
WEB_CLIENT_NAME = "gatehouse-portal"
API_CLIENT_NAME = "gatehouse-cli"
DEFAULT_ADMIN_GROUP = "portal-admins"
EMAIL_DOMAIN = "gatehouse.example"
# Meets Cognito's default policy: 8+ characters, upper, lower, digit and symbol.
DEMO_PASSWORD = "Gatehouse-demo-1"
OAUTH_SCOPES = ("openid", "email", "profile")
AUTH_FLOWS = ("ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH")
# moto accepts any credentials; fixed dummies keep boto3 from looking for real ones.
MOTO_ACCESS_KEY_ID = "testing"
MOTO_SECRET_ACCESS_KEY = "testing"


@dataclass(frozen=True)
class DemoUser:
    """A demo account; ``admin`` users join the admin group given to :func:`bootstrap`."""

    username: str
    name: str
    admin: bool = False
    password: str = DEMO_PASSWORD

    @property
    def email(self) -> str:
        """The demo address, ``<username>@gatehouse.example``."""
        return f"{self.username}@{EMAIL_DOMAIN}"


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("admin", "Ada Admin", admin=True),
    DemoUser("user-lob-a", "Alice Analyst"),
    DemoUser("user-lob-b", "Bob Analyst"),
    DemoUser("lob-a-admin", "Lena Lobadmin"),
)


@dataclass(frozen=True)
class BootstrapResult:
    """What the portal and the hosted-UI stand-in need to know about the local pool."""

    pool_id: str
    issuer: str
    jwks_url_moto: str
    web_client_id: str
    web_client_secret: str
    api_client_id: str
    users: list[dict[str, Any]] = field(default_factory=list)


def cognito_issuer(region: str, pool_id: str) -> str:
    """The issuer Cognito (and moto) put in tokens: ``https://cognito-idp.<region>...``."""
    return f"https://cognito-idp.{region}.amazonaws.com/{pool_id}"


def secret_hash(client_secret: str, username: str, client_id: str) -> str:
    """Cognito's SECRET_HASH: base64(HMAC-SHA256(client_secret, username + client_id))."""
    digest = hmac.new(
        client_secret.encode("utf-8"), (username + client_id).encode("utf-8"), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode("ascii")


def cognito_client(moto_url: str, region: str) -> BaseClient:
    """A boto3 ``cognito-idp`` client for moto (dummy credentials; moto ignores them)."""
    # A session of its own: boto3's default session is not safe to share between threads.
    session = boto3.session.Session(
        aws_access_key_id=MOTO_ACCESS_KEY_ID,
        aws_secret_access_key=MOTO_SECRET_ACCESS_KEY,
        region_name=region,
    )
    return session.client(
        "cognito-idp",
        endpoint_url=moto_url,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}),
    )


def _find_pool_id(client: BaseClient, name: str) -> str | None:
    """The id of the first user pool called ``name``, if any."""
    for page in client.get_paginator("list_user_pools").paginate(MaxResults=60):
        for pool in page["UserPools"]:
            if pool["Name"] == name:
                return str(pool["Id"])
    return None


def _ensure_pool(client: BaseClient) -> str:
    """The id of the "gatehouse" user pool, created with email as an auto-verified attribute."""
    existing = _find_pool_id(client, POOL_NAME)
    if existing:
        return existing
    created = client.create_user_pool(PoolName=POOL_NAME, AutoVerifiedAttributes=["email"])
    return str(created["UserPool"]["Id"])


def _find_app_client_id(client: BaseClient, pool_id: str, name: str) -> str | None:
    """The id of the app client called ``name`` in the pool, if any."""
    pages = client.get_paginator("list_user_pool_clients").paginate(
        UserPoolId=pool_id, MaxResults=60
    )
    for page in pages:
        for app_client in page["UserPoolClients"]:
            if app_client["ClientName"] == name:
                return str(app_client["ClientId"])
    return None


def _ensure_app_client(
    client: BaseClient, pool_id: str, name: str, settings: dict[str, Any], *, secret: bool
) -> dict[str, Any]:
    """Create the app client, or bring an existing one's settings up to date; its description."""
    client_id = _find_app_client_id(client, pool_id, name)
    if client_id is None:
        created = client.create_user_pool_client(
            UserPoolId=pool_id, ClientName=name, GenerateSecret=secret, **settings
        )
        return dict(created["UserPoolClient"])
    current = client.describe_user_pool_client(UserPoolId=pool_id, ClientId=client_id)
    updated = client.update_user_pool_client(
        UserPoolId=pool_id,
        ClientId=client_id,
        ClientName=name,
        **_with_merged_urls(settings, current["UserPoolClient"]),
    )
    return dict(updated["UserPoolClient"])


def _with_merged_urls(settings: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """``settings`` whose URL lists also keep the URLs the client already has.

    Adding, never removing, lets several portals (the devstack, a test server) share one moto
    without one bootstrap locking the other out of the sign-in flow.
    """
    merged = dict(settings)
    for key in ("CallbackURLs", "LogoutURLs"):
        if key in settings:
            kept = [url for url in current.get(key) or [] if url not in settings[key]]
            merged[key] = [*settings[key], *kept]
    return merged


def _web_client_settings(
    callback_urls: Sequence[str], logout_urls: Sequence[str]
) -> dict[str, Any]:
    """Settings of the portal's confidential client: hosted-UI code flow plus password auth."""
    return {
        "AllowedOAuthFlows": ["code"],
        "AllowedOAuthScopes": list(OAUTH_SCOPES),
        "AllowedOAuthFlowsUserPoolClient": True,
        "CallbackURLs": list(callback_urls),
        "LogoutURLs": list(logout_urls),
        "SupportedIdentityProviders": ["COGNITO"],
        "ExplicitAuthFlows": list(AUTH_FLOWS),
    }


def _api_client_settings() -> dict[str, Any]:
    """Settings of the public client programs use to get API tokens with a password."""
    return {"ExplicitAuthFlows": list(AUTH_FLOWS)}


def _ensure_group(client: BaseClient, pool_id: str, group_name: str) -> None:
    """Create the group unless it exists."""
    try:
        client.get_group(UserPoolId=pool_id, GroupName=group_name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        client.create_group(UserPoolId=pool_id, GroupName=group_name)


def _user_sub(client: BaseClient, pool_id: str, username: str) -> str | None:
    """The user's ``sub``, or None when the user does not exist."""
    try:
        user = client.admin_get_user(UserPoolId=pool_id, Username=username)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "UserNotFoundException":
            raise
        return None
    attributes = {item["Name"]: item["Value"] for item in user["UserAttributes"]}
    return attributes.get("sub")


def _ensure_user(
    client: BaseClient, pool_id: str, user: DemoUser, groups: Iterable[str]
) -> dict[str, Any]:
    """Create the demo user (or find it), set its permanent password and group memberships."""
    sub = _user_sub(client, pool_id, user.username)
    if sub is None:
        client.admin_create_user(
            UserPoolId=pool_id,
            Username=user.username,
            UserAttributes=[
                {"Name": "email", "Value": user.email},
                {"Name": "email_verified", "Value": "true"},
                {"Name": "name", "Value": user.name},
            ],
            MessageAction="SUPPRESS",
        )
        sub = _user_sub(client, pool_id, user.username)
    # Setting the password again is harmless and leaves the account CONFIRMED, not FORCE_CHANGE.
    client.admin_set_user_password(
        UserPoolId=pool_id, Username=user.username, Password=user.password, Permanent=True
    )
    group_list = list(groups)
    for group_name in group_list:
        client.admin_add_user_to_group(
            UserPoolId=pool_id, Username=user.username, GroupName=group_name
        )
    return {
        "username": user.username,
        "password": user.password,
        "email": user.email,
        "name": user.name,
        "groups": group_list,
        "sub": sub,
    }


def bootstrap(
    *,
    moto_url: str,
    region: str,
    callback_urls: Sequence[str],
    logout_urls: Sequence[str],
    admin_group: str = DEFAULT_ADMIN_GROUP,
    users: Sequence[DemoUser] = DEMO_USERS,
) -> BootstrapResult:
    """Make sure moto holds the Gatehouse pool, clients, admin group and users; describe them."""
    client = cognito_client(moto_url, region)
    pool_id = _ensure_pool(client)
    _ensure_group(client, pool_id, admin_group)
    web = _ensure_app_client(
        client,
        pool_id,
        WEB_CLIENT_NAME,
        _web_client_settings(callback_urls, logout_urls),
        secret=True,
    )
    api = _ensure_app_client(client, pool_id, API_CLIENT_NAME, _api_client_settings(), secret=False)
    created_users = [
        _ensure_user(client, pool_id, user, [admin_group] if user.admin else []) for user in users
    ]
    return BootstrapResult(
        pool_id=pool_id,
        issuer=cognito_issuer(region, pool_id),
        jwks_url_moto=f"{moto_url.rstrip('/')}/{pool_id}/.well-known/jwks.json",
        web_client_id=str(web["ClientId"]),
        web_client_secret=str(web["ClientSecret"]),
        api_client_id=str(api["ClientId"]),
        users=created_users,
    )


def api_token(
    *,
    moto_url: str,
    region: str,
    client_id: str,
    username: str,
    password: str,
    client_secret: str | None = None,
) -> dict[str, Any]:
    """Sign in with USER_PASSWORD_AUTH and return Cognito's ``AuthenticationResult``.

    ``client_secret`` is only needed for a confidential client (it adds the SECRET_HASH).
    """
    parameters = {"USERNAME": username, "PASSWORD": password}
    if client_secret:
        parameters["SECRET_HASH"] = secret_hash(client_secret, username, client_id)
    answer = cognito_client(moto_url, region).initiate_auth(
        ClientId=client_id, AuthFlow="USER_PASSWORD_AUTH", AuthParameters=parameters
    )
    if "AuthenticationResult" not in answer:
        raise RuntimeError(f"Cognito asked for a challenge instead: {answer.get('ChallengeName')}")
    return dict(answer["AuthenticationResult"])
