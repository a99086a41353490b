"""The LOB boundary, swept over every URL the portal serves.

Each endpoint has its own cross-LOB tests beside it; this one guards what those cannot: an
endpoint added later. It walks the URL resolver, fills every path parameter with an object of
``lob-a`` and sends each method as the admin of ``lob-b`` (the strongest person outside
``lob-a``), as a signed-in person of no LOB, and as someone not signed in. Nothing may succeed,
redirect anywhere but to sign-in or to another portal page that refuses in turn, or show
``lob-a``'s account, bucket, job or member. A URL with a parameter this test does
not know how to fill fails it: whoever adds one decides here what it means for the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.test import Client

from accounts.models import Membership
from subscriptions.models import Job
from tests.factories import (
    EndpointFactory,
    InvocationFactory,
    JobFactory,
    ListingFactory,
    SubscriptionFactory,
)
from tests.tenancy_world import World, build_world
from tests.url_sweep import lob_values, urls_of

pytestmark = pytest.mark.django_db

METHODS = ("get", "head", "post", "put", "patch", "delete")

# Not LOB-scoped: the Marketplace catalogue is the same for every signed-in person.
NOT_LOB_SCOPED = ("api/v1/^listings/",)


@dataclass
class LobA:
    """The objects of lob-a each path parameter can name."""

    world: World
    values: dict[str, dict[str, str]]
    secrets: tuple[str, ...]


@pytest.fixture
def lob_a() -> LobA:
    world = build_world()
    listing = ListingFactory(product_code="identity-transcoder")
    subscription = SubscriptionFactory(lob=world.lob_a, listing=listing)
    EndpointFactory(subscription=subscription)
    InvocationFactory(subscription=subscription, principal=world.user("analyst"))
    bucket = world.lob_a.aws_account.results_bucket
    job = JobFactory(
        subscription=subscription,
        submitted_by=world.user("analyst"),
        status=Job.Status.SUCCEEDED,
        output_uri=f"s3://{bucket}/gatehouse/lob-a/jobs/output.jsonl",
        records_done=3,
    )
    membership = Membership.objects.get(user=world.user("analyst"), lob=world.lob_a)
    values = lob_values(
        lob=world.lob_a, membership=membership, subscription=subscription, job=job, listing=listing
    )
    secrets = (world.lob_a.aws_account.account_id, bucket, str(job.pk), "lob-a-analyst")
    return LobA(world=world, values=values, secrets=secrets)


SIGN_IN_PATHS = ("/login/", "/oidc/authenticate/")


@pytest.mark.parametrize("principal", ["other_lob_member", "non_member", "anonymous"])
def test_no_lob_scoped_url_lets_anyone_outside_lob_a_in(lob_a: LobA, principal: str) -> None:
    client = Client()
    user = lob_a.world.user(principal)
    if user is not None:
        client.force_login(user)
    checked = []
    for route, url, names_an_object in urls_of(lob_a.values):
        if not names_an_object or route.startswith(NOT_LOB_SCOPED):
            continue
        for method in METHODS:
            response = getattr(client, method)(url)
            where = f"{principal}: {method.upper()} {url}"
            for _hop in range(3):
                if response.status_code not in (301, 302, 303, 307, 308):
                    break
                # A form's action opened with GET goes back to its page, which must refuse in
                # turn; someone not signed in is sent to sign in.
                location = response["Location"]
                assert location.startswith("/") and "X-Amz" not in location, where
                where += f" → {location}"
                if user is None and location.startswith(SIGN_IN_PATHS):
                    break
                response = client.get(location)
            else:
                pytest.fail(f"{where}: redirected on and on")
            signing_in = user is None and response.status_code == 302
            assert signing_in or response.status_code in (401, 403, 404, 405), (
                where,
                response.status_code,
            )
            body = response.content.decode(errors="replace")
            leaked = [secret for secret in lob_a.secrets if secret in body]
            assert not leaked, (where, leaked)
            checked.append(where)
    # The sweep reached every kind of LOB-scoped URL (a broken resolver walk would pass vacuously).
    for prefix in ("/lobs/lob-a/", "/studio/lob-a/", "/subscriptions/", "/jobs/", "/api/v1/"):
        assert any(prefix in entry for entry in checked), prefix
    assert len(checked) >= 40 * len(METHODS), len(checked)
