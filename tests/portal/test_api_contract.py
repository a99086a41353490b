"""The API answers what its OpenAPI schema says, checked by schemathesis on every operation.

The schema served at /api/schema/ is loaded through the WSGI app, and each of its operations is
called in-process as lob-a's analyst, lob-a's admin and a platform admin (real Cognito access
tokens), against the proxy path's world (moto, the seller's token service, the model):

* ``valid``: a body written here for each write, on lob-a's objects, so that successes (200,
  201, 202, 204) and their bodies are checked too, and the conflicts of a second try;
* ``known``: what schemathesis generates from the schema (query, headers, body), on lob-a's
  objects; ``generated``: the same with path parameters it makes up (nothing the caller sees);
* ``negative``: inputs that break the schema, on lob-a's objects.

Every answer must be documented: its status, content type, required headers and body (the
checks not_a_server_error, status_code_conformance, content_type_conformance,
response_headers_conformance and response_schema_conformance). 502, 503 and 504 that the
operation lists are the portal's answers for a failed upstream, not server errors (as in
test_no_server_errors). Hypothesis is derandomized and keeps no example database: each run sends
the same requests (about 1,000, some 35 s), on SQLite and on PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from accounts.models import Membership
from subscriptions.models import Job
from tests.factories import InvocationFactory, JobFactory, ListingFactory
from tests.subscriptions.conftest import ProxyWorld, aws, proxy, standins  # noqa: F401
from tests.subscriptions.test_subscriptions_api import NEW_LISTING
from tests.url_sweep import lob_values

pytestmark = pytest.mark.django_db

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
UPSTREAM_FAILURES = (502, 503, 504)
# Examples per operation, principal and mode.
EXAMPLES = {"valid": 2, "known": 3, "generated": 2, "negative": 3}
# The world's people, by the Cognito demo users whose tokens they use.
COGNITO_USERS = {"analyst": "user-lob-a", "lob_admin": "lob-a-admin", "platform_admin": "admin"}
# A path parameter → its key in what tests.url_sweep.lob_values gives for the path's kind.
PATH_PARAMETERS = {
    "id": "pk",
    "slug": "slug",
    "account_id": "account_id",
    "product_code": "product_code",
}

ACCOUNT = {
    "account_id": "333333333333",
    "name": "Account C",
    "default_region": "us-east-1",
    "invoke_role_arn": "arn:aws:iam::333333333333:role/GatehouseInvokeRole",
    "results_bucket": "gatehouse-results-333333333333",
}
LOB_A = {"slug": "lob-a", "name": "Lob A", "aws_account": "111111111111"}


def valid_bodies(proxy_world: ProxyWorld) -> dict[str, tuple[str, Any]]:
    """Operation label → (media type, a body the operation accepts on lob-a's objects)."""
    listing = proxy_world.listing
    own_listing = {
        **NEW_LISTING,
        "product_code": listing.product_code,
        "content_types": listing.content_types,
        "token_service_url": listing.token_service_url,
        "seller_issuer": listing.seller_issuer,
        "seller_jwks_url": listing.seller_jwks_url,
    }
    subscription = {"lob": "lob-a", "listing": listing.product_code, "starts_on": "2026-01-01"}
    account_a = {
        **ACCOUNT,
        "account_id": "111111111111",
        "invoke_role_arn": "arn:aws:iam::111111111111:role/GatehouseInvokeRole",
        "results_bucket": "gatehouse-results-111111111111",
    }
    return {
        "POST /api/v1/aws-accounts/": ("application/json", ACCOUNT),
        "PUT /api/v1/aws-accounts/{account_id}/": ("application/json", account_a),
        "PATCH /api/v1/aws-accounts/{account_id}/": ("application/json", {"name": "Renamed"}),
        "POST /api/v1/lobs/": ("application/json", {**LOB_A, "slug": "lob-c"}),
        "PUT /api/v1/lobs/{slug}/": ("application/json", LOB_A),
        "PATCH /api/v1/lobs/{slug}/": ("application/json", {"description": "Lob A's"}),
        "POST /api/v1/listings/": ("application/json", NEW_LISTING),
        "PUT /api/v1/listings/{product_code}/": ("application/json", own_listing),
        "PATCH /api/v1/listings/{product_code}/": ("application/json", {"seller_name": "Acme"}),
        "POST /api/v1/memberships/": (
            "application/json",
            {"lob": "lob-a", "user": "outsider", "role": "viewer"},
        ),
        "PUT /api/v1/memberships/{id}/": (
            "application/json",
            {"lob": "lob-a", "user": "lob-a-viewer", "role": "analyst"},
        ),
        "PATCH /api/v1/memberships/{id}/": ("application/json", {"role": "viewer"}),
        "POST /api/v1/subscriptions/": (
            "application/json",
            {**subscription, "listing": "other-product", "endpoint_name": "other-product-lob-a"},
        ),
        "PUT /api/v1/subscriptions/{id}/": ("application/json", {**subscription}),
        "PATCH /api/v1/subscriptions/{id}/": ("application/json", {"ends_on": None}),
        "POST /api/v1/subscriptions/{id}/invocations/": (
            "application/jsonlines",
            b'{"email": "Jane.Doe@Example.com"}\n',
        ),
        "POST /api/v1/jobs/": (
            "multipart/form-data",
            {
                "subscription": str(proxy_world.subscription_a.pk),
                "content_type": "text/csv",
                "file": b"email\nalice@example.com\n",
            },
        ),
    }


@contextmanager
def connection_kept() -> Iterator[None]:
    """Requests to the WSGI app keep the test's database connection, as under Django's test
    client: at a request's start and end Django closes a connection that is not in autocommit
    (the test's transaction), and PostgreSQL's transaction with it. (The test client connects
    the closing again after each of its requests, so this goes around the run, after them.)"""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@schemathesis.serializer("text/csv", "application/jsonlines")
def _raw_body(ctx: Any, value: Any) -> bytes | None:
    """The proxy's payloads go as they are (schemathesis has no serializer for these types)."""
    if value is None:
        return None
    return value if isinstance(value, bytes) else str(value).encode()


@dataclass
class Outcome:
    """What the run sent and what broke the contract."""

    sent: int = 0
    failures: dict[str, str] = field(default_factory=dict)

    def record(self, key: str, detail: str) -> None:
        self.failures.setdefault(key, detail)


def _runner(strategy: Any, examples: int, call: Callable[[Any], None]) -> Callable[[], None]:
    @settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        call(case)

    return run


def _check(case: Any, headers: dict[str, str], principal: str, outcome: Outcome) -> None:
    outcome.sent += 1
    response = case.call(headers=headers)
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except (Exception, BaseExceptionGroup) as exc:
        for failure in getattr(exc, "exceptions", [exc]):
            title = getattr(failure, "title", type(failure).__name__)
            documented = str(response.status_code) in case.operation.responses.status_codes
            if title == "Server error" and documented and response.status_code in UPSTREAM_FAILURES:
                continue
            message = (getattr(failure, "message", "") or str(failure)).splitlines()
            outcome.record(
                f"{case.operation.label} → {response.status_code}: {title}",
                f"{message[0] if message else ''} (as {principal}: "
                f"{case.as_curl_command(headers={})}; answer {response.text[:200]!r})",
            )


def _strategies(
    operation: Any, values: dict[str, dict[str, str]], bodies: dict, seller_token: str
) -> Iterator[tuple[Any, int]]:
    """(strategy, examples) of each mode that applies to the operation (see the module)."""
    kind = values.get(operation.path.split("/")[3], {})
    known = {
        name: kind[key]
        for name, key in PATH_PARAMETERS.items()
        if "{" + name + "}" in operation.path
    }
    for mode, examples in EXAMPLES.items():
        kwargs: dict[str, Any] = {}
        if mode != "generated":
            if not known and operation.label not in bodies:
                continue  # the same as "generated"
            kwargs["path_parameters"] = known
            if operation.path.endswith("/invocations/"):
                kwargs["headers"] = {"X-Subscription-Token": seller_token}
        if mode == "valid":
            if operation.label in bodies:
                kwargs["media_type"], kwargs["body"] = bodies[operation.label]
            elif operation.method.upper() != "POST":
                continue  # nothing to write: "known" reads it
        generation = GenerationMode.NEGATIVE if mode == "negative" else GenerationMode.POSITIVE
        yield operation.as_strategy(generation_mode=generation, **kwargs), examples


def test_every_answer_is_the_one_the_schema_describes(
    proxy: ProxyWorld,  # noqa: F811
    cognito,
) -> None:
    world = proxy.world
    for principal, username in COGNITO_USERS.items():
        user = world.user(principal)
        user.idp_issuer, user.idp_subject = cognito.pool.issuer, cognito.sub(username)
        user.save()
    tokens = {principal: cognito.access_token(name) for principal, name in COGNITO_USERS.items()}
    job = JobFactory(subscription=proxy.subscription_a, submitted_by=world.user("analyst"))
    JobFactory(subscription=proxy.subscription_a, submitted_by=None, status=Job.Status.RUNNING)
    InvocationFactory(subscription=proxy.subscription_a)
    ListingFactory(product_code="other-product")
    values = lob_values(
        lob=world.lob_a,
        membership=Membership.objects.get(user=world.user("viewer")),
        subscription=proxy.subscription_a,
        job=job,
        listing=proxy.listing,
    )
    seller_token = proxy.token("analyst")
    bodies = valid_bodies(proxy)
    with connection_kept():
        schema = schemathesis.openapi.from_wsgi(
            "/api/schema/?format=json",
            get_wsgi_application(),
            headers={"Authorization": f"Bearer {tokens['analyst']}"},
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        outcome = Outcome()
        for principal, token in tokens.items():
            headers = {"Authorization": f"Bearer {token}"}
            for operation in operations:
                for strategy, examples in _strategies(operation, values, bodies, seller_token):
                    _runner(
                        strategy,
                        examples,
                        lambda case, p=principal, h=headers: _check(case, h, p, outcome),
                    )()

    assert len(operations) >= 43, [operation.label for operation in operations]
    assert outcome.sent > 800, outcome.sent  # the run reached the operations
    assert not outcome.failures, "\n".join(
        f"{key}\n    {detail}" for key, detail in sorted(outcome.failures.items())
    )
