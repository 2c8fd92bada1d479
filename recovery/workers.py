"""The worker's side of liveness: registering a process that executes runs, beating for it on
the database's clock, and telling whether a registered process on this host still exists.

A process registers once (`register()`), then a `Beat` thread of its own writes `last_beat_at`
every RECOVERY_HEARTBEAT_SECONDS. The supervising `db_worker` runs no scoring code itself, so a
scorer that holds the GIL in its executor child cannot delay the beat. A row is removed on a
clean exit; a row that stops beating, or that names a process gone from its host, marks every
run it owns as dead (see `QualificationRunQuerySet.dead`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from django.db import DatabaseError, connections
from django.db.models.functions import Now

from .conf import conf
from .models import Worker

logger = logging.getLogger("recovery")

#: Longest wait between two tries while the database is unreachable.
MAX_BACKOFF_SECONDS = 5.0


def host_name() -> str:
    """The name this host's workers register under: RECOVERY_HOSTNAME, or the machine's."""
    return (conf.RECOVERY_HOSTNAME or socket.gethostname())[:255]


def process_started_at(pid: int) -> dt.datetime | None:
    """When the OS started process `pid` (Linux), or None where that cannot be read.

    Computed from the boot time and the process's start in clock ticks, so it is the same value
    every time it is read: a reused pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5); fields[0] is field 3
        with open("/proc/stat", encoding="ascii") as proc_stat:
            boot = next(int(line.split()[1]) for line in proc_stat if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    seconds = boot + ticks / os.sysconf("SC_CLK_TCK")
    return dt.datetime.fromtimestamp(round(seconds, 2), tz=dt.UTC)


def process_exists(pid: int, started_at: dt.datetime | None) -> bool:
    """Whether `pid` on this host is still the process that registered with `started_at`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if _is_zombie(pid):
        return False  # it has exited; only its parent has not collected it yet
    if started_at is None:
        return True
    current = process_started_at(pid)
    return current is None or abs((current - started_at).total_seconds()) < 0.5


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def exited_worker_ids() -> tuple[int, ...]:
    """This host's registered workers whose processes have exited (or whose pid was reused).

    One query for the few workers of this host, then a local check per process: no waiting for
    a timeout when the host itself can tell that the process is gone. A worker whose supervisor
    died while its executor still runs is not gone yet: the executor hands its run back.
    """
    rows = Worker.objects.on_host(host_name()).values_list(
        "pk", "pid", "process_started_at", "executor_pid"
    )
    return tuple(
        pk
        for pk, pid, started, executor in rows
        if not process_exists(pid, started) and not (executor and process_exists(executor, None))
    )


def register(executor_pid: int | None = None) -> Worker:
    """Registers this process as a worker (host, pid, start time; beats on the database's clock)."""
    pid = os.getpid()
    worker = Worker.objects.create(
        host=host_name(),
        pid=pid,
        process_started_at=process_started_at(pid),
        executor_pid=executor_pid,
    )
    logger.debug("[Worker] Registered worker %s as %s", worker.pk, worker)
    return worker


def deregister(worker: Worker) -> None:
    """Removes the row on a clean exit (its runs were handed back first)."""
    Worker.objects.filter(pk=worker.pk).delete()


def beat(worker: Worker) -> bool:
    """One beat; False when the row is gone (a sweep found this worker dead)."""
    return bool(Worker.objects.filter(pk=worker.pk).update(last_beat_at=Now()))


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

    @property
    def ongoing(self) -> bool:
        return self.since is not None


def retry_until_done[T](
    what: str, operation: Callable[[], T], stop: threading.Event | None = None
) -> T | None:
    """Runs `operation` until it does not raise a database error (backoff, one log line per
    outage). Returns None if `stop` is set first."""
    outage = Outage(what)
    while True:
        try:
            result = operation()
        except DatabaseError as exc:
            wait = outage.failed(exc)
            if stop is not None and stop.wait(wait):
                return None
            if stop is None:
                time.sleep(wait)
            continue
        outage.succeeded()
        return result


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
        self._thread.join(self.interval + 5)

    def _loop(self) -> None:
        wait = self.interval
        try:
            while not self._stop.wait(wait):
                try:
                    alive = beat(self.worker)
                except DatabaseError as exc:
                    # Tried again within one beat interval however long the outage: a database
                    # that comes back hears from every live worker before anyone can judge it
                    # silent (the timeout is three beats or more, counted from the restart).
                    wait = min(self._outage.failed(exc), self.interval)
                    continue
                finally:
                    # One short connection per beat: nothing held open between beats, and a
                    # database that restarted is simply reconnected to.
                    with contextlib.suppress(Exception):
                        connections.close_all()
                self._outage.succeeded()
                wait = self.interval
                if not alive:
                    logger.warning(
                        "[Worker] Worker %s was found dead by a sweep (no beat for too long); "
                        "its runs were recovered",
                        self.worker,
                    )
                    self.lost.set()
                    return
        finally:
            with contextlib.suppress(Exception):
                connections.close_all()  # this thread's own connection


# --- the worker this process executes runs for ------------------------------------------------

#: Set when this process is asked to stop: the run in progress writes its batch and ends.
stop_requested = threading.Event()
_current: Worker | None = None
_current_lock = threading.Lock()
_adhoc_beat: Beat | None = None


_supervised = False


def set_current(worker: Worker | None, *, supervised: bool = False) -> None:
    """Called by a supervised executor: its runs belong to its supervisor's row."""
    global _current, _supervised
    with _current_lock:
        _current = worker
        _supervised = supervised


def current() -> Worker:
    """The worker row that owns the runs this process executes.

    An executor started by `db_worker` uses its supervisor's row; if that row is gone (a sweep
    found the worker dead), the executor must stop and let the supervisor register again. A
    process that runs tasks some other way (another django.tasks backend's worker, a test)
    registers itself on first use and beats from a thread of its own.
    """
    global _current, _adhoc_beat
    from .exceptions import WorkerStopping

    with _current_lock:
        if _current is not None and Worker.objects.filter(pk=_current.pk).exists():
            return _current
        if _supervised:
            stop_requested.set()
            raise WorkerStopping("this worker's registration is gone; its supervisor re-registers")
        _current = register()
        if _adhoc_beat is not None:
            _adhoc_beat.stop()
        _adhoc_beat = Beat(_current).start()
        return _current


def release() -> None:
    """Forgets this process's worker and stops a beat it started for itself (a process that
    stops executing runs; the test suite between tests)."""
    global _current, _adhoc_beat, _supervised
    with _current_lock:
        if _adhoc_beat is not None:
            _adhoc_beat.stop()
        _current, _adhoc_beat, _supervised = None, None, False
    stop_requested.clear()
