"""The qualification settings, read as plain attributes (`conf.QUALIFIER_MAX_PROSPECTS`) so
that `override_settings` works; their defaults (the only place they are written) and bounds.

settings.py types them from the environment; qualifier/checks.py judges values set in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

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

#: The queue `manage.py recovery_drill` gives its own runs to, and only its own workers take
#: from (settings.py lists it in the task backend's QUEUES).
DRILL_QUEUE = "recovery-drill"

#: Upper bounds that keep one run's work and memory within a worker's reach.
MAX_PROSPECTS_LIMIT = 1_000_000
MAX_EXTRA_COLUMNS_LIMIT = 1_000
MAX_UPLOAD_BYTES_LIMIT = 1024**3
MAX_ACTIVE_RUNS_LIMIT = 10_000
MAX_PROSPECTS_PER_DAY_LIMIT = 1_000_000_000
MAX_SCORING_DELAY_MS = 60_000


def _get(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])


class QualifierSettings:
    @property
    def QUALIFIER_MAX_UPLOAD_BYTES(self) -> int:
        """The largest CSV upload or JSON request body, in bytes."""
        return _get("QUALIFIER_MAX_UPLOAD_BYTES")

    @property
    def QUALIFIER_MAX_PROSPECTS(self) -> int:
        return _get("QUALIFIER_MAX_PROSPECTS")

    @property
    def QUALIFIER_MAX_EXTRA_COLUMNS(self) -> int:
        """Unknown columns a CSV or a JSON item may bring (their values are kept as extra)."""
        return _get("QUALIFIER_MAX_EXTRA_COLUMNS")

    @property
    def QUALIFIER_MAX_ACTIVE_RUNS_PER_USER(self) -> int:
        """Pending or processing runs one user may have at once."""
        return _get("QUALIFIER_MAX_ACTIVE_RUNS_PER_USER")

    @property
    def QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY(self) -> int:
        """Prospects one user may submit in any 24 hours, over all their runs."""
        return _get("QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY")

    @property
    def QUALIFIER_RUN_RETENTION_DAYS(self) -> int:
        """`prune_runs` deletes finished runs older than this, with prospects and results."""
        return _get("QUALIFIER_RUN_RETENTION_DAYS")

    @property
    def QUALIFIER_SCORER(self) -> str:
        return _get("QUALIFIER_SCORER")

    @property
    def QUALIFIER_SCORING_DELAY_MS(self) -> int:
        return _get("QUALIFIER_SCORING_DELAY_MS")

    @property
    def QUALIFIER_DEFAULT_CRITERIA(self) -> Mapping[str, Any]:
        return _get("QUALIFIER_DEFAULT_CRITERIA")


conf = QualifierSettings()
