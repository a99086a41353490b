"""Submitting a job: its input checked and stored while it is scanned into chunks, the job and
its chunks created in one transaction (started after commit), a repeated Idempotency-Key
answered with the earlier job.
"""

from __future__ import annotations

import uuid
from typing import BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from portal import aws_gateway
from portal.errors import Conflict, NotPermitted, ServiceError
from subscriptions.errors import UnsupportedContentType, UpstreamFailure
from subscriptions.models import Job, JobChunk, Subscription
from subscriptions.services.access import invoke_permission_check
from subscriptions.services.job_input import (
    JOB_CONTENT_TYPES,
    InputRejected,
    InputScanner,
    InputTooLarge,
)
from subscriptions.services.jobs.common import (
    delete_quietly,
    enqueue,
    job_prefix,
    s3_client,
    split_uri,
    upload,
)
from subscriptions.services.proxy import media_type_of


def _job_media_type(subscription: Subscription, content_type: str) -> str:
    media_type = media_type_of(content_type)
    accepted = [t for t in subscription.listing.content_types or [] if t in JOB_CONTENT_TYPES]
    if media_type not in accepted:
        raise UnsupportedContentType(
            f"Jobs of {subscription.listing.name} take {' or '.join(accepted) or 'no file type'}, "
            f"not {media_type or 'a file without a content type'}."
        )
    return media_type


def _input_location(subscription: Subscription, input_uri: str) -> tuple[str, str]:
    """(bucket, key) of an ``input_uri`` inside the LOB's own results location, else 403."""
    account = subscription.lob.aws_account
    bucket, key = split_uri(input_uri or "")
    lob_prefix = f"{account.results_prefix}{subscription.lob.slug}/"
    if (
        not input_uri.startswith("s3://")
        or bucket != account.results_bucket
        or not key.startswith(lob_prefix)
        or ".." in key.split("/")
        or key.endswith("/")
    ):
        raise NotPermitted(
            f"input_uri must name an object under s3://{account.results_bucket}/{lob_prefix}.",
            code="input_outside_lob",
        )
    return bucket, key


def job_submit(
    *,
    subscription: Subscription,
    principal: User,
    content_type: str,
    file: BinaryIO | None = None,
    input_uri: str = "",
    idempotency_key: str = "",
    request: HttpRequest | None = None,
) -> tuple[Job, bool]:
    """Validate and store a job's input, create the job and its chunks, start it after commit.

    Returns (job, created): a repeated ``idempotency_key`` returns the submitter's earlier job.
    Refusals: 403 ``not_a_member``/``may_not_invoke``/``subscription_inactive``/
    ``input_outside_lob``, 415 ``unsupported_content_type``, 413 ``input_too_large``, 400
    ``empty_input``/``no_header``/``wrong_delimiter``/``invalid_encoding``/``line_too_long``/
    ``unclosed_quote``/``invalid_jsonlines``/``input_not_found``; nothing is left behind.
    """
    idempotency_key = (idempotency_key or "").strip()
    try:
        if len(idempotency_key) > 128:
            raise ServiceError("Idempotency-Key is at most 128 characters.", code="invalid")
        if not idempotency_key.isprintable():  # NUL (which PostgreSQL cannot compare), controls
            raise ServiceError("Idempotency-Key holds a control character.", code="invalid")
        existing = _job_for_key(principal, idempotency_key, subscription)
        if existing is not None:
            return existing, False
        invoke_permission_check(principal=principal, subscription=subscription)
        media_type = _job_media_type(subscription, content_type)
        if (file is None) == (not input_uri):
            raise ServiceError("Send either a file or an input_uri.", code="invalid")
        try:
            job = _job_create(
                subscription=subscription,
                principal=principal,
                media_type=media_type,
                file=file,
                input_uri=input_uri,
                idempotency_key=idempotency_key,
            )
        except _Reused as reused:  # the same Idempotency-Key at the same time: the other won
            return reused.job, False
    except ServiceError as exc:
        audit_record(
            action="job.submitted",
            outcome=AuditEvent.Outcome.REFUSED if exc.status < 500 else AuditEvent.Outcome.FAILURE,
            request=request,
            actor=principal,
            target_type="subscription",
            target_id=str(subscription.pk),
            lob_slug=subscription.lob.slug,
            reason=exc.code,
            detail={"message": str(exc)[:300]},
        )
        raise
    return job, True


def _job_for_key(principal: User, key: str, subscription: Subscription) -> Job | None:
    if not key:
        return None
    job = Job.objects.filter(submitted_by=principal, idempotency_key=key).first()
    if job is not None and job.subscription_id != subscription.pk:
        raise Conflict(
            "That Idempotency-Key was used for a job of another subscription.",
            code="idempotency_key_reused",
        )
    return job


def _job_create(
    *,
    subscription: Subscription,
    principal: User,
    media_type: str,
    file: BinaryIO | None,
    input_uri: str,
    idempotency_key: str,
) -> Job:
    account = subscription.lob.aws_account
    job_id = uuid.uuid4()
    input_key = f"{job_prefix(subscription, job_id)}input"
    s3 = s3_client(subscription, principal)
    limit = settings.JOBS_MAX_INPUT_BYTES
    size = getattr(file, "size", None)
    if isinstance(size, int) and size > limit:
        raise InputTooLarge(f"The input is over the {limit // (1024 * 1024)} MB a job accepts.")
    if input_uri:
        bucket, key = _input_location(subscription, input_uri)
        try:
            with aws_gateway.aws_errors():
                source = s3.get_object(Bucket=bucket, Key=key)["Body"]
        except aws_gateway.NotFound as exc:
            raise InputRejected("No object at input_uri.", code="input_not_found") from exc
        except aws_gateway.AwsError as exc:
            raise UpstreamFailure(f"The input object cannot be read: {exc}") from exc
    else:
        source = file
    scanner = InputScanner(
        source=source,
        media_type=media_type,
        records_per_chunk=max(settings.JOBS_RECORDS_PER_CHUNK, 1),
        max_chunk_bytes=settings.JOBS_MAX_CHUNK_BYTES,
        max_line_bytes=settings.JOBS_MAX_LINE_BYTES,
        max_total_bytes=limit,
    )
    try:
        try:
            upload(s3, account.results_bucket, input_key, scanner, media_type)
        except aws_gateway.AwsError as exc:
            raise UpstreamFailure(f"The input could not be stored: {exc}") from exc
        scanner.finish()
        return _job_rows(
            job_id=job_id,
            subscription=subscription,
            principal=principal,
            media_type=media_type,
            scanner=scanner,
            input_uri=f"s3://{account.results_bucket}/{input_key}",
            idempotency_key=idempotency_key,
        )
    except BaseException:
        delete_quietly(s3, account.results_bucket, input_key)
        raise


def _job_rows(
    *,
    job_id: uuid.UUID,
    subscription: Subscription,
    principal: User,
    media_type: str,
    scanner: InputScanner,
    input_uri: str,
    idempotency_key: str,
) -> Job:
    now = timezone.now()
    try:
        with transaction.atomic():
            job = Job.objects.create(
                id=job_id,
                subscription=subscription,
                submitted_by=principal,
                content_type=media_type,
                csv_header=scanner.csv_header,
                input_uri=input_uri,
                input_bytes=scanner.bytes_total,
                records_total=scanner.records_total,
                chunks_total=len(scanner.chunks),
                idempotency_key=idempotency_key,
                created_at=now,
                last_progress_at=now,
            )
            JobChunk.objects.bulk_create(
                [
                    JobChunk(
                        job=job,
                        index=spec.index,
                        first_line=spec.first_line,
                        first_record=spec.first_record,
                        byte_offset=spec.byte_offset,
                        byte_length=spec.byte_length,
                        record_count=spec.record_count,
                    )
                    for spec in scanner.chunks
                ],
                batch_size=1000,
            )
            audit_record(
                action="job.submitted",
                outcome=AuditEvent.Outcome.SUCCESS,
                actor=principal,
                target_type="job",
                target_id=str(job.pk),
                lob_slug=subscription.lob.slug,
                detail={
                    "subscription_id": subscription.pk,
                    "content_type": media_type,
                    "records": scanner.records_total,
                    "chunks": len(scanner.chunks),
                    "bytes": scanner.bytes_total,
                    "input_uri": input_uri,
                },
            )
            enqueue("job_start", str(job.pk))
    except IntegrityError:
        # Two submissions with one Idempotency-Key at once: the other one won.
        earlier = _job_for_key(principal, idempotency_key, subscription)
        if earlier is None:
            raise
        raise _Reused(earlier) from None
    return job


class _Reused(Exception):
    def __init__(self, job: Job) -> None:
        super().__init__(str(job.pk))
        self.job = job
