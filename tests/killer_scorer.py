"""A scorer for process tests: it kills its own process on the prospect named "Killer", as a
scorer that crashes its worker every time would (QUALIFIER_SCORER=tests.killer_scorer.scorer).

With KILLER_CALLS_FILE set, every call appends the prospect's name to that file first (one
short O_APPEND write, whole even from several processes), so a test can count the calls that
were paid for and the ones that were wasted."""

from __future__ import annotations

import os
import signal
from typing import Any

from qualifier.scoring import rule_based_scorer


def scorer(prospect: Any, criteria: Any) -> Any:
    calls = os.environ.get("KILLER_CALLS_FILE")
    if calls:
        fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{prospect.name}\n".encode())
        finally:
            os.close(fd)
    if prospect.name == "Killer":
        os.kill(os.getpid(), signal.SIGKILL)
    return rule_based_scorer(prospect, criteria)
