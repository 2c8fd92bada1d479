"""The supervised worker behind `manage.py db_worker`.

Two processes per worker:

- The **supervisor** registers the worker's row, beats for it from a thread of its own, sweeps
  at its start (before any work is taken) and periodically, and runs the executor as a child.
  It runs no scoring code, so its beat never waits for a scorer, even one that holds the GIL.
  When the executor exits unexpectedly (a crash, SIGKILL, the OOM killer), the supervisor hands
  the run it was executing back to the queue at once and starts a new executor.
- The **executor** runs django-tasks-db's queue loop and the tasks, its runs owned by the
  supervisor's row. A database outage is waited out instead of ending the process.

SIGTERM or SIGINT (Ctrl-C, honcho, systemd, Kubernetes) to the supervisor asks the executor to
stop: it writes the batch in hand and ends its task; the supervisor hands the run back to the
queue (PENDING, results kept, a new task, an event with source `shutdown`), removes its row and
exits. If the executor has not stopped within RECOVERY_SHUTDOWN_GRACE_SECONDS, or on a second
signal, it is killed and the run is handed back all the same. Under Django's autoreloader the
supervisor also stops when the reloader's watcher process goes away or reloads the code.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any

from django.db import DatabaseError, connections
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, get_child_arguments, run_with_reloader
from django_tasks_db.management.commands.db_worker import Worker as QueueWorker

from . import workers
from .conf import conf
from .models import RecoveryCause, RecoverySource, Worker

logger = logging.getLogger("recovery")

#: An executor that exits sooner than this after its start counts towards a crash loop.
QUICK_EXIT_SECONDS = 10.0
#: Longest pause before restarting an executor that keeps crashing.
MAX_RESTART_DELAY_SECONDS = 30.0
#: A second stop signal within this many seconds is the same request (honcho sends SIGTERM
#: right after the terminal's SIGINT).
SIGNAL_DEBOUNCE_SECONDS = 1.0
POLL_SECONDS = 0.1


#: The supervisor tells its executor its pid, so an executor whose supervisor died before the
#: executor even looked still notices.
SUPERVISOR_PID_ENV = "RECOVERY_SUPERVISOR_PID"


def watch_parent(on_exit: Any, parent: int | None = None) -> None:
    """Calls `on_exit()` once this process's parent (`parent`, or the current one) is gone:
    the process has been re-parented."""
    parent = parent or os.getppid()

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        on_exit()

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


# --- the executor ---------------------------------------------------------------------------


class ExecutorQueueWorker(QueueWorker):
    """django-tasks-db's queue loop in the executor: a stop request lets the task in hand end
    cleanly, and a database that goes away is waited for instead of ending the process."""

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        workers.stop_requested.set()
        self.running = False
        if not self.running_task:
            sys.exit(0)

    def run(self) -> None:
        outage = workers.Outage("Executor")
        while self.running:
            try:
                super().run()
                return
            except DatabaseError as exc:
                if not self.running:
                    return
                time.sleep(outage.failed(exc))
                self.startup_delay = False


def run_executor(worker_id: int, options: dict[str, Any]) -> None:
    """The executor child: runs the queue for the supervisor's worker row `worker_id`."""
    # Until the queue loop takes over the signals, a stop request simply ends the process; and
    # if the supervisor dies, stop as if it had asked: the run stays with its row, which stops
    # beating, and a sweep recovers it.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    supervisor_pid = int(os.environ.get(SUPERVISOR_PID_ENV, "0")) or None
    watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM), supervisor_pid)
    worker = workers.retry_until_done("Executor", lambda: Worker.objects.get(pk=worker_id))
    workers.set_current(worker, supervised=True)
    queue_names = options["queue_name"].split(",")
    excluded = options["exclude_queues"].split(",") if options["exclude_queues"] else []
    queue_worker = ExecutorQueueWorker(
        queue_names=queue_names,
        interval=options["interval"],
        batch=options["batch"],
        backend_name=options["backend_name"],
        startup_delay=options["startup_delay"],
        max_tasks=options["max_tasks"],
        worker_id=str(worker_id),
        excluded_queue_names=excluded,
    )
    queue_worker.configure_signals()
    try:
        queue_worker.run()
    finally:
        if supervisor_pid and os.getppid() != supervisor_pid:
            _hand_back_for_lost_supervisor(worker, supervisor_pid)


def _hand_back_for_lost_supervisor(worker: Worker, supervisor_pid: int) -> None:
    """The supervisor died first (SIGKILL, the OOM killer, an autoreloader that kills its child
    on SIGTERM): the executor, still alive and connected, does what the supervisor would have
    done. A database that is away gets the grace period; after that the sweep finds the run."""
    from .sweep import hand_back_runs

    logger.warning(
        "[Worker] The supervisor (pid %s) is gone; the executor hands its run back itself",
        supervisor_pid,
    )
    give_up = threading.Event()
    timer = threading.Timer(conf.RECOVERY_SHUTDOWN_GRACE_SECONDS, give_up.set)
    timer.daemon = True
    timer.start()
    workers.retry_until_done(
        "Executor",
        lambda: hand_back_runs(
            worker, source=RecoverySource.SHUTDOWN, cause=RecoveryCause.SHUTDOWN
        ),
        give_up,
    )
    with contextlib.suppress(DatabaseError):
        workers.deregister(worker)


# --- the supervisor -------------------------------------------------------------------------


class Supervisor:
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.stopping = threading.Event()
        self.force = threading.Event()
        self.worker: Worker | None = None
        self.beat: workers.Beat | None = None
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
        from .startup import recovery_enabled, run_periodic_sweeps, run_startup_recovery

        if recovery_enabled() and not self.stopping.is_set():
            run_startup_recovery("db_worker")  # before any work is taken
        threading.Thread(
            target=run_periodic_sweeps, args=(self.stopping,), name="sweeper", daemon=True
        ).start()
        crashes = 0
        try:
            while not self.stopping.is_set():
                started = time.monotonic()
                code = self._run_child()
                self._after_child(code)
                if self.stopping.is_set() or code == 0:
                    break  # asked to stop, or the executor was done (--batch, --max-tasks)
                if self.beat is not None and self.beat.lost.is_set():
                    self._register()  # found dead meanwhile: its runs were recovered
                    continue
                crashes = crashes + 1 if time.monotonic() - started < QUICK_EXIT_SECONDS else 0
                if crashes:
                    delay = min(MAX_RESTART_DELAY_SECONDS, 2.0**crashes)
                    logger.warning("[Worker] Restarting the executor in %.0f s", delay)
                    self.stopping.wait(delay)
        finally:
            self.finish()

    def _register(self) -> None:
        if self.beat is not None:
            self.beat.stop()
        self.worker = workers.retry_until_done("Worker", workers.register, self.stopping)
        if self.worker is None:
            return
        self.beat = workers.Beat(self.worker).start()
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
        # supervisor, which stops the executor in order.
        self.child = subprocess.Popen(args, env=env, start_new_session=True)  # noqa: S603
        logger.info("[Worker] Executor started (pid %s)", self.child.pid)
        pid, worker = self.child.pid, self.worker
        workers.retry_until_done(
            "Worker", lambda: Worker.objects.filter(pk=worker.pk).update(executor_pid=pid)
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

    def _after_child(self, code: int) -> None:
        """Hands back whatever the executor left PROCESSING under this worker."""
        if self.worker is None:
            return
        if self.stopping.is_set() or code == 0:
            source, cause = RecoverySource.SHUTDOWN, RecoveryCause.SHUTDOWN
        else:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            logger.warning(
                "[Worker] The executor exited unexpectedly (%s); handing its run back", how
            )
            source, cause = RecoverySource.SUPERVISOR, RecoveryCause.CRASHED
        from .sweep import hand_back_runs

        worker = self.worker
        if self.stopping.is_set():
            # Stopping: a database that is away gets the grace period (a second signal ends it
            # at once), then the process stops all the same and a sweep recovers the run, as
            # after a SIGKILL. A stop signal is never ignored for want of a database.
            grace = threading.Timer(conf.RECOVERY_SHUTDOWN_GRACE_SECONDS, self.force.set)
            grace.daemon = True
            grace.start()
        done = workers.retry_until_done(
            "Worker", lambda: hand_back_runs(worker, source=source, cause=cause), self.force
        )
        if done is None:
            logger.warning(
                "[Worker] Could not hand back the runs of worker %s: the database is away; "
                "a sweep will recover them",
                worker,
            )

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
                workers.deregister(self.worker)
            logger.info(
                "[Worker] Worker %s stopped and deregistered",
                self.worker,
                extra={"event": "worker_stopped", "worker": str(self.worker)},
            )
