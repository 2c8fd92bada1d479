"""The recovery API, and the JSON conventions it shares with the qualification API.

`GET /api/qualify/recovery` shows the active and stuck runs and changes nothing;
`POST /api/qualify/recovery` recovers now. Both go through `recovery.sweep.recover_stuck_runs`
like every other entry point, and both are for staff: a staff session (with CSRF on POST), or
`Authorization: Bearer <RECOVERY_API_TOKEN>` for scripts and cron (no CSRF: no cookie is
involved). Token authentication is off while the setting is empty.

The helpers here (`json_endpoint`, `ApiError`, `read_json_body`) live in the recovery app
because it is the lower layer: the qualification API in `qualifier.api` builds on them, so
both APIs answer every error the same way, as `{"error": "...", "fields": {...}}`.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from .conf import POLICIES, parse_timeout_minutes
from .inputs import parse_ids, parse_whole_number
from .models import RecoverySource
from .sweep import RecoveryInputError, recover_stuck_runs
from .throttle import API_TOKEN

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: The admin's permissions on runs, which the recovery API asks for too.
VIEW_PERMISSION = "recovery.view_qualificationrun"
CHANGE_PERMISSION = "recovery.change_qualificationrun"
#: The recovery API's lists of active and stuck runs stop here (the counts stay exact).
RECOVERY_LIST_LIMIT = 100
#: A recovery request body is a few ids: anything larger is a mistake.
RECOVERY_MAX_BODY_BYTES = 1024 * 1024
#: Most run ids one recovery request may name.
RECOVERY_MAX_RUN_IDS = 1_000
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


def staff_caller(request: HttpRequest) -> Caller:
    """A staff session with the admin's permissions on runs, or the recovery API token.

    Reading (GET) needs the "view" or "change" permission on qualification runs, recovering
    (POST, force included) needs "change": the same as the admin's list and its actions. The
    token is an operator's credential: it may do everything, and its events have no actor.
    Failed tokens are limited per client (429 with Retry-After).
    """
    token = getattr(settings, "RECOVERY_API_TOKEN", "") or ""
    challenge = {"WWW-Authenticate": 'Bearer realm="qualifier"'} if token else {}
    header = request.headers.get("Authorization", "")
    if header:
        retry_after = API_TOKEN.retry_after(request)
        if retry_after is not None:
            raise ApiError(
                429,
                f"Too many failed API tokens from your address; try again in {retry_after} s.",
                headers={"Retry-After": str(retry_after)},
            )
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            API_TOKEN.failed(request)
            raise ApiError(
                401, "Unsupported Authorization header: use 'Bearer <token>'.", headers=challenge
            )
        if not token:
            API_TOKEN.failed(request)
            raise ApiError(
                401,
                "Token authentication is off: RECOVERY_API_TOKEN is not set on the server.",
            )
        if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
            API_TOKEN.failed(request)
            raise ApiError(401, "Invalid API token.", headers=challenge)
        return Caller(None, by_token=True)
    if not request.user.is_authenticated:
        raise ApiError(
            401,
            "Authentication required: sign in as a staff user or send "
            "'Authorization: Bearer <RECOVERY_API_TOKEN>'.",
            headers=challenge,
        )
    if not request.user.is_staff:
        raise ApiError(403, "Only staff users may use the recovery API.")
    if request.method in SAFE_METHODS:
        allowed = request.user.has_perm(VIEW_PERMISSION) or request.user.has_perm(CHANGE_PERMISSION)
        if not allowed:
            raise ApiError(
                403, "Viewing runs needs the 'view' or 'change qualification run' permission."
            )
    elif not request.user.has_perm(CHANGE_PERMISSION):
        raise ApiError(
            403,
            "Recovering runs needs the 'change qualification run' permission, as the admin's "
            "actions do.",
        )
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


# --- the recovery endpoint --------------------------------------------------------------------


@json_endpoint("GET", "POST", auth=staff_caller)
def recovery(request: HttpRequest, caller: Caller) -> JsonResponse:
    """GET: what is active and what is stuck (a dry run). POST: recover now."""
    if request.method == "POST":
        options = _recovery_options(request)
        dry_run = False
    else:
        options = {"timeout_minutes": _query_minutes(request), "policy": _query_policy(request)}
        dry_run = True
    try:
        report = recover_stuck_runs(
            source=RecoverySource.API,
            actor=caller.actor,
            dry_run=dry_run,
            list_limit=RECOVERY_LIST_LIMIT,
            log=not dry_run,
            **options,
        )
    except RecoveryInputError as exc:
        message = str(exc)
        raise ApiError(400, message[:1].upper() + message[1:] + ".") from None
    return JsonResponse(report.as_dict())


def _query_policy(request: HttpRequest) -> str | None:
    policy = request.GET.get("policy")
    if policy is not None and policy not in POLICIES:
        raise ApiError(
            400,
            f"policy must be one of {', '.join(POLICIES)}.",
            {"policy": f"One of {', '.join(POLICIES)}."},
        )
    return policy


def _query_minutes(request: HttpRequest) -> int | None:
    raw = request.GET.get("timeout_minutes")
    if raw is None:
        return None
    try:
        return parse_timeout_minutes(raw)
    except ValueError as exc:
        raise ApiError(
            400,
            f"timeout_minutes must be a whole number of minutes: {exc}.",
            {"timeout_minutes": _TIMEOUT_FIELD},
        ) from None


_TIMEOUT_FIELD = "A whole number of minutes greater than 0 (at most ten years)."


def _recovery_options(request: HttpRequest) -> dict[str, Any]:
    payload = read_json_body(request, max_bytes=RECOVERY_MAX_BODY_BYTES, default={})
    body = require_object(payload, allowed=("timeout_minutes", "run_ids", "force", "policy"))
    options: dict[str, Any] = {}
    errors: dict[str, str] = {}
    if body.get("timeout_minutes") is not None:
        minutes = body["timeout_minutes"]
        try:
            if type(minutes) is not int:
                raise ValueError("not a number")  # "5" in JSON is a client's mistake
            options["timeout_minutes"] = parse_timeout_minutes(minutes)
        except ValueError:
            errors["timeout_minutes"] = _TIMEOUT_FIELD
    if body.get("run_ids") is not None:
        try:
            options["run_ids"] = parse_ids(body["run_ids"], max_items=RECOVERY_MAX_RUN_IDS)
        except ValueError as exc:
            errors["run_ids"] = f"{str(exc)[:1].upper()}{str(exc)[1:]}."
    if body.get("policy") is not None:
        if body["policy"] not in POLICIES:
            errors["policy"] = f"One of {', '.join(POLICIES)}."
        else:
            options["policy"] = body["policy"]
    if "force" in body:
        if not isinstance(body["force"], bool):
            errors["force"] = "true or false."
        else:
            options["force"] = body["force"]
    if errors:
        raise ApiError(400, "Invalid recovery options: " + _describe(errors), errors)
    if options.get("force") and not options.get("run_ids"):
        raise ApiError(
            400,
            "force needs run_ids: name the runs you know are dead.",
            {"run_ids": "Required with force."},
        )
    return options


def _describe(errors: Mapping[str, str]) -> str:
    return " ".join(f"{name}: {message}" for name, message in errors.items())
