"""Pages of the portal itself: the dashboard."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts import selectors


@require_GET
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Landing page after sign-in: who you are and what you can reach."""
    memberships = list(selectors.memberships_of(request.user))
    return render(request, "portal/dashboard.html", {"memberships": memberships})
