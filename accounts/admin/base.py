"""What the platform admin's pages share, here and in :mod:`subscriptions.admin`.

:class:`PlatformAdminAccess` (platform admins may use the admin; a search longer than
:data:`ADMIN_SEARCH_MAX_CHARS` matches nothing), :class:`ServiceBackedAdmin` (writes go through
service functions; a refusal in :data:`REFUSALS` comes back as a message, never a 500), its
all-or-nothing delete action, and the helpers its subclasses use (:func:`https_by_default`,
:func:`form_fields`, :func:`refusal_text`, :func:`service_kwargs`, :func:`adopt_saved`).
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from portal.errors import ServiceError

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
