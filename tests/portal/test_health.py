"""Liveness and readiness endpoints."""

from __future__ import annotations

import pytest
from django.db import OperationalError
from django.test import Client

pytestmark = pytest.mark.django_db


def test_healthz_answers_without_authentication(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_database_and_redis_answer(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": True, "redis": True}


def test_readyz_names_redis_when_it_is_down(client: Client, settings) -> None:
    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # discard port: nothing listens

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["code"] == "dependency_down"
    assert response.json()["down"] == ["redis"]


def test_readyz_names_database_when_it_is_down(client: Client, monkeypatch) -> None:
    def broken_cursor(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("portal.health.connection.cursor", broken_cursor)

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json()["down"] == ["database"]


def test_health_endpoints_refuse_writes(client: Client) -> None:
    assert client.post("/healthz").status_code == 405


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_addressed_to_the_target_ip_are_answered(client: Client, settings, path) -> None:
    # An ALB (and a Kubernetes probe) sends the target's own address as Host, which is not one of
    # the portal's host names: the probe must still be answered, or no target ever gets healthy.
    settings.ALLOWED_HOSTS = ["gatehouse.internal.example"]

    response = client.get(path, HTTP_HOST="10.0.1.23:8000")

    assert response.status_code == 200


def test_other_pages_still_refuse_an_unknown_host(client: Client, settings) -> None:
    settings.ALLOWED_HOSTS = ["gatehouse.internal.example"]

    assert client.get("/login/", HTTP_HOST="10.0.1.23:8000").status_code == 400


def test_readyz_answers_when_the_database_accepts_but_never_answers(tmp_path) -> None:
    # A database host that takes the TCP connection and then says nothing (hung, failing over):
    # without a connect timeout readiness waited for ever, and once probes held every thread the
    # process stopped answering /healthz too.
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    script = (
        "import django; django.setup()\n"
        "from django.test import Client\n"
        "r = Client().get('/readyz')\n"
        "print(r.status_code, 'database' in r.json()['down'])\n"
    )
    env = {
        **{k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "GATEHOUSE_ENV": "local",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{port}/gatehouse",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        silent.close()

    assert done.stdout.strip() == "503 True", done.stderr[-2000:]
