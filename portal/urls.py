"""Top-level URLs: pages, sign-in, health, Django admin and the versioned REST API."""

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import IsAuthenticated
from rest_framework.routers import DefaultRouter

from accounts.api import (
    AuditEventViewSet,
    AwsAccountViewSet,
    LobViewSet,
    MembershipViewSet,
    MeView,
)
from accounts.views import SignOutView
from portal import health, views
from subscriptions.api import JobViewSet, ListingViewSet, SubscriptionViewSet

router = DefaultRouter()
router.register("lobs", LobViewSet, basename="lob")
router.register("aws-accounts", AwsAccountViewSet, basename="aws-account")
router.register("memberships", MembershipViewSet, basename="membership")
router.register("audit-events", AuditEventViewSet, basename="audit-event")
router.register("listings", ListingViewSet, basename="listing")
router.register("subscriptions", SubscriptionViewSet, basename="subscription")
router.register("jobs", JobViewSet, basename="job")

api_v1 = [
    path("me/", MeView.as_view(), name="me"),
    *router.urls,
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("", include("accounts.urls")),
    path("", include("subscriptions.urls")),
    path("healthz", health.healthz, name="healthz"),
    # Browsers ask for /favicon.ico on pages that name no icon (the admin's, the API docs').
    path("favicon.ico", RedirectView.as_view(url="/static/img/gatehouse.svg", permanent=True)),
    path("readyz", health.readyz, name="readyz"),
    # The admin has no password form of its own: it signs in through Cognito like every page.
    path("admin/login/", views.admin_login),
    path("admin/logout/", SignOutView.as_view()),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"), namespace="v1")),
    # The API's description is for people and programs that may use it: signed in (a session or
    # a Cognito bearer token) — the docs page sends browsers to sign in first.
    path(
        "api/schema/",
        SpectacularAPIView.as_view(permission_classes=[IsAuthenticated]),
        name="schema",
    ),
    path(
        "api/docs/",
        login_required(SpectacularSwaggerView.as_view(url_name="schema")),
        name="swagger-ui",
    ),
]

handler400 = "portal.views.bad_request"
handler404 = "portal.views.not_found"
