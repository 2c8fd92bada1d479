"""A scorer for process tests: it kills its own process on the prospect named "Killer", as a
scorer that crashes its worker every time would (QUALIFIER_SCORER=tests.killer_scorer.scorer)."""

from __future__ import annotations

import os
import signal
from typing import Any

from qualifier.scoring import rule_based_scorer


def scorer(prospect: Any, criteria: Any) -> Any:
    if prospect.name == "Killer":
        os.kill(os.getpid(), signal.SIGKILL)
    return rule_based_scorer(prospect, criteria)
