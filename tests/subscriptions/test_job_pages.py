"""The jobs pages in the browser: uploading from the subscription page, /jobs/, one job, download,
cancel, and every refusal.

Jobs run as in ``test_jobs``: Celery eager, through the stand-ins and moto, three records a chunk
(``world`` fixture). Submissions go through the page with Django's test client, as a browser
would post the form.
"""

from __future__ import annotations

import html
import io
import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from accounts.models import AuditEvent
from portal import aws_gateway, celery_app
from portal.query_count import count_queries
from subscriptions import job_pages, tasks, uploads
from subscriptions.models import Job, JobChunk, Subscription
from subscriptions.services import jobs
from tests.page_tables import mislabelled_cells, stacked_tables
from tests.subscriptions.conftest import ProxyWorld
from tests.subscriptions.test_jobs import BUCKET_A, csv_file, good_rows, s3_keys
from tests.tenancy_world import client_for

pytestmark = pytest.mark.django_db

JOB_URL = re.compile(r"^/jobs/([0-9a-f-]{36})/#progress$")  # the job page, at its progress


@pytest.fixture
def world(proxy: ProxyWorld, settings) -> Iterator[ProxyWorld]:
    """As in ``test_jobs``: tasks run in-process when enqueued, three records a chunk, and no job
    objects left in the session's moto from earlier tests."""
    settings.JOBS_RECORDS_PER_CHUNK = 3
    settings.JOBS_CHUNK_MAX_RETRIES = 25
    s3 = proxy.s3()
    for key in s3_keys(proxy):
        s3.delete_object(Bucket=BUCKET_A, Key=key)
    saved = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield proxy
    celery_app.conf.task_always_eager = saved


def text_of(response) -> str:
    return html.unescape(response.content.decode())


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def upload(
    world: ProxyWorld,
    file: io.BytesIO | None,
    *,
    capture: Any,
    principal: str = "analyst",
    subscription: Subscription | None = None,
    run: bool = True,
    client: Client | None = None,
    **fields: str,
):
    """POST the subscription page's upload form, as the browser does (multipart)."""
    client = client or client_for(world.world, principal)
    data: dict[str, Any] = {"idempotency_key": f"form-{uuid.uuid4()}", **fields}
    if file is not None:
        data["file"] = file
    pk = (subscription or world.subscription_a).pk
    with capture(execute=run) as callbacks:
        response = client.post(f"/subscriptions/{pk}/jobs/", data)
    response.callbacks = callbacks
    return response


def submitted_job(response) -> Job:
    assert response.status_code == 302, text_of(response)[:2000]
    match = JOB_URL.match(response["Location"])
    assert match, response["Location"]
    return Job.objects.get(pk=match.group(1))


def queued_job(world: ProxyWorld, capture: Any, rows: int = 7) -> Job:
    """A job submitted through the page whose tasks have not run (it stays queued)."""
    return submitted_job(upload(world, csv_file(good_rows(rows)), capture=capture, run=False))


def timeline_kinds(response) -> list[str]:
    return [entry.kind for entry in response.context["timeline"]]


# --- Submitting from the subscription page --------------------------------------------------------


def test_analyst_uploads_a_csv_lands_on_the_job_page_and_sees_it_finished(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    response = upload(world, csv_file(good_rows(7)), capture=django_capture_on_commit_callbacks)

    job = submitted_job(response)
    assert job.status == Job.Status.SUCCEEDED
    assert (job.records_total, job.records_done, job.chunks_total) == (7, 7, 3)
    assert job.submitted_by == world.world.user("analyst") and job.content_type == "text/csv"
    assert job.idempotency_key.startswith("form-")
    submitted = AuditEvent.objects.get(action="job.submitted", target_id=str(job.pk))
    assert submitted.outcome == "success"

    page = client_for(world.world, "analyst").get(response["Location"])

    assert page.status_code == 200 and page["Cache-Control"] == "no-store"
    text = text_of(page)
    assert 'data-testid="job-status">succeeded<' in text
    assert 'aria-valuenow="100"' in text
    assert page.context["chunks"].succeeded == 3
    assert timeline_kinds(page) == ["submitted", "started", "first-chunk", "last-chunk", "finished"]
    preview = page.context["preview"]
    assert preview.available == 7 and len(preview.rows) == 7
    assert preview.columns == ["record", "line", "ids.email", "ids.phone"]
    assert [row["cells"][:2] for row in preview.rows] == [[str(n), str(n + 2)] for n in range(7)]
    assert "person0@example.com" not in text  # the model's pseudonymous ids, not the input
    assert f'href="/jobs/{job.pk}/download/"' in text
    assert 'data-testid="cancel"' not in text  # finished: nothing to cancel


def test_the_results_preview_scrolls_from_the_keyboard_too(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    # On a phone the preview's columns scroll sideways; a region nobody can focus could only be
    # scrolled with a pointer.
    response = upload(world, csv_file(good_rows(2)), capture=django_capture_on_commit_callbacks)

    page = client_for(world.world, "analyst").get(response["Location"])

    region = text_of(page).split('data-testid="preview"')[0].rsplit("<div", 1)[1]
    assert 'class="table-scroll" tabindex="0" role="region" aria-label="Results preview"' in region


def test_a_large_upload_is_spooled_to_a_temporary_file_and_runs(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, monkeypatch
) -> None:
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64  # anything larger goes to disk, as 1 GB files do
    spooled: list[str] = []
    complete = uploads.JobUploadHandler.file_complete

    def spy(self, file_size):
        uploaded = complete(self, file_size)
        spooled.append(uploaded.temporary_file_path())
        return uploaded

    monkeypatch.setattr(uploads.JobUploadHandler, "file_complete", spy)

    response = upload(world, csv_file(good_rows(20)), capture=django_capture_on_commit_callbacks)

    job = submitted_job(response)
    assert job.status == Job.Status.SUCCEEDED and job.records_done == 20
    assert len(spooled) == 1


@pytest.mark.parametrize("extra", ["other", "file"])
def test_extra_file_parts_are_skipped_and_the_first_file_runs(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, extra: str
) -> None:
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64  # spooled: the page's own upload handler decides
    first = csv_file(good_rows(5))
    junk = csv_file(["x@example.com,1"] * 40, name="junk.csv")
    data: dict[str, Any] = {"idempotency_key": f"form-{uuid.uuid4()}"}
    data.update({"file": [first, junk]} if extra == "file" else {"file": first, extra: junk})

    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(world.world, "analyst").post(
            f"/subscriptions/{world.subscription_a.pk}/jobs/", data
        )

    job = submitted_job(response)
    assert (job.status, job.records_total) == (Job.Status.SUCCEEDED, 5)


def test_an_oversized_upload_is_refused_413_without_writing_past_the_limit(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings, monkeypatch
) -> None:
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 64
    settings.JOBS_MAX_INPUT_BYTES = 1000
    written: list[tuple[int, int]] = []
    complete = uploads.JobUploadHandler.file_complete

    def spy(self, file_size):
        written.append((self._written, file_size))
        return complete(self, file_size)

    monkeypatch.setattr(uploads.JobUploadHandler, "file_complete", spy)
    big = csv_file(good_rows(300))
    size = len(big.getvalue())

    response = upload(world, big, capture=django_capture_on_commit_callbacks)

    assert response.status_code == 413
    assert response.context["job_error"].code == "input_too_large"
    assert written == [(1001, size)]  # one byte past the limit on disk, the true size known
    assert not Job.objects.exists() and s3_keys(world) == []


def test_jsonlines_by_extension_and_a_chosen_file_type_over_the_name(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    lines = io.BytesIO(b'{"email": "a@example.org"}\n{"phone": "(555) 010-0199"}\n')
    lines.name = "batch.jsonl"
    as_csv = csv_file(good_rows(2), name="export.txt")

    first = submitted_job(upload(world, lines, capture=django_capture_on_commit_callbacks))
    second = submitted_job(
        upload(world, as_csv, capture=django_capture_on_commit_callbacks, file_type="text/csv")
    )

    assert (first.content_type, first.status, first.records_done) == (
        "application/jsonlines",
        "succeeded",
        2,
    )
    assert (second.content_type, second.status) == ("text/csv", "succeeded")


def _raw(data: bytes, name: str = "input.csv") -> io.BytesIO:
    file = io.BytesIO(data)
    file.name = name
    return file


@pytest.mark.parametrize(
    ("data", "name", "status", "code", "says"),
    [
        (b"", "input.csv", 400, "empty_input", "empty"),
        (b"email,phone\n", "input.csv", 400, "empty_input", "no record"),
        (b"a@example.com,5550100\nb@example.com,5550101\n", "input.csv", 400, "no_header", ""),
        (b"email\n" + b"a@example.com\n" * 100, "input.csv", 413, "input_too_large", "MB"),
        (b'{"records": []}', "input.json", 415, "unsupported_content_type", "text/csv"),
        (b"email;phone\na;b\n", "input.csv", 400, "wrong_delimiter", "delimiter"),
        (b"email,phone\n\xff\xfeabc,1\n", "input.csv", 400, "invalid_encoding", "line 2"),
        (b"email,phone\n" + b"x" * 300 + b",1\n", "input.csv", 400, "line_too_long", "line 2"),
        (b'{"email": "' + b"x" * 300 + b'"}\n', "input.jsonl", 400, "line_too_long", "line 1"),
        (b'{"email": "a@example.com"}\n\xff\n', "input.jsonl", 400, "invalid_encoding", "line 2"),
    ],
    ids=[
        "empty",
        "header-only",
        "no-header",
        "too-large",
        "json",
        "semicolons",
        "not-utf8",
        "long-line",
        "jsonl-long-line",
        "jsonl-not-utf8",
    ],
)
def test_bad_input_rerenders_the_subscription_page_with_the_error_and_creates_nothing(
    world: ProxyWorld,
    django_capture_on_commit_callbacks,
    settings,
    data: bytes,
    name: str,
    status: int,
    code: str,
    says: str,
) -> None:
    settings.JOBS_MAX_INPUT_BYTES = 1000
    settings.JOBS_MAX_LINE_BYTES = 200

    response = upload(world, _raw(data, name), capture=django_capture_on_commit_callbacks)

    assert response.status_code == status
    assert response.templates[0].name == "subscriptions/subscription_detail.html"
    error = response.context["job_error"]
    assert error.code == code
    text = text_of(response)
    assert 'data-testid="job-error"' in text and f">{code}<" in text and str(error) in text
    assert says.lower() in str(error).lower()
    assert 'data-testid="job-form"' in text  # the form is back, to try another file
    assert not Job.objects.exists() and not JobChunk.objects.exists()
    assert s3_keys(world) == []
    refusal = AuditEvent.objects.get(action="job.submitted")
    assert (refusal.outcome, refusal.reason) == ("refused", code)


def test_submitting_without_a_file_asks_for_one(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    response = upload(world, None, capture=django_capture_on_commit_callbacks)

    assert response.status_code == 400
    assert response.context["job_error"].code == "no_file"
    assert "Choose a file" in text_of(response)
    assert not Job.objects.exists()


def test_inactive_subscription_refuses_the_upload_and_offers_no_form(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    Subscription.objects.filter(pk=world.subscription_a.pk).update(status="cancelled")

    response = upload(world, csv_file(good_rows(2)), capture=django_capture_on_commit_callbacks)

    assert response.status_code == 403
    assert response.context["job_error"].code == "subscription_inactive"
    text = text_of(response)
    assert "Jobs cannot be submitted. This subscription was cancelled." in text
    assert 'data-testid="job-form"' not in text
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("principal", "status", "reason"),
    [
        ("viewer", 403, "may_not_invoke"),
        ("platform_admin", 403, "not_a_member"),  # sees every LOB, runs models in none
        ("other_lob_member", 404, "not_found"),
        ("non_member", 404, "not_found"),
        ("anonymous", 302, None),
    ],
)
def test_only_analysts_and_admins_of_the_lob_submit(
    world: ProxyWorld,
    django_capture_on_commit_callbacks,
    principal: str,
    status: int,
    reason: str | None,
) -> None:
    response = upload(
        world,
        csv_file(good_rows(2)),
        principal=principal,
        capture=django_capture_on_commit_callbacks,
    )

    assert response.status_code == status
    assert not Job.objects.exists() and s3_keys(world) == []
    if status == 302:
        pk = world.subscription_a.pk
        assert response["Location"] == f"/login/?next=/subscriptions/{pk}/jobs/"
        return
    if status == 404:
        assert "Identity Transcoder" not in text_of(response)
    refusal = AuditEvent.objects.get(action="job.submitted")
    assert (refusal.outcome, refusal.reason) == ("refused", reason)


@pytest.mark.parametrize(
    ("principal", "sees_form"),
    [("lob_admin", True), ("analyst", True), ("viewer", False), ("platform_admin", False)],
)
def test_upload_form_is_shown_to_those_who_may_submit(
    world: ProxyWorld, principal: str, sees_form: bool
) -> None:
    client = client_for(world.world, principal)
    url = f"/subscriptions/{world.subscription_a.pk}/"

    first, second = text_of(client.get(url)), text_of(client.get(url))

    assert ('data-testid="job-form"' in first) == sees_form
    assert 'data-testid="subscription-jobs"' in first  # everyone who sees it may follow its jobs
    if sees_form:
        assert 'enctype="multipart/form-data"' in first and 'name="csrfmiddlewaretoken"' in first
        keys = [
            re.search(r'name="idempotency_key" value="([^"]+)"', t).group(1)
            for t in (first, second)
        ]
        assert keys[0] != keys[1]  # one key per rendering of the form
    else:
        assert "can submit jobs" in first


def test_the_same_form_submitted_twice_starts_one_job(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    client = client_for(world.world, "analyst")
    key = f"form-{uuid.uuid4()}"

    first = upload(
        world,
        csv_file(good_rows(4)),
        client=client,
        idempotency_key=key,
        capture=django_capture_on_commit_callbacks,
    )
    again = upload(
        world,
        csv_file(good_rows(4)),
        client=client,
        idempotency_key=key,
        capture=django_capture_on_commit_callbacks,
    )

    assert first["Location"] == again["Location"]
    assert submitted_job(again).pk == submitted_job(first).pk
    assert Job.objects.count() == 1
    assert len([k for k in s3_keys(world) if k.endswith("/input")]) == 1
    assert any("already submitted" in m for m in messages_of(again))


def test_the_upload_is_csrf_protected(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    client = client_for(world.world, "analyst", enforce_csrf_checks=True)

    forged = upload(
        world, csv_file(good_rows(2)), client=client, capture=django_capture_on_commit_callbacks
    )
    assert forged.status_code == 403
    assert not Job.objects.exists()

    form = text_of(client.get(f"/subscriptions/{world.subscription_a.pk}/"))
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form).group(1)
    genuine = upload(
        world,
        csv_file(good_rows(2)),
        client=client,
        capture=django_capture_on_commit_callbacks,
        csrfmiddlewaretoken=token,
    )
    assert submitted_job(genuine).status == Job.Status.SUCCEEDED


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\nnot really\r\n"),  # no boundary
        ("multipart/form-data; boundary=zzz", b"garbage without any part"),
        ("application/x-www-form-urlencoded", b"file=%ZZ&idempotency_key=" + b"k" * 500),
    ],
)
def test_malformed_bodies_get_a_4xx_never_a_500(
    world: ProxyWorld, django_capture_on_commit_callbacks, content_type: str, body: bytes
) -> None:
    client = client_for(world.world, "analyst")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.generic(
            "POST", f"/subscriptions/{world.subscription_a.pk}/jobs/", body, content_type
        )
    assert 400 <= response.status_code < 500
    assert not Job.objects.exists()


def test_an_overlong_idempotency_key_is_a_clear_400(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    response = upload(
        world,
        csv_file(good_rows(2)),
        capture=django_capture_on_commit_callbacks,
        idempotency_key="k" * 500,
    )
    assert response.status_code == 400
    assert "Idempotency-Key is at most 128 characters" in text_of(response)
    assert not Job.objects.exists()


def test_storage_failure_is_shown_on_the_page_not_a_500(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    def unreachable(**kwargs):
        raise aws_gateway.Unreachable("S3 did not answer", operation="PutObject")

    monkeypatch.setattr(jobs, "job_submit", unreachable)

    response = upload(world, csv_file(good_rows(2)), capture=django_capture_on_commit_callbacks)

    assert response.status_code == 200
    assert response.context["job_error"].code == "upstream_error"
    assert "try again in a moment" in text_of(response)


def test_subscription_page_lists_its_latest_jobs_with_their_progress(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    done = submitted_job(
        upload(world, csv_file(good_rows(4)), capture=django_capture_on_commit_callbacks)
    )
    waiting = queued_job(world, django_capture_on_commit_callbacks)

    response = client_for(world.world, "viewer").get(f"/subscriptions/{world.subscription_a.pk}/")

    text = text_of(response)
    assert f'href="/jobs/{done.pk}/"' in text and f'href="/jobs/{waiting.pk}/"' in text
    assert 'data-job-status="queued"' in text and 'data-job-status="succeeded"' in text
    assert "js/job_progress.js" in text and 'data-api="/api/v1/jobs/"' in text


# --- The jobs list --------------------------------------------------------------------------------


def make_job(subscription: Subscription, **fields: Any) -> Job:
    """A job row as the services leave it (for list and filter tests that need no run)."""
    values: dict[str, Any] = {
        "subscription": subscription,
        "content_type": "text/csv",
        "input_uri": "s3://bucket/input",
        "records_total": 10,
        "chunks_total": 2,
    }
    values.update(fields)
    return Job.objects.create(**values)


@pytest.fixture
def listed(world: ProxyWorld) -> dict[str, Job]:
    """Three lob-a jobs and one lob-b job, created a minute apart."""
    now = timezone.now()
    analyst = world.world.user("analyst")
    return {
        "a_old": make_job(
            world.subscription_a,
            submitted_by=analyst,
            status="succeeded",
            records_done=10,
            chunks_done=2,
            created_at=now - timedelta(minutes=3),
        ),
        "a_running": make_job(
            world.subscription_a,
            submitted_by=analyst,
            status="running",
            records_done=5,
            records_failed=1,
            chunks_done=1,
            created_at=now - timedelta(minutes=2),
        ),
        "a_new": make_job(
            world.subscription_a,
            submitted_by=world.world.user("lob_admin"),
            created_at=now - timedelta(minutes=1),
        ),
        "b": make_job(world.subscription_b, submitted_by=world.world.user("other_lob_member")),
    }


def listed_ids(response) -> list[str]:
    return [str(job.pk) for job in response.context["jobs"]]


@pytest.mark.parametrize(
    ("principal", "expected"),
    [
        ("analyst", ["a_new", "a_running", "a_old"]),
        ("viewer", ["a_new", "a_running", "a_old"]),
        ("other_lob_member", ["b"]),
        ("platform_admin", ["b", "a_new", "a_running", "a_old"]),
        ("non_member", []),
    ],
)
def test_jobs_list_shows_my_lobs_jobs_newest_first(
    world: ProxyWorld, listed: dict[str, Job], principal: str, expected: list[str]
) -> None:
    response = client_for(world.world, principal).get("/jobs/")

    assert response.status_code == 200
    assert listed_ids(response) == [str(listed[name].pk) for name in expected]
    text = text_of(response)
    for name, job in listed.items():
        assert (f'href="/jobs/{job.pk}/"' in text) == (name in expected)


def test_jobs_list_rows_show_lob_listing_submitter_status_and_progress(
    world: ProxyWorld, listed: dict[str, Job]
) -> None:
    response = client_for(world.world, "analyst").get("/jobs/")

    text = text_of(response)
    row = text.split(f'data-testid="job-{listed["a_running"].pk}"')[1].split("</tr>")[0]
    assert "<code>lob-a</code>" in row and "Identity Transcoder" in row
    assert "<code>lob-a-analyst</code>" in row
    assert 'class="pill run"' in row and ">running<" in row
    assert 'aria-valuenow="50"' in row and 'style="width: 40.00%"' in row  # 4 ok + 1 failed
    assert '<span data-field="records_failed">1</span> failed' in row
    assert 'data-job-status="running"' in row
    assert "js/job_progress.js" in text
    assert '<a href="/jobs/">Jobs</a>' in text  # the nav link


def test_every_cell_of_the_jobs_tables_names_its_column_for_narrow_screens(
    world: ProxyWorld, listed: dict[str, Job]
) -> None:
    # On a phone a job's status and progress were scrolled off to the right of its row; the
    # rows now stack as "column: value", the column's name from data-label.
    client = client_for(world.world, "analyst")
    pages = {"/jobs/": "job-list", f"/subscriptions/{world.subscription_a.pk}/": "latest-jobs"}
    for path, testid in pages.items():
        table = stacked_tables(client.get(path).content.decode())[testid]
        assert len(table.rows) == 3, path
        assert mislabelled_cells(table) == [], path


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?status=running", ["a_running"]),
        ("?status=queued", ["a_new"]),
        ("?lob=lob-a&status=succeeded", ["a_old"]),
        ("?lob=lob-b", []),  # another LOB's slug filters to nothing, never to its jobs
        ("?status=nonsense", ["a_new", "a_running", "a_old"]),
        ("?subscription=abc", []),
        ("?subscription=99999999999999999999999", []),
        ("?page=999", ["a_new", "a_running", "a_old"]),
        ("?page=abc", ["a_new", "a_running", "a_old"]),
    ],
)
def test_jobs_list_filters(
    world: ProxyWorld, listed: dict[str, Job], query: str, expected: list[str]
) -> None:
    response = client_for(world.world, "analyst").get(f"/jobs/{query}")

    assert response.status_code == 200
    assert listed_ids(response) == [str(listed[name].pk) for name in expected]


def test_jobs_list_by_subscription_from_its_page(world: ProxyWorld, listed: dict[str, Job]) -> None:
    client = client_for(world.world, "platform_admin")

    response = client.get(f"/jobs/?subscription={world.subscription_b.pk}")

    assert listed_ids(response) == [str(listed["b"].pk)]
    text = text_of(response)
    assert f'name="subscription" value="{world.subscription_b.pk}"' in text
    # The filter says which subscription it is, and how to drop it (keeping the others).
    chip = re.search(r'data-testid="subscription-filter">(.*?)</span>', text, re.S).group(1)
    assert "Identity Transcoder · lob-b" in chip and 'href="/jobs/"' in chip
    with_status = client.get(f"/jobs/?subscription={world.subscription_b.pk}&status=running")
    assert 'href="/jobs/?status=running"' in text_of(with_status)
    other = client_for(world.world, "analyst").get(f"/jobs/?subscription={world.subscription_b.pk}")
    assert "not one of yours" in text_of(other) and "lob-b" not in listed_ids(other)


def test_jobs_list_paginates_and_keeps_the_filters(world: ProxyWorld) -> None:
    now = timezone.now()
    for n in range(30):
        make_job(world.subscription_a, status="queued", created_at=now - timedelta(seconds=n))
    client = client_for(world.world, "analyst")

    first = client.get("/jobs/?status=queued")
    second = client.get("/jobs/?status=queued&page=2")

    assert len(first.context["jobs"]) == job_pages.JOBS_PER_PAGE
    assert len(second.context["jobs"]) == 30 - job_pages.JOBS_PER_PAGE
    assert not set(listed_ids(first)) & set(listed_ids(second))
    assert 'href="?status=queued&amp;page=2"' in first.content.decode()
    assert "Page 2 of 2" in text_of(second)


def test_jobs_list_queries_do_not_grow_with_jobs(world: ProxyWorld) -> None:
    client = client_for(world.world, "analyst")
    make_job(world.subscription_a, submitted_by=world.world.user("analyst"))
    with count_queries() as few:
        client.get("/jobs/")
    for principal in ("analyst", "lob_admin", "viewer"):
        for _ in range(4):
            make_job(world.subscription_a, submitted_by=world.world.user(principal))
    with count_queries() as many:
        response = client.get("/jobs/")

    assert len(response.context["jobs"]) == 13
    assert many.count == few.count


def test_jobs_list_asks_anonymous_people_to_sign_in(world: ProxyWorld) -> None:
    response = Client().get("/jobs/")
    assert response.status_code == 302 and response["Location"] == "/login/?next=/jobs/"


# --- One job --------------------------------------------------------------------------------------

JOB_PAGE_STATUS = {
    "platform_admin": 200,
    "lob_admin": 200,
    "analyst": 200,
    "viewer": 200,
    "other_lob_member": 404,
    "non_member": 404,
    "anonymous": 302,
}


@pytest.mark.parametrize("principal", sorted(JOB_PAGE_STATUS))
@pytest.mark.parametrize("path", ["", "live/"])
def test_job_page_and_its_live_part_by_principal(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str, path: str
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks)
    url = f"/jobs/{job.pk}/{path}"

    response = client_for(world.world, principal).get(url)

    assert response.status_code == JOB_PAGE_STATUS[principal]
    if response.status_code == 302:
        assert response["Location"] == f"/login/?next={url}"
    elif response.status_code == 404:
        text = text_of(response)
        assert "Identity Transcoder" not in text and "lob-a" not in text
        # The same answer as for a job that does not exist, or an id that is not one.
        missing = client_for(world.world, principal).get(f"/jobs/{uuid.uuid4()}/{path}")
        malformed = client_for(world.world, principal).get(f"/jobs/not-a-job/{path}")
        assert missing.status_code == malformed.status_code == 404
        assert missing.context["message"] == malformed.context["message"]
        assert missing.context["message"] == response.context["message"]
    else:
        assert response["Cache-Control"] == "no-store"


def test_live_part_is_a_fragment_of_the_job_page(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks)

    page = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/")
    live = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/live/")

    def without_tokens(text: str) -> str:
        return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", text)

    fragment = without_tokens(live.content.decode())
    assert "<html" not in fragment and "<body" not in fragment
    assert 'data-job-status="queued"' in fragment
    assert f'data-live-url="/jobs/{job.pk}/live/"' in page.content.decode()
    assert fragment.strip() in without_tokens(page.content.decode())


@pytest.mark.parametrize(
    ("principal", "sees_cancel"),
    [("analyst", True), ("lob_admin", True), ("platform_admin", True), ("viewer", False)],
)
def test_unfinished_job_shows_progress_counts_and_cancel_for_those_who_may(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str, sees_cancel: bool
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks, rows=7)
    Job.objects.filter(pk=job.pk).update(
        status="running", started_at=timezone.now(), records_done=3, chunks_done=1
    )
    JobChunk.objects.filter(job=job, index=0).update(status="succeeded", finished_at=timezone.now())

    response = client_for(world.world, principal).get(f"/jobs/{job.pk}/")

    text = text_of(response)
    assert ('data-testid="cancel"' in text) == sees_cancel
    assert 'data-testid="job-status">running<' in text
    assert 'aria-valuenow="42"' in text  # 3 of 7, floored
    assert 'data-testid="records-done">3<' in text and 'data-testid="chunks-done">1<' in text
    chunks = response.context["chunks"]
    assert (chunks.succeeded, chunks.pending) == (1, 2)
    assert timeline_kinds(response) == ["submitted", "started", "first-chunk"]
    assert response.context["preview"] is None and "when the job has finished" in text
    assert 'data-testid="download"' not in text


def test_large_counts_are_shown_with_their_thousands_grouped(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks, rows=7)
    Job.objects.filter(pk=job.pk).update(
        status="succeeded",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        records_total=1_234_567,
        records_done=1_234_567,
        chunks_total=1_235,
        chunks_done=1_235,
    )

    text = text_of(client_for(world.world, "analyst").get(f"/jobs/{job.pk}/"))

    assert 'data-testid="records-total">1,234,567<' in text
    assert 'data-testid="chunks-done">1,235<' in text
    assert '<span data-field="records_done">1,234,567</span>' in text  # the bar's text
    assert "every one of 1,234,567 records has its result" in text  # the timeline


def test_partially_succeeded_job_lists_rejected_records_by_line(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    rows = [*good_rows(2), ",", *good_rows(2), "not-an-email,", ","]
    job = submitted_job(upload(world, csv_file(rows), capture=django_capture_on_commit_callbacks))

    response = client_for(world.world, "viewer").get(f"/jobs/{job.pk}/")

    assert job.status == Job.Status.PARTIALLY_SUCCEEDED
    assert [(e["line"], e["error"]) for e in response.context["record_errors"]] == [
        (4, "no_identifier"),
        (7, "invalid_email"),
        (8, "no_identifier"),
    ]
    text = text_of(response)
    assert 'data-testid="record-errors"' in text and "<code>invalid_email</code>" in text
    assert ">partially succeeded<" in text and 'class="pill warn"' in text
    preview = response.context["preview"]
    assert preview.columns[-1] == "error"
    assert [row["bad"] for row in preview.rows] == [False, False, True, False, False, True, True]
    assert response.context["timeline"][-1].title == "Partially succeeded"
    assert "the model rejected 3 records" in text


def test_failed_job_shows_why(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    settings.JOBS_CHUNK_MAX_RETRIES = 1
    world.knobs(error_rate=1.0)
    job = submitted_job(
        upload(world, csv_file(good_rows(4)), capture=django_capture_on_commit_callbacks)
    )

    response = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/")

    assert job.status == Job.Status.FAILED
    text = text_of(response)
    assert 'data-testid="failure"' in text and "<code>chunks_failed</code>" in text
    finished = response.context["timeline"][-1]
    assert finished.title == "Failed" and finished.detail.startswith("chunks_failed: 2 chunk(s)")
    assert response.context["chunks"].failed == 2


def test_the_preview_shows_the_first_twenty_records(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = submitted_job(
        upload(world, csv_file(good_rows(45)), capture=django_capture_on_commit_callbacks)
    )

    preview = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/").context["preview"]

    assert preview.available == 45
    assert [row["cells"][0] for row in preview.rows] == [str(n) for n in range(20)]


def test_unreadable_results_leave_the_page_working(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    job = submitted_job(
        upload(world, csv_file(good_rows(4)), capture=django_capture_on_commit_callbacks)
    )

    def unreachable(**kwargs):
        raise aws_gateway.Unreachable("S3 did not answer", operation="GetObject")

    monkeypatch.setattr(jobs, "job_results", unreachable)

    response = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/")

    assert response.status_code == 200
    assert 'data-testid="preview-error"' in text_of(response)


# --- Download -------------------------------------------------------------------------------------


@pytest.mark.parametrize("principal", ["analyst", "viewer", "platform_admin"])
def test_download_redirects_to_a_short_lived_url_of_the_output(
    world: ProxyWorld, django_capture_on_commit_callbacks, caplog, principal: str
) -> None:
    job = submitted_job(
        upload(world, csv_file(good_rows(7)), capture=django_capture_on_commit_callbacks)
    )
    caplog.set_level("INFO")

    response = client_for(world.world, principal).get(f"/jobs/{job.pk}/download/")

    assert response.status_code == 302 and response["Cache-Control"] == "no-store"
    url = response["Location"]
    assert f"/lob-a/jobs/{job.pk}/output.jsonl?" in url and "Expires=" in url
    assert url.partition("?")[2] not in caplog.text  # the signed query is never logged
    fetched = requests.get(url, timeout=10)
    assert fetched.status_code == 200 and len(fetched.content.splitlines()) == 7
    event = AuditEvent.objects.get(action="job.downloaded", target_id=str(job.pk))
    assert event.actor == world.world.user(principal)
    page = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/")
    downloaded = [e for e in page.context["timeline"] if e.kind == "downloaded"]
    assert [e.title for e in downloaded] == [
        f"Output downloaded by {world.world.user(principal).username}"
    ]


@pytest.mark.parametrize("principal", ["other_lob_member", "non_member"])
def test_another_lobs_job_cannot_be_downloaded(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str
) -> None:
    job = submitted_job(
        upload(world, csv_file(good_rows(4)), capture=django_capture_on_commit_callbacks)
    )

    response = client_for(world.world, principal).get(f"/jobs/{job.pk}/download/")

    assert response.status_code == 404 and "Location" not in response
    assert not AuditEvent.objects.filter(action="job.downloaded").exists()


def test_download_before_the_output_exists_says_so_with_409(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks)

    response = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/download/")

    assert response.status_code == 409
    assert response.context["action_error"].code == "not_ready"
    assert "no merged output yet" in text_of(response)


def test_download_when_aws_fails_is_a_message_not_a_500(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    job = submitted_job(
        upload(world, csv_file(good_rows(4)), capture=django_capture_on_commit_callbacks)
    )

    def unreachable(**kwargs):
        raise aws_gateway.Unreachable("STS did not answer", operation="AssumeRole")

    monkeypatch.setattr(jobs, "job_download_url", unreachable)

    response = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/download/")

    assert response.status_code == 200
    assert response.context["action_error"].code == "upstream_error"


def test_download_anonymous_is_asked_to_sign_in(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks)
    response = Client().get(f"/jobs/{job.pk}/download/")
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next=/jobs/{job.pk}/download/"


# --- Cancel ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("principal", ["analyst", "lob_admin", "platform_admin"])
def test_cancel_stops_the_job_and_the_page_says_who(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks)
    client = client_for(world.world, principal)

    response = client.post(f"/jobs/{job.pk}/cancel/")

    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    assert not job.chunks.filter(status="pending").exists()
    event = AuditEvent.objects.get(action="job.cancelled", target_id=str(job.pk))
    assert event.actor == world.world.user(principal)
    page = client.get(response["Location"])
    text = text_of(page)
    assert any("Job cancelled" in m for m in messages_of(page))
    assert page.context["timeline"][-1].title == f"Cancelled by {event.actor_username}"
    assert page.context["timeline"][-1].detail == f"0 of {job.records_total} records have results"
    assert any("chunks already running will finish" in m for m in messages_of(page))
    assert 'data-testid="cancel"' not in text and 'data-testid="cancelled"' in text


def test_cancelling_a_finished_job_is_a_409_on_the_page(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = submitted_job(
        upload(world, csv_file(good_rows(4)), capture=django_capture_on_commit_callbacks)
    )

    response = client_for(world.world, "analyst").post(f"/jobs/{job.pk}/cancel/")

    assert response.status_code == 409
    assert response.context["action_error"].code == "job_finished"
    assert "already succeeded" in text_of(response)
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCEEDED


# Who may not act on lob-a's job, and what they get: viewers are told why, others see no such job.
REFUSED = [("viewer", 403), ("other_lob_member", 404), ("non_member", 404), ("anonymous", 302)]


@pytest.mark.parametrize(("principal", "status"), REFUSED)
def test_cancel_is_refused_to_those_who_may_not(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str, status: int
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks)

    response = client_for(world.world, principal).post(f"/jobs/{job.pk}/cancel/")

    assert response.status_code == status
    assert Job.objects.get(pk=job.pk).status == Job.Status.QUEUED
    assert not AuditEvent.objects.filter(action="job.cancelled").exists()
    if status == 403:
        assert "Only analysts and admins of lob-a may cancel" in text_of(response)


@pytest.mark.parametrize("action", ["cancel", "run-again"])
def test_job_actions_are_csrf_protected_and_post_only(
    world: ProxyWorld, django_capture_on_commit_callbacks, action: str
) -> None:
    capture = django_capture_on_commit_callbacks
    job = queued_job(world, capture) if action == "cancel" else finished_job(world, capture)
    strict = client_for(world.world, "analyst", enforce_csrf_checks=True)

    assert strict.post(f"/jobs/{job.pk}/{action}/").status_code == 403
    opened = client_for(world.world, "analyst").get(f"/jobs/{job.pk}/{action}/")
    assert (opened.status_code, opened["Location"]) == (302, f"/jobs/{job.pk}/")
    assert Job.objects.get(pk=job.pk).status == job.status
    assert Job.objects.count() == 1


def test_a_cancelled_job_shows_the_results_of_its_finished_chunks(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = queued_job(world, django_capture_on_commit_callbacks)  # 7 records, 3 chunks
    Job.objects.filter(pk=job.pk).update(status=Job.Status.RUNNING)
    with django_capture_on_commit_callbacks(execute=False):
        tasks.job_chunk_run.apply(args=(str(job.pk), 0))  # the first chunk finishes
    client = client_for(world.world, "analyst")

    client.post(f"/jobs/{job.pk}/cancel/")
    page = client.get(f"/jobs/{job.pk}/")

    preview = page.context["preview"]
    assert [row["cells"][:2] for row in preview.rows] == [["0", "2"], ["1", "3"], ["2", "4"]]
    assert 'data-testid="preview-parts"' in text_of(page)
    assert not Job.objects.get(pk=job.pk).output_uri


def test_a_job_cancelled_moments_ago_is_followed_a_while_longer(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    # A chunk under way at the cancel is still counted: the page keeps polling for 30 s.
    job = queued_job(world, django_capture_on_commit_callbacks)
    client = client_for(world.world, "analyst")
    client.post(f"/jobs/{job.pk}/cancel/")

    just_now = client.get(f"/jobs/{job.pk}/")
    settle = re.search(r'data-job-settling-ms="(\d+)"', text_of(just_now))
    Job.objects.filter(pk=job.pk).update(finished_at=timezone.now() - timedelta(seconds=31))
    later = client.get(f"/jobs/{job.pk}/")

    assert settle and 25_000 < int(settle.group(1)) <= 30_000
    assert "data-job-settling-ms" not in text_of(later)


# --- Running a finished job again -----------------------------------------------------------------


def finished_job(world: ProxyWorld, capture: Any, rows: int = 7) -> Job:
    """A job submitted through the page and run to its end."""
    job = submitted_job(upload(world, csv_file(good_rows(rows)), capture=capture))
    assert job.is_finished
    return job


def run_again(
    world: ProxyWorld,
    job: Job,
    capture: Any,
    *,
    principal: str = "analyst",
    key: str = "",
    client: Client | None = None,
):
    """POST the finished job page's Run again button."""
    client = client or client_for(world.world, principal)
    with capture(execute=True):
        return client.post(
            f"/jobs/{job.pk}/run-again/", {"idempotency_key": key or f"form-{uuid.uuid4()}"}
        )


@pytest.mark.parametrize("principal", ["analyst", "lob_admin"])
def test_a_finished_job_runs_again_over_its_own_copy_of_the_input(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str
) -> None:
    job = finished_job(world, django_capture_on_commit_callbacks)
    first_objects = s3_keys(world, f"gatehouse/lob-a/jobs/{job.pk}/")
    client = client_for(world.world, principal)

    response = run_again(world, job, django_capture_on_commit_callbacks, client=client)

    again = submitted_job(response)
    assert again.pk != job.pk and again.status == Job.Status.SUCCEEDED
    assert (again.records_total, again.records_done, again.content_type) == (7, 7, "text/csv")
    assert again.submitted_by == world.world.user(principal)
    # Its own input, copied from the first job's: that job and its objects stay as they were.
    assert again.input_uri.endswith(f"/jobs/{again.pk}/input") and again.input_uri != job.input_uri
    assert Job.objects.get(pk=job.pk).output_uri == job.output_uri
    assert s3_keys(world, f"gatehouse/lob-a/jobs/{job.pk}/") == first_objects
    assert AuditEvent.objects.filter(action="job.submitted", target_id=str(again.pk)).exists()
    page = client.get(response["Location"])
    assert any(f"same input as job {str(job.pk)[:8]}" in m for m in messages_of(page))


def test_run_again_is_offered_on_finished_jobs_to_those_who_may_submit(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    finished = finished_job(world, django_capture_on_commit_callbacks)
    queued = queued_job(world, django_capture_on_commit_callbacks)

    def offered(job: Job, principal: str) -> bool:
        page = client_for(world.world, principal).get(f"/jobs/{job.pk}/")
        return 'data-testid="run-again"' in page.content.decode()

    assert offered(finished, "analyst") and offered(finished, "lob_admin")
    assert not offered(finished, "viewer") and not offered(finished, "platform_admin")
    assert not offered(queued, "analyst")


def test_the_same_run_again_form_submitted_twice_starts_one_job(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = finished_job(world, django_capture_on_commit_callbacks)
    key = f"form-{uuid.uuid4()}"

    first = submitted_job(run_again(world, job, django_capture_on_commit_callbacks, key=key))
    second = submitted_job(run_again(world, job, django_capture_on_commit_callbacks, key=key))

    assert first.pk == second.pk
    assert Job.objects.count() == 2


@pytest.mark.parametrize(("principal", "status"), REFUSED)
def test_run_again_is_refused_to_those_who_may_not(
    world: ProxyWorld, django_capture_on_commit_callbacks, principal: str, status: int
) -> None:
    job = finished_job(world, django_capture_on_commit_callbacks)

    response = run_again(world, job, django_capture_on_commit_callbacks, principal=principal)

    assert response.status_code == status
    assert Job.objects.count() == 1
    if status == 403:
        assert "Viewers of lob-a cannot run its models." in text_of(response)


def test_run_again_on_a_subscription_no_longer_active_says_why_on_the_job_page(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = finished_job(world, django_capture_on_commit_callbacks)
    Subscription.objects.filter(pk=job.subscription_id).update(status=Subscription.Status.EXPIRED)

    response = run_again(world, job, django_capture_on_commit_callbacks)

    assert response.status_code == 403
    assert response.context["job"].pk == job.pk
    assert response.context["action_error"].code == "subscription_inactive"
    assert Job.objects.count() == 1


def test_run_again_when_the_input_is_gone_says_so_and_starts_nothing(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job = finished_job(world, django_capture_on_commit_callbacks)
    world.s3().delete_object(Bucket=BUCKET_A, Key=job.input_uri.split("/", 3)[3])

    response = run_again(world, job, django_capture_on_commit_callbacks)

    assert response.status_code == 400
    assert response.context["action_error"].code == "input_not_found"
    assert "This job's input is no longer in the LOB's results location" in text_of(response)
    assert Job.objects.count() == 1
