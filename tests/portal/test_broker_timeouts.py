"""A Redis broker that accepts connections but never answers (a failover, a dropped NAT entry):
nothing of the portal waits on it for good — not a publish, not the reconciler's look at the queue.

Each test gives up after the broker's socket timeout as the portal's settings set it (5 s).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from kombu.exceptions import OperationalError

from portal import celery_app
from subscriptions.services import queued_tasks

# Far above the socket timeout: a call still running then would have waited for good.
GIVE_UP_WITHIN = 30


@pytest.fixture
def silent_redis() -> Iterator[str]:
    """A TCP server that accepts every connection and never sends a byte; yields its URL."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed at the end of the test
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    server.close()
    for connection in held:
        connection.close()


@pytest.fixture
def portal_app_on(silent_redis: str) -> Iterator[Celery]:
    """A Celery app configured as the portal's (Django's CELERY_* settings), on that broker."""
    app = Celery("broker-timeouts")
    app.config_from_object("django.conf:settings", namespace="CELERY")
    app.conf.broker_url = silent_redis
    yield app
    app.close()


def outcome_of(call: Callable[[], Any]) -> dict[str, Any]:
    """Run the call in a thread; its result or error, or nothing if it is still waiting."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as exc:  # the test looks at which
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(GIVE_UP_WITHIN)
    return outcome


def test_a_task_sent_to_a_silent_broker_fails_instead_of_waiting(portal_app_on: Celery) -> None:
    outcome = outcome_of(
        lambda: portal_app_on.send_task("subscriptions.job_start", args=("job-1",))
    )

    # The submission's on-commit hook logs this and answers 202; the reconciler starts the job.
    assert isinstance(outcome.get("error"), OperationalError), outcome


def test_the_reconcilers_look_at_a_silent_broker_ends_knowing_nothing(
    portal_app_on: Celery, monkeypatch, caplog
) -> None:
    monkeypatch.setattr(celery_app, "connection_for_read", portal_app_on.connection_for_read)

    outcome = outcome_of(queued_tasks.queued_job_work)

    assert outcome == {"result": None}
    assert "could not read the broker's queue" in caplog.text
