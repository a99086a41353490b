"""URLs for sign-in and sign-out, the pages of lines of business (their members, their activity),
and opening Studio."""

from django.urls import path

from accounts import activity_pages, pages, studio_views, views

urlpatterns = [
    path("login/", views.login_page, name="login"),
    path("oidc/authenticate/", views.SignInStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", views.SignInCallbackView.as_view(), name="oidc_authentication_callback"),
    path("logout/", views.SignOutView.as_view(), name="logout"),
    path("signed-out/", views.signed_out_page, name="signed-out"),
    path("sign-in-failed/", views.sign_in_failed_page, name="sign-in-failed"),
    path("lobs/", pages.lob_list, name="lob-list"),
    path("lobs/<slug:slug>/", pages.lob_detail, name="lob-detail"),
    path("lobs/<slug:slug>/members/", pages.lob_member_add, name="lob-member-add"),
    path(
        "lobs/<slug:slug>/members/<int:membership_id>/",
        pages.lob_member_update,
        name="lob-member-update",
    ),
    path(
        "lobs/<slug:slug>/members/<int:membership_id>/remove/",
        pages.lob_member_remove,
        name="lob-member-remove",
    ),
    path("lobs/<slug:slug>/verify-account/", pages.lob_account_verify, name="lob-account-verify"),
    path("lobs/<slug:slug>/activity/", activity_pages.lob_activity, name="lob-activity"),
    path("studio/", studio_views.studio_home, name="studio-home"),
    path("studio/<str:lob_slug>/", studio_views.StudioOpenView.as_view(), name="studio-open"),
]
