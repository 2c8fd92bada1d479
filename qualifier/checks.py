"""System checks for the qualification settings set in Python (settings.py reads the
environment's): a bad value stops every server and command with its name and a hint, instead
of failing a run later. No database access here."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.core.checks import CheckMessage, Error
from django.utils.module_loading import import_string

from common.checks import Rules, check_values
from common.values import parse_bounded, parse_dotted_path

from .conf import (
    MAX_ACTIVE_RUNS_LIMIT,
    MAX_EXTRA_COLUMNS_LIMIT,
    MAX_PROSPECTS_LIMIT,
    MAX_SCORING_DELAY_MS,
    MAX_UPLOAD_BYTES_LIMIT,
    conf,
)
from .criteria import Criteria, CriteriaError

RULES: Rules = {
    "QUALIFIER_MAX_PROSPECTS": (
        partial(parse_bounded, minimum=1, maximum=MAX_PROSPECTS_LIMIT),
        "qualifier.E001",
        "Set it to a whole number of prospects greater than 0, e.g. 10000.",
    ),
    "QUALIFIER_SCORING_DELAY_MS": (
        partial(parse_bounded, minimum=0, maximum=MAX_SCORING_DELAY_MS),
        "qualifier.E004",
        "Set it to a whole number of milliseconds, 0 (the default) for no delay.",
    ),
    "QUALIFIER_MAX_EXTRA_COLUMNS": (
        partial(parse_bounded, minimum=0, maximum=MAX_EXTRA_COLUMNS_LIMIT),
        "qualifier.E006",
        "Set it to the number of unknown columns a run may keep, 0 to 1000, e.g. 50.",
    ),
    "QUALIFIER_MAX_ACTIVE_RUNS_PER_USER": (
        partial(parse_bounded, minimum=1, maximum=MAX_ACTIVE_RUNS_LIMIT),
        "qualifier.E007",
        "Set it to the number of pending or processing runs one user may have, e.g. 5.",
    ),
    "QUALIFIER_MAX_UPLOAD_BYTES": (
        partial(parse_bounded, minimum=1, maximum=MAX_UPLOAD_BYTES_LIMIT),
        "qualifier.E008",
        "Set it to the largest upload in bytes, 1 to 1073741824, e.g. 10485760 (10 MiB).",
    ),
}


def check_qualifier_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [*check_values(conf, RULES), *_check_scorer(), *_check_criteria()]


def _check_scorer() -> list[CheckMessage]:
    value = conf.QUALIFIER_SCORER
    hint = (
        "Name a callable (prospect, criteria) -> qualifier.scoring.Score by its dotted path, "
        "e.g. qualifier.scoring.rule_based_scorer (the default)."
    )
    try:
        scorer = import_string(parse_dotted_path(value))
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


def _describe(field: str, message: str) -> str:
    """The error with the field it is about ("criteria" is the profile as a whole)."""
    return message if field == "criteria" else f"{field}: {message}"


def _check_criteria() -> list[CheckMessage]:
    """The default criteria, judged by the criteria's own reader (the pages' and the API's)."""
    try:
        Criteria().with_overrides(conf.QUALIFIER_DEFAULT_CRITERIA)
    except CriteriaError as exc:
        return [
            Error(
                f"Setting QUALIFIER_DEFAULT_CRITERIA is invalid: {_describe(field, message)}.",
                hint="Give a mapping of criteria fields to values (lists as lists or "
                "comma-separated text; an employee bound of None means no bound).",
                id="qualifier.E005",
            )
            for field, message in exc.errors.items()
        ]
    return []
