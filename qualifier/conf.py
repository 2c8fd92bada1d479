"""The qualification settings, read lazily so that `override_settings` works in tests.

Values may come straight from the environment as strings; the `parse_*` functions turn them
into Python values and raise `ValueError` with a readable message, which `qualifier/checks.py`
reports by name at startup.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "QUALIFIER_MAX_PROSPECTS": 10_000,
    "QUALIFIER_SCORER": "qualifier.scoring.rule_based_scorer",
    "QUALIFIER_SCORING_DELAY_MS": 0,
    "QUALIFIER_DEFAULT_CRITERIA": {},
}


def parse_whole_number(value: Any, *, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"{value!r} is not a whole number")
    if number < minimum:
        raise ValueError(f"{value!r} is less than {minimum}")
    return number


def parse_max_prospects(value: Any) -> int:
    return parse_whole_number(value, minimum=1)


def parse_delay_ms(value: Any) -> int:
    return parse_whole_number(value, minimum=0)


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
    def QUALIFIER_SCORER(self) -> str:
        return parse_dotted_path(raw("QUALIFIER_SCORER"))

    @property
    def QUALIFIER_SCORING_DELAY_MS(self) -> int:
        return parse_delay_ms(raw("QUALIFIER_SCORING_DELAY_MS"))

    @property
    def QUALIFIER_DEFAULT_CRITERIA(self) -> Mapping[str, Any]:
        return parse_criteria_mapping(raw("QUALIFIER_DEFAULT_CRITERIA"))


conf = QualifierSettings()
