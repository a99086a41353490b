"""A job as a whole: started (its chunks enqueued), stopped or cancelled (its pending chunks
skipped), and what stalled jobs are missing enqueued again by the reconciler.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from accounts.selectors import may_invoke
from portal.errors import Conflict, NotPermitted
from subscriptions.models import Job, JobChunk
from subscriptions.services import queued_tasks
from subscriptions.services.jobs.common import enqueue
from subscriptions.services.jobs.reading import jobs_visible_to

logger = logging.getLogger(__name__)


def job_start(*, job_id: str) -> None:
    """Mark the job running and enqueue every chunk not done yet (again, if re-delivered)."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return
        now = timezone.now()
        if job.status == Job.Status.QUEUED:
            job.status = Job.Status.RUNNING
            job.started_at = now
        job.last_progress_at = now
        job.save(update_fields=["status", "started_at", "last_progress_at"])
        pending = list(
            job.chunks.filter(status=JobChunk.Status.PENDING)
            .order_by("index")
            .values_list("index", flat=True)
        )
        _enqueue_chunks(str(job.pk), pending)
        if not pending:
            enqueue("job_finalize", str(job.pk))


def _enqueue_chunks(job_id: str, indices: list[int]) -> None:
    """Enqueue the chunks in runs of JOBS_CHUNKS_PER_TASK consecutive ones (one task each)."""
    size = max(settings.JOBS_CHUNKS_PER_TASK, 1)
    for start in range(0, len(indices), size):
        enqueue("job_chunks_run", job_id, indices[start : start + size])


def job_stop(
    *, job_id: str, code: str, message: str, outcome: str = AuditEvent.Outcome.REFUSED
) -> None:
    """The job can no longer run (the submitter lost access...): failed, with the reason."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.is_finished:
            return
        job_end(job, status=Job.Status.FAILED, code=code, message=message)
        audit_record(
            action="job.stopped",
            outcome=outcome,
            actor=job.submitted_by,
            target_type="job",
            target_id=str(job.pk),
            lob_slug=job.subscription.lob.slug,
            reason=code,
            detail={"message": message[:300]},
        )


def job_end(job: Job, *, status: str, code: str = "", message: str = "") -> None:
    """Finish the job (row locked by the caller); its pending chunks are skipped."""
    now = timezone.now()
    job.status = status
    job.error_code = code
    job.error_message = message[:1000]
    job.finished_at = now
    job.last_progress_at = now
    job.save(
        update_fields=["status", "error_code", "error_message", "finished_at", "last_progress_at"]
    )
    skipped = JobChunk.objects.filter(job=job, status=JobChunk.Status.PENDING).update(
        status=JobChunk.Status.SKIPPED, finished_at=now
    )
    if skipped:
        Job.objects.filter(pk=job.pk).update(chunks_done=F("chunks_done") + skipped)


def job_cancel(*, job: Job, acting_user: User, request: HttpRequest | None = None) -> Job:
    """Stop a queued or running job: its pending chunks are skipped, finished parts kept."""
    lob = job.subscription.lob
    if not (acting_user.is_active and (acting_user.is_staff or may_invoke(acting_user, lob))):
        raise NotPermitted(f"Only analysts and admins of {lob.slug} may cancel its jobs.")
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.is_finished:
            raise Conflict(f"The job is already {locked.status}.", code="job_finished")
        job_end(locked, status=Job.Status.CANCELLED, code="cancelled", message="Cancelled.")
        audit_record(
            action="job.cancelled",
            outcome=AuditEvent.Outcome.SUCCESS,
            request=request,
            actor=acting_user,
            target_type="job",
            target_id=str(job.pk),
            lob_slug=lob.slug,
            detail={"records_done": locked.records_done, "records_total": locked.records_total},
        )
    return jobs_visible_to(acting_user).get(pk=job.pk)


def jobs_reconcile() -> int:
    """Enqueue again what stalled jobs are missing (start, pending chunks or the final step).

    What still waits in the broker's queue (a job behind others in a long queue) is not missing:
    it is left alone. Returns how many jobs had something enqueued again.
    """
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.JOBS_STALL_SECONDS)
    stalled = Job.objects.filter(status__in=(Job.Status.QUEUED, Job.Status.RUNNING)).filter(
        Q(last_progress_at__lt=cutoff) | Q(last_progress_at__isnull=True, created_at__lt=cutoff)
    )
    job_ids = list(stalled.values_list("pk", flat=True))
    if not job_ids:
        return 0
    # Read once a run, before the locks: a message taken meanwhile is running, which is progress.
    try:
        queued = queued_tasks.queued_job_work() or {}
    except queued_tasks.QueueTooLong as exc:
        # The workers are busy; whatever a job lost is looked for once the queue is shorter (the
        # clocks are left as they are, so the next run looks again).
        logger.info("reconciler: the broker's queue is too long to read (%s), next run", exc)
        return 0
    count = 0
    for job_id in job_ids:
        with transaction.atomic():
            # Still stalled once locked: another run of the reconciler (or a chunk) may have
            # restarted the clock since the listing, and then everything is enqueued already.
            job = stalled.select_for_update().filter(pk=job_id).first()
            if job is None:
                continue
            # The clock restarts: the next run waits a whole stall period before trying again.
            Job.objects.filter(pk=job_id).update(last_progress_at=now)
            if _enqueue_missing(job, queued.get(str(job_id), queued_tasks.QueuedWork())):
                count += 1
    return count


def _enqueue_missing(job: Job, waiting: queued_tasks.QueuedWork) -> bool:
    """Enqueue the stalled job's next step, unless it waits in the queue; True if enqueued."""
    pending = list(
        job.chunks.filter(status=JobChunk.Status.PENDING)
        .order_by("index")
        .values_list("index", flat=True)
    )
    missing = [index for index in pending if index not in waiting.chunks]
    if waiting.start:  # when it runs, it enqueues every pending chunk itself
        return _left_waiting(job)
    if job.status == Job.Status.QUEUED:
        enqueue("job_start", str(job.pk))
    elif missing:
        _enqueue_chunks(str(job.pk), missing)
    elif pending or waiting.finalize:  # every pending chunk, or the final step, waits
        return _left_waiting(job)
    else:
        enqueue("job_finalize", str(job.pk))
    logger.info(
        "job %s stalled: enqueued again (%d chunks pending, %d of them waiting in the queue)",
        job.pk,
        len(pending),
        len(pending) - len(missing),
    )
    return True


def _left_waiting(job: Job) -> bool:
    logger.info("job %s without progress: its tasks wait in the queue, none enqueued again", job.pk)
    return False
