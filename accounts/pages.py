"""Browser pages for lines of business: the list, one LOB, and managing its members.

Views are thin: the LOB and its memberships are read through the tenancy selectors (unknown slug
404, a LOB the user is not in 403), changes go through the tenancy services, which check who may
do what, write the audit trail and queue the DynamoDB publication. A refused change comes back
as a message on the LOB page, never as a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts import selectors
from accounts.models import Lob, Membership, User
from accounts.services import aws_verification, tenancy
from portal.errors import ServiceError
from portal.views import form_action

LobView = Callable[..., HttpResponse]


def _unavailable(request: HttpRequest, *, status: int, slug: str, message: str) -> HttpResponse:
    return render(
        request,
        "accounts/lob_unavailable.html",
        {"status": status, "slug": slug, "message": message},
        status=status,
    )


def _not_found(request: HttpRequest, slug: str, message: str | None = None) -> HttpResponse:
    return _unavailable(
        request,
        status=404,
        slug=slug,
        message=message or f"There is no line of business called “{slug}”.",
    )


def _forbidden(request: HttpRequest, slug: str, message: str) -> HttpResponse:
    return _unavailable(request, status=403, slug=slug, message=message)


def lob_scoped(view: LobView) -> LobView:
    """Resolve ``slug`` to a LOB the user may read (else a 404 or 403 page) and pass it on."""

    @wraps(view)
    def wrapper(request: HttpRequest, slug: str, *args: object, **kwargs: object) -> HttpResponse:
        try:
            lob = selectors.lob_for_member(request.user, slug)
        except selectors.LobNotFound:
            return _not_found(request, slug)
        except selectors.LobAccessDenied:
            return _forbidden(
                request, slug, f"You are not a member of “{slug}”. Ask one of its admins."
            )
        return view(request, lob, *args, **kwargs)

    return wrapper


def managers_only(view: LobView) -> LobView:
    """Only platform admins and the LOB's own admins get past (403 page for anyone else)."""

    @wraps(view)
    def wrapper(request: HttpRequest, lob: Lob, *args: object, **kwargs: object) -> HttpResponse:
        if not selectors.may_manage_members(request.user, lob):
            return _forbidden(
                request, lob.slug, "Only platform admins and this LOB's admins may do this."
            )
        return view(request, lob, *args, **kwargs)

    return wrapper


def _lob_page(lob: Lob, anchor: str = "") -> HttpResponse:
    url = reverse("lob-detail", args=[lob.slug])
    return redirect(f"{url}#{anchor}" if anchor else url)


def _add_member_again(lob: Lob, username: str, role: str) -> HttpResponse:
    """Back to the members after a failed add, the form filled in as it was sent (nothing to type
    again). Only a printable name goes back: the URL must not carry a control character."""
    query = urlencode({"username": username if username.isprintable() else "", "role": role})
    return redirect(f"{reverse('lob-detail', args=[lob.slug])}?{query}#members")


def _membership_in(request: HttpRequest, lob: Lob, membership_id: int) -> Membership | None:
    """A membership of this LOB that the user can see; one of another LOB is simply not found."""
    return (
        selectors.memberships_visible_to(request.user)
        .filter(lob=lob, pk=membership_id)
        .select_related("lob__aws_account")
        .first()
    )


def _refused(request: HttpRequest, what: str, exc: ServiceError) -> None:
    messages.error(request, f"{what}: {exc}")


# --- Reading --------------------------------------------------------------------------------------


def lobs_with_counts(user: User) -> QuerySet[Lob]:
    """The LOBs the user can see, each with ``member_count`` and ``my_role``, in one query."""
    my_role = Membership.objects.filter(lob=OuterRef("pk"), user=user).values("role")[:1]
    return (
        selectors.lobs_visible_to(user)
        .annotate(member_count=Count("memberships", distinct=True), my_role=Subquery(my_role))
        .order_by("slug")
    )


@require_GET
@login_required
def lob_list(request: HttpRequest) -> HttpResponse:
    """``GET /lobs/``: every LOB the user can see, with member counts."""
    labels = dict(Membership.Role.choices)
    lobs = list(lobs_with_counts(request.user))
    for lob in lobs:
        lob.my_role_label = labels.get(lob.my_role, "") if lob.is_active else ""
    return render(request, "accounts/lob_list.html", {"lobs": lobs})


@require_GET
@login_required
@lob_scoped
def lob_detail(request: HttpRequest, lob: Lob) -> HttpResponse:
    """``GET /lobs/<slug>/``: the LOB, its AWS account and its members."""
    may_manage = selectors.may_manage_members(request.user, lob)
    memberships = list(
        selectors.memberships_visible_to(request.user).filter(lob=lob).order_by("user__username")
    )
    my_role = next((m.role for m in memberships if m.user_id == request.user.pk), None)
    return render(
        request,
        "accounts/lob_detail.html",
        {
            "lob": lob,
            "account": lob.aws_account,
            "memberships": memberships,
            "may_manage": may_manage,
            "my_role_label": dict(Membership.Role.choices).get(my_role) if lob.is_active else None,
            "role_choices": Membership.Role.choices,
            # A failed add comes back with what was sent (see _add_member_again).
            "add_username": request.GET.get("username", "")[:150] if may_manage else "",
            "add_role": request.GET.get("role") or Membership.Role.ANALYST,
        },
    )


# --- Managing members -----------------------------------------------------------------------------


@form_action
@login_required
@lob_scoped
@managers_only
def lob_member_add(request: HttpRequest, lob: Lob) -> HttpResponse:
    """``POST /lobs/<slug>/members/``: add a user (by username) with a role."""
    username = request.POST.get("username", "").strip()
    role = request.POST.get("role", "")
    if not username:
        messages.error(request, "Enter the username of the person to add.")
        return _lob_page(lob, "members")
    # An exact username, typed by a member manager: a lookup, not a directory of users. One with
    # a control character names nobody (and PostgreSQL cannot compare a NUL).
    user = (
        User.objects.filter(username=username, is_active=True).first()
        if username.isprintable()
        else None
    )
    if user is None:
        messages.error(request, f"No user named {username} has signed in yet.")
        return _add_member_again(lob, username, role)
    try:
        membership = tenancy.membership_create(
            lob=lob, user=user, role=role, acting_user=request.user, request=request
        )
    except ServiceError as exc:
        _refused(request, f"Could not add {username}", exc)
        return _add_member_again(lob, username, role)
    messages.success(request, f"Added {user.username} as {membership.get_role_display()}.")
    return _lob_page(lob, "members")


@form_action
@login_required
@lob_scoped
@managers_only
def lob_member_update(request: HttpRequest, lob: Lob, membership_id: int) -> HttpResponse:
    """``POST /lobs/<slug>/members/<id>/``: change a member's role."""
    membership = _membership_in(request, lob, membership_id)
    if membership is None:
        return _not_found(request, lob.slug, "That membership does not exist in this LOB.")
    role = request.POST.get("role", "")
    username = membership.user.username
    if role == membership.role:
        messages.info(
            request, f"{username} is already {membership.get_role_display()}; nothing changed."
        )
        return _lob_page(lob, "members")
    try:
        tenancy.membership_update(
            membership=membership, role=role, acting_user=request.user, request=request
        )
    except ServiceError as exc:
        _refused(request, f"Could not change {username}'s role", exc)
    else:
        messages.success(request, f"{username} is now {membership.get_role_display()}.")
    return _lob_page(lob, "members")


@require_http_methods(["GET", "POST"])
@login_required
@lob_scoped
@managers_only
def lob_member_remove(request: HttpRequest, lob: Lob, membership_id: int) -> HttpResponse:
    """``/lobs/<slug>/members/<id>/remove/``: GET asks for confirmation, POST removes."""
    membership = _membership_in(request, lob, membership_id)
    if membership is None:
        return _not_found(request, lob.slug, "That membership does not exist in this LOB.")
    if request.method == "GET":
        return render(
            request, "accounts/lob_member_remove.html", {"lob": lob, "membership": membership}
        )
    username = membership.user.username
    try:
        tenancy.membership_delete(membership=membership, acting_user=request.user, request=request)
    except ServiceError as exc:
        _refused(request, f"Could not remove {username}", exc)
    else:
        messages.success(request, f"Removed {username} from {lob.slug}.")
        if not selectors.lobs_visible_to(request.user).filter(pk=lob.pk).exists():
            return redirect("lob-list")  # they removed themselves: the LOB page is now a 403
    return _lob_page(lob, "members")


# --- The AWS account ------------------------------------------------------------------------------


@form_action
@login_required
@lob_scoped
@managers_only
def lob_account_verify(request: HttpRequest, lob: Lob) -> HttpResponse:
    """``POST /lobs/<slug>/verify-account/``: assume the invoke role and record the outcome."""
    result = aws_verification.aws_account_verify(
        account=lob.aws_account, acting_user=request.user, request=request
    )
    if result.ok:
        messages.success(request, f"Verified: {result.detail}")
    else:
        messages.error(request, f"Verification failed: {result.detail}")
    return _lob_page(lob, "account")
