"""Changing listings and subscriptions (platform admins): validation, audit trail, token cache."""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Model
from django.http import HttpRequest

from accounts.audit import audit_record
from accounts.models import AuditEvent, Lob, User
from portal.errors import Conflict, NotPermitted
from subscriptions.models import Endpoint, Listing, Subscription
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


def _snapshot(instance: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in fields:
        value = getattr(instance, name)
        if isinstance(value, Lob):
            value = value.slug
        elif isinstance(value, Listing):
            value = value.product_code
        elif hasattr(value, "isoformat"):
            value = value.isoformat()
        values[name] = value
    return values


def _require_platform_admin(user: User) -> None:
    if not (user.is_active and user.is_staff):
        raise NotPermitted("Only platform admins may do this.")


def _validated_save(instance: Model) -> None:
    """full_clean then save; a duplicate (checked by the database, so races too) is a 409."""
    instance.full_clean(validate_unique=False, validate_constraints=False)
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:
        raise Conflict("That conflicts with an existing record.", code="duplicate") from exc


def _audit_change(
    *,
    action: str,
    acting_user: User,
    request: HttpRequest | None,
    target: Model,
    target_type: str,
    lob_slug: str = "",
    before: dict | None,
    after: dict | None,
) -> None:
    detail = {
        name: value for name, value in (("before", before), ("after", after)) if value is not None
    }
    audit_record(
        action=action,
        outcome=AuditEvent.Outcome.SUCCESS,
        request=request,
        actor=acting_user,
        target_type=target_type,
        target_id=str(target.pk),
        lob_slug=lob_slug,
        detail=detail,
    )


def _subscription_snapshot(subscription: Subscription) -> dict[str, Any]:
    values = _snapshot(subscription, SUBSCRIPTION_FIELDS)
    endpoint = getattr(subscription, "endpoint", None)
    values["endpoint"] = _snapshot(endpoint, ENDPOINT_FIELDS) if endpoint else None
    return values


# --- Listings -------------------------------------------------------------------------------------


@transaction.atomic
def listing_create(
    *, acting_user: User, request: HttpRequest | None = None, **fields: Any
) -> Listing:
    """Add a Marketplace listing to the catalogue (platform admins only)."""
    _require_platform_admin(acting_user)
    listing = Listing(**{k: v for k, v in fields.items() if k in LISTING_FIELDS})
    _validated_save(listing)
    _audit_change(
        action="listing.created",
        acting_user=acting_user,
        request=request,
        target=listing,
        target_type="listing",
        before=None,
        after=_snapshot(listing, LISTING_FIELDS),
    )
    return listing


@transaction.atomic
def listing_update(
    *, listing: Listing, acting_user: User, request: HttpRequest | None = None, **changes: Any
) -> Listing:
    """Change a listing (platform admins only); its subscriptions' cached tokens are dropped."""
    _require_platform_admin(acting_user)
    before = _snapshot(listing, LISTING_FIELDS)
    for name, value in changes.items():
        if name in LISTING_FIELDS:
            setattr(listing, name, value)
    _validated_save(listing)
    after = _snapshot(listing, LISTING_FIELDS)
    if before != after:
        _audit_change(
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
    """Create or change the subscription's endpoint row; a new name forgets the synced state."""
    endpoint = getattr(subscription, "endpoint", None)
    if name is None and region is None:
        return endpoint
    if endpoint is None:
        if not name:
            return None
        endpoint = Endpoint(subscription=subscription, name=name)
    if name is not None and name != endpoint.name:
        endpoint.name = name
        endpoint.status = endpoint.instance_type = endpoint.sync_error = ""
        endpoint.synced_at = None
    endpoint.region = region or endpoint.region or subscription.lob.aws_account.default_region
    _validated_save(endpoint)
    subscription.endpoint = endpoint
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
    _require_platform_admin(acting_user)
    subscription = Subscription(
        lob=lob,
        listing=listing,
        **{k: v for k, v in fields.items() if k in ("status", "starts_on", "ends_on")},
    )
    _validated_save(subscription)
    _save_endpoint(subscription, endpoint_name, endpoint_region)
    _audit_change(
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
    _require_platform_admin(acting_user)
    before = _subscription_snapshot(subscription)
    for name in ("status", "starts_on", "ends_on"):
        if name in changes:
            setattr(subscription, name, changes[name])
    _validated_save(subscription)
    _save_endpoint(subscription, endpoint_name, endpoint_region)
    after = _subscription_snapshot(subscription)
    if before != after:
        _audit_change(
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
