"""The API's OpenAPI description: the error shape, and the errors every operation can answer.

drf-spectacular describes an operation's success only. The refusals that DRF and the portal give
on every route — no or a bad token (401), a session without its CSRF token or a caller who may
not change this (403), an object that is not the caller's to see (404), a body or a filter that
is not valid (400), a duplicate or an object in use (409) — were answered but not described, so
a client generated from the schema (or a contract test) met statuses the schema said could not
happen. :class:`PortalAutoSchema` adds them, with the portal's ``{"detail", "code"}`` body.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from portal.api.permissions import WRITE_ACTIONS

# Query parameters of the paginators: an invalid page or cursor is a 404, not a 400.
PAGINATION_PARAMETERS = frozenset({"page", "page_size", "cursor"})


class ErrorSerializer(serializers.Serializer):
    """The API's error shape (``portal.api.exceptions``)."""

    detail = serializers.CharField(help_text="What went wrong, for people.")
    code = serializers.CharField(help_text="What went wrong, for programs.")
    errors = serializers.DictField(
        required=False,
        help_text="Validation errors only: the messages per field of the request.",
    )


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    """``@extend_schema(responses=...)`` entries for errors in the API's shape."""
    return {status: OpenApiResponse(ErrorSerializer) for status in statuses}


class PortalAutoSchema(AutoSchema):
    """drf-spectacular's AutoSchema, plus the error answers of every operation.

    Every operation needs a signed-in caller (401, with ``WWW-Authenticate``); one with an object
    in its path, or a page number or cursor, may find nothing (404). An operation whose
    ``@extend_schema`` lists its responses names its other errors itself; the others get those
    their kind always can answer: a request body may be invalid (400) or of a type no parser
    reads (415), a filter with an enum or a format may be invalid (400), a change may be refused
    (403) or conflict with the stored state (409).
    """

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        if operation is None:
            return None
        responses = operation["responses"]
        for status in sorted(self._error_statuses(operation)):
            if str(status) not in responses:
                responses[str(status)] = self._get_response_for_code(ErrorSerializer, str(status))
        responses["401"].setdefault("headers", {})["WWW-Authenticate"] = {
            "schema": {"type": "string"},
            "required": True,
            "description": 'The scheme to authenticate with: `Bearer realm="gatehouse"`.',
        }
        return operation

    def _error_statuses(self, operation: dict[str, Any]) -> set[int]:
        parameters = operation.get("parameters", [])
        statuses = {401}
        if any(parameter["in"] == "path" for parameter in parameters) or any(
            parameter["name"] in PAGINATION_PARAMETERS for parameter in parameters
        ):
            statuses.add(404)
        if isinstance(self.get_response_serializers(), dict):
            return statuses  # the view names its other errors itself
        if "requestBody" in operation:
            statuses |= {400, 415}
        if any(_refusable_filter(parameter) for parameter in parameters):
            statuses.add(400)
        if self.method not in ("GET", "HEAD", "OPTIONS"):
            statuses.add(403)
        if getattr(self.view, "action", None) in WRITE_ACTIONS:
            statuses.add(409)
        return statuses


def _refusable_filter(parameter: dict[str, Any]) -> bool:
    """A query filter whose value the filter set validates: an enum or a format (a time)."""
    if parameter["in"] != "query" or parameter["name"] in PAGINATION_PARAMETERS:
        return False
    schema = parameter.get("schema", {})
    return "enum" in schema or "format" in schema
