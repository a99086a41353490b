"""End to end in headless Chromium: an analyst uploads a CSV on the subscription page, watches the
job run on its page and in /jobs/ without reloading, previews the results and downloads them.

Jobs run as in production: the portal enqueues the start after commit into Redis (the session's),
and a real Celery worker (``celery.contrib.testing``, solo pool, in a thread of this process)
consumes the start, each chunk and the final step, through the stand-ins and moto. The worker
thread opens its own database connection (the SQLite test database is a file: tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connections
from playwright.sync_api import Page, expect

from accounts.models import User
from portal import celery_app
from subscriptions.models import Job
from tests.e2e.conftest import ARTIFACTS, sign_in, watch_external_requests
from tests.subscriptions.conftest import (  # noqa: F401 (fixtures)
    ProxyWorld,
    _fresh_token_cache,
    aws,
    proxy,
    standins,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ROWS = 300
PER_CHUNK = 30
CHUNKS = ROWS // PER_CHUNK
# Slow enough that the bar is seen between 0 and 100, well under the runtime stand-in's timeout.
MODEL_LATENCY_MS = 400
JOB_PAGE = re.compile(r"/jobs/([0-9a-f]{8}-[0-9a-f-]{27})/(#progress)?$")
SHOTS = Path("/tmp/shots")  # noqa: S108 (where the screenshots are looked at)


@pytest.fixture
def job_worker(portal: str, proxy: ProxyWorld, settings) -> Iterator[None]:  # noqa: F811
    """A real Celery worker consuming the portal's queue for the duration of the test."""
    settings.JOBS_RECORDS_PER_CHUNK = PER_CHUNK

    def close_own_connections(**_: object) -> None:
        # The worker thread's own connection is closed after each task, so none is left open
        # when the test database is dropped.
        connections.close_all()

    task_postrun.connect(close_own_connections, weak=False)
    hijack = celery_app.conf.worker_hijack_root_logger
    celery_app.conf.worker_hijack_root_logger = False  # keep pytest's log capture
    celery_app.control.purge()  # messages other tests left in the session's Redis
    try:
        with start_worker(
            celery_app,
            pool="solo",
            concurrency=1,
            perform_ping_check=False,
            loglevel="WARNING",
            shutdown_timeout=30,
        ):
            yield
    finally:
        celery_app.conf.worker_hijack_root_logger = hijack
        task_postrun.disconnect(close_own_connections)


def input_csv(path: Path, rows: int) -> Path:
    lines = ["email,phone"]
    lines += [f"person{n}@example.com,555010{n % 10}{n % 7}{n % 3}" for n in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def record_bar_values(page: Page) -> None:
    """Keep every value the job page's bar takes, to show it moved (and was never reloaded)."""
    page.evaluate(
        """() => {
            window.__barValues = [];
            window.__notReloaded = true;
            window.__chunkStates = [];
            const number = (selector) => {
                const node = document.querySelector(selector);
                return node ? Number(node.textContent.replace(/,/g, '')) : null;
            };
            const seen = () => {
                const bar = document.querySelector('[data-job-live] [role=progressbar]');
                if (bar) window.__barValues.push(Number(bar.getAttribute('aria-valuenow')));
                // What the counter and the breakdown say at the same moment.
                window.__chunkStates.push([
                    number('[data-testid=chunks-done]'),
                    number('[data-testid=chunk-breakdown] [data-field=chunks_succeeded]'),
                    number('[data-testid=chunk-breakdown] [data-field=chunks_pending]'),
                ]);
            };
            seen();
            new MutationObserver(seen).observe(document.body, {
                subtree: true, childList: true, characterData: true, attributes: true,
                attributeFilter: ['aria-valuenow'],
            });
        }"""
    )


def save_shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)
    shutil.copy(ARTIFACTS / name, SHOTS / name)


def test_analyst_uploads_a_csv_and_watches_the_job_finish_without_reloading(
    portal: str,
    cognito_stack,
    proxy: ProxyWorld,  # noqa: F811
    analyst: User,
    job_worker: None,
    page: Page,
    tmp_path: Path,
) -> None:
    external_requests = watch_external_requests(page)
    csv = input_csv(tmp_path / "customers.csv", ROWS)
    sign_in(page, portal, cognito_stack, "user-lob-a", "Alice Analyst")

    page.get_by_role("link", name="Subscriptions", exact=True).click()
    page.get_by_test_id(f"subscription-{proxy.subscription_a.pk}").get_by_role(
        "link", name="Identity Transcoder"
    ).click()
    form = page.get_by_test_id("job-form")
    expect(form).to_be_visible()
    form.scroll_into_view_if_needed()
    save_shot(page, "subscription-upload-form.png")

    proxy.knobs(latency_ms=MODEL_LATENCY_MS)
    form.get_by_label("Input file").set_input_files(csv)
    form.get_by_role("button", name="Submit the job").click()

    # The job page: the upload was streamed to S3, the job queued for the worker.
    expect(page).to_have_url(JOB_PAGE)
    job_id = JOB_PAGE.search(page.url).group(1)
    record_bar_values(page)
    progress = page.get_by_test_id("job-progress").first
    expect(page.get_by_test_id("records-total")).to_have_text(str(ROWS))

    # A second job from the same subscription page, in a second tab, so /jobs/ has two running.
    other = page.context.new_page()
    other.goto(f"{portal}/subscriptions/{proxy.subscription_a.pk}/")
    other.get_by_test_id("job-form").get_by_label("Input file").set_input_files(csv)
    other.get_by_test_id("job-form").get_by_role("button", name="Submit the job").click()
    expect(other).to_have_url(JOB_PAGE)
    second_id = JOB_PAGE.search(other.url).group(1)
    assert second_id != job_id  # a new form, a new key: a second job
    other.get_by_role("banner").get_by_role("link", name="Jobs", exact=True).click()
    expect(other).to_have_url(f"{portal}/jobs/")
    rows = other.get_by_test_id("job-list").locator("tbody tr")
    expect(rows).to_have_count(2)
    other.evaluate("() => { window.__notReloaded = true; }")
    # Caught while one of them runs (the solo worker takes them one after the other).
    running = other.locator("[data-job-status-pill]").filter(has_text="running")
    expect(running.first).to_be_visible(timeout=15_000)
    save_shot(other, "jobs-running.png")

    # Back on the job page: the bar moves to 100 % and the status to succeeded, no reload.
    expect(progress.get_by_role("progressbar")).to_have_attribute(
        "aria-valuenow", "100", timeout=60_000
    )
    expect(page.get_by_test_id("job-status")).to_have_text("succeeded", timeout=15_000)
    assert page.evaluate("() => window.__notReloaded") is True
    values = page.evaluate("() => window.__barValues")
    assert values == sorted(values), values  # it only ever moved forward
    assert any(0 < value < 100 for value in values), values  # and was seen part way
    # The chunk breakdown moved with the chunk counter (no failures here): never "12 / 40" done
    # beside "4 succeeded · 36 pending".
    states = page.evaluate("() => window.__chunkStates")
    assert states and all(
        succeeded == done and done + pending == CHUNKS for done, succeeded, pending in states
    ), states
    expect(page.get_by_test_id("records-done")).to_have_text(str(ROWS))
    expect(page.get_by_test_id("records-failed")).to_have_text("0")
    expect(progress).to_contain_text(f"{ROWS} / {ROWS} records · 100%")

    # What only the server knows came with the status change: timeline, preview, download.
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_contain_text("Succeeded")
    expect(timeline).to_contain_text("Last chunk finished")
    preview = page.get_by_test_id("preview")
    expect(preview.locator("tbody tr")).to_have_count(20)
    expect(preview.locator("thead")).to_contain_text("ids.email")
    expect(preview).not_to_contain_text("person0@example.com")
    expect(page.get_by_test_id("cancel")).to_have_count(0)
    save_shot(page, "job-finished.png")

    with page.expect_download() as download_info:
        page.get_by_test_id("download").click()
    output = Path(download_info.value.path()).read_text().splitlines()
    assert len(output) == ROWS
    assert [json.loads(line)["record"] for line in output] == list(range(ROWS))

    # The list page followed both jobs to the end without a reload either.
    for finished in (job_id, second_id):
        expect(other.get_by_test_id(f"job-{finished}").get_by_test_id("job-status")).to_have_text(
            "succeeded", timeout=60_000
        )
        expect(
            other.get_by_test_id(f"job-{finished}").get_by_role("progressbar")
        ).to_have_attribute("aria-valuenow", "100")
    assert other.evaluate("() => window.__notReloaded") is True
    assert Job.objects.filter(status=Job.Status.SUCCEEDED).count() == 2
    assert external_requests == []
