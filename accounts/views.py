"""Sign-in, sign-out and their error pages."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import requests
from django.conf import settings
from django.contrib import auth
from django.core.exceptions import SuspiciousOperation
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.views.decorators.http import require_GET
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
    OIDCLogoutView,
)

from accounts.audit import audit_record
from accounts.models import AuditEvent
from accounts.oidc import SignInError
from accounts.tokens import IdentityProviderUnavailable

logger = logging.getLogger(__name__)

# What a person is told for each reason sign-in can fail. Codes are also audited.
SIGN_IN_FAILURES = {
    "provider_error": "The identity provider refused the sign-in.",
    "state_mismatch": (
        "This sign-in response does not belong to a sign-in started in this browser, or it was "
        "already used. Start again."
    ),
    "provider_unavailable": "The identity provider could not be reached. Try again shortly.",
    "token_invalid": "The identity provider's answer could not be verified.",
    "token_expired": "The identity provider's answer had already expired.",
    "nonce_mismatch": "The identity provider's answer does not match this browser's request.",
    "inactive": "Your portal account is deactivated. Ask a platform admin.",
    "not_configured": (
        "Sign-in is not configured: the Cognito user pool and app client are not set."
    ),
}


# What Cognito answers a prompt=none check when no sign-in of its own is alive (or the user is
# disabled): the session has ended, which is not a failure to explain.
SESSION_ENDED_ERRORS = frozenset({"login_required", "interaction_required", "consent_required"})


def _sign_in_configured() -> bool:
    return bool(settings.OIDC_RP_CLIENT_ID and settings.COGNITO_USER_POOL_ID)


def _failure_page(request: HttpRequest, code: str, status: int = 400) -> HttpResponse:
    message = SIGN_IN_FAILURES.get(code, SIGN_IN_FAILURES["token_invalid"])
    return render(
        request,
        "accounts/sign_in_failed.html",
        {"code": code, "message": message},
        status=status,
    )


@require_GET
def login_page(request: HttpRequest) -> HttpResponse:
    """The sign-in page: one button that starts the Cognito code flow."""
    next_url = request.GET.get("next", "")
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        next_url = ""
    if request.user.is_authenticated:
        return redirect(next_url or settings.LOGIN_REDIRECT_URL)
    return render(
        request,
        "accounts/login.html",
        {
            "next": next_url,
            "configured": _sign_in_configured(),
            "ended": request.GET.get("ended") == "1",
        },
    )


class SignInStartView(OIDCAuthenticationRequestView):
    """Redirects to Cognito's authorize endpoint (with state, nonce and a PKCE challenge)."""

    def get(self, request: HttpRequest) -> HttpResponse:
        """Start the flow, or explain that sign-in is not configured."""
        if not _sign_in_configured():
            return _failure_page(request, "not_configured", status=503)
        return super().get(request)


class SignInCallbackView(OIDCAuthenticationCallbackView):
    """Completes sign-in; every failure is a clear page and an audit event, never a 500."""

    def get(self, request: HttpRequest) -> HttpResponse:
        """Handle Cognito's redirect back with a code (or an error)."""
        self.failure_code = "state_mismatch"
        error = request.GET.get("error")
        if error:
            if request.GET.get("state", "") not in request.session.get("oidc_states", {}):
                # Not the answer to a sign-in of this browser (a link anyone can send): refused
                # without ending the session the browser has.
                return self.login_failure()
            if error in SESSION_ENDED_ERRORS:
                return self._session_ended(error)
            self.failure_code = "provider_error"
        try:
            return super().get(request)
        except SignInError as exc:
            self.failure_code = exc.code
        except SuspiciousOperation:
            self.failure_code = "state_mismatch"
        except (requests.RequestException, IdentityProviderUnavailable) as exc:
            # The token endpoint refused the code (HTTPError) or could not be reached.
            response = getattr(exc, "response", None)
            if response is not None and 400 <= response.status_code < 500:
                self.failure_code = "state_mismatch"
            else:
                self.failure_code = "provider_unavailable"
        return self.login_failure()

    def _session_ended(self, error: str) -> HttpResponse:
        """The session check (prompt=none) found no Cognito session for the user, or the user
        disabled there: the portal session ends too, and the browser goes to sign in again."""
        request = self.request
        states = request.session.get("oidc_states", {})
        states.pop(request.GET.get("state", ""), None)
        next_url = request.session.get("oidc_login_next", "") or ""
        user = request.user if request.user.is_authenticated else None
        auth.logout(request)
        audit_record(
            action="auth.session_ended",
            outcome=AuditEvent.Outcome.SUCCESS,
            request=request,
            actor=user,
            reason=error[:64],
        )
        return redirect(f"{reverse('login')}?{urlencode({'next': next_url, 'ended': '1'})}")

    def login_failure(self) -> HttpResponse:
        """Audit the failed sign-in and show why it failed."""
        code = getattr(self, "failure_code", "state_mismatch")
        user = getattr(self, "user", None)
        if user is not None and not user.is_active:
            code = "inactive"
        detail = {}
        if code == "provider_error":
            # Only the OAuth error code: the description is provider text we do not control.
            detail["provider_error"] = self.request.GET.get("error", "")[:64]
        audit_record(
            action="auth.sign_in",
            outcome=AuditEvent.Outcome.FAILURE,
            request=self.request,
            reason=code,
            detail=detail,
        )
        status = 503 if code == "provider_unavailable" else 400
        return _failure_page(self.request, code, status=status)

    def login_success(self) -> HttpResponse:
        """Sign the user in, fix when the session ends, and audit it."""
        response = super().login_success()
        session_end_fix(self.request)
        audit_record(
            action="auth.sign_in",
            outcome=AuditEvent.Outcome.SUCCESS,
            request=self.request,
            actor=self.user,
            detail={"channel": "browser", "platform_admin": self.user.is_staff},
        )
        return response


# When the session's first sign-in happened (a Unix time): the silent re-checks sign in again, and
# the session must still end SESSION_COOKIE_AGE after the first one.
SIGNED_IN_AT_KEY = "gatehouse_signed_in_at"


def session_end_fix(request: HttpRequest) -> None:
    """End the session ``SESSION_COOKIE_AGE`` after its first sign-in, whatever happens meanwhile.

    Django moves a session's end to now + ``SESSION_COOKIE_AGE`` every time the session is saved,
    and the Cognito re-check (accounts.session_refresh) saves it every few minutes: a session in
    use would never end. A fixed end date is kept instead; the re-check's sign-in (same user, same
    session: Django keeps its data) finds the first sign-in's time and keeps that end. A session
    past its end is gone, and the next page asks to sign in again.
    """
    session = request.session
    signed_in_at = session.setdefault(SIGNED_IN_AT_KEY, time.time())
    session.set_expiry(datetime.fromtimestamp(signed_in_at + settings.SESSION_COOKIE_AGE, tz=UTC))


class SignOutView(OIDCLogoutView):
    """POST only: ends the portal session, then Cognito's session via its /logout endpoint."""

    def post(self, request: HttpRequest) -> HttpResponse:
        """Audit, then sign out here and at the identity provider."""
        if request.user.is_authenticated:
            audit_record(
                action="auth.sign_out",
                outcome=AuditEvent.Outcome.SUCCESS,
                request=request,
                actor=request.user,
            )
        return super().post(request)


@require_GET
def signed_out_page(request: HttpRequest) -> HttpResponse:
    """Where Cognito's /logout sends the browser back to, after the sign-out (a POST) ended the
    portal session. It ends nothing itself: a GET any site can send must not sign people out.
    Someone still signed in who lands here goes to the dashboard."""
    if request.user.is_authenticated:
        return redirect("dashboard")
    return render(request, "accounts/signed_out.html")


@require_GET
def sign_in_failed_page(request: HttpRequest) -> HttpResponse:
    """Target of the library's own failure redirect (kept for completeness)."""
    return _failure_page(request, request.GET.get("code", "state_mismatch"))
