"""REST endpoints for listings, subscriptions and the authorized proxy path.

Views are thin: subscriptions come from the scoped selectors (another LOB's is "not found"),
changes and calls go through the services, which check who may do what and write the audit trail.
``POST /subscriptions/{id}/invocations/`` takes the raw payload with its Content-Type and answers
with the model's own body and content type.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import django_filters
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated, NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors as account_selectors
from accounts.models import Lob
from portal.api.filters import VisibleIdFilter, in_utc_range
from portal.api.negotiation import FirstRendererNegotiation
from portal.api.parsers import FormParser, JSONParser, MultiPartParser
from portal.api.permissions import PlatformAdminWrites
from portal.api.schema import error_responses
from portal.errors import NotFoundError
from subscriptions import selectors
from subscriptions.models import CONTENT_TYPES, Endpoint, Job, Listing, Subscription
from subscriptions.services import access, catalog, endpoints, jobs, proxy, seller_tokens
from subscriptions.uploads import job_upload_handlers

TOKEN_HEADER = "X-Subscription-Token"  # noqa: S105 (a header name)
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
# A body larger than the limit is read (and dropped) up to this multiple of it, so the caller gets
# its 413 instead of a connection cut mid-upload; beyond that the connection is simply closed.
_DRAIN_FACTOR = 4
_DRAIN_CHUNK = 1024 * 1024


# --- Listings -------------------------------------------------------------------------------------


class ListingSerializer(serializers.ModelSerializer):
    """A Marketplace listing in the catalogue, and how its seller vouches for subscriptions."""

    content_types = serializers.ListField(
        child=serializers.ChoiceField(choices=CONTENT_TYPES), allow_empty=False
    )

    class Meta:
        model = Listing
        fields = (
            "product_code",
            "name",
            "seller_name",
            "model_package_arn",
            "description",
            "content_types",
            "token_service_url",
            "token_service_lambda_arn",
            "seller_issuer",
            "seller_jwks_url",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("created_at", "updated_at")
        # Uniqueness is the service's 409, not a pre-check here.
        extra_kwargs = {"product_code": {"validators": []}}


class ListingViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The catalogue: everyone signed in reads it; platform admins add and change listings."""

    serializer_class = ListingSerializer
    permission_classes = [PlatformAdminWrites]
    queryset = Listing.objects.none()  # for the schema; requests use get_queryset
    lookup_field = "product_code"
    lookup_value_regex = r"[A-Za-z0-9._-]+"
    filterset_fields = ("seller_name",)

    def get_queryset(self) -> QuerySet[Listing]:
        return selectors.listings_visible_to(self.request.user).order_by("name")

    def perform_create(self, serializer: ListingSerializer) -> None:
        serializer.instance = catalog.listing_create(
            acting_user=self.request.user,
            request=self.request._request,
            **serializer.validated_data,
        )

    def perform_update(self, serializer: ListingSerializer) -> None:
        serializer.instance = catalog.listing_update(
            listing=serializer.instance,
            acting_user=self.request.user,
            request=self.request._request,
            **serializer.validated_data,
        )


# --- Subscriptions --------------------------------------------------------------------------------


class EndpointSerializer(serializers.ModelSerializer):
    """The subscription's SageMaker endpoint, as last synced from DescribeEndpoint."""

    # A plain string: the region choices already have a schema name (the accounts' one).
    region = serializers.CharField(read_only=True)

    class Meta:
        model = Endpoint
        fields = ("name", "region", "status", "instance_type", "synced_at", "sync_error")
        read_only_fields = fields


class VisibleLobField(serializers.SlugRelatedField):
    """A LOB by slug, among those the caller can see."""

    def get_queryset(self) -> QuerySet[Lob]:
        return account_selectors.lobs_visible_to(self.context["request"].user)


class SubscriptionSerializer(serializers.ModelSerializer):
    """A LOB's subscription to a listing, with its endpoint. LOB and listing are fixed."""

    lob = VisibleLobField(slug_field="slug")
    listing = serializers.SlugRelatedField(
        slug_field="product_code", queryset=Listing.objects.all()
    )
    listing_name = serializers.CharField(source="listing.name", read_only=True)
    content_types = serializers.ListField(
        source="listing.content_types", child=serializers.CharField(), read_only=True
    )
    is_usable = serializers.BooleanField(read_only=True)
    endpoint = EndpointSerializer(read_only=True, allow_null=True)
    endpoint_name = serializers.CharField(write_only=True, required=False, max_length=63)
    endpoint_region = serializers.CharField(write_only=True, required=False, max_length=32)

    class Meta:
        model = Subscription
        fields = (
            "id",
            "lob",
            "listing",
            "listing_name",
            "content_types",
            "status",
            "starts_on",
            "ends_on",
            "is_usable",
            "endpoint",
            "endpoint_name",
            "endpoint_region",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("id", "created_at", "updated_at")
        validators = []  # duplicates are the service's 409

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if self.instance is not None:
            for fixed in ("lob", "listing"):
                if fixed in attrs and attrs[fixed] != getattr(self.instance, fixed):
                    raise serializers.ValidationError(
                        {fixed: "Cannot change; cancel this subscription and create another."}
                    )
        return attrs


class SellerTokenSerializer(serializers.Serializer):
    """A seller token for the subscription; send it as X-Subscription-Token when invoking."""

    token = serializers.CharField()
    expires_at = serializers.DateTimeField()


class UsageSerializer(serializers.Serializer):
    """Calls through the proxy path for one subscription, from its invocation records."""

    calls = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    errors = serializers.IntegerField()
    records = serializers.IntegerField()
    bytes_in = serializers.IntegerField()
    bytes_out = serializers.IntegerField()


class SubscriptionFilter(django_filters.FilterSet):
    """Filter subscriptions by LOB slug, status and listing product code."""

    lob = django_filters.CharFilter(field_name="lob__slug")
    listing = django_filters.CharFilter(field_name="listing__product_code")

    class Meta:
        model = Subscription
        fields = ("lob", "status", "listing")


class RawBodyParser(BaseParser):
    """Any content type, given to the view as the raw bytes (at most the payload limit + 1)."""

    media_type = "*/*"

    def parse(
        self, stream: Any, media_type: str | None = None, parser_context: dict | None = None
    ) -> bytes:
        if stream is None:
            return b""
        limit = settings.INVOKE_MAX_PAYLOAD_BYTES
        body = stream.read(limit + 1)
        if len(body) > limit:
            # The service answers 413; read the rest so the caller is not cut off mid-upload.
            drained = 0
            while drained < limit * _DRAIN_FACTOR:
                chunk = stream.read(_DRAIN_CHUNK)
                if not chunk:
                    break
                drained += len(chunk)
        return body


RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    required=True,
    response=[429],
    description="Seconds to wait before calling again.",
)

_AUDITED_ACTIONS = {"authorize": "subscription.authorized", "invocations": "subscription.invoked"}


class SubscriptionViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Subscriptions of the caller's LOBs (all for platform admins), and the proxy path."""

    serializer_class = SubscriptionSerializer
    queryset = Subscription.objects.none()  # for the schema; requests use get_queryset
    filterset_class = SubscriptionFilter

    def get_queryset(self) -> QuerySet[Subscription]:
        return selectors.subscriptions_visible_to(self.request.user).order_by("lob__slug", "id")

    def get_object(self) -> Subscription:
        """The subscription in the URL through the tenancy selector (404 for another LOB's)."""
        return selectors.subscription_for_member(self.request.user, self.kwargs["pk"])

    def handle_exception(self, exc: Exception) -> Response:
        """The API's error answer, plus ``Retry-After`` when the error says when to retry.

        A call refused before the view runs (no or a bad Cognito token) is audited here: every
        authorize and invoke is an audit event, allowed or refused.
        """
        action_name = _AUDITED_ACTIONS.get(getattr(self, "action", None) or "")
        if action_name and isinstance(exc, (NotAuthenticated, AuthenticationFailed)):
            access.unknown_subscription_record(
                action=action_name,
                principal=AnonymousUser(),
                subscription_ref=str(self.kwargs.get("pk", "")),
                request=self.request._request,
                reason=str(exc.get_codes()),
            )
        response = super().handle_exception(exc)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response["Retry-After"] = str(retry_after)
        return response

    def _service_kwargs(self) -> dict[str, Any]:
        return {"acting_user": self.request.user, "request": self.request._request}

    def perform_create(self, serializer: SubscriptionSerializer) -> None:
        data = dict(serializer.validated_data)
        subscription = catalog.subscription_create(**self._service_kwargs(), **data)
        serializer.instance = selectors.subscriptions_visible_to(self.request.user).get(
            pk=subscription.pk
        )

    def perform_update(self, serializer: SubscriptionSerializer) -> None:
        data = {k: v for k, v in serializer.validated_data.items() if k not in ("lob", "listing")}
        catalog.subscription_update(
            subscription=serializer.instance, **self._service_kwargs(), **data
        )
        serializer.instance = self.get_object()

    def _subscription_for_call(self, action_name: str) -> Subscription:
        """The subscription for authorize/invoke; a refusal for an unseen one is audited too."""
        try:
            return self.get_object()
        except NotFoundError:
            access.unknown_subscription_record(
                action=action_name,
                principal=self.request.user,
                subscription_ref=str(self.kwargs["pk"]),
                request=self.request._request,
            )
            raise

    @extend_schema(
        request=None,
        responses={200: SellerTokenSerializer, **error_responses(403, 404, 502, 503)},
        summary="Obtain a seller token for the subscription",
        description=(
            "For analysts and admins of the LOB, while the subscription is active. The portal asks "
            "the seller's token service (cached until most of the token's life is spent). "
            "Refusals: 403 `not_a_member`, `may_not_invoke`, `subscription_inactive`, "
            "`not_entitled` (the seller says no); 503 `seller_unavailable`."
        ),
    )
    @action(detail=True, methods=["post"])
    def authorize(self, request: Request, pk: str | None = None) -> Response:
        """Ask the seller to vouch for this subscription."""
        subscription = self._subscription_for_call("subscription.authorized")
        seller_token = seller_tokens.subscription_authorize(
            subscription=subscription, principal=request.user, request=request._request
        )
        data = SellerTokenSerializer(
            {"token": seller_token.token, "expires_at": seller_token.expires_at}
        ).data
        return Response(data, headers={"Cache-Control": "no-store"})

    @extend_schema(
        request={content_type: OpenApiTypes.BINARY for content_type in CONTENT_TYPES},
        parameters=[
            OpenApiParameter(
                TOKEN_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=True,
                description="The token from `authorize`.",
            ),
            OpenApiParameter(
                CUSTOM_ATTRIBUTES_HEADER,
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="Passed to the model as InvokeEndpoint's CustomAttributes.",
            ),
            OpenApiParameter(
                "X-Invocation-Id",
                OpenApiTypes.UUID,
                OpenApiParameter.HEADER,
                required=True,
                response=[200],
                description="The invocation record of this call.",
            ),
            OpenApiParameter(
                "X-Result-Uri",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                required=True,
                response=[200],
                description="The S3 object the answer is stored in.",
            ),
            RETRY_AFTER,
        ],
        responses={
            (200, "*/*"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The model's answer, with its content type."
            ),
            **error_responses(401, 403, 404, 406, 413, 415, 429, 502, 503, 504),
        },
        summary="Run the model on a payload",
        description=(
            "The raw payload with its `Content-Type` (one the listing accepts) and optional "
            "`Accept`, authenticated as usual plus the seller token in `X-Subscription-Token`. "
            "Errors: 401 `token_invalid`/`token_expired`; 403 `token_subscription_mismatch`, "
            "`not_a_member`, `may_not_invoke`, `subscription_inactive`; 413 `payload_too_large`; "
            "406 `not_acceptable` (the model cannot answer in the `Accept` type); "
            "415 `unsupported_content_type`; 429 `throttled` (with `Retry-After`); "
            "502 `model_error` (the container's message), `upstream_error`, `result_not_stored`; "
            "503 `endpoint_unavailable`, `seller_unavailable`; 504 `upstream_timeout`."
        ),
    )
    @action(
        detail=True,
        methods=["post"],
        parser_classes=[RawBodyParser],
        renderer_classes=[JSONRenderer],
        content_negotiation_class=FirstRendererNegotiation,
    )
    def invocations(self, request: Request, pk: str | None = None) -> HttpResponse:
        """One call through the authorized proxy path; the answer is also stored in S3."""
        subscription = self._subscription_for_call("subscription.invoked")
        body = request.data if isinstance(request.data, bytes) else b""
        result = proxy.invocation_run(
            subscription=subscription,
            principal=request.user,
            token=request.headers.get(TOKEN_HEADER, ""),
            body=body,
            content_type=request.headers.get("Content-Type", ""),
            accept=request.headers.get("Accept"),
            custom_attributes=request.headers.get(CUSTOM_ATTRIBUTES_HEADER),
            request=request._request,
        )
        response = HttpResponse(result.body, content_type=result.content_type)
        response["X-Invocation-Id"] = str(result.invocation.pk)
        response["X-Result-Uri"] = result.result_uri
        response["Cache-Control"] = "no-store"
        return response

    @extend_schema(responses={200: UsageSerializer}, summary="Usage of the subscription")
    @action(detail=True, methods=["get"])
    def usage(self, request: Request, pk: str | None = None) -> Response:
        """Calls, records and errors so far, counted from the invocation records."""
        usage = selectors.subscription_usage(self.get_object())
        return Response(UsageSerializer(usage).data)

    @extend_schema(
        request=None,
        responses={200: EndpointSerializer, **error_responses(403, 404)},
        summary="Refresh the endpoint's status from SageMaker",
    )
    @action(detail=True, methods=["post"], url_path="sync-endpoint")
    def sync_endpoint(self, request: Request, pk: str | None = None) -> Response:
        """DescribeEndpoint now (platform admins and the LOB's admins)."""
        subscription = self.get_object()
        endpoint = getattr(subscription, "endpoint", None)
        if endpoint is None:
            raise NotFoundError("This subscription has no endpoint.", code="no_endpoint")
        endpoint = endpoints.endpoint_sync(
            endpoint=endpoint, acting_user=request.user, request=request._request
        )
        return Response(EndpointSerializer(endpoint).data)


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
