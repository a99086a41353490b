"""App config for subscriptions."""

from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    """Listings, subscriptions and the authorized proxy path (models arrive with that work)."""

    name = "subscriptions"
