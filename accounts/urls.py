"""URLs for sign-in and sign-out."""

from django.urls import path

from accounts import views

urlpatterns = [
    path("login/", views.login_page, name="login"),
    path("oidc/authenticate/", views.SignInStartView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", views.SignInCallbackView.as_view(), name="oidc_authentication_callback"),
    path("logout/", views.SignOutView.as_view(), name="logout"),
    path("signed-out/", views.signed_out_page, name="signed-out"),
    path("sign-in-failed/", views.sign_in_failed_page, name="sign-in-failed"),
]
