"""REST endpoints for the principal, LOBs, AWS accounts, memberships and the audit trail.

Views are thin: querysets come from the tenancy selectors (so other LOBs' objects are simply not
found), changes go through the services (which check who may do what and write the audit trail).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator

import django_filters
from django.db.models import Count, OuterRef, Prefetch, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import exceptions, mixins, permissions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts import selectors
from accounts.models import AuditEvent, AwsAccount, Lob, Membership, User
from accounts.services import aws_verification, tenancy
from portal.api.filters import IsoDateTimeFilter
from portal.api.negotiation import FirstRendererNegotiation
from portal.api.permissions import PlatformAdminWrites
from portal.api.schema import error_responses

# --- Me -------------------------------------------------------------------------------------------


class MyMembershipSerializer(serializers.Serializer):
    """A LOB the user belongs to and their role in it."""

    lob = serializers.CharField()
    lob_name = serializers.CharField()
    role = serializers.CharField()
    aws_account_id = serializers.CharField()


class MeSerializer(serializers.Serializer):
    """Who the caller is, as the portal knows them."""

    username = serializers.CharField()
    email = serializers.EmailField(allow_blank=True)
    name = serializers.CharField()
    is_platform_admin = serializers.BooleanField()
    memberships = MyMembershipSerializer(many=True)


class MeView(APIView):
    """``GET /api/v1/me/``: the authenticated principal and their LOB memberships."""

    @extend_schema(responses=MeSerializer, summary="The signed-in principal")
    def get(self, request: Request) -> Response:
        """Describe the caller."""
        user = request.user
        data = {
            "username": user.username,
            "email": user.email,
            "name": user.display_name,
            "is_platform_admin": user.is_platform_admin,
            "memberships": [
                {
                    "lob": m.lob.slug,
                    "lob_name": m.lob.name,
                    "role": m.role,
                    "aws_account_id": m.lob.aws_account.account_id,
                }
                for m in selectors.memberships_of(user)
            ],
        }
        return Response(MeSerializer(data).data)


# --- Shared ---------------------------------------------------------------------------------------


class ServiceBackedViewSet(viewsets.GenericViewSet):
    """Create/update/delete through service functions, which check permissions and audit."""

    def service_kwargs(self) -> dict:
        return {"acting_user": self.request.user, "request": self.request._request}


# --- AWS accounts ---------------------------------------------------------------------------------


class AwsAccountSerializer(serializers.ModelSerializer):
    """An AWS account as the API shows it; the ExternalId can be written, never read."""

    lobs = serializers.SlugRelatedField(many=True, read_only=True, slug_field="slug")
    external_id = serializers.CharField(
        write_only=True, required=False, allow_blank=True, max_length=1224
    )
    has_external_id = serializers.SerializerMethodField()
    results_location = serializers.CharField(read_only=True)

    class Meta:
        model = AwsAccount
        fields = (
            "account_id",
            "name",
            "default_region",
            "invoke_role_arn",
            "studio_role_arn",
            "external_id",
            "has_external_id",
            "results_bucket",
            "results_prefix",
            "results_location",
            "sts_endpoint_url",
            "s3_endpoint_url",
            "sagemaker_endpoint_url",
            "sagemaker_runtime_endpoint_url",
            "lobs",
            "last_verified_at",
            "last_verification_ok",
            "last_verification_detail",
            "created_at",
            "updated_at",
        )
        read_only_fields = (
            "last_verified_at",
            "last_verification_ok",
            "last_verification_detail",
            "created_at",
            "updated_at",
        )
        # Uniqueness is enforced by the service (as a 409), not by a pre-check here.
        extra_kwargs = {"account_id": {"validators": []}}

    def get_has_external_id(self, account: AwsAccount) -> bool:
        return bool(account.external_id)


class VerificationSerializer(serializers.Serializer):
    """The outcome of verifying an account's invoke role."""

    ok = serializers.BooleanField()
    detail = serializers.CharField()
    caller_arn = serializers.CharField()
    aws_code = serializers.CharField()
    account = AwsAccountSerializer()


class AwsAccountFilter(django_filters.FilterSet):
    """Filter accounts by the LOB that uses them (one the caller can see)."""

    lob = django_filters.CharFilter(method="filter_lob")

    class Meta:
        model = AwsAccount
        fields = ("lob", "default_region")

    def filter_lob(self, queryset: QuerySet[AwsAccount], name: str, value: str) -> QuerySet:
        # Among the caller's LOBs only: a match on another LOB sharing the account would say
        # that it exists and uses this account.
        visible = selectors.lobs_visible_to(self.request.user).filter(slug=value)
        return queryset.filter(lobs__in=visible).distinct()


class AwsAccountViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    ServiceBackedViewSet,
):
    """AWS accounts: platform admins manage them; LOB admins read their LOBs' accounts."""

    serializer_class = AwsAccountSerializer
    permission_classes = [PlatformAdminWrites]
    queryset = AwsAccount.objects.none()  # for the schema; requests use get_queryset
    lookup_field = "account_id"
    lookup_value_regex = r"[0-9]{1,12}"
    filterset_class = AwsAccountFilter

    def get_queryset(self) -> QuerySet[AwsAccount]:
        # Another LOB sharing the account is not the caller's to see, not even by its slug.
        visible_lobs = selectors.lobs_visible_to(self.request.user).order_by("slug")
        return (
            selectors.aws_accounts_visible_to(self.request.user)
            .prefetch_related(Prefetch("lobs", queryset=visible_lobs))
            .order_by("account_id")
        )

    def perform_create(self, serializer: AwsAccountSerializer) -> None:
        serializer.instance = tenancy.aws_account_create(
            **self.service_kwargs(), **serializer.validated_data
        )

    def perform_update(self, serializer: AwsAccountSerializer) -> None:
        serializer.instance = tenancy.aws_account_update(
            account=serializer.instance, **self.service_kwargs(), **serializer.validated_data
        )

    def perform_destroy(self, instance: AwsAccount) -> None:
        tenancy.aws_account_delete(account=instance, **self.service_kwargs())

    @extend_schema(request=None, responses=VerificationSerializer, summary="Verify the invoke role")
    @action(detail=True, methods=["post"])
    def verify(self, request: Request, account_id: str | None = None) -> Response:
        """Assume the invoke role as the caller and check GetCallerIdentity's account."""
        account = self.get_object()
        result = aws_verification.aws_account_verify(
            account=account, acting_user=request.user, request=request._request
        )
        data = {
            "ok": result.ok,
            "detail": result.detail,
            "caller_arn": result.caller_arn,
            "aws_code": result.aws_code,
            "account": AwsAccountSerializer(account).data,
        }
        return Response(data, status=status.HTTP_200_OK)


# --- LOBs -----------------------------------------------------------------------------------------


class LobSerializer(serializers.ModelSerializer):
    """A line of business, its AWS account, and the caller's role in it."""

    aws_account = serializers.SlugRelatedField(
        slug_field="account_id", queryset=AwsAccount.objects.all()
    )
    member_count = serializers.IntegerField(read_only=True)
    my_role = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = Lob
        fields = (
            "slug",
            "name",
            "description",
            "aws_account",
            "is_active",
            "member_count",
            "my_role",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("created_at", "updated_at")
        extra_kwargs = {"slug": {"validators": []}}


class LobFilter(django_filters.FilterSet):
    """Filter LOBs by account and state."""

    aws_account = django_filters.CharFilter(field_name="aws_account__account_id")

    class Meta:
        model = Lob
        fields = ("aws_account", "is_active")


class LobViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    ServiceBackedViewSet,
):
    """LOBs: everyone reads their own; platform admins create, change and delete."""

    serializer_class = LobSerializer
    permission_classes = [PlatformAdminWrites]
    queryset = Lob.objects.none()  # for the schema; requests use get_queryset
    lookup_field = "slug"
    filterset_class = LobFilter

    def get_queryset(self) -> QuerySet[Lob]:
        if getattr(self, "swagger_fake_view", False):
            return Lob.objects.none()
        my_role = Membership.objects.filter(lob=OuterRef("pk"), user=self.request.user).values(
            "role"
        )[:1]
        # Correlated subqueries rather than a GROUP BY: they run for the page's rows only, and
        # the paginator's COUNT(*) can drop them.
        member_count = (
            Membership.objects.filter(lob=OuterRef("pk"))
            .order_by()
            .values("lob")
            .annotate(n=Count("pk"))
            .values("n")
        )
        return (
            selectors.lobs_visible_to(self.request.user)
            .annotate(member_count=Coalesce(Subquery(member_count), 0), my_role=Subquery(my_role))
            .order_by("slug")
        )

    def perform_create(self, serializer: LobSerializer) -> None:
        lob = tenancy.lob_create(**self.service_kwargs(), **serializer.validated_data)
        # Re-read with the annotations the response shows (member_count was left out of the 201).
        serializer.instance = self.get_queryset().get(pk=lob.pk)

    def perform_update(self, serializer: LobSerializer) -> None:
        tenancy.lob_update(
            lob=serializer.instance, **self.service_kwargs(), **serializer.validated_data
        )
        # Re-read with the annotations the response shows.
        serializer.instance = self.get_queryset().get(pk=serializer.instance.pk)

    def perform_destroy(self, instance: Lob) -> None:
        tenancy.lob_delete(lob=instance, **self.service_kwargs())


# --- Memberships ----------------------------------------------------------------------------------


class VisibleLobField(serializers.SlugRelatedField):
    """A LOB by slug, among those the caller can see (others do not exist for them)."""

    def get_queryset(self) -> QuerySet[Lob]:
        return selectors.lobs_visible_to(self.context["request"].user)


class MembershipSerializer(serializers.ModelSerializer):
    """A user's role in a LOB. Only the role can change after creation."""

    lob = VisibleLobField(slug_field="slug")
    # A text input in the browsable API, not a select of every active user: a username is typed,
    # the portal's users are not a directory for members of one LOB to browse.
    user = serializers.SlugRelatedField(
        slug_field="username",
        queryset=User.objects.filter(is_active=True),
        style={"base_template": "input.html"},
    )
    user_name = serializers.CharField(source="user.display_name", read_only=True)
    role = serializers.ChoiceField(choices=Membership.Role.choices)

    class Meta:
        model = Membership
        fields = ("id", "lob", "user", "user_name", "role", "created_at", "updated_at")
        read_only_fields = ("id", "created_at", "updated_at")
        validators = []  # duplicates are the service's 409, not a 400 here

    def validate_lob(self, lob: Lob) -> Lob:
        # Before the user field is looked up (fields are validated in order): someone who may not
        # manage the LOB's members is refused without learning whether the username exists.
        if self.instance is None and not selectors.may_manage_members(
            self.context["request"].user, lob
        ):
            raise exceptions.PermissionDenied(
                "Only platform admins and this LOB's admins manage its members."
            )
        return lob

    def validate(self, attrs: dict) -> dict:
        if self.instance is not None:
            for fixed in ("lob", "user"):
                if fixed in attrs and attrs[fixed] != getattr(self.instance, fixed):
                    raise serializers.ValidationError(
                        {fixed: "Cannot change; remove the membership and add a new one."}
                    )
        return attrs


class MembershipFilter(django_filters.FilterSet):
    """Filter memberships by LOB slug, username and role."""

    lob = django_filters.CharFilter(field_name="lob__slug")
    user = django_filters.CharFilter(field_name="user__username")

    class Meta:
        model = Membership
        fields = ("lob", "user", "role")


class MembershipViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    mixins.DestroyModelMixin,
    ServiceBackedViewSet,
):
    """Memberships: members read their LOBs'; LOB admins and platform admins manage them."""

    serializer_class = MembershipSerializer
    queryset = Membership.objects.none()  # for the schema; requests use get_queryset
    filterset_class = MembershipFilter

    def get_queryset(self) -> QuerySet[Membership]:
        return selectors.memberships_visible_to(self.request.user).order_by(
            "lob__slug", "user__username"
        )

    def perform_create(self, serializer: MembershipSerializer) -> None:
        data = serializer.validated_data
        serializer.instance = tenancy.membership_create(
            lob=data["lob"], user=data["user"], role=data["role"], **self.service_kwargs()
        )

    def perform_update(self, serializer: MembershipSerializer) -> None:
        role = serializer.validated_data.get("role", serializer.instance.role)
        serializer.instance = tenancy.membership_update(
            membership=serializer.instance, role=role, **self.service_kwargs()
        )

    def perform_destroy(self, instance: Membership) -> None:
        tenancy.membership_delete(membership=instance, **self.service_kwargs())


# --- Audit events ---------------------------------------------------------------------------------


class MayReadAudit(permissions.BasePermission):
    """Platform admins and LOB admins read (their part of) the audit trail."""

    message = "Only platform admins and LOB admins may read the audit trail."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        return (
            user.is_platform_admin
            or Membership.objects.filter(
                user=user, role=Membership.Role.ADMIN, lob__is_active=True
            ).exists()
        )


class AuditEventSerializer(serializers.ModelSerializer):
    """One audit event."""

    class Meta:
        model = AuditEvent
        fields = (
            "id",
            "occurred_at",
            "actor_username",
            "action",
            "target_type",
            "target_id",
            "lob_slug",
            "outcome",
            "reason",
            "detail",
            "request_id",
            "client_ip",
        )


class AuditEventFilter(django_filters.FilterSet):
    """Filter by action (prefix), outcome, actor, LOB and time."""

    # A prefix longer than the column matches nothing; refused (400) rather than sent as a LIKE
    # pattern, which SQLite refuses past 50,000 bytes (an OperationalError: a 500, or a CSV cut
    # off after its header).
    action = django_filters.CharFilter(
        field_name="action",
        lookup_expr="startswith",
        max_length=AuditEvent._meta.get_field("action").max_length,
    )
    actor = django_filters.CharFilter(field_name="actor_username")
    lob = django_filters.CharFilter(field_name="lob_slug")
    since = IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = ("action", "outcome", "actor", "lob", "since", "until")


class _Echo:
    """A file-like object whose write returns the line, for streaming CSV."""

    def write(self, value: str) -> str:
        return value


CSV_COLUMNS = AuditEventSerializer.Meta.fields


def _csv_safe(value: object) -> str:
    """Neutralise spreadsheet formulas: a value starting with =, +, -, @, a tab or a carriage
    return (OWASP's list: a spreadsheet skips the last two and reads the formula after them)."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


# A member who is no LOB's admin may not read the audit trail at all: 403 on every operation.
@extend_schema_view(
    list=extend_schema(
        responses={200: AuditEventSerializer(many=True), **error_responses(400, 403)}
    ),
    retrieve=extend_schema(responses={200: AuditEventSerializer, **error_responses(403)}),
)
class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit trail: all of it for platform admins, their LOBs' part for LOB admins."""

    serializer_class = AuditEventSerializer
    queryset = AuditEvent.objects.none()  # for the schema; requests use get_queryset
    permission_classes = [permissions.IsAuthenticated, MayReadAudit]
    filterset_class = AuditEventFilter

    def get_queryset(self) -> QuerySet[AuditEvent]:
        return selectors.audit_events_visible_to(self.request.user).order_by("-occurred_at", "-id")

    @extend_schema(
        filters=True,  # the list's, which drf-spectacular documents for list actions only
        responses={
            (200, "text/csv"): OpenApiResponse(
                OpenApiTypes.STR, description="One row per event, `detail` as JSON."
            ),
            **error_responses(400, 403),
        },
        summary="Export the (filtered) audit trail as CSV",
    )
    @action(detail=False, methods=["get"], content_negotiation_class=FirstRendererNegotiation)
    def export(self, request: Request) -> StreamingHttpResponse:
        """Stream every matching event as CSV (same filters as the list); ``detail`` as JSON."""
        events = self.filter_queryset(self.get_queryset())
        writer = csv.writer(_Echo())

        def cell(event: AuditEvent, column: str) -> str:
            value = getattr(event, column)
            if column == "detail":
                value = json.dumps(value, sort_keys=True, default=str)
            return _csv_safe(value)

        def rows() -> Iterator[str]:
            yield writer.writerow(CSV_COLUMNS)
            for event in events.iterator(chunk_size=1000):
                yield writer.writerow([cell(event, column) for column in CSV_COLUMNS])

        response = StreamingHttpResponse(rows(), content_type="text/csv")
        response["Content-Disposition"] = 'attachment; filename="gatehouse-audit.csv"'
        return response
