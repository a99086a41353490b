"""The admin of AWS accounts: :class:`AwsAccountAdmin` with its form (the ExternalId written or
cleared, never shown), its verification filter and the "Verify selected accounts" action; changes
go through the tenancy services, verification through its own.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.admin.base import (
    ServiceBackedAdmin,
    adopt_saved,
    form_fields,
    https_by_default,
    service_kwargs,
)
from accounts.models import AwsAccount
from accounts.services import aws_verification, tenancy

# --- AWS accounts ---------------------------------------------------------------------------------


class AwsAccountAdminForm(forms.ModelForm):
    """The ExternalId is a shared secret: it can be written or cleared, never read back."""

    external_id = forms.CharField(
        label="ExternalId",
        required=False,
        max_length=1224,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text="Shared with the account owner; never shown. Leave empty to keep it as it is.",
    )
    clear_external_id = forms.BooleanField(label="Clear the ExternalId", required=False)

    class Meta:
        model = AwsAccount
        fields = tenancy.ACCOUNT_FIELDS
        formfield_callback = https_by_default

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["external_id"] = ""
        if "external_id" in self.fields and self.instance.external_id:
            self.fields[
                "external_id"
            ].help_text = "Set. Shared with the account owner; never shown. Leave empty to keep it."

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if cleaned.get("clear_external_id"):
            cleaned["external_id"] = ""
        elif not cleaned.get("external_id"):
            cleaned["external_id"] = self.instance.external_id
        return cleaned


class VerificationStateFilter(admin.SimpleListFilter):
    """Accounts by how their last verification ended."""

    title = "verification"
    parameter_name = "verification"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("ok", "Verified"), ("failed", "Failed"), ("never", "Never verified")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value == "ok":
            return queryset.filter(last_verification_ok=True)
        if value == "failed":
            return queryset.filter(last_verification_ok=False)
        if value == "never":
            return queryset.filter(last_verified_at__isnull=True)
        return queryset


@admin.register(AwsAccount)
class AwsAccountAdmin(ServiceBackedAdmin):
    """AWS accounts; changes go through the tenancy services, verification through its own."""

    form = AwsAccountAdminForm
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = (
        "account_id",
        "name",
        "default_region",
        "verification_ok",
        "last_verified_at",
        "lob_slugs",
    )
    list_filter = ("default_region", VerificationStateFilter)
    search_fields = ("account_id", "name", "invoke_role_arn", "results_bucket", "lobs__slug")
    actions = ["verify_accounts"]
    readonly_fields = (
        "last_verified_at",
        "last_verification_ok",
        "last_verification_detail",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        (None, {"fields": ("account_id", "name", "default_region")}),
        (
            "Access",
            {
                "fields": (
                    "invoke_role_arn",
                    "studio_role_arn",
                    "external_id",
                    "clear_external_id",
                )
            },
        ),
        ("Results", {"fields": ("results_bucket", "results_prefix")}),
        (
            "Endpoint overrides (VPC endpoints; empty means AWS's regional endpoint)",
            {
                "classes": ("collapse",),
                "fields": (
                    "sts_endpoint_url",
                    "s3_endpoint_url",
                    "sagemaker_endpoint_url",
                    "sagemaker_runtime_endpoint_url",
                ),
            },
        ),
        (
            "Verification",
            {"fields": ("last_verified_at", "last_verification_ok", "last_verification_detail")},
        ),
        ("History", {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[AwsAccount]:
        return super().get_queryset(request).prefetch_related("lobs")

    def get_readonly_fields(self, request: HttpRequest, obj: AwsAccount | None = None) -> tuple:
        # An account id never changes; register the other account instead.
        if obj is not None:
            return ("account_id", *self.readonly_fields)
        return self.readonly_fields

    @admin.display(description="verified", boolean=True, ordering="last_verification_ok")
    def verification_ok(self, account: AwsAccount) -> bool | None:
        return account.last_verification_ok

    @admin.display(description="LOBs")
    def lob_slugs(self, account: AwsAccount) -> str:
        return ", ".join(lob.slug for lob in account.lobs.all()) or "—"

    def save_model(
        self, request: HttpRequest, obj: AwsAccount, form: forms.ModelForm, change: bool
    ) -> None:
        fields = form_fields(form, tenancy.ACCOUNT_FIELDS)
        if change:
            fields.pop("account_id", None)
            account = AwsAccount.objects.get(pk=obj.pk)
            saved = tenancy.aws_account_update(account=account, **service_kwargs(request), **fields)
        else:
            saved = tenancy.aws_account_create(**service_kwargs(request), **fields)
        adopt_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: AwsAccount) -> None:
        tenancy.aws_account_delete(account=obj, **service_kwargs(request))

    @admin.action(permissions=["change"], description="Verify selected accounts")
    def verify_accounts(self, request: HttpRequest, queryset: QuerySet[AwsAccount]) -> None:
        """Assume each account's invoke role as the admin and record the outcome."""
        for account in queryset:
            result = aws_verification.aws_account_verify(account=account, **service_kwargs(request))
            if result.ok:
                self.message_user(
                    request, f"{account.account_id} verified: {result.detail}", messages.SUCCESS
                )
            else:
                self.message_user(
                    request,
                    f"{account.account_id} verification failed: {result.detail}",
                    messages.ERROR,
                )
