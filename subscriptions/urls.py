"""URLs of the subscription pages: the list, one subscription, Try it and the endpoint sync."""

from django.urls import path

from subscriptions import pages

urlpatterns = [
    path("subscriptions/", pages.subscription_list, name="subscription-list"),
    path(
        "subscriptions/<int:subscription_id>/",
        pages.subscription_detail,
        name="subscription-detail",
    ),
    path(
        "subscriptions/<int:subscription_id>/try/",
        pages.subscription_try,
        name="subscription-try",
    ),
    path(
        "subscriptions/<int:subscription_id>/sync-endpoint/",
        pages.subscription_sync_endpoint,
        name="subscription-sync-endpoint",
    ),
]
