"""The drill's scorer: the default one (after QUALIFIER_SCORING_DELAY_MS, as for demos), that
first notes each call in a file, so the drill can count the calls a fault wasted without
paying a real scorer for them."""

from __future__ import annotations

import os

from qualifier.criteria import Criteria
from qualifier.prospects import ProspectData
from qualifier.scoring import Score, rule_based_scorer

#: The environment variable naming the file the drill's workers note their calls in.
CALLS_FILE_ENV = "RECOVERY_DRILL_CALLS_FILE"


def counting_scorer(prospect: ProspectData, criteria: Criteria) -> Score:
    """Notes the call (the prospect's company names its run), then scores as the default."""
    path = os.environ.get(CALLS_FILE_ENV)
    if path:
        # O_APPEND: one short write per call lands whole, whichever process makes it.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, f"{prospect.company}\n".encode())
        finally:
            os.close(fd)
    return rule_based_scorer(prospect, criteria)


def count_calls(path: str) -> dict[str, int]:
    """Calls noted in `path`, by the company (run label) they were for."""
    counts: dict[str, int] = {}
    try:
        with open(path, encoding="utf-8") as calls:
            for line in calls:
                label = line.strip()
                counts[label] = counts.get(label, 0) + 1
    except FileNotFoundError:
        pass
    return counts
