"""Errors that services raise and every interface (API, pages, admin) turns into answers.

Services know the rules; they raise these with a machine-readable ``code`` and a message for
people. The API turns them into ``{"detail", "code"}`` with the status given here.
"""

from __future__ import annotations


class ServiceError(Exception):
    """A request the rules refuse. ``status`` is the HTTP status interfaces should answer."""

    status = 400
    code = "invalid"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.field = field


class NotPermitted(ServiceError):
    """The principal may not do this (403)."""

    status = 403
    code = "permission_denied"


class NotFoundError(ServiceError):
    """Nothing the principal can see has that identifier (404)."""

    status = 404
    code = "not_found"


class Conflict(ServiceError):
    """The change contradicts the current state, e.g. a duplicate or an object in use (409)."""

    status = 409
    code = "conflict"
