"""The account pages we serve: sign-in and sign-out always; password change and reset only when
mail is configured (EMAIL_URL), and then with every guess and every reset request throttled.

Wrong old passwords in a password-change form (the site's and the admin's) count as failed
sign-ins: both guess a password, so they share one limit per client.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.html import escape

from common.throttle import PASSWORD_RESET, SIGN_IN, Throttle

View = Callable[..., HttpResponse]

#: What a refused client is told, by throttle.
REFUSALS = {
    SIGN_IN.scope: ("Too many sign-ins", "Too many failed sign-ins from your address."),
    PASSWORD_RESET.scope: (
        "Too many password resets",
        "Too many password reset requests from your address.",
    ),
}


def too_many(throttle: Throttle, retry_after: int) -> HttpResponse:
    """The 429 page for a client over `throttle`'s limit, with Retry-After."""
    title, sentence = REFUSALS[throttle.scope]
    message = f"{sentence} Try again in {retry_after} seconds."
    html = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title></head><body><h1>{escape(title)}</h1>"
        f"<p>{escape(message)}</p></body></html>"
    )
    response = HttpResponse(html, status=429)
    response["Retry-After"] = str(retry_after)
    return response


def counts_wrong_old_passwords(view: View) -> View:
    """A password-change view whose wrong old passwords count as failed sign-ins, and which
    refuses a client over that limit before checking anything."""

    @wraps(view)
    def counted(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method == "POST":
            retry_after = SIGN_IN.retry_after(request)
            if retry_after is not None:
                return too_many(SIGN_IN, retry_after)
        response = view(request, *args, **kwargs)
        # The form is read before the TemplateResponse renders, as the view left it.
        form = (getattr(response, "context_data", None) or {}).get("form")
        if request.method == "POST" and form is not None and "old_password" in form.errors:
            SIGN_IN.count(request)
        return response

    return counted


class PasswordResetView(auth_views.PasswordResetView):
    """Django's password reset, where every request counts: each may send a mail."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        retry_after = PASSWORD_RESET.retry_after(request)
        if retry_after is not None:
            return too_many(PASSWORD_RESET, retry_after)
        PASSWORD_RESET.count(request)
        return super().post(request, *args, **kwargs)


def account_urls(*, mail: bool) -> list[URLPattern]:
    """The pages under /accounts/: Django's names and paths, only those we mean to serve."""
    patterns = [
        path("login/", auth_views.LoginView.as_view(), name="login"),
        path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    ]
    if not mail:
        return patterns
    return [
        *patterns,
        path(
            "password_change/",
            counts_wrong_old_passwords(auth_views.PasswordChangeView.as_view()),
            name="password_change",
        ),
        path(
            "password_change/done/",
            auth_views.PasswordChangeDoneView.as_view(),
            name="password_change_done",
        ),
        path("password_reset/", PasswordResetView.as_view(), name="password_reset"),
        path(
            "password_reset/done/",
            auth_views.PasswordResetDoneView.as_view(),
            name="password_reset_done",
        ),
        path(
            "reset/<uidb64>/<token>/",
            auth_views.PasswordResetConfirmView.as_view(),
            name="password_reset_confirm",
        ),
        path(
            "reset/done/",
            auth_views.PasswordResetCompleteView.as_view(),
            name="password_reset_complete",
        ),
    ]


def admin_password_change() -> URLPattern:
    """The admin's own password change, counted like the site's. Listed before the admin's
    URLs, so it answers at the same path under the same name."""
    view = admin.site.admin_view(admin.site.password_change, cacheable=True)
    return path(
        "admin/password_change/", counts_wrong_old_passwords(view), name="admin-password-change"
    )


def mail_configured() -> bool:
    """EMAIL_URL gave Django a default mailer (qualifier/settings.py sets MAILERS only then)."""
    return hasattr(settings, "MAILERS") and "default" in settings.MAILERS
