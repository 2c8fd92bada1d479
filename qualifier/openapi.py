"""The qualification API's contract: an OpenAPI 3.1 document, kept beside the hand-written API.

It is built in Python so that every enum, limit and page size comes from the constants the
code itself uses (`RunStatus`, `RESULT_SORTS`, `POLICIES`, the settings' limits): when one
changes, the document follows. The tests check every JSON answer of the API against it
(`tests/contract.py`), and Schemathesis fuzzes a live server with it (`scripts/fuzz-api`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from common.inputs import MAX_BIGINT, MAX_DIGITS, MAX_LISTED
from common.jsonapi import MAX_JSON_DEPTH
from recovery.api import RECOVERY_LIST_LIMIT, RECOVERY_MAX_BODY_BYTES, RECOVERY_MAX_RUN_IDS
from recovery.conf import MAX_TIMEOUT_MINUTES, POLICIES
from recovery.models import RecoverySource, RunStatus
from recovery.outlook import RECOVERIES, STATES
from recovery.report import SkipReason

from .api import MAX_IDEMPOTENCY_KEY_LENGTH, RUNS_PAGE_SIZE
from .conf import conf
from .criteria import (
    LIST_FIELDS,
    MAX_DOMAIN_LENGTH,
    MAX_LIST_ITEMS,
    MAX_PHRASE_LENGTH,
    MAX_PROFILE_LENGTH,
)
from .criteria import MAX_EMPLOYEES as MAX_EMPLOYEE_BOUND
from .listings import RESULT_SORTS, RESULTS_PAGE_SIZE
from .models import Outcome
from .prospects import (
    KNOWN_COLUMNS,
    MAX_COLUMN_NAME_LENGTH,
    MAX_EMPLOYEES,
    MAX_EXTRA_VALUE_LENGTH,
    MAX_LENGTHS,
    REQUIRED_COLUMNS,
)

BASE = "/api/qualify"
JSON = "application/json"
#: Text the database can store: no NUL character anywhere.
STORABLE = "^[^\\u0000]*$"
#: The same, with at least one character that is not a space.
NOT_BLANK = "^[^\\u0000]*[^\\u0000\\s][^\\u0000]*$"
#: A domain (or a URL or email that holds one), or nothing.
DOMAIN = "^([^\\u0000]*[A-Za-z0-9-]\\.[A-Za-z0-9-][^\\u0000]*)?$"


def any_case(*words: str) -> str:
    """A pattern for `words` in any case (JSON Schema patterns have no case-insensitive flag)."""
    spelled = (
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else f"\\{c}" for c in word)
        for word in words
    )
    return "^(" + "|".join(spelled) + ")$"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [schema["type"], "null"]}


# --- schemas ------------------------------------------------------------------------------------

TIME = {"type": "string", "format": "date-time"}
PATH = {"type": "string", "description": "A path on this server."}
COUNT = {"type": "integer", "minimum": 0}


#: The schemas of answers: an answer always carries every field (null when it has no value)
#: and no other.
ANSWERS = (
    "Counts",
    "Run",
    "Outlook",
    "RunPage",
    "ActiveRuns",
    "Result",
    "ResultPage",
    "RunSnapshot",
    "RecoveredRun",
    "RecoveryReport",
)


def schemas() -> dict[str, Any]:
    return {
        name: {**schema, "required": list(schema["properties"]), "additionalProperties": False}
        if name in ANSWERS
        else schema
        for name, schema in _schemas().items()
    }


def _schemas() -> dict[str, Any]:
    def text_list(
        item_pattern: str = STORABLE, what: str = "", item_length: int = MAX_PHRASE_LENGTH
    ) -> dict[str, Any]:
        return {
            "type": ["array", "string", "null"],
            "items": {"type": "string", "maxLength": item_length, "pattern": item_pattern},
            "maxItems": MAX_LIST_ITEMS,
            "maxLength": MAX_PROFILE_LENGTH,
            "pattern": STORABLE,
            "description": f"A list{what}, or one comma-separated text; at most "
            f"{item_length} characters an item, and {MAX_PROFILE_LENGTH:,} in all the "
            "profile's lists together.",
        }

    bound = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_EMPLOYEE_BOUND}
    return {
        "Error": {
            "type": "object",
            "description": "Every error answer, whatever the status.",
            "required": ["error", "code", "fields"],
            "additionalProperties": False,
            "properties": {
                "error": {"type": "string", "description": "What went wrong, for people."},
                "code": {
                    "type": "string",
                    "pattern": "^[a-z][a-z0-9_]*$",
                    "description": "A stable, machine-readable name of the error, such as "
                    "`invalid`, `not_authenticated`, `run_not_found` or `run_not_continuable`: "
                    "match on this, never on `error`'s wording.",
                },
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "maxProperties": MAX_LISTED,
                    "description": "For input errors, what is wrong with each field "
                    "(`criteria.min_score`, `prospects[3].email`, `page`...); empty otherwise. "
                    f"At most {MAX_LISTED} fields are named: `error` then says how many more "
                    "there are. A body with far more unknown fields than known ones is refused "
                    "with a count instead.",
                },
            },
        },
        "Counts": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"qualified": COUNT, "not_qualified": COUNT, "errored": COUNT},
        },
        "Criteria": {
            "type": "object",
            "description": "The ideal-customer profile a run used (stored on the run).",
            "additionalProperties": False,
            "properties": {
                **{name: {"type": "array", "items": {"type": "string"}} for name in LIST_FIELDS},
                "min_employees": {"type": ["integer", "null"]},
                "max_employees": {"type": ["integer", "null"]},
                "min_score": {"type": "integer", "minimum": 0, "maximum": 100},
            },
        },
        "CriteriaOverrides": {
            "type": "object",
            "description": "Any of the profile's fields, each replacing the default for this "
            "run. An empty list means any. `min_employees` must not be above "
            "`max_employees`.",
            "additionalProperties": False,
            "properties": {
                **{name: text_list() for name in LIST_FIELDS},
                "excluded_domains": text_list(
                    DOMAIN, " of domains such as example.com", MAX_DOMAIN_LENGTH
                ),
                "min_employees": bound,
                "max_employees": bound,
                "min_score": {"type": "integer", "minimum": 0, "maximum": 100},
            },
        },
        "Prospect": {
            "type": "object",
            "description": "One prospect, with the CSV's column names (in any case, or a "
            "common spelling such as `E-Mail`, `Email Address`, `Company Name`, `Job Title`). "
            f"{' and '.join(REQUIRED_COLUMNS)} are required; any other key is kept as extra "
            "data (text, at most 1,000 characters each and 10,000 per prospect).",
            "required": list(REQUIRED_COLUMNS),
            "properties": {column: _prospect_field(column) for column in KNOWN_COLUMNS},
            "maxProperties": len(KNOWN_COLUMNS) + conf.QUALIFIER_MAX_EXTRA_COLUMNS,
            "propertyNames": {"maxLength": MAX_COLUMN_NAME_LENGTH, "pattern": STORABLE},
            "additionalProperties": {"maxLength": MAX_EXTRA_VALUE_LENGTH, "pattern": STORABLE},
        },
        "NewRun": {
            "type": "object",
            "required": ["prospects"],
            "additionalProperties": False,
            "properties": {
                "prospects": {
                    "type": "array",
                    "items": ref("Prospect"),
                    "minItems": 1,
                    "maxItems": conf.QUALIFIER_MAX_PROSPECTS,
                    "description": "At most QUALIFIER_MAX_PROSPECTS prospects (413 above).",
                },
                "criteria": ref("CriteriaOverrides"),
            },
        },
        "Run": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer", "minimum": 1},
                "status": {"type": "string", "enum": list(RunStatus.values)},
                "status_display": {"type": "string"},
                "total": COUNT,
                "completed": COUNT,
                "percent": {"type": "integer", "minimum": 0, "maximum": 100},
                "counts": ref("Counts"),
                "criteria": ref("Criteria"),
                "failure_reason": {"type": "string"},
                "created_at": TIME,
                "started_at": nullable(TIME),
                "heartbeat_at": nullable(TIME),
                "activity": {
                    "type": "string",
                    "description": "What an active run is doing, in words; empty once it "
                    "has finished.",
                },
                "last_activity_seconds": {"type": ["number", "null"]},
                "queued_seconds": {
                    "type": ["number", "null"],
                    "description": "How long a PENDING run has waited; null otherwise.",
                },
                "worker_responding": {"type": "boolean"},
                "outlook": ref("Outlook"),
                "completed_at": nullable(TIME),
                "duration_seconds": {"type": ["number", "null"]},
                "url": PATH,
                "results_url": PATH,
                "results_csv_url": PATH,
                "page_url": PATH,
            },
        },
        "Outlook": {
            "type": "object",
            "description": "What happens next to the run, from the liveness module: what is "
            "known, when recovery would come and what it would do. `text` says it in words; "
            "the other fields are its figures (null where they do not apply).",
            "properties": {
                "state": {"type": "string", "enum": list(STATES)},
                "summary": {"type": "string", "description": "One short line (`activity`)."},
                "text": {"type": "string"},
                "last_sign_of_life_seconds": nullable(COUNT),
                "worker": {
                    "type": ["string", "null"],
                    "description": "The worker executing it, as host:pid.",
                },
                "worker_beat_seconds": nullable(COUNT),
                "sweep_interval_seconds": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "description": "Seconds between sweeps; 0 when periodic sweeps are off.",
                },
                "recover_within_seconds": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "description": "At the latest, if no sign of life comes: until the "
                    "liveness rule finds it dead, plus one sweep interval.",
                },
                "recovery": {
                    "type": ["string", "null"],
                    "enum": [*RECOVERIES, None],
                    "description": "What recovery would do with it: resume, fail, quarantine "
                    "a prospect and resume, or give up (the crash-loop guard).",
                },
                "resume_at": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "description": "The prospect the next attempt starts at.",
                },
                "remaining": nullable(COUNT),
                "quarantined_prospect": {"type": ["integer", "null"], "minimum": 1},
                "deaths": COUNT,
                "max_deaths": COUNT,
                "place_in_line": {
                    "type": ["integer", "null"],
                    "minimum": 0,
                    "description": "Queued runs ahead of a queued run (0: it is next).",
                },
                "workers_alive": {
                    "type": ["boolean", "null"],
                    "description": "Whether any worker is alive (queued runs).",
                },
            },
        },
        "RunPage": _page(ref("Run"), f"{RUNS_PAGE_SIZE} runs per page, newest first."),
        "ActiveRuns": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"count": COUNT, "results": {"type": "array", "items": ref("Run")}},
        },
        "Result": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "position": {"type": "integer", "minimum": 1},
                **{
                    name: {"type": "string"}
                    for name in ("name", "company", "email", "domain", "title", "industry")
                },
                "employees": {"type": ["integer", "null"], "minimum": 0},
                "country": {"type": "string"},
                "extra": {"type": "object", "additionalProperties": {"type": "string"}},
                "outcome": {"type": "string", "enum": list(Outcome.values)},
                "score": {"type": ["integer", "null"], "minimum": 0, "maximum": 100},
                "reasons": {"type": "array", "items": {"type": "string"}},
                "error": {"type": "string"},
                "scored_at": TIME,
            },
        },
        "ResultPage": _page(
            ref("Result"),
            f"{RESULTS_PAGE_SIZE} results per page.",
            extra={"run": {"type": "integer", "description": "The run's id."}},
        ),
        "RecoveryOptions": {
            "type": "object",
            "additionalProperties": False,
            "description": "All optional: an empty body (or none) recovers with the "
            "server's settings.",
            # force needs run_ids: name the runs you know are dead.
            "if": {"required": ["force"], "properties": {"force": {"const": True}}},
            "then": {"required": ["run_ids"], "properties": {"run_ids": {"type": "array"}}},
            "properties": {
                "timeout_minutes": {
                    "type": ["integer", "null"],
                    "minimum": 1,
                    "maximum": MAX_TIMEOUT_MINUTES,
                    "description": "Minutes without progress after which a run is stuck.",
                },
                "run_ids": {
                    "type": ["array", "null"],
                    "items": {"type": "integer", "minimum": 1, "maximum": MAX_BIGINT},
                    "minItems": 1,
                    "maxItems": RECOVERY_MAX_RUN_IDS,
                    "description": "Only these runs.",
                },
                "force": {
                    "type": "boolean",
                    "description": "Recover the named runs even if they look alive "
                    "(needs `run_ids`).",
                },
                "policy": {
                    "type": ["string", "null"],
                    "pattern": any_case(*POLICIES),
                    "description": f"What to do with dead runs: {' or '.join(POLICIES)} "
                    "(any case); the server's RECOVERY_POLICY by default.",
                },
            },
        },
        "RunSnapshot": {
            "type": "object",
            "properties": _snapshot_properties(),
        },
        "RecoveredRun": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                **_snapshot_properties(),
                "previous_status": {"type": "string", "enum": list(RunStatus.values)},
                "new_status": {"type": "string", "enum": list(RunStatus.values)},
                "cause": {"type": "string"},
                "reason": {"type": "string"},
            },
        },
        "RecoveryReport": {
            "type": "object",
            "description": f"Lists stop at {RECOVERY_LIST_LIMIT} runs; the counts are exact.",
            "additionalProperties": False,
            "properties": {
                "timeout_minutes": {"type": "integer", "minimum": 1},
                "dry_run": {"type": "boolean", "description": "true for GET: nothing changed."},
                "force": {"type": "boolean"},
                "source": {"type": "string", "enum": list(RecoverySource.values)},
                "checked_at": TIME,
                "active_count": COUNT,
                "stuck_count": COUNT,
                "recovered_count": COUNT,
                "active": {"type": "array", "items": ref("RunSnapshot")},
                "stuck": {"type": "array", "items": ref("RunSnapshot")},
                "recovered": {"type": "array", "items": ref("RecoveredRun")},
                "skipped_reason": {
                    "type": "string",
                    "description": "Why the sweep did nothing (another sweep was running), "
                    "or empty.",
                },
                "locked_count": COUNT,
                "worker_timeout_seconds": COUNT,
                "policy": {"type": "string", "enum": list(POLICIES)},
                "skipped_runs": {
                    "type": "array",
                    "description": "Runs named in `run_ids` that were left alone, and why.",
                    "items": {
                        "type": "object",
                        "required": ["id", "reason"],
                        "additionalProperties": False,
                        "properties": {
                            "id": {"type": "integer"},
                            "reason": {"type": "string", "enum": [str(r) for r in SkipReason]},
                        },
                    },
                },
            },
        },
    }


def _prospect_field(column: str) -> dict[str, Any]:
    if column == "employees":
        return {
            "type": ["integer", "string", "null"],
            "minimum": 0,
            "maximum": MAX_EMPLOYEES,
            "pattern": "^\\s*[0-9]{0,9}\\s*$",
            "description": "A whole number, or digits as text (grouped by three with `,` "
            "or spaces also works); empty or null for unknown.",
        }
    # A number is kept as its text, as a CSV cell would be.
    if column in REQUIRED_COLUMNS:
        return {
            "type": ["string", "number"],
            "minLength": 1,
            "maxLength": MAX_LENGTHS[column],
            "pattern": NOT_BLANK,
        }
    return {
        "type": ["string", "number", "null"],
        "maxLength": MAX_LENGTHS[column],
        "pattern": STORABLE,
    }


def _snapshot_properties() -> dict[str, Any]:
    return {
        "id": {"type": "integer"},
        "status": {"type": "string", "enum": list(RunStatus.values)},
        "completed": COUNT,
        "total": COUNT,
        "age_minutes": COUNT,
        "heartbeat_at": nullable(TIME),
        "silent_minutes": COUNT,
    }


def _page(item: dict[str, Any], description: str, extra: dict | None = None) -> dict[str, Any]:
    link = {"type": ["string", "null"], "description": "The path of that page, or null."}
    properties = {
        "count": {**COUNT, "description": "Items on all pages."},
        "next": link,
        "previous": link,
        **(extra or {}),
        "results": {"type": "array", "items": item},
    }
    return {
        "type": "object",
        "description": description,
        "properties": properties,
    }


# --- parameters, headers, answers ---------------------------------------------------------------

PAGE = {
    "name": "page",
    "in": "query",
    "description": "Page number, from 1; a page past the last is a 404.",
    "schema": {"type": "integer", "minimum": 1, "maximum": 10**MAX_DIGITS - 1},
}
SORT = {
    "name": "sort",
    "in": "query",
    "description": "`score` lowest first, `-score` highest first (any case); errored results last.",
    "schema": {"type": "string", "pattern": any_case(*RESULT_SORTS)},
}
RUN_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "The run's id. Another user's run is a 404, like a missing one.",
    "schema": {"type": "integer", "minimum": 0},
}


def headers() -> dict[str, Any]:
    string = {"schema": {"type": "string"}}
    return {
        "Location": {"description": "The run's path in this API.", "required": True, **string},
        "Retry-After": {
            "description": "Seconds to wait (after too many failed tokens).",
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
        "WWW-Authenticate": {
            "description": "The authentication scheme to use.",
            "required": True,
            **string,
        },
        "Idempotent-Replayed": {
            "description": "`true`: the answer repeats the run an earlier request with this "
            "Idempotency-Key created.",
            "required": True,
            "schema": {"type": "string", "enum": ["true"]},
        },
        "Accept-Post": {"description": "The body format to use.", "required": True, **string},
        "Content-Disposition": {
            "description": "`attachment` with the file's name.",
            "required": True,
            **string,
        },
    }


def header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


#: The answers every operation may give, by status: what they mean and their headers.
ERRORS: dict[str, tuple[str, tuple[str, ...]]] = {
    "400": ("Bad input: `fields` names each problem (`code` is `invalid`), or malformed JSON.", ()),
    "401": ("Not authenticated: sign in, or send a valid bearer token.", ("WWW-Authenticate",)),
    "403": (
        "Not allowed: a session POST without the CSRF token, a user without the "
        "permission the operation needs, or the recovery API's operator token used elsewhere.",
        (),
    ),
    "404": (
        "No such run (or not yours; `run_not_found`, also for `run_ids` naming no run), or a "
        "page past the last (`page_not_found`).",
        (),
    ),
    "409": (
        "The run cannot be continued now (`run_not_continuable`), or the run an "
        "Idempotency-Key created is no longer yours (`idempotency_key_run_not_yours`).",
        (),
    ),
    "413": (
        "The body is over QUALIFIER_MAX_UPLOAD_BYTES (`body_too_large`), or has more than "
        "QUALIFIER_MAX_PROSPECTS prospects (`too_many_prospects`; a new run's body is "
        "refused as soon as it holds more JSON objects than that many prospects, its criteria "
        "and the body itself).",
        (),
    ),
    "415": ("The body is not sent as application/json.", ("Accept-Post",)),
    "422": ("This Idempotency-Key was used within the last day with another body.", ()),
    "429": (
        "Too many: runs pending or processing at once "
        "(QUALIFIER_MAX_ACTIVE_RUNS_PER_USER, `too_many_active_runs`), prospects submitted in "
        "the last 24 hours (QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY, `daily_prospect_limit`), "
        "or failed bearer tokens from your address (`throttled`, with Retry-After).",
        ("Retry-After",),
    ),
}


def error_answers(*statuses: str) -> dict[str, Any]:
    return {status: {"$ref": f"#/components/responses/{status}"} for status in statuses}


def answer(description: str, schema: str, *header_names: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": ref(schema)}},
    }
    if header_names:
        body["headers"] = {name: header(name) for name in header_names}
    if schema == "Run":
        body["links"] = run_links("$response.body#/id")
    if schema == "RunPage":
        body["links"] = run_links("$response.body#/results/0/id", "the page's first run")
    return body


def run_links(run_id: str, which: str = "the run") -> dict[str, Any]:
    """What a client can do next with a run it was given: a page of FAILED runs
    (`?status=failed`) leads to continuing one."""
    return {
        f"{name}{'' if which == 'the run' else 'FirstOnPage'}": {
            "operationId": operation,
            "parameters": {"id": run_id},
            "description": f"{verb} {which}.",
        }
        for name, operation, verb in (
            ("GetRun", "getRun", "Read"),
            ("ListRunResults", "listRunResults", "The results of"),
            ("ContinueRun", "continueRun", "Continue"),
        )
    }


def json_body(schema: str, *, required: bool = True, description: str = "") -> dict[str, Any]:
    return {
        "required": required,
        "description": description,
        "content": {JSON: {"schema": ref(schema)}},
    }


# --- the document -------------------------------------------------------------------------------

SESSION = "session"
CSRF_COOKIE, CSRF_HEADER = "csrfCookie", "csrfHeader"
BEARER = "bearer"
READ = [{SESSION: []}, {BEARER: []}]
WRITE = [{SESSION: [], CSRF_COOKIE: [], CSRF_HEADER: []}, {BEARER: []}]


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document, with the limits in force on this server."""
    continue_operation = {
        "tags": ["runs"],
        "parameters": [RUN_ID],
        "security": WRITE,
        "responses": {
            "200": answer("The same run, PENDING again.", "Run", "Location"),
            **error_answers("400", "401", "403", "404", "409", "413", "429"),
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "qualifier API",
            "version": "1",
            "description": (
                "Qualification runs: create them from a list of prospects, follow their "
                "progress, read their results, continue a failed one; and, for staff, "
                "recovery of stuck runs. Every answer is JSON, errors included "
                "(the `Error` schema). Lists are paginated with `?page=N` and links are "
                "paths on this server.\n\n"
                "Authenticate with a personal API token, `Authorization: Bearer <token>` "
                "(create one on the API tokens page; no CSRF needed), or with your session "
                "(sign in through the site; POST requests also send the `csrftoken` cookie's "
                "value in an `X-CSRFToken` header). This document is public: "
                "it holds no secrets."
            ),
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "runs", "description": "Your qualification runs."},
            {"name": "recovery", "description": "Stuck runs, for staff and operators."},
            {"name": "contract", "description": "This document."},
        ],
        "security": READ,
        "paths": {
            f"{BASE}/runs": {
                "get": {
                    "operationId": "listRuns",
                    "summary": "Your runs, newest first",
                    "tags": ["runs"],
                    "parameters": [
                        PAGE,
                        {
                            "name": "status",
                            "in": "query",
                            "description": f"Only runs in this status: "
                            f"{', '.join(RunStatus.values)} (any case).",
                            "schema": {"type": "string", "pattern": any_case(*RunStatus.values)},
                        },
                    ],
                    "responses": {
                        "200": answer("A page of runs.", "RunPage"),
                        **error_answers("400", "401", "403", "404", "429"),
                    },
                },
                "post": {
                    "operationId": "createRun",
                    "summary": "Create a run",
                    "description": "Stores the run and its prospects and queues it, in one "
                    "transaction. With an `Idempotency-Key`, repeating the request within a "
                    "day answers 200 with the run the first one created, as long as that run "
                    "is still yours: once an administrator has given it to another user, the "
                    "repeat answers 409 (`idempotency_key_run_not_yours`) and creates nothing.",
                    "tags": ["runs"],
                    "security": WRITE,
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "description": f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable "
                            "ASCII characters, e.g. a UUID; per user, remembered for a day.",
                            "schema": {
                                "type": "string",
                                "maxLength": MAX_IDEMPOTENCY_KEY_LENGTH,
                                "pattern": "^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$",
                            },
                        }
                    ],
                    "requestBody": json_body(
                        "NewRun",
                        description=f"At most QUALIFIER_MAX_UPLOAD_BYTES "
                        f"({conf.QUALIFIER_MAX_UPLOAD_BYTES:,} bytes here); objects and arrays "
                        f"nest at most {MAX_JSON_DEPTH} levels.",
                    ),
                    "responses": {
                        "201": answer("The new run, PENDING.", "Run", "Location"),
                        "200": answer(
                            "The run an earlier request with this Idempotency-Key created.",
                            "Run",
                            "Location",
                            "Idempotent-Replayed",
                        ),
                        **error_answers("400", "401", "403", "409", "413", "415", "422", "429"),
                    },
                },
            },
            f"{BASE}/runs/active": {
                "get": {
                    "operationId": "listActiveRuns",
                    "summary": "Your pending and processing runs, oldest first",
                    "tags": ["runs"],
                    "responses": {
                        "200": answer("Active runs with their progress.", "ActiveRuns"),
                        **error_answers("401", "403", "429"),
                    },
                }
            },
            f"{BASE}/runs/{{id}}": {
                "get": {
                    "operationId": "getRun",
                    "summary": "One run, with progress and counts",
                    "tags": ["runs"],
                    "parameters": [RUN_ID],
                    "responses": {
                        "200": answer("The run.", "Run"),
                        **error_answers("401", "403", "404", "429"),
                    },
                }
            },
            f"{BASE}/runs/{{id}}/results": {
                "get": {
                    "operationId": "listRunResults",
                    "summary": "A run's results",
                    "description": "In input order, or by score; errored results come last.",
                    "tags": ["runs"],
                    "parameters": [
                        RUN_ID,
                        PAGE,
                        SORT,
                    ],
                    "responses": {
                        "200": answer("A page of results.", "ResultPage"),
                        **error_answers("400", "401", "403", "404", "429"),
                    },
                }
            },
            f"{BASE}/runs/{{id}}/results.csv": {
                "get": {
                    "operationId": "downloadRunResults",
                    "summary": "A run's results as CSV",
                    "description": "The run page's Download CSV: one row per prospect of the "
                    "run, every column of the upload, then `domain`, `score`, `outcome`, "
                    "`reasons`, `error` (a prospect without a result, as in a failed run, has "
                    "the outcome `Not scored`). UTF-8 with a byte-order mark, in the upload's "
                    "delimiter (comma for JSON and Excel uploads); cells a spreadsheet would "
                    "run as formulas start with `'`.",
                    "tags": ["runs"],
                    "parameters": [RUN_ID, SORT],
                    "responses": {
                        "200": {
                            "description": "The CSV file, as an attachment.",
                            "headers": {"Content-Disposition": header("Content-Disposition")},
                            "content": {"text/csv": {}},
                        },
                        **error_answers("400", "401", "403", "404", "429"),
                    },
                }
            },
            f"{BASE}/runs/{{id}}/continue": {
                "post": {
                    **continue_operation,
                    "operationId": "continueRun",
                    "summary": "Continue a failed run in place",
                    "description": "The same run goes back to the queue and finishes the "
                    "prospects without a result; it is never executed twice.",
                }
            },
            f"{BASE}/openapi.json": {
                "get": {
                    "operationId": "getOpenAPI",
                    "summary": "This document",
                    "description": "Public: it holds no secrets.",
                    "tags": ["contract"],
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI 3.1 document.",
                            "content": {JSON: {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            f"{BASE}/recovery": {
                "get": {
                    "operationId": "showRecovery",
                    "summary": "Active and stuck runs (changes nothing)",
                    "tags": ["recovery"],
                    "description": "For staff with the view or change permission on runs, "
                    "or the recovery token.",
                    "parameters": [
                        {
                            "name": "timeout_minutes",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_TIMEOUT_MINUTES,
                            },
                        },
                        {
                            "name": "policy",
                            "in": "query",
                            "schema": {"type": "string", "pattern": any_case(*POLICIES)},
                        },
                    ],
                    "responses": {
                        "200": answer("What a sweep would do now.", "RecoveryReport"),
                        **error_answers("400", "401", "403", "429"),
                    },
                },
                "post": {
                    "operationId": "recover",
                    "summary": "Recover stuck runs now",
                    "tags": ["recovery"],
                    "description": "For staff with the change permission on runs, or the "
                    "recovery token.",
                    "security": WRITE,
                    "requestBody": json_body(
                        "RecoveryOptions",
                        required=False,
                        description=f"At most {RECOVERY_MAX_BODY_BYTES:,} bytes.",
                    ),
                    "responses": {
                        "200": answer("What the sweep did.", "RecoveryReport"),
                        **error_answers("400", "401", "403", "404", "413", "415", "429"),
                    },
                },
            },
        },
        "components": {
            "schemas": schemas(),
            "headers": headers(),
            "responses": {
                status: {
                    "description": description,
                    "content": {JSON: {"schema": ref("Error")}},
                    **({"headers": {name: header(name) for name in names}} if names else {}),
                }
                for status, (description, names) in ERRORS.items()
            },
            "securitySchemes": {
                SESSION: {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": settings.SESSION_COOKIE_NAME,
                    "description": "The session cookie of a signed-in user.",
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
                    "description": "...and its value in this header.",
                },
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A personal API token; on the recovery API, also "
                    "RECOVERY_API_TOKEN.",
                },
            },
        },
    }
