"""One error shape for the whole API: ``{"detail": <message>, "code": <machine-readable code>}``."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from portal import aws_gateway
from portal.errors import ServiceError

logger = logging.getLogger(__name__)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus a ``code`` on every error and validation errors per field."""
    if isinstance(exc, ServiceError):
        data = {"detail": str(exc), "code": exc.code}
        if exc.field:
            data["errors"] = {exc.field: [str(exc)]}
        return _challenged(Response(data, status=exc.status))
    if isinstance(exc, aws_gateway.AwsError):
        # An AWS failure no service turned into its own error (reading a job's parts, say): the
        # portal's upstream failed, not the request. AWS's message stays in the log.
        logger.warning("API: AWS error %s (%s) on %s", exc.code, exc.aws_code, exc.operation)
        return Response(
            {
                "detail": "An AWS call on the way failed; try again in a moment.",
                "code": "upstream_error",
            },
            status=status.HTTP_502_BAD_GATEWAY,
        )
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    response = exception_handler(exc, context)
    if response is None:
        return None

    if isinstance(exc, exceptions.ValidationError):
        response.data = {
            "detail": "The request is not valid; see the errors per field.",
            "code": "invalid",
            "errors": exc.detail,
        }
        return response

    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        codes = exc.get_codes()
        response.data = {
            "detail": str(detail) if not isinstance(detail, (dict, list)) else detail,
            "code": codes if isinstance(codes, str) else "error",
        }
    return _challenged(response)


def _challenged(response: Response) -> Response:
    """A 401 names the scheme to authenticate with (RFC 9110 requires it of every 401), also
    the proxy path's own for a seller token that is missing, invalid or expired."""
    if response.status_code == status.HTTP_401_UNAUTHORIZED:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="gatehouse"')
    return response
