"""The admin of the DynamoDB outbox: :class:`MappingOutboxAdmin` (what is waiting to be published,
and why it has not been), read-only, with its pending/delivered filter.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.admin.base import PlatformAdminAccess
from accounts.models import MappingOutbox

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
