"""Django admin for platform admins: AWS accounts, LOBs and memberships (changed only through
the tenancy services, so every change is checked, audited and published), users (read-mostly),
the DynamoDB outbox and the audit trail (read-only)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Count, Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from accounts.models import AuditEvent, AwsAccount, Lob, MappingOutbox, Membership, User
from accounts.services import aws_verification, tenancy
from accounts.services.users import user_set_active
from accounts.studio import lob_studio_domain_set, membership_studio_profile_set
from portal.errors import ServiceError
from portal.keys import KEY_LIMIT

# What the services refuse with; the admin shows these as messages, never as a 500.
REFUSALS = (ServiceError, ValidationError)


# Longer than every column the admin searches (the longest, an audit event's request id or a
# role ARN, stays far below this).
ADMIN_SEARCH_MAX_CHARS = 1000


class PlatformAdminAccess:
    """Platform admins (staff, from the Cognito admin group) may use the admin without needing
    per-model Django permissions; nobody else may. Superusers keep Django's usual rights."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_staff

    def has_view_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self.has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return self.has_module_permission(request)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        """Search as usual, but a term longer than any searched column matches nothing.

        Each word becomes a LIKE pattern, and SQLite refuses one over 50,000 bytes: without the
        cap a long enough search answered 500. No field searched here holds more than a few
        hundred characters, so such a term could match nothing anyway.
        """
        if len(search_term) > ADMIN_SEARCH_MAX_CHARS:
            messages.warning(
                request,
                f"The search is over {ADMIN_SEARCH_MAX_CHARS} characters; nothing matches it.",
            )
            return queryset.none(), False
        return super().get_search_results(request, queryset, search_term)


def https_by_default(field: models.Field, **kwargs: Any) -> forms.Field | None:
    """URLs typed without a scheme are https (Django 6's default, chosen now)."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


def form_fields(form: forms.ModelForm, names: tuple[str, ...]) -> dict[str, Any]:
    """The form's cleaned values of the fields a service accepts."""
    return {name: form.cleaned_data[name] for name in names if name in form.cleaned_data}


def refusal_text(exc: Exception) -> str:
    """A refusal as one line for an admin message."""
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    return str(exc)


def service_kwargs(request: HttpRequest) -> dict[str, Any]:
    """Who acts, for the services' permission checks and audit records."""
    return {"acting_user": request.user, "request": request}


def adopt_saved(obj: Model, saved: Model) -> None:
    """Make the admin's in-memory object the row the service saved (for logs and redirects)."""
    obj.pk = saved.pk
    obj._state.adding = False
    obj.refresh_from_db()


@admin.action(permissions=["delete"], description="Delete selected %(verbose_name_plural)s")
def delete_selected_through_services(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> HttpResponse | None:
    """Django's delete action, all or nothing: one refused deletion rolls back the others."""
    try:
        with transaction.atomic():
            return delete_selected(modeladmin, request, queryset)
    except REFUSALS as exc:
        modeladmin.message_user(
            request, f"Nothing was deleted: {refusal_text(exc)}", messages.ERROR
        )
        return None


class ServiceBackedAdmin(PlatformAdminAccess, admin.ModelAdmin):
    """An admin whose writes go through service functions.

    Subclasses implement ``save_model``/``delete_model`` with the services. A refusal raised
    inside the admin's transaction rolls the whole save back (inlines included) and comes back
    as an error message on the same page.
    """

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except REFUSALS as exc:
            self.message_user(request, f"Not saved: {refusal_text(exc)}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except REFUSALS as exc:
            self.message_user(request, f"Not deleted: {refusal_text(exc)}", messages.ERROR)
            opts = self.model._meta
            return HttpResponseRedirect(
                reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[object_id])
            )

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions[name] = (delete_selected_through_services, name, description)
        return actions

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for obj in queryset:
            self.delete_model(request, obj)


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


# --- LOBs and memberships -------------------------------------------------------------------------


class MembershipForm(forms.ModelForm):
    """A membership's form whose user and LOB ids are ones the database can compare: a posted id
    beyond a 64-bit key (``KEY_LIMIT``; SQLite refuses it with OverflowError, while the field
    checks it and again while the autocomplete widget shows it) is treated as none chosen."""

    class Meta:
        model = Membership
        fields = ("user", "lob", "role", "studio_profile_name")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.is_bound:
            data = self.data.copy()
            for name in ("user", "lob"):
                key = self.add_prefix(name)
                value = str(data.get(key, ""))
                if value.isascii() and value.isdigit() and int(value) >= KEY_LIMIT:
                    data[key] = ""
            self.data = data


class MembershipInlineForm(MembershipForm):
    """Only the role (and Studio profile) of an existing membership changes; a different user is
    a new membership."""

    class Meta:
        model = Membership
        fields = ("user", "role", "studio_profile_name")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and "user" in self.fields:
            self.fields["user"].disabled = True


class MembershipInline(admin.TabularInline):
    """A LOB's members, edited on the LOB's page (through the membership services)."""

    model = Membership
    form = MembershipInlineForm
    fields = ("user", "role", "studio_profile_name")
    autocomplete_fields = ("user",)
    extra = 1

    def get_queryset(self, request: HttpRequest) -> QuerySet[Membership]:
        return super().get_queryset(request).select_related("user")

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user":
            kwargs["queryset"] = User.objects.filter(is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

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
        return self._platform_admin(request)


def _membership(pk: int) -> Membership:
    """The stored membership (the admin's copy already carries the submitted changes)."""
    return Membership.objects.select_related("user", "lob").get(pk=pk)


def _studio_profile_save(request: HttpRequest, membership: Membership, name: str) -> None:
    """The Studio profile name is not the tenancy services' business: it has its own service."""
    membership_studio_profile_set(
        membership=_membership(membership.pk),
        studio_profile_name=name or "",
        **service_kwargs(request),
    )


@admin.register(Lob)
class LobAdmin(ServiceBackedAdmin):
    """Lines of business with their members; every change goes through the tenancy services."""

    list_display = ("slug", "name", "aws_account", "is_active", "member_count")
    list_filter = ("is_active", "aws_account__default_region", "aws_account")
    list_select_related = ("aws_account",)
    search_fields = ("slug", "name", "aws_account__account_id", "aws_account__name")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_at", "updated_at")
    fields = (
        "slug",
        "name",
        "description",
        "aws_account",
        "studio_domain_id",
        "is_active",
        "created_at",
        "updated_at",
    )
    inlines = (MembershipInline,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Lob]:
        return super().get_queryset(request).annotate(member_count=Count("memberships"))

    def get_readonly_fields(self, request: HttpRequest, obj: Lob | None = None) -> tuple:
        # The slug names the LOB's S3 prefix, audit trail and Studio mapping: set once.
        readonly = super().get_readonly_fields(request, obj)
        return (*readonly, "slug") if obj is not None else readonly

    def get_prepopulated_fields(self, request: HttpRequest, obj: Lob | None = None) -> dict:
        return {} if obj is not None else super().get_prepopulated_fields(request, obj)

    @admin.display(description="members", ordering="member_count")
    def member_count(self, lob: Lob) -> int:
        return lob.member_count

    def save_model(
        self, request: HttpRequest, obj: Lob, form: forms.ModelForm, change: bool
    ) -> None:
        fields = form_fields(form, tenancy.LOB_FIELDS)
        if change:
            lob = Lob.objects.get(pk=obj.pk)
            saved = tenancy.lob_update(lob=lob, **service_kwargs(request), **fields)
        else:
            saved = tenancy.lob_create(**service_kwargs(request), **fields)
        if "studio_domain_id" in form.cleaned_data:
            saved = lob_studio_domain_set(
                lob=saved,
                studio_domain_id=form.cleaned_data["studio_domain_id"] or "",
                **service_kwargs(request),
            )
        adopt_saved(obj, saved)

    def save_formset(
        self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool
    ) -> None:
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        formset.save(commit=False)  # sorts the rows into new, changed and deleted; writes nothing
        kwargs = service_kwargs(request)
        for membership in formset.deleted_objects:
            tenancy.membership_delete(membership=_membership(membership.pk), **kwargs)
        for membership, changed in formset.changed_objects:
            tenancy.membership_update(
                membership=_membership(membership.pk), role=membership.role, **kwargs
            )
            if "studio_profile_name" in changed:
                _studio_profile_save(request, membership, membership.studio_profile_name)
        for membership in formset.new_objects:
            profile_name = membership.studio_profile_name
            created = tenancy.membership_create(
                lob=form.instance, user=membership.user, role=membership.role, **kwargs
            )
            if profile_name:
                _studio_profile_save(request, created, profile_name)
            adopt_saved(membership, created)

    def delete_model(self, request: HttpRequest, obj: Lob) -> None:
        tenancy.lob_delete(lob=obj, **service_kwargs(request))


@admin.register(Membership)
class MembershipAdmin(ServiceBackedAdmin):
    """Who is in which LOB with which role; changes go through the membership services."""

    list_display = ("user", "lob", "role", "created_at", "updated_at")
    list_filter = ("role", "lob")
    list_select_related = ("user", "lob")
    search_fields = ("user__username", "user__email", "lob__slug", "lob__name")
    autocomplete_fields = ("user", "lob")
    form = MembershipForm
    fields = ("user", "lob", "role", "studio_profile_name", "created_at", "updated_at")
    readonly_fields = ("created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None) -> tuple:
        # Only the role changes; another user or LOB is another membership.
        if obj is not None:
            return ("user", "lob", *self.readonly_fields)
        return self.readonly_fields

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user":
            kwargs["queryset"] = User.objects.filter(is_active=True)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(
        self, request: HttpRequest, obj: Membership, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            saved = tenancy.membership_update(
                membership=_membership(obj.pk), role=obj.role, **service_kwargs(request)
            )
        else:
            saved = tenancy.membership_create(
                lob=obj.lob, user=obj.user, role=obj.role, **service_kwargs(request)
            )
        if "studio_profile_name" in form.changed_data:
            _studio_profile_save(request, saved, form.cleaned_data["studio_profile_name"])
        adopt_saved(obj, saved)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        tenancy.membership_delete(membership=_membership(obj.pk), **service_kwargs(request))


# --- The DynamoDB outbox --------------------------------------------------------------------------


class DeliveryStateFilter(admin.SimpleListFilter):
    """Outbox rows still to publish, or already published."""

    title = "delivery"
    parameter_name = "delivery"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list:
        return [("pending", "Pending"), ("delivered", "Delivered")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "pending":
            return queryset.filter(delivered_at__isnull=True)
        if self.value() == "delivered":
            return queryset.filter(delivered_at__isnull=False)
        return queryset


@admin.register(MappingOutbox)
class MappingOutboxAdmin(PlatformAdminAccess, admin.ModelAdmin):
    """What is waiting to be published to DynamoDB, and why it has not been; read-only."""

    list_display = (
        "created_at",
        "kind",
        "key",
        "state",
        "attempts",
        "next_attempt_at",
        "delivered_at",
        "last_error",
    )
    list_filter = (DeliveryStateFilter, "kind")
    search_fields = ("key", "last_error")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in MappingOutbox._meta.fields]

    @admin.display(description="state", ordering="delivered_at")
    def state(self, entry: MappingOutbox) -> str:
        return "delivered" if entry.delivered_at else "pending"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- Users and the audit trail --------------------------------------------------------------------


@admin.register(User)
class GatehouseUserAdmin(PlatformAdminAccess, UserAdmin):
    """Users come from Cognito; the admin can deactivate them but not grant roles here."""

    list_display = (
        "username",
        "email",
        "first_name",
        "last_name",
        "is_staff",
        "is_active",
        "last_login",
    )
    list_filter = ("is_staff", "is_active")
    search_fields = ("username", "email", "first_name", "last_name", "idp_subject")
    readonly_fields = (
        "username",
        "idp_issuer",
        "idp_subject",
        "email",
        "first_name",
        "last_name",
        "is_staff",
        "is_superuser",
        "last_login",
        "date_joined",
    )
    fieldsets = (
        (None, {"fields": ("username", "email", "first_name", "last_name")}),
        ("Identity", {"fields": ("idp_issuer", "idp_subject")}),
        (
            "Status",
            {"fields": ("is_active", "is_staff", "is_superuser", "last_login", "date_joined")},
        ),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Users are created by signing in, never by hand."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        """Users are deactivated, never deleted here: a deletion would bypass the audit trail and
        leave the person in the Studio mapping table (and their history without its actor)."""
        return False

    def save_model(self, request: HttpRequest, obj: User, form: object, change: bool) -> None:
        """Only the active flag is editable here; it goes through the service (audit, DynamoDB)."""
        if change and "is_active" in form.changed_data:
            wanted = obj.is_active
            obj.is_active = not wanted
            user_set_active(user=obj, is_active=wanted, acting_user=request.user, request=request)
        else:
            super().save_model(request, obj, form, change)


@admin.register(AuditEvent)
class AuditEventAdmin(PlatformAdminAccess, admin.ModelAdmin):
    """The audit trail, searchable and filterable (by LOB, outcome, action), never editable."""

    list_display = (
        "occurred_at",
        "actor_username",
        "action",
        "outcome",
        "reason",
        "lob_slug",
        "target_type",
        "target_id",
        "client_ip",
    )
    list_filter = ("outcome", "lob_slug", "action", "target_type")
    search_fields = ("actor_username", "action", "target_id", "lob_slug", "request_id")
    date_hierarchy = "occurred_at"
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
