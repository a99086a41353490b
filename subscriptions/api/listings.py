"""REST endpoints for the listings catalogue: :class:`ListingSerializer`, :class:`ListingViewSet`.

Everyone signed in reads the catalogue; platform admins add and change listings through the catalog
service, which writes the audit trail.
"""

from __future__ import annotations

from django.db.models import QuerySet
from rest_framework import mixins, serializers, viewsets

from portal.api.permissions import PlatformAdminWrites
from subscriptions import selectors
from subscriptions.models import CONTENT_TYPES, Listing
from subscriptions.services import catalog

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
