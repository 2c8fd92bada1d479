"""The qualification settings: their defaults (the only place they are written), their
parsers, and the one object that reads them (`conf`).

Values may come straight from the environment as strings; the `parse_*` functions turn them
into Python values and raise `ValueError` with a readable message, which `qualifier/checks.py`
reports by name at startup. Each value is parsed once and kept; `override_settings` still works
in tests because Django's `setting_changed` signal clears what was kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

from recovery.conf import ParsedSettings, parse_retention_days
from recovery.inputs import parse_whole_number

#: The project's ideal-customer profile; each run may override any of it. Lists are
#: comma-separated; an empty employee bound means no bound.
DEFAULT_CRITERIA: dict[str, Any] = {
    "industries": "Software,SaaS,Information Technology,Fintech",
    "min_employees": 50,
    "max_employees": 5000,
    "countries": "",
    "title_keywords": "CEO,CTO,CFO,COO,CMO,CRO,Chief,Founder,Co-Founder,Owner,President,VP,"
    "Vice President,Head,Director",
    "excluded_domains": "",
    "min_score": 60,
}

DEFAULTS: dict[str, Any] = {
    "QUALIFIER_MAX_UPLOAD_BYTES": 10 * 1024 * 1024,
    "QUALIFIER_MAX_PROSPECTS": 10_000,
    "QUALIFIER_MAX_EXTRA_COLUMNS": 50,
    "QUALIFIER_MAX_ACTIVE_RUNS_PER_USER": 5,
    "QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY": 100_000,
    "QUALIFIER_RUN_RETENTION_DAYS": 90,
    "QUALIFIER_SCORER": "qualifier.scoring.rule_based_scorer",
    "QUALIFIER_SCORING_DELAY_MS": 0,
    "QUALIFIER_DEFAULT_CRITERIA": DEFAULT_CRITERIA,
}

#: Upper bounds that keep one run's work and memory within a worker's reach.
MAX_PROSPECTS_LIMIT = 1_000_000
MAX_EXTRA_COLUMNS_LIMIT = 1_000
MAX_UPLOAD_BYTES_LIMIT = 1024**3
MAX_PROSPECTS_PER_DAY_LIMIT = 1_000_000_000


def parse_max_upload_bytes(value: Any) -> int:
    return parse_whole_number(value, minimum=1, maximum=MAX_UPLOAD_BYTES_LIMIT)


def parse_max_prospects(value: Any) -> int:
    return parse_whole_number(value, minimum=1, maximum=MAX_PROSPECTS_LIMIT)


def parse_max_extra_columns(value: Any) -> int:
    return parse_whole_number(value, minimum=0, maximum=MAX_EXTRA_COLUMNS_LIMIT)


def parse_max_active_runs(value: Any) -> int:
    return parse_whole_number(value, minimum=1, maximum=10_000)


def parse_max_prospects_per_day(value: Any) -> int:
    return parse_whole_number(value, minimum=1, maximum=MAX_PROSPECTS_PER_DAY_LIMIT)


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


PARSERS = {
    "QUALIFIER_MAX_UPLOAD_BYTES": parse_max_upload_bytes,
    "QUALIFIER_MAX_PROSPECTS": parse_max_prospects,
    "QUALIFIER_MAX_EXTRA_COLUMNS": parse_max_extra_columns,
    "QUALIFIER_MAX_ACTIVE_RUNS_PER_USER": parse_max_active_runs,
    "QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY": parse_max_prospects_per_day,
    "QUALIFIER_RUN_RETENTION_DAYS": parse_retention_days,
    "QUALIFIER_SCORER": parse_dotted_path,
    "QUALIFIER_SCORING_DELAY_MS": parse_delay_ms,
    "QUALIFIER_DEFAULT_CRITERIA": parse_criteria_mapping,
}


def raw(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class QualifierSettings(ParsedSettings):
    """Typed access to the settings, each parsed once; the system checks guarantee they parse."""

    def __init__(self) -> None:
        super().__init__(PARSERS, DEFAULTS)

    @property
    def QUALIFIER_MAX_UPLOAD_BYTES(self) -> int:
        """The largest CSV upload or JSON request body, in bytes."""
        return self._get("QUALIFIER_MAX_UPLOAD_BYTES")

    @property
    def QUALIFIER_MAX_PROSPECTS(self) -> int:
        return self._get("QUALIFIER_MAX_PROSPECTS")

    @property
    def QUALIFIER_MAX_EXTRA_COLUMNS(self) -> int:
        """Unknown columns a CSV or a JSON item may bring (their values are kept as extra)."""
        return self._get("QUALIFIER_MAX_EXTRA_COLUMNS")

    @property
    def QUALIFIER_MAX_ACTIVE_RUNS_PER_USER(self) -> int:
        """Pending or processing runs one user may have at once."""
        return self._get("QUALIFIER_MAX_ACTIVE_RUNS_PER_USER")

    @property
    def QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY(self) -> int:
        """Prospects one user may submit in any 24 hours, over all their runs."""
        return self._get("QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY")

    @property
    def QUALIFIER_RUN_RETENTION_DAYS(self) -> int:
        """`prune_runs` deletes finished runs older than this, with prospects and results."""
        return self._get("QUALIFIER_RUN_RETENTION_DAYS")

    @property
    def QUALIFIER_SCORER(self) -> str:
        return self._get("QUALIFIER_SCORER")

    @property
    def QUALIFIER_SCORING_DELAY_MS(self) -> int:
        return self._get("QUALIFIER_SCORING_DELAY_MS")

    @property
    def QUALIFIER_DEFAULT_CRITERIA(self) -> Mapping[str, Any]:
        return self._get("QUALIFIER_DEFAULT_CRITERIA")


conf = QualifierSettings()
