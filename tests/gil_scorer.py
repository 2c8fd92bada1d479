"""A scorer that holds the GIL until the test lets it go, for the liveness process test.

On its first prospect it blocks in a C call made with the GIL held (`read()` on the FIFO
GIL_RELEASE_FIFO, called through `ctypes.PyDLL`, which never releases it), after creating
GIL_HOLDING_FILE to say so. The test writes a byte to the FIFO once it has seen what it waits
for. GIL_STALL_FILE then gets the longest time a thread of this process could not run, which
shows that the GIL really was held: no amount of CPU, fast or slow, changes how long."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path

from qualifier.scoring import rule_based_scorer

_held = False
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


def _hold_the_gil_until_released() -> None:
    # O_RDWR: opening a FIFO so never waits for a writer (Linux), and read() then waits for
    # the test's byte rather than returning at end of file.
    fifo = os.open(os.environ["GIL_RELEASE_FIFO"], os.O_RDWR)
    try:
        Path(os.environ["GIL_HOLDING_FILE"]).touch()
        read = ctypes.PyDLL(None).read  # PyDLL: the GIL stays held during the call
        buffer = ctypes.create_string_buffer(1)
        read(fifo, buffer, 1)  # a signal ends the wait too: the test then fails, not hangs
    finally:
        os.close(fifo)


def scorer(prospect, criteria):
    global _held
    if not _held:
        _held = True
        _hold_the_gil_until_released()
        time.sleep(0.2)  # let the watch thread see how long it was held up
        Path(os.environ["GIL_STALL_FILE"]).write_text(f"{_longest_stall:.2f}")
    return rule_based_scorer(prospect, criteria)
