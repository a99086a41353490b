"""The production profile: secrets have no defaults, and `check --deploy` is clean."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PRODUCTION_ENV = {
    "GATEHOUSE_ENV": "production",
    "DJANGO_SECRET_KEY": "x" * 30 + "-a-long-random-production-secret-key-" + "y" * 20,
    "DJANGO_ALLOWED_HOSTS": "gatehouse.internal.example",
    "DATABASE_URL": "postgres://gatehouse@db.internal.example:5432/gatehouse",
    "REDIS_URL": "redis://redis.internal.example:6379/0",
    "COGNITO_REGION": "eu-west-1",
    "COGNITO_USER_POOL_ID": "eu-west-1_AbCdEf123",
    "COGNITO_CLIENT_ID": "3n4b5urk1ft4fl3mg5e62d9ado",
    "COGNITO_CLIENT_SECRET": "client-secret",
    "COGNITO_DOMAIN": "https://gatehouse.auth.eu-west-1.amazoncognito.com",
}


def manage(
    *args: str, env: dict[str, str], program: str = "manage.py"
) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("COGNITO_", "DJANGO_"))}
    clean.pop("DATABASE_URL", None)
    clean.pop("REDIS_URL", None)
    return subprocess.run(
        [sys.executable, program, *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_profile_passes_check_deploy() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    "missing",
    ["DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL", "COGNITO_USER_POOL_ID", "COGNITO_DOMAIN"],
)
def test_production_refuses_to_start_without_a_secret(missing: str) -> None:
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != missing}

    result = manage("check", env=env)

    assert result.returncode != 0
    assert f"the setting {missing} is missing" in result.stderr


# A production image may be read-only: the settings must not create anything in the project.
READ_ONLY_START = """
import errno, os, pathlib, sys
sys.path.insert(0, os.getcwd())
def read_only(path, *args, **kwargs):
    raise OSError(errno.EROFS, "Read-only file system", str(path))
pathlib.Path.mkdir = read_only
import django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
django.setup()
from django.conf import settings
print(settings.CELERY_BEAT_SCHEDULE_FILENAME)
"""


def test_production_starts_from_a_read_only_tree_with_beats_file_in_tmpdir(tmp_path: Path) -> None:
    env = {**PRODUCTION_ENV, "TMPDIR": str(tmp_path)}

    result = manage(READ_ONLY_START, env=env, program="-c")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "gatehouse-celerybeat-schedule")


def test_local_profile_needs_nothing_set() -> None:
    result = manage("check", env={"GATEHOUSE_ENV": "local"})
    assert result.returncode == 0, result.stderr


def test_unknown_profile_is_refused() -> None:
    result = manage("check", env={"GATEHOUSE_ENV": "staging"})
    assert result.returncode != 0
    assert "GATEHOUSE_ENV must be" in result.stderr


@pytest.mark.parametrize(
    "limits",
    [
        {"CELERY_TASK_SOFT_TIME_LIMIT": "400"},  # soft above hard
        {"CELERY_VISIBILITY_TIMEOUT": "300"},  # Redis re-delivers a task still running
        {"CELERY_VISIBILITY_TIMEOUT": "1200"},  # below job_finalize's 1800 s
        {"JOBS_CHUNKS_PER_TASK": "20"},  # a run of chunks may take 4,800 s
    ],
)
def test_inconsistent_task_limits_stop_start_up(limits: dict[str, str]) -> None:
    result = manage("check", env={**PRODUCTION_ENV, **limits})

    assert result.returncode != 0
    assert "cannot start: task limits must satisfy" in result.stderr


def test_inconsistent_task_limits_are_a_warning_locally() -> None:
    result = manage("check", env={"GATEHOUSE_ENV": "local", "CELERY_VISIBILITY_TIMEOUT": "8"})

    assert result.returncode == 0, result.stderr
    assert "task limits must satisfy" in result.stderr


def test_the_longest_task_limit_bounds_every_registered_task() -> None:
    from django.conf import settings

    from portal.celery import app

    app.loader.import_default_modules()
    limits = [task.time_limit or 0 for task in app.tasks.values()]
    assert max(limits) == settings.TASK_TIME_LIMIT_MAX
    assert (
        settings.TASK_TIME_LIMIT_MAX
        < settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    )
