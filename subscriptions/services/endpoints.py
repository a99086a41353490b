"""Keeping each subscription's endpoint row in step with SageMaker (status and instance type)."""

from __future__ import annotations

import logging

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from accounts.services.aws_verification import account_access
from portal import aws_gateway
from portal.errors import NotPermitted
from subscriptions.models import Endpoint
from subscriptions.selectors import may_manage_subscription

logger = logging.getLogger(__name__)

# The status recorded when SageMaker has no endpoint of that name in the account.
STATUS_NOT_FOUND = "NotFound"
_ERROR_MAX = 500


def endpoint_sync(
    *, endpoint: Endpoint, acting_user: User | None = None, request: HttpRequest | None = None
) -> Endpoint:
    """Refresh status and instance type from DescribeEndpoint and DescribeEndpointConfig.

    With ``acting_user`` (the "sync" button) the caller must be a platform admin or an admin of the
    LOB, the AWS calls are attributed to them and the outcome is audited; without (the periodic
    task) the portal's default session name is used. A failure is recorded on the row
    (``sync_error``), not raised: an endpoint that vanished gets status ``NotFound``; a transient
    failure keeps the last known status.
    """
    subscription = endpoint.subscription
    lob = subscription.lob
    if acting_user is not None and not may_manage_subscription(acting_user, subscription):
        raise NotPermitted("Only platform admins and this LOB's admins may sync its endpoint.")
    session_name = (
        aws_gateway.session_name_for(acting_user)
        if acting_user is not None
        else aws_gateway.DEFAULT_SESSION_NAME
    )
    status, instance_type, error = endpoint.status, endpoint.instance_type, ""
    try:
        sagemaker = aws_gateway.client(
            "sagemaker",
            access=account_access(lob.aws_account),
            session_name=session_name,
            region=endpoint.region,
        )
        with aws_gateway.aws_errors():
            described = sagemaker.describe_endpoint(EndpointName=endpoint.name)
            status = described["EndpointStatus"]
            config = sagemaker.describe_endpoint_config(
                EndpointConfigName=described["EndpointConfigName"]
            )
        instance_type = _instance_types(config.get("ProductionVariants", []))
        if described.get("FailureReason"):
            error = str(described["FailureReason"])[:_ERROR_MAX]
    except aws_gateway.NotFound as exc:
        status, error = STATUS_NOT_FOUND, str(exc)[:_ERROR_MAX]
    except aws_gateway.AwsError as exc:
        error = str(exc)[:_ERROR_MAX]
        logger.warning(
            "Endpoint %s could not be synced: %s %s", endpoint.name, exc.code, exc.aws_code
        )
    endpoint.status = status
    endpoint.instance_type = instance_type
    endpoint.sync_error = error
    endpoint.synced_at = timezone.now()
    with transaction.atomic():
        endpoint.save(update_fields=["status", "instance_type", "sync_error", "synced_at"])
        if acting_user is not None:
            audit_record(
                action="endpoint.synced",
                outcome=AuditEvent.Outcome.FAILURE if error else AuditEvent.Outcome.SUCCESS,
                request=request,
                actor=acting_user,
                target_type="endpoint",
                target_id=endpoint.name,
                lob_slug=lob.slug,
                reason="sync_failed" if error else "",
                detail={"status": status, "instance_type": instance_type, "error": error},
            )
    return endpoint


def endpoint_sync_soon(endpoint: Endpoint) -> None:
    """Have a worker sync a new or re-pointed endpoint once the current transaction commits.

    Its health then shows within seconds of being added, not at the next periodic sync (five
    minutes by default). Robust: a broker away at that moment is logged, not raised — the change
    itself is committed by then, and the periodic sync catches up.
    """
    from subscriptions import tasks  # the tasks module imports this one

    endpoint_id = endpoint.pk
    transaction.on_commit(lambda: tasks.sync_endpoint.delay(endpoint_id), robust=True)


def _instance_types(variants: list[dict]) -> str:
    """The variants' instance types (``ml.m5.large``; several joined), or ``serverless``."""
    types = sorted({v["InstanceType"] for v in variants if v.get("InstanceType")})
    if types:
        return ", ".join(types)
    if any(v.get("ServerlessConfig") for v in variants):
        return "serverless"
    return ""
