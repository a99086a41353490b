"""Benchmark: records per second through the model container stand-in over HTTP.

Starts ``python -m devstack.model_container`` as a subprocess on a free port (the same server the
demo runs), then sends batches of 1,000 records per request with one ``requests.Session`` for
each content type (CSV, JSON, JSON lines). Every answer is checked for one result per record.
Prints records/s per content type and the ratio it is judged by: the slowest content type's
records/s / 10,000 (at least 1.0 passes).

    .venv/bin/python bench/model_container_throughput.py [--batches 100] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack.wsgi_thread import free_port  # noqa: E402

TARGET_RECORDS_PER_SECOND = 10_000.0
DOMAIN_HEADER = {"X-Amzn-SageMaker-Custom-Attributes": "domain=bench.example"}


def make_records(count: int, seed: int = 4) -> list[dict[str, str]]:
    """Synthetic records shaped like a buyer's file: most carry email and phone, some a MAID."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        mailbox = rng.choice(["gmail.com", "example.com"])
        area, exchange, line = rng.randint(200, 999), rng.randint(200, 999), rng.randint(0, 9999)
        record = {
            "email": f"Person.{n}+tag{rng.randint(0, 9)}@{mailbox}",
            "phone": f"({area}) {exchange}-{line:04d}",
            "maid": "",
            "segment": rng.choice(["a", "b", "c"]),
        }
        if n % 3 == 0:
            record["maid"] = "%08X-%04X-%04X-%04X-%012X" % (  # noqa: UP031 - fixed-width hex
                rng.getrandbits(32),
                rng.getrandbits(16),
                rng.getrandbits(16),
                rng.getrandbits(16),
                rng.getrandbits(48),
            )
        records.append(record)
    return records


def encode(records: list[dict[str, str]], content_type: str) -> bytes:
    """The batch as a request body of ``content_type``."""
    if content_type == "text/csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
        return buffer.getvalue().encode()
    if content_type == "application/json":
        return json.dumps({"records": records}).encode()
    return "".join(json.dumps(record) + "\n" for record in records).encode()


def result_count(body: bytes, accept: str) -> int:
    """How many results an answer holds."""
    if accept == "application/json":
        return len(json.loads(body)["results"])
    return body.count(b"\n")


def start_container(port: int) -> subprocess.Popen[bytes]:
    """The container CLI on ``port``; returns once /ping answers."""
    # Our own interpreter and module, no shell: nothing untrusted reaches the command line.
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "devstack.model_container", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200:
                return process
        except requests.ConnectionError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the model container did not start within 20 s")


def run(url: str, content_type: str, body: bytes, batches: int, batch_size: int) -> float:
    """Send ``batches`` requests; returns records per second."""
    accept = "application/json" if content_type == "application/json" else "application/jsonlines"
    headers = {"Content-Type": content_type, "Accept": accept, **DOMAIN_HEADER}
    with requests.Session() as session:
        # Warm-up: connection and the per-domain key.
        session.post(url, data=body, headers=headers, timeout=30).raise_for_status()
        started = time.perf_counter()
        for _ in range(batches):
            response = session.post(url, data=body, headers=headers, timeout=30)
            response.raise_for_status()
            if result_count(response.content, accept) != batch_size:
                raise SystemExit(f"{content_type}: an answer did not hold {batch_size} results")
        elapsed = time.perf_counter() - started
    return batches * batch_size / elapsed


def main() -> int:
    """Start the container, measure each content type, print the figures and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1_000)
    args = parser.parse_args()

    records = make_records(args.batch_size)
    port = free_port()
    process = start_container(port)
    url = f"http://127.0.0.1:{port}/invocations"
    rates = {}
    try:
        for content_type in ("text/csv", "application/json", "application/jsonlines"):
            body = encode(records, content_type)
            rates[content_type] = run(url, content_type, body, args.batches, args.batch_size)
    finally:
        process.terminate()
        process.wait(timeout=10)

    print(f"model container: {args.batches} batches x {args.batch_size} records per type")
    for content_type, rate in rates.items():
        print(f"  {content_type:<24} {rate:>10,.0f} records/s")
    slowest = min(rates.values())
    ratio = slowest / TARGET_RECORDS_PER_SECOND
    print(
        f"slowest: {slowest:,.0f} records/s; ratio records/s / 10,000 = {ratio:.2f} (>= 1 passes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
