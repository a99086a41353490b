"""Reading jobs, scoped to the user: the jobs visible, one job, its first record errors, its
results so far and a download URL of its merged output.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from portal import aws_gateway
from portal.errors import Conflict, NotFoundError
from subscriptions import selectors
from subscriptions.models import Job
from subscriptions.services import job_input
from subscriptions.services.jobs.common import s3_client, split_uri

_ERRORS_PREVIEW = 20


def jobs_visible_to(user: User) -> QuerySet[Job]:
    """Jobs of the subscriptions the user may read (the subscriptions' tenancy rule)."""
    visible = selectors.subscriptions_visible_to(user).order_by().values("pk")
    return Job.objects.select_related(
        "subscription__lob__aws_account", "subscription__listing", "submitted_by"
    ).filter(subscription__in=visible)


def job_for_member(user: User, job_id: uuid.UUID | str) -> Job:
    """One job the user may read; NotFoundError (404) if missing or another LOB's."""
    try:
        pk = uuid.UUID(str(job_id))
    except ValueError:
        pk = None
    job = jobs_visible_to(user).filter(pk=pk).first() if pk is not None else None
    if job is None:
        raise NotFoundError("No job with that id.", code="not_found")
    return job


def job_record_errors(job: Job, limit: int = _ERRORS_PREVIEW) -> list[dict[str, Any]]:
    """The first record errors of a job, in input order: ``{"record", "line", "error"}``."""
    errors: list[dict[str, Any]] = []
    chunks = job.chunks.filter(records_failed__gt=0).order_by("index")
    for record_errors in chunks.values_list("record_errors", flat=True):
        errors.extend(record_errors[: limit - len(errors)])
        if len(errors) >= limit:
            break
    return errors


def job_results(*, job: Job, principal: User, offset: int, limit: int) -> tuple[int, list[dict]]:
    """(records with output so far, the records [offset, offset+limit) of the parts, in order)."""
    chunks = list(
        job.chunks.exclude(output_key="")
        .order_by("index")
        .values_list("output_key", "first_record", "record_count")
    )
    available = sum(count for _, _, count in chunks)
    bucket = job.subscription.lob.aws_account.results_bucket
    s3 = s3_client(job.subscription, principal)
    results: list[dict] = []
    seen = 0
    for key, _first_record, count in chunks:
        if len(results) >= limit:
            break
        if seen + count <= offset:
            seen += count
            continue
        with aws_gateway.aws_errors():
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        entries = job_input.part_lines(body)
        start = max(offset - seen, 0)
        results.extend(entries[start : start + limit - len(results)])
        seen += count
    return available, results


def job_download_url(*, job: Job, principal: User, request: HttpRequest | None = None) -> str:
    """A short-lived presigned URL of the job's merged output (members of its LOB only)."""
    if not job.output_uri:
        raise Conflict("The job has no merged output yet.", code="not_ready")
    bucket, key = split_uri(job.output_uri)
    expires = settings.JOBS_DOWNLOAD_URL_EXPIRES_SECONDS
    with aws_gateway.aws_errors():
        url = s3_client(job.subscription, principal).generate_presigned_url(
            "get_object",
            Params={
                "Bucket": bucket,
                "Key": key,
                "ResponseContentDisposition": f'attachment; filename="job-{job.pk}.jsonl"',
            },
            ExpiresIn=expires,
        )
    audit_record(
        action="job.downloaded",
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=principal,
        target_type="job",
        target_id=str(job.pk),
        lob_slug=job.subscription.lob.slug,
        detail={"output_uri": job.output_uri, "expires_in": expires},
    )
    return url
