"""Opening SageMaker Studio: ``/studio/`` chooses a LOB, ``/studio/<lob>/`` opens its Studio.

``/studio/<lob>/`` answers 302 to a short-lived presigned URL. Browsers signed in with a session
get refusals and errors as pages; programs (``Accept: application/json``, usually with a Cognito
bearer token, as the reference API is called) get ``{"detail", "code", "hint"}`` with the same
status. The decisions and the audit trail are the service's (:mod:`accounts.studio`).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import AuthenticationFailed, NotAuthenticated
from rest_framework.request import Request
from rest_framework.views import APIView

from accounts import studio
from accounts.api_auth import CognitoAccessTokenAuthentication
from accounts.models import Membership
from portal.errors import ServiceError

JSON = "application/json"


def wants_json(request: HttpRequest) -> bool:
    """Whether the client prefers JSON to HTML (browsers prefer HTML; ``*/*`` gets HTML)."""
    return request.get_preferred_type(["text/html", JSON]) == JSON


def _not_signed_in(
    request: HttpRequest, *, lob_slug: str, code: str, detail: str, hint: str = ""
) -> HttpResponse:
    """A program's attempt without a usable sign-in: audited as refused, answered 401."""
    studio.studio_refusal_record(request=request, lob_slug=lob_slug, reason=code)
    body = {"detail": detail, "code": code}
    if hint:
        body["hint"] = hint
    response = JsonResponse(body, status=401)
    response["WWW-Authenticate"] = 'Bearer realm="gatehouse"'
    return response


def _error_answer(
    request: HttpRequest,
    *,
    status: int,
    code: str,
    title: str,
    message: str,
    hint: str = "",
    lob_slug: str = "",
) -> HttpResponse:
    if wants_json(request):
        body = {"detail": message, "code": code}
        if hint:
            body["hint"] = hint
        return JsonResponse(body, status=status)
    return render(
        request,
        "accounts/studio_error.html",
        {
            "status": status,
            "code": code,
            "title": title,
            "message": message,
            "hint": hint,
            "lob_slug": lob_slug,
            "request_id": getattr(request, "request_id", ""),
        },
        status=status,
    )


_REFUSAL_TITLES = {403: "Not allowed", 404: "Not found"}
# What a refused person can do about it, by the service's refusal code.
_REFUSAL_HINTS = {
    "not_a_member": "Studio opens for a line of business's analysts and admins. "
    "Ask one of its admins to add you.",
    "studio_role_not_allowed": "Studio opens for analysts and LOB admins.",
    "lob_not_found": "Open Studio from your dashboard, which lists your lines of business.",
}


@require_GET
@login_required
def studio_home(request: HttpRequest) -> HttpResponse:
    """``GET /studio/``: the LOBs whose Studio the user may open; the only one opens at once."""
    memberships = studio.studio_memberships(request.user)
    if len(memberships) == 1:
        return redirect("studio-open", lob_slug=memberships[0].lob.slug)
    # Viewers see why their LOBs are not listed, rather than an unexplained empty page.
    held_back = [
        membership
        for membership in Membership.objects.select_related("lob").filter(
            user=request.user, lob__is_active=True
        )
        if not membership.may_open_studio
    ]
    # Someone in no LOB at all (a platform admin, often) is told that, not "none of your LOBs".
    member_of_none = not memberships and not held_back
    if member_of_none:
        member_of_none = not Membership.objects.filter(user=request.user).exists()
    return render(
        request,
        "accounts/studio_choose.html",
        {"memberships": memberships, "held_back": held_back, "member_of_none": member_of_none},
    )


class StudioOpenView(APIView):
    """``GET /studio/<lob>/``: 302 to the user's Studio in that LOB's account, or why not."""

    # A Cognito bearer token (programs) or the browser session; GET only, so no CSRF question.
    authentication_classes = [CognitoAccessTokenAuthentication, SessionAuthentication]
    # Decided in get(): anonymous browsers are sent to sign in, programs get a 401.
    permission_classes: list = []
    # Not part of the REST API's schema: it answers redirects, not resources.
    schema = None
    # No HEAD: Django would answer it with get(), minting a URL (and auditing an open) for a link
    # checker or a prefetch.
    http_method_names = ["get", "options"]

    def perform_content_negotiation(self, request: Request, force: bool = False) -> object:
        # The answer is a redirect or an error in the form the client reads (wants_json): an
        # unusual Accept must not end the attempt in DRF's 406 before it is audited.
        return super().perform_content_negotiation(request, force=True)

    def handle_exception(self, exc: Exception) -> HttpResponse:
        """A bad bearer token is a refused attempt like any other: audited, and answered in the
        view's own form."""
        if isinstance(exc, AuthenticationFailed | NotAuthenticated):
            return _not_signed_in(
                self.request._request,
                lob_slug=str(self.kwargs.get("lob_slug", "")),
                code=str(exc.get_codes()),
                detail=str(exc.detail),
                hint="Send a current Cognito access token, or sign in in the browser.",
            )
        return super().handle_exception(exc)

    def get(self, request: Request, lob_slug: str) -> HttpResponse:
        """Mint the URL through the service and redirect to it."""
        django_request = request._request
        user = request.user
        if not user.is_authenticated:
            if wants_json(django_request):
                return _not_signed_in(
                    django_request,
                    lob_slug=lob_slug,
                    code="not_authenticated",
                    detail="Sign in first.",
                )
            studio.studio_refusal_record(
                request=django_request, lob_slug=lob_slug, reason="not_authenticated"
            )
            return redirect_to_login(django_request.get_full_path())
        try:
            launch = studio.studio_url_create(user=user, lob_slug=lob_slug, request=django_request)
        except studio.StudioError as exc:
            return _error_answer(
                django_request,
                status=exc.status,
                code=exc.code,
                title=exc.title,
                message=str(exc),
                hint=exc.hint,
                lob_slug=lob_slug,
            )
        except ServiceError as exc:
            return _error_answer(
                django_request,
                status=exc.status,
                code=exc.code,
                title=_REFUSAL_TITLES.get(exc.status, "Not allowed"),
                message=str(exc),
                hint=_REFUSAL_HINTS.get(exc.code, ""),
                lob_slug=lob_slug,
            )
        response = HttpResponseRedirect(launch.url)
        # The Location is a bearer credential for a few seconds: no cache may keep it.
        response["Cache-Control"] = "no-store"
        return response
