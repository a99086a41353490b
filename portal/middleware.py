"""Request ids: every request carries one, in logs, audit events and the response header; and a
check that refuses NUL characters before any view sees them."""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

REQUEST_ID_HEADER = "X-Request-Id"
# A caller-supplied id is kept only if it is short and plain, so it cannot smuggle log lines.
_ACCEPTABLE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def current_request_id() -> str:
    """The id of the request being handled in this context, or ``-`` outside a request."""
    return _current_request_id.get()


class RequestIdMiddleware:
    """Adopts the load balancer's X-Request-Id when well formed, else mints one."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = incoming if _ACCEPTABLE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = _current_request_id.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            _current_request_id.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


class RequestIdLogFilter(logging.Filter):
    """Puts the current request id on every log record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        # django.request logs a 4xx/5xx answer once the middleware chain has returned, naming the
        # request on the record.
        request = getattr(record, "request", None)
        record.request_id = getattr(request, "request_id", None) or current_request_id()
        return True


class OneLineFormatter(logging.Formatter):
    """One line per event: line breaks in a message or a traceback are written as ``\\n``.

    Log shippers (CloudWatch among them) make every line an event of its own; a traceback would
    be scattered over dozens, and a line break in a logged value could forge a log line.
    """

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "\\r").replace("\n", "\\n")


_NUL_MESSAGE = "The request holds a NUL character, which no name, id or value may contain."
_FORM = "application/x-www-form-urlencoded"


class RejectNulMiddleware:
    """Answers 400 to a path, query string or form body holding a NUL character.

    PostgreSQL cannot store or compare a string with NUL in it: a slug or username carrying one
    reached the database as a 500 (``/api/v1/lobs/%00/``, ``?lob=%00``). Multipart bodies
    (uploads) are not read here; their fields are checked where they are used.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _holds_nul(request):
            if request.path.startswith("/api/"):
                return JsonResponse({"detail": _NUL_MESSAGE, "code": "invalid"}, status=400)
            return HttpResponseBadRequest(_NUL_MESSAGE, content_type="text/plain")
        return self.get_response(request)


def _holds_nul(request: HttpRequest) -> bool:
    if "\x00" in request.path:
        return True
    if any(
        "\x00" in key or any("\x00" in value for value in values)
        for key, values in request.GET.lists()
    ):
        return True
    if (
        request.method == "POST"
        and request.content_type == _FORM
        and form_body_over_limit(request) is None
    ):
        # The raw body, not request.POST: a view may still set its upload handlers after this.
        body = request.body
        return b"%00" in body or b"\x00" in body
    return False


def form_body_over_limit(request: HttpRequest) -> int | None:
    """``DATA_UPLOAD_MAX_MEMORY_SIZE`` when the request's body is over it (Django refuses to read
    such a form: 400), else None. Such a body is left unread here, for the view to refuse in its
    own words (Try it answers 413 with its page)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    return limit if limit is not None and length > limit else None
