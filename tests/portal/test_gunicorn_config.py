"""`gunicorn portal.wsgi`, as the README starts the portal, gets settings fit for its requests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
