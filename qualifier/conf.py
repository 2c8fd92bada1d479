"""The qualification settings, read lazily so that `override_settings` works in tests.

Values may come straight from the environment as strings; the `parse_*` functions turn them
into Python values and raise `ValueError` with a readable message, which `qualifier/checks.py`
reports by name at startup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from recovery.inputs import parse_whole_number

DEFAULTS: dict[str, Any] = {
    "QUALIFIER_MAX_PROSPECTS": 10_000,
    "QUALIFIER_MAX_EXTRA_COLUMNS": 50,
    "QUALIFIER_MAX_ACTIVE_RUNS_PER_USER": 5,
    "QUALIFIER_SCORER": "qualifier.scoring.rule_based_scorer",
    "QUALIFIER_SCORING_DELAY_MS": 0,
    "QUALIFIER_DEFAULT_CRITERIA": {},
}

#: Upper bounds that keep one run's work and memory within a worker's reach.
MAX_PROSPECTS_LIMIT = 1_000_000
MAX_EXTRA_COLUMNS_LIMIT = 1_000


def parse_max_prospects(value: Any) -> int:
    return parse_whole_number(value, minimum=1, maximum=MAX_PROSPECTS_LIMIT)


def parse_max_extra_columns(value: Any) -> int:
    return parse_whole_number(value, minimum=0, maximum=MAX_EXTRA_COLUMNS_LIMIT)


def parse_max_active_runs(value: Any) -> int:
    return parse_whole_number(value, minimum=1, maximum=10_000)


def parse_delay_ms(value: Any) -> int:
    return parse_whole_number(value, minimum=0, maximum=60_000)


def parse_dotted_path(value: Any) -> str:
    if not isinstance(value, str) or "." not in value.strip():
        raise ValueError(f"{value!r} is not a dotted path such as 'package.module.function'")
    return value.strip()


def parse_criteria_mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{value!r} is not a mapping of criteria fields to values")
    return value


def raw(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class QualifierSettings:
    """Typed access to the settings; the system checks guarantee they parse."""

    @property
    def QUALIFIER_MAX_PROSPECTS(self) -> int:
        return parse_max_prospects(raw("QUALIFIER_MAX_PROSPECTS"))

    @property
    def QUALIFIER_MAX_EXTRA_COLUMNS(self) -> int:
        """Unknown columns a CSV or a JSON item may bring (their values are kept as extra)."""
        return parse_max_extra_columns(raw("QUALIFIER_MAX_EXTRA_COLUMNS"))

    @property
    def QUALIFIER_MAX_ACTIVE_RUNS_PER_USER(self) -> int:
        """Pending or processing runs one user may have at once."""
        return parse_max_active_runs(raw("QUALIFIER_MAX_ACTIVE_RUNS_PER_USER"))

    @property
    def QUALIFIER_SCORER(self) -> str:
        return parse_dotted_path(raw("QUALIFIER_SCORER"))

    @property
    def QUALIFIER_SCORING_DELAY_MS(self) -> int:
        return parse_delay_ms(raw("QUALIFIER_SCORING_DELAY_MS"))

    @property
    def QUALIFIER_DEFAULT_CRITERIA(self) -> Mapping[str, Any]:
        return parse_criteria_mapping(raw("QUALIFIER_DEFAULT_CRITERIA"))


conf = QualifierSettings()
