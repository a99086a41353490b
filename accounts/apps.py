"""App config for accounts."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    """Users, sign-in and the audit trail."""

    name = "accounts"
    verbose_name = "Accounts and audit"

    def ready(self) -> None:
        """Register the OpenAPI description of bearer authentication."""
        from accounts import schema  # noqa: F401
