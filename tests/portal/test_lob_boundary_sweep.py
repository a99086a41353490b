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

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import AuditEvent, Membership
from subscriptions.models import Job
from tests.factories import EndpointFactory, InvocationFactory, ListingFactory, SubscriptionFactory
from tests.tenancy_world import World, build_world

pytestmark = pytest.mark.django_db

METHODS = ("get", "head", "post", "put", "patch", "delete")

# Not LOB-scoped: the Marketplace catalogue is the same for every signed-in person, and the admin
# site is the platform admins' (its own tests: tests/accounts/test_admin_site.py).
NOT_LOB_SCOPED = ("api/v1/^listings/", "admin/")

# Parameters that name nothing (DRF's format suffix).
FREE_PARAMETERS = {"format": "json"}


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
    job = Job.objects.create(
        subscription=subscription,
        submitted_by=world.user("analyst"),
        status=Job.Status.SUCCEEDED,
        content_type="text/csv",
        input_uri=f"s3://{bucket}/lob-a/jobs/input",
        output_uri=f"s3://{bucket}/lob-a/jobs/output.jsonl",
        records_total=3,
        records_done=3,
    )
    membership = Membership.objects.get(user=world.user("analyst"), lob=world.lob_a)
    event = AuditEvent.objects.create(
        action="lob.member_added",
        outcome=AuditEvent.Outcome.SUCCESS,
        lob_slug="lob-a",
        target_type="membership",
        target_id=str(membership.pk),
    )
    lob = {"slug": "lob-a", "lob_slug": "lob-a", "membership_id": str(membership.pk)}
    values = {
        # by the pattern's prefix, then the parameter's name
        "lobs": lob,
        "studio": lob,
        "aws-accounts": {"account_id": world.lob_a.aws_account.account_id},
        "memberships": {"pk": str(membership.pk)},
        "audit-events": {"pk": str(event.pk)},
        "subscriptions": {"pk": str(subscription.pk), "subscription_id": str(subscription.pk)},
        "jobs": {"pk": str(job.pk), "job_id": str(job.pk)},
    }
    secrets = (world.lob_a.aws_account.account_id, bucket, str(job.pk), "lob-a-analyst")
    return LobA(world=world, values=values, secrets=secrets)


def _patterns(resolver: URLResolver, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _patterns(entry, route)
        else:
            yield route, entry


def _resource(route: str) -> str:
    """The first path segment that names a kind of object: ``jobs`` in ``api/v1/^jobs/...``."""
    for segment in route.replace("^", "").split("/"):
        if segment and segment not in ("api", "v1") and not segment.startswith("("):
            return segment.split("\\")[0]
    return ""


def _url(route: str, pattern: URLPattern, lob_a: LobA) -> str | None:
    """The route filled with lob-a's objects; None when the route takes no LOB-scoped parameter."""
    parameters = set(pattern.pattern.regex.groupindex) - set(FREE_PARAMETERS)
    if not parameters or route.startswith(NOT_LOB_SCOPED):
        return None
    known = lob_a.values.get(_resource(route), {})
    unknown = parameters - set(known)
    assert not unknown, (
        f"{route} takes {sorted(unknown)}: say in {__name__} which of lob-a's objects it names"
    )
    kwargs = {name: known[name] for name in parameters}
    kwargs.update({name: value for name, value in FREE_PARAMETERS.items() if name in route})
    return _reverse(route, kwargs)


def _reverse(route: str, kwargs: dict[str, str]) -> str:
    """Fill a route (Django path converters or DRF regex groups) without needing its name."""
    path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: kwargs[m.group(1)], route)
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: kwargs[m.group(1)], path)
    path = path.replace("^", "").replace("$", "").replace("\\.", ".").replace("/?", "/")
    return "/" + path


SIGN_IN_PATHS = ("/login/", "/oidc/authenticate/")


@pytest.mark.parametrize("principal", ["other_lob_member", "non_member", "anonymous"])
def test_no_lob_scoped_url_lets_anyone_outside_lob_a_in(lob_a: LobA, principal: str) -> None:
    client = Client()
    user = lob_a.world.user(principal)
    if user is not None:
        client.force_login(user)
    checked = []
    for route, pattern in _patterns(get_resolver()):
        url = _url(route, pattern, lob_a)
        if url is None:
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
