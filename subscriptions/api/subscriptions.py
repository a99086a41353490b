"""REST endpoints for subscriptions and the authorized proxy path.

Holds the subscription serializers (:class:`EndpointSerializer`, :class:`SubscriptionSerializer`,
:class:`SellerTokenSerializer`, :class:`UsageSerializer`), :class:`SubscriptionFilter`, the
:class:`RawBodyParser` the invocations take their payload with, and :class:`SubscriptionViewSet`
with its ``authorize``, ``invocations``, ``usage`` and ``sync-endpoint`` actions.

Views are thin: subscriptions come from the scoped selectors (another LOB's is "not found"),
changes and calls go through the services, which check who may do what and write the audit trail.
``POST /subscriptions/{id}/invocations/`` takes the raw payload with its Content-Type and answers
with the model's own body and content type.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.parsers import BaseParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from accounts import selectors as account_selectors
from accounts.models import Lob
from portal.api.negotiation import FirstRendererNegotiation
from portal.api.schema import error_responses
from portal.errors import NotFoundError
from subscriptions import selectors
from subscriptions.models import CONTENT_TYPES, Endpoint, Listing, Subscription
from subscriptions.services import access, catalog, endpoints, proxy, seller_tokens

TOKEN_HEADER = "X-Subscription-Token"  # noqa: S105 (a header name)
CUSTOM_ATTRIBUTES_HEADER = "X-Amzn-SageMaker-Custom-Attributes"
# A body larger than the limit is read (and dropped) up to this multiple of it, so the caller gets
# its 413 instead of a connection cut mid-upload; beyond that the connection is simply closed.
_DRAIN_FACTOR = 4
_DRAIN_CHUNK = 1024 * 1024


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
