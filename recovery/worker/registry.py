"""A worker's registration: register, beat, deregister, and register again after being found
dead while it lives (a freeze, a partition, a stall that ended), the way Solid Queue's
`Registrable` does.

The supervising `db_worker` process beats from a thread of its own every
RECOVERY_HEARTBEAT_SECONDS, on one long-lived connection with a short statement timeout, so a
scorer (even one that holds the GIL in the executor child) cannot delay a beat, and a stalled
database costs a few seconds per try rather than a connect timeout. Whether a worker is alive
is not decided here: that is `recovery.liveness`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from django.db import DatabaseError, connection
from django.db.models.functions import Now

from ..conf import conf
from ..exceptions import WorkerStopping
from ..liveness import host_name, process_started_at
from ..models import Worker
from .outage import OUTAGES, Outage

logger = logging.getLogger("recovery")

#: A beat that has not answered within this many seconds is given up and tried again.
BEAT_STATEMENT_TIMEOUT_SECONDS = 5


def register() -> Worker:
    """Registers this process as a worker (host, pid, start time; beats on the database's clock)."""
    pid = os.getpid()
    worker = Worker.objects.create(
        host=host_name(), pid=pid, process_started_at=process_started_at(pid)
    )
    logger.debug("[Worker] Registered worker %s as %s", worker.pk, worker)
    return worker


def deregister(worker: Worker) -> None:
    """Removes the row on a clean exit (its runs were handed back first)."""
    Worker.objects.filter(pk=worker.pk).delete()


def is_registered(worker_id: int) -> bool:
    return Worker.objects.filter(pk=worker_id).exists()


def beat(worker: Worker) -> bool:
    """One beat; False when the row is gone (a sweep found this worker dead)."""
    return bool(Worker.objects.filter(pk=worker.pk).update(last_beat_at=Now()))


def _bound_statements(seconds: int) -> None:
    """This thread's connection gives up on a statement (a lock held on the worker table, a
    stalled server) after `seconds`, so the next beat is tried instead of waiting."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, false)", [str(seconds * 1000)]
            )


class Beat:
    """A daemon thread that beats for `worker` until stopped.

    `lost` is set when the row is gone: a sweep judged this worker dead and recovered its runs,
    so its executor must stop and the process register again.
    """

    def __init__(self, worker: Worker, interval: float | None = None) -> None:
        self.worker = worker
        self.interval = interval or conf.RECOVERY_HEARTBEAT_SECONDS
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._outage = Outage("Worker")
        self._thread = threading.Thread(target=self._loop, name="worker-beat", daemon=True)

    def start(self) -> Beat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + BEAT_STATEMENT_TIMEOUT_SECONDS + 1)

    def _loop(self) -> None:
        wait = self.interval
        timeout = max(1, min(BEAT_STATEMENT_TIMEOUT_SECONDS, int(self.interval)))
        bounded = False
        try:
            # Connected before the first wait: a new connection costs several round trips
            # (about five on PostgreSQL with the statement bound), and the first beat must cost
            # one, or a slow link that starts now silences a live worker past its timeout.
            with contextlib.suppress(*OUTAGES):
                _bound_statements(timeout)
                bounded = True
            while not self._stop.wait(wait):
                started = time.monotonic()
                try:
                    if not bounded:
                        _bound_statements(timeout)
                        bounded = True
                    alive = beat(self.worker)
                except OUTAGES as exc:
                    # Tried again within one beat interval however long the outage: a database
                    # that comes back hears from every live worker before anyone can judge it
                    # silent (the timeout is three beats or more, counted from the restart).
                    wait = min(self._outage.failed(exc), self.interval)
                    bounded = False  # failed() closed the connection; the next one is new
                    continue
                self._outage.succeeded()
                # On a fixed rate: a beat that took long (a slow network, a loaded database)
                # does not push the next one back, so beats reach the database every interval
                # or back to back, never an interval plus a round trip apart.
                wait = max(0.0, self.interval - (time.monotonic() - started))
                if not alive:
                    logger.warning(
                        "[Worker] Worker %s was found dead by a sweep while it lives (no beat "
                        "reached the database for too long); its runs were recovered, and it "
                        "registers again",
                        self.worker,
                        extra={"event": "worker_found_dead", "worker": str(self.worker)},
                    )
                    self.lost.set()
                    return
        finally:
            with contextlib.suppress(Exception):
                connection.close()  # this thread's own connection


# --- the worker this process executes runs for ------------------------------------------------

#: Set when this process is asked to stop: the run in progress writes its batch and ends.
stop_requested = threading.Event()
_current: Worker | None = None


def set_current(worker: Worker | None) -> None:
    """Called by the executor: the runs it executes belong to its supervisor's row."""
    global _current
    _current = worker


def current() -> Worker:
    """The worker row that owns the runs this process executes. A process that is not a
    worker's executor has none: runs are executed by `manage.py db_worker`."""
    if _current is None:
        raise WorkerStopping("this process is not a registered worker's executor")
    return _current


def release() -> None:
    """Forgets this process's worker (a process that stops executing runs)."""
    set_current(None)
    stop_requested.clear()


__all__ = [
    "Beat",
    "DatabaseError",
    "beat",
    "current",
    "deregister",
    "is_registered",
    "register",
    "release",
    "set_current",
    "stop_requested",
]
