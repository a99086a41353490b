"""Changing listings and subscriptions (platform admins): validation, audit trail, token cache."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.http import HttpRequest

from accounts.models import Lob, User
from portal.changes import audit_change, require_platform_admin, snapshot, validated_save
from subscriptions.models import Endpoint, Listing, Subscription
from subscriptions.services.endpoints import endpoint_sync_soon
from subscriptions.services.seller_tokens import seller_token_forget

LISTING_FIELDS = (
    "product_code",
    "name",
    "seller_name",
    "model_package_arn",
    "description",
    "content_types",
    "token_service_url",
    "token_service_lambda_arn",
    "seller_issuer",
    "seller_jwks_url",
)
SUBSCRIPTION_FIELDS = ("lob", "listing", "status", "starts_on", "ends_on")
ENDPOINT_FIELDS = ("name", "region")


def _subscription_snapshot(subscription: Subscription) -> dict[str, Any]:
    values = snapshot(subscription, SUBSCRIPTION_FIELDS)
    endpoint = getattr(subscription, "endpoint", None)
    values["endpoint"] = snapshot(endpoint, ENDPOINT_FIELDS) if endpoint else None
    return values


# --- Listings -------------------------------------------------------------------------------------


@transaction.atomic
def listing_create(
    *, acting_user: User, request: HttpRequest | None = None, **fields: Any
) -> Listing:
    """Add a Marketplace listing to the catalogue (platform admins only)."""
    require_platform_admin(acting_user)
    listing = Listing(**{k: v for k, v in fields.items() if k in LISTING_FIELDS})
    validated_save(listing)
    audit_change(
        action="listing.created",
        acting_user=acting_user,
        request=request,
        target=listing,
        target_type="listing",
        before=None,
        after=snapshot(listing, LISTING_FIELDS),
    )
    return listing


@transaction.atomic
def listing_update(
    *, listing: Listing, acting_user: User, request: HttpRequest | None = None, **changes: Any
) -> Listing:
    """Change a listing (platform admins only); its subscriptions' cached tokens are dropped."""
    require_platform_admin(acting_user)
    before = snapshot(listing, LISTING_FIELDS)
    for name, value in changes.items():
        if name in LISTING_FIELDS:
            setattr(listing, name, value)
    validated_save(listing)
    after = snapshot(listing, LISTING_FIELDS)
    if before != after:
        audit_change(
            action="listing.updated",
            acting_user=acting_user,
            request=request,
            target=listing,
            target_type="listing",
            before=before,
            after=after,
        )
        # Tokens from the old token service, issuer or product code must not be handed out.
        for subscription in listing.subscriptions.select_related("lob__aws_account"):
            seller_token_forget(subscription=subscription)
    return listing


# --- Subscriptions --------------------------------------------------------------------------------


def _save_endpoint(
    subscription: Subscription, name: str | None, region: str | None
) -> Endpoint | None:
    """Create or change the subscription's endpoint row.

    A new endpoint, or one given another name or region (another endpoint, as far as SageMaker
    knows), forgets the synced state and is synced once the change commits.
    """
    endpoint = getattr(subscription, "endpoint", None)
    if name is None and region is None:
        return endpoint
    if endpoint is None:
        if not name:
            return None
        endpoint = Endpoint(subscription=subscription, name=name)
    was = None if endpoint.pk is None else (endpoint.name, endpoint.region)
    if name is not None:
        endpoint.name = name
    endpoint.region = region or endpoint.region or subscription.lob.aws_account.default_region
    re_pointed = was != (endpoint.name, endpoint.region)
    if re_pointed:
        endpoint.status = endpoint.instance_type = endpoint.sync_error = ""
        endpoint.synced_at = None
    validated_save(endpoint)
    subscription.endpoint = endpoint
    if re_pointed:
        endpoint_sync_soon(endpoint)
    return endpoint


@transaction.atomic
def subscription_create(
    *,
    acting_user: User,
    lob: Lob,
    listing: Listing,
    request: HttpRequest | None = None,
    endpoint_name: str | None = None,
    endpoint_region: str | None = None,
    **fields: Any,
) -> Subscription:
    """Subscribe a LOB to a listing, with the SageMaker endpoint serving it (platform admins)."""
    require_platform_admin(acting_user)
    subscription = Subscription(
        lob=lob,
        listing=listing,
        **{k: v for k, v in fields.items() if k in ("status", "starts_on", "ends_on")},
    )
    validated_save(subscription)
    _save_endpoint(subscription, endpoint_name, endpoint_region)
    audit_change(
        action="subscription.created",
        acting_user=acting_user,
        request=request,
        target=subscription,
        target_type="subscription",
        lob_slug=lob.slug,
        before=None,
        after=_subscription_snapshot(subscription),
    )
    return subscription


@transaction.atomic
def subscription_update(
    *,
    subscription: Subscription,
    acting_user: User,
    request: HttpRequest | None = None,
    endpoint_name: str | None = None,
    endpoint_region: str | None = None,
    **changes: Any,
) -> Subscription:
    """Change a subscription's status, dates or endpoint (platform admins); LOB and listing stay."""
    require_platform_admin(acting_user)
    before = _subscription_snapshot(subscription)
    for name in ("status", "starts_on", "ends_on"):
        if name in changes:
            setattr(subscription, name, changes[name])
    validated_save(subscription)
    _save_endpoint(subscription, endpoint_name, endpoint_region)
    after = _subscription_snapshot(subscription)
    if before != after:
        audit_change(
            action="subscription.updated",
            acting_user=acting_user,
            request=request,
            target=subscription,
            target_type="subscription",
            lob_slug=subscription.lob.slug,
            before=before,
            after=after,
        )
        # A cancelled or re-pointed subscription must not keep handing out the old token.
        seller_token_forget(subscription=subscription)
    return subscription
