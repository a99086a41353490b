"""Benchmark: what the authorized proxy path adds to a SageMaker InvokeEndpoint call.

Starts its own world, every piece in its own process on loopback: moto (STS, S3), the model
container, the SageMaker runtime stand-in in front of it, the seller's token service, a Redis, and
the portal under gunicorn on a throwaway database (SQLite; with a PostgreSQL ``DATABASE_URL``, a
fresh database of its own next to it, dropped at the end: ``bench/_world.py``). Then sends
``BENCH_CALLS`` (2,000) calls of about 1 KB (JSON lines) three ways, on the same container:

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
    BENCH_MODEL_LATENCY_MS=20 .venv/bin/python bench/proxy_overhead.py   # a model that takes 20 ms
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse \
        .venv/bin/python bench/proxy_overhead.py
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._world import (
    ENDPOINT,
    ThrowawayDatabase,
    World,
    session_cookie_for,
    world_ready,
)

CALLS = int(os.environ.get("BENCH_CALLS", "2000"))
WARM_UP = 50
AIM_OVERHEAD_MS = 1.0
AIM_RATIO = 1.5


def payload() -> bytes:
    """About 1 KB of JSON lines: 16 records with an email and a phone each."""
    lines = [
        json.dumps({"email": f"person.{n:03d}@example.com", "phone": f"+1 555 010 {n:04d}"})
        for n in range(16)
    ]
    return ("\n".join(lines) + "\n").encode()


def percentiles(samples: list[float]) -> tuple[float, float]:
    """(p50, p99) in milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[max(int(len(ordered) * 0.99) - 1, 0)]


def timed(call: Callable[[], object], count: int) -> list[float]:
    """Milliseconds of each of ``count`` calls, after ``WARM_UP`` calls that are not counted."""
    for _ in range(WARM_UP):
        call()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(143)  # unwinds through main's finally, which stops every process


def main() -> int:
    """Build the world on a throwaway database, run, tear everything down."""
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-"))
    database = ThrowawayDatabase(workdir, f"gatehouse_proxy_bench_{os.getpid()}")
    world = World(workdir, database_url=database.url)
    try:
        return run(world, database)
    finally:
        world.stop()
        from django.db import connections

        connections.close_all()
        database.drop()
        shutil.rmtree(workdir, ignore_errors=True)


def run(world: World, database: ThrowawayDatabase) -> int:
    """The direct, in-process and HTTP runs, then the figures; 1 if the portal refused a call."""
    analyst, subscription = world_ready(world, database)
    from django.db import connection

    from portal import aws_gateway
    from subscriptions.services import result_store
    from subscriptions.services.seller_tokens import subscription_authorize

    latency = os.environ.get("BENCH_MODEL_LATENCY_MS", "")
    token = subscription_authorize(subscription=subscription, principal=analyst).token
    body = payload()
    print(
        f"{CALLS} calls of {len(body)} bytes (application/jsonlines, 16 records) per path; "
        f"model latency {latency or 0} ms; "
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
