"""The final step of a job, once every chunk is done: its parts merged into one output, the
manifest, and the job's final status.
"""

from __future__ import annotations

import json
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from django.db import transaction

from accounts.models import AuditEvent
from portal import aws_gateway
from subscriptions.models import Job, JobChunk
from subscriptions.services.job_input import JSONLINES
from subscriptions.services.jobs.common import (
    TRANSIENT_AWS,
    delete_quietly,
    job_prefix,
    s3_client,
    upload,
)
from subscriptions.services.jobs.lifecycle import job_end, job_stop

# Parts fetched ahead while the merge uploads: S3 is waited for once per few parts, not per part.
_PARTS_AHEAD = 4


class _PartsReader:
    """The job's parts, one after the other, as one file-like object.

    Streamed: it holds the part being read and at most :data:`_PARTS_AHEAD` parts fetched ahead
    (each one chunk's output), never the whole output.
    """

    def __init__(self, s3: Any, bucket: str, keys: list[str]) -> None:
        self._s3, self._bucket, self._keys = s3, bucket, iter(keys)
        self._pool = ThreadPoolExecutor(max_workers=_PARTS_AHEAD, thread_name_prefix="job-parts")
        self._ahead: deque[Future[bytes]] = deque()
        self._part = b""
        self._offset = 0
        self._fetch_ahead()

    def _get(self, key: str) -> bytes:
        with aws_gateway.aws_errors():
            return self._s3.get_object(Bucket=self._bucket, Key=key)["Body"].read()

    def _fetch_ahead(self) -> None:
        while len(self._ahead) < _PARTS_AHEAD:
            key = next(self._keys, None)
            if key is None:
                return
            self._ahead.append(self._pool.submit(self._get, key))

    def read(self, size: int = -1) -> bytes:
        # s3transfer takes a short read for the end of the stream: fill ``size`` across parts.
        wanted = size if size and size > 0 else None
        pieces: list[bytes] = []
        count = 0
        while wanted is None or count < wanted:
            if self._offset >= len(self._part):
                if not self._ahead:
                    break
                self._part, self._offset = self._ahead.popleft().result(), 0
                self._fetch_ahead()
                continue
            end = len(self._part) if wanted is None else self._offset + wanted - count
            piece = self._part[self._offset : end]
            self._offset += len(piece)
            count += len(piece)
            pieces.append(piece)
        return b"".join(pieces)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _output_not_written(job_id: str, what: str, exc: aws_gateway.AwsError) -> None:
    """A write of the final step failed: raised again when it is worth trying again (the task
    retries with backoff), else the job fails — trying again would change nothing, and the job
    must not stay "running" and be merged again every stall period for ever."""
    if isinstance(exc, TRANSIENT_AWS):
        raise exc
    job_stop(
        job_id=job_id,
        code="output_not_written",
        message=f"The {what} could not be written: {exc}",
        outcome=AuditEvent.Outcome.FAILURE,
    )


def job_finalize(*, job_id: str) -> None:
    """Once every chunk is done: the merged output, the manifest, and the final status."""
    job = (
        Job.objects.select_related("subscription__lob__aws_account", "submitted_by")
        .filter(pk=job_id)
        .first()
    )
    if job is None or job.status != Job.Status.RUNNING:
        return
    # Without their record errors: a 1 GB job has thousands of chunks, and the merge needs none.
    chunks = list(job.chunks.defer("record_errors").order_by("index"))
    if any(chunk.status == JobChunk.Status.PENDING for chunk in chunks):
        return
    account = job.subscription.lob.aws_account
    prefix = job_prefix(job.subscription, job.pk)
    s3 = s3_client(job.subscription, job.submitted_by)
    output_key, manifest_key = f"{prefix}output.jsonl", f"{prefix}manifest.json"
    keys = [chunk.output_key for chunk in chunks if chunk.output_key]
    parts = _PartsReader(s3, account.results_bucket, keys)
    try:
        upload(s3, account.results_bucket, output_key, parts, JSONLINES)
    except aws_gateway.AwsError as exc:
        # A part gone (deleted, expired by a lifecycle rule) or access lost.
        _output_not_written(job_id, "merged output", exc)
        return
    finally:
        parts.close()
    failed_chunks = [chunk for chunk in chunks if chunk.status == JobChunk.Status.FAILED]
    job.refresh_from_db()
    if failed_chunks:
        status, code = Job.Status.FAILED, "chunks_failed"
        message = f"{len(failed_chunks)} chunk(s) failed; first: {failed_chunks[0].error}"
    elif job.records_failed >= job.records_total:
        status, code, message = (
            Job.Status.FAILED,
            "all_records_rejected",
            "The model rejected every record.",
        )
    elif job.records_failed:
        status, code, message = Job.Status.PARTIALLY_SUCCEEDED, "", ""
    else:
        status, code, message = Job.Status.SUCCEEDED, "", ""
    manifest = {
        "job_id": str(job.pk),
        "subscription_id": job.subscription_id,
        "lob": job.subscription.lob.slug,
        "content_type": job.content_type,
        "input_uri": job.input_uri,
        "output_uri": f"s3://{account.results_bucket}/{output_key}",
        "status": status,
        "records_total": job.records_total,
        "records_failed": job.records_failed,
        "parts": [
            {
                "index": chunk.index,
                "key": chunk.output_key,
                "status": chunk.status,
                "first_line": chunk.first_line,
                "first_record": chunk.first_record,
                "records": chunk.record_count,
                "records_failed": chunk.records_failed,
            }
            for chunk in chunks
        ],
    }
    # The manifest is written under the row lock: a cancel (or a stop) during the merge either
    # waits for it and finds the job finished, or ends the job first, and then no manifest says
    # otherwise and its merged output goes (unless another finalize ended the job with it).
    with transaction.atomic():
        locked = Job.objects.select_for_update().filter(pk=job_id).first()
        if locked is None or locked.status != Job.Status.RUNNING:
            if locked is not None and not locked.output_uri:
                delete_quietly(s3, account.results_bucket, output_key)
            return
        try:
            with aws_gateway.aws_errors():
                s3.put_object(
                    Bucket=account.results_bucket,
                    Key=manifest_key,
                    Body=json.dumps(manifest, indent=1).encode(),
                    ContentType="application/json",
                    ServerSideEncryption="AES256",
                )
        except aws_gateway.AwsError as exc:
            # Access lost, a bucket policy refusing the key...
            _output_not_written(job_id, "manifest", exc)
            delete_quietly(s3, account.results_bucket, output_key)
            return
        locked.output_uri = f"s3://{account.results_bucket}/{output_key}"
        locked.manifest_uri = f"s3://{account.results_bucket}/{manifest_key}"
        locked.save(update_fields=["output_uri", "manifest_uri"])
        job_end(locked, status=status, code=code, message=message)
