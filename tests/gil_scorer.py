"""A scorer that holds the GIL for seconds on every prospect (a regular expression that
backtracks: the `re` module never releases the GIL), for the liveness process test. It records
in GIL_STALL_FILE the longest a thread of its process could not run."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

from qualifier.scoring import rule_based_scorer

#: About 8 s of backtracking on this machine, far past a 3 s worker timeout.
BACKTRACKING_LENGTH = 28
_longest_stall = 0.0


def _watch() -> None:
    global _longest_stall
    last = time.monotonic()
    while True:
        time.sleep(0.05)
        now = time.monotonic()
        _longest_stall = max(_longest_stall, now - last)
        last = now


threading.Thread(target=_watch, name="gil-watch", daemon=True).start()


def scorer(prospect, criteria):
    re.match(r"(a+)+$", "a" * BACKTRACKING_LENGTH + "b")
    time.sleep(0.2)  # let the watch thread see how long it was held up
    Path(os.environ["GIL_STALL_FILE"]).write_text(f"{_longest_stall:.2f}")
    return rule_based_scorer(prospect, criteria)
