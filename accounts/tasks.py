"""Periodic housekeeping for accounts."""

from celery import shared_task
from django.contrib.sessions.models import Session
from django.utils import timezone


@shared_task(
    name="accounts.sessions_clear_expired", acks_late=True, time_limit=300, soft_time_limit=240
)
def sessions_clear_expired() -> int:
    """Delete expired browser sessions (run by beat every hour); returns how many went."""
    deleted, _ = Session.objects.filter(expire_date__lt=timezone.now()).delete()
    return deleted
