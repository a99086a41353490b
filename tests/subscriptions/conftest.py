"""The proxy path's world: moto for AWS, and the seller-side stand-ins served in threads.

* the model container (``devstack.model_container``), with its fault-injection knobs;
* the SageMaker runtime stand-in (``devstack.sagemaker_runtime``) forwarding lob-a's and lob-b's
  endpoints to that container; the LOB accounts' runtime endpoint override points at it;
* the seller's token service (``devstack.seller_token_service``), entitling both accounts;
* the results buckets, created in each LOB's account in moto through the gateway.

Each stand-in is wrapped in a counter, so tests can tell how often the portal called it.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from rest_framework.test import APIClient

from accounts.models import AwsAccount, Lob
from accounts.services.aws_verification import account_access
from devstack import model_container, sagemaker_runtime, seller_token_service
from devstack.wsgi_thread import ThreadedServer, serve_in_thread
from portal import aws_gateway, celery_app
from subscriptions.models import Listing, Subscription
from tests.factories import EndpointFactory, ListingFactory, SubscriptionFactory
from tests.tenancy_world import World, build_world

REGION = "us-east-1"
PRODUCT = "identity-transcoder"
SELLER_ISSUER = "https://seller.acme-identity.test"
MASTER_KEY = bytes.fromhex("00112233445566778899aabbccddeeff" * 2)
CLOSED_PORT_URL = "http://127.0.0.1:9"  # the discard port: nothing listens
ACCOUNT_A = "111111111111"
ACCOUNT_B = "222222222222"


class CountingApp:
    """A WSGI wrapper that counts requests by path and can answer a fixed failure instead."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.calls: Counter[str] = Counter()
        self.fail_with: int | None = None
        self.delay_s = 0.0

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        self.calls[environ.get("PATH_INFO", "")] += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_with is not None:
            start_response(f"{self.fail_with} Failing", [("Content-Type", "application/json")])
            return [b'{"error": "internal", "message": "stand-in failure"}']
        return self.app(environ, start_response)


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    """Subscription ids are reused between tests: no test may see another's cached token."""
    # Imported here: a module-level ``cache`` would be touched (and connected) at collection,
    # before the session's Redis is chosen.
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def aws(moto_server: str, settings, monkeypatch) -> Iterator[str]:
    """The portal's credentials are moto's dummies and every AWS endpoint is moto's."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    settings.AWS_ENDPOINT_URL = moto_server
    settings.AWS_REGION = REGION
    # One attempt: error tests see each failure once, not after botocore's backoff.
    settings.AWS_MAX_ATTEMPTS = 1
    aws_gateway.reset_caches()
    yield moto_server
    aws_gateway.reset_caches()


@dataclass
class ProxyWorld:
    """lob-a and lob-b subscribed to the transcoder, with every stand-in running."""

    world: World
    listing: Listing
    subscription_a: Subscription
    subscription_b: Subscription
    seller: ThreadedServer
    seller_counter: CountingApp
    seller_app: Any
    container: ThreadedServer
    container_counter: CountingApp
    runtime: ThreadedServer
    runtime_app: Any

    # --- principals and calls ---------------------------------------------------------------

    def client(self, principal: str) -> APIClient:
        client = APIClient()
        user = self.world.user(principal)
        if user is not None:
            client.force_authenticate(user)
        return client

    def authorize(self, principal: str, subscription: Subscription | int | str):
        pk = subscription.pk if isinstance(subscription, Subscription) else subscription
        return self.client(principal).post(f"/api/v1/subscriptions/{pk}/authorize/")

    def token(self, principal: str = "analyst", subscription: Subscription | None = None) -> str:
        response = self.authorize(principal, subscription or self.subscription_a)
        assert response.status_code == 200, response.content
        return response.json()["token"]

    def invoke(
        self,
        principal: str,
        subscription: Subscription | int | str,
        *,
        token: str | None,
        body: bytes = b'{"email": "Jane.Doe@Example.com"}\n{"phone": "(555) 010-0199"}\n',
        content_type: str = "application/jsonlines",
        **headers: str,
    ):
        pk = subscription.pk if isinstance(subscription, Subscription) else subscription
        extra = {f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items()}
        if token is not None:
            extra["HTTP_X_SUBSCRIPTION_TOKEN"] = token
        # generic(): the raw bytes as they are, even with an empty or unusual Content-Type.
        return self.client(principal).generic(
            "POST",
            f"/api/v1/subscriptions/{pk}/invocations/",
            body,
            content_type=content_type,
            **extra,
        )

    # --- the stand-ins ----------------------------------------------------------------------

    def knobs(self, **knobs: float) -> None:
        """Set the model container's fault-injection knobs."""
        response = requests.put(f"{self.container.url}/_stand-in/knobs", json=knobs, timeout=5)
        response.raise_for_status()

    def sign(self, **claims: Any) -> str:
        """A token signed with the seller's real current key: valid for lob-a unless overridden."""
        now = int(time.time())
        base = {
            "iss": SELLER_ISSUER,
            "aud": PRODUCT,
            "sub": ACCOUNT_A,
            "iat": now,
            "exp": now + 900,
            "jti": str(uuid.uuid4()),
            "subscription_ref": str(self.subscription_a.pk),
        }
        base.update(claims)
        base = {name: value for name, value in base.items() if value is not None}
        return self.seller_app.extensions["seller_token_service"]["keys"].current.sign(base)

    def seller_kid(self) -> str:
        return self.seller_app.extensions["seller_token_service"]["keys"].current.kid

    def s3(self, account_id: str = ACCOUNT_A):
        """An S3 client acting in the LOB account (to look at stored results)."""
        account = AwsAccount.objects.get(account_id=account_id)
        return aws_gateway.client("s3", access=account_access(account))


def _results_bucket(account: AwsAccount) -> None:
    s3 = aws_gateway.client("s3", access=account_access(account))
    try:
        with aws_gateway.aws_errors():
            s3.create_bucket(Bucket=account.results_bucket)
    except aws_gateway.AwsError as exc:  # created by an earlier test of the session
        if exc.aws_code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def point_runtime_at(account_url: str, *lobs: Lob) -> None:
    for lob in lobs:
        AwsAccount.objects.filter(pk=lob.aws_account_id).update(
            sagemaker_runtime_endpoint_url=account_url
        )
        lob.aws_account.refresh_from_db()


@dataclass
class StandIns:
    """The seller-side stand-ins, served for the whole session and reset before each test."""

    seller: ThreadedServer
    seller_counter: CountingApp
    seller_app: Any
    container: ThreadedServer
    container_counter: CountingApp
    runtime: ThreadedServer
    runtime_app: Any

    def reset(self) -> None:
        for counter in (self.seller_counter, self.container_counter):
            counter.calls.clear()
            counter.fail_with = None
            counter.delay_s = 0.0
        requests.put(
            f"{self.container.url}/_stand-in/knobs",
            json={"latency_ms": 0, "error_rate": 0, "throttle_rate": 0},
            timeout=5,
        ).raise_for_status()
        entitlements = self.seller_app.extensions["seller_token_service"]["entitlements"]
        for product, account in ((PRODUCT, ACCOUNT_A), (PRODUCT, ACCOUNT_B)):
            entitlements.grant(product, account, None)
        registry = self.runtime_app.extensions["sagemaker_runtime"]["registry"]
        for name in list(registry.snapshot()):
            registry.remove(name)
        for lob in ("lob-a", "lob-b"):
            registry.register(f"{PRODUCT}-{lob}", self.container.url)


@pytest.fixture(scope="session")
def standins() -> Iterator[StandIns]:
    """The model container, the runtime stand-in in front of it, and the seller's token service."""
    seller_app = seller_token_service.create_app(issuer=SELLER_ISSUER)
    seller_counter = CountingApp(seller_app)
    container_counter = CountingApp(model_container.create_app(master_key=MASTER_KEY))
    runtime_app = sagemaker_runtime.create_app(model_timeout_s=1.0)
    servers = [
        serve_in_thread(seller_counter),
        serve_in_thread(container_counter),
        serve_in_thread(runtime_app),
    ]
    yield StandIns(
        seller=servers[0],
        seller_counter=seller_counter,
        seller_app=seller_app,
        container=servers[1],
        container_counter=container_counter,
        runtime=servers[2],
        runtime_app=runtime_app,
    )
    for server in servers:
        server.shutdown()


@pytest.fixture
def proxy(aws: str, db, settings, standins: StandIns) -> ProxyWorld:
    """Both LOBs subscribed (active), the stand-ins reset, the results buckets in moto."""
    settings.JWKS_MIN_REFRESH_SECONDS = 0
    standins.reset()
    world = build_world()
    listing = ListingFactory(
        product_code=PRODUCT,
        name="Identity Transcoder",
        token_service_url=standins.seller.url,
        seller_issuer=SELLER_ISSUER,
        seller_jwks_url=f"{standins.seller.url}/.well-known/jwks.json",
    )
    subscription_a = SubscriptionFactory(lob=world.lob_a, listing=listing)
    subscription_b = SubscriptionFactory(lob=world.lob_b, listing=listing)
    EndpointFactory(subscription=subscription_a, name=f"{PRODUCT}-lob-a")
    EndpointFactory(subscription=subscription_b, name=f"{PRODUCT}-lob-b")
    point_runtime_at(standins.runtime.url, world.lob_a, world.lob_b)
    for lob in (world.lob_a, world.lob_b):
        _results_bucket(lob.aws_account)
    return ProxyWorld(
        world=world,
        listing=listing,
        subscription_a=subscription_a,
        subscription_b=subscription_b,
        seller=standins.seller,
        seller_counter=standins.seller_counter,
        seller_app=standins.seller_app,
        container=standins.container,
        container_counter=standins.container_counter,
        runtime=standins.runtime,
        runtime_app=standins.runtime_app,
    )


@pytest.fixture
def eager() -> Iterator[None]:
    """Tasks run in-process when enqueued (retries too, at once; the outcome shows failures)."""
    conf = celery_app.conf
    saved = conf.task_always_eager
    conf.task_always_eager = True
    yield
    conf.task_always_eager = saved
