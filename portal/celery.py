"""The Celery application: Redis broker, settings read from Django's CELERY_* settings."""

import logging.config
import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("gatehouse")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def _portal_logging(**_: object) -> None:
    """Workers and beat log as the web process does (settings.LOGGING: one line per event), not in
    Celery's own multi-line format; LOG_LEVEL, not --loglevel, sets the level."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
