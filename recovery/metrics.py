"""The figures behind /metrics and /readyz, read from the database at scrape time.

Every process and host answers the same figures, since they are counted from the shared tables
(runs, workers, recovery events, refused writes, sweep tallies) rather than from counters kept
in one process's memory; so no Prometheus multi-process mode is needed behind gunicorn. A scrape
makes a fixed number of aggregate queries whatever the size of the tables.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from . import liveness
from .clock import SecondsSince
from .models import (
    DEAD_RUN_CAUSES,
    FINISHED_STATUSES,
    SWEEP_SECONDS_BUCKETS,
    FencedWrite,
    FencedWriteKind,
    QualificationRun,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    SweepOutcome,
    SweepTally,
    Worker,
)

#: Above this many runs (as PostgreSQL's statistics count them), finished runs are estimated.
EXACT_COUNT_LIMIT = 20_000
#: Upper bounds (seconds) of the histogram of how long dead runs stayed active.
DEAD_SECONDS_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1800)


@dataclass
class Figures:
    """What the database says about runs, workers and recoveries right now."""

    runs_by_status: dict[str, int]
    dead_runs: int
    queued_runs: int
    oldest_queued_seconds: int | None
    live_workers: int
    dead_workers: int
    recoveries: dict[tuple[str, str, str], int] = field(default_factory=dict)
    continues: int = 0
    quarantined_prospects: int = 0
    last_recovery_seconds: int | None = None
    dead_seconds_buckets: list[tuple[int, int]] = field(default_factory=list)
    dead_seconds_count: int = 0
    dead_seconds_sum: float = 0.0
    fenced_writes: dict[str, int] = field(default_factory=dict)
    sweeps: list[SweepRow] = field(default_factory=list)
    #: Slices of runs worked as slices, queued and running.
    slices: dict[str, int] = field(default_factory=dict)

    @property
    def last_successful_sweep_seconds(self) -> int | None:
        return last_sweep_seconds(self.sweeps, SweepOutcome.OK)


@dataclass(frozen=True)
class SweepRow:
    """One row of the sweep tallies, with the age of its last sweep on the database's clock."""

    source: str
    outcome: str
    le: str
    sweeps: int
    seconds: float
    last_seconds: int


def sweep_rows() -> list[SweepRow]:
    """Every sweep tally in one query (a few dozen rows at most)."""
    rows = SweepTally.objects.order_by().values_list(
        "source", "outcome", "le", "sweeps", "seconds", SecondsSince("last_at")
    )
    return [SweepRow(*row) for row in rows]


def last_sweep_seconds(rows: list[SweepRow], outcome: str) -> int | None:
    """Seconds since the last sweep that ended with `outcome` (`ok`: the last successful
    one), by any process on any host; None before the first."""
    ages = [row.last_seconds for row in rows if row.outcome == outcome]
    return min(ages) if ages else None


def rows_dead_runs(rule: liveness.Rule | None = None) -> int:
    """Dead PROCESSING runs as the rows alone tell (worker gone or silent, no progress): what
    every host agrees on. A sweep also asks this host's process table, which a scrape does not."""
    rule = rule or liveness.Rule.current()
    return liveness.dead_runs(rule).filter(status=RunStatus.PROCESSING).count()


def finished_runs_by_status() -> dict[str, int]:
    """COMPLETED and FAILED runs: counted exactly up to EXACT_COUNT_LIMIT rows in the table;
    above, on PostgreSQL, the planner's estimate (the table's row count times each status's
    frequency, as ANALYZE last sampled them), since an exact count reads every row."""
    if connection.vendor == "postgresql":
        table = QualificationRun._meta.db_table
        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT c.reltuples, s.most_common_vals::text::text[], s.most_common_freqs
                FROM pg_class c
                LEFT JOIN pg_stats s ON s.schemaname = current_schema()
                    AND s.tablename = c.relname AND s.attname = 'status'
                WHERE c.oid = %s::regclass
                """,
                [table],
            )
            rows, values, frequencies = cursor.fetchone()
        if rows > EXACT_COUNT_LIMIT and values:
            estimated = dict(zip(values, frequencies, strict=True))
            return {
                status: round(rows * estimated.get(status, 0.0)) for status in FINISHED_STATUSES
            }
    finished = QualificationRun.objects.finished().order_by().values_list("status")
    return dict(finished.annotate(n=Count("*")))


def dead_seconds_histogram(
    since: dt.datetime | None = None,
) -> tuple[list[tuple[int, int]], int, float]:
    """(cumulative buckets, count, sum) of how long dead runs stayed active after their last
    heartbeat until recovered (`since` a moment, else ever): one pass over the events.

    Only runs found dead are counted (`DEAD_RUN_CAUSES`): a run handed back at shutdown, failed
    by force or continued after failing was not dead, or no longer active. The durations stay
    intervals on PostgreSQL (comparing intervals is cheap; turning each into seconds is not).
    """
    events = RecoveryEvent.objects.order_by().filter(
        cause__in=DEAD_RUN_CAUSES, heartbeat_at__isnull=False
    )
    if since is not None:
        events = events.filter(created_at__gte=since)
    stayed = events.annotate(
        stayed=ExpressionWrapper(F("created_at") - F("heartbeat_at"), DurationField())
    ).values("stayed")
    inner, params = stayed.query.sql_with_params()
    if connection.vendor == "postgresql":
        bound_sql, total_sql = "interval '{} seconds'", "EXTRACT(EPOCH FROM SUM(stayed))"
    else:  # Django stores and subtracts durations in microseconds elsewhere
        bound_sql, total_sql = "{}000000", "SUM(stayed) / 1000000.0"
    buckets = ", ".join(
        f"COUNT(*) FILTER (WHERE stayed <= {bound_sql.format(bound)})"
        for bound in DEAD_SECONDS_BUCKETS
    )
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), COALESCE({total_sql}, 0), {buckets} FROM ({inner}) AS stayed",  # noqa: S608 - fixed numbers and Django's SQL
            params,
        )
        count, total, *cumulative = cursor.fetchone()
    return list(zip(DEAD_SECONDS_BUCKETS, cumulative, strict=True)), count, float(total)


def worker_counts() -> tuple[int, int]:
    """(live, dead-but-registered) workers, in one query on the database's clock."""
    live, dead, _ = worker_figures()
    return live, dead


def worker_figures() -> tuple[int, int, int | None]:
    """(live, dead-but-registered) workers and the seconds since the oldest live one
    registered (None without one), in one query on the database's clock."""
    alive = Q(pk__in=liveness.alive_workers().values("pk"))
    counts = Worker.objects.aggregate(
        live=Count("pk", filter=alive),
        total=Count("pk"),
        up=SecondsSince(Min("registered_at", filter=alive)),
    )
    return counts["live"], counts["total"] - counts["live"], counts["up"]


def runs_by_status() -> dict[str, int]:
    """Every status, active ones exactly (from the partial index over them), finished ones as
    `finished_runs_by_status` counts them."""
    by_status = dict.fromkeys(RunStatus.values, 0)
    active = QualificationRun.objects.active().order_by().values_list("status")
    by_status.update(active.annotate(n=Count("*")))
    by_status.update(finished_runs_by_status())
    return by_status


def queue_depth() -> tuple[int, int | None]:
    """(queued runs, seconds the longest-waiting one has waited or None), from the partial
    index over active runs, on the database's clock."""
    queue = QualificationRun.objects.filter(status=RunStatus.PENDING).aggregate(
        queued=Count("pk"), oldest=SecondsSince(Min("queued_at"))
    )
    return queue["queued"], queue["oldest"]


def slices_in_flight() -> dict[str, int]:
    """Slices queued (PENDING) and running (PROCESSING), from the index over slices."""
    states = {RunStatus.PENDING: "queued", RunStatus.PROCESSING: "running"}
    rows = (
        QualificationRun.leases.filter(parent__isnull=False, status__in=list(states))
        .order_by()
        .values_list("status")
        .annotate(n=Count("*"))
    )
    return dict.fromkeys(states.values(), 0) | {states[status]: n for status, n in rows}


def recovery_counts(since: dt.datetime | None = None) -> dict[tuple[str, str, str], int]:
    """Recoveries by (source, to_status, cause), since a moment or ever. An owner's Continue is
    not a recovery (nothing was dead): `event_figures` counts those apart."""
    events = RecoveryEvent.objects.order_by().exclude(source=RecoverySource.CONTINUE)
    if since is not None:
        events = events.filter(created_at__gte=since)
    counted = events.values_list("source", "to_status", "cause").annotate(n=Count("*"))
    return {(source, to_status, cause): n for source, to_status, cause, n in counted}


@dataclass
class EventFigures:
    """What /metrics reads of the audit trail, in one grouped pass over the events."""

    recoveries: dict[tuple[str, str, str], int]
    continues: int
    quarantined: int
    last_recovery_seconds: int | None


def event_figures() -> EventFigures:
    """Recoveries by (source, to_status, cause), Continues (not recoveries: nothing was dead),
    quarantined prospects and the age of the last recovery, from one grouped query."""
    rows = (
        RecoveryEvent.objects.order_by()
        .values_list("source", "to_status", "cause")
        .annotate(
            n=Count("*"),
            quarantined=Count("pk", filter=Q(quarantined_prospect__isnull=False)),
            last=SecondsSince(Max("created_at")),
        )
    )
    figures = EventFigures({}, 0, 0, None)
    for source, to_status, cause, n, quarantined, last in rows:
        figures.quarantined += quarantined
        if source == RecoverySource.CONTINUE:
            figures.continues += n
            continue
        figures.recoveries[(source, to_status, cause)] = n
        if figures.last_recovery_seconds is None or last < figures.last_recovery_seconds:
            figures.last_recovery_seconds = last
    return figures


def collect() -> Figures:
    """At most eleven aggregate queries, each served by an index, the statistics or a small
    table (the events and refused-writes tables are read whole: their size is the number of
    recoveries and refusals, not of runs; the sweep tallies are a few dozen rows)."""
    queued, oldest = queue_depth()
    live, dead = worker_counts()
    events = event_figures()
    figures = Figures(
        runs_by_status=runs_by_status(),
        dead_runs=rows_dead_runs(),
        queued_runs=queued,
        oldest_queued_seconds=oldest,
        live_workers=live,
        dead_workers=dead,
        recoveries=events.recoveries,
        continues=events.continues,
        quarantined_prospects=events.quarantined,
        last_recovery_seconds=events.last_recovery_seconds,
    )
    figures.dead_seconds_buckets, figures.dead_seconds_count, figures.dead_seconds_sum = (
        dead_seconds_histogram()
    )
    fenced = FencedWrite.objects.order_by().values_list("kind").annotate(n=Count("*"))
    figures.fenced_writes = dict.fromkeys(FencedWriteKind.values, 0) | dict(fenced)
    figures.sweeps = sweep_rows()
    figures.slices = slices_in_flight()
    return figures


class RecoveryCollector:
    """A prometheus_client collector that reads `collect()` on every scrape."""

    def collect(self) -> Iterator[Metric]:
        figures = collect()
        runs = GaugeMetricFamily(
            "qualifier_runs",
            "Qualification runs by status (pending and processing exact; completed and failed "
            f"estimated from PostgreSQL's statistics above {EXACT_COUNT_LIMIT:,} runs).",
            labels=["status"],
        )
        for status, count in sorted(figures.runs_by_status.items()):
            runs.add_metric([status.lower()], count)
        yield runs
        yield GaugeMetricFamily(
            "qualifier_dead_runs",
            "Processing runs (or slices of a run worked as slices) that are dead right now "
            "(worker gone or silent, or no progress) and not yet recovered.",
            value=figures.dead_runs,
        )
        yield GaugeMetricFamily(
            "qualifier_queued_runs",
            "Runs waiting in the queue (PENDING).",
            value=figures.queued_runs,
        )
        yield GaugeMetricFamily(
            "qualifier_oldest_queued_seconds",
            "How long the longest-waiting queued run has waited (0 with an empty queue).",
            value=figures.oldest_queued_seconds or 0,
        )
        slices = GaugeMetricFamily(
            "qualifier_slices",
            "Slices of runs worked as slices (one run on many workers), queued or running.",
            labels=["state"],
        )
        for state, count in sorted(figures.slices.items()):
            slices.add_metric([state], count)
        yield slices
        workers = GaugeMetricFamily(
            "qualifier_workers",
            "Registered workers: live (beat within RECOVERY_WORKER_TIMEOUT_SECONDS) or dead.",
            labels=["state"],
        )
        workers.add_metric(["live"], figures.live_workers)
        workers.add_metric(["dead"], figures.dead_workers)
        yield workers
        recoveries = CounterMetricFamily(
            "qualifier_recoveries",
            "Runs recovered, by who recovered them, what the policy made of them, and why.",
            labels=["source", "to_status", "cause"],
        )
        for (source, to_status, cause), count in sorted(figures.recoveries.items()):
            recoveries.add_metric([source, to_status.lower(), cause or "none"], count)
        yield recoveries
        yield CounterMetricFamily(
            "qualifier_continues",
            "Failed runs continued (back in the queue) by their owner or an operator: not "
            "recoveries, so not in qualifier_recoveries_total.",
            value=figures.continues,
        )
        yield CounterMetricFamily(
            "qualifier_quarantined_prospects",
            "Prospects that crashed their worker twice under the resume policy: written to the "
            "results as errored and skipped, while their run went on.",
            value=figures.quarantined_prospects,
        )
        handed_back = sum(
            count
            for (source, _, _), count in figures.recoveries.items()
            if source == RecoverySource.SHUTDOWN
        )
        yield CounterMetricFamily(
            "qualifier_runs_handed_back_at_shutdown",
            "Runs a stopping worker handed back (recoveries with source=shutdown).",
            value=handed_back,
        )
        if figures.last_recovery_seconds is not None:
            yield GaugeMetricFamily(
                "qualifier_last_recovery_age_seconds",
                "Seconds since the last recovery event (absent before the first one).",
                value=figures.last_recovery_seconds,
            )
        yield HistogramMetricFamily(
            "qualifier_dead_run_active_seconds",
            "How long a dead run stayed active after its last heartbeat until it was recovered "
            "(runs found dead only: not hand-backs at shutdown, forced failures or continues).",
            buckets=[
                *((str(float(bound)), count) for bound, count in figures.dead_seconds_buckets),
                ("+Inf", figures.dead_seconds_count),
            ],
            sum_value=figures.dead_seconds_sum,
        )
        fenced = CounterMetricFamily(
            "qualifier_fenced_writes",
            "Writes a worker made to a run it no longer owned (recovery took it), refused by "
            "the fencing token: results and progress, completing, failing, handing back.",
            labels=["kind"],
        )
        for kind, count in sorted(figures.fenced_writes.items()):
            fenced.add_metric([kind], count)
        yield fenced
        yield from sweep_metrics(figures)


def sweep_metrics(figures: Figures) -> Iterator[Metric]:
    """The sweeps of every process and host, from their tallies."""
    sweeps = CounterMetricFamily(
        "qualifier_sweeps",
        "Recovery sweeps (dry runs excluded), by source and outcome: ok (ran to its end), "
        "skipped (another process was sweeping), error.",
        labels=["source", "outcome"],
    )
    totals: dict[tuple[str, str], int] = {}
    for row in figures.sweeps:
        totals[(row.source, row.outcome)] = totals.get((row.source, row.outcome), 0) + row.sweeps
    for (source, outcome), count in sorted(totals.items()):
        sweeps.add_metric([source, outcome], count)
    yield sweeps
    duration = HistogramMetricFamily(
        "qualifier_sweep_duration_seconds",
        "How long sweeps that ran to their end took, by source.",
        labels=["source"],
    )
    by_source: dict[str, dict[float, SweepRow]] = {}
    for row in figures.sweeps:
        if row.outcome == SweepOutcome.OK:
            by_source.setdefault(row.source, {})[float(row.le)] = row
    for source, rows in sorted(by_source.items()):
        bounds = sorted({*map(float, SWEEP_SECONDS_BUCKETS), *rows, math.inf})
        cumulative, buckets = 0, []
        for bound in bounds:
            cumulative += rows[bound].sweeps if bound in rows else 0
            buckets.append(("+Inf" if bound == math.inf else str(bound), cumulative))
        total = sum(row.seconds for row in rows.values())
        duration.add_metric([source], buckets, sum_value=total)
    yield duration
    last = figures.last_successful_sweep_seconds
    if last is not None:
        yield GaugeMetricFamily(
            "qualifier_last_successful_sweep_age_seconds",
            "Seconds since the last sweep that ran to its end, by any process on any host "
            "(absent before the first one).",
            value=last,
        )
