"""REST endpoints for inference jobs.

Holds the job serializers (:class:`JobSerializer`, :class:`JobDetailSerializer`, the submission's
:class:`JobSubmitSerializer` and :class:`JobSubmitJsonSerializer` with :class:`UploadField`),
:class:`JobFilter`, :class:`JobCursorPagination` and :class:`JobViewSet` (submit, follow, cancel,
read and download results).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import django_filters
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from portal.api.filters import VisibleIdFilter, in_utc_range
from portal.api.parsers import FormParser, JSONParser, MultiPartParser
from portal.api.schema import error_responses
from portal.errors import NotFoundError
from subscriptions import selectors
from subscriptions.models import Job
from subscriptions.services import access, jobs
from subscriptions.uploads import job_upload_handlers

# --- Jobs -----------------------------------------------------------------------------------------

IDEMPOTENCY_HEADER = "Idempotency-Key"
_EXTENSION_TYPES = {".csv": "text/csv", ".jsonl": "application/jsonlines"}


class JobSerializer(serializers.ModelSerializer):
    """An inference job: status, progress, timestamps, where its input and output are."""

    lob = serializers.CharField(source="subscription.lob.slug", read_only=True)
    # null once the submitter's user is deleted (the job keeps its place, SET_NULL).
    submitted_by = serializers.CharField(
        source="submitted_by.username", read_only=True, allow_null=True
    )
    # A plain string in the schema: "status" already names the subscriptions' enum.
    status = serializers.CharField(
        read_only=True, help_text=f"One of {', '.join(Job.Status.values)}."
    )
    progress = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = (
            "id",
            "subscription",
            "lob",
            "submitted_by",
            "status",
            "content_type",
            "input_uri",
            "output_uri",
            "manifest_uri",
            "records_total",
            "records_done",
            "records_failed",
            "chunks_total",
            "chunks_done",
            "progress",
            "error_code",
            "error_message",
            "created_at",
            "started_at",
            "finished_at",
            "last_progress_at",
        )
        read_only_fields = fields

    def get_progress(self, job: Job) -> float:
        """Records done out of records total, from 0 to 1."""
        return round(job.records_done / job.records_total, 4) if job.records_total else 0.0


class JobDetailSerializer(JobSerializer):
    """A job with the first records the model rejected."""

    record_errors = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = (*JobSerializer.Meta.fields, "record_errors")
        read_only_fields = fields

    def get_record_errors(self, job: Job) -> list[dict[str, Any]]:
        """Up to 20 ``{"record", "line", "error"}`` entries, in input order."""
        return jobs.job_record_errors(job)


@extend_schema_field(OpenApiTypes.BINARY)
class UploadField(serializers.FileField):
    """A file part of a multipart body. drf-spectacular describes a FileField as a URI string
    (what it reads back), so a client built from the schema sent the file as a text field."""


class JobSubmitSerializer(serializers.Serializer):
    """A job submission: a subscription, and a file or the S3 URI of an input in the LOB."""

    subscription = serializers.IntegerField()
    file = UploadField(required=False, allow_empty_file=True)
    input_uri = serializers.CharField(required=False, max_length=1024)
    content_type = serializers.CharField(
        required=False,
        max_length=64,
        help_text="text/csv or application/jsonlines; else the file's own type or extension.",
    )


class JobSubmitJsonSerializer(JobSubmitSerializer):
    """A job submission as JSON: the input is already in the LOB's S3 location."""

    file = None  # a JSON body carries no file
    input_uri = serializers.CharField(max_length=1024)


class JobFilter(django_filters.FilterSet):
    """Filter jobs by LOB slug, subscription, status and submitter username."""

    lob = django_filters.CharFilter(field_name="subscription__lob__slug")
    subscription = VisibleIdFilter(field_name="subscription_id")
    submitter = django_filters.CharFilter(field_name="submitted_by__username")

    class Meta:
        model = Job
        fields = ("lob", "subscription", "status", "submitter")


class JobCursorPagination(CursorPagination):
    """Newest first, stable under inserts."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request) -> Any:
        # The position is a time from the cursor's text: one the database cannot compare (not a
        # time, or beyond year 9999 in UTC) is an invalid cursor (404), not a 500.
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            try:
                position = datetime.fromisoformat(cursor.position)
            except ValueError:
                position = None
            if position is None or (position.tzinfo is not None and not in_utc_range(position)):
                raise NotFound(self.invalid_cursor_message)
        return cursor


class JobViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Inference jobs of the caller's LOBs: submit, follow, cancel, read and download results."""

    serializer_class = JobSerializer
    queryset = Job.objects.none()  # for the schema; requests use get_queryset
    filterset_class = JobFilter
    pagination_class = JobCursorPagination
    parser_classes = [MultiPartParser, FormParser, JSONParser]

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        # Before anything reads the body (the session's CSRF check may): an upload is received
        # as the upload form's is, never spooled to disk past the jobs' size limit.
        if request.method == "POST":
            request.upload_handlers = job_upload_handlers(request)
        return super().initialize_request(request, *args, **kwargs)

    def get_queryset(self) -> QuerySet[Job]:
        return jobs.jobs_visible_to(self.request.user)

    def get_object(self) -> Job:
        """The job in the URL through the tenancy rule (404 for another LOB's)."""
        return jobs.job_for_member(self.request.user, self.kwargs["pk"])

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return JobDetailSerializer if self.action == "retrieve" else JobSerializer

    @extend_schema(
        request={
            "multipart/form-data": JobSubmitSerializer,
            "application/json": JobSubmitJsonSerializer,
        },
        parameters=[
            OpenApiParameter(
                IDEMPOTENCY_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Repeating a submission with the same key returns the same job.",
            )
        ],
        responses={202: JobSerializer, **error_responses(400, 403, 404, 409, 413, 415, 502)},
        summary="Submit a job",
        description=(
            "A CSV (header row, ',' delimiter, UTF-8) or JSON Lines file, or `input_uri` naming "
            "an object under the LOB's results location; analysts and admins of an active "
            "subscription. Errors: 400 `empty_input`, `no_header`, `wrong_delimiter`, "
            "`invalid_encoding`, `line_too_long`, `unclosed_quote`, `invalid_jsonlines`; 403 "
            "`not_a_member`, `may_not_invoke`, `subscription_inactive`, `input_outside_lob`; "
            "409 `idempotency_key_reused`; 413 `input_too_large`; 415 `unsupported_content_type`; "
            "502 `upstream_error` (the input cannot be stored or read)."
        ),
    )
    def create(self, request: Request) -> Response:
        """Store and check the input, create the job; it starts once committed (202)."""
        submission = JobSubmitSerializer(data=request.data)
        submission.is_valid(raise_exception=True)
        data = submission.validated_data
        try:
            subscription = selectors.subscription_for_member(request.user, data["subscription"])
        except NotFoundError:
            access.unknown_subscription_record(
                action="job.submitted",
                principal=request.user,
                subscription_ref=str(data["subscription"]),
                request=request._request,
            )
            raise
        upload = data.get("file")
        content_type = data.get("content_type") or ""
        if not content_type and upload is not None:
            extension = "." + (upload.name or "").rpartition(".")[2].lower()
            content_type = _EXTENSION_TYPES.get(extension) or upload.content_type or ""
        if not content_type and data.get("input_uri"):
            extension = "." + data["input_uri"].rpartition(".")[2].lower()
            content_type = _EXTENSION_TYPES.get(extension, "")
        job, _created = jobs.job_submit(
            subscription=subscription,
            principal=request.user,
            content_type=content_type,
            file=upload,
            input_uri=data.get("input_uri", ""),
            idempotency_key=request.headers.get(IDEMPOTENCY_HEADER, ""),
            request=request._request,
        )
        job = jobs.job_for_member(request.user, job.pk)
        return Response(JobSerializer(job).data, status=202)

    @extend_schema(
        request=None,
        responses={200: JobSerializer, **error_responses(403, 404, 409)},
        summary="Cancel a job",
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Stop the job: remaining chunks are skipped, finished parts kept."""
        job = jobs.job_cancel(
            job=self.get_object(), acting_user=request.user, request=request._request
        )
        return Response(JobSerializer(job).data)

    @extend_schema(
        parameters=[
            OpenApiParameter("page", OpenApiTypes.INT, description="From 1."),
            OpenApiParameter("page_size", OpenApiTypes.INT, description="At most 500."),
        ],
        responses={200: OpenApiTypes.OBJECT, **error_responses(400, 404, 502)},
        summary="The job's output records so far",
    )
    @action(detail=True, methods=["get"])
    def results(self, request: Request, pk: str | None = None) -> Response:
        """Output records in input order: ``{"record", "line", "ids"}`` or with ``"error"``."""
        job = self.get_object()
        try:
            page = max(int(request.query_params.get("page", 1)), 1)
            size = min(max(int(request.query_params.get("page_size", 50)), 1), 500)
        except ValueError as exc:
            # A list per field, like every other validation error.
            message = ["page and page_size are numbers."]
            raise serializers.ValidationError({"page": message}) from exc
        count, records = jobs.job_results(
            job=job, principal=request.user, offset=(page - 1) * size, limit=size
        )
        base = request.build_absolute_uri(request.path)
        return Response(
            {
                "count": count,
                "next": f"{base}?page={page + 1}&page_size={size}" if page * size < count else None,
                "previous": f"{base}?page={page - 1}&page_size={size}" if page > 1 else None,
                "results": records,
            }
        )

    @extend_schema(
        request=None,
        parameters=[
            OpenApiParameter(
                "Location",
                OpenApiTypes.URI,
                OpenApiParameter.HEADER,
                required=True,
                response=[302],
                description="The presigned URL of the merged output.",
            )
        ],
        responses={302: None, **error_responses(404, 409, 502)},
        summary="Download the merged output (302 to a short-lived URL)",
    )
    @action(detail=True, methods=["get"])
    def download(self, request: Request, pk: str | None = None) -> HttpResponse:
        """Redirect to a presigned URL of the merged output, valid for a minute."""
        url = jobs.job_download_url(
            job=self.get_object(), principal=request.user, request=request._request
        )
        response = HttpResponseRedirect(url)
        response["Cache-Control"] = "no-store"
        return response
