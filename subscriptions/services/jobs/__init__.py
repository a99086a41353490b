"""Inference jobs: a whole file run through the authorized proxy path, chunk by chunk.

* :func:`job_submit` streams the input to ``{prefix}{lob}/jobs/{job_id}/input`` in the LOB's
  results bucket while :class:`~subscriptions.services.job_input.InputScanner` validates it and
  splits it into chunks; the job and its chunks are created in one transaction and started after
  commit.
* :func:`job_chunk_run` runs one chunk as the submitting user through ``invocation_run`` (which
  re-checks membership and subscription) and writes ``part-{n:05d}.jsonl`` — a deterministic key,
  so a chunk that runs twice writes the same object and is counted once (under a row lock); a
  chunk given up on writes its error entries to ``part-{n:05d}.failed.jsonl`` instead.
  :func:`job_chunks_run` runs a few consecutive chunks the same way, with their model calls back to
  back while a helper thread does each chunk's S3 and database work (how jobs normally run).
* :func:`job_finalize` writes the merged output and the manifest once every chunk is done.
* :func:`job_cancel`, :func:`jobs_reconcile` (stalled work is enqueued again), and the reads the
  API needs (:func:`jobs_visible_to`, :func:`job_for_member`, :func:`job_results`,
  :func:`job_download_url`).

Tasks own retries: :class:`ChunkRetry` marks a failure worth retrying (throttling, 5xx, timeouts,
the endpoint or seller unreachable).

Modules: ``submit`` (:func:`job_submit`: the input checked and stored, the job's rows),
``lifecycle`` (start, stop, cancel, the reconciler), ``chunks`` (running chunks, the helper
thread, retry or failure), ``parts`` (a chunk's records read back, its part lines written),
``merge`` (:func:`job_finalize`: merged output, manifest, final status), ``reading`` (the scoped
reads), ``common`` (S3 keys and client, enqueuing a task, uploads). Callers use the names below,
as ``jobs.job_submit(...)``; tests that replace a helper patch it in the module that looks it up.
"""

from subscriptions.services.jobs.chunks import (
    STOP_CODES,
    ChunkRetry,
    chunk_helper_stop,
    job_chunk_fail,
    job_chunk_run,
    job_chunks_run,
)
from subscriptions.services.jobs.common import failed_part_key, job_prefix, part_key
from subscriptions.services.jobs.lifecycle import job_cancel, job_start, job_stop, jobs_reconcile
from subscriptions.services.jobs.merge import job_finalize
from subscriptions.services.jobs.reading import (
    job_download_url,
    job_for_member,
    job_record_errors,
    job_results,
    jobs_visible_to,
)
from subscriptions.services.jobs.submit import job_submit

__all__ = [
    "STOP_CODES",
    "ChunkRetry",
    "chunk_helper_stop",
    "failed_part_key",
    "job_cancel",
    "job_chunk_fail",
    "job_chunk_run",
    "job_chunks_run",
    "job_download_url",
    "job_finalize",
    "job_for_member",
    "job_prefix",
    "job_record_errors",
    "job_results",
    "job_start",
    "job_stop",
    "job_submit",
    "jobs_reconcile",
    "jobs_visible_to",
    "part_key",
]
