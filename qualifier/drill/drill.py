"""The drill: its user, its workers, its runs, its own sweep, and the clean-up of all of them.

The drill's workers do not sweep (RECOVERY_SWEEP_INTERVAL_SECONDS=0, no startup recovery): a
sweep of theirs would recover or remove what the drill did not make. The drill sweeps instead,
every RECOVERY_SWEEP_INTERVAL_SECONDS, with the service's one sweep bounded to the drill's runs
and workers; the service's own servers and workers sweep the drill's runs as they sweep any
(in staging they may find a death first, which is what the drill measures).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.db import DatabaseError, connection
from django.db.models import Count

from recovery.conf import conf as recovery_conf
from recovery.liveness import host_name
from recovery.models import (
    FencedWrite,
    QualificationRun,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    Worker,
)
from recovery.sweep import recover_stuck_runs

from ..models import ProspectResult
from ..prospects import ProspectData
from ..runs import create_run
from .scorer import CALLS_FILE_ENV, count_calls
from .workers import DRILL_QUEUE, DrillWorker

logger = logging.getLogger("qualifier.drill")

#: Every prospect of a drill run qualifies, so a run does all of the scorer's work.
DRILL_PROSPECT = {"industry": "Software", "employees": 100, "title": "VP"}


@dataclass(frozen=True)
class Timeouts:
    """The liveness settings the drill runs under (the configured ones, or its options')."""

    heartbeat: int
    worker_timeout: int
    sweep_interval: int

    @classmethod
    def configured(cls) -> Timeouts:
        return cls(
            recovery_conf.RECOVERY_HEARTBEAT_SECONDS,
            recovery_conf.RECOVERY_WORKER_TIMEOUT_SECONDS,
            recovery_conf.RECOVERY_SWEEP_INTERVAL_SECONDS,
        )

    def settings(self) -> dict[str, int]:
        return {
            "RECOVERY_HEARTBEAT_SECONDS": self.heartbeat,
            "RECOVERY_WORKER_TIMEOUT_SECONDS": self.worker_timeout,
            "RECOVERY_SWEEP_INTERVAL_SECONDS": self.sweep_interval,
        }

    @property
    def detection_bound(self) -> int:
        """The longest a dead host's run may stay active: silent for the timeout, then found
        by the next sweep."""
        return self.worker_timeout + self.sweep_interval


class Drill:
    """Use as a context manager: everything made inside is removed on the way out."""

    def __init__(
        self, *, timeouts: Timeouts, delay_ms: int, say: Callable[[str], None] = logger.info
    ) -> None:
        self.timeouts = timeouts
        self.delay_ms = delay_ms
        self.say = say
        self.token = uuid.uuid4().hex[:10]
        self.lost_host = f"{host_name()[:200]}-drill-{self.token}-gone"
        self.log_dir = Path(tempfile.mkdtemp(prefix="recovery-drill-"))
        self.calls_file = self.log_dir / "scorer-calls"
        self.user: Any = None
        self.workers: list[DrillWorker] = []
        self.run_ids: list[int] = []
        self.keep_logs = False
        self._worker_watermark = 0
        self._tasks_before: set[Any] = set()
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self._bystander: DrillWorker | None = None
        self._bystander_run: int | None = None
        self._labels = 0

    # --- entering and leaving -------------------------------------------------------------------

    def __enter__(self) -> Drill:
        from django_tasks_db.models import DBTaskResult

        self.user = get_user_model().objects.create_user(
            f"recovery-drill-{self.token}", password=None, is_active=False
        )
        self._worker_watermark = (
            Worker.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        )
        self._tasks_before = set(
            DBTaskResult.objects.filter(queue_name=DRILL_QUEUE).values_list("pk", flat=True)
        )
        self._sweeper = threading.Thread(target=self._sweep_loop, name="drill-sweep", daemon=True)
        self._sweeper.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self.workers:
            worker.stop()
        if self._sweeper is not None:
            self._sweeper.join(60)
        self.clean_up()
        if self.keep_logs:
            self.say(f"The drill's worker logs are kept in {self.log_dir}")
        else:
            shutil.rmtree(self.log_dir, ignore_errors=True)

    def clean_up(self) -> None:
        """Removes what the drill made: its runs with their results, events and refused
        writes, its tasks, its workers' rows and its user. Nothing else is read for deletion."""
        from django_tasks_db.models import DBTaskResult

        runs = set(self.run_ids)
        if self.user is not None:
            runs |= set(
                QualificationRun.objects.filter(user=self.user).values_list("pk", flat=True)
            )
        RecoveryEvent.objects.filter(run_id__in=runs).delete()
        FencedWrite.objects.filter(run_id__in=runs).delete()
        QualificationRun.objects.filter(pk__in=runs).delete()
        DBTaskResult.objects.filter(queue_name=DRILL_QUEUE).exclude(
            pk__in=self._tasks_before
        ).delete()
        self.drill_workers().delete()
        if self.user is not None:
            self.user.delete()

    def drill_workers(self) -> Any:
        """The rows the drill's workers registered (under this host or the lost one)."""
        return Worker.objects.filter(
            pk__gt=self._worker_watermark,
            pid__in=[worker.pid for worker in self.workers],
            host__in=[host_name(), self.lost_host],
        )

    # --- the drill's sweep ----------------------------------------------------------------------

    def _sweep_loop(self) -> None:
        """The service's sweep every interval, bounded to the drill's runs and workers."""
        try:
            while not self._stop.wait(self.timeouts.sweep_interval):
                run_ids = list(self.run_ids)
                if not run_ids:
                    continue
                try:
                    recover_stuck_runs(
                        source=RecoverySource.SWEEPER,
                        run_ids=run_ids,
                        worker_ids=list(self.drill_workers().values_list("pk", flat=True)),
                        log=False,
                    )
                except DatabaseError as exc:  # an outage: the next sweep tries again
                    logger.warning("The drill's sweep failed: %s", exc)
                    with contextlib.suppress(DatabaseError):
                        connection.close()
        finally:
            connection.close()

    # --- workers and runs -------------------------------------------------------------------------

    def start_worker(
        self, name: str, *, lost_host: bool = False, delay_ms: int | None = None
    ) -> DrillWorker:
        env = {
            **{key: str(value) for key, value in self.timeouts.settings().items()},
            # The drill sweeps for its workers: theirs would reach beyond the drill.
            "RECOVERY_SWEEP_INTERVAL_SECONDS": "0",
            "RECOVERY_ON_STARTUP": "false",
            "QUALIFIER_SCORER": "qualifier.drill.scorer.counting_scorer",
            "QUALIFIER_SCORING_DELAY_MS": str(self.delay_ms if delay_ms is None else delay_ms),
            CALLS_FILE_ENV: str(self.calls_file),
        }
        if lost_host:
            env["RECOVERY_HOSTNAME"] = self.lost_host
        worker = DrillWorker(name, env, self.log_dir)
        self.workers.append(worker)
        return worker

    def submit(self, kind: str, size: int) -> tuple[int, str]:
        """A run of `size` prospects on the drill's queue; returns its id and its label (the
        company of its prospects, which the scorer notes with each call)."""
        self._labels += 1
        label = f"drill-{self.token}-{self._labels}-{kind}"
        prospects = [
            ProspectData(name=f"P{number}", company=label, position=number + 1, **DRILL_PROSPECT)
            for number in range(1, size + 1)
        ]
        # One lease per run: every fault is about the worker that holds a run (a slice would
        # leave the run's other slices to other workers, and the bystander to two of them).
        run = create_run(
            user=self.user, prospects=prospects, queue_name=DRILL_QUEUE, slice_size=size
        )
        self.run_ids.append(run.pk)
        return run.pk, label

    def ensure_bystander(self) -> int:
        """A run kept PROCESSING by a healthy worker throughout every fault: any recovery of it
        is a false recovery. Its scorer takes half a second a prospect (a batch a prospect)."""
        if self._bystander is None:
            self._bystander = self.start_worker("bystander", delay_ms=500)
            self._bystander.registration()
        run_id = self._bystander_run
        if run_id is None or self.state(run_id)[0] != RunStatus.PROCESSING:
            run_id, _ = self.submit("bystander", 2000)
            self._bystander_run = run_id
            self.wait(
                lambda: self.state(run_id)[0] == RunStatus.PROCESSING,
                120,
                "the bystander run to start",
            )
        return run_id

    def state(self, run_id: int) -> tuple[str, int | None, int]:
        """The run's status, worker id and prospects done."""
        return QualificationRun.objects.values_list("status", "worker_id", "completed").get(
            pk=run_id
        )

    def recoveries(self, run_id: int) -> list[RecoveryEvent]:
        """The run's recovery events, its owner's Continue left out (the drill's own act)."""
        return list(
            RecoveryEvent.objects.filter(run_id=run_id)
            .exclude(source=RecoverySource.CONTINUE)
            .order_by("pk")
        )

    def duplicate_results(self, run_id: int) -> int:
        """Results beyond one per prospect (the database refuses them; the drill checks)."""
        counts = (
            ProspectResult.objects.filter(run_id=run_id).values("prospect").annotate(n=Count("pk"))
        )
        return sum(row["n"] - 1 for row in counts)

    def scorer_calls(self, label: str) -> int:
        return count_calls(str(self.calls_file)).get(label, 0)

    def wait(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Polls `condition` every 0.1 s; returns the seconds it took, or raises TrialFailed."""
        started = time.monotonic()
        while not condition():
            if time.monotonic() - started > timeout:
                raise TrialFailed(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.1)
        return time.monotonic() - started

    @contextlib.contextmanager
    def stopping(self, workers: list[DrillWorker]) -> Iterator[None]:
        """Stops the trial's workers (those in the list when it ends) on the way out."""
        try:
            yield
        finally:
            for worker in workers:
                worker.stop()


class TrialFailed(RuntimeError):
    """A trial could not be completed (a worker did not start, a run was never recovered)."""
