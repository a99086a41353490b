"""`gunicorn portal.wsgi`, as the README starts the portal, gets settings fit for its requests."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from pathlib import Path

from devstack.wsgi_thread import free_port

ROOT = Path(__file__).resolve().parents[2]


def gunicorn_config() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN", "WEB_CONC"))}
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "--print-config", "portal.wsgi"],
        cwd=ROOT,
        env={**env, "GATEHOUSE_ENV": "local"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {
        name.strip(): value.strip()
        for name, _, value in (line.partition("=") for line in done.stdout.splitlines())
    }


def test_a_model_call_or_an_upload_outlasting_the_worker_timeout_is_not_killed() -> None:
    # InvokeEndpoint may take 70 s and an upload of 1 GB longer: a sync worker is killed after
    # `timeout` (30 s by default) of one request; a gthread worker's timeout only catches a stuck
    # worker.
    config = gunicorn_config()

    assert config["worker_class"] == "gthread"
    assert int(config["threads"]) > 1


def test_the_access_log_leaves_out_query_strings() -> None:
    # OIDC callbacks carry the authorization code in the query string.
    access_log_format = gunicorn_config()["access_log_format"]

    assert "%(r)s" not in access_log_format
    assert "%(q)s" not in access_log_format
    assert "%(U)s" in access_log_format
    assert "{x-request-id}o" in access_log_format


def test_an_idle_connection_stays_open_longer_than_a_load_balancer_keeps_its_own() -> None:
    # A load balancer (an ALB keeps idle connections 60 s) reuses its connection to the portal;
    # if the portal closes it first, a request sent at that moment is reset and the caller gets
    # a 502. gunicorn closes after 2 s by default: here a request after 3 s idle still lands.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GUNICORN", "WEB_CONC"))}
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "portal.wsgi"],
        cwd=ROOT,
        env={**env, "GATEHOUSE_ENV": "local"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        connection = _connected(port)
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() and connection.sock is not None
        opened = connection.sock

        time.sleep(3)
        connection.request("GET", "/healthz")
        answer = connection.getresponse()

        assert answer.status == 200
        assert connection.sock is opened  # the same connection, not a new one
    finally:
        server.terminate()
        server.wait(timeout=30)


def _connected(port: int) -> http.client.HTTPConnection:
    """A connection to the server once it listens (gunicorn takes a few seconds to start)."""
    deadline = time.monotonic() + 60
    while True:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            connection.connect()
            return connection
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
