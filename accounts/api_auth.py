"""API authentication: ``Authorization: Bearer <Cognito access token>``, verified locally."""

from __future__ import annotations

import logging

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from accounts.audit import audit_record
from accounts.models import AuditEvent, User
from accounts.services.users import Identity, user_sync_from_identity
from accounts.tokens import IdentityProviderUnavailable, TokenError, access_token_verify

logger = logging.getLogger(__name__)


class IdentityProviderDown(exceptions.APIException):
    """The user pool's keys cannot be fetched, so no token can be checked."""

    status_code = 503
    default_detail = "The identity provider cannot be reached; try again shortly."
    default_code = "identity_provider_unavailable"


def _refuse(request: Request, message: str, code: str) -> exceptions.AuthenticationFailed:
    # The underlying Django request: touching DRF's request.user here would re-run authentication.
    request = request._request
    audit_record(
        action="api.authenticate",
        outcome=AuditEvent.Outcome.REFUSED,
        request=request,
        reason=code,
        detail={"path": request.path[:200]},
    )
    return exceptions.AuthenticationFailed(message, code=code)


class CognitoAccessTokenAuthentication(BaseAuthentication):
    """Accepts Cognito access tokens: RS256, known key, our issuer, access use, allowed client.

    No userinfo call per request: the token is checked against the cached JWKS. A person seen for
    the first time through the API is created from the token's claims, as at browser sign-in.
    """

    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, dict] | None:
        """The (user, claims) for a valid bearer token; None when no bearer token is sent."""
        header = get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword:
            return None
        if len(header) != 2:
            raise _refuse(
                request,
                "Malformed Authorization header: expected 'Bearer <access token>'.",
                "authorization_malformed",
            )
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise _refuse(request, "The token is not a JWT.", "token_invalid") from None
        try:
            claims = access_token_verify(token)
        except TokenError as exc:
            raise _refuse(request, str(exc), exc.code) from None
        except IdentityProviderUnavailable as exc:
            logger.warning("API authentication unavailable: %s", exc)
            raise IdentityProviderDown() from None

        user = user_sync_from_identity(
            identity=Identity.from_claims(claims), request=request._request, channel="api"
        )
        if not user.is_active:
            raise _refuse(request, "This user is deactivated.", "user_inactive")
        return user, claims

    def authenticate_header(self, request: Request) -> str:
        """Makes DRF answer 401 (not 403) when authentication is missing or refused."""
        return 'Bearer realm="gatehouse"'
