"""What the broker still holds of each job: its tasks enqueued and not yet handed to a worker.

The reconciler (:func:`subscriptions.services.jobs.jobs_reconcile`) enqueues again the work of a
job that made no progress for a while, because its messages may be lost (Redis restarted without
persistence). A job also makes no progress while its messages wait behind other jobs' in a long
queue; enqueueing those again would add a copy of every waiting chunk to the queue each stall
period, and the copies would have to be delivered and skipped later. So the reconciler reads the
queue first and enqueues only what is not waiting there.

Only messages waiting in the queue count. A message handed to a worker moves to Redis's "unacked"
hash until the worker acknowledges it; when the whole worker died, Redis gives it back only after
the visibility timeout (an hour by default), and the reconciler should not wait that long — so
such a message counts as lost.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from portal.celery import app as celery_app

logger = logging.getLogger(__name__)

# Messages are read in pages: a long queue is never held whole in memory.
_PAGE = 500

_START = "subscriptions.job_start"
_CHUNKS = "subscriptions.job_chunks_run"
_CHUNK = "subscriptions.job_chunk_run"
_FINALIZE = "subscriptions.job_finalize"
# Each job task's parameters, in order (subscriptions.tasks).
_PARAMETERS = {
    _START: ("job_id",),
    _CHUNKS: ("job_id", "indices"),
    _CHUNK: ("job_id", "index"),
    _FINALIZE: ("job_id",),
}


@dataclass
class QueuedWork:
    """A job's tasks waiting in the queue: its start, chunk indices, and its final step."""

    start: bool = False
    chunks: set[int] = field(default_factory=set)
    finalize: bool = False


class QueueTooLong(Exception):
    """The queues hold more messages than a reconciler run reads (JOBS_RECONCILE_QUEUE_READ_MAX)."""

    def __init__(self, length: int) -> None:
        super().__init__(f"{length} messages waiting")
        self.length = length


def queued_job_work() -> dict[str, QueuedWork] | None:
    """Per job id, its tasks waiting in the broker's queues; None when the queue cannot be read.

    None (a broker away, or one that is not Redis) tells the reconciler to assume nothing waits,
    as it did before it could look: a copy too many is harmless, a job left stalled is not.
    Raises QueueTooLong rather than read a queue longer than JOBS_RECONCILE_QUEUE_READ_MAX: that
    would outlast the reconciler's time limit, and such a queue means busy workers.
    """
    try:
        with celery_app.connection_for_read() as connection:
            channel = connection.default_channel
            # Each queue is a Redis list per priority step (kombu's layout; the plain name holds
            # messages sent without a priority, as the jobs' are).
            keys = sorted(
                {
                    channel._q_for_pri(queue, step)
                    for queue in celery_app.amqp.queues
                    for step in channel.priority_steps
                }
            )
            length = sum(channel.client.llen(key) for key in keys)
            if length > settings.JOBS_RECONCILE_QUEUE_READ_MAX:
                raise QueueTooLong(length)
            work: dict[str, QueuedWork] = {}
            for key in keys:
                _read_queue(channel.client, key, work)
            return work
    except (AttributeError, OSError, OperationalError, RedisError) as exc:
        logger.warning("could not read the broker's queue (%s): assuming nothing waits", exc)
        return None


def _read_queue(client: Any, key: str, work: dict[str, QueuedWork]) -> None:
    start = 0
    while True:
        page = client.lrange(key, start, start + _PAGE - 1)
        for raw in page:
            _note(raw, work)
        if len(page) < _PAGE:
            return
        # Workers take from the other end of the list: a message may move under the reader and be
        # missed (it is then running) or seen twice (harmless) — never invented.
        start += _PAGE


def _note(raw: bytes, work: dict[str, QueuedWork]) -> None:
    found = _job_task(raw)
    if found is None:
        return
    task, job_id, indices = found
    entry = work.setdefault(job_id, QueuedWork())
    entry.start |= task == _START
    entry.finalize |= task == _FINALIZE
    entry.chunks.update(indices)


def _job_task(raw: bytes) -> tuple[str, str, list[int]] | None:
    """(task name, job id, chunk indices) of a job task's message (Celery's protocol 2), or None."""
    try:
        message = json.loads(raw)
        task = message["headers"]["task"]
        parameters = _PARAMETERS.get(task)
        if parameters is None:
            return None
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _embed = json.loads(body)
        # Enqueued with positional arguments; any given as keywords are put in their place.
        values = [*args, *(kwargs[name] for name in parameters[len(args) :])]
        if task == _CHUNKS:
            indices = [int(index) for index in values[1]]
        elif task == _CHUNK:
            indices = [int(values[1])]
        else:
            indices = []
        return task, str(values[0]), indices
    except (ValueError, KeyError, TypeError, IndexError):
        return None
