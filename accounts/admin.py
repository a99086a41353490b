"""Django admin for platform admins: users (read-mostly) and the audit trail (read-only)."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from accounts.models import AuditEvent, User


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


@admin.register(AuditEvent)
class AuditEventAdmin(PlatformAdminAccess, admin.ModelAdmin):
    """The audit trail, searchable and filterable, never editable."""

    list_display = (
        "occurred_at",
        "actor_username",
        "action",
        "outcome",
        "reason",
        "lob_slug",
        "client_ip",
    )
    list_filter = ("outcome", "action", "lob_slug")
    search_fields = ("actor_username", "action", "target_id", "request_id")
    date_hierarchy = "occurred_at"
    readonly_fields = [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
