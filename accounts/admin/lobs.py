"""The admin of LOBs and memberships: :class:`LobAdmin` (members edited inline on the LOB's
page) and :class:`MembershipAdmin`, with their membership forms; every change goes through the
tenancy services, a Studio profile or domain through its own.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from accounts.admin.base import ServiceBackedAdmin, adopt_saved, form_fields, service_kwargs
from accounts.models import Lob, Membership, User
from accounts.services import tenancy
from accounts.studio import lob_studio_domain_set, membership_studio_profile_set
from portal.keys import KEY_LIMIT

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
