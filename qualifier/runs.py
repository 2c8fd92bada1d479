"""Creating, continuing and counting qualification runs: what the web pages and the API call.

A run, its prospects and its task are created together. When the task queue lives in the
same database (django-tasks-db), the task is enqueued in the run's own transaction, so a crash
can never leave a run without its task; with a queue elsewhere, it is enqueued once the run has
committed (a worker must not pick up a run it cannot see yet), and a run whose enqueue failed
is found by the sweep. Either way the run keeps its task's id.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from recovery import slices
from recovery.models import QualificationRun, RecoverySource, RunStatus
from recovery.sweep import continue_failed_runs

from .conf import conf
from .criteria import Criteria
from .models import Outcome, Prospect, ProspectResult, RunInput
from .prospects import (
    PROSPECT_FIELDS,
    ParsedProspects,
    ProspectData,
    ProspectInputError,
    TooManyProspects,
)

logger = logging.getLogger("qualifier")

#: Rows per INSERT when storing prospects (keeps statements under every database's limits).
INSERT_BATCH_SIZE = 1_000


class RetryNotAllowed(ValueError):
    """The run cannot be continued (or retried); the message says why."""


class TooManyActiveRuns(Exception):
    """The user already has QUALIFIER_MAX_ACTIVE_RUNS_PER_USER pending or processing runs."""

    def __init__(self, active: int, limit: int) -> None:
        self.active = active
        self.limit = limit
        runs = "run" if active == 1 else "runs"
        super().__init__(
            f"You have {active} {runs} pending or processing; at most {limit} may be active at "
            "once. Start this run when one of them has finished."
        )


def check_active_runs(user: Any) -> None:
    """Raises TooManyActiveRuns when `user` may not start another run now.

    Call it inside the transaction that creates the run: it locks the user's row, so two
    requests of one user cannot both pass with the last free place (PostgreSQL; SQLite's
    write lock serialises them anyway).
    """
    list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))
    limit = conf.QUALIFIER_MAX_ACTIVE_RUNS_PER_USER
    active = QualificationRun.objects.filter(user=user).active().count()
    if active >= limit:
        raise TooManyActiveRuns(active, limit)


class DailyProspectLimit(Exception):
    """The run would take the user over QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY."""

    def __init__(self, submitted: int, requested: int, limit: int) -> None:
        self.submitted = submitted
        self.requested = requested
        self.limit = limit
        super().__init__(
            f"You have submitted {submitted:,} prospects in the last 24 hours; with these "
            f"{requested:,} that would be more than the {limit:,} one user may submit per day. "
            "Submit fewer, or try again later."
        )


#: The window of the daily prospect limit: any 24 hours, not a calendar day in some zone.
DAY = dt.timedelta(hours=24)


def check_daily_prospects(user: Any, requested: int) -> None:
    """Raises DailyProspectLimit when `requested` more prospects would take `user` over the
    limit. Call it after check_active_runs, in the same transaction (the user's row is locked,
    so two requests cannot both pass with the last allowance)."""
    limit = conf.QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY
    submitted = (
        QualificationRun.objects.filter(user=user, created_at__gte=timezone.now() - DAY).aggregate(
            total=Sum("total")
        )["total"]
        or 0
    )
    if submitted + requested > limit:
        raise DailyProspectLimit(submitted, requested, limit)


@dataclass
class RunCounts:
    qualified: int = 0
    not_qualified: int = 0
    errored: int = 0

    @property
    def scored(self) -> int:
        return self.qualified + self.not_qualified + self.errored


def create_run(
    *,
    user: Any,
    prospects: Sequence[ProspectData],
    criteria: Criteria | None = None,
    queue_name: str | None = None,
    slice_size: int | None = None,
) -> QualificationRun:
    """A PENDING run over `prospects`, stored with its criteria, and its task enqueued (on
    `queue_name`, or the run task's own queue; the run keeps that queue when it goes back):
    one task, or one per slice for a run of more than `slice_size` prospects (default
    RECOVERY_SLICE_SIZE)."""
    if not prospects:
        raise ProspectInputError("there are no prospects to qualify.")
    limit = conf.QUALIFIER_MAX_PROSPECTS
    if len(prospects) > limit:
        raise TooManyProspects(
            f"{len(prospects):,} prospects were given; at most {limit:,} are allowed per run."
        )
    criteria = criteria or Criteria.defaults()
    with transaction.atomic():
        if getattr(user, "is_authenticated", False):
            check_active_runs(user)
            check_daily_prospects(user, len(prospects))
        run = QualificationRun.objects.create(
            status=RunStatus.PENDING,
            total=len(prospects),
            user=user if getattr(user, "is_authenticated", False) else None,
            criteria=criteria.as_dict(),
        )
        Prospect.objects.bulk_create(
            (
                Prospect(
                    run=run,
                    number=number,
                    **{name: getattr(data, name) for name in PROSPECT_FIELDS},
                )
                for number, data in enumerate(
                    sorted(prospects, key=attrgetter("position")), start=1
                )
            ),
            batch_size=INSERT_BATCH_SIZE,
        )
        if isinstance(prospects, ParsedProspects) and prospects.columns:
            RunInput.objects.create(
                run=run, columns=list(prospects.columns), delimiter=prospects.delimiter
            )
        slices.queue_new_run(run, queue_name, slice_size)
        logger.info(
            "Run %s created with %s prospects%s",
            run.pk,
            run.total,
            f" in {run.slice_count} slices" if run.slice_count else "",
        )
    return run


def continue_run(run: QualificationRun, *, user: Any) -> QualificationRun:
    """The same FAILED run goes back to the queue and finishes the prospects that have no
    result yet; its results stay in one run. Once: a second call while it is pending or
    processing raises RetryNotAllowed and starts nothing (the rows are locked, and the change
    is a conditional FAILED → PENDING)."""
    with transaction.atomic():
        if getattr(user, "is_authenticated", False):
            check_active_runs(user)
        continued = continue_failed_runs([run.pk], source=RecoverySource.CONTINUE, actor=user)
    run.refresh_from_db()
    if continued:
        return run
    state = run.get_status_display().lower()
    if run.is_active:
        raise RetryNotAllowed(
            f"Run {run.pk} is already {state}: it was continued and will finish the prospects "
            "left; it is not started twice."
        )
    if run.status == RunStatus.FAILED:
        raise RetryNotAllowed(
            f"Run {run.pk} has a result for every prospect; there is nothing left to continue."
        )
    raise RetryNotAllowed(f"Run {run.pk} is {state}; only a failed run can be continued.")


def counts_for(runs: Iterable[QualificationRun]) -> dict[int, RunCounts]:
    """Results per outcome for every given run, in one query (zeros for runs without any)."""
    run_ids = [run.pk for run in runs]
    counts = {run_id: RunCounts() for run_id in run_ids}
    if not run_ids:
        return counts
    rows = (
        ProspectResult.objects.filter(run_id__in=run_ids)
        .order_by()
        .values("run_id")
        .annotate(
            qualified=Count("pk", filter=Q(outcome=Outcome.QUALIFIED)),
            not_qualified=Count("pk", filter=Q(outcome=Outcome.NOT_QUALIFIED)),
            errored=Count("pk", filter=Q(outcome=Outcome.ERRORED)),
        )
    )
    for row in rows:
        counts[row["run_id"]] = RunCounts(
            qualified=row["qualified"],
            not_qualified=row["not_qualified"],
            errored=row["errored"],
        )
    return counts
