"""Jobs with a real Celery worker process and a Redis the test starts (and kills) itself.

The worker is another process, so it cannot see pytest-django's in-memory test database: this
test uses no Django database of its own. It migrates a SQLite file of its own, seeds it and submits
the job from a subprocess (this module's ``main``), runs the
worker against that file and the test's Redis, and reads the job's progress from the file. The
AWS and seller-side stand-ins are the session's own servers (moto, model container, runtime,
seller token service), reached over HTTP like in production.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from devstack.embedded_redis import start_redis
from devstack.wsgi_thread import free_port
from tests.subscriptions.conftest import PRODUCT, SELLER_ISSUER, StandIns

ROOT = Path(__file__).resolve().parents[2]
# Runs this module's main() in a subprocess with Django set up (its settings from the env).
_HELPER = [
    "-c",
    "import sys, django; django.setup(); "
    "from tests.subscriptions.test_jobs_worker import main; main(sys.argv[1:])",
]
RECORDS = 600
PER_CHUNK = 20


def _env(db_path: Path, redis_url: str, moto_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "GATEHOUSE_ENV": "local",
        # IMMEDIATE: two worker processes writing the same SQLite file wait for each other instead
        # of failing a lock upgrade.
        "DATABASE_URL": f"sqlite:///{db_path}?timeout=30&transaction_mode=IMMEDIATE",
        "DATABASE_CONN_MAX_AGE": "0",
        "REDIS_URL": redis_url,
        "AWS_ENDPOINT_URL": moto_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_MAX_ATTEMPTS": "1",
        "JOBS_RECORDS_PER_CHUNK": str(PER_CHUNK),
        "JOBS_RETRY_BACKOFF_MAX_SECONDS": "2",
        "JOBS_CHUNK_MAX_RETRIES": "30",
        # A task whose worker died is delivered again after this many seconds.
        "CELERY_VISIBILITY_TIMEOUT": "8",
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "LOG_LEVEL": "WARNING",
        **extra,
    }
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        env.pop(name, None)
    return env


def _run(args: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    # Its own process group, so the test can SIGKILL the worker and its pool children at once.
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "--concurrency=2",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _kill_group(process: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _job_row(db_path: Path, job_id: str) -> dict:
    with sqlite3.connect(db_path, timeout=30) as connection:
        connection.row_factory = sqlite3.Row
        row = connection.execute(
            "SELECT status, records_total, records_done, records_failed, chunks_done, "
            "output_uri, error_code FROM subscriptions_job WHERE id = ?",
            (job_id.replace("-", ""),),
        ).fetchone()
    return dict(row)


def _wait(db_path: Path, job_id: str, until, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    row = _job_row(db_path, job_id)
    while time.monotonic() < deadline:
        row = _job_row(db_path, job_id)
        if until(row):
            return row
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting; job is {row}")


class RedisServer:
    """The bundled redis-server on a fixed free port, which the test can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = start_redis(self.port, workdir)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Stop and start again: persistence is off, so every queued message is lost."""
        self.stop()
        self.process = start_redis(self.port, self.workdir)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def _start_beat(env: dict[str, str], log: Path, schedule: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "beat", "-s", str(schedule)],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.parametrize("disruption", ["worker_killed", "redis_restarted", "model_flaky"])
def test_a_job_survives_a_disruption_with_exactly_one_output_per_record(
    tmp_path: Path,
    redis_server: RedisServer,
    moto_server: str,
    standins: StandIns,
    disruption: str,
) -> None:
    standins.reset()
    # Slow enough calls that the disruption lands in the middle of the job.
    knobs: dict[str, float] = {"latency_ms": 150}
    if disruption == "model_flaky":  # 20% of calls throttled or failing with a 500
        knobs.update(error_rate=0.1, throttle_rate=0.1)
    requests.put(
        f"{standins.container.url}/_stand-in/knobs", json=knobs, timeout=5
    ).raise_for_status()
    db_path = tmp_path / "jobs.sqlite3"
    env = _env(
        db_path,
        redis_server.url,
        moto_server,
        # The beat's reconciler: what Redis lost is enqueued again after a few idle seconds.
        JOBS_STALL_SECONDS="6",
        JOBS_RECONCILE_INTERVAL_SECONDS="2",
        DYNAMODB_PUBLICATION_ENABLED="false",
        ENDPOINT_SYNC_INTERVAL_SECONDS="3600",
    )
    _run(["manage.py", "migrate", "--noinput", "-v", "0"], env, timeout=300)
    seeded = _run([*_HELPER, "seed", standins.seller.url, standins.runtime.url, str(RECORDS)], env)
    job_id = json.loads(seeded.strip().splitlines()[-1])["job_id"]
    log = tmp_path / "worker.log"

    processes = [_start_worker(env, log), _start_beat(env, log, tmp_path / "beat-schedule")]
    try:
        _wait(db_path, job_id, lambda row: row["records_done"] >= 4 * PER_CHUNK, timeout=120)
        if disruption == "worker_killed":
            _kill_group(processes[0])
            processes[0] = _start_worker(env, log)
        elif disruption == "redis_restarted":
            redis_server.restart()
        assert _job_row(db_path, job_id)["status"] == "running"
        row = _wait(
            db_path,
            job_id,
            lambda row: row["status"] not in ("queued", "running"),
            timeout=240,
        )
    finally:
        for process in processes:
            _kill_group(process, signal.SIGTERM)
        requests.put(
            f"{standins.container.url}/_stand-in/knobs",
            json={"latency_ms": 0, "error_rate": 0, "throttle_rate": 0},
            timeout=5,
        ).raise_for_status()

    assert row["status"] == "succeeded", (row, log.read_text()[-3000:])
    assert (row["records_total"], row["records_done"], row["records_failed"]) == (
        RECORDS,
        RECORDS,
        0,
    )
    output = _run([*_HELPER, "output", row["output_uri"]], env)
    records = [json.loads(line)["record"] for line in output.splitlines() if line.strip()]
    assert records == list(range(RECORDS))


# --- What the subprocesses run ----------------------------------------------------------------


def _seed(seller_url: str, runtime_url: str, records: int) -> None:
    """Both LOBs, the transcoder listing and lob-a's subscription; submit one CSV job."""
    import io

    from accounts.models import AwsAccount
    from accounts.services.aws_verification import account_access
    from portal import aws_gateway
    from subscriptions.services.jobs import job_submit
    from tests.factories import EndpointFactory, ListingFactory, SubscriptionFactory
    from tests.tenancy_world import build_world

    world = build_world()
    listing = ListingFactory(
        product_code=PRODUCT,
        name="Identity Transcoder",
        token_service_url=seller_url,
        seller_issuer=SELLER_ISSUER,
        seller_jwks_url=f"{seller_url}/.well-known/jwks.json",
    )
    subscription = SubscriptionFactory(lob=world.lob_a, listing=listing)
    EndpointFactory(subscription=subscription, name=f"{PRODUCT}-lob-a")
    AwsAccount.objects.filter(pk=world.lob_a.aws_account_id).update(
        sagemaker_runtime_endpoint_url=runtime_url
    )
    subscription.refresh_from_db()
    account = AwsAccount.objects.get(pk=world.lob_a.aws_account_id)
    s3 = aws_gateway.client("s3", access=account_access(account))
    try:
        with aws_gateway.aws_errors():
            s3.create_bucket(Bucket=account.results_bucket)
    except aws_gateway.AwsError as exc:
        if exc.aws_code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    rows = "".join(f"person{n}@example.com,{5550100000 + n}\n" for n in range(records))
    upload = io.BytesIO(("email,phone\n" + rows).encode())
    job, _ = job_submit(
        subscription=subscription,
        principal=world.user("analyst"),
        content_type="text/csv",
        file=upload,
    )
    print(json.dumps({"job_id": str(job.pk)}))


def _output(uri: str) -> None:
    from accounts.models import AwsAccount
    from accounts.services.aws_verification import account_access
    from portal import aws_gateway

    bucket, _, key = uri.removeprefix("s3://").partition("/")
    account = AwsAccount.objects.get(results_bucket=bucket)
    s3 = aws_gateway.client("s3", access=account_access(account))
    sys.stdout.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())


def main(argv: list[str]) -> None:
    """``seed <seller url> <runtime url> <records>`` or ``output <s3 uri>`` (Django set up)."""
    if argv[0] == "seed":
        _seed(argv[1], argv[2], int(argv[3]))
    elif argv[0] == "output":
        _output(argv[1])
