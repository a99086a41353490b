"""Drive the OIDC code flow without a browser: Django's test client for the portal, requests for
the hosted-UI stand-in (a real HTTP server)."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlparse

import requests
from django.http import HttpResponse
from django.test import Client


class FormParser(HTMLParser):
    """Collects the first form's action and its input fields."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = attributes.get("action") or ""
        elif tag == "input" and attributes.get("name"):
            self.fields[attributes["name"]] = attributes.get("value") or ""


def hosted_ui_sign_in(
    authorize_url: str, username: str, password: str, browser: requests.Session | None = None
) -> requests.Response:
    """Open the authorize URL, fill the sign-in form if shown; returns the redirect response."""
    browser = browser or requests.Session()
    page = browser.get(authorize_url, allow_redirects=False, timeout=10)
    if page.status_code in (302, 303):
        return page  # a live hosted-UI session: straight back with a code
    assert page.status_code == 200, page.text
    form = FormParser()
    form.feed(page.text)
    form.fields.update({"username": username, "password": password})
    action = urljoin(page.url, form.action or page.url)
    return browser.post(action, data=form.fields, allow_redirects=False, timeout=10)


def portal_sign_in(
    client: Client,
    username: str,
    password: str,
    browser: requests.Session | None = None,
    start: str = "/oidc/authenticate/",
) -> HttpResponse:
    """Run the whole code flow; returns the portal's answer to the callback."""
    started = client.get(start)
    assert started.status_code == 302, started.content
    back = hosted_ui_sign_in(started["Location"], username, password, browser)
    assert back.status_code in (302, 303), back.text
    callback = urlparse(back.headers["Location"])
    return client.get(f"{callback.path}?{callback.query}")
