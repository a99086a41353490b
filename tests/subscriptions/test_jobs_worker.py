"""Jobs with a real Celery worker process and a Redis the test starts (and kills) itself.

The worker is another process, so it cannot see pytest-django's test database: these tests use a
database of their own that the worker shares — a PostgreSQL database created next to the test
database when ``DATABASE_URL`` names PostgreSQL (CI's second run), else a SQLite file. It is
migrated once per session and copied for each test. Seeding, submitting and cancelling run in a
subprocess (this module's ``main``) with the worker's settings; the test reads the job's progress
straight from the database. The AWS and seller-side stand-ins are the session's own servers (moto,
model container, runtime, seller token service), reached over HTTP like in production.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
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
CONCURRENCY = 2  # the worker's pool processes: at most this many chunks run at once


class WorkerDatabase:
    """A database the test and its worker processes share: PostgreSQL or a SQLite file.

    PostgreSQL when the test run's ``DATABASE_URL`` names it: a database of its own on that server
    (unique, so parallel runs never share one), created from a migrated template. Else a SQLite
    file copied from a migrated one.
    """

    def __init__(self, url: str, *, admin_url: str = "", name: str = "") -> None:
        self.url = url
        self._admin_url = admin_url
        self.name = name
        self.postgres = bool(admin_url)

    @staticmethod
    def _postgres_urls(name: str) -> tuple[str, str]:
        parts = urlsplit(os.environ["DATABASE_URL"])
        return (
            urlunsplit(parts._replace(path="/postgres")),
            urlunsplit(parts._replace(path=f"/{name}")),
        )

    @classmethod
    def wanted_postgres(cls) -> bool:
        return os.environ.get("DATABASE_URL", "").startswith(("postgres:", "postgresql:"))

    @classmethod
    def create(cls, directory: Path, *, template: WorkerDatabase | None = None) -> WorkerDatabase:
        """An empty database (``template=None``) or a copy of ``template``."""
        if cls.wanted_postgres():
            name = f"gatehouse_worker_{uuid.uuid4().hex[:12]}"
            admin_url, url = cls._postgres_urls(name)
            database = cls(url, admin_url=admin_url, name=name)
            clause = f' TEMPLATE "{template.name}"' if template is not None else ""
            database._execute(f'CREATE DATABASE "{name}"{clause}')
            return database
        path = directory / f"jobs-{uuid.uuid4().hex[:8]}.sqlite3"
        if template is not None:
            shutil.copyfile(template.path, path)
        # IMMEDIATE: two worker processes writing the same SQLite file wait for each other instead
        # of failing a lock upgrade.
        return cls(f"sqlite:///{path}?timeout=30&transaction_mode=IMMEDIATE")

    @property
    def path(self) -> Path:
        return Path(urlsplit(self.url).path)

    def _execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self._admin_url, autocommit=True) as connection:
            connection.execute(statement)

    def drop(self) -> None:
        if self.postgres:
            self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        """Run a query (``%s`` placeholders) and return its rows as dicts."""
        if self.postgres:
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.url, row_factory=dict_row, autocommit=True) as connection:
                return list(connection.execute(sql, params).fetchall())
        with sqlite3.connect(self.path, timeout=30) as connection:
            connection.row_factory = sqlite3.Row
            cursor = connection.execute(sql.replace("%s", "?"), params)
            return [dict(row) for row in cursor.fetchall()]

    def job_key(self, job_id: str) -> Any:
        """The job id as this database stores it (a uuid, or 32 hex digits on SQLite)."""
        return uuid.UUID(job_id) if self.postgres else uuid.UUID(job_id).hex


def _env(database_url: str, redis_url: str, moto_url: str, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "portal.settings",
        "GATEHOUSE_ENV": "local",
        "DATABASE_URL": database_url,
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


@pytest.fixture(scope="session")
def migrated_template(
    tmp_path_factory: pytest.TempPathFactory, moto_server: str, embedded_redis: str
) -> Iterator[WorkerDatabase]:
    """One migrated database per session; each test gets a copy (migrating takes seconds)."""
    template = WorkerDatabase.create(tmp_path_factory.mktemp("worker-db"))
    try:
        env = _env(template.url, embedded_redis, moto_server)
        _run(["manage.py", "migrate", "--noinput", "-v", "0"], env, timeout=300)
        yield template
    finally:
        template.drop()


@pytest.fixture
def worker_db(tmp_path: Path, migrated_template: WorkerDatabase) -> Iterator[WorkerDatabase]:
    database = WorkerDatabase.create(tmp_path, template=migrated_template)
    yield database
    database.drop()


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
            f"--concurrency={CONCURRENCY}",
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


def _job_row(database: WorkerDatabase, job_id: str) -> dict:
    (row,) = database.rows(
        "SELECT status, records_total, records_done, records_failed, chunks_done, "
        "output_uri, error_code FROM subscriptions_job WHERE id = %s",
        database.job_key(job_id),
    )
    return row


def _wait(
    database: WorkerDatabase, job_id: str, until: Callable[[dict], bool], timeout: float
) -> dict:
    deadline = time.monotonic() + timeout
    row = _job_row(database, job_id)
    while time.monotonic() < deadline:
        row = _job_row(database, job_id)
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
    worker_db: WorkerDatabase,
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
    env = _env(
        worker_db.url,
        redis_server.url,
        moto_server,
        # The beat's reconciler: what Redis lost is enqueued again after a few idle seconds.
        JOBS_STALL_SECONDS="6",
        JOBS_RECONCILE_INTERVAL_SECONDS="2",
        DYNAMODB_PUBLICATION_ENABLED="false",
        ENDPOINT_SYNC_INTERVAL_SECONDS="3600",
    )
    seeded = _run([*_HELPER, "seed", standins.seller.url, standins.runtime.url, str(RECORDS)], env)
    job_id = json.loads(seeded.strip().splitlines()[-1])["job_id"]
    log = tmp_path / "worker.log"

    processes = [_start_worker(env, log), _start_beat(env, log, tmp_path / "beat-schedule")]
    try:
        _wait(worker_db, job_id, lambda row: row["records_done"] >= 4 * PER_CHUNK, timeout=120)
        if disruption == "worker_killed":
            _kill_group(processes[0])
            processes[0] = _start_worker(env, log)
        elif disruption == "redis_restarted":
            redis_server.restart()
        assert _job_row(worker_db, job_id)["status"] == "running"
        row = _wait(
            worker_db,
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


def _queued_or_running_tasks(redis_url: str) -> int:
    """Messages in the broker's queues plus those delivered but not acknowledged (acks_late)."""
    client = redis.Redis.from_url(redis_url)
    queued = sum(client.llen(key) for key in client.keys("celery*") if client.type(key) == b"list")
    return queued + client.hlen("unacked")


def test_cancelling_a_running_job_stops_its_queued_chunks_and_keeps_finished_parts(
    tmp_path: Path,
    redis_server: RedisServer,
    worker_db: WorkerDatabase,
    moto_server: str,
    standins: StandIns,
) -> None:
    standins.reset()
    # 60 chunks of a slowed model: far more than the worker gets through before the cancel.
    records, per_chunk = 600, 10
    requests.put(
        f"{standins.container.url}/_stand-in/knobs", json={"latency_ms": 400}, timeout=5
    ).raise_for_status()
    env = _env(worker_db.url, redis_server.url, moto_server, JOBS_RECORDS_PER_CHUNK=str(per_chunk))
    seeded = _run([*_HELPER, "seed", standins.seller.url, standins.runtime.url, str(records)], env)
    job_id = json.loads(seeded.strip().splitlines()[-1])["job_id"]
    log = tmp_path / "worker.log"

    worker = _start_worker(env, log)
    try:
        # The lob-a admin cancels through the API once three chunks are done (the helper waits
        # in its own process, so the cancel is not delayed by starting one).
        cancelled = json.loads(_run([*_HELPER, "cancel_when", job_id, str(3 * per_chunk)], env))
        # Settled: nothing queued, nothing delivered and unacknowledged, so no chunk can still
        # start or finish (the bound only keeps a broken run from hanging).
        deadline = time.monotonic() + 120
        while _queued_or_running_tasks(redis_server.url) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _queued_or_running_tasks(redis_server.url) == 0, log.read_text()[-3000:]
    finally:
        _kill_group(worker, signal.SIGTERM)
        requests.put(
            f"{standins.container.url}/_stand-in/knobs", json={"latency_ms": 0}, timeout=5
        ).raise_for_status()
    report = json.loads(_run([*_HELPER, "report", job_id], env))

    assert cancelled == {"status_code": 200, "status": "cancelled"}
    job = report["job"]
    assert (job["status"], job["error_code"], job["output_uri"]) == ("cancelled", "cancelled", "")
    chunks = report["chunks"]
    assert len(chunks) == job["chunks_total"] == records // per_chunk
    assert {chunk["status"] for chunk in chunks} <= {"succeeded", "skipped"}
    succeeded = [chunk for chunk in chunks if chunk["status"] == "succeeded"]
    skipped = [chunk for chunk in chunks if chunk["status"] == "skipped"]
    assert len(succeeded) >= 3 and skipped
    # Every chunk is counted once; the records done are those of the chunks that finished.
    assert job["chunks_done"] == len(chunks)
    assert job["records_done"] == per_chunk * len(succeeded)
    # Finished parts are kept, and they are the only parts: a chunk in flight at the cancel
    # either wrote its part and counts as finished, or wrote nothing.
    assert report["parts"] == sorted(chunk["output_key"] for chunk in succeeded)
    assert not [key for key in report["keys"] if key.endswith(("output.jsonl", "manifest.json"))]
    # The queued chunks stopped before calling the model: only chunks already running when the
    # cancel landed (at most one per pool process) called it afterwards, and no skipped chunk
    # ran more than those.
    assert report["invocations_after_cancel"] <= CONCURRENCY
    assert len([chunk for chunk in skipped if chunk["attempts"]]) <= CONCURRENCY
    assert report["invocations"] <= len(succeeded) + CONCURRENCY
    assert standins.container_counter.calls["/invocations"] == report["invocations"]


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


def _cancel_when(job_id: str, records_done: int) -> None:
    """Once the job has ``records_done`` records done, the lob-a admin cancels it via the API."""
    from rest_framework.test import APIClient

    from accounts.models import User
    from subscriptions.models import Job

    while Job.objects.get(pk=job_id).records_done < records_done:
        time.sleep(0.05)
    client = APIClient()
    client.force_authenticate(User.objects.get(username="lob-a-admin"))
    response = client.post(f"/api/v1/jobs/{job_id}/cancel/")
    print(json.dumps({"status_code": response.status_code, "status": response.json()["status"]}))


def _report(job_id: str) -> None:
    """The job row, its chunks, its objects in S3 and its model calls, as JSON."""
    from accounts.services.aws_verification import account_access
    from portal import aws_gateway
    from subscriptions.models import Invocation, Job
    from subscriptions.services.jobs import job_prefix

    job = Job.objects.select_related("subscription__lob__aws_account").get(pk=job_id)
    account = job.subscription.lob.aws_account
    s3 = aws_gateway.client("s3", access=account_access(account))
    prefix = job_prefix(job.subscription, job.pk)
    listing = s3.list_objects_v2(Bucket=account.results_bucket, Prefix=prefix)
    keys = sorted(item["Key"] for item in listing.get("Contents", []))
    invocations = Invocation.objects.filter(subscription=job.subscription)
    fields = ("status", "error_code", "output_uri", "records_done", "chunks_done", "chunks_total")
    report = {
        "job": {name: getattr(job, name) for name in fields},
        "chunks": list(
            job.chunks.order_by("index").values("index", "status", "attempts", "output_key")
        ),
        "keys": keys,
        "parts": [key for key in keys if key.rpartition("/")[2].startswith("part-")],
        "invocations": invocations.count(),
        "invocations_after_cancel": invocations.filter(started_at__gt=job.finished_at).count(),
    }
    print(json.dumps(report))


def main(argv: list[str]) -> None:
    """Helpers run in a subprocess with Django set up: ``seed <seller url> <runtime url>
    <records>``, ``output <s3 uri>``, ``cancel_when <job id> <records done>``, ``report <job id>``.
    """
    if argv[0] == "seed":
        _seed(argv[1], argv[2], int(argv[3]))
    elif argv[0] == "output":
        _output(argv[1])
    elif argv[0] == "cancel_when":
        _cancel_when(argv[1], int(argv[2]))
    elif argv[0] == "report":
        _report(argv[1])
