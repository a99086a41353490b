"""What every page's layout gives keyboard and screen-reader users (templates/base.html)."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.tenancy_world import build_world

pytestmark = pytest.mark.django_db


@pytest.fixture
def analyst_client() -> Client:
    client = Client()
    client.force_login(build_world().user("analyst"))
    return client


@pytest.mark.parametrize("path", ["/", "/lobs/lob-a/", "/jobs/", "/no-such-page/"])
def test_the_first_tab_stop_skips_to_the_content(analyst_client: Client, path: str) -> None:
    # Without it a keyboard user tabbed through the brand, six top-bar links and Sign out
    # before reaching anything on the page.
    content = analyst_client.get(path).content.decode()

    body = content.split("<body>", 1)[1]
    first_link = re.search(r"<a [^>]*>", body)
    assert first_link and 'href="#main"' in first_link.group(0), path
    assert '<main id="main" tabindex="-1"' in content, path


def test_the_page_navigations_are_told_apart(analyst_client: Client) -> None:
    # Two unnamed <nav> landmarks (the top bar and the breadcrumb) read as the same one.
    content = analyst_client.get("/lobs/lob-a/").content.decode()

    assert '<nav class="topnav" aria-label="Main">' in content
    assert '<nav class="crumbs" aria-label="Breadcrumb">' in content
