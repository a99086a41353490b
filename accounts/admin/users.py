"""The admin of users and the audit trail: :class:`GatehouseUserAdmin` (users come from Cognito;
only deactivation, through the service) and :class:`AuditEventAdmin` (read-only).
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.http import HttpRequest

from accounts.admin.base import PlatformAdminAccess
from accounts.models import AuditEvent, User
from accounts.services.users import user_set_active

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
