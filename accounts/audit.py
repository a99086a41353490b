"""Writing audit events: the one function every sign-in, refusal and change goes through."""

from __future__ import annotations

import ipaddress
import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest

from accounts.models import AuditEvent, User
from portal.middleware import current_request_id

logger = logging.getLogger("gatehouse.audit")

# Claim and field names that must never be copied into an audit record (nor shown from one: the
# Activity page skips them too, for events written before this list or around audit_record).
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"token", "access_token", "id_token", "refresh_token", "password", "secret", "authorization"}
)


def client_ip(request: HttpRequest | None) -> str | None:
    """The caller's address: REMOTE_ADDR, or the proxy-reported one behind trusted proxies."""
    if request is None:
        return None
    address = request.META.get("REMOTE_ADDR", "")
    trusted_hops = settings.TRUSTED_PROXY_COUNT
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if trusted_hops and forwarded:
        hops = [part.strip() for part in forwarded.split(",") if part.strip()]
        if len(hops) >= trusted_hops:
            address = hops[-trusted_hops]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def audit_record(
    *,
    action: str,
    outcome: str,
    request: HttpRequest | None = None,
    actor: User | None = None,
    actor_username: str = "",
    target_type: str = "",
    target_id: str = "",
    lob_slug: str = "",
    reason: str = "",
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Write one audit event; the request supplies request id and client address."""
    if actor is None and request is not None:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            actor = user
    clean_detail = {
        key: value
        for key, value in (detail or {}).items()
        if key.lower() not in FORBIDDEN_DETAIL_KEYS
    }
    event = AuditEvent.objects.create(
        actor=actor,
        actor_username=(actor.username if actor else actor_username)[:150],
        action=action,
        outcome=outcome,
        target_type=target_type,
        target_id=str(target_id)[:128],
        lob_slug=lob_slug,
        reason=reason[:64],
        detail=clean_detail,
        request_id=getattr(request, "request_id", "") or current_request_id().strip("-"),
        client_ip=client_ip(request),
    )
    logger.info(
        "audit action=%s outcome=%s actor=%s reason=%s",
        action,
        outcome,
        event.actor_username or "-",
        reason or "-",
    )
    return event
