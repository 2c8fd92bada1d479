"""System checks for the qualification settings set in Python (settings.py reads the
environment's): a bad value stops every server and command with its name and a hint, instead
of failing a run later. No database access here."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from common.checks import Rules, check_value, check_values
from common.values import parse_bounded, parse_dotted_path
from recovery.checks import RULES as RECOVERY_RULES
from recovery.conf import MAX_RETENTION_DAYS
from recovery.conf import conf as recovery_conf

from .conf import (
    MAX_ACTIVE_RUNS_LIMIT,
    MAX_EXTRA_COLUMNS_LIMIT,
    MAX_PROSPECTS_LIMIT,
    MAX_PROSPECTS_PER_DAY_LIMIT,
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
    "QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY": (
        partial(parse_bounded, minimum=1, maximum=MAX_PROSPECTS_PER_DAY_LIMIT),
        "qualifier.E020",
        "Set it to the prospects one user may submit in 24 hours, e.g. 100000.",
    ),
    "QUALIFIER_RUN_RETENTION_DAYS": (
        partial(parse_bounded, minimum=1, maximum=MAX_RETENTION_DAYS),
        "qualifier.E021",
        "Set it to the days finished runs are kept before prune_runs deletes them, e.g. 90.",
    ),
}


def check_qualifier_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    return [
        *check_values(conf, RULES),
        *_check_scorer(),
        *_check_criteria(),
        *_check_events_outlive_runs(),
    ]


def _check_events_outlive_runs() -> list[CheckMessage]:
    """Recovery events are the audit trail: they are kept at least as long as the runs."""
    run_days = conf.QUALIFIER_RUN_RETENTION_DAYS
    event_days = recovery_conf.RECOVERY_EVENT_RETENTION_DAYS
    if check_value("QUALIFIER_RUN_RETENTION_DAYS", run_days, RULES["QUALIFIER_RUN_RETENTION_DAYS"]):
        return []  # each is reported on its own
    rule = RECOVERY_RULES["RECOVERY_EVENT_RETENTION_DAYS"]
    if check_value("RECOVERY_EVENT_RETENTION_DAYS", event_days, rule):
        return []
    if event_days >= run_days:
        return []
    return [
        Error(
            f"RECOVERY_EVENT_RETENTION_DAYS ({event_days}) is shorter than "
            f"QUALIFIER_RUN_RETENTION_DAYS ({run_days}).",
            hint="Recovery events are the audit trail: keep them at least as long as the runs "
            "they describe.",
            id="qualifier.E022",
        )
    ]


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


#: Caches that each process keeps for itself.
PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)


def check_shared_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The authentication throttle counts in the default cache: kept per process, N processes
    would allow N times AUTH_FAILURE_LIMIT (a deployment check: `check --deploy`)."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend not in PER_PROCESS_CACHES:
        return []
    return [
        Warning(
            f"The default cache ({backend.rsplit('.', 1)[-1]}) is kept per process: each "
            "server process counts failed sign-ins and API tokens on its own.",
            hint="Leave CACHE_URL unset (the database cache, created by migrate) or set it to "
            "a shared cache such as redis://host:6379/0.",
            id="qualifier.W001",
        )
    ]
