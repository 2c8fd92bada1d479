"""System checks for the qualification settings: a bad value stops every server and command
with its name and a hint, instead of failing a run later. No database access here."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Error
from django.utils.module_loading import import_string

from .conf import (
    parse_criteria_mapping,
    parse_delay_ms,
    parse_dotted_path,
    parse_max_active_runs,
    parse_max_extra_columns,
    parse_max_prospects,
    parse_max_upload_bytes,
    raw,
)
from .criteria import Criteria, CriteriaError


def check_qualifier_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        *_check_value(
            "QUALIFIER_MAX_PROSPECTS",
            parse_max_prospects,
            "Set it to a whole number of prospects greater than 0, e.g. 10000.",
            "qualifier.E001",
        ),
        *_check_scorer(),
        *_check_value(
            "QUALIFIER_SCORING_DELAY_MS",
            parse_delay_ms,
            "Set it to a whole number of milliseconds, 0 (the default) for no delay.",
            "qualifier.E004",
        ),
        *_check_criteria(),
        *_check_value(
            "QUALIFIER_MAX_EXTRA_COLUMNS",
            parse_max_extra_columns,
            "Set it to the number of unknown columns a run may keep, 0 to 1000, e.g. 50.",
            "qualifier.E006",
        ),
        *_check_value(
            "QUALIFIER_MAX_ACTIVE_RUNS_PER_USER",
            parse_max_active_runs,
            "Set it to the number of pending or processing runs one user may have, e.g. 5.",
            "qualifier.E007",
        ),
        *_check_value(
            "QUALIFIER_MAX_UPLOAD_BYTES",
            parse_max_upload_bytes,
            "Set it to the largest upload in bytes, 1 to 1073741824, e.g. 10485760 (10 MiB).",
            "qualifier.E008",
        ),
    ]


def _check_value(name: str, parse: Any, hint: str, check_id: str) -> list[CheckMessage]:
    try:
        parse(raw(name))
    except ValueError as exc:
        return [Error(f"Setting {name} is invalid: {exc}.", hint=hint, id=check_id)]
    return []


def _check_scorer() -> list[CheckMessage]:
    value = raw("QUALIFIER_SCORER")
    hint = (
        "Name a callable (prospect, criteria) -> qualifier.scoring.Score by its dotted path, "
        "e.g. qualifier.scoring.rule_based_scorer (the default)."
    )
    try:
        path = parse_dotted_path(value)
        scorer = import_string(path)
    except (ValueError, ImportError) as exc:
        return [
            Error(
                f"Setting QUALIFIER_SCORER={value!r} cannot be imported: {exc}.",
                hint=hint,
                id="qualifier.E002",
            )
        ]
    if not callable(scorer):
        return [
            Error(
                f"Setting QUALIFIER_SCORER={value!r} names a {type(scorer).__name__}, "
                "which cannot be called.",
                hint=hint,
                id="qualifier.E003",
            )
        ]
    return []


#: The environment variable behind each default criterion (qualifier/settings.py).
CRITERIA_ENV = {
    "industries": "QUALIFIER_INDUSTRIES",
    "min_employees": "QUALIFIER_MIN_EMPLOYEES",
    "max_employees": "QUALIFIER_MAX_EMPLOYEES",
    "countries": "QUALIFIER_COUNTRIES",
    "title_keywords": "QUALIFIER_TITLE_KEYWORDS",
    "excluded_domains": "QUALIFIER_EXCLUDED_DOMAINS",
    "min_score": "QUALIFIER_MIN_SCORE",
}


def _describe(field: str, message: str) -> str:
    """The error with the field it is about ("criteria" is the profile as a whole)."""
    if field == "criteria":
        return message
    env_name = CRITERIA_ENV.get(field)
    where = f"{field} (environment variable {env_name})" if env_name else field
    return f"{where}: {message}"


def _check_criteria() -> list[CheckMessage]:
    hint = (
        "Fix the environment variable named above (lists are comma-separated, an empty "
        "employee bound means no bound), or QUALIFIER_DEFAULT_CRITERIA in the settings."
    )
    try:
        Criteria().with_overrides(parse_criteria_mapping(raw("QUALIFIER_DEFAULT_CRITERIA")))
    except CriteriaError as exc:
        return [
            Error(
                f"Setting QUALIFIER_DEFAULT_CRITERIA is invalid: {_describe(field, message)}.",
                hint=hint,
                id="qualifier.E005",
            )
            for field, message in exc.errors.items()
        ]
    except ValueError as exc:
        return [
            Error(
                f"Setting QUALIFIER_DEFAULT_CRITERIA is invalid: {exc}.",
                hint=hint,
                id="qualifier.E005",
            )
        ]
    return []
