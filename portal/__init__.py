"""The Gatehouse Django project: settings, URLs, the Celery app and the API base classes."""

from portal.celery import app as celery_app

__all__ = ["celery_app"]
