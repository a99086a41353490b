"""Validators for AWS identifiers: account ids, role ARNs, bucket names, regions."""

from __future__ import annotations

import ipaddress
import re

from django.core.exceptions import ValidationError

ACCOUNT_ID = re.compile(r"^\d{12}$")
ROLE_ARN = re.compile(r"^arn:aws(?:-us-gov|-cn)?:iam::(\d{12}):role/[\w+=,.@/-]{1,512}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

# Regions where SageMaker is offered (commercial and GovCloud), kept here rather than asked of
# botocore at run time so that validation needs no AWS SDK and no network.
KNOWN_REGIONS = (
    "us-east-1", "us-east-2", "us-west-1", "us-west-2",
    "af-south-1",
    "ap-east-1", "ap-south-1", "ap-south-2", "ap-southeast-1", "ap-southeast-2",
    "ap-southeast-3", "ap-southeast-4", "ap-southeast-5", "ap-southeast-7",
    "ap-northeast-1", "ap-northeast-2", "ap-northeast-3",
    "ca-central-1", "ca-west-1",
    "eu-central-1", "eu-central-2", "eu-west-1", "eu-west-2", "eu-west-3",
    "eu-north-1", "eu-south-1", "eu-south-2",
    "il-central-1", "me-south-1", "me-central-1", "mx-central-1", "sa-east-1",
    "us-gov-west-1", "us-gov-east-1",
)  # fmt: skip
REGION_CHOICES = [(region, region) for region in KNOWN_REGIONS]


def validate_account_id(value: str) -> None:
    """Twelve digits, kept as a string: leading zeros are part of the id."""
    if not ACCOUNT_ID.match(value or ""):
        raise ValidationError("An AWS account id is exactly 12 digits.", code="invalid_account_id")


def role_arn_account(value: str) -> str | None:
    """The account id inside an IAM role ARN, or None when it is not a role ARN."""
    match = ROLE_ARN.match(value or "")
    return match.group(1) if match else None


def validate_role_arn(value: str) -> None:
    """An IAM role ARN: arn:aws:iam::<12 digits>:role/<name>."""
    if role_arn_account(value) is None:
        raise ValidationError(
            "Expected an IAM role ARN such as arn:aws:iam::111111111111:role/Name.",
            code="invalid_role_arn",
        )


def validate_bucket_name(value: str) -> None:
    """S3's bucket naming rules (3-63 chars, lowercase, digits, dots, hyphens; not an IP)."""
    if not BUCKET.match(value or "") or ".." in value or ".-" in value or "-." in value:
        raise ValidationError(
            "Not a valid S3 bucket name (3-63 lowercase letters, digits, dots and hyphens).",
            code="invalid_bucket",
        )
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return
    raise ValidationError(
        "An S3 bucket name may not look like an IP address.", code="invalid_bucket"
    )


def validate_region(value: str) -> None:
    """A region where SageMaker is offered."""
    if value not in KNOWN_REGIONS:
        raise ValidationError(f"Unknown AWS region {value!r}.", code="invalid_region")
