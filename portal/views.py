"""Pages of the portal itself: the dashboard, the answers to a path that names nothing and to a
request Django refuses, the admin's sign-in, and the decorator of the pages' form actions."""

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views import defaults
from django.views.decorators.http import require_GET, require_POST

from accounts import selectors


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Landing page after sign-in: who you are and what you can reach."""
    memberships = list(selectors.memberships_of(request.user))
    return render(request, "portal/dashboard.html", {"memberships": memberships})


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """404 for a path no URL matches: the API's JSON error under /api/, the page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def admin_login(request: HttpRequest) -> HttpResponse:
    """Where the admin sends whoever may not use it. Anonymous people sign in through Cognito
    like on every page. Someone signed in is not a platform admin: sending them to sign in
    again would come straight back here (the browser stops on "too many redirects"), so they
    are told why instead."""
    if not request.user.is_authenticated:
        query = request.META.get("QUERY_STRING", "")
        return HttpResponseRedirect(reverse("login") + (f"?{query}" if query else ""))
    message = "The Django admin is for platform admins. Ask one if you need a change made there."
    return render(request, "403.html", {"message": message}, status=403)


# Django refuses these before any view reads them, with its HTML 400 page: an API client got HTML
# where every other error is {"detail", "code"}.
_REFUSED_REQUESTS: list[tuple[type[Exception], str, str]] = [
    (
        TooManyFieldsSent,
        "too_many_fields",
        "The request has more query or form fields than the portal reads.",
    ),
    (TooManyFilesSent, "too_many_files", "The request has more files than the portal reads."),
    (
        RequestDataTooBig,
        "request_too_large",
        "The request's form fields are larger than the portal reads (files aside).",
    ),
]


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """400 for a request Django refuses (too many fields, form fields too large, ...): the API's
    JSON error under /api/, the page elsewhere."""
    if request.path.startswith("/api/"):
        code, detail = next(
            (
                (code, detail)
                for kind, code, detail in _REFUSED_REQUESTS
                if isinstance(exception, kind)
            ),
            ("bad_request", "The request is malformed."),
        )
        return JsonResponse({"detail": detail, "code": code}, status=400)
    return defaults.bad_request(request, exception)


def form_action(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A page's form action: POST only, and a GET (the URL left in the address bar after the form
    answered, opened again or bookmarked) goes back to the page the form is on, its parent path
    (``/jobs/<id>/cancel/`` → ``/jobs/<id>/``), instead of a blank 405."""
    posted = require_POST(view)

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method in ("GET", "HEAD"):
            return HttpResponseRedirect(request.path.rstrip("/").rsplit("/", 1)[0] + "/")
        return posted(request, *args, **kwargs)

    return wrapper
