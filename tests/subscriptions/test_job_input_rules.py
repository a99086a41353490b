"""Where a job's records begin and end: the portal's scanner and chunk reader must cut a file into
the same records as the model's own parser, or one odd line fails every record of its chunk
("the model answered 2 results for 3 records"). Odd lines are either refused at submit with
their line number, or become one record each (and, if the model rejects them, one error entry)."""

from __future__ import annotations

import csv
import dataclasses
import io
import random

import pytest

from accounts.models import AuditEvent
from subscriptions.models import Job, JobChunk
from subscriptions.services import job_input, jobs
from tests.subscriptions.conftest import ProxyWorld
from tests.subscriptions.test_job_pages import client_for
from tests.subscriptions.test_jobs import jobs_world, s3_keys, s3_lines, submit


@pytest.fixture
def world(proxy: ProxyWorld, eager: None, settings) -> ProxyWorld:
    return jobs_world(proxy, settings)


def _upload(data: bytes, name: str = "input.csv") -> io.BytesIO:
    upload = io.BytesIO(data)
    upload.name = name
    return upload


def _job(world: ProxyWorld, capture, data: bytes, name: str = "input.csv") -> Job:
    response = submit(world, _upload(data, name), capture=capture)
    assert response.status_code == 202, response.content
    return Job.objects.get(pk=response.json()["id"])


def _records_and_errors(world: ProxyWorld, job: Job) -> list[tuple[int, int, str | None]]:
    return [(e["record"], e["line"], e.get("error")) for e in s3_lines(world, job.output_uri)]


# --- The csv module's rules, line by line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "in_quotes", "expected"),
    [
        (b"a,b\n", False, (False, False)),
        (b'a,"b\n', False, (True, False)),  # a quoted field goes on to the next line
        (b'x" more,c\n', True, (False, False)),  # ... and ends on it
        (b'O"Brien,5" tall\n', False, (False, False)),  # quotes inside unquoted fields: text
        (b' "a,b\n', False, (False, False)),  # not the field's first character: text
        (b'"a""b",c\n', False, (False, False)),  # "" inside a quoted field
        (b'"""\n', False, (True, False)),
        (b'"a"b,"c\n', False, (True, False)),  # text after a closing quote, then a new field
        (b"a,b\r\n", False, (False, False)),  # CRLF
        (b'a,"x\ry"\n', False, (False, False)),  # a CR inside quotes is data
        (b"a,x\ry\n", False, (False, True)),  # a CR outside quotes ends the row for csv
        (b'"a\r"x\ry\n', False, (False, True)),
    ],
)
def test_csv_line_state_follows_the_csv_module(line: bytes, in_quotes: bool, expected) -> None:
    assert job_input.csv_line_state(line, in_quotes=in_quotes) == expected


def _records_by_scanner(data: bytes) -> list[str]:
    """The scanner's records (header first) as the csv module reads each of them."""
    scanner = job_input.InputScanner(
        source=io.BytesIO(data),
        media_type=job_input.CSV,
        records_per_chunk=3,
        max_chunk_bytes=10**6,
        max_line_bytes=10**6,
        max_total_bytes=10**7,
    )
    while scanner.read(7):
        pass
    rows = [scanner.csv_header.rstrip("\n")]
    for chunk in scanner.chunks:
        part = data[chunk.byte_offset : chunk.byte_offset + chunk.byte_length]
        found = job_input.chunk_records(
            data=part, media_type=job_input.CSV, csv_header="", first_line=chunk.first_line
        )
        records = list(csv.reader(io.StringIO(found.payload.decode(), newline="")))
        assert len(records) == chunk.record_count == len(found.lines)
        # ... and the payload cuts back into the same records (to send them in smaller groups)
        each = job_input.payload_records(found.payload, media_type=job_input.CSV, csv_header="")
        assert len(each) == chunk.record_count and b"".join(each) == found.payload
        rows.extend(",".join(record) for record in records)
    return rows


def test_records_are_the_rows_the_csv_module_reads_in_random_files() -> None:
    random.seed(2026)
    cells = ["a", "b@example.com", '"q"', '"x,y"', '"l1\nl2"', '"say ""hi"""', 'O"Brien', "", " "]
    for _ in range(300):
        lines = ["email,note"]
        for _ in range(random.randint(1, 12)):
            lines.append(",".join(random.choice(cells) for _ in range(random.randint(1, 3))))
            if random.random() < 0.2:
                lines.append("")  # a blank line: not a record, for either
        eol = random.choice(["\n", "\r\n"])
        data = eol.join(lines).encode() + random.choice([b"", eol.encode()])
        # The csv module reads a line of spaces as a record; the portal leaves it out as blank
        # (and so never sends it to the model).
        expected = [
            ",".join(row)
            for row in csv.reader(io.StringIO(data.decode(), newline=""))
            if row and row != [" "]
        ]
        if len(expected) == 1:  # a header and nothing else
            with pytest.raises(job_input.InputRejected):
                _records_by_scanner(data)
            continue
        assert _records_by_scanner(data) == expected, data


# --- Refused at submit, with the line -----------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"email,phone\ra@example.com,1\rb@example.com,2\r", 1),  # classic Mac line breaks
        (b"email,n\na@example.com,x\ry\nb@example.com,z\n", 2),  # a CR inside a row
    ],
    ids=["cr-line-breaks", "cr-in-a-row"],
)
def test_a_carriage_return_that_does_not_end_a_line_is_refused_with_its_line(
    world: ProxyWorld, django_capture_on_commit_callbacks, data: bytes, line: int
) -> None:
    response = submit(world, _upload(data), capture=django_capture_on_commit_callbacks)

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_line_break"
    assert f"Line {line} " in response.json()["detail"]
    assert not Job.objects.exists() and not JobChunk.objects.exists() and s3_keys(world) == []
    refusal = AuditEvent.objects.get(action="job.submitted")
    assert refusal.reason == "invalid_line_break"


def test_a_big_file_with_cr_line_breaks_is_refused_for_them_not_for_its_length(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    settings.JOBS_MAX_LINE_BYTES = 100
    data = b"email\r" + b"a@example.com\r" * 50

    response = submit(world, _upload(data), capture=django_capture_on_commit_callbacks)

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_line_break"


def test_the_upload_page_refuses_cr_line_breaks_with_the_message(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    client = client_for(world.world, "analyst")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/subscriptions/{world.subscription_a.pk}/jobs/",
            {"idempotency_key": "form-cr", "file": _upload(b"email\ra@example.com\r")},
        )

    assert response.status_code == 400
    assert "carriage return" in response.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_the_line_limit_is_on_the_lines_content_not_its_line_break(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, eol: bytes
) -> None:
    settings.JOBS_MAX_LINE_BYTES = 100
    line = b"a@example.com," + b"x" * 86  # 100 bytes
    fits = b"email,n" + eol + line + eol + b"b@example.com,y" + eol
    over = b"email,n" + eol + line + b"x" + eol + b"b@example.com,y" + eol

    accepted = submit(world, _upload(fits), capture=django_capture_on_commit_callbacks)
    refused = submit(world, _upload(over), capture=django_capture_on_commit_callbacks)

    assert accepted.status_code == 202, accepted.content
    assert Job.objects.get(pk=accepted.json()["id"]).records_total == 2
    assert refused.status_code == 400
    assert refused.json()["code"] == "line_too_long"
    assert "Line 2 " in refused.json()["detail"]


# --- One record each, the odd one an error entry at its line -----------------------------------


def test_quotes_inside_unquoted_fields_are_text_and_each_row_is_one_record(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    settings.JOBS_RECORDS_PER_CHUNK = 1000
    data = b'email,n\na@example.com,O"Brien\nb@example.com,5" tall\nnot-an-email,z\n'

    job = _job(world, django_capture_on_commit_callbacks, data)

    assert job.status == Job.Status.PARTIALLY_SUCCEEDED
    assert _records_and_errors(world, job) == [
        (0, 2, None),
        (1, 3, None),
        (2, 4, "invalid_email"),
    ]


def test_a_line_of_unicode_spaces_is_a_record_the_model_may_reject(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    # Only ASCII spaces, tabs and line breaks make a blank line (the same rule when the job is
    # submitted and when its chunks are read back); a no-break space is a character.
    settings.JOBS_RECORDS_PER_CHUNK = 1000
    data = "email\na@example.com\n\u00a0\nb@example.com\n".encode()

    job = _job(world, django_capture_on_commit_callbacks, data)

    assert job.records_total == 3
    assert _records_and_errors(world, job) == [
        (0, 2, None),
        (1, 3, "no_identifier"),
        (2, 4, None),
    ]
    results = world.client("analyst").get(f"/api/v1/jobs/{job.pk}/results/?page_size=10")
    assert results.json()["count"] == 3
    assert [entry["line"] for entry in results.json()["results"]] == [2, 3, 4]


@pytest.mark.parametrize(
    ("data", "bad_line"),
    [
        ('{"email":"a@example.com"}\n\u00a0\n{"email":"b@example.com"}\n'.encode(), 2),
        (
            b'{"email":"a@example.com"}\n{"email":"b@example.com"}\r{"x":1}\n'
            b'{"email":"c@example.com"}\n',
            2,
        ),
        (
            '{"email":"a@example.com","n":"x\u2028y"}\n{"email":"b@example.com"}\n'
            '{"oops"\n'.encode(),
            3,
        ),
    ],
    ids=["no-break-space-line", "cr-between-objects", "u2028-in-a-string"],
)
def test_each_json_line_is_one_record_whatever_it_holds(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, data: bytes, bad_line: int
) -> None:
    settings.JOBS_RECORDS_PER_CHUNK = 1000

    job = _job(world, django_capture_on_commit_callbacks, data, name="input.jsonl")

    assert job.status == Job.Status.PARTIALLY_SUCCEEDED, (job.error_code, job.error_message)
    output = _records_and_errors(world, job)
    assert len(output) == job.records_total == 3
    assert [(line, error) for _, line, error in output if error] == [(bad_line, "invalid_record")]


def test_a_first_json_line_nested_past_the_parsers_depth_is_refused(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    data = b"[" * 10_000 + b"\n"
    response = submit(
        world, _upload(data, "input.jsonl"), capture=django_capture_on_commit_callbacks
    )

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "invalid_jsonlines"
    assert not Job.objects.exists() and s3_keys(world) == []


# --- A model that reads some record differently ------------------------------------------------


@pytest.mark.parametrize("records_per_chunk", [1, 7, 1000])
def test_a_record_the_model_answers_nothing_for_fails_alone_not_its_chunk(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, monkeypatch, records_per_chunk
) -> None:
    # A seller's parser that skips one record (it answers one result short for any group that
    # holds it): the chunk's records are sent again in halves until that record is alone.
    settings.JOBS_RECORDS_PER_CHUNK = records_per_chunk
    real = jobs.chunks.invocation_run
    bodies: list[bytes] = []

    def skipping(**kwargs):
        result = real(**kwargs)
        bodies.append(kwargs["body"])
        if b"skip@example.com" not in kwargs["body"]:
            return result
        short = b"".join(result.body.splitlines(keepends=True)[:-1])
        return dataclasses.replace(result, body=short)

    monkeypatch.setattr(jobs.chunks, "invocation_run", skipping)
    rows = [f"p{n}@example.com" for n in range(7)]
    rows.insert(4, "skip@example.com")
    data = ("email\n" + "\n".join(rows) + "\n").encode()

    job = _job(world, django_capture_on_commit_callbacks, data)

    assert job.status == Job.Status.PARTIALLY_SUCCEEDED, (job.error_code, job.error_message)
    assert (job.records_total, job.records_done, job.records_failed) == (8, 8, 1)
    output = s3_lines(world, job.output_uri)
    assert [(e["record"], e["line"], e.get("error")) for e in output] == [
        (n, n + 2, "output_mismatch" if n == 4 else None) for n in range(8)
    ]
    assert all("ids" in entry for entry in output if "error" not in entry)
    # 8 records: the chunk, then halves of 4, 2, 1 around the odd one (2 calls a level)
    holding = [body for body in bodies if b"skip@example.com" in body]
    assert len(holding) <= 4 and len(bodies) <= job.chunks_total + 6


def test_records_sent_again_in_halves_keep_the_csv_header_and_quoted_rows(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, monkeypatch
) -> None:
    settings.JOBS_RECORDS_PER_CHUNK = 1000
    real = jobs.chunks.invocation_run
    bodies: list[bytes] = []

    def skipping(**kwargs):
        bodies.append(kwargs["body"])
        result = real(**kwargs)
        if b"skip@example.com" not in kwargs["body"]:
            return result
        return dataclasses.replace(result, body=result.body.split(b"\n", 1)[1])

    monkeypatch.setattr(jobs.chunks, "invocation_run", skipping)
    data = b'email,note\na@example.com,"two\nlines"\nskip@example.com,x\nb@example.com,"q ""x"""\n'

    job = _job(world, django_capture_on_commit_callbacks, data)

    assert [(e["record"], e["line"], e.get("error")) for e in s3_lines(world, job.output_uri)] == [
        (0, 2, None),
        (1, 4, "output_mismatch"),
        (2, 5, None),
    ]
    assert all(body.startswith(b"email,note\n") for body in bodies)
