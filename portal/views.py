"""Pages of the portal itself: the dashboard, and the answer to a path that names nothing."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import defaults
from django.views.decorators.http import require_GET

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
