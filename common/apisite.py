"""The django-ninja API that serves both JSON APIs under /api/qualify/: every answer in the one
shape of `common.jsonapi` (errors included, 405s too), each path with or without a trailing
slash, and the document's security schemes (a session with its CSRF token, or a bearer token).

`qualifier.api_urls` builds the one instance and mounts the user API's and the recovery API's
routers on it; the OpenAPI document ninja generates from their schemas is the contract the
tests and Schemathesis hold the answers to.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.urls import URLPattern, URLResolver, path
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, ValidationError
from pydantic import BaseModel

from .inputs import shown_name
from .jsonapi import ApiError, Rejected, invalid, json_error

SESSION = "session"
CSRF_COOKIE, CSRF_HEADER = "csrfCookie", "csrfHeader"
BEARER = "bearer"
#: Who may read: a signed-in session, or a bearer token.
READ: list[dict[str, list]] = [{SESSION: []}, {BEARER: []}]
#: Who may write: a session with its CSRF cookie and header, or a bearer token (no CSRF).
WRITE: list[dict[str, list]] = [{SESSION: [], CSRF_COOKIE: [], CSRF_HEADER: []}, {BEARER: []}]
#: The document is public: it holds no secrets, and clients and fuzzers fetch it.
PUBLIC: list[dict[str, list]] = []


#: Any operation: a request line longer than the server in front of the application accepts
#: (gunicorn's limit_request_line, 4,094 bytes) is refused by that server, in its own words.
URI_TOO_LONG: dict[str, Any] = {
    "description": "The request line is too long (over 4,094 bytes): the web server refuses it "
    "before the application sees it, with a short HTML page rather than JSON.",
}


def security_schemes() -> dict[str, Any]:
    """The schemes READ and WRITE name, with this server's cookie names."""
    return {
        SESSION: {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.SESSION_COOKIE_NAME,
            "description": "The session cookie of a signed-in user (the docs page sends it).",
        },
        CSRF_COOKIE: {
            "type": "apiKey",
            "in": "cookie",
            "name": settings.CSRF_COOKIE_NAME,
            "description": "With a session, POST requests send the CSRF cookie...",
        },
        CSRF_HEADER: {
            "type": "apiKey",
            "in": "header",
            "name": "X-CSRFToken",
            "description": "...and its value in this header (the docs page adds it).",
        },
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "A personal API token (create one on the API tokens page); on the "
            "recovery API, also RECOVERY_API_TOKEN.",
        },
    }


def no_endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Every unknown URL under /api/ answers JSON, whatever the method."""
    return json_error(404, f"There is no API endpoint at {request.path}.", code="no_endpoint")


def _field_name(location: tuple[Any, ...]) -> str:
    """`page` for ("query", "page"); `prospects[2].email` for a nested one."""
    name = ""
    for part in location[1:] or location:
        name += f"[{part}]" if isinstance(part, int) else f".{part}" if name else str(part)
    return shown_name(name)


def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """ninja's 422 for a parameter its schema refuses becomes our 400 `invalid`, each field
    with the reader's words; with one bad field, `error` is the reader's full sentence."""
    fields: dict[str, str] = {}
    details = []
    for error in exc.errors:
        fields.setdefault(_field_name(tuple(error.get("loc", ()))), str(error.get("msg", "")))
        detail = (error.get("ctx") or {}).get("detail")
        if detail:
            details.append(str(detail))
    if len(fields) == 1 and len(details) == 1:
        return ApiError(400, details[0], fields, code="invalid").response()
    return invalid(fields, "Invalid request:").response()


def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return json_error(404, str(exc) if exc.args else "Not found.")


def _reraise(request: HttpRequest, exc: Exception) -> HttpResponse:
    """A bug is Django's to answer (handler500 answers JSON under /api/) and to log."""
    raise exc


def _json_405(view: Callable[..., HttpResponse], only: frozenset[str] | None = None) -> Callable:
    """`view` with its refusals of a method in JSON (ninja's are text), HEAD answered as GET,
    and `only` these methods when the view itself does not check (the document's view)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        method = request.method or "GET"
        if only is not None and method not in only:
            response: HttpResponse = HttpResponseNotAllowed(sorted(only - {"HEAD"}))
        else:
            if method == "HEAD":
                request.method = "GET"
            response = view(request, *args, **kwargs)
            request.method = method
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        allowed = {name.strip() for name in response["Allow"].split(",") if name.strip()}
        allowed |= {"HEAD"} if "GET" in allowed else set()
        return json_error(
            405,
            f"Method {method[:20]} is not allowed here; use {' or '.join(sorted(allowed))}.",
            headers={"Allow": ", ".join(sorted(allowed))},
        )

    wrapper.csrf_exempt = True  # type: ignore[attr-defined]  # CallerAuth checks CSRF
    return wrapper


class JsonApi(NinjaAPI):
    """ninja, answering in our conventions (see the module's docstring)."""

    def __init__(self, *, schemas: Iterable[type[BaseModel]] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Schemas of the bodies the operations read themselves (their readers bound them
        #: while they stream in): the operations' requestBody refers to them by name.
        self.schemas = tuple(schemas)
        self.add_exception_handler(ApiError, lambda request, exc: exc.response())
        self.add_exception_handler(Rejected, lambda request, exc: exc.response)
        self.add_exception_handler(ValidationError, _validation_error)
        self.add_exception_handler(Http404, _not_found)
        self.add_exception_handler(
            AuthenticationError,
            lambda request, exc: json_error(401, "Authentication required."),
        )
        self.add_exception_handler(Exception, _reraise)

    def get_content_type(self) -> str:
        return "application/json"

    def get_openapi_schema(self, **kwargs: Any) -> Any:
        schema = super().get_openapi_schema(**kwargs)
        components = schema["components"]
        for model in self.schemas:
            found = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components["schemas"].update(found.pop("$defs", {}))
            components["schemas"][model.__name__] = found
        components["securitySchemes"] = security_schemes()
        schema["security"] = READ
        for operations in schema["paths"].values():
            for operation in operations.values():
                operation["responses"].setdefault("414", URI_TOO_LONG)
        return schema

    def _get_urls(self) -> list[URLPattern | URLResolver]:
        """ninja's patterns, each also with a trailing slash (`runs/` is not worth a 404, nor
        a redirect that would lose a POST's body), 405s in JSON, and the API's root an unknown
        URL like any other."""
        patterns = []
        for pattern in super()._get_urls():
            assert isinstance(pattern, URLPattern)
            route = str(pattern.pattern)
            if pattern.name == "api-root":
                patterns.append(path(route, no_endpoint, name=pattern.name))
                continue
            only = frozenset({"GET", "HEAD"}) if pattern.name == "openapi-json" else None
            view = _json_405(pattern.callback, only)
            patterns.append(path(route, view, name=pattern.name))
            patterns.append(path(f"{route}/", view))
        return patterns
