"""Creates, in moto, the AWS resources an existing deployment would already have: the two
DynamoDB tables of the Studio-access architecture and each demo account's results bucket.

Stand-ins may use boto3 directly; the portal's own code reaches AWS only through
portal/aws_gateway.py.
"""

from __future__ import annotations

import boto3
from botocore.exceptions import ClientError

USERS_TABLE = "users-map-table"
LOBS_TABLE = "lobs-map-table"
DEMO_ACCOUNTS = ("111111111111", "222222222222")


def results_bucket(account_id: str) -> str:
    """The demo results bucket of an account."""
    return f"gatehouse-results-{account_id}"


def _client(service: str, moto_url: str, region: str, credentials: dict | None = None):
    credentials = credentials or {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    return boto3.client(service, region_name=region, endpoint_url=moto_url, **credentials)


def _account_credentials(moto_url: str, region: str, account_id: str) -> dict:
    """Credentials in that account (moto's STS gives the role's account to its sessions)."""
    sts = _client("sts", moto_url, region)
    role = f"arn:aws:iam::{account_id}:role/GatehouseInvokeRole"
    creds = sts.assume_role(RoleArn=role, RoleSessionName="devstack")["Credentials"]
    return {
        "aws_access_key_id": creds["AccessKeyId"],
        "aws_secret_access_key": creds["SecretAccessKey"],
        "aws_session_token": creds["SessionToken"],
    }


def ensure_tables(moto_url: str, region: str) -> None:
    """The users→LOB and LOB→account tables, keyed by PK (string), as the reference deploys."""
    dynamodb = _client("dynamodb", moto_url, region)
    for table in (USERS_TABLE, LOBS_TABLE):
        try:
            dynamodb.create_table(
                TableName=table,
                KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise


def ensure_results_buckets(moto_url: str, region: str, accounts=DEMO_ACCOUNTS) -> None:
    """One results bucket per demo account, created inside that account."""
    for account_id in accounts:
        s3 = _client("s3", moto_url, region, _account_credentials(moto_url, region, account_id))
        try:
            s3.create_bucket(Bucket=results_bucket(account_id))
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in (
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            ):
                raise


def ensure_sagemaker_endpoints(moto_url: str, region: str, endpoints: dict[str, str]) -> None:
    """The SageMaker endpoint (model, config, endpoint) of each subscription, in its account.

    moto answers the control plane (DescribeEndpoint: InService); invocations go to the runtime
    stand-in, which forwards them to the local model container.
    """
    for endpoint, account_id in endpoints.items():
        sagemaker = _client(
            "sagemaker", moto_url, region, _account_credentials(moto_url, region, account_id)
        )
        existing = sagemaker.list_endpoints(NameContains=endpoint)["Endpoints"]
        if any(item["EndpointName"] == endpoint for item in existing):
            continue
        sagemaker.create_model(
            ModelName=endpoint,
            ExecutionRoleArn=f"arn:aws:iam::{account_id}:role/SageMakerExecutionRole",
            PrimaryContainer={"Image": "identity-transcoder:local"},
            EnableNetworkIsolation=True,
        )
        sagemaker.create_endpoint_config(
            EndpointConfigName=endpoint,
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": endpoint,
                    "InitialInstanceCount": 1,
                    "InstanceType": "ml.m5.large",
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName=endpoint, EndpointConfigName=endpoint)


def bootstrap_aws(moto_url: str, region: str, endpoints: dict[str, str]) -> None:
    """Everything above, idempotently."""
    ensure_tables(moto_url, region)
    ensure_results_buckets(moto_url, region)
    ensure_sagemaker_endpoints(moto_url, region, endpoints)
