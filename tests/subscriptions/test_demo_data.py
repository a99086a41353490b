"""The demo data `make demo` loads: the Identity Transcoder listing, lob-a's active subscription
with its endpoint, lob-b's expired one (the work item's "Done when" is played on them)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from accounts.models import Membership
from subscriptions.models import Subscription

pytestmark = pytest.mark.django_db

RUNTIME = "http://127.0.0.1:8130"
SELLER = "http://127.0.0.1:8140"


def _stack(tmp_path: Path, issuer: str) -> Path:
    users = [
        ("admin", ["portal-admins"]),
        ("user-lob-a", []),
        ("user-lob-b", []),
        ("lob-a-admin", []),
    ]
    description = {
        "cognito": {"issuer": issuer},
        "users": [
            {"username": name, "sub": f"sub-{name}", "groups": groups, "email": f"{name}@x.test"}
            for name, groups in users
        ],
        "services": {"sagemaker_runtime": RUNTIME, "seller_token_service": SELLER},
    }
    path = tmp_path / "devstack.json"
    path.write_text(json.dumps(description))
    return path


def test_demo_data_subscribes_lob_a_to_the_transcoder_and_leaves_lob_b_expired(
    tmp_path: Path, settings
) -> None:
    settings.DYNAMODB_PUBLICATION_ENABLED = False
    stack = _stack(tmp_path, settings.COGNITO_ISSUER)

    for _ in range(2):  # idempotent, as `make demo` runs it at every start
        call_command("demo_data", "--stack", str(stack), stdout=io.StringIO())

    subscriptions = {
        s.lob.slug: s
        for s in Subscription.objects.select_related("lob__aws_account", "listing", "endpoint")
    }
    assert set(subscriptions) == {"lob-a", "lob-b"}
    a, b = subscriptions["lob-a"], subscriptions["lob-b"]
    assert a.listing == b.listing and a.listing.name == "Identity Transcoder"
    assert a.listing.token_service_url == SELLER
    assert a.listing.seller_jwks_url == f"{SELLER}/.well-known/jwks.json"
    assert (a.status, a.is_usable()) == (Subscription.Status.ACTIVE, True)
    assert (b.status, b.is_usable()) == (Subscription.Status.EXPIRED, False)
    assert (a.endpoint.name, b.endpoint.name) == (
        "identity-transcoder-lob-a",
        "identity-transcoder-lob-b",
    )
    assert a.lob.aws_account.sagemaker_runtime_endpoint_url == RUNTIME
    roles = {
        (m.user.username, m.lob.slug): m.role
        for m in Membership.objects.select_related("user", "lob")
    }
    assert roles[("user-lob-a", "lob-a")] == Membership.Role.ANALYST
    assert roles[("user-lob-b", "lob-b")] == Membership.Role.ANALYST
