"""Scorers for the process tests of issue 14's defects, each set by QUALIFIER_SCORER. They
score like the default scorer (its QUALIFIER_SCORING_DELAY_MS included) and add one behaviour
that the test controls with files, so the test waits on events rather than on time:

- `crash`: when DEFECT_CRASH_FILE exists, the first executor to take it (an atomic rename)
  kills its own process with SIGKILL, as a crash would.
- `hang`: when DEFECT_HANG_FILE exists, the first executor to take it hangs in the scorer (a
  scorer call that never answers) until DEFECT_RELEASE_FILE exists, then scores as usual.
- `nul`: every reason contains a NUL byte (PostgreSQL cannot store one in text or jsonb).
- `clash`: on the prospect named "Clash", writes that prospect's result itself before
  answering, so the batch that holds it breaks the (run, prospect) constraint while the run is
  still this worker's: a database error that is no outage and no lost race.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from qualifier.scoring import Score, rule_based_scorer

#: A hang never outlives the test that asked for it.
MAX_HANG_SECONDS = 180


def _take(variable: str) -> bool:
    """Whether this process took the file named by `variable` (renamed to *.taken)."""
    path = os.environ.get(variable)
    if not path:
        return False
    try:
        os.rename(path, path + ".taken")
    except FileNotFoundError:
        return False
    return True


def crash(prospect: Any, criteria: Any) -> Any:
    if _take("DEFECT_CRASH_FILE"):
        os.kill(os.getpid(), signal.SIGKILL)
    return rule_based_scorer(prospect, criteria)


def hang(prospect: Any, criteria: Any) -> Any:
    if _take("DEFECT_HANG_FILE"):
        release = Path(os.environ["DEFECT_RELEASE_FILE"])
        deadline = time.monotonic() + MAX_HANG_SECONDS
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    return rule_based_scorer(prospect, criteria)


def nul(prospect: Any, criteria: Any) -> Any:
    score = rule_based_scorer(prospect, criteria)
    return Score(
        score=score.score,
        qualified=score.qualified,
        reasons=tuple(f"{reason}\x00(from a scorer that emits NUL)" for reason in score.reasons)
        or ("nul\x00byte",),
    )


def clash(prospect: Any, criteria: Any) -> Any:
    if prospect.name == "Clash":
        from qualifier.models import Outcome, Prospect, ProspectResult

        row = Prospect.objects.filter(name="Clash").order_by("-pk").first()
        if row is not None and not ProspectResult.objects.filter(prospect=row).exists():
            ProspectResult.objects.create(
                run_id=row.run_id, prospect=row, outcome=Outcome.NOT_QUALIFIED, score=0
            )
    return rule_based_scorer(prospect, criteria)
