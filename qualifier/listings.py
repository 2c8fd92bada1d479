"""What the pages and the API both show of runs and results: page sizes, sorts, durations.

One home for what `qualifier.views` and `qualifier.api` share, so neither imports the other.
"""

from __future__ import annotations

import datetime as dt

from django.db.models import F, QuerySet

from recovery import outlook
from recovery.models import QualificationRun, RunStatus

from .models import ProspectResult

#: Results per page, on the run's page and in the API.
RESULTS_PAGE_SIZE = 50
#: The runs page lists at most this many active runs (a user rarely has more than a few).
ACTIVE_LIMIT = 100
#: ?sort= values for results; the default is the input's order.
RESULT_SORTS = {
    "score": (F("score").asc(nulls_last=True), "prospect__position"),
    "-score": (F("score").desc(nulls_last=True), "prospect__position"),
}


def with_recovery(runs: QuerySet[QualificationRun]) -> QuerySet[QualificationRun]:
    """Each run with its liveness as `recovery.liveness` judges it, on the database's clock,
    and what its outlook reads, for `run.activity()`, `run.duration()` and `outlook_of(run)`
    (last activity, time queued, worker silent, place in line), in the query's own subqueries."""
    return outlook.annotate(runs)


def run_duration(run: QualificationRun) -> dt.timedelta | None:
    """How long the run worked, summed over its attempts (a dead attempt counts until its last
    sign of life, not until it was found dead)."""
    return run.duration()


def ordered_results(run: QualificationRun, sort: str | None) -> QuerySet[ProspectResult]:
    """A run's results with their prospects, by score when `sort` asks, else input order."""
    order = RESULT_SORTS.get(sort or "", ("prospect__position",))
    return ProspectResult.objects.filter(run=run).select_related("prospect").order_by(*order)


def percent(run: QualificationRun) -> int:
    return 100 * run.completed // run.total if run.total else 0


def next_step(run: QualificationRun) -> str:
    """What the owner of a failed run can do now, said after its failure reason (which says
    what happened): continue it for the prospects left, or take the results it has."""
    if run.status != RunStatus.FAILED:
        return ""
    return outlook.outlook_of(run).text
