"""The default scorer, counting its calls in a file (BENCH_SCORER_CALLS), for bench/resume.py:
a prospect scored twice across crashes shows up as one line too many."""

from __future__ import annotations

import os
from typing import Any

from qualifier.scoring import rule_based_scorer


def scorer(prospect: Any, criteria: Any) -> Any:
    path = os.environ.get("BENCH_SCORER_CALLS")
    if path:
        # O_APPEND: one small write per call lands whole, whichever process makes it.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{prospect.position}\n".encode())
        finally:
            os.close(fd)
    return rule_based_scorer(prospect, criteria)
