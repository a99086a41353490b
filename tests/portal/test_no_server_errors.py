"""No URL answers 500 to anything a person can send: every route × method × malformed input.

Each endpoint's own tests send it the bad input it expects; this one sends every endpoint the
bad input of all the others — bodies of the wrong shape and type, unparsable JSON, a multipart
body without its file or boundary, numbers past any column, dates past year 9999, cursors that are
not cursors — as a member of the LOB (so that the checks let it reach the code behind them) and
as a platform admin, against the real stand-ins and moto. Whatever the answer, it is not a 500
(nor 501 or 505). 502, 503 and 504 are the portal's own answers for an upstream that failed:
here the Studio stand-in is not running, so Studio answers 502 when moto has a domain for it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from accounts.models import Membership
from subscriptions.models import Job
from tests.factories import JobFactory
from tests.subscriptions.conftest import ProxyWorld, aws, proxy, standins  # noqa: F401
from tests.url_sweep import lob_values, urls_of

pytestmark = pytest.mark.django_db

QUERIES = (
    "",
    "?page=0&cursor=%25ZZ&limit=-1&offset=99999999999999999999&ordering=-__class__",
    "?since=99999-01-01&until=9999-12-31T23:59:59-14:00&status=%5B%5D&lob=%E2%80%AE"
    "&subscription=1e999&submitter=0x10&role=owner&default_region=%F0%9F%92%A5",
)

_MULTIPART = (
    b'--xx\r\nContent-Disposition: form-data; name="subscription"\r\n\r\n99999999999999999999'
    b'\r\n--xx\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
    b"Content-Type: text/csv\r\n\r\nemail\r\n--xx--\r\n"
)
BODIES = (
    ("application/json", b"{}"),
    ("application/json", b"[]"),
    ("application/json", b"null"),
    ("application/json", b'"text"'),
    ("application/json", b'{"lob": '),
    (
        "application/json",
        b'{"lob": {"a": 1}, "role": [1], "user": 1e999, "subscription": "1e999", '
        b'"input_uri": "s3://", "account_id": 99999999999999999999, "slug": "A B", '
        b'"name": "", "status": true, "records": {"x": []}, "external_id": 7}',
    ),
    ("text/plain", b"hello"),
    (
        "application/x-www-form-urlencoded",
        b"subscription=%FF&file=x&records=" + b"a%2C" * 500 + b"&role=99&user=-1&content_type=",
    ),
    ("multipart/form-data; boundary=xx", _MULTIPART),
    ("multipart/form-data", b"no boundary"),
)


@pytest.fixture
def values(proxy: ProxyWorld) -> dict[str, dict[str, str]]:  # noqa: F811
    """lob-a's objects, for every kind of URL parameter."""
    world = proxy.world
    subscription = proxy.subscription_a
    job = JobFactory(
        subscription=subscription, submitted_by=world.user("analyst"), status=Job.Status.RUNNING
    )
    membership = Membership.objects.get(user=world.user("viewer"), lob=world.lob_a)
    return lob_values(
        lob=world.lob_a,
        membership=membership,
        subscription=subscription,
        job=job,
        listing=proxy.listing,
    )


def _requests(url: str) -> Iterator[tuple[str, str, str | None, bytes]]:
    """(method, URL, content type, body) of everything sent to one URL."""
    yield "head", url, None, b""
    for query in QUERIES:
        yield "get", url + query, None, b""
    for method in ("post", "patch"):
        for content_type, body in BODIES:
            yield method, url, content_type, body
    for content_type, body in BODIES[:6]:  # JSON: what a PUT takes
        yield "put", url, content_type, body
    yield "delete", url + QUERIES[1], None, b""


@pytest.mark.parametrize("principal", ["lob_admin", "platform_admin"])
def test_no_url_answers_a_server_error_to_malformed_input(
    proxy: ProxyWorld,  # noqa: F811
    cognito,  # sign-in configured, as in a deployment: /oidc/ answers, not "unavailable"
    values: dict[str, dict[str, str]],
    principal: str,
) -> None:
    user = proxy.world.user(principal)
    client = Client(raise_request_exception=False)
    errors, sent = [], 0
    for route, url, _ in urls_of(values):
        if "format" in route:
            continue  # the same views as without the suffix
        for method, target, content_type, body in _requests(url):
            client.force_login(user)  # again: a sign-out (or a session refresh) ends it
            extra = {} if content_type is None else {"content_type": content_type}
            response = client.generic(method.upper(), target, body, **extra)
            sent += 1
            if response.status_code >= 500 and response.status_code not in (502, 503, 504):
                errors.append((method.upper(), target, content_type, response.status_code))
    assert not errors, errors
    assert sent > 1000, sent  # the sweep reached the routes (a broken walk would pass vacuously)
