"""What the process-based benchmarks share: their world, each piece in its own process on loopback.

:class:`World` starts and stops the processes (a Redis, moto, the model container, the SageMaker
runtime stand-in in front of it, the seller's token service, the portal under gunicorn, Celery
workers) and holds the environment they all run with; :func:`build_data` creates a LOB subscribed
to the transcoder; :func:`session_cookie_for` signs a user in for HTTP calls;
:func:`peak_rss_bytes` reads a process's peak memory from ``/proc``.

The database is a throwaway: a PostgreSQL database of its own next to ``DATABASE_URL`` when that
names a PostgreSQL server (created, and dropped on stop), else a SQLite file in the work directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devstack.embedded_redis import port_open, start_redis  # noqa: E402
from devstack.wsgi_thread import free_port  # noqa: E402

PYTHON = sys.executable
BIN = Path(PYTHON).parent
ACCOUNT_ID = "111111111111"
PRODUCT = "identity-transcoder"
ENDPOINT = "identity-transcoder-bench"


def wait_for(port: int, process: subprocess.Popen, name: str, timeout: float = 30.0) -> None:
    """Return once something listens on ``port``; raise if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f}s")


def peak_rss_bytes(pid: int) -> int:
    """The process's peak resident set size (``VmHWM``), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class ThrowawayDatabase:
    """The benchmark's database: PostgreSQL beside ``DATABASE_URL`` when it names one, else SQLite.

    Celery workers are other processes, so an in-memory database will not do. SQLite runs in WAL
    mode with IMMEDIATE transactions and a long busy timeout, so that concurrent writers queue up
    instead of failing a lock upgrade; PostgreSQL is what a deployment runs and is preferred.
    """

    def __init__(self, workdir: Path, name: str) -> None:
        configured = os.environ.get("DATABASE_URL", "")
        self.vendor = "postgresql" if configured.startswith(("postgres:", "postgresql:")) else ""
        if self.vendor:
            parts = urlsplit(configured)
            self._admin_url = urlunsplit(parts._replace(path="/postgres"))
            self.url = urlunsplit(parts._replace(path=f"/{name}"))
            self.name = name
            self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self._execute(f'CREATE DATABASE "{name}"')
        else:
            self.vendor = "sqlite"
            self.path = workdir / f"{name}.sqlite3"
            self.url = f"sqlite:///{self.path}?timeout=60&transaction_mode=IMMEDIATE"

    def _execute(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self._admin_url, autocommit=True) as connection:
            connection.execute(statement)

    def prepare(self) -> None:
        """After migrating: WAL for SQLite (one fsync per commit, readers never blocked)."""
        if self.vendor != "sqlite":
            return
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")

    def drop(self) -> None:
        """Drop the PostgreSQL database (the SQLite file goes with the work directory)."""
        if self.vendor == "postgresql":
            try:
                self._execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            except Exception as exc:  # cleanup only: report it, do not hide the figures
                print(f"could not drop the bench database {self.name}: {exc}", file=sys.stderr)


class World:
    """The processes of a benchmark and the environment they share; :meth:`stop` ends them all."""

    def __init__(self, workdir: Path, *, database_url: str, **env: str) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []
        self.named: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}
        for name in ("redis", "moto", "container", "runtime", "seller", "portal"):
            self.ports[name] = free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "GATEHOUSE_ENV": "local",
            "DJANGO_DEBUG": "false",
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "AWS_ENDPOINT_URL": self.url("moto"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            # One log line per call would measure the terminal, not the path.
            "LOG_LEVEL": "WARNING",
            **env,
        }
        for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
            self.env.pop(name, None)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def spawn(self, name: str, command: list[str], *, listens: bool = True) -> subprocess.Popen:
        """Start a process of the world (its output in ``{workdir}/{name}.log``)."""
        log = (self.workdir / f"{name}.log").open("ab")
        process = subprocess.Popen(  # noqa: S603 (our own fixed command lines)
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        self.named[name] = process
        if listens:
            wait_for(self.ports[name], process, name)
        return process

    def start_backends(self, *, container_args: tuple[str, ...] = ()) -> None:
        """Redis, moto, the model container, the runtime stand-in and the seller's token service."""
        self.named["redis"] = start_redis(self.ports["redis"], self.workdir / "redis")
        self.processes.append(self.named["redis"])
        # moto reading only the bytes a ranged GET asks for, as S3 does (see bench/_moto_server.py).
        self.spawn(
            "moto",
            [PYTHON, "-m", "bench._moto_server", "-H", "127.0.0.1", "-p", str(self.ports["moto"])],
        )
        self.spawn(
            "container",
            [
                PYTHON, "-m", "devstack.model_container", "--port", str(self.ports["container"]),
                *container_args,
            ],
        )  # fmt: skip
        self.spawn(
            "runtime",
            [
                PYTHON, "-m", "devstack.sagemaker_runtime", "--port", str(self.ports["runtime"]),
                "--endpoint", f"{ENDPOINT}={self.url('container')}",
            ],
        )  # fmt: skip
        self.spawn(
            "seller",
            [
                PYTHON, "-m", "devstack.seller_token_service", "--port", str(self.ports["seller"]),
                "--entitle", f"{PRODUCT}:{ACCOUNT_ID}",
            ],
        )  # fmt: skip

    def start_portal(self, *, threads: int = 4, **settings: str) -> subprocess.Popen:
        """The portal under gunicorn: one gthread worker (long uploads keep it alive), run with
        the world's environment plus ``settings``."""
        saved = self.env
        self.env = {**saved, **settings}
        try:
            return self.spawn(
                "portal",
                [
                    str(BIN / "gunicorn"), "portal.wsgi:application",
                    "--bind", f"127.0.0.1:{self.ports['portal']}",
                    "--workers", "1", "--worker-class", "gthread", "--threads", str(threads),
                    "--timeout", "90", "--log-level", "warning",
                ],
            )  # fmt: skip
        finally:
            self.env = saved

    def stop_portal(self) -> None:
        """Stop the portal and wait until its port is free (to start it again, differently)."""
        portal = self.named.pop("portal")
        portal.terminate()
        portal.wait(timeout=30)
        self.processes.remove(portal)
        while port_open("127.0.0.1", self.ports["portal"]):
            time.sleep(0.05)

    def start_worker(self, name: str, *, concurrency: int = 1) -> subprocess.Popen:
        """A ``celery worker`` process (prefork, as deployed) consuming the default queue."""
        # Workers log through the portal's settings (portal/celery.py): LOG_LEVEL sets the level.
        saved = self.env
        self.env = {**saved, "LOG_LEVEL": os.environ.get("BENCH_WORKER_LOGLEVEL", "WARNING")}
        try:
            return self.spawn(
                name,
                [
                    PYTHON, "-m", "celery", "-A", "portal", "worker",
                    "--pool", "prefork", "--concurrency", str(concurrency),
                    "--hostname", f"{name}@%h", "--without-gossip", "--without-mingle",
                ],
                listens=False,
            )  # fmt: skip
        finally:
            self.env = saved

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def world_ready(world: World, database: ThrowawayDatabase):
    """Django set up on the world's environment, the backends started, the database migrated and
    filled: the analyst and the subscription of :func:`build_data`.

    ``BENCH_MODEL_LATENCY_MS``: the container waits this long in every call, as a model elsewhere
    would (a real endpoint answers in tens of milliseconds, not the stand-in's few).
    """
    os.environ.update(world.env)
    import django

    django.setup()
    from django.core.management import call_command

    latency = os.environ.get("BENCH_MODEL_LATENCY_MS", "")
    world.start_backends(container_args=("--latency-ms", latency) if latency else ())
    call_command("migrate", verbosity=0)
    database.prepare()
    return build_data(world)


def build_data(world: World):
    """The LOB, its account, an analyst, the listing, the subscription and its endpoint."""
    from accounts.models import AwsAccount, Lob, Membership, User
    from accounts.services.aws_verification import account_access
    from portal import aws_gateway
    from subscriptions.models import Endpoint, Listing, Subscription

    account = AwsAccount.objects.create(
        account_id=ACCOUNT_ID,
        name="Bench account",
        invoke_role_arn=f"arn:aws:iam::{ACCOUNT_ID}:role/GatehouseInvokeRole",
        results_bucket="gatehouse-results-bench",
        sagemaker_runtime_endpoint_url=world.url("runtime"),
    )
    lob = Lob.objects.create(slug="lob-a", name="LOB A", aws_account=account)
    analyst = User.objects.create(username="bench-analyst", idp_issuer="bench", idp_subject="1")
    Membership.objects.create(user=analyst, lob=lob, role=Membership.Role.ANALYST)
    seller = world.url("seller")
    listing = Listing.objects.create(
        product_code=PRODUCT,
        name="Identity Transcoder",
        seller_name="Acme Identity",
        content_types=["text/csv", "application/json", "application/jsonlines"],
        token_service_url=seller,
        seller_issuer=seller,
        seller_jwks_url=f"{seller}/.well-known/jwks.json",
    )
    subscription = Subscription.objects.create(
        lob=lob, listing=listing, status=Subscription.Status.ACTIVE
    )
    Endpoint.objects.create(subscription=subscription, name=ENDPOINT, region="us-east-1")
    s3 = aws_gateway.client("s3", access=account_access(account))
    with aws_gateway.aws_errors():
        s3.create_bucket(Bucket=account.results_bucket)
    return analyst, subscription


def session_cookie_for(user) -> dict[str, str]:
    """A signed-in browser session for ``user`` (sign-in itself is not what is measured)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return {settings.SESSION_COOKIE_NAME: session.session_key}
