"""The JSON conventions both APIs share: errors as
`{"error": "<message>", "code": "<stable code>", "fields": {...}}`, callers by session or bearer
token (`common.tokens`, `CallerAuth`), and bounded JSON bodies sent as application/json (415
otherwise).

Both `qualifier.api` and `recovery.api` build on them; `common.apisite` serves them with ninja.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware

from .inputs import MAX_LISTED, parse_whole_number, shown_name
from .tokens import BearerRefused, Refusal, authenticate_bearer

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: What every 401 of both APIs asks for (RFC 6750).
CHALLENGE = 'Bearer realm="qualifier"'
#: JSON bodies nested deeper than this are refused: no request needs more than a few levels,
#: and deeper ones only cost recursion (Python's parser gives up near 1,000 levels).
MAX_JSON_DEPTH = 20
#: Digits of the longest whole number a JSON body may hold.
MAX_JSON_DIGITS = 100


#: The machine-readable `code` of an error answer when the raiser names no more precise one.
#: Clients may rely on every code here and on the precise ones the endpoints document.
DEFAULT_CODES: dict[int, str] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "throttled",
    500: "server_error",
}
#: A 400 whose `fields` name what is wrong with the request.
INVALID = "invalid"


@dataclass
class ApiError(Exception):
    """An error answer: raised anywhere in an API operation (or its auth), rendered as JSON
    by `common.apisite.JsonApi`.

    `code` is the stable, machine-readable name of the error (the status's default from
    DEFAULT_CODES unless given); `message` is for people and may change wording.
    """

    status: int
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    code: str = ""

    def __str__(self) -> str:
        return self.message

    def response(self) -> JsonResponse:
        return json_error(self.status, self.message, self.fields, self.headers, code=self.code)


def json_error(
    status: int,
    message: str,
    fields: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    code: str = "",
) -> JsonResponse:
    """The one shape of every error answer: `error`, `code` and `fields` (empty when the
    error is not about particular fields). Every 401 names the scheme to use (RFC 9110),
    Bearer (RFC 6750)."""
    body: dict[str, Any] = {
        "error": message,
        "code": code or DEFAULT_CODES.get(status, "error"),
        "fields": dict(fields or {}),
    }
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", CHALLENGE)
    return JsonResponse(body, status=status, headers=headers)


@dataclass(frozen=True)
class Caller:
    """Who is calling: a user (by session, or by personal token), or the holder of the
    operator token RECOVERY_API_TOKEN (no user). Token callers need no CSRF token: a browser
    never adds an Authorization header to a cross-site request by itself, as it does cookies."""

    user: Any
    by_token: bool = False

    @property
    def actor(self) -> Any:
        """The user that audit events record: None only for the operator token."""
        return self.user

    @property
    def is_operator(self) -> bool:
        return self.by_token and self.user is None


def bearer_caller(request: HttpRequest) -> Caller | None:
    """The caller named by `Authorization: Bearer`, or None without that header; 401 for a
    malformed header or a wrong token, 429 for a client that failed too often."""
    try:
        bearer = authenticate_bearer(request)
    except BearerRefused as exc:
        raise _bearer_refusal(exc) from None
    return None if bearer is None else Caller(bearer.user, by_token=True)


def _bearer_refusal(exc: BearerRefused) -> ApiError:
    if exc.refusal is Refusal.THROTTLED:
        return ApiError(
            429,
            f"Too many failed API tokens from your address; try again in {exc.retry_after} s.",
            headers={"Retry-After": str(exc.retry_after)},
            code="throttled",
        )
    if exc.refusal is Refusal.MALFORMED:
        # No bearer token was presented at all, so the challenge carries no error (RFC 6750).
        return ApiError(
            401,
            "Unsupported Authorization header: use 'Bearer <token>'.",
            code="not_authenticated",
        )
    return ApiError(
        401,
        "Invalid API token.",
        headers={"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'},
        code="invalid_token",
    )


def user_caller(request: HttpRequest) -> Caller:
    """A user, by personal API token (no CSRF) or by session (CSRF on unsafe methods)."""
    caller = bearer_caller(request)
    if caller is not None:
        if caller.is_operator:
            raise ApiError(
                403,
                "RECOVERY_API_TOKEN is for the recovery API only; use a personal API token here.",
                code="permission_denied",
            )
        return caller
    if not request.user.is_authenticated:
        raise ApiError(
            401,
            "Authentication required: sign in, or send 'Authorization: Bearer <token>' with a "
            "personal API token.",
            code="not_authenticated",
        )
    return Caller(request.user)


class Rejected(Exception):
    """A refusal that is already an answer (CSRF_FAILURE_VIEW's)."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status_code)
        self.response = response


def _check_csrf(request: HttpRequest) -> None:
    """CSRF protection for session-authenticated calls, applied after authentication so that
    an anonymous caller hears 401 rather than a CSRF complaint. A rejection is rendered by
    CSRF_FAILURE_VIEW, which answers JSON under /api/."""
    check = CsrfViewMiddleware(lambda _request: HttpResponse())
    rejection = check.process_view(request, None, (), {})
    if rejection is not None:
        raise Rejected(rejection)


class CallerAuth:
    """ninja's `auth` for both APIs: `find_caller` (a user by token or session, or more) names
    the caller or raises ApiError (401/403/429), then a session caller's unsafe request must
    carry the CSRF token. ninja stores the Caller as `request.auth`.

    The document's security schemes are the API's (see `JsonApi`), not this class's: ninja
    describes one scheme per auth object, and a session with CSRF is three.
    """

    #: Tells ninja's Swagger UI to send the page's CSRF token with "Try it out".
    csrf = True

    def __init__(self, find_caller: Callable[[HttpRequest], Caller]) -> None:
        self.find_caller = find_caller

    def __call__(self, request: HttpRequest) -> Caller:
        caller = self.find_caller(request)
        if not caller.by_token and request.method not in SAFE_METHODS:
            _check_csrf(request)
        return caller


_REQUIRED: Any = object()


@dataclass(frozen=True)
class ObjectLimit:
    """The most JSON objects a body may hold, counted while it is parsed: a body of a million
    empty objects is refused at the first one too many, not after all were built. The 413
    says `why` there are so few (e.g. "a run takes at most 10,000 prospects") with `code`."""

    count: int
    why: str
    code: str = "too_many_objects"


def _counting_objects(limit: ObjectLimit) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A json object_pairs_hook that stops the parser with a 413 at the object after the
    limit's count (the parser lets the hook's exception through)."""
    count = 0

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal count
        count += 1
        if count > limit.count:
            raise ApiError(
                413,
                f"The body holds more than {limit.count:,} JSON objects: {limit.why}.",
                code=limit.code,
            )
        return dict(pairs)

    return hook


def read_json_body(
    request: HttpRequest,
    *,
    max_bytes: int,
    objects: ObjectLimit | None = None,
    default: Any = _REQUIRED,
) -> Any:
    """The parsed JSON body: 413 above `max_bytes` or with more JSON objects than `objects`
    allows, 400 when it is not JSON.

    An empty body is a 400, or `default` when one is given.

    The body is read from the stream with our own bound (not `request.body`, which has
    Django's smaller DATA_UPLOAD_MAX_MEMORY_SIZE), so the limit is the one we document.
    """
    try:
        declared = parse_whole_number(request.headers.get("Content-Length") or 0, minimum=0)
    except ValueError:
        raise ApiError(400, "The Content-Length header is not a number.") from None
    if declared > max_bytes:
        raise ApiError(413, _too_large(declared, max_bytes), code="body_too_large")
    if request.content_type == "multipart/form-data":
        # A form post (e.g. a bare `curl -X POST -F ...`): fine when it carries nothing.
        if default is _REQUIRED or request.POST or request.FILES:
            raise _unsupported_media_type(request)
        return default
    raw = request.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, _too_large(len(raw), max_bytes), code="body_too_large")
    if not raw.strip():
        if default is _REQUIRED:
            raise ApiError(400, "The request body is empty: send a JSON object.", code="empty_body")
        return default
    if not is_json_content_type(request.content_type):
        # A body in another format (a form, plain text, or none named) is not read as JSON.
        raise _unsupported_media_type(request)
    try:
        payload = json.loads(
            raw,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            parse_int=_short_int,
            object_pairs_hook=None if objects is None else _counting_objects(objects),
        )
    except UnicodeDecodeError:
        raise _malformed("the body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise _malformed(f"{exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
    except RecursionError:
        raise _malformed(_too_deep()) from None
    except ValueError as exc:
        # _short_int, _refuse_constant and _finite_float refuse long integers, NaN and
        # infinities, each in its own words.
        raise _malformed(str(exc)) from None
    if _depth(payload) > MAX_JSON_DEPTH:
        raise _malformed(_too_deep())
    return payload


def is_json_content_type(content_type: str) -> bool:
    """application/json, or a JSON-based type such as application/merge-patch+json."""
    content_type = content_type.lower()
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _unsupported_media_type(request: HttpRequest) -> ApiError:
    sent = request.content_type or "none"
    return ApiError(
        415,
        f"The body must be JSON sent with Content-Type: application/json (the request said "
        f"{sent[:100]!r}).",
        headers={"Accept-Post": "application/json"},
        code="unsupported_media_type",
    )


def _malformed(detail: str) -> ApiError:
    return ApiError(400, f"Malformed JSON: {detail}", code="malformed_json")


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
        # Only containers are kept: a list of millions of numbers is one pass, not a stack.
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _too_deep() -> str:
    return f"arrays and objects nest more than {MAX_JSON_DEPTH} levels deep."


def _too_large(size: int, limit: int) -> str:
    return f"The request body is {size:,} bytes; the limit is {limit:,} bytes."


def require_object(payload: Any, *, what: str = "The body") -> dict[str, Any]:
    """The payload when it is a JSON object, else a 400 that says what it is."""
    if not isinstance(payload, dict):
        raise ApiError(
            400, f"{what} must be a JSON object, not {_json_type(payload)}.", code=INVALID
        )
    return payload


def unknown_fields(body: Mapping[str, Any], allowed: Iterable[str]) -> dict[str, str]:
    """Field errors for the keys of `body` that are not `allowed`: reported with the other
    bad fields of the request, so one answer names everything to fix.

    An object with far more keys than there are fields (MAX_LISTED more) is refused at once
    with a 400 that counts them, before any message is built for each."""
    allowed = tuple(allowed)
    known = f"Unknown field; the known fields are {', '.join(allowed)}."
    if len(body) > len(allowed) + MAX_LISTED:
        raise ApiError(
            400,
            f"The body has {len(body):,} fields; the known fields are {', '.join(allowed)}.",
            code=INVALID,
        )
    return {shown_name(name): known for name in sorted(set(body) - set(allowed), key=str)}


def invalid(errors: Mapping[str, str], what: str) -> ApiError:
    """A 400 naming the bad fields: `what` went wrong, then each field and its problem; the
    first MAX_LISTED of them, and how many more there are."""
    listed = dict(islice(errors.items(), MAX_LISTED))
    summary = " ".join(f"{name}: {text}" for name, text in listed.items())
    more = len(errors) - len(listed)
    if more:
        summary += f" And {more:,} more {'field' if more == 1 else 'fields'}, not listed."
    return ApiError(400, f"{what} {summary}", listed, code=INVALID)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return "a number"
