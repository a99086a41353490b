"""Marketplace listings, LOB subscriptions to them, their SageMaker endpoints, and every call."""

from __future__ import annotations

import re
import uuid
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from accounts.models import Lob
from accounts.validators import REGION_CHOICES, validate_region

CONTENT_TYPES = ("text/csv", "application/json", "application/jsonlines")
_LAMBDA_ARN = re.compile(
    r"arn:aws[a-z-]*:lambda:[a-z0-9-]+:\d{12}:function:[A-Za-z0-9_-]{1,140}(:[A-Za-z0-9$_-]+)?",
    re.ASCII,
)


class Listing(models.Model):
    """A model product on AWS Marketplace, and how its seller vouches for subscriptions.

    The seller's token service is an HTTPS URL (``POST <url>/auth/init``) or a Lambda function ARN
    invoked cross-account; its tokens are verified against ``seller_jwks_url`` and must carry
    ``iss`` = ``seller_issuer`` and ``aud`` = ``product_code``.
    """

    product_code = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=128)
    seller_name = models.CharField(max_length=128)
    model_package_arn = models.CharField(max_length=600, blank=True)
    description = models.TextField(blank=True)
    content_types = models.JSONField(
        default=list, help_text=f"Accepted request content types, among {', '.join(CONTENT_TYPES)}."
    )
    token_service_url = models.URLField(blank=True)
    token_service_lambda_arn = models.CharField(max_length=600, blank=True)
    seller_issuer = models.CharField(max_length=255)
    seller_jwks_url = models.URLField("seller JWKS URL")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.product_code})"

    def clean(self) -> None:
        """Known content types; exactly one token service, an HTTPS URL or a Lambda function ARN."""
        errors: dict[str, str] = {}
        token_url_field, token_arn_field = "token_service_url", "token_service_lambda_arn"
        types = self.content_types
        if not isinstance(types, list) or not types or not set(types) <= set(CONTENT_TYPES):
            errors["content_types"] = f"Choose one or more of {', '.join(CONTENT_TYPES)}."
        if bool(self.token_service_url) == bool(self.token_service_lambda_arn):
            errors[token_url_field] = (
                "Give the seller's token service: an HTTPS URL or a Lambda function ARN, not both."
            )
        if self.token_service_lambda_arn and not _LAMBDA_ARN.fullmatch(
            self.token_service_lambda_arn
        ):
            errors[token_arn_field] = "Not a Lambda function ARN."
        for name in (token_url_field, "seller_jwks_url"):
            url = getattr(self, name)
            if url and not _https_or_loopback(url) and name not in errors:
                # Over plain HTTP anyone on the way could hand the portal their own signing keys.
                errors[name] = (
                    "Use an https:// URL (http:// only for a stand-in on this machine: "
                    "127.0.0.1 or localhost)."
                )
        if errors:
            raise ValidationError(errors)


def _https_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "localhost", "::1")


class Subscription(models.Model):
    """A LOB's subscription to a listing; only an active, unexpired one can be invoked."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        CANCELLED = "cancelled", "Cancelled"

    lob = models.ForeignKey(Lob, on_delete=models.PROTECT, related_name="subscriptions")
    listing = models.ForeignKey(Listing, on_delete=models.PROTECT, related_name="subscriptions")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    starts_on = models.DateField(default=timezone.localdate)
    ends_on = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["lob__slug", "listing__name"]
        constraints = [
            models.UniqueConstraint(
                fields=["lob", "listing"], name="subscription_one_per_lob_listing"
            )
        ]

    def __str__(self) -> str:
        return f"{self.lob.slug} → {self.listing.product_code}"

    def clean(self) -> None:
        """A subscription cannot end before it starts."""
        if self.ends_on and self.starts_on and self.ends_on < self.starts_on:
            raise ValidationError({"ends_on": "The end date is before the start date."})

    def is_usable(self, today: object = None) -> bool:
        """Active, started, not past its end date, and its LOB active."""
        today = today or timezone.localdate()
        return (
            self.status == self.Status.ACTIVE
            and self.starts_on <= today
            and (self.ends_on is None or today <= self.ends_on)
            and self.lob.is_active
        )


class Endpoint(models.Model):
    """The SageMaker endpoint serving a subscription, in the LOB's AWS account."""

    subscription = models.OneToOneField(
        Subscription, on_delete=models.CASCADE, related_name="endpoint"
    )
    name = models.CharField(max_length=63)
    region = models.CharField(max_length=32, choices=REGION_CHOICES, validators=[validate_region])
    status = models.CharField(max_length=32, blank=True, help_text="From DescribeEndpoint.")
    instance_type = models.CharField(max_length=64, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    sync_error = models.CharField(max_length=500, blank=True)

    def __str__(self) -> str:
        return self.name


class Invocation(models.Model):
    """One call through the authorized proxy path, allowed or refused; never its payload."""

    # ``outcome`` of a call that was answered and stored; anything else is the refusal/error code.
    OUTCOME_OK = "ok"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(
        Subscription, on_delete=models.PROTECT, related_name="invocations"
    )
    principal = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="invocations"
    )
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    duration_ms = models.PositiveIntegerField(default=0)
    bytes_in = models.PositiveIntegerField(default=0)
    bytes_out = models.PositiveIntegerField(default=0)
    records = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=32, help_text="ok, or the refusal/error code.")
    result_uri = models.CharField(max_length=1024, blank=True)
    result_stored_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the answer was in S3 at result_uri; empty while it is being written "
        "(INVOKE_RESULT_WRITE=after_answer) or if the process writing it stopped.",
    )
    # The job whose chunk the call ran (its answer is in the job's part, not at result_uri).
    # No index: the row is only ever read from the call's side, and every call would pay for one.
    job = models.ForeignKey(
        "Job",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        db_index=False,
        related_name="+",
    )

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["subscription", "-started_at"])]

    def __str__(self) -> str:
        return f"{self.id} {self.outcome}"


class Job(models.Model):
    """A whole input file run through a subscription's model in chunks by Celery workers."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        PARTIALLY_SUCCEEDED = "partially_succeeded", "Partially succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    # Statuses a job never leaves.
    FINISHED = frozenset({"succeeded", "partially_succeeded", "failed", "cancelled"})

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subscription = models.ForeignKey(Subscription, on_delete=models.PROTECT, related_name="jobs")
    submitted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="jobs"
    )
    status = models.CharField(max_length=24, choices=Status.choices, default=Status.QUEUED)
    content_type = models.CharField(max_length=64)
    # The CSV header row (sent before every chunk's records); empty for JSON Lines.
    csv_header = models.TextField(blank=True)
    input_uri = models.CharField(max_length=1024)
    input_bytes = models.BigIntegerField(default=0)
    output_uri = models.CharField(max_length=1024, blank=True)
    manifest_uri = models.CharField(max_length=1024, blank=True)
    records_total = models.PositiveIntegerField(default=0)
    records_done = models.PositiveIntegerField(default=0, help_text="Processed, failed included.")
    records_failed = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=1000, blank=True)
    idempotency_key = models.CharField(max_length=128, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["submitted_by", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="job_idempotency_key_per_submitter",
            )
        ]
        indexes = [
            models.Index(fields=["subscription", "-created_at"]),
            models.Index(fields=["status", "last_progress_at"]),
        ]

    def __str__(self) -> str:
        return f"job {self.id} {self.status}"

    @property
    def is_finished(self) -> bool:
        """Succeeded, partially succeeded, failed or cancelled."""
        return self.status in self.FINISHED


class JobChunk(models.Model):
    """One slice of a job's input: one call through the proxy path, one output part."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    index = models.PositiveIntegerField()
    first_line = models.PositiveIntegerField(help_text="Line number (from 1) of its first record.")
    first_record = models.PositiveIntegerField(help_text="Index (from 0) of its first record.")
    byte_offset = models.BigIntegerField()
    byte_length = models.BigIntegerField()
    record_count = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    output_key = models.CharField(max_length=1024, blank=True)
    records_failed = models.PositiveIntegerField(default=0)
    # The records the model rejected: [{"record", "line", "error"}], at most one chunk's worth.
    record_errors = models.JSONField(default=list, blank=True)
    error = models.CharField(max_length=1000, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "index"]
        constraints = [
            models.UniqueConstraint(fields=["job", "index"], name="job_chunk_unique_index")
        ]

    def __str__(self) -> str:
        return f"{self.job_id} part {self.index} {self.status}"
