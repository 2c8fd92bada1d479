"""Executing one run: the worker's side of the run lifecycle.

The worker takes the run with `run.start(worker)` (a compare-and-set, so a run that was already
taken, failed or recovered is left alone), skips every prospect that already has a result (a
run handed back continues where it stopped), scores the rest and writes the results in small
batches; after a death it commits each result until it is past where the dead attempt could
have been, and writes the prospect recovery quarantined (`skip_prospect`) as errored, unscored. Each batch is one transaction that fences first: the conditional progress write
`run.beat(completed=...)` comes before the result rows, so a worker whose run was recovered
meanwhile learns it before it writes anything; it stops, and the refused write is counted
(`FencedWrite`, one row, for /metrics). A scorer's output is made storable before it is written.

Only a lost connection is an outage, waited out with the batch kept; any other database error
is a bug or bad data: logged once with its traceback, and the run fails with that reason.
Liveness is not this module's business (`recovery.liveness`); the run's own `heartbeat_at` is
its last progress. When the worker is asked to stop, the batch in hand is written and the task
ends with `WorkerStopping`; the executor then hands the run back to the queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db import DatabaseError, transaction
from django.db.models import Exists, OuterRef

from recovery import reasons
from recovery.exceptions import WorkerStopping
from recovery.models import FencedWrite, FencedWriteKind, QualificationRun
from recovery.worker import registry
from recovery.worker.outage import retry_outages

from .criteria import Criteria
from .models import Outcome, Prospect, ProspectResult
from .prospects import PROSPECT_FIELDS, ProspectData
from .scoring import Scorer, get_scorer, validate_score

logger = logging.getLogger("qualifier")

#: A batch is written once it holds this many results...
BATCH_MAX_SIZE = 1_000
#: ...or once it has been open this long, so results of slow prospects show up promptly.
BATCH_MAX_SECONDS = 1.0
#: The longest error text stored on an ERRORED result.
MAX_ERROR_LENGTH = 2_000
#: A scorer's reasons are stored as given, up to this many of this length each.
MAX_REASONS = 50
MAX_REASON_LENGTH = 500


def storable(text: str, limit: int) -> str:
    """A scorer's text as the database can store it: no NUL bytes (PostgreSQL refuses them in
    text and JSON), at most `limit` characters."""
    return text.replace("\x00", "\ufffd")[:limit]


class Fenced(Exception):
    """The run is no longer PROCESSING under this worker: stop and write nothing more.

    `kind` names the write that was refused (a `FencedWriteKind`)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


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
    """Runs the run (or slice of a run) `run_id` to its end in this process (the task body)."""
    run = QualificationRun.leases.filter(pk=run_id).first()
    if run is None:
        logger.warning("Run %s does not exist; nothing to do", run_id)
        return ExecutionSummary(run_id=run_id, outcome="missing")
    worker = registry.current()
    if not run.start(worker):
        status = QualificationRun.leases.filter(pk=run_id).values_list("status", flat=True).first()
        logger.info("Run %s was not started: it is %s, not pending", run_id, status)
        return ExecutionSummary(run_id=run_id, outcome="skipped", status=status or "")
    return RunExecution(run, scorer, batch_size=batch_size, batch_seconds=batch_seconds).run()


class RunExecution:
    """One worker's pass over a run (or a slice of one) it has started. Results are written
    under the run a user knows (`whole_run_id`); the lease's own row is the fence."""

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
        self.whole_run_id = run.whole_run_id

    def run(self) -> ExecutionSummary:
        run, summary = self.run_obj, self.summary
        started = time.monotonic()
        logger.info(
            "%s started by %s%s",
            run.label,
            registry.current(),
            f" ({run.total} prospects)" if run.parent_id is None else "",
            extra={
                "event": "run_started",
                "run_id": self.whole_run_id,
                "worker": str(registry.current()),
            },
        )
        try:
            criteria = Criteria.from_dict(self._criteria())
            scorer = self.scorer or get_scorer()
            completed, pending = self._pending()
            completed = self._process(pending, completed, criteria, scorer)
            if not run.complete():
                raise Fenced(FencedWriteKind.COMPLETE)
        except Fenced as fenced:
            summary.outcome = "fenced"
            FencedWrite.objects.record(run, fenced.kind, str(registry.current()))
            run.refresh_from_db(fields=["status", "completed"])
            logger.warning(
                "%s is no longer ours (recovered or failed meanwhile); this worker "
                "stopped and wrote nothing more after %s/%s",
                run.label,
                run.completed,
                run.total,
            )
        except WorkerStopping:
            # The batch in hand is written; the run stays PROCESSING under this worker, and the
            # supervisor hands it back to the queue once this task has ended.
            logger.warning(
                "%s: the worker is stopping; stopped after %s/%s, the run goes back to the queue",
                run.label,
                run.completed,
                run.total,
            )
            raise
        except Exception as exc:
            self._fail(f"unexpected error: {type(exc).__name__}: {exc}", exc)
        else:
            summary.outcome = "completed"
            logger.info(
                "%s completed: %s prospects (%s scored now, %s errored) in %.1fs",
                run.label,
                completed,
                summary.scored,
                summary.errored,
                time.monotonic() - started,
            )
        summary.status = run.status
        summary.completed = run.completed
        return summary

    def _fail(self, reason: str, exc: BaseException) -> None:
        run, summary = self.run_obj, self.summary
        summary.error = reason
        logger.error(
            "%s failed: %s",
            run.label,
            reason,
            exc_info=exc,
            extra={"event": "run_failed", "run_id": self.whole_run_id, "reason": reason},
        )
        try:
            failed = run.fail(reason)
        except DatabaseError:
            logger.exception("%s could not be marked failed; recovery will find it", run.label)
            failed = False
        else:
            if not failed:
                FencedWrite.objects.record(run, FencedWriteKind.FAIL, str(registry.current()))
        summary.outcome = "failed" if failed else "fenced"

    def _criteria(self) -> dict[str, Any]:
        run = self.run_obj
        if run.parent_id is None:
            return run.criteria
        return QualificationRun.objects.values_list("criteria", flat=True).get(pk=run.parent_id)

    def _pending(self) -> tuple[int, list[tuple[int, ProspectData]]]:
        """Prospects of this lease without a result (all of them, unless a pass was cut
        short), and how many already have one."""
        run = self.run_obj
        rows = Prospect.objects.filter(run_id=self.whole_run_id)
        results = ProspectResult.objects.filter(run_id=self.whole_run_id)
        if run.parent_id is not None:
            span = (run.first_number, run.last_number)
            rows = rows.filter(number__range=span)
            results = results.filter(prospect__number__range=span)
        done = results.count()
        if done:
            rows = rows.filter(~Exists(results.filter(prospect=OuterRef("pk"))))
        rows = rows.order_by("number").values_list("pk", *PROSPECT_FIELDS)
        return done, [(row[0], _prospect_data(row[1:])) for row in rows]

    def _process(
        self,
        pending: Sequence[tuple[int, ProspectData]],
        completed: int,
        criteria: Criteria,
        scorer: Scorer,
    ) -> int:
        run = self.run_obj
        # After a death, each result is committed as it is made until the attempt is past any
        # batch the dead one could have had in hand, so where a next death stops is exact: on
        # the first prospect without a result. Without a death, batches as usual.
        exact_until = completed + self.batch_size if run.deaths else completed
        batch: list[ProspectResult] = []
        opened = time.monotonic()
        for number, (prospect_id, data) in enumerate(pending, start=completed + 1):
            if registry.stop_requested.is_set():
                break
            if number == run.skip_prospect:
                batch.append(self._quarantined(prospect_id, number))
            else:
                batch.append(self._score(prospect_id, data, criteria, scorer))
            if (
                len(batch) >= self.batch_size
                or number <= exact_until
                or time.monotonic() - opened >= self.batch_seconds
            ):
                completed = self._write(batch, completed)
                batch = []
                opened = time.monotonic()
        if batch:
            completed = self._write(batch, completed)
        if registry.stop_requested.is_set() and completed < self.run_obj.total:
            raise WorkerStopping("the worker is shutting down; the run goes back to the queue")
        return completed

    def _quarantined(self, prospect_id: int, number: int) -> ProspectResult:
        """The result of the prospect recovery quarantined (it crashed its worker twice): an
        error, written without calling the scorer again."""
        run = self.run_obj
        self.summary.errored += 1
        logger.warning(
            "%s: prospect %s of %s %s",
            run.label,
            number,
            run.total,
            reasons.QUARANTINED_ERROR,
            extra={
                "event": "prospect_quarantined",
                "run_id": self.whole_run_id,
                "prospect": number,
            },
        )
        return ProspectResult(
            run_id=self.whole_run_id,
            prospect_id=prospect_id,
            outcome=Outcome.ERRORED,
            score=None,
            reasons=[],
            error=reasons.QUARANTINED_ERROR,
        )

    def _score(
        self, prospect_id: int, data: ProspectData, criteria: Criteria, scorer: Scorer
    ) -> ProspectResult:
        run_id = self.whole_run_id
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
                error=storable(f"{type(exc).__name__}: {exc}", MAX_ERROR_LENGTH),
            )
        return ProspectResult(
            run_id=run_id,
            prospect_id=prospect_id,
            outcome=Outcome.QUALIFIED if score.qualified else Outcome.NOT_QUALIFIED,
            score=score.score,
            reasons=[storable(str(r), MAX_REASON_LENGTH) for r in score.reasons[:MAX_REASONS]],
        )

    def _write(self, batch: list[ProspectResult], completed: int) -> int:
        """Results and progress in one transaction, fenced by the beat that ends it. A database
        that is away is waited for (the batch is kept) rather than failing the run."""
        total = completed + len(batch)
        written = retry_outages(
            self.run_obj.label,
            lambda: self._write_once(batch, total),
            registry.stop_requested,
        )
        if written is None:
            raise WorkerStopping("the worker stopped while the database was unavailable")
        if not written:
            raise Fenced(FencedWriteKind.PROGRESS)
        self.summary.batches += 1
        return total

    def _write_once(self, batch: list[ProspectResult], total: int) -> bool:
        """The conditional progress write comes first: zero rows means the run is no longer
        this worker's, and nothing else is written (never a constraint violation later)."""
        with transaction.atomic():
            if not self.run_obj.beat(completed=total):
                return False
            ProspectResult.objects.bulk_create(batch)
        return True


def _prospect_data(row: Sequence[Any]) -> ProspectData:
    """A row of `PROSPECT_FIELDS` as ProspectData.

    This runs once per prospect, and a frozen dataclass's __init__ sets each field through
    object.__setattr__, which costs more than scoring does. The row was validated when it was
    stored, so the instance's fields are filled in directly.
    """
    data = object.__new__(ProspectData)
    data.__dict__.update(zip(PROSPECT_FIELDS, row, strict=True))
    return data
