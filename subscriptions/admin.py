"""Django admin for platform admins: listings, subscriptions (with their endpoint) and endpoints,
changed only through the catalogue services so every change is validated and audited; the
invocation records, read-only (they never hold a payload)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse

from accounts.admin import (
    PlatformAdminAccess,
    ServiceBackedAdmin,
    adopt_saved,
    form_fields,
    https_by_default,
    refusal_text,
    service_kwargs,
)
from portal.errors import ServiceError
from subscriptions.models import CONTENT_TYPES, Endpoint, Invocation, Listing, Subscription
from subscriptions.services import catalog, endpoints


class NoDeletion:
    """No service deletes these rows, and a deletion would not be audited: cancel instead."""

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- Listings -------------------------------------------------------------------------------------


class ListingAdminForm(forms.ModelForm):
    """Content types as checkboxes rather than a JSON text box."""

    content_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in CONTENT_TYPES],
        widget=forms.CheckboxSelectMultiple,
        help_text="The request content types the model accepts.",
    )

    class Meta:
        model = Listing
        fields = catalog.LISTING_FIELDS
        formfield_callback = https_by_default


@admin.register(Listing)
class ListingAdmin(NoDeletion, ServiceBackedAdmin):
    """The Marketplace catalogue; changes go through ``listing_create``/``listing_update``."""

    form = ListingAdminForm
    # Django 6's default, chosen now: seller URLs typed without a scheme are https.
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "product_code", "seller_name", "accepts", "subscription_count")
    search_fields = ("name", "product_code", "seller_name")
    readonly_fields = ("created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("product_code", "name", "seller_name", "description")}),
        ("Model", {"fields": ("model_package_arn", "content_types")}),
        (
            "Seller's token service (an HTTPS URL or a Lambda function ARN)",
            {
                "fields": (
                    "token_service_url",
                    "token_service_lambda_arn",
                    "seller_issuer",
                    "seller_jwks_url",
                )
            },
        ),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Listing]:
        return super().get_queryset(request).annotate(subscription_total=Count("subscriptions"))

    @admin.display(description="accepts")
    def accepts(self, listing: Listing) -> str:
        return ", ".join(listing.content_types or [])

    @admin.display(description="subscriptions", ordering="subscription_total")
    def subscription_count(self, listing: Listing) -> int:
        return listing.subscription_total

    def save_model(
        self, request: HttpRequest, obj: Listing, form: forms.ModelForm, change: bool
    ) -> None:
        fields = form_fields(form, catalog.LISTING_FIELDS)
        if change:
            # The stored row, not the form's copy (which already carries the changes): the
            # service compares before and after for the audit trail.
            listing = Listing.objects.get(pk=obj.pk)
            saved = catalog.listing_update(listing=listing, **service_kwargs(request), **fields)
        else:
            saved = catalog.listing_create(**service_kwargs(request), **fields)
        adopt_saved(obj, saved)


# --- Subscriptions and endpoints ------------------------------------------------------------------


class EndpointInlineForm(forms.ModelForm):
    """An empty region is the LOB account's default region (the service fills it in)."""

    class Meta:
        model = Endpoint
        fields = ("name", "region")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "region" in self.fields:
            self.fields["region"].required = False
            self.fields["region"].help_text = "Empty: the LOB account's default region."


class EndpointInline(admin.StackedInline):
    """The subscription's endpoint: name and region are set here, the rest comes from SageMaker."""

    model = Endpoint
    form = EndpointInlineForm
    fields = ("name", "region", "status", "instance_type", "synced_at", "sync_error")
    readonly_fields = ("status", "instance_type", "synced_at", "sync_error")
    extra = 0
    max_num = 1
    can_delete = False

    def get_extra(
        self, request: HttpRequest, obj: Subscription | None = None, **kwargs: Any
    ) -> int:
        return 0 if obj is not None and hasattr(obj, "endpoint") else 1

    # Inline permission hooks take the parent object, unlike PlatformAdminAccess's.
    def _platform_admin(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self._platform_admin(request)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self._platform_admin(request)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self._platform_admin(request)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def _endpoint_changes(formsets: list) -> dict[str, Any]:
    """``endpoint_name``/``endpoint_region`` from the endpoint inline, when it was filled in."""
    for formset in formsets:
        if formset.model is not Endpoint:
            continue
        formset.save(commit=False)  # sorts new and changed rows (for the change message)
        for form in formset.forms:
            data = getattr(form, "cleaned_data", None) or {}
            if form.has_changed() and data.get("name"):
                return {"endpoint_name": data["name"], "endpoint_region": data.get("region")}
    return {}


def _subscription(pk: int) -> Subscription:
    """The stored subscription (the admin's copy already carries the submitted changes)."""
    return Subscription.objects.select_related("lob__aws_account", "listing", "endpoint").get(pk=pk)


@admin.register(Subscription)
class SubscriptionAdmin(NoDeletion, ServiceBackedAdmin):
    """LOBs' subscriptions with their endpoint; changes go through the catalogue services."""

    inlines = (EndpointInline,)
    list_display = (
        "__str__",
        "lob",
        "listing",
        "status",
        "starts_on",
        "ends_on",
        "endpoint_name",
        "endpoint_status",
    )
    list_filter = ("status", "listing", "lob")
    list_select_related = ("lob", "listing", "endpoint")
    search_fields = ("lob__slug", "listing__product_code", "listing__name", "endpoint__name")
    date_hierarchy = "starts_on"
    fields = ("lob", "listing", "status", "starts_on", "ends_on", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")
    actions = ["sync_endpoints"]

    def get_readonly_fields(self, request: HttpRequest, obj: Subscription | None = None) -> tuple:
        # A subscription keeps its LOB and listing; another pair is another subscription.
        if obj is not None:
            return ("lob", "listing", *self.readonly_fields)
        return self.readonly_fields

    def view_on_site(self, obj: Subscription) -> str:
        return reverse("subscription-detail", args=[obj.pk])

    @admin.display(description="endpoint", ordering="endpoint__name")
    def endpoint_name(self, subscription: Subscription) -> str:
        endpoint = getattr(subscription, "endpoint", None)
        return endpoint.name if endpoint else "—"

    @admin.display(description="endpoint status", ordering="endpoint__status")
    def endpoint_status(self, subscription: Subscription) -> str:
        endpoint = getattr(subscription, "endpoint", None)
        return (endpoint.status or "not synced") if endpoint else "—"

    def save_model(
        self, request: HttpRequest, obj: Subscription, form: forms.ModelForm, change: bool
    ) -> None:
        """Nothing yet: the subscription and its endpoint are saved together in save_related,
        by one service call, so the audit event holds both."""

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm, formsets: list, change: bool
    ) -> None:
        obj = form.instance
        data = form.cleaned_data
        fields = {name: data[name] for name in ("status", "starts_on", "ends_on") if name in data}
        endpoint = _endpoint_changes(formsets)
        if change:
            saved = catalog.subscription_update(
                subscription=_subscription(obj.pk), **service_kwargs(request), **fields, **endpoint
            )
        else:
            saved = catalog.subscription_create(
                lob=data["lob"],
                listing=data["listing"],
                **service_kwargs(request),
                **fields,
                **endpoint,
            )
        adopt_saved(obj, saved)

    @admin.action(permissions=["change"], description="Sync the endpoints of the selected")
    def sync_endpoints(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        """DescribeEndpoint for each selected subscription's endpoint, as the admin."""
        for subscription in queryset.select_related("lob__aws_account", "endpoint"):
            _sync_one(self, request, getattr(subscription, "endpoint", None), str(subscription))


def _sync_one(
    model_admin: admin.ModelAdmin, request: HttpRequest, endpoint: Endpoint | None, label: str
) -> None:
    if endpoint is None:
        model_admin.message_user(request, f"{label}: no endpoint to sync.", messages.WARNING)
        return
    try:
        endpoint = endpoints.endpoint_sync(endpoint=endpoint, **service_kwargs(request))
    except ServiceError as exc:
        model_admin.message_user(request, f"{label}: {refusal_text(exc)}", messages.ERROR)
        return
    if endpoint.sync_error:
        model_admin.message_user(
            request,
            f"{endpoint.name}: {endpoint.status or 'status unknown'} — {endpoint.sync_error}",
            messages.ERROR,
        )
    else:
        model_admin.message_user(request, f"{endpoint.name}: {endpoint.status}", messages.SUCCESS)


@admin.register(Endpoint)
class EndpointAdmin(NoDeletion, ServiceBackedAdmin):
    """SageMaker endpoints and their last synced state; added with their subscription, renamed
    through ``subscription_update``."""

    list_display = (
        "name",
        "subscription",
        "region",
        "status",
        "instance_type",
        "synced_at",
        "sync_error",
    )
    list_filter = ("status", "region")
    list_select_related = ("subscription__lob", "subscription__listing")
    search_fields = ("name", "subscription__lob__slug", "subscription__listing__product_code")
    fields = (
        "subscription",
        "name",
        "region",
        "status",
        "instance_type",
        "synced_at",
        "sync_error",
    )
    readonly_fields = ("subscription", "status", "instance_type", "synced_at", "sync_error")
    actions = ["sync_endpoints"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """An endpoint is added on its subscription's page (the service needs both)."""
        return False

    def save_model(
        self, request: HttpRequest, obj: Endpoint, form: forms.ModelForm, change: bool
    ) -> None:
        subscription = _subscription(obj.subscription_id)
        saved = catalog.subscription_update(
            subscription=subscription,
            endpoint_name=form.cleaned_data["name"],
            endpoint_region=form.cleaned_data["region"],
            **service_kwargs(request),
        )
        adopt_saved(obj, saved.endpoint)

    @admin.action(permissions=["change"], description="Sync the selected endpoints")
    def sync_endpoints(self, request: HttpRequest, queryset: QuerySet[Endpoint]) -> None:
        """DescribeEndpoint for each selected endpoint, as the admin."""
        for endpoint in queryset.select_related("subscription__lob__aws_account"):
            _sync_one(self, request, endpoint, endpoint.name)


# --- Invocation records ---------------------------------------------------------------------------


class SubscriptionFilter(admin.SimpleListFilter):
    """Invocations by subscription; the choices are read in one query."""

    title = "subscription"
    parameter_name = "subscription"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        subscriptions = Subscription.objects.select_related("lob", "listing").order_by(
            "lob__slug", "listing__product_code"
        )
        return [(str(s.pk), str(s)) for s in subscriptions]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(subscription_id=self.value())
        return queryset


@admin.register(Invocation)
class InvocationAdmin(PlatformAdminAccess, admin.ModelAdmin):
    """Every call through the proxy path, allowed or refused; read-only (no payload is kept)."""

    list_display = (
        "started_at",
        "subscription",
        "principal",
        "outcome",
        "duration_ms",
        "records",
        "bytes_in",
        "bytes_out",
        "result_uri",
    )
    list_filter = ("outcome", SubscriptionFilter)
    list_select_related = ("subscription__lob", "subscription__listing", "principal")
    search_fields = ("id", "principal__username", "result_uri", "subscription__lob__slug")
    date_hierarchy = "started_at"
    readonly_fields = [field.name for field in Invocation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
