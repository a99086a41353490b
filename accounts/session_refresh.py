"""Sessions signed in through Cognito are checked with Cognito again every little while.

A portal session lasts ``SESSION_COOKIE_AGE`` (8 h); without a check, a person disabled in
Cognito, or taken out of the platform-admins group, would keep the portal (and the admin site, and
Studio URLs) for all of it. mozilla-django-oidc's ``SessionRefresh`` sends the browser to Cognito
with ``prompt=none`` once the ID token's renewal time (``OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS``) has
passed: a live Cognito session comes straight back with a new code (the sign-in runs again, groups
and all); a disabled user or an ended Cognito session comes back with an error, and the portal
session ends.
"""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import cached_property
from mozilla_django_oidc.middleware import SessionRefresh

# The library names the renewal time so in the session at every sign-in.
_EXPIRY_KEY = "oidc_id_token_expiration"


class CognitoSessionRefresh(SessionRefresh):
    """``SessionRefresh`` for sessions that began with a Cognito sign-in, on page requests only.

    Sessions made otherwise (tests' force_login, the admin's own) carry no renewal time and are
    left alone; the API (bearer tokens, and the pages' JSON polling) and health checks are exempt
    (``OIDC_EXEMPT_URLS``): a redirect to Cognito means nothing to them.
    """

    def is_refreshable_url(self, request: HttpRequest) -> bool:
        return _EXPIRY_KEY in request.session and super().is_refreshable_url(request)

    @cached_property
    def exempt_urls(self) -> set[str]:
        # The library's own list names its "oidc_logout" view; the portal's sign-out is "logout".
        names = ("oidc_authentication_init", "oidc_authentication_callback", "logout")
        paths = {url for url in self.OIDC_EXEMPT_URLS if isinstance(url, str)}
        return paths | {reverse(name) for name in names}
