"""Jobs under concurrency: submissions, chunk runs, cancel, finalize and the reconciler racing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from subscriptions.models import Job
from subscriptions.services import jobs
from tests.subscriptions.conftest import ProxyWorld
from tests.subscriptions.test_jobs import (
    JOBS_PREFIX_A,
    csv_file,
    good_rows,
    jobs_world,
    s3_keys,
    s3_lines,
    submit,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(proxy: ProxyWorld, settings) -> ProxyWorld:
    return jobs_world(proxy, settings)


@pytest.mark.django_db(transaction=True)
def test_two_submissions_with_one_idempotency_key_at_once_make_one_job(
    world: ProxyWorld, monkeypatch
) -> None:
    monkeypatch.setattr(jobs, "_enqueue", lambda *args: None)
    both_checked = threading.Barrier(2, timeout=30)
    rows = jobs._job_rows

    def rows_after_both_looked(**kwargs: Any) -> Job:
        both_checked.wait()  # each found no job under the key; both now create one
        return rows(**kwargs)

    monkeypatch.setattr(jobs, "_job_rows", rows_after_both_looked)
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
    upload = jobs._upload

    def merged_then_cancelled(*args: Any, **kwargs: Any) -> None:
        upload(*args, **kwargs)
        jobs.job_cancel(job=Job.objects.get(pk=job_id), acting_user=world.world.user("analyst"))

    monkeypatch.setattr(jobs, "_upload", merged_then_cancelled)
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
    upload = jobs._upload
    nested = []

    def merged_while_another_finalize_ends(*args: Any, **kwargs: Any) -> None:
        upload(*args, **kwargs)
        if not nested:  # the job_finalize enqueued twice: the other one ends the job first
            nested.append(True)
            jobs.job_finalize(job_id=job_id)

    monkeypatch.setattr(jobs, "_upload", merged_while_another_finalize_ends)
    jobs.job_finalize(job_id=job_id)

    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.SUCCEEDED
    prefix = f"{JOBS_PREFIX_A}{job_id}/"
    assert job.output_uri.endswith(f"{prefix}output.jsonl")
    assert {f"{prefix}output.jsonl", f"{prefix}manifest.json"} <= set(s3_keys(world, prefix))
    assert [entry["record"] for entry in s3_lines(world, job.output_uri)] == list(range(7))
