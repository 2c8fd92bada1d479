"""Executing one run: the worker's side of the run lifecycle.

The worker takes the run with `run.start(owner)` (a compare-and-set, so a run that was already
taken, failed or recovered is left alone), scores its prospects and writes the results in
small batches. Each batch is one transaction: the result rows, then the progress, written by
the conditional `run.beat(completed=...)` as its last statement. If that beat finds the run no
longer PROCESSING under this owner (recovery failed it meanwhile), the batch is rolled back and
the worker stops: it is fenced off and writes nothing more.

Between batches a small heartbeat thread, with its own database connection, beats whenever
`RECOVERY_HEARTBEAT_SECONDS` pass without a write, so a single slow prospect (an LLM call) does
not make a live run look stuck. When prospects are fast, the batch writes are the heartbeats
and the thread never writes.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db import DatabaseError, connections, transaction
from django.db.models import Exists, OuterRef

from recovery.conf import conf as recovery_conf
from recovery.models import QualificationRun, current_owner

from .criteria import Criteria
from .models import Outcome, Prospect, ProspectResult
from .prospects import PROSPECT_FIELDS, ProspectData
from .scoring import Scorer, get_scorer, validate_score

logger = logging.getLogger("qualifier")

#: A batch is written once it holds this many results...
BATCH_MAX_SIZE = 1_000
#: ...or once it has been open this long, so results of slow prospects show up promptly.
BATCH_MAX_SECONDS = 1.0
#: A heartbeat that failed on a database error is retried after this many seconds.
HEARTBEAT_RETRY_SECONDS = 1.0
#: The longest error text stored on an ERRORED result.
MAX_ERROR_LENGTH = 2_000


class Fenced(Exception):
    """The run is no longer PROCESSING under this worker: stop and write nothing more."""


@dataclass
class ExecutionSummary:
    """What one execution did; the task's return value (JSON)."""

    run_id: int
    outcome: str  # completed, failed, fenced, skipped, missing
    status: str = ""
    completed: int = 0
    total: int = 0
    scored: int = 0
    errored: int = 0
    batches: int = 0
    heartbeats: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def execute(
    run_id: int,
    *,
    scorer: Scorer | None = None,
    batch_size: int = BATCH_MAX_SIZE,
    batch_seconds: float = BATCH_MAX_SECONDS,
) -> ExecutionSummary:
    """Runs the run `run_id` to its end in this process (the task body)."""
    run = QualificationRun.objects.filter(pk=run_id).first()
    if run is None:
        logger.warning("Run %s does not exist; nothing to do", run_id)
        return ExecutionSummary(run_id=run_id, outcome="missing")
    owner = current_owner()
    if not run.start(owner):
        status = QualificationRun.objects.filter(pk=run_id).values_list("status", flat=True).first()
        logger.info("Run %s was not started: it is %s, not pending", run_id, status)
        return ExecutionSummary(run_id=run_id, outcome="skipped", status=status or "")
    return RunExecution(run, scorer, batch_size=batch_size, batch_seconds=batch_seconds).run()


class RunExecution:
    """One worker's pass over a run it has started."""

    def __init__(
        self,
        run: QualificationRun,
        scorer: Scorer | None = None,
        *,
        batch_size: int = BATCH_MAX_SIZE,
        batch_seconds: float = BATCH_MAX_SECONDS,
    ) -> None:
        self.run_obj = run
        self.scorer = scorer
        self.batch_size = batch_size
        self.batch_seconds = batch_seconds
        self.summary = ExecutionSummary(run_id=run.pk, outcome="", total=run.total)
        self.heartbeat = Heartbeat(run, recovery_conf.RECOVERY_HEARTBEAT_SECONDS)

    def run(self) -> ExecutionSummary:
        run, summary = self.run_obj, self.summary
        started = time.monotonic()
        logger.info("Run %s started by %s (%s prospects)", run.pk, run.owner, run.total)
        try:
            criteria = Criteria.from_dict(run.criteria)
            scorer = self.scorer or get_scorer()
            completed, pending = self._pending()
            with self.heartbeat:
                completed = self._process(pending, completed, criteria, scorer)
            if not run.complete():
                raise Fenced
        except Fenced:
            summary.outcome = "fenced"
            run.refresh_from_db(fields=["status", "completed"])
            logger.warning(
                "Run %s is no longer ours (recovered or failed meanwhile); this worker "
                "stopped and wrote nothing more after %s/%s",
                run.pk,
                run.completed,
                run.total,
            )
        except Exception as exc:
            self._fail(f"unexpected error: {type(exc).__name__}: {exc}", exc)
        except BaseException as exc:
            # The worker process is being stopped (a second SIGTERM, Ctrl+C): say so on the
            # run now instead of leaving it for recovery, then let the process stop.
            self._fail(f"the worker was stopped ({type(exc).__name__})", exc)
            raise
        else:
            summary.outcome = "completed"
            logger.info(
                "Run %s completed: %s prospects (%s scored now, %s errored) in %.1fs",
                run.pk,
                completed,
                summary.scored,
                summary.errored,
                time.monotonic() - started,
            )
        finally:
            summary.heartbeats = self.heartbeat.beats
        summary.status = run.status
        summary.completed = run.completed
        return summary

    def _fail(self, reason: str, exc: BaseException) -> None:
        run, summary = self.run_obj, self.summary
        summary.error = reason
        logger.error("Run %s failed: %s", run.pk, reason, exc_info=exc)
        try:
            failed = run.fail(reason)
        except DatabaseError:
            logger.exception("Run %s could not be marked failed; recovery will find it", run.pk)
            failed = False
        summary.outcome = "failed" if failed else "fenced"

    def _pending(self) -> tuple[int, list[tuple[int, ProspectData]]]:
        """Prospects without a result in this run (all of them, unless a pass was cut short),
        and how many already have one."""
        run = self.run_obj
        done = ProspectResult.objects.filter(run=run).count()
        rows = Prospect.objects.filter(run=run)
        if done:
            has_result = ProspectResult.objects.filter(run=run, prospect=OuterRef("pk"))
            rows = rows.filter(~Exists(has_result))
        rows = rows.order_by("position").values_list("pk", *PROSPECT_FIELDS)
        return done, [(row[0], _prospect_data(row[1:])) for row in rows]

    def _process(
        self,
        pending: Sequence[tuple[int, ProspectData]],
        completed: int,
        criteria: Criteria,
        scorer: Scorer,
    ) -> int:
        batch: list[ProspectResult] = []
        opened = time.monotonic()
        for prospect_id, data in pending:
            if self.heartbeat.lost.is_set():
                raise Fenced
            batch.append(self._score(prospect_id, data, criteria, scorer))
            if len(batch) >= self.batch_size or time.monotonic() - opened >= self.batch_seconds:
                completed = self._write(batch, completed)
                batch = []
                opened = time.monotonic()
        if self.heartbeat.lost.is_set():
            raise Fenced
        if batch:
            completed = self._write(batch, completed)
        return completed

    def _score(
        self, prospect_id: int, data: ProspectData, criteria: Criteria, scorer: Scorer
    ) -> ProspectResult:
        run_id = self.run_obj.pk
        self.summary.scored += 1
        try:
            score = validate_score(scorer(data, criteria), criteria)
        except Exception as exc:
            self.summary.errored += 1
            logger.warning(
                "Run %s: prospect at position %s errored: %s: %s",
                run_id,
                data.position,
                type(exc).__name__,
                exc,
            )
            return ProspectResult(
                run_id=run_id,
                prospect_id=prospect_id,
                outcome=Outcome.ERRORED,
                score=None,
                reasons=[],
                error=f"{type(exc).__name__}: {exc}"[:MAX_ERROR_LENGTH],
            )
        return ProspectResult(
            run_id=run_id,
            prospect_id=prospect_id,
            outcome=Outcome.QUALIFIED if score.qualified else Outcome.NOT_QUALIFIED,
            score=score.score,
            reasons=list(score.reasons),
        )

    def _write(self, batch: list[ProspectResult], completed: int) -> int:
        """Results and progress in one transaction, fenced by the beat that ends it."""
        total = completed + len(batch)
        with self.heartbeat.lock, transaction.atomic():
            ProspectResult.objects.bulk_create(batch)
            if not self.run_obj.beat(completed=total):
                raise Fenced  # rolls the batch back
        self.heartbeat.beaten()
        self.summary.batches += 1
        return total


def _prospect_data(row: Sequence[Any]) -> ProspectData:
    """A row of `PROSPECT_FIELDS` as ProspectData.

    This runs once per prospect, and a frozen dataclass's __init__ sets each field through
    object.__setattr__, which costs more than scoring does. The row was validated when it was
    stored, so the instance's fields are filled in directly.
    """
    data = object.__new__(ProspectData)
    data.__dict__.update(zip(PROSPECT_FIELDS, row, strict=True))
    return data


class Heartbeat:
    """Beats for the run from a thread whenever `interval` seconds pass without a write.

    `lock` serialises this process's writes to the run (a batch and a beat never race), and
    `lost` is set when a beat finds the run no longer ours.
    """

    def __init__(self, run: QualificationRun, interval: float) -> None:
        self.run = copy.copy(run)  # the thread's own instance: same pk, owner and attempt
        self.interval = interval
        self.lock = threading.Lock()
        self.lost = threading.Event()
        self.beats = 0
        self._stop = threading.Event()
        self._last = time.monotonic()
        self._thread: threading.Thread | None = None

    def beaten(self) -> None:
        """Called after every write that beat for the run."""
        self._last = time.monotonic()

    def __enter__(self) -> Heartbeat:
        self._last = time.monotonic()
        self._thread = threading.Thread(
            target=self._loop, name=f"heartbeat-run-{self.run.pk}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        try:
            while not self._stop.wait(max(0.0, self._last + self.interval - time.monotonic())):
                if time.monotonic() - self._last < self.interval:
                    continue  # a batch was written while we waited
                with self.lock:
                    if self._stop.is_set():
                        return
                    if not self._beat():
                        continue
                if self.lost.is_set():
                    return
        finally:
            connections.close_all()  # this thread's own connection

    def _beat(self) -> bool:
        """One beat; False if it could not be written (retried shortly)."""
        try:
            alive = self.run.beat()
        except DatabaseError as exc:
            logger.warning("Run %s: heartbeat failed, retrying: %s", self.run.pk, exc)
            connections.close_all()  # reconnect on the next try
            self._last = time.monotonic() - self.interval + HEARTBEAT_RETRY_SECONDS
            return False
        self._last = time.monotonic()
        self.beats += 1
        logger.debug("Run %s: heartbeat from the heartbeat thread", self.run.pk)
        if not alive:
            logger.warning("Run %s: heartbeat refused, the run is no longer ours", self.run.pk)
            self.lost.set()
        return True
