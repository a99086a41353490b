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
    csv_file,
    good_rows,
    jobs_world,
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
