"""A chunk's records in and its part out: the records read back from the input object, the
model's answer made part lines (input record numbers and lines, rejections counted), the part
written to S3.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from accounts.models import User
from portal import aws_gateway
from subscriptions.errors import ModelFailed
from subscriptions.models import Job, JobChunk
from subscriptions.services import job_input
from subscriptions.services.job_input import JSONLINES
from subscriptions.services.jobs.common import s3_client, split_uri


@dataclass(frozen=True)
class _ChunkOutput:
    body: bytes
    records_failed: int
    record_errors: list[dict[str, Any]]


def chunk_input(job: Job, chunk: JobChunk, principal: User | None) -> job_input.ChunkRecords:
    """The chunk's records, read back from the input object with one ranged GET."""
    bucket, key = split_uri(job.input_uri)
    first, last = chunk.byte_offset, chunk.byte_offset + chunk.byte_length - 1
    with aws_gateway.aws_errors():
        answer = s3_client(job.subscription, principal).get_object(
            Bucket=bucket, Key=key, Range=f"bytes={first}-{last}"
        )
        data = answer["Body"].read()
    return job_input.chunk_records(
        data=data,
        media_type=job.content_type,
        csv_header=job.csv_header,
        first_line=chunk.first_line,
    )


_MODEL_RECORD_PREFIX = '{"record":'


def _entry_line(record: int, line: int, result: dict[str, Any]) -> str:
    """``{"record", "line", ...the model's other keys}`` encoded from the parsed result."""
    entry = {"record": record, "line": line}
    entry.update((k, v) for k, v in result.items() if k not in ("record", "line"))
    return json.dumps(entry, separators=(",", ":"))


def chunk_output(chunk: JobChunk, records: job_input.ChunkRecords, answer: bytes) -> _ChunkOutput:
    """The model's answer with input record numbers and lines; its rejections counted."""
    return chunk_output_of(chunk, records, job_input.answer_lines(answer))


def chunk_output_of(
    chunk: JobChunk,
    records: job_input.ChunkRecords,
    results: Iterable[tuple[str, dict[str, Any]]],
) -> _ChunkOutput:
    """The model's results (line text, object) with input record numbers and lines; its
    rejections counted.

    Each part line is ``{"record", "line", ...the model's other keys}``. Most models (the
    transcoder among them) answer ``{"record":<n>,...}`` compactly: the rest of the model's own
    text is then kept as it is, which costs a fraction of encoding the parsed object again. Anything
    else — a "line" key, "record" not first or written twice, spaces — is encoded from the parsed
    object. One pass, for every record of a job: the parse and the part line share the loop.
    """
    lines: list[str] = []
    errors: list[dict[str, Any]] = []
    append, numbers, first = lines.append, records.lines, chunk.first_record
    prefix, skip = _MODEL_RECORD_PREFIX, len(_MODEL_RECORD_PREFIX)
    position = 0
    for text, result in results:
        if position >= len(numbers):
            position += 1
            continue  # more results than records: refused below, once counted
        record, line = first + position, numbers[position]
        position += 1
        if "error" in result:
            errors.append({"record": record, "line": line, "error": result["error"]})
        if text.startswith(prefix) and "line" not in result:
            comma = text.find(",", skip)
            # Between the prefix and the first comma a valid line can only hold a number; no
            # second '"record"' after it means no second "record" key (a string holding it only
            # takes the slow way).
            if comma > skip and text[skip:comma].isdigit() and text.find('"record"', comma) < 0:
                append(f'{{"record":{record},"line":{line},{text[comma + 1 :]}')
                continue
        append(_entry_line(record, line, result))
    if position != len(numbers):
        raise ModelFailed(
            f"The model answered {position} results for {len(numbers)} records.",
            code="output_mismatch",
        )
    append("")
    return _ChunkOutput(
        body="\n".join(lines).encode(), records_failed=len(errors), record_errors=errors
    )


def put_part(job: Job, key: str, principal: User | None, body: bytes) -> None:
    """Write a chunk's part (JSON lines, encrypted) to the LOB's results bucket."""
    account = job.subscription.lob.aws_account
    with aws_gateway.aws_errors():
        s3_client(job.subscription, principal).put_object(
            Bucket=account.results_bucket,
            Key=key,
            Body=body,
            ContentType=JSONLINES,
            ServerSideEncryption="AES256",
        )
