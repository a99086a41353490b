"""What the job modules share: where a job's objects are in S3, the S3 client, a job task
enqueued after commit, streaming uploads, and the AWS failures worth trying again.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.db import transaction

from accounts.models import User
from accounts.services.aws_verification import account_access
from portal import aws_gateway
from subscriptions.models import Job, Subscription

logger = logging.getLogger(__name__)

# AWS failures that may pass (throttling, AWS unreachable, its 5xx): worth trying again.
TRANSIENT_AWS = (aws_gateway.Throttled, aws_gateway.Unreachable, aws_gateway.UpstreamError)


def job_prefix(subscription: Subscription, job_id: uuid.UUID | str) -> str:
    """``{prefix}{lob}/jobs/{job_id}/`` in the LOB account's results bucket."""
    account = subscription.lob.aws_account
    return f"{account.results_prefix}{subscription.lob.slug}/jobs/{job_id}/"


def part_key(job: Job, index: int) -> str:
    """The deterministic key of a chunk's output."""
    return f"{job_prefix(job.subscription, job.pk)}part-{index:05d}.jsonl"


def failed_part_key(job: Job, index: int) -> str:
    """The key of a failed chunk's error entries: not :func:`part_key`, which another run of the
    chunk may have written (and counted) meanwhile — the chunk's output_key names the one kept."""
    return f"{job_prefix(job.subscription, job.pk)}part-{index:05d}.failed.jsonl"


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``s3://bucket/key`` URI."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def s3_client(subscription: Subscription, principal: User | None) -> Any:
    """An S3 client in the subscription's LOB account, its session named for the principal."""
    session_name = (
        aws_gateway.session_name_for(principal)
        if principal is not None
        else aws_gateway.DEFAULT_SESSION_NAME
    )
    return aws_gateway.client(
        "s3", access=account_access(subscription.lob.aws_account), session_name=session_name
    )


def enqueue(name: str, *args: Any) -> None:
    """Enqueue a job task once the current transaction commits (at once outside one).

    Robust: the rows are committed by then, so a broker away at that moment (a Redis restart) is
    logged, not raised — a job just created must not answer 500 and lose its input; the
    reconciler enqueues whatever is missing once the job has stalled.
    """
    from subscriptions import tasks  # the tasks module imports this one

    task = getattr(tasks, name)
    transaction.on_commit(lambda: task.delay(*args), robust=True)


def upload(s3: Any, bucket: str, key: str, fileobj: Any, content_type: str) -> None:
    """Stream ``fileobj`` to S3 (in parts of 8 MB, a few at a time, never whole), encrypted."""
    with aws_gateway.aws_errors():
        s3.upload_fileobj(
            Fileobj=fileobj,
            Bucket=bucket,
            Key=key,
            ExtraArgs={"ContentType": content_type, "ServerSideEncryption": "AES256"},
            Config=aws_gateway.stream_upload_config(),
        )


def delete_quietly(s3: Any, bucket: str, key: str) -> None:
    """Delete an object; a failure is logged, not raised."""
    try:
        with aws_gateway.aws_errors():
            s3.delete_object(Bucket=bucket, Key=key)
    except aws_gateway.AwsError:
        logger.warning("Could not delete %s", key)
