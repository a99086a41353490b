"""Benchmark: what the authorized proxy path adds to a SageMaker InvokeEndpoint call.

Starts its own world, every piece in its own process on loopback: moto (STS, S3), the model
container, the SageMaker runtime stand-in in front of it, the seller's token service, a Redis, and
the portal under gunicorn on a throwaway database (SQLite; with a PostgreSQL ``DATABASE_URL``, a
fresh ``<name>_proxy_bench`` database next to it, dropped at the end). Then sends ``BENCH_CALLS``
(2,000) calls of about 1 KB (JSON lines) three ways, on the same container:

1. direct: botocore's sagemaker-runtime client straight to the runtime stand-in (the baseline);
2. the portal's path in-process: the scoped selector + ``invocation_run`` (permission re-check,
   seller token verification, assumed-role client, InvokeEndpoint, S3 write with SSE, Invocation
   row and audit event);
3. the portal's path over HTTP: ``POST /api/v1/subscriptions/{id}/invocations/`` to gunicorn.

Paths 2 and 3 run twice: with the answer written to S3 before answering (the default) and after
(``INVOKE_RESULT_WRITE=after_answer``: writer threads, S3 off the caller's path).

Prints p50 and p99 of each, the in-process overhead split into authorization, credentials, invoke,
S3 write and recording, and the ratios it is judged by: overhead excluding the S3 write at p50
(aim: at most 1 ms) and whole path p50 / direct p50 (aim: at most 1.5).

    .venv/bin/python bench/proxy_overhead.py            # BENCH_CALLS=200 for a quick look
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse \
        .venv/bin/python bench/proxy_overhead.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.embedded_redis import port_open, start_redis  # noqa: E402
from devstack.wsgi_thread import free_port  # noqa: E402

CALLS = int(os.environ.get("BENCH_CALLS", "2000"))
WARM_UP = 50
PYTHON = sys.executable
BIN = Path(PYTHON).parent
ACCOUNT_ID = "111111111111"
PRODUCT = "identity-transcoder"
ENDPOINT = "identity-transcoder-bench"
AIM_OVERHEAD_MS = 1.0
AIM_RATIO = 1.5


def payload() -> bytes:
    """About 1 KB of JSON lines: 16 records with an email and a phone each."""
    lines = [
        json.dumps({"email": f"person.{n:03d}@example.com", "phone": f"+1 555 010 {n:04d}"})
        for n in range(16)
    ]
    return ("\n".join(lines) + "\n").encode()


def wait_for(port: int, process: subprocess.Popen, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port):
            return
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout:.0f}s")


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(int(len(ordered) * 0.99) - 1, 0)]


def timed(call: Callable[[], object], count: int) -> list[float]:
    for _ in range(WARM_UP):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


class World:
    """The processes of the benchmark; stopped (all of them) on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen] = []
        self.ports = {
            name: free_port()
            for name in ("redis", "moto", "container", "runtime", "seller", "portal")
        }
        self.postgres = postgres_bench_url(os.environ.get("DATABASE_URL", ""))
        self.env = {
            **os.environ,
            "GATEHOUSE_ENV": "local",
            "DJANGO_DEBUG": "false",
            "DATABASE_URL": self.postgres or f"sqlite:///{workdir / 'bench.sqlite3'}",
            "REDIS_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "AWS_ENDPOINT_URL": self.url("moto"),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            # One log line per call would measure the terminal, not the path.
            "LOG_LEVEL": "WARNING",
        }

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def spawn(self, name: str, command: list[str]) -> None:
        process = subprocess.Popen(  # noqa: S603 (our own fixed command lines)
            command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        wait_for(self.ports[name], process, name)

    def start_backends(self) -> None:
        self.processes.append(start_redis(self.ports["redis"], self.workdir / "redis"))
        self.spawn(
            "moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.ports["moto"])]
        )
        self.spawn(
            "container",
            [PYTHON, "-m", "devstack.model_container", "--port", str(self.ports["container"])],
        )
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

    def start_portal(self, **settings: str) -> None:
        """gunicorn with the portal, its environment plus ``settings``."""
        saved = self.env
        self.env = {**saved, **settings}
        try:
            self.spawn(
                "portal",
                [
                    str(BIN / "gunicorn"), "portal.wsgi:application",
                    "--bind", f"127.0.0.1:{self.ports['portal']}",
                    "--workers", "1", "--worker-class", "gthread", "--threads", "4",
                    "--log-level", "warning",
                ],
            )  # fmt: skip
        finally:
            self.env = saved
        self.portal = self.processes[-1]

    def stop_portal(self) -> None:
        self.portal.terminate()
        self.portal.wait(timeout=30)
        self.processes.remove(self.portal)
        while port_open("127.0.0.1", self.ports["portal"]):
            time.sleep(0.05)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def postgres_bench_url(url: str) -> str:
    """For a PostgreSQL DATABASE_URL, the URL of a throwaway database next to it; else ''."""
    if not url.startswith(("postgres://", "postgresql://")):
        return ""
    base, _, name = url.rpartition("/")
    return f"{base}/{name.split('?')[0] or 'gatehouse'}_proxy_bench"


def postgres_recreate(url: str, *, drop_only: bool = False) -> None:
    """Drop the benchmark's database and (unless ``drop_only``) create it empty."""
    import psycopg

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop_only:
            admin.execute(f'CREATE DATABASE "{name}"')


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


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(143)  # unwinds through main's finally, which stops every process


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    world = World(workdir)
    if world.postgres:
        postgres_recreate(world.postgres)
    try:
        return run(world)
    finally:
        world.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        if world.postgres:
            from django.db import connections

            connections.close_all()
            postgres_recreate(world.postgres, drop_only=True)


def run(world: World) -> int:
    os.environ.update(world.env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from portal import aws_gateway
    from subscriptions.services import result_store
    from subscriptions.services.seller_tokens import subscription_authorize

    world.start_backends()
    call_command("migrate", verbosity=0)
    from django.db import connection

    if connection.vendor == "sqlite":
        # What a SQLite deployment should run with: one fsync per commit, readers never blocked.
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA journal_mode=WAL")
    analyst, subscription = build_data(world)
    token = subscription_authorize(subscription=subscription, principal=analyst).token
    body = payload()
    print(
        f"{CALLS} calls of {len(body)} bytes (application/jsonlines, 16 records) per path; "
        f"{os.cpu_count()} CPUs; every component in its own process on loopback; "
        f"database: {connection.vendor}"
    )

    # 1. Direct: the same botocore configuration the portal uses, no role, no checks, no S3.
    runtime = aws_gateway.client(
        "sagemaker-runtime", endpoint_url=world.url("runtime"), read_timeout=70
    )

    def direct() -> None:
        answer = runtime.invoke_endpoint(
            EndpointName=ENDPOINT, Body=body, ContentType="application/jsonlines"
        )
        answer["Body"].read()

    direct_ms = timed(direct, CALLS)

    # 2. The portal's path, in-process: what an API view or a Celery chunk runs, with the answer
    #    written to S3 before answering (the default) and after (INVOKE_RESULT_WRITE).
    in_process = {
        mode: in_process_run(analyst, subscription, token, body, mode)
        for mode in (result_store.BEFORE_ANSWER, result_store.AFTER_ANSWER)
    }

    # 3. Over HTTP: gunicorn in its own process, a signed-in session, keep-alive; both modes.
    over_http = {}
    for mode in (result_store.BEFORE_ANSWER, result_store.AFTER_ANSWER):
        world.start_portal(INVOKE_RESULT_WRITE=mode)
        over_http[mode] = http_run(world, analyst, subscription, token, body)
        world.stop_portal()
    if any(samples is None for samples in over_http.values()):
        return 1

    report(direct_ms, in_process, over_http)
    return 0


def in_process_run(analyst, subscription, token: str, body: bytes, mode: str) -> dict:
    """The path called in-process under one INVOKE_RESULT_WRITE mode: total and split samples."""
    from django.test import override_settings

    from subscriptions.selectors import subscription_for_member
    from subscriptions.services import result_store
    from subscriptions.services.proxy import invocation_run

    splits: dict[str, list[float]] = {}
    lookups: list[float] = []

    def call() -> None:
        started = time.perf_counter()
        current = subscription_for_member(analyst, subscription.pk)
        lookups.append((time.perf_counter() - started) * 1000)
        result = invocation_run(
            subscription=current,
            principal=analyst,
            token=token,
            body=body,
            content_type="application/jsonlines",
        )
        for name, value in result.timings.items():
            splits.setdefault(name, []).append(value)

    with override_settings(INVOKE_RESULT_WRITE=mode):
        total = timed(call, CALLS)
        result_store.writers.drain()
    for name in splits:
        del splits[name][:WARM_UP]
    del lookups[:WARM_UP]
    splits["authorization"] = [a + b for a, b in zip(splits["authorization"], lookups, strict=True)]
    return {"total": total, "splits": splits}


def http_run(world: World, analyst, subscription, token: str, body: bytes) -> list[float] | None:
    """``CALLS`` POSTs to the invocations endpoint of the running portal; None if it refuses."""
    import requests

    http = requests.Session()
    csrf = "b" * 32
    http.cookies.update({**session_cookie_for(analyst), "csrftoken": csrf})
    url = f"{world.url('portal')}/api/v1/subscriptions/{subscription.pk}/invocations/"
    headers = {
        "Content-Type": "application/jsonlines",
        "X-Subscription-Token": token,
        "X-CSRFToken": csrf,
    }
    probe = http.post(url, data=body, headers=headers, timeout=75)
    if probe.status_code != 200:
        print(f"the portal answered {probe.status_code}: {probe.text[:300]}")
        return None

    def over_http() -> None:
        response = http.post(url, data=body, headers=headers, timeout=75)
        if response.status_code != 200:
            raise RuntimeError(f"the portal answered {response.status_code}")

    return timed(over_http, CALLS)


def report(direct_ms: list[float], in_process: dict, over_http: dict) -> None:
    """Print the figures, the split, and the ratios the aims judge."""
    direct_p50 = percentiles(direct_ms)[0]
    rows = [("direct InvokeEndpoint (botocore → runtime stand-in)", direct_ms)]
    for mode in in_process:
        rows.append(
            (f"portal in-process, {mode} (selector + invocation_run)", in_process[mode]["total"])
        )
        rows.append((f"portal over HTTP, {mode} (gunicorn, session auth)", over_http[mode]))
    for label, samples in rows:
        p50, p99 = percentiles(samples)
        print(f"{label:62} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   ×{p50 / direct_p50:.2f}")
    labels = {
        "authorization": "authorization (scoped lookup + role, payload, seller token)",
        "credentials": "credentials (assumed-role session, cached client)",
        "invoke": "invoke (InvokeEndpoint through the runtime stand-in)",
        "store": "S3 write (PutObject, SSE-S3, to moto), or queueing it",
        "record": "record (Invocation row + audit event)",
    }
    for mode, run in in_process.items():
        splits = run["splits"]
        print(f"in-process path, {mode}, split (p50 / p99 ms):")
        for name, label in labels.items():
            p50, p99 = percentiles(splits[name])
            print(f"  {label:64} {p50:6.2f} / {p99:6.2f}")
        overhead = [
            total - invoke - store
            for total, invoke, store in zip(
                run["total"], splits["invoke"], splits["store"], strict=True
            )
        ]
        overhead_p50 = percentiles(overhead)[0]
        invoke_p50 = percentiles(splits["invoke"])[0]
        print(
            f"  invoke inside the path vs direct, p50: {invoke_p50 - direct_p50:+.2f} ms; "
            f"overhead excluding the S3 write, p50: {overhead_p50:.2f} ms "
            f"(aim ≤ {AIM_OVERHEAD_MS:.0f} ms): ratio {overhead_p50 / AIM_OVERHEAD_MS:.2f}"
        )
    for mode in in_process:
        in_process_p50 = percentiles(in_process[mode]["total"])[0]
        http_p50 = percentiles(over_http[mode])[0]
        print(
            f"whole path p50 / direct p50, {mode}: in-process {in_process_p50 / direct_p50:.2f}, "
            f"over HTTP {http_p50 / direct_p50:.2f} (aim ≤ {AIM_RATIO})"
        )


if __name__ == "__main__":
    sys.exit(main())
