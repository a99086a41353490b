"""Benchmark: an inference job's records/s through Celery workers vs a direct client, and memory.

Starts its own world, every piece in its own process on loopback (``bench/_world.py``): Redis
(broker and cache), moto (STS, S3), the identity-transcoder model container, the SageMaker runtime
stand-in in front of it, the seller's token service, the portal under gunicorn and ``BENCH_WORKERS``
(2) ``celery worker`` processes of concurrency 1 each (prefork: a main process and one pool child).
The database is a throwaway PostgreSQL database beside ``DATABASE_URL`` when that names a
PostgreSQL server — what a deployment runs, and preferred: two workers and the web process write at
once, and SQLite makes them queue for its one write lock (it runs in WAL mode with IMMEDIATE
transactions and a busy timeout, so nothing fails, but the workers wait) — else a SQLite file.

Then, on a CSV of ``BENCH_RECORDS`` (100,000) records, ``BENCH_ROUNDS`` (3) times, alternating:

1. direct: boto3's sagemaker-runtime client straight to the runtime stand-in, the same records in
   the same chunks (header row + ``JOBS_RECORDS_PER_CHUNK`` records, ``Accept: JSON Lines``), two
   calls at a time — the most the model can give two callers;
2. the job: the file uploaded to ``POST /api/v1/jobs/`` over HTTP (streamed, multipart), run by
   the workers through the whole proxy path (run-time permission checks, seller token, assumed
   role, InvokeEndpoint, part object, Invocation row and audit event per chunk, counts under row
   locks), then merged into one output and a manifest. Its rate is timed from the job's start to
   its final status (merge included; the upload is shown apart).

Prints records/s of both (median and best), the ratio it is judged by (job ÷ direct, medians; aim
≥ 0.8), where the CPU went (each process of the world, PostgreSQL, this process), and peak memory:
each worker's process tree (sampled RSS and PSS, ``VmHWM`` per process) and the web process that
took the upload. ``--big`` (or ``BENCH_BIG=1``) runs a ~1 GB input (``BENCH_BIG_BYTES``) once, job
only, for the memory figure (aim: worker peak RSS < 300 MB).

Knobs: ``BENCH_CHUNK`` (records per chunk for both sides; default the portal's
``JOBS_RECORDS_PER_CHUNK``), ``JOBS_CHUNKS_PER_TASK``, ``BENCH_MODEL_LATENCY_MS`` (the container
waits that long in each call, as a model elsewhere would), ``BENCH_PROFILE=<dir>`` (py-spy samples
of the workers, when py-spy is on PATH), ``BENCH_KEEP=1`` (keep the work directory and its logs),
``BENCH_WORKER_LOGLEVEL=INFO`` (each task in the workers' logs).
It shares the 2 CPUs of a small machine with everything it starts: run it on a quiet machine.

    .venv/bin/python bench/batch_throughput.py                 # SQLite
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/gatehouse \
        .venv/bin/python bench/batch_throughput.py
    DATABASE_URL=... .venv/bin/python bench/batch_throughput.py --big   # ~1 GB, about 15 minutes
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._world import (
    ENDPOINT,
    ThrowawayDatabase,
    World,
    peak_rss_bytes,
    session_cookie_for,
    world_ready,
)

RECORDS = int(os.environ.get("BENCH_RECORDS", "100000"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
BIG_BYTES = int(os.environ.get("BENCH_BIG_BYTES", str(1_000_000_000)))
AIM_RATIO = 0.8
AIM_WORKER_RSS_MB = 300
WARM_UP_RECORDS = 5_000
MB = 1024 * 1024
HEADER = "email,phone,maid,segment\n"
_DOMAINS = ("gmail.com", "example.com", "example.org")


# --- The input ------------------------------------------------------------------------------------


def record_line(n: int) -> str:
    """One CSV record shaped like a buyer's file (email and phone; a MAID on every third)."""
    maid = ""
    if n % 3 == 0:
        mixed = (n * 2654435761) % (1 << 48)
        maid = f"{n % (1 << 32):08x}-{n % 65521:04x}-4{n % 4093:03x}-8{n % 4091:03x}-{mixed:012x}"
    return (
        f"Person.{n}+tag{n % 10}@{_DOMAINS[n % 3]},"
        f"({200 + n % 800}) {200 + (n // 800) % 800}-{n % 10000:04d},{maid},{'abc'[n % 3]}\n"
    )


def write_input(path: Path, *, records: int | None = None, size: int | None = None) -> int:
    """Write the CSV (a record count, or records until ``size`` bytes); returns the records."""
    count = 0
    written = len(HEADER)
    with path.open("w", encoding="utf-8", newline="") as handle:
        handle.write(HEADER)
        batch: list[str] = []
        while (records is not None and count < records) or (
            size is not None and written < size - 200
        ):
            line = record_line(count)
            batch.append(line)
            written += len(line)
            count += 1
            if len(batch) >= 10_000:
                handle.write("".join(batch))
                batch.clear()
        handle.write("".join(batch))
    return count


def chunk_payloads(path: Path, per_chunk: int) -> list[tuple[bytes, int]]:
    """The job's chunks as the direct client sends them: header + up to ``per_chunk`` records."""
    header = HEADER.encode()
    chunks: list[tuple[bytes, int]] = []
    lines: list[bytes] = []
    with path.open("rb") as handle:
        handle.readline()
        for line in handle:
            lines.append(line)
            if len(lines) == per_chunk:
                chunks.append((header + b"".join(lines), len(lines)))
                lines = []
    if lines:
        chunks.append((header + b"".join(lines), len(lines)))
    return chunks


class MultipartBody:
    """A ``multipart/form-data`` body streamed from a file, with its length known in advance.

    ``requests`` would read a ``files=`` upload whole into memory; this sends 1 GB in 64 KB reads.
    """

    def __init__(self, path: Path, fields: dict[str, str], filename: str, content_type: str):
        self.boundary = uuid.uuid4().hex
        head = "".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
            for name, value in fields.items()
        )
        head += (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        )
        self._head, self._tail = head.encode(), f"\r\n--{self.boundary}--\r\n".encode()
        self._path = path
        self.len = len(self._head) + path.stat().st_size + len(self._tail)

    def __len__(self) -> int:
        return self.len

    def __iter__(self):
        yield self._head
        with self._path.open("rb") as handle:
            while block := handle.read(64 * 1024):
                yield block
        yield self._tail


# --- Memory ---------------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found.extend(int(child) for child in task.read_text().split())
        except OSError:
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (a prefork worker: main process and pool children)."""
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue.extend(_children(current))
    return pids


def rss_bytes(pid: int) -> int:
    """The process's resident memory now (0 once it is gone)."""
    try:
        resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident * os.sysconf("SC_PAGE_SIZE")


def pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (a prefork child shares its parent's) counted once."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def cpu_seconds(pid: int, *, children: bool = True) -> float:
    """User + system CPU time of a process (and its descendants) so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for member in process_tree(pid) if children else [pid]:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def cpu_wait_seconds(pid: int) -> float:
    """Time the process's threads were ready to run but waited for a CPU, so far (schedstat)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total += int((task / "schedstat").read_text().split()[1]) / 1e9  # run_delay, ns
        except (OSError, IndexError, ValueError):
            continue
    return total


def postgres_pids() -> list[int]:
    """The PostgreSQL server's processes (shared with anything else using it on this machine)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


WAIT_KEY = "container waiting for a CPU"


class CpuMeter:
    """CPU seconds each process of the world (and PostgreSQL) spends between start and stop."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.spent: dict[str, float] = {}
        self.container_waited = 0.0

    def _read(self) -> dict[str, float]:
        readings: dict[str, float] = {}
        for name, process in self.world.named.items():
            tree = process_tree(process.pid)
            if len(tree) > 1 and name.startswith("bench-"):  # a worker: main process, pool child
                readings[f"{name} main"] = cpu_seconds(tree[0], children=False)
                readings[f"{name} pool"] = sum(cpu_seconds(p) for p in tree[1:])
            else:
                readings[name] = cpu_seconds(process.pid)
        readings["postgresql (all)"] = sum(
            cpu_seconds(pid, children=False) for pid in postgres_pids()
        )
        readings["this process"] = sum(os.times()[:2])
        # Not CPU spent: how long the model container was ready to run but had no CPU (the
        # other processes had both); kept apart from the CPU figures under a name of its own.
        readings[WAIT_KEY] = cpu_wait_seconds(self.world.named["container"].pid)
        return readings

    def __enter__(self) -> CpuMeter:
        self._started = self._read()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        ended = self._read()
        self.wall = time.perf_counter() - self._wall
        spent = {name: ended[name] - self._started.get(name, 0.0) for name in ended}
        self.container_waited = spent.pop(WAIT_KEY)
        self.spent = spent

    def report(self, label: str) -> None:
        busy = sum(self.spent.values())
        print(
            f"  CPU during {label}: {busy:.1f} s over {self.wall:.1f} s wall "
            f"({busy / self.wall:.2f} cores busy); the container waited "
            f"{self.container_waited:.2f} s for a CPU:"
        )
        for name, spent in sorted(self.spent.items(), key=lambda item: -item[1]):
            if spent >= 0.05:
                print(f"    {name:18} {spent:7.1f} s")


class MemorySampler:
    """Samples each watched process tree's RSS every 250 ms (PSS every 2 s); keeps the peaks."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots
        self.peak_rss = dict.fromkeys(roots, 0)
        self.peak_pss = dict.fromkeys(roots, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        samples = 0
        while not self._stop.wait(0.25):
            samples += 1
            for name, pid in self.roots.items():
                tree = process_tree(pid)
                rss = sum(rss_bytes(p) for p in tree)
                self.peak_rss[name] = max(self.peak_rss[name], rss)
                # PSS costs the kernel ~5 ms a process (it walks the page tables): every 2 s
                # only, or the sampler would take CPU from what it measures.
                if samples % 8 == 1:
                    pss = sum(pss_bytes(p) for p in tree)
                    self.peak_pss[name] = max(self.peak_pss[name], pss)

    def high_water_marks(self) -> dict[str, list[int]]:
        """``VmHWM`` of every process of each tree (read before the processes stop)."""
        return {
            name: [peak_rss_bytes(p) for p in process_tree(pid)] for name, pid in self.roots.items()
        }


# --- Profiling (optional) -------------------------------------------------------------------------


def start_profilers(workers: dict[str, subprocess.Popen]) -> list[subprocess.Popen]:
    """With ``BENCH_PROFILE=<dir>`` and ``py-spy`` on PATH: sample each worker during the job.

    Writes collapsed stacks of CPU samples (``{dir}/{worker}.txt``, flame-graph input) for finding
    what a chunk spends its CPU on; py-spy is a developer's tool, not a dependency of the portal.
    """
    directory = os.environ.get("BENCH_PROFILE")
    spy = shutil.which("py-spy")
    if not directory or not spy:
        return []
    Path(directory).mkdir(parents=True, exist_ok=True)
    profilers = []
    for name, process in workers.items():
        command = [
            spy, "record", "--pid", str(process.pid), "--subprocesses",
            "--rate", "250", "--format", "raw", "--output", f"{directory}/{name}.txt",
        ]  # fmt: skip
        profilers.append(
            subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        )
    return profilers


def stop_profilers(profilers: list[subprocess.Popen]) -> None:
    """Stop the py-spy samplers and wait for them to write their files."""
    for profiler in profilers:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
    for profiler in profilers:
        profiler.wait(timeout=60)


# --- The two ways ---------------------------------------------------------------------------------


def run_direct(world: World, chunks: list[tuple[bytes, int]], concurrency: int) -> float:
    """Send every chunk with boto3 straight to the runtime stand-in; returns records/s."""
    from portal import aws_gateway

    local = threading.local()

    def call(chunk: tuple[bytes, int]) -> int:
        runtime = getattr(local, "runtime", None)
        if runtime is None:
            runtime = local.runtime = aws_gateway.client(
                "sagemaker-runtime", endpoint_url=world.url("runtime"), read_timeout=70
            )
        body, count = chunk
        answer = runtime.invoke_endpoint(
            EndpointName=ENDPOINT,
            Body=body,
            ContentType="text/csv",
            Accept="application/jsonlines",
        )
        results = answer["Body"].read().count(b"\n")
        if results != count:
            raise RuntimeError(f"the model answered {results} results for {count} records")
        return count

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(call, chunks[: 4 * concurrency]))  # warm-up: connections, code paths
        started = time.perf_counter()
        done = sum(pool.map(call, chunks))
        elapsed = time.perf_counter() - started
    return done / elapsed


def submit(world: World, session, subscription_id: int, path: Path) -> tuple[str, float]:
    """Upload the file to the jobs API (streamed); returns (job id, seconds the upload took)."""
    body = MultipartBody(path, {"subscription": str(subscription_id)}, path.name, "text/csv")
    started = time.perf_counter()
    response = session.post(
        f"{world.url('portal')}/api/v1/jobs/",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={body.boundary}"},
        timeout=3600,
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 202:
        raise RuntimeError(f"the portal answered {response.status_code}: {response.text[:300]}")
    return response.json()["id"], elapsed


def wait_for_job(job_id: str, *, show: bool) -> object:
    """Poll the job row until it is finished; prints progress every few seconds when ``show``."""
    from subscriptions.models import Job

    shown = 0.0
    while True:
        job = Job.objects.get(pk=job_id)
        if job.is_finished:
            return job
        if show and time.monotonic() - shown > 10:
            shown = time.monotonic()
            print(
                f"  … {job.status}: {job.records_done:,}/{job.records_total:,} records, "
                f"{job.chunks_done:,}/{job.chunks_total:,} chunks",
                flush=True,
            )
        time.sleep(0.5)


def output_lines(job) -> int:
    """Lines in the job's merged output, counted while streaming it from S3."""
    from accounts.services.aws_verification import account_access
    from portal import aws_gateway

    account = job.subscription.lob.aws_account
    bucket, _, key = job.output_uri.removeprefix("s3://").partition("/")
    s3 = aws_gateway.client("s3", access=account_access(account))
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    return sum(block.count(b"\n") for block in iter(lambda: body.read(MB), b""))


# --- Main -----------------------------------------------------------------------------------------


def _stop_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(143)  # unwinds through main's finally, which stops every process


def main() -> int:
    """Parse the options, build the world on a throwaway database, run, tear everything down."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--big",
        action="store_true",
        default=os.environ.get("BENCH_BIG", "") not in ("", "0", "false"),
        help="one ~1 GB job (BENCH_BIG_BYTES) for the memory figure; no direct run",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="gatehouse-bench-batch-"))
    database = ThrowawayDatabase(workdir, f"gatehouse_bench_batch_{os.getpid()}")
    chunking = {}
    if os.environ.get("BENCH_CHUNK"):  # else the portal's default JOBS_RECORDS_PER_CHUNK
        chunking["JOBS_RECORDS_PER_CHUNK"] = os.environ["BENCH_CHUNK"]
    world = World(workdir, database_url=database.url, **chunking)
    try:
        return run(world, database, big=args.big)
    finally:
        world.stop()
        database.drop()
        if os.environ.get("BENCH_KEEP", "") not in ("", "0", "false"):
            print(f"work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class JobFigures:
    """One job's outcome and timings (seconds)."""

    job: Any
    lines: int
    upload_s: float
    chunks_s: float
    run_s: float
    total_s: float
    cpu: CpuMeter


def run_job(world: World, http, subscription_id: int, path: Path, *, show: bool) -> JobFigures:
    """Submit the file over HTTP, wait for the final status, count the merged output's lines."""
    from subscriptions.models import JobChunk

    with CpuMeter(world) as cpu:
        submitted = time.perf_counter()
        job_id, upload_s = submit(world, http, subscription_id, path)
        job = wait_for_job(job_id, show=show)
        total_s = time.perf_counter() - submitted
    last_chunk = (
        JobChunk.objects.filter(job_id=job_id).order_by("-finished_at").values("finished_at")[0]
    )["finished_at"]
    return JobFigures(
        job=job,
        lines=output_lines(job) if job.output_uri else 0,
        upload_s=upload_s,
        chunks_s=(last_chunk - job.started_at).total_seconds(),
        run_s=(job.finished_at - job.started_at).total_seconds(),
        total_s=total_s,
        cpu=cpu,
    )


def run(world: World, database: ThrowawayDatabase, *, big: bool) -> int:
    """Direct and job runs side by side (or one big job), then the figures; 1 if a job failed."""
    # With BENCH_MODEL_LATENCY_MS the job's own work must hide behind the model's time.
    analyst, subscription = world_ready(world, database)
    import requests
    from django.conf import settings

    latency = os.environ.get("BENCH_MODEL_LATENCY_MS", "")
    per_chunk = settings.JOBS_RECORDS_PER_CHUNK
    portal = world.start_portal()
    workers = {f"worker-{n + 1}": world.start_worker(f"bench-{n + 1}") for n in range(WORKERS)}

    http = requests.Session()
    csrf = "b" * 32
    http.cookies.update({**session_cookie_for(analyst), "csrftoken": csrf})
    http.headers["X-CSRFToken"] = csrf

    # Warm-up: the workers start, connect and fetch the seller token and keys on a small job.
    warm_up = world.workdir / "warm-up.csv"
    write_input(warm_up, records=WARM_UP_RECORDS)
    job_id, _ = submit(world, http, subscription.pk, warm_up)
    job = wait_for_job(job_id, show=False)
    if job.status != "succeeded":
        print(f"the warm-up job ended {job.status}: {job.error_code} {job.error_message}")
        return 1

    path = world.workdir / "input.csv"
    records = write_input(path, size=BIG_BYTES) if big else write_input(path, records=RECORDS)
    rounds = 1 if big else ROUNDS
    print(
        f"{records:,} CSV records ({path.stat().st_size / MB:,.1f} MB), {per_chunk} records per "
        f"chunk, {WORKERS} worker processes × concurrency 1, database {database.vendor}, "
        f"{os.cpu_count()} CPUs, {rounds} round(s), model latency {latency or 0} ms, "
        f"{settings.JOBS_CHUNKS_PER_TASK} chunks a task; every component in its own process on "
        "loopback",
        flush=True,
    )
    chunks = [] if big else chunk_payloads(path, per_chunk)
    direct_rates: list[float] = []
    figures: list[JobFigures] = []
    profilers = start_profilers(workers)
    roots = {name: process.pid for name, process in workers.items()}
    roots["web"] = portal.pid
    with MemorySampler(roots) as sampler:
        for number in range(1, rounds + 1):
            # Direct and job alternate, so a busy moment of the machine does not favour one side.
            if chunks:
                with CpuMeter(world) as direct_cpu:
                    direct_rates.append(run_direct(world, chunks, WORKERS))
            figure = run_job(world, http, subscription.pk, path, show=big)
            figures.append(figure)
            direct_text = f"direct {direct_rates[-1]:8,.0f} records/s, " if chunks else ""
            print(
                f"round {number}: {direct_text}job run {records / figure.run_s:8,.0f} records/s "
                f"(chunks only {records / figure.chunks_s:,.0f}; upload {figure.upload_s:.1f} s, "
                f"run {figure.run_s:.1f} s, merge {figure.run_s - figure.chunks_s:.1f} s)",
                flush=True,
            )
        high_water = sampler.high_water_marks()
    stop_profilers(profilers)

    ok = all(
        f.job.status == "succeeded" and f.lines == records == f.job.records_done for f in figures
    )
    last = figures[-1].job
    print(
        f"job {last.status}: {last.records_done:,}/{last.records_total:,} records, "
        f"{last.records_failed:,} rejected, {last.chunks_total:,} chunks; merged output "
        f"{figures[-1].lines:,} lines" + ("" if ok else " — NOT every job succeeded with all lines")
    )
    job_rates = sorted(records / f.run_s for f in figures)
    median_job = statistics.median(job_rates)
    median_figure = min(figures, key=lambda f: abs(records / f.run_s - median_job))
    if direct_rates:
        print(
            f"direct (boto3 → runtime stand-in, concurrency {WORKERS}):   median "
            f"{statistics.median(direct_rates):8,.0f}   best {max(direct_rates):8,.0f} records/s"
        )
        direct_cpu.report("the last direct run (its warm-up calls included)")
    print(
        f"via jobs (start → final status, merge included):  median {median_job:8,.0f}   "
        f"best {job_rates[-1]:8,.0f} records/s"
    )
    median_figure.cpu.report("the median job (upload, run and merge)")
    print("peak memory of each tree (sampled RSS / PSS; VmHWM per process, main process first):")
    for name in roots:
        marks = ", ".join(f"{mark / MB:.0f}" for mark in high_water[name])
        print(
            f"  {name:9} RSS {sampler.peak_rss[name] / MB:6.1f} MB  PSS "
            f"{sampler.peak_pss[name] / MB:6.1f} MB   VmHWM [{marks}] MB"
        )
    worker_rss = [sampler.peak_rss[name] for name in workers]
    print(
        f"worker peak RSS (main process + pool child): largest {max(worker_rss) / MB:.0f} MB, "
        f"sum of {WORKERS} {sum(worker_rss) / MB:.0f} MB (aim < {AIM_WORKER_RSS_MB} MB a worker)"
    )
    if direct_rates:
        median_direct = statistics.median(direct_rates)
        print(
            f"ratio (jobs ÷ direct records/s, medians) = {median_job / median_direct:.2f} "
            f"(best ÷ best {job_rates[-1] / max(direct_rates):.2f}; aim ≥ {AIM_RATIO})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
