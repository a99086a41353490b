"""Browser sign-in through Amazon Cognito with mozilla-django-oidc, made strict.

The library alone does not check the ID token's ``aud``, ``iss`` or ``exp`` and matches users by
email; here the ID token is verified in full (accounts.tokens) and users are matched on issuer and
subject. Groups are taken from the verified ID token, where Cognito puts them, not from userinfo.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from accounts.models import User
from accounts.services.users import Identity, user_sync_from_identity
from accounts.tokens import TokenError, id_token_verify


class SignInError(Exception):
    """Sign-in could not complete; ``code`` names why (shown on the error page and audited)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class CognitoOIDCBackend(OIDCAuthenticationBackend):
    """Authorization-code sign-in against a Cognito user pool (or its local stand-in)."""

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """Verify the ID token in full; the library's own check skips aud, iss and exp."""
        if not token:
            raise SignInError("The identity provider returned no ID token.", "no_id_token")
        try:
            return id_token_verify(token, nonce=kwargs.get("nonce"))
        except TokenError as exc:
            raise SignInError(str(exc), exc.code) from exc

    def get_userinfo(self, access_token: str, id_token: str, payload: dict) -> dict[str, Any]:
        """Userinfo merged under the verified ID token's claims (which carry cognito:groups)."""
        userinfo = super().get_userinfo(access_token, id_token, payload)
        if str(userinfo.get("sub")) != str(payload["sub"]):
            raise SignInError(
                "Userinfo describes another person than the ID token.", "userinfo_mismatch"
            )
        return {**userinfo, **payload}

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        """A subject is all we need; email is optional and never identifies anyone."""
        return bool(claims.get("sub"))

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict) -> User | None:
        """Find the user by issuer and subject (never email), creating or refreshing them."""
        claims = self.get_userinfo(access_token, id_token, payload)
        if not self.verify_claims(claims):
            raise SignInError("The identity provider did not say who you are.", "no_subject")
        return user_sync_from_identity(
            identity=Identity.from_claims(claims), request=self.request, channel="browser"
        )

    def get_user(self, user_id: int) -> User | None:
        """Session lookup; deactivated users lose their session at the next request."""
        user = super().get_user(user_id)
        return user if user is not None and user.is_active else None


def provider_logout_url(request: HttpRequest) -> str:
    """Cognito's /logout URL, which ends the hosted-UI session and comes back to the portal."""
    query = urlencode(
        {
            "client_id": settings.OIDC_RP_CLIENT_ID,
            "logout_uri": request.build_absolute_uri(reverse(settings.LOGOUT_REDIRECT_URL)),
        }
    )
    return f"{settings.OIDC_OP_LOGOUT_ENDPOINT}?{query}"
