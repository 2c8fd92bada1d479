"""The JSON conventions both APIs share: errors as `{"error": "...", "fields": {...}}`,
405/401/403/404 answered in JSON by `json_endpoint`, and bounded JSON bodies.

They live in the recovery app because it is the lower layer: `qualifier.api` builds on them,
and `recovery` never imports `qualifier`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from .inputs import parse_whole_number

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: JSON bodies nested deeper than this are refused: no request needs more than a few levels,
#: and deeper ones only cost recursion (Python's parser gives up near 1,000 levels).
MAX_JSON_DEPTH = 20
#: Digits of the longest whole number a JSON body may hold.
MAX_JSON_DIGITS = 100


@dataclass
class ApiError(Exception):
    """An error answer: raised anywhere below a `json_endpoint` view, rendered as JSON."""

    status: int
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message

    def response(self) -> JsonResponse:
        return json_error(self.status, self.message, self.fields, self.headers)


def json_error(
    status: int,
    message: str,
    fields: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = dict(fields)
    return JsonResponse(body, status=status, headers=dict(headers or {}))


@dataclass(frozen=True)
class Caller:
    """Who is calling: a session user, or a holder of the API token (no user)."""

    user: Any
    by_token: bool = False

    @property
    def actor(self) -> Any:
        return None if self.by_token else self.user


def session_caller(request: HttpRequest) -> Caller:
    if not request.user.is_authenticated:
        raise ApiError(401, "Authentication required: sign in first.")
    return Caller(request.user)


def _csrf_rejection(request: HttpRequest) -> HttpResponse | None:
    """CSRF protection for session-authenticated calls, applied after authentication so that
    an anonymous caller hears 401 rather than a CSRF complaint. A rejection is rendered by
    CSRF_FAILURE_VIEW, which answers JSON under /api/."""
    check = CsrfViewMiddleware(lambda _request: HttpResponse())
    return check.process_view(request, None, (), {})


def json_endpoint(
    *methods: str, auth: Callable[[HttpRequest], Caller] = session_caller
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Turns a function `view(request, caller, **kwargs)` into a JSON API view.

    It answers a method it does not take with 405 and an Allow header, authenticates through
    `auth` (401/403), checks CSRF for session callers on unsafe methods, and renders
    `ApiError` and `Http404` as JSON.
    """
    allowed = sorted({m.upper() for m in methods} | ({"HEAD"} if "GET" in methods else set()))

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in allowed:
                return json_error(
                    405,
                    f"Method {request.method} is not allowed here; use {' or '.join(allowed)}.",
                    headers={"Allow": ", ".join(allowed)},
                )
            try:
                caller = auth(request)
                if not caller.by_token and request.method not in SAFE_METHODS:
                    rejection = _csrf_rejection(request)
                    if rejection is not None:
                        return rejection
                return view(request, caller, *args, **kwargs)
            except ApiError as exc:
                return exc.response()
            except Http404 as exc:
                message = str(exc) if exc.args else "Not found."
                return json_error(404, message)

        # Authentication comes first, then CSRF for session callers (see _csrf_rejection).
        return csrf_exempt(wrapper)

    return decorate


_REQUIRED: Any = object()


def read_json_body(request: HttpRequest, *, max_bytes: int, default: Any = _REQUIRED) -> Any:
    """The parsed JSON body: 413 above `max_bytes`, 400 when it is not JSON.

    An empty body is a 400, or `default` when one is given.

    The body is read from the stream with our own bound (not `request.body`, which has
    Django's smaller DATA_UPLOAD_MAX_MEMORY_SIZE), so the limit is the one we document.
    """
    try:
        declared = parse_whole_number(request.headers.get("Content-Length") or 0, minimum=0)
    except ValueError:
        raise ApiError(400, "The Content-Length header is not a number.") from None
    if declared > max_bytes:
        raise ApiError(413, _too_large(declared, max_bytes))
    if request.content_type == "multipart/form-data":
        # A form post (e.g. a bare `curl -X POST -F ...`): fine when it carries nothing.
        if default is _REQUIRED or request.POST or request.FILES:
            raise ApiError(400, "Send the body as JSON (Content-Type: application/json).")
        return default
    raw = request.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, _too_large(len(raw), max_bytes))
    if not raw.strip():
        if default is _REQUIRED:
            raise ApiError(400, "The request body is empty: send a JSON object.")
        return default
    try:
        payload = json.loads(
            raw, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_short_int
        )
    except UnicodeDecodeError:
        raise ApiError(400, "Malformed JSON: the body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400, f"Malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except RecursionError:
        raise ApiError(400, _too_deep()) from None
    except ValueError as exc:
        # _short_int, _refuse_constant and _finite_float refuse long integers, NaN and
        # infinities, each in its own words.
        raise ApiError(400, f"Malformed JSON: {exc}") from None
    if _depth(payload) > MAX_JSON_DEPTH:
        raise ApiError(400, _too_deep())
    return payload


def _short_int(text: str) -> int:
    """No request needs a number of more than MAX_JSON_DIGITS digits; Python's int() refuses
    4,300 and more in its own words, and gets slow well before that."""
    digits = len(text.lstrip("-"))
    if digits > MAX_JSON_DIGITS:
        raise ValueError(f"a number has {digits:,} digits; at most {MAX_JSON_DIGITS} are allowed.")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows.")


def _finite_float(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]} is too large.")
    return number


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest in `value` (without recursion)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _too_deep() -> str:
    return f"Malformed JSON: arrays and objects nest more than {MAX_JSON_DEPTH} levels deep."


def _too_large(size: int, limit: int) -> str:
    return f"The request body is {size:,} bytes; the limit is {limit:,} bytes."


def require_object(
    payload: Any, *, allowed: Iterable[str], what: str = "The body"
) -> dict[str, Any]:
    """A JSON object with only known keys, or a 400 naming the unknown ones."""
    if not isinstance(payload, dict):
        raise ApiError(400, f"{what} must be a JSON object, not {_json_type(payload)}.")
    allowed = tuple(allowed)
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            f"Unknown field(s): {', '.join(unknown)}. Known fields: {', '.join(allowed)}.",
            {name: "Unknown field." for name in unknown},
        )
    return payload


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"
