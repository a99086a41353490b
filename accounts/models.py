"""Users, LOBs, AWS accounts, memberships, the DynamoDB outbox and the audit trail."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

from accounts.validators import (
    REGION_CHOICES,
    role_arn_account,
    validate_account_id,
    validate_bucket_name,
    validate_region,
    validate_role_arn,
)

# The role name the reference Studio-access architecture deploys in every LOB account.
STUDIO_ROLE_NAME = "SagemakerStudioAccessRole"

# SageMaker's own patterns for a domain id and a user profile name (CreatePresignedDomainUrl).
STUDIO_DOMAIN_ID_PATTERN = r"^d-(-*[a-z0-9]){1,61}$"
STUDIO_PROFILE_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
validate_studio_domain_id = RegexValidator(
    STUDIO_DOMAIN_ID_PATTERN,
    "A SageMaker domain id looks like d-xxxxxxxxxxxx (lowercase letters, digits, hyphens).",
    code="invalid_studio_domain_id",
)
validate_studio_profile_name = RegexValidator(
    STUDIO_PROFILE_NAME_PATTERN,
    "A Studio user profile name is 1-63 letters, digits and single hyphens, "
    "starting with a letter or digit.",
    code="invalid_studio_profile_name",
)


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


class AwsAccount(models.Model):
    """An AWS account a LOB runs its models in, and how the portal reaches it.

    The portal assumes ``invoke_role_arn`` (with ``external_id``) to call SageMaker and write
    results, and ``studio_role_arn`` to mint Studio URLs. Endpoint overrides name VPC endpoints;
    empty means AWS's regional endpoint.
    """

    account_id = models.CharField(
        "account id", max_length=12, unique=True, validators=[validate_account_id]
    )
    name = models.CharField(max_length=128)
    default_region = models.CharField(
        max_length=32, choices=REGION_CHOICES, validators=[validate_region], default="us-east-1"
    )
    invoke_role_arn = models.CharField(
        "invoke role ARN", max_length=600, validators=[validate_role_arn]
    )
    studio_role_arn = models.CharField(
        "Studio access role ARN",
        max_length=600,
        blank=True,
        validators=[validate_role_arn],
        help_text="Defaults to arn:aws:iam::<account>:role/SagemakerStudioAccessRole.",
    )
    external_id = models.CharField("ExternalId", max_length=1224, blank=True)
    results_bucket = models.CharField(
        max_length=63, validators=[validate_bucket_name], help_text="Where results are kept."
    )
    results_prefix = models.CharField(max_length=512, blank=True, default="gatehouse/")
    sts_endpoint_url = models.URLField("STS endpoint", blank=True)
    s3_endpoint_url = models.URLField("S3 endpoint", blank=True)
    sagemaker_endpoint_url = models.URLField("SageMaker API endpoint", blank=True)
    sagemaker_runtime_endpoint_url = models.URLField("SageMaker runtime endpoint", blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    last_verification_ok = models.BooleanField(null=True, blank=True)
    last_verification_detail = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account_id"]
        verbose_name = "AWS account"

    def __str__(self) -> str:
        return f"{self.name} ({self.account_id})"

    def save(self, *args: object, **kwargs: object) -> None:
        if not self.studio_role_arn and self.account_id:
            self.studio_role_arn = f"arn:aws:iam::{self.account_id}:role/{STUDIO_ROLE_NAME}"
        super().save(*args, **kwargs)

    def clean(self) -> None:
        """Role ARNs must belong to this account."""
        errors = {}
        for field in ("invoke_role_arn", "studio_role_arn"):
            owner = role_arn_account(getattr(self, field))
            if owner is not None and self.account_id and owner != self.account_id:
                errors[field] = ValidationError(
                    f"This role is in account {owner}, not {self.account_id}.",
                    code="role_in_other_account",
                )
        if errors:
            raise ValidationError(errors)

    @property
    def results_location(self) -> str:
        """s3://bucket/prefix where this account's results are stored."""
        return f"s3://{self.results_bucket}/{self.results_prefix}"

    @property
    def endpoint_urls(self) -> dict[str, str]:
        """Per-service endpoint overrides, by boto3 service name (empty ones left out)."""
        urls = {
            "sts": self.sts_endpoint_url,
            "s3": self.s3_endpoint_url,
            "sagemaker": self.sagemaker_endpoint_url,
            "sagemaker-runtime": self.sagemaker_runtime_endpoint_url,
        }
        return {service: url for service, url in urls.items() if url}


class Lob(models.Model):
    """A line of business: the security boundary. Its members reach its AWS account's models."""

    slug = models.SlugField(unique=True, max_length=64)
    name = models.CharField(max_length=128)
    description = models.TextField(blank=True)
    aws_account = models.ForeignKey(AwsAccount, on_delete=models.PROTECT, related_name="lobs")
    studio_domain_id = models.CharField(
        "Studio domain id",
        max_length=63,
        blank=True,
        validators=[validate_studio_domain_id],
        help_text="The LOB's SageMaker Studio domain in its account; empty: the account's only "
        "InService domain.",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]
        verbose_name = "line of business"
        verbose_name_plural = "lines of business"

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    """A user's role in one LOB; at most one per user and LOB."""

    class Role(models.TextChoices):
        ADMIN = "admin", "LOB admin"
        ANALYST = "analyst", "Analyst"
        VIEWER = "viewer", "Viewer"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    lob = models.ForeignKey(Lob, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices)
    studio_profile_name = models.CharField(
        "Studio user profile",
        max_length=63,
        blank=True,
        validators=[validate_studio_profile_name],
        help_text="The member's user profile in the LOB's Studio domain; empty: their username.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["lob__slug", "user__username"]
        constraints = [
            models.UniqueConstraint(fields=["user", "lob"], name="membership_one_per_user_and_lob")
        ]
        indexes = [models.Index(fields=["lob", "role"])]

    def __str__(self) -> str:
        return f"{self.user} in {self.lob} as {self.role}"

    @property
    def may_invoke(self) -> bool:
        """Analysts and LOB admins run models; viewers only read."""
        return self.role in (self.Role.ADMIN, self.Role.ANALYST)

    @classmethod
    def studio_roles(cls) -> frozenset[str]:
        """Roles that may open the LOB's Studio: analysts and admins, viewers if a setting says.

        Read at call time, so a change of ``STUDIO_ALLOW_VIEWERS`` needs no restart of this code.
        """
        roles = {cls.Role.ADMIN.value, cls.Role.ANALYST.value}
        if settings.STUDIO_ALLOW_VIEWERS:
            roles.add(cls.Role.VIEWER.value)
        return frozenset(roles)

    @property
    def may_open_studio(self) -> bool:
        """Whether this member may open the LOB's SageMaker Studio (the LOB must be active)."""
        return self.lob.is_active and self.role in self.studio_roles()

    @property
    def effective_studio_profile_name(self) -> str:
        """The Studio user profile this member opens: the one set here, else their username."""
        return self.studio_profile_name or self.user.username


class MappingOutbox(models.Model):
    """A user→LOB or LOB→account mapping that changed and must be published to DynamoDB.

    Rows name what changed, not the new value: the publisher reads the current state when it
    runs, so rows can be delivered in any order, twice, or merged, and the tables still end right.
    """

    class Kind(models.TextChoices):
        USER = "user", "user → LOB"
        LOB = "lob", "LOB → account"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    key = models.CharField(max_length=150, help_text="Username or LOB slug.")
    created_at = models.DateTimeField(auto_now_add=True)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(auto_now_add=True, db_index=True)
    last_error = models.CharField(max_length=500, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name = "DynamoDB outbox entry"
        verbose_name_plural = "DynamoDB outbox"

    def __str__(self) -> str:
        return f"{self.kind}:{self.key}"
