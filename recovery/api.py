"""The recovery API: what is stuck, and recovering it, for staff and scripts.

`GET /api/qualify/recovery` shows the active and stuck runs and changes nothing;
`POST /api/qualify/recovery` recovers now. Both go through `recovery.sweep.recover_stuck_runs`
like every other entry point, and both are for staff: a staff user's session (with CSRF on
POST) or personal API token, or `Authorization: Bearer <RECOVERY_API_TOKEN>`, the operator's
token for scripts and cron (no CSRF with a token: no cookie is involved).

The JSON conventions it shares with the qualification API live in `common.jsonapi`; ninja
serves it (`common.apisite`) and documents it from `recovery.schemas`. The POST body is read
by `_recovery_options`, which keeps the rules JSON Schema cannot state in its words.
"""

from __future__ import annotations

from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Query, Router
from pydantic.json_schema import SkipJsonSchema

from common.apisite import READ, WRITE
from common.inputs import json_whole_number, listing, parse_ids, show
from common.jsonapi import (
    INVALID,
    SAFE_METHODS,
    ApiError,
    Caller,
    CallerAuth,
    bearer_caller,
    invalid,
    read_json_body,
    require_object,
    unknown_fields,
)
from common.schemas import error_answers, error_docs, read_with

from .conf import POLICIES, parse_timeout_minutes
from .models import RecoverySource
from .report import RecoveryReport
from .schemas import (
    POLICY_DESCRIPTION,
    RECOVERY_LIST_LIMIT,
    RECOVERY_MAX_RUN_IDS,
    TIMEOUT_DESCRIPTION,
    Policy,
    TimeoutMinutes,
)
from .schemas import RecoveryReport as RecoveryReportSchema
from .sweep import RecoveryInputError, UnknownRuns, recover_stuck_runs

#: The admin's permissions on runs, which the recovery API asks for too.
VIEW_PERMISSION = "recovery.view_qualificationrun"
CHANGE_PERMISSION = "recovery.change_qualificationrun"
#: A recovery request body is a few ids: anything larger is a mistake.
RECOVERY_MAX_BODY_BYTES = 1024 * 1024


def staff_caller(request: HttpRequest) -> Caller:
    """The operator token, or a staff user (by session or personal token) with the admin's
    permissions on runs.

    Reading (GET) needs the "view" or "change" permission on qualification runs, recovering
    (POST, force included) needs "change": the same as the admin's list and its actions,
    whether the user signed in or sent a personal token. RECOVERY_API_TOKEN is an operator's
    credential: it may do everything, and its events have no actor. Failed tokens are limited
    per client (429 with Retry-After, see `common.tokens`).
    """
    caller = bearer_caller(request)
    if caller is None:
        if not request.user.is_authenticated:
            raise ApiError(
                401,
                "Authentication required: sign in as a staff user, or send 'Authorization: "
                "Bearer <token>' with a staff user's personal API token or RECOVERY_API_TOKEN.",
                code="not_authenticated",
            )
        caller = Caller(request.user)
    if caller.is_operator:
        return caller
    user = caller.user
    if not user.is_staff:
        raise ApiError(403, "Only staff users may use the recovery API.", code="permission_denied")
    if request.method in SAFE_METHODS:
        if not (user.has_perm(VIEW_PERMISSION) or user.has_perm(CHANGE_PERMISSION)):
            raise ApiError(
                403,
                "Viewing runs needs the 'view' or 'change qualification run' permission.",
                code="permission_denied",
            )
    elif not user.has_perm(CHANGE_PERMISSION):
        raise ApiError(
            403,
            "Recovering runs needs the 'change qualification run' permission, as the admin's "
            "actions do.",
            code="permission_denied",
        )
    return caller


# --- the recovery endpoint --------------------------------------------------------------------


def _query_policy(value: Any) -> str:
    policy = _policy(value)
    if policy is None:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, not {show(value)}.")
    return policy


def _query_minutes(value: Any) -> int:
    try:
        return parse_timeout_minutes(value)
    except ValueError as exc:
        raise ValueError(f"timeout_minutes must be a whole number of minutes: {exc}.") from None


_TIMEOUT_FIELD = "A whole number of minutes greater than 0 (at most ten years)."
QueryMinutes = Annotated[
    TimeoutMinutes | SkipJsonSchema[None], read_with(_query_minutes, _TIMEOUT_FIELD)
]
QueryPolicy = Annotated[
    Policy | SkipJsonSchema[None], read_with(_query_policy, f"One of {', '.join(POLICIES)}.")
]
TIMEOUT = Query(None, description=TIMEOUT_DESCRIPTION, example=30)
POLICY = Query(None, description=POLICY_DESCRIPTION, example="resume")

router = Router(auth=CallerAuth(staff_caller), tags=["recovery"])


@router.get(
    "recovery",
    url_name="api",
    operation_id="showRecovery",
    summary="Active and stuck runs (changes nothing)",
    response={200: RecoveryReportSchema, **error_answers(400, 401, 403, 429)},
    openapi_extra={
        "security": READ,
        "responses": {
            200: {"description": "What a sweep would do now."},
            **error_docs(400, 401, 403, 429),
        },
    },
)
def show_recovery(
    request: HttpRequest,
    timeout_minutes: QueryMinutes = TIMEOUT,
    policy: QueryPolicy = POLICY,
) -> dict[str, Any]:
    """For staff with the view or change permission on runs, or the recovery token: what a
    sweep would do now (a dry run)."""
    options = {"timeout_minutes": timeout_minutes, "policy": policy}
    return _sweep(request.auth, options, dry_run=True).as_dict()


@router.post(
    "recovery",
    url_name="api",
    operation_id="recover",
    summary="Recover stuck runs now",
    response={200: RecoveryReportSchema, **error_answers(400, 401, 403, 404, 413, 415, 429)},
    openapi_extra={
        "security": WRITE,
        "requestBody": {
            "required": False,
            "description": f"At most {RECOVERY_MAX_BODY_BYTES:,} bytes.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/RecoveryOptions"}}
            },
        },
        "responses": {
            200: {"description": "What the sweep did."},
            **error_docs(400, 401, 403, 404, 413, 415, 429),
        },
    },
)
def recover(request: HttpRequest) -> dict[str, Any]:
    """For staff with the change permission on runs, or the recovery token: recover now."""
    return _sweep(request.auth, _recovery_options(request), dry_run=False).as_dict()


def _sweep(caller: Caller, options: dict[str, Any], *, dry_run: bool) -> RecoveryReport:
    try:
        return recover_stuck_runs(
            source=RecoverySource.API,
            actor=caller.actor,
            dry_run=dry_run,
            list_limit=RECOVERY_LIST_LIMIT,
            log=not dry_run,
            **options,
        )
    except UnknownRuns as exc:
        # Like a run of the user API that does not exist: 404, naming the field.
        message = f"No qualification run with id {listing(exc.run_ids, len(exc.run_ids))}."
        raise ApiError(404, message, {"run_ids": message}, code="run_not_found") from None
    except RecoveryInputError as exc:
        message = str(exc)
        raise ApiError(400, message[:1].upper() + message[1:] + ".", code=INVALID) from None


def _recovery_options(request: HttpRequest) -> dict[str, Any]:
    payload = read_json_body(request, max_bytes=RECOVERY_MAX_BODY_BYTES, default={})
    body = require_object(payload)
    options: dict[str, Any] = {}
    errors = unknown_fields(body, ("timeout_minutes", "run_ids", "force", "policy"))
    if body.get("timeout_minutes") is not None:
        minutes = body["timeout_minutes"]
        try:
            options["timeout_minutes"] = parse_timeout_minutes(json_whole_number(minutes))
        except ValueError:
            errors["timeout_minutes"] = _TIMEOUT_FIELD
    if body.get("run_ids") is not None:
        try:
            options["run_ids"] = parse_ids(body["run_ids"], max_items=RECOVERY_MAX_RUN_IDS)
        except ValueError as exc:
            errors["run_ids"] = f"{str(exc)[:1].upper()}{str(exc)[1:]}."
    if body.get("policy") is not None:
        policy = _policy(body["policy"])
        if policy is None:
            errors["policy"] = f"One of {', '.join(POLICIES)}."
        else:
            options["policy"] = policy
    if "force" in body:
        if not isinstance(body["force"], bool):
            errors["force"] = "true or false."
        else:
            options["force"] = body["force"]
    if options.get("force") and not options.get("run_ids") and "run_ids" not in errors:
        errors["run_ids"] = "Required with force: name the runs you know are dead."
    if errors:
        raise invalid(errors, "Invalid recovery options:")
    return options


def _policy(value: Any) -> str | None:
    """A policy name in any case ("Resume" is "resume"), or None when it is not one."""
    if isinstance(value, str) and value.lower() in POLICIES:
        return value.lower()
    return None
