"""Users of the portal and the audit trail of what they did."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models


class User(AbstractUser):
    """A person known to the identity provider, identified by issuer and subject, never by email.

    ``username`` is the Cognito username (``cognito:username``), kept because the reference
    Studio-access tables are keyed by it. ``is_staff`` means platform admin and is recomputed from
    the admin group at every sign-in. Nobody has a usable password: sign-in is through OIDC only.
    """

    idp_issuer = models.CharField("identity provider issuer", max_length=255, blank=True)
    idp_subject = models.CharField("identity provider subject", max_length=255, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["idp_issuer", "idp_subject"],
                condition=~models.Q(idp_subject=""),
                name="user_unique_identity",
            )
        ]

    @property
    def is_platform_admin(self) -> bool:
        """Platform admins manage everything; they are Django staff, never implicit superusers."""
        return self.is_active and self.is_staff

    @property
    def display_name(self) -> str:
        """The person's name when the identity provider gave one, else their username."""
        return self.get_full_name() or self.username


class AuditEvent(models.Model):
    """One thing that happened: who, what, to what, when (UTC), in which LOB, and how it ended.

    Rows are append-only. Names are copied, not referenced, so an event still reads correctly
    after the user or object it names is deleted. Never put a token, secret or password here.
    """

    class Outcome(models.TextChoices):
        SUCCESS = "success", "Success"
        FAILURE = "failure", "Failure"
        REFUSED = "refused", "Refused"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="audit_events",
    )
    actor_username = models.CharField(max_length=150, blank=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=128, blank=True)
    lob_slug = models.CharField("LOB", max_length=64, blank=True, db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.CharField(max_length=64, blank=True, help_text="Machine-readable code.")
    detail = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    client_ip = models.GenericIPAddressField(null=True, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [models.Index(fields=["actor", "-occurred_at"])]

    def __str__(self) -> str:
        who = self.actor_username or "anonymous"
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S}Z {who} {self.action} {self.outcome}"
