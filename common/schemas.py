"""What both APIs' OpenAPI documents share: the `Error` schema, the error answers by status,
and parameters read by one of `common.inputs`' readers (ninja states the type and bounds in
the document; the reader keeps the rule and the words of its 400).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, Any

from ninja import Schema
from pydantic import BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from .inputs import MAX_LISTED

#: A time as ISO 8601, written as Python writes it (microseconds, +00:00).
Time = Annotated[
    dt.datetime,
    PlainSerializer(dt.datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Count = Annotated[int, Field(ge=0)]


class Answer(Schema):
    """An answer: it always carries every field (null when it has no value) and no other."""

    model_config = ConfigDict(extra="forbid", json_schema_mode_override="serialization")


class Error(Answer):
    """Every error answer, whatever the status."""

    error: str = Field(description="What went wrong, for people.")
    code: str = Field(
        pattern="^[a-z][a-z0-9_]*$",
        description="A stable, machine-readable name of the error, such as `invalid`, "
        "`not_authenticated`, `run_not_found` or `run_not_continuable`: match on this, never "
        "on `error`'s wording.",
    )
    fields: dict[str, str] = Field(
        max_length=MAX_LISTED,
        description="For input errors, what is wrong with each field (`criteria.min_score`, "
        f"`prospects[3].email`, `page`...); empty otherwise. At most {MAX_LISTED} fields are "
        "named: `error` then says how many more there are.",
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": "page must be a whole number from 1 up, not 'x'.",
                    "code": "invalid",
                    "fields": {"page": "A whole number from 1 up."},
                }
            ]
        }
    )


def any_case(*words: str) -> str:
    """A pattern for `words` in any case (JSON Schema patterns have no case-insensitive flag)."""
    spelled = (
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else f"\\{c}" for c in word)
        for word in words
    )
    return "^(" + "|".join(spelled) + ")$"


def read_with(reader: Callable[[Any], Any], hint: str) -> BeforeValidator:
    """A parameter read by `reader`, which raises ValueError with the sentence a 400 says;
    `hint` is what the answer's `fields` says of it."""

    def validate(value: Any) -> Any:
        try:
            return reader(value)
        except ValueError as exc:
            raise PydanticCustomError("invalid", hint, {"detail": str(exc)}) from None

    return BeforeValidator(validate)


#: What each error status means, for the document, and the headers it carries.
ERRORS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: ("Bad input: `fields` names each problem (`code` is `invalid`), or malformed JSON.", ()),
    401: ("Not authenticated: sign in, or send a valid bearer token.", ("WWW-Authenticate",)),
    403: (
        "Not allowed: a session POST without the CSRF token, a user without the permission "
        "the operation needs, or the recovery API's operator token used elsewhere.",
        (),
    ),
    404: (
        "No such run (or not yours; `run_not_found`, also for `run_ids` naming no run), or a "
        "page past the last (`page_not_found`).",
        (),
    ),
    409: (
        "The run cannot be continued now (`run_not_continuable`), or the run an "
        "Idempotency-Key created is no longer yours (`idempotency_key_run_not_yours`).",
        (),
    ),
    413: (
        "The body is over its byte limit (`body_too_large`), or has more than "
        "QUALIFIER_MAX_PROSPECTS prospects (`too_many_prospects`; a new run's body is refused "
        "as soon as it holds more JSON objects than that many prospects, its criteria and the "
        "body itself).",
        (),
    ),
    415: ("The body is not sent as application/json.", ("Accept-Post",)),
    422: ("This Idempotency-Key was used within the last day with another body.", ()),
    429: (
        "Too many: runs pending or processing at once (QUALIFIER_MAX_ACTIVE_RUNS_PER_USER, "
        "`too_many_active_runs`), prospects submitted in the last 24 hours "
        "(QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY, `daily_prospect_limit`), or failed bearer "
        "tokens from your address (`throttled`, with Retry-After).",
        ("Retry-After",),
    ),
}

HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "The run's path in this API.", "required": True},
    "Retry-After": {
        "description": "Seconds to wait (after too many failed tokens).",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    },
    "WWW-Authenticate": {"description": "The authentication scheme to use.", "required": True},
    "Idempotent-Replayed": {
        "description": "`true`: the answer repeats the run an earlier request with this "
        "Idempotency-Key created.",
        "required": True,
        "schema": {"type": "string", "enum": ["true"]},
    },
    "Accept-Post": {"description": "The body format to use.", "required": True},
    "Content-Disposition": {
        "description": "`attachment` with the file's name.",
        "required": True,
    },
}


def header(name: str) -> dict[str, Any]:
    return {"schema": {"type": "string"}, **HEADERS[name]}


def error_answers(*statuses: int) -> dict[int, type[Error]]:
    """ninja's `response=` entries for these error statuses."""
    return dict.fromkeys(statuses, Error)


def error_docs(*statuses: int) -> dict[int, dict[str, Any]]:
    """What the document says of these error statuses: meaning, headers and an example."""
    return {
        status: {
            "description": ERRORS[status][0],
            **(
                {"headers": {name: header(name) for name in ERRORS[status][1]}}
                if ERRORS[status][1]
                else {}
            ),
        }
        for status in statuses
    }
