"""App config for the project package itself (templates, health checks, API base classes)."""

from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The project package as a Django app, so its templates and checks are found."""

    name = "portal"
    verbose_name = "Gatehouse portal"
