"""The JSON APIs, mounted by the project under /api/qualify/: the user API's and the recovery
API's routers on one ninja API, its OpenAPI document at `openapi.json` (public: it holds no
secrets), and its Swagger UI at /docs/api/ (`qualifier.urls`)."""

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja import NinjaAPI, Swagger
from ninja.openapi.views import openapi_view
from ninja.responses import NinjaJSONEncoder

from common.apisite import JsonApi
from recovery import api as recovery_api
from recovery.schemas import RecoveryOptions

from . import api
from .schemas import NewRun

DESCRIPTION = """Qualification runs: create them from a list of prospects, follow their \
progress, read their results, continue a failed one; and, for staff, recovery of stuck runs. \
Every answer is JSON, errors included (the `Error` schema). Lists are paginated with \
`?page=N` and links are paths on this server.

Authenticate with a personal API token, `Authorization: Bearer <token>` (create one on the \
API tokens page; no CSRF needed), or with your session (sign in through the site; POST \
requests also send the `csrftoken` cookie's value in an `X-CSRFToken` header). On this page, \
"Try it out" uses your session (and its CSRF token), or the token you enter under \
"Authorize". This document is public: it holds no secrets."""


class SiteSwagger(Swagger):
    """ninja's Swagger UI, from ninja's own static files, inside the site's page (its header
    and navigation). Nothing comes from other hosts, so the site's Content-Security-Policy
    holds; no validator badge, which would fetch from validator.swagger.io."""

    template = "qualifier/api_docs.html"

    def render_page(self, request: HttpRequest, api: NinjaAPI, **kwargs: Any) -> HttpResponse:
        settings = {**self.settings, "url": self.get_openapi_url(api, kwargs)}
        context = {"swagger_settings": json.dumps(settings), "api": api, "nav": "api"}
        return render(request, self.template, context)


qualify_api = JsonApi(
    title="qualifier API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="qualifier-api",
    openapi_url="openapi.json",
    docs_url=None,
    docs=SiteSwagger(settings={"validatorUrl": None, "tryItOutEnabled": False}),
    # Paths are absolute: clients and fuzzers resolve them against this server.
    servers=[{"url": "/"}],
    schemas=(NewRun, RecoveryOptions),
    openapi_extra={
        "tags": [
            {"name": "runs", "description": "Your qualification runs."},
            {"name": "recovery", "description": "Stuck runs, for staff and operators."},
        ]
    },
)
qualify_api.add_router("", api.router)
qualify_api.add_router("", recovery_api.router)


def document() -> dict:
    """The OpenAPI document as served at /api/qualify/openapi.json (JSON types only)."""
    return json.loads(json.dumps(qualify_api.get_openapi_schema(), cls=NinjaJSONEncoder))


@login_required
def api_docs(request: HttpRequest) -> HttpResponse:
    """/docs/api/: ninja's Swagger UI of the document, for signed-in users ("Try it out" uses
    their session and CSRF token, or the bearer token they enter)."""
    return openapi_view(request, api=qualify_api)
