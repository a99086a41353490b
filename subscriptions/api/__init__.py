"""REST endpoints for listings, subscriptions and the authorized proxy path.

Views are thin: subscriptions come from the scoped selectors (another LOB's is "not found"),
changes and calls go through the services, which check who may do what and write the audit trail.
``POST /subscriptions/{id}/invocations/`` takes the raw payload with its Content-Type and answers
with the model's own body and content type.

Modules: ``listings`` (the catalogue's serializer and viewset), ``subscriptions`` (subscription
serializers and filter, the raw-body parser, the viewset with authorize, invocations, usage and
sync-endpoint), ``jobs`` (job serializers, filter, cursor pagination, the viewset). The viewsets
are re-exported here for the URL configuration; tests that replace a name patch it in the module
that looks it up.
"""

from subscriptions.api.jobs import JobViewSet
from subscriptions.api.listings import ListingViewSet
from subscriptions.api.subscriptions import SubscriptionViewSet

__all__ = ["JobViewSet", "ListingViewSet", "SubscriptionViewSet"]
