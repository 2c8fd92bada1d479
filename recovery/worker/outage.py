"""Errors by kind: only a lost or refused connection is an outage, waited out with backoff; a
constraint violation, bad data or any other error is a bug or a lost race, never retried."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connections

logger = logging.getLogger("recovery")

#: Longest wait between two tries while the database is unreachable.
MAX_BACKOFF_SECONDS = 5.0
#: The errors that mean "the database is away or busy for now": a lost or refused connection,
#: a server restarting, a lock or statement timeout, SQLite's "database is locked".
OUTAGES = (OperationalError, InterfaceError)


def is_outage(exc: BaseException) -> bool:
    return isinstance(exc, OUTAGES)


class Outage:
    """Logs one line when the database goes away and one when it is back, not one per try."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.since: float | None = None
        self.tries = 0

    def failed(self, exc: BaseException) -> float:
        """Records a failed try; returns how long to wait before the next one."""
        if self.since is None:
            self.since = time.monotonic()
            logger.warning(
                "[%s] Database unavailable, retrying until it is back: %s",
                self.what,
                " ".join(str(exc).split()) or type(exc).__name__,
            )
        self.tries += 1
        with contextlib.suppress(Exception):
            connections.close_all()
        return min(MAX_BACKOFF_SECONDS, 0.5 * 2 ** min(self.tries, 4))

    def succeeded(self) -> None:
        if self.since is not None:
            logger.warning(
                "[%s] Database is back after %.0f s", self.what, time.monotonic() - self.since
            )
        self.since = None
        self.tries = 0


def retry_outages[T](what: str, operation: Callable[[], T], stop: threading.Event) -> T | None:
    """Runs `operation` until it succeeds, waiting out outages (backoff, one log line per
    outage). It is tried once even when `stop` is set; after a failure, None once `stop` is set:
    every wait honours a stop request. Any error
    that is not an outage is raised at once."""
    outage = Outage(what)
    while True:
        try:
            result = operation()
        except OUTAGES as exc:
            if stop.wait(outage.failed(exc)):
                return None
            continue
        outage.succeeded()
        return result
