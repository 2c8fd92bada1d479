"""Middleware: no caching of private responses, and the sign-in throttle."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.auth.signals import user_login_failed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.cache import patch_cache_control

from common.throttle import SIGN_IN

from .accounts import too_many
from .errors import is_api

Handler = Callable[[HttpRequest], HttpResponse]


class PrivateResponsesMiddleware:
    """`Cache-Control: private, no-store` on every answer to a signed-in user and under /api/:
    they carry prospects, results and runs, which no shared cache or browser history should
    keep. (Static files are answered before this, by WhiteNoise, with their own headers.)"""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if is_api(request) or (user is not None and user.is_authenticated):
            patch_cache_control(response, private=True, no_store=True)
        return response


class SignInThrottleMiddleware:
    """Answers 429 with Retry-After to sign-in attempts (the site's and the admin's) from a
    client that failed too often; failures are counted from Django's user_login_failed."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response
        self._paths: frozenset[str] | None = None

    def sign_in_paths(self) -> frozenset[str]:
        if self._paths is None:
            self._paths = frozenset({reverse("login"), reverse("admin:login")})
        return self._paths

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST" and request.path in self.sign_in_paths():
            retry_after = SIGN_IN.retry_after(request)
            if retry_after is not None:
                return too_many(SIGN_IN, retry_after)
        return self.get_response(request)


@receiver(user_login_failed, dispatch_uid="qualifier.count_failed_sign_in")
def count_failed_sign_in(sender: Any, credentials: Any, request: Any = None, **kwargs: Any) -> None:
    if request is not None:
        SIGN_IN.count(request)
