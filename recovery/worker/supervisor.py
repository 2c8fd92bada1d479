"""The supervisor behind `manage.py db_worker`: it registers the worker, beats for it, sweeps
at its start (before any work is taken) and periodically, and runs the executor as a child.

It runs no scoring code, so its beat never waits for a scorer. When the executor exits
unexpectedly (a crash, SIGKILL, the OOM killer), its run is handed back at once (a death, as
the crash-loop guard counts them) and a new executor starts: at once when it died with a run in
hand (that run's deaths are the crash-loop guard's business), after a growing pause when it
keeps dying quickly with nothing in hand (it cannot start: a bad setting, a broken import). When a sweep found this worker
dead while it lives (a freeze, a partition, a stall), it says so, registers again and carries
on: it never exits for that, let alone with status 0.

Signal handlers only set events. SIGTERM or SIGINT (Ctrl-C, honcho, systemd, Kubernetes) asks
the executor to stop: it writes the batch in hand and hands the run back itself; the
supervisor then removes its row and exits. After RECOVERY_SHUTDOWN_GRACE_SECONDS, or on a
second signal, the executor is killed and the run handed back all the same. Every wait,
outages included, honours a stop request.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from types import FrameType
from typing import Any

from django.db import DatabaseError, connections
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, get_child_arguments, run_with_reloader

from ..conf import conf
from ..models import RecoveryCause, RecoverySource, Worker
from . import handback, registry, sweeper
from .executor import EXIT_LOST, SUPERVISOR_PID_ENV, watch_parent
from .outage import retry_outages

logger = logging.getLogger("recovery")

#: An executor that exits sooner than this after its start, with no run in hand, counts
#: towards a crash loop.
QUICK_EXIT_SECONDS = 10.0
#: Longest pause before restarting an executor that keeps crashing.
MAX_RESTART_DELAY_SECONDS = 30.0
#: A second stop signal within this many seconds is the same request (honcho sends SIGTERM
#: right after the terminal's SIGINT).
SIGNAL_DEBOUNCE_SECONDS = 1.0
POLL_SECONDS = 0.1


# --- the supervisor -------------------------------------------------------------------------


class Supervisor:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.worker: Worker | None = None
        self.beat: registry.Beat | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self._stop_reason = ""
        self._first_signal_at = 0.0
        self._finished = threading.Lock()
        self._interpreter_exiting = False

    # --- entry points -----------------------------------------------------------------------

    def start(self, *, reload: bool) -> None:
        if reload and not self.options["batch"]:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                # The reloader's child: it runs `run` on a thread and ends the process itself
                # on a code change, so the clean-up also runs at exit; the watcher above it may
                # be killed without telling us, so its going away stops us too.
                self.configure_signals()
                atexit.register(self._at_exit)
                watch_parent(lambda: self.request_stop("the autoreloader stopped"))
            run_with_reloader(self._run_then_exit)
        else:
            self.configure_signals()
            self.run()

    def _run_then_exit(self) -> None:
        try:
            self.run()
        finally:
            if not self._interpreter_exiting:
                # Stopped by a signal: end the process, which the autoreloader's main thread
                # would otherwise keep. On a code change the main thread is already exiting
                # (status 3, "reload me") and must keep that status.
                logging.shutdown()
                os._exit(0)

    def _at_exit(self) -> None:
        self._interpreter_exiting = True
        self.finish()

    def configure_signals(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.strsignal(signum)
        if not self.stopping.is_set():
            self._first_signal_at = time.monotonic()
            self.request_stop(f"received {name}")
        elif time.monotonic() - self._first_signal_at > SIGNAL_DEBOUNCE_SECONDS:
            logger.warning("[Worker] Received %s again: stopping at once", name)
            self.force.set()

    def request_stop(self, why: str) -> None:
        if self.stopping.is_set():
            return
        self._stop_reason = why
        logger.warning(
            "[Worker] Stopping (%s): the run in progress writes its batch and goes back to the "
            "queue (send the signal again to stop at once)",
            why,
        )
        self.stopping.set()

    # --- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self._register()
        from ..startup import recovery_enabled, run_startup_recovery

        if recovery_enabled() and not self.stopping.is_set():
            run_startup_recovery("db_worker")  # before any work is taken
        threading.Thread(
            target=sweeper.run_periodic_sweeps, args=(self.stopping,), name="sweeper", daemon=True
        ).start()
        crashes = 0
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                code = self._run_child()
                if self.stopping.is_set():
                    self._after_child(code)
                    break
                if code == EXIT_LOST or (self.beat is not None and self.beat.lost.is_set()):
                    # Found dead while alive: its runs were recovered. Say so, register again
                    # and carry on taking work (never exit for this).
                    self._register()
                    continue
                handed_back = self._after_child(code)
                if code == 0:
                    break  # the executor was done (--batch, --max-tasks)
                quick = time.monotonic() - started < QUICK_EXIT_SECONDS
                crashes = crashes + 1 if quick and not handed_back else 0
                if crashes:
                    delay = min(MAX_RESTART_DELAY_SECONDS, 2.0**crashes)
                    logger.warning("[Worker] Restarting the executor in %.0f s", delay)
                    self.stopping.wait(delay)
        finally:
            self.finish()

    def _register(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        self.worker = retry_outages("Worker", registry.register, self.stopping)
        if self.worker is None:
            return
        self.beat = registry.Beat(self.worker).start()
        logger.info(
            "[Worker] Registered as worker %s (%s)",
            self.worker.pk,
            self.worker,
            extra={"event": "worker_registered", "worker": str(self.worker)},
        )

    def _run_child(self) -> int:
        if self.worker is None:
            return 0
        args = [
            *get_child_arguments(),
            "--executor-of",
            str(self.worker.pk),
            "--worker-id",
            str(self.worker.pk),
            "--no-reload",
            "--no-startup-delay",
        ]
        env = {key: value for key, value in os.environ.items() if key != DJANGO_AUTORELOAD_ENV}
        env[SUPERVISOR_PID_ENV] = str(os.getpid())
        connections.close_all()
        # Its own session: a terminal's Ctrl-C or a process manager's group signal reaches the
        # supervisor, which stops the executor in order (and the executor hands its run back
        # itself, should the supervisor be killed first).
        self.child = subprocess.Popen(args, env=env, start_new_session=True)  # noqa: S603
        logger.info("[Worker] Executor started (pid %s)", self.child.pid)
        pid, worker = self.child.pid, self.worker
        # A stop request during an outage is honoured here too: the executor is stopped below.
        retry_outages(
            "Worker",
            lambda: Worker.objects.filter(pk=worker.pk).update(executor_pid=pid),
            self.stopping,
        )
        return self._watch_child(self.child)

    def _watch_child(self, child: subprocess.Popen[bytes]) -> int:
        deadline: float | None = None
        while True:
            try:
                return child.wait(timeout=POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass
            lost = self.beat is not None and self.beat.lost.is_set()
            if (self.stopping.is_set() or lost) and deadline is None:
                child.send_signal(signal.SIGTERM)
                deadline = time.monotonic() + conf.RECOVERY_SHUTDOWN_GRACE_SECONDS
            if self.force.is_set() or (deadline is not None and time.monotonic() > deadline):
                if not self.force.is_set():
                    logger.warning(
                        "[Worker] The executor did not stop within %s s; killing it",
                        conf.RECOVERY_SHUTDOWN_GRACE_SECONDS,
                    )
                child.kill()
                return child.wait()

    def _after_child(self, code: int) -> list[int]:
        """Hands back whatever the executor left PROCESSING under this worker: at a stop (the
        executor has done it already, unless it was killed), or after a crash (a death).
        Returns the ids of the runs handed back."""
        if self.worker is None:
            return []
        if self.stopping.is_set() or code == 0:
            source, cause = RecoverySource.SHUTDOWN, RecoveryCause.SHUTDOWN
        else:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            logger.warning(
                "[Worker] The executor exited unexpectedly (%s); handing its run back", how
            )
            source, cause = RecoverySource.SUPERVISOR, RecoveryCause.CRASHED
        worker = self.worker
        give_up = self.force
        if self.stopping.is_set():
            # Stopping: a database that is away gets the grace period (a second signal ends it
            # at once), then the process stops all the same and a sweep recovers the run, as
            # after a SIGKILL. A stop signal is never ignored for want of a database.
            grace = threading.Timer(conf.RECOVERY_SHUTDOWN_GRACE_SECONDS, self.force.set)
            grace.daemon = True
            grace.start()
        else:
            give_up = threading.Event()  # a crash: wait for the database however long
            self.stopping_watch(give_up)
        done = retry_outages(
            "Worker",
            lambda: handback.hand_back(worker, source=source, cause=cause),
            give_up,
        )
        if done is None:
            logger.warning(
                "[Worker] Could not hand back the runs of worker %s: the database is away; "
                "a sweep will recover them",
                worker,
            )
        return done or []

    def stopping_watch(self, event: threading.Event) -> None:
        """Sets `event` once a stop is asked for (a wait that must end at a stop request)."""

        def watch() -> None:
            self.stopping.wait()
            event.set()

        threading.Thread(target=watch, name="stop-watch", daemon=True).start()

    def finish(self) -> None:
        """Stops the executor (handing its run back) and removes the worker's row; once."""
        if not self._finished.acquire(blocking=False):
            return
        self.stopping.set()
        child = self.child
        if child is not None and child.poll() is None:
            self._after_child(self._watch_child(child))
        if self.beat is not None:
            self.beat.stop()
        if self.worker is not None:
            with contextlib.suppress(DatabaseError):
                registry.deregister(self.worker)
            logger.info(
                "[Worker] Worker %s stopped and deregistered",
                self.worker,
                extra={"event": "worker_stopped", "worker": str(self.worker)},
            )
