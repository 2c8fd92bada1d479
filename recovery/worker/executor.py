"""The executor: django-tasks-db's queue loop, run as the supervisor's child process.

It executes runs for its supervisor's worker row. A task it has claimed is started only while
that row exists and no stop was asked for; otherwise the task goes back to the queue untouched
and the executor ends (status EXIT_LOST when the row is gone, so the supervisor registers
again), so an executor woken from a freeze never burns the queue. When it stops, the run in
hand writes its batch and is handed back here, by the executor itself: a stop is a hand-back in
every path, even when the supervisor is gone before it could do it (Ctrl-C under the
autoreloader, whose watcher kills its child).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

from django.db import DatabaseError
from django.tasks import TaskResultStatus
from django_tasks_db.management.commands.db_worker import Worker as QueueWorker
from django_tasks_db.models import DBTaskResult

from ..conf import conf
from ..models import RecoveryCause, RecoverySource, Worker
from . import handback, registry
from .outage import OUTAGES, Outage, retry_outages

logger = logging.getLogger("recovery")

#: The executor's exit status when its worker's row is gone: register again, it is no crash.
EXIT_LOST = 75
#: The supervisor tells its executor its pid, so an executor whose supervisor died before the
#: executor even looked still notices.
SUPERVISOR_PID_ENV = "RECOVERY_SUPERVISOR_PID"


def watch_parent(on_exit: Any, parent: int | None = None) -> None:
    """Calls `on_exit()` once this process's parent (`parent`, or the current one) is gone."""
    parent = parent or os.getppid()

    def loop() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        on_exit()

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


class ExecutorQueueWorker(QueueWorker):
    """django-tasks-db's queue loop: a stop request lets the task in hand end cleanly, a task is
    started only under a live registration, and a database outage is waited out."""

    def __init__(self, *args: Any, worker: Worker, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.worker = worker
        self.lost = False

    def shutdown(self, signum: int, frame: FrameType | None) -> None:
        registry.stop_requested.set()
        self.running = False
        if not self.running_task:
            sys.exit(0)

    def run_task(self, db_task_result: DBTaskResult) -> None:
        registered = retry_outages(
            "Executor",
            lambda: registry.is_registered(self.worker.pk),
            registry.stop_requested,
        )
        if registry.stop_requested.is_set() or not registered:
            self.lost = registered is False
            self.running = False
            _put_back(db_task_result)
            return
        super().run_task(db_task_result)

    def run(self) -> None:
        outage = Outage("Executor")
        while self.running:
            try:
                super().run()
                return
            except OUTAGES as exc:
                if not self.running:
                    return
                registry.stop_requested.wait(outage.failed(exc))
                self.startup_delay = False


def _put_back(db_task_result: DBTaskResult) -> None:
    """A task claimed but not started goes back to the queue as it was before the claim."""
    DBTaskResult.objects.filter(pk=db_task_result.pk, status=TaskResultStatus.RUNNING).update(
        status=TaskResultStatus.READY,
        started_at=None,
        worker_ids=db_task_result.worker_ids[:-1],
    )
    logger.info(
        "[Worker] Task %s goes back to the queue untouched: this worker is %s",
        db_task_result.pk,
        "stopping" if registry.stop_requested.is_set() else "no longer registered",
    )


def run_executor(worker_id: int, options: dict[str, Any]) -> None:
    """The executor child: runs the queue for the supervisor's worker row `worker_id`."""
    # Until the queue loop takes over the signals, a stop request simply ends the process; and
    # if the supervisor dies, stop as if it had asked.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    supervisor_pid = int(os.environ.get(SUPERVISOR_PID_ENV, "0")) or None
    watch_parent(lambda: os.kill(os.getpid(), signal.SIGTERM), supervisor_pid)
    worker = retry_outages(
        "Executor", lambda: Worker.objects.filter(pk=worker_id).first(), registry.stop_requested
    )
    if worker is None:
        sys.exit(0 if registry.stop_requested.is_set() else EXIT_LOST)
    registry.set_current(worker)
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
        worker=worker,
    )
    queue_worker.configure_signals()
    try:
        queue_worker.run()
    finally:
        supervisor_lost = bool(supervisor_pid and os.getppid() != supervisor_pid)
        if registry.stop_requested.is_set() or supervisor_lost:
            _hand_back_on_stop(worker, deregister=supervisor_lost)
    if queue_worker.lost:
        sys.exit(EXIT_LOST)


def _hand_back_on_stop(worker: Worker, *, deregister: bool) -> None:
    """The run in hand goes back to the queue now, by this process: a database that is away
    gets the grace period, then a sweep finds the run. Without a supervisor left, the worker's
    row is removed too."""
    give_up = threading.Event()
    timer = threading.Timer(conf.RECOVERY_SHUTDOWN_GRACE_SECONDS, give_up.set)
    timer.daemon = True
    timer.start()
    if deregister:
        logger.warning("[Worker] The supervisor is gone; the executor hands its run back itself")
    try:
        retry_outages(
            "Executor",
            lambda: handback.hand_back(
                worker, source=RecoverySource.SHUTDOWN, cause=RecoveryCause.SHUTDOWN
            ),
            give_up,
        )
        if deregister:
            with contextlib.suppress(DatabaseError):
                registry.deregister(worker)
    finally:
        timer.cancel()
