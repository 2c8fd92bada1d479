"""Error answers and error reports: JSON under /api/, pages elsewhere, secrets kept out.

`handler400` turns Django's own refusals of a request (a form-encoded body over
DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields, a bad Host header) into JSON for API clients.
`SafeExceptionReporterFilter` is the DEBUG error page's filter: it also hides passwords
inside URLs such as DATABASE_URL, which runserver shows among the request's environment.
"""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import (
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.http import HttpRequest, HttpResponse
from django.views import defaults
from django.views.debug import SafeExceptionReporterFilter

from common.jsonapi import json_error

from .environment import hide_url_password

API_PREFIX = "/api/"


def is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: JSON under /api/ (413 for a body over the limit), Django's page elsewhere."""
    if not is_api(request):
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        return json_error(
            413,
            "The request body is too large for a form-encoded request. Send JSON "
            "(Content-Type: application/json).",
            code="body_too_large",
        )
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        return json_error(400, "The request has too many fields. Send JSON instead.")
    return json_error(400, "Bad request.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403: JSON under /api/, Django's page elsewhere."""
    if is_api(request):
        return json_error(403, "You do not have permission to do this.")
    return defaults.permission_denied(request, exception)


class UrlPasswordFilter(SafeExceptionReporterFilter):
    """Django's filter (keys like PASSWORD, TOKEN, SECRET are hidden), plus any URL's
    password, wherever it appears: settings, the environment, request headers."""

    hidden_settings = re.compile(
        r"API|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|DATABASE_URL", flags=re.IGNORECASE
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        return hide_url_password(super().cleanse_setting(key, value))
