"""Jobs under concurrency: submissions, chunk runs, cancel, finalize and the reconciler racing;
Redis away at the moment a job is created."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import kombu.exceptions
import pytest
from django.db import connection, transaction
from django.utils import timezone

from subscriptions import tasks
from subscriptions.models import Job, JobChunk
from subscriptions.services import jobs
from tests.subscriptions.conftest import ProxyWorld
from tests.subscriptions.test_jobs import (
    BUCKET_A,
    JOBS_PREFIX_A,
    csv_file,
    good_rows,
    jobs_world,
    running_job,
    s3_keys,
    s3_lines,
    submit,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(proxy: ProxyWorld, settings) -> ProxyWorld:
    return jobs_world(proxy, settings)


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="two writers at once: SQLite takes its write lock at BEGIN, so the second waits there",
)
@pytest.mark.django_db(transaction=True)
def test_two_submissions_with_one_idempotency_key_at_once_make_one_job(
    world: ProxyWorld, monkeypatch
) -> None:
    monkeypatch.setattr(jobs.submit, "enqueue", lambda *args: None)
    both_checked = threading.Barrier(2, timeout=30)
    rows = jobs.submit._job_rows
    looked: list[bool] = []

    def rows_after_both_looked(**kwargs: Any) -> Job:
        looked.append(True)
        both_checked.wait()  # each found no job under the key; both now create one
        return rows(**kwargs)

    monkeypatch.setattr(jobs.submit, "_job_rows", rows_after_both_looked)
    analyst = world.world.user("analyst")
    outcomes: list[Any] = []

    def submit() -> None:
        try:
            outcomes.append(
                jobs.job_submit(
                    subscription=world.subscription_a,
                    principal=analyst,
                    content_type="text/csv",
                    file=csv_file(good_rows(4)),
                    idempotency_key="same-moment",
                )
            )
        except Exception as exc:
            outcomes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not [o for o in outcomes if isinstance(o, Exception)], outcomes
    assert looked == [True, True]  # both got past the key check: the race was run
    assert sorted(created for _, created in outcomes) == [False, True]
    assert len({job.pk for job, _ in outcomes}) == 1
    assert Job.objects.count() == 1


def _chunks_done(world: ProxyWorld, capture: Any, records: int = 7) -> str:
    """A running job whose every chunk is done (its finalize not run yet)."""
    response = submit(world, csv_file(good_rows(records)), run=False, capture=capture)
    job_id = response.json()["id"]
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING)
    with capture(execute=False):
        for index in range(Job.objects.get(pk=job_id).chunks_total):
            jobs.job_chunk_run(job_id=job_id, index=index)
    return job_id


def test_a_cancel_during_the_merge_leaves_no_manifest_or_output_saying_otherwise(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    job_id = _chunks_done(world, django_capture_on_commit_callbacks)
    upload = jobs.merge.upload

    def merged_then_cancelled(*args: Any, **kwargs: Any) -> None:
        upload(*args, **kwargs)
        jobs.job_cancel(job=Job.objects.get(pk=job_id), acting_user=world.world.user("analyst"))

    monkeypatch.setattr(jobs.merge, "upload", merged_then_cancelled)
    jobs.job_finalize(job_id=job_id)

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.CANCELLED and job.records_done == 7
    assert (job.output_uri, job.manifest_uri) == ("", "")
    prefix = f"{JOBS_PREFIX_A}{job_id}/"
    keys = s3_keys(world, prefix)
    assert f"{prefix}manifest.json" not in keys, "a manifest of a cancelled job"
    assert f"{prefix}output.jsonl" not in keys, "a merged output of a cancelled job"


def test_a_finalize_ending_after_another_one_keeps_the_merged_output(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    job_id = _chunks_done(world, django_capture_on_commit_callbacks)
    upload = jobs.merge.upload
    nested = []

    def merged_while_another_finalize_ends(*args: Any, **kwargs: Any) -> None:
        upload(*args, **kwargs)
        if not nested:  # the job_finalize enqueued twice: the other one ends the job first
            nested.append(True)
            jobs.job_finalize(job_id=job_id)

    monkeypatch.setattr(jobs.merge, "upload", merged_while_another_finalize_ends)
    jobs.job_finalize(job_id=job_id)

    assert nested == [True]  # the other finalize ran, during this one's upload
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.SUCCEEDED
    prefix = f"{JOBS_PREFIX_A}{job_id}/"
    assert job.output_uri.endswith(f"{prefix}output.jsonl")
    assert {f"{prefix}output.jsonl", f"{prefix}manifest.json"} <= set(s3_keys(world, prefix))
    assert [entry["record"] for entry in s3_lines(world, job.output_uri)] == list(range(7))


class _BeforeEachLock:
    """``transaction`` for jobs.lifecycle, running ``hook`` once before the first atomic block."""

    def __init__(self, hook: Any) -> None:
        self._hook = hook

    def atomic(self, *args: Any, **kwargs: Any) -> Any:
        hook, self._hook = self._hook, None
        if hook is not None:
            hook()
        return transaction.atomic(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(transaction, name)


def _stalled_job(world: ProxyWorld, capture: Any) -> str:
    """A running job of 3 chunks, none done, without progress for an hour."""
    response = submit(world, csv_file(good_rows(7)), run=False, capture=capture)
    job_id = response.json()["id"]
    an_hour_ago = timezone.now() - timedelta(hours=1)
    Job.objects.filter(pk=job_id).update(status=Job.Status.RUNNING, last_progress_at=an_hour_ago)
    return job_id


@pytest.mark.parametrize("meanwhile", ["another_reconcile", "a_chunk_closes"])
def test_a_job_that_moved_after_the_reconciler_listed_it_is_not_enqueued_again(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch, settings, meanwhile: str
) -> None:
    settings.JOBS_STALL_SECONDS = 600
    job_id = _stalled_job(world, django_capture_on_commit_callbacks)
    enqueued: list[tuple] = []
    for module in (jobs.lifecycle, jobs.chunks):  # the reconciler, a chunk closing
        monkeypatch.setattr(module, "enqueue", lambda name, *args: enqueued.append((name, *args)))

    def between_the_listing_and_the_lock() -> None:
        if meanwhile == "another_reconcile":  # a second beat run (or a redelivered one)
            assert jobs.jobs_reconcile() == 1
        else:  # a live worker: the job is not stalled after all
            jobs.chunks._chunk_close(
                job_id=job_id, index=0, record_count=3, status=JobChunk.Status.SUCCEEDED
            )
        enqueued_before.extend(enqueued)

    enqueued_before: list[tuple] = []
    monkeypatch.setattr(
        jobs.lifecycle, "transaction", _BeforeEachLock(between_the_listing_and_the_lock)
    )
    count = jobs.jobs_reconcile()

    assert count == 0
    assert enqueued == enqueued_before  # nothing more than what the other run enqueued


def test_a_run_giving_up_on_a_chunk_another_run_just_finished_leaves_its_part_alone(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    # One run of chunk 0 gives up (its retries spent) while another (redelivered, or enqueued
    # again by the reconciler) writes the chunk's part and counts it.
    job_id = running_job(world, django_capture_on_commit_callbacks)
    read_input = jobs.chunks.chunk_input
    other_run: list[bool] = []

    def the_other_run_finishes_meanwhile(*args: Any) -> Any:
        if not other_run:
            other_run.append(True)
            with django_capture_on_commit_callbacks(execute=False):
                jobs.job_chunk_run(job_id=job_id, index=0)
        return read_input(*args)

    monkeypatch.setattr(jobs.chunks, "chunk_input", the_other_run_finishes_meanwhile)
    with django_capture_on_commit_callbacks(execute=False):
        jobs.job_chunk_fail(job_id=job_id, index=0, code="model_error", message="gave up")

    chunk = JobChunk.objects.get(job_id=job_id, index=0)
    assert (chunk.status, chunk.records_failed) == (JobChunk.Status.SUCCEEDED, 0)
    job = Job.objects.get(pk=job_id)
    assert (job.records_done, job.records_failed) == (3, 0)
    part = s3_lines(world, f"s3://{BUCKET_A}/{chunk.output_key}")
    assert [entry["record"] for entry in part] == [0, 1, 2]
    assert not [entry for entry in part if "error" in entry], part
    available, results = jobs.job_results(
        job=job, principal=world.world.user("analyst"), offset=0, limit=10
    )
    assert available == 3 and not [entry for entry in results if "error" in entry]


def test_a_run_finishing_a_chunk_another_run_gave_up_on_leaves_its_error_entries_alone(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    call_the_model = jobs.chunks.invocation_run

    def the_other_run_gives_up_meanwhile(**kwargs: Any) -> Any:
        result = call_the_model(**kwargs)
        jobs.job_chunk_fail(job_id=job_id, index=0, code="model_error", message="gave up")
        return result

    monkeypatch.setattr(jobs.chunks, "invocation_run", the_other_run_gives_up_meanwhile)
    with django_capture_on_commit_callbacks(execute=False):
        jobs.job_chunk_run(job_id=job_id, index=0)

    chunk = JobChunk.objects.get(job_id=job_id, index=0)
    assert (chunk.status, chunk.records_failed) == (JobChunk.Status.FAILED, 3)
    part = s3_lines(world, f"s3://{BUCKET_A}/{chunk.output_key}")
    assert [(entry["record"], entry.get("error")) for entry in part] == [
        (n, "model_error") for n in range(3)
    ]


@pytest.mark.django_db(transaction=True)
def test_a_job_created_while_redis_is_away_keeps_its_input_and_starts_later(
    world: ProxyWorld, monkeypatch, settings
) -> None:
    def redis_away(*args: Any, **kwargs: Any) -> None:
        raise kombu.exceptions.OperationalError("Error 111 connecting to 127.0.0.1:6379.")

    monkeypatch.setattr(tasks.job_start, "delay", redis_away)
    response = world.client("analyst").post(
        "/api/v1/jobs/",
        {"subscription": world.subscription_a.pk, "file": csv_file(good_rows(4))},
        format="multipart",
        HTTP_IDEMPOTENCY_KEY="while-redis-restarts",
    )

    # Committed before the start could be enqueued: the job is there, queued, with its input.
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == Job.Status.QUEUED
    assert f"{JOBS_PREFIX_A}{job.pk}/input" in s3_keys(world)
    # The reconciler starts it once it has stalled.
    monkeypatch.undo()
    settings.JOBS_STALL_SECONDS = 0
    started: list[tuple] = []
    monkeypatch.setattr(
        jobs.lifecycle, "enqueue", lambda name, *args: started.append((name, *args))
    )
    assert jobs.jobs_reconcile() == 1
    assert started == [("job_start", str(job.pk))]
