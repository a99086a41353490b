"""The reconciler reads the broker's queue: work waiting there is not enqueued a second time.

The messages here go to the session's real Redis broker (nothing consumes them in this process);
the reconciler's own enqueues run eagerly, as in the other job tests, so what they did shows on
the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from kombu.exceptions import OperationalError

from portal import celery_app
from subscriptions import tasks
from subscriptions.models import Job
from subscriptions.services import jobs, queued_tasks
from tests.subscriptions.conftest import ProxyWorld
from tests.subscriptions.test_jobs import jobs_world, running_job


@pytest.fixture
def world(proxy: ProxyWorld, eager: None, settings) -> Iterator[ProxyWorld]:
    settings.JOBS_STALL_SECONDS = 60
    celery_app.control.purge()
    yield jobs_world(proxy, settings)
    celery_app.control.purge()


@contextmanager
def to_the_broker() -> Iterator[None]:
    """Tasks sent meanwhile go to the broker's queue instead of running at once."""
    conf = celery_app.conf
    saved, conf.task_always_eager = conf.task_always_eager, False
    try:
        yield
    finally:
        conf.task_always_eager = saved


def queue_length() -> int:
    with celery_app.connection_for_read() as connection:
        return connection.default_channel.client.llen(celery_app.conf.task_default_queue)


def stalled(job_id: str) -> None:
    Job.objects.filter(pk=job_id).update(last_progress_at=timezone.now() - timedelta(minutes=5))


def reconcile(capture: Any) -> int:
    with capture(execute=True):
        return jobs.jobs_reconcile()


def test_the_queue_is_read_per_job_task(world: ProxyWorld) -> None:
    with to_the_broker():
        tasks.job_start.delay("job-1")
        tasks.job_chunks_run.delay("job-2", [0, 1, 2, 3])
        tasks.job_chunk_run.apply_async(kwargs={"job_id": "job-2", "index": 7})
        tasks.job_finalize.delay("job-3")
        tasks.sync_endpoint.delay(5)  # not a job's

    work = queued_tasks.queued_job_work()

    assert work == {
        "job-1": queued_tasks.QueuedWork(start=True),
        "job-2": queued_tasks.QueuedWork(chunks={0, 1, 2, 3, 7}),
        "job-3": queued_tasks.QueuedWork(finalize=True),
    }


def test_a_long_queue_is_read_whole(world: ProxyWorld) -> None:
    with to_the_broker():
        for index in range(1234):  # more than two pages of LRANGE
            tasks.job_chunk_run.delay("job-1", index)

    work = queued_tasks.queued_job_work()

    assert work == {"job-1": queued_tasks.QueuedWork(chunks=set(range(1234)))}


def test_a_stalled_job_whose_chunks_wait_in_the_queue_gets_only_the_missing_ones(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    with to_the_broker():  # chunk 1 waits behind other jobs' work; 0 and 2 were lost
        tasks.job_chunks_run.delay(job_id, [1])
    stalled(job_id)
    calls_before = world.container_counter.calls["/invocations"]

    assert reconcile(django_capture_on_commit_callbacks) == 1

    # Chunks 0 and 2 ran (eagerly, here); chunk 1 was not enqueued a second time.
    job = Job.objects.get(pk=job_id)
    assert job.status == Job.Status.RUNNING and job.chunks_done == 2
    assert world.container_counter.calls["/invocations"] - calls_before == 2
    assert queue_length() == 1


def test_a_stalled_job_with_everything_waiting_in_the_queue_is_left_alone(
    world: ProxyWorld, django_capture_on_commit_callbacks
) -> None:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    with to_the_broker():
        tasks.job_chunks_run.delay(job_id, [0, 1, 2])
    stalled(job_id)

    assert reconcile(django_capture_on_commit_callbacks) == 0

    job = Job.objects.get(pk=job_id)
    assert job.chunks_done == 0 and queue_length() == 1
    # Its clock restarted: the next look is a whole stall period away.
    assert timezone.now() - job.last_progress_at < timedelta(seconds=30)
    assert reconcile(django_capture_on_commit_callbacks) == 0

    # The message is lost after all (Redis restarted): the next stalled look enqueues it.
    celery_app.control.purge()
    stalled(job_id)
    assert reconcile(django_capture_on_commit_callbacks) == 1
    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCEEDED


@pytest.mark.parametrize("waiting", ["start", "finalize"])
def test_a_waiting_start_or_final_step_is_not_enqueued_again(
    world: ProxyWorld, django_capture_on_commit_callbacks, waiting: str
) -> None:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    if waiting == "start":
        Job.objects.filter(pk=job_id).update(status=Job.Status.QUEUED)
        with to_the_broker():
            tasks.job_start.delay(job_id)
    else:  # every chunk ran; the final step waits
        with django_capture_on_commit_callbacks(execute=False):
            for index in range(3):
                tasks.job_chunk_run.apply(args=(job_id, index))
        with to_the_broker():
            tasks.job_finalize.delay(job_id)
    stalled(job_id)

    assert reconcile(django_capture_on_commit_callbacks) == 0

    job = Job.objects.get(pk=job_id)
    assert job.status == (Job.Status.QUEUED if waiting == "start" else Job.Status.RUNNING)
    assert queue_length() == 1


def test_a_broker_that_cannot_be_read_means_everything_is_enqueued_again(
    world: ProxyWorld, django_capture_on_commit_callbacks, monkeypatch, caplog
) -> None:
    job_id = running_job(world, django_capture_on_commit_callbacks)
    with to_the_broker():
        tasks.job_chunks_run.delay(job_id, [0, 1, 2])
    stalled(job_id)

    def broker_away(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(celery_app, "connection_for_read", broker_away)

    # A copy too many is harmless (a chunk runs once); a job left stalled is not.
    assert reconcile(django_capture_on_commit_callbacks) == 1
    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCEEDED
    assert "could not read the broker's queue" in caplog.text


def test_a_queue_too_long_to_read_leaves_stalled_jobs_to_the_next_run(
    world: ProxyWorld, django_capture_on_commit_callbacks, settings
) -> None:
    settings.JOBS_RECONCILE_QUEUE_READ_MAX = 2
    job_id = running_job(world, django_capture_on_commit_callbacks)
    with to_the_broker():  # other work: the workers are busy
        for index in range(3):
            tasks.job_chunk_run.delay("another-job", index)
    stalled(job_id)
    stalled_at = Job.objects.get(pk=job_id).last_progress_at

    assert reconcile(django_capture_on_commit_callbacks) == 0

    # Nothing enqueued, and the clock left alone: the next run looks again.
    assert queue_length() == 3
    assert Job.objects.get(pk=job_id).last_progress_at == stalled_at
    settings.JOBS_RECONCILE_QUEUE_READ_MAX = 3
    assert reconcile(django_capture_on_commit_callbacks) == 1
    assert Job.objects.get(pk=job_id).status == Job.Status.SUCCEEDED
