"""Permissions checked before a request's body is read."""

from __future__ import annotations

from rest_framework import permissions
from rest_framework.request import Request
from rest_framework.views import APIView

WRITE_ACTIONS = frozenset({"create", "update", "partial_update", "destroy"})


class PlatformAdminWrites(permissions.BasePermission):
    """Everyone signed in reads; only platform admins create, change and delete.

    The services check this too; here it comes before the body is validated, so a refusal cannot
    tell a caller which account ids, slugs or usernames exist ("does not exist" against 403). On
    an object it comes after the lookup: another LOB's object is still a 404, not a 403.
    """

    message = "Only platform admins may do this."

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        if getattr(view, "action", None) == "create":
            return _is_platform_admin(request)
        return True

    def has_object_permission(self, request: Request, view: APIView, obj: object) -> bool:
        if getattr(view, "action", None) in WRITE_ACTIONS:
            return _is_platform_admin(request)
        return True


def _is_platform_admin(request: Request) -> bool:
    return bool(request.user.is_active and request.user.is_staff)
