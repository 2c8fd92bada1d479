"""The user's pages: runs, a new run, a run's results; and JSON-aware error pages."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt

from recovery.api import json_error

API_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: API clients get JSON that says what to send."""
    if _is_api(request):
        return json_error(
            403,
            f"CSRF verification failed ({reason}). Send the csrftoken cookie's value in an "
            "X-CSRFToken header with session-authenticated POST requests.",
        )
    return csrf.csrf_failure(request, reason=reason)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: JSON under /api/, Django's page elsewhere."""
    if _is_api(request):
        return json_error(500, "Internal server error; the error has been logged.")
    return defaults.server_error(request)


@csrf_exempt  # it only ever says "not found"
def api_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Every unknown URL under /api/ answers JSON, whatever the method."""
    return json_error(404, f"There is no API endpoint at {request.path}.")
