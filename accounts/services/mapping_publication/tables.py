"""Where the mapping tables are, and the DynamoDB calls on them.

The tables' location (read from settings at call time), the low-level client for them, the
one-item write (PutItem or DeleteItem), the full Scan and :class:`MappingTableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from accounts.models import MappingOutbox
from accounts.services.mapping_publication.attributes import marshal_item, unmarshal_item
from accounts.validators import role_arn_account
from portal.aws_gateway import AccountAccess, AwsError, NotFound, aws_errors, client

# A botocore DynamoDB client, as the gateway hands it out (only the gateway may import botocore).
DynamoDBClient = Any

# CloudTrail shows the publisher's writes under this session name when a role is assumed.
SESSION_NAME = "gatehouse-mapping-publisher"


class MappingTableError(Exception):
    """A mapping table could not be read or written; the message names the table and where it is."""

    def __init__(self, *, table: str, where: str, error: AwsError) -> None:
        if isinstance(error, NotFound):
            message = f"DynamoDB table {table} was not found in {where} ({error})"
        else:
            message = f"DynamoDB table {table} in {where}: {error}"
        super().__init__(message)
        self.table = table
        self.error = error


@dataclass(frozen=True)
class _Target:
    """The tables' location, read from settings at call time."""

    users_table: str
    lobs_table: str
    region: str
    endpoint_url: str
    access: AccountAccess | None

    def describe(self) -> str:
        if self.access is not None:
            where = f"account {self.access.account_id} (role {self.access.role_arn})"
        else:
            where = "the portal's own AWS account"
        where += f", region {self.region}"
        endpoint = self.endpoint_url or settings.AWS_ENDPOINT_URL
        if endpoint:
            # Host only: a URL's path or query could carry something that must not be printed.
            where += f", endpoint {urlsplit(endpoint).netloc or endpoint}"
        return where


def _target() -> _Target:
    region = settings.DYNAMODB_REGION or settings.AWS_REGION
    endpoint_url = settings.DYNAMODB_ENDPOINT_URL
    role_arn = settings.DYNAMODB_ROLE_ARN
    access = None
    if role_arn:
        account_id = role_arn_account(role_arn)
        if account_id is None:
            raise ImproperlyConfigured(f"DYNAMODB_ROLE_ARN is not an IAM role ARN: {role_arn!r}")
        access = AccountAccess(
            account_id=account_id,
            region=region,
            role_arn=role_arn,
            external_id=settings.DYNAMODB_EXTERNAL_ID,
            endpoint_urls={"dynamodb": endpoint_url} if endpoint_url else {},
        )
    return _Target(
        users_table=settings.DYNAMODB_USERS_TABLE,
        lobs_table=settings.DYNAMODB_LOBS_TABLE,
        region=region,
        endpoint_url=endpoint_url,
        access=access,
    )


def mapping_tables_description() -> str:
    """Human-readable: which tables, in which account and region (for messages and commands)."""
    target = _target()
    return f"{target.users_table} and {target.lobs_table} in {target.describe()}"


def _dynamodb(target: _Target) -> DynamoDBClient:
    """The low-level DynamoDB client for the tables (may raise AwsError when AssumeRole fails)."""
    if target.access is not None:
        return client("dynamodb", access=target.access, session_name=SESSION_NAME)
    return client("dynamodb", region=target.region, endpoint_url=target.endpoint_url or None)


def _table_for(kind: str, target: _Target) -> str:
    return target.users_table if kind == MappingOutbox.Kind.USER else target.lobs_table


def _write(dynamodb: DynamoDBClient, *, table: str, key: str, item: dict[str, Any] | None) -> None:
    """PutItem of the desired item, or DeleteItem when there is none (raises AwsError)."""
    with aws_errors():
        if item is None:
            dynamodb.delete_item(TableName=table, Key={"PK": {"S": key}})
        else:
            dynamodb.put_item(TableName=table, Item=marshal_item(item))


def _scan(dynamodb: DynamoDBClient, *, table: str, where: str) -> dict[str, dict[str, Any]]:
    """Every item of the table by PK (a full, consistent, paginated Scan)."""
    items: dict[str, dict[str, Any]] = {}
    try:
        with aws_errors():
            for page in dynamodb.get_paginator("scan").paginate(
                TableName=table, ConsistentRead=True
            ):
                for raw in page.get("Items", []):
                    item = unmarshal_item(raw)
                    if isinstance(item.get("PK"), str):
                        items[item["PK"]] = item
    except AwsError as exc:
        raise MappingTableError(table=table, where=where, error=exc) from exc
    return items


def _connect(target: _Target) -> DynamoDBClient:
    try:
        return _dynamodb(target)
    except AwsError as exc:
        raise MappingTableError(
            table=f"{target.users_table}/{target.lobs_table}", where=target.describe(), error=exc
        ) from exc
