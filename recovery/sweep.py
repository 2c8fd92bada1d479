"""The sweep: the one function that recovers dead runs, and the transitions it shares.

The startup hook, the periodic sweeper, the `recover_stuck_runs` command, the admin actions and
the API call `recover_stuck_runs()` and only format its report; a stopping or crashed worker
gives its lease back through `hand_back()`, and a failed run goes back to the queue through
`continue_failed_runs()`. "Dead" is `recovery.liveness`'s; the reasons are `recovery.reasons`'.

One batch loop for both databases and both policies: take the single-flight lock (before any
read, so a process that loses the race does no work); per batch, read the dead runs locked
(`FOR UPDATE SKIP LOCKED` where the database has it; SQLite holds its write lock), decide each
one (fail, resume, quarantine the prospect that crashed its worker twice, or give up after
RECOVERY_MAX_ATTEMPTS deaths), write the transitions, the events and the task rows, commit,
and send `run_recovered`. A run that beat or completed meanwhile no longer matches the locked
read, so recovery never fails a live or finished run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import (
    Case,
    CharField,
    F,
    FloatField,
    IntegerField,
    PositiveIntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Now

from . import liveness, queue, reasons, slices
from .clock import SecondsBetween
from .conf import POLICIES, POLICY_RESUME, conf
from .models import (
    ACTIVE_STATUSES,
    DEAD_RUN_CAUSES,
    FINISHED_STATUSES,
    FencedWrite,
    FencedWriteKind,
    QualificationRun,
    RecoveryCause,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    SweepOutcome,
    SweepTally,
    Worker,
    last_sign_of_life,
)
from .report import DEFAULT_LIST_LIMIT, RecoveredRun, RecoveryReport, RunSnapshot, SkipReason
from .signals import run_recovered

logger = logging.getLogger("recovery")

#: How many runs one batch recovers: a few statements per batch, whatever its size (SQLite
#: allows 32,766 parameters; a batch's ids appear in at most three lists).
BATCH_SIZE = 10_000
#: Events per INSERT (SQLite allows 32,766 parameters: 16 per event).
EVENT_ROWS_PER_INSERT = 2_000
#: Sweeps on PostgreSQL are single-flight across hosts under this advisory lock key.
SWEEP_LOCK_KEY = 0x5155414C  # "QUAL"
#: The sources that skip a sweep while another one runs (an operator's sweep waits instead).
AUTOMATIC_SOURCES = frozenset({RecoverySource.STARTUP, RecoverySource.SWEEPER})
#: An automatic sweep never holds a server's start or a worker for longer than this.
STARTUP_STATEMENT_TIMEOUT_MS = 30_000
SKIPPED = "another process is recovering stuck runs right now"


class RecoveryInputError(ValueError):
    """Bad arguments to a sweep: nothing was changed."""


class UnknownRuns(RecoveryInputError):
    """Run ids that name no run: nothing was changed."""

    def __init__(self, run_ids: list[int]) -> None:
        self.run_ids = run_ids
        super().__init__("No qualification run with id " + ", ".join(map(str, run_ids)))


# --- what a sweep reads --------------------------------------------------------------------------


def stuck_runs(timeout_minutes: int | None = None) -> QuerySet[QualificationRun]:
    """The dead runs right now (a query: it changes nothing)."""
    rule = liveness.Rule.current(stuck_timeout_minutes=_timeout(timeout_minutes), local=True)
    return liveness.dead_runs(rule)


def _candidates(
    rule: liveness.Rule, run_ids: Sequence[int] | None, force: bool
) -> QuerySet[QualificationRun]:
    """The runs a sweep may recover: dead ones, or with `force` any named active one."""
    if force:
        runs = QualificationRun.leases.active().annotate(
            cause=Value(RecoveryCause.FORCED, output_field=CharField())
        )
    else:
        runs = liveness.dead_runs(rule)
    if run_ids is None:
        return runs
    return runs.filter(Q(pk__in=run_ids) | Q(parent_id__in=run_ids))  # a run: its slices too


def _timeout(timeout_minutes: int | None) -> int:
    if timeout_minutes is None:
        return conf.STUCK_RUN_TIMEOUT_MINUTES
    if isinstance(timeout_minutes, bool) or not isinstance(timeout_minutes, int):
        raise RecoveryInputError(
            f"timeout must be a whole number of minutes, not {timeout_minutes!r}"
        )
    if timeout_minutes <= 0:
        raise RecoveryInputError(f"timeout must be greater than 0 minutes, not {timeout_minutes}")
    return timeout_minutes


def _snapshots(runs: QuerySet[QualificationRun], limit: int | None) -> list[RunSnapshot]:
    """The oldest `limit` of these runs.

    Where the database allows it, a bounded listing takes the first rows of each active status
    from the (status, created_at) index and merges them, instead of sorting every active run:
    a sweep of 100,000 stuck runs must not sort 100,000 rows to show 20.
    """
    ordering = ("created_at", "pk")
    rows = runs.annotate(last_seen=last_sign_of_life()).order_by(*ordering)
    rows = rows.values_list(
        "pk", "status", "completed", "total", "created_at", "heartbeat_at", "last_seen"
    )
    if limit and connection.features.supports_slicing_ordering_in_compound:
        per_status = [rows.filter(status=status)[:limit] for status in ACTIVE_STATUSES]
        rows = per_status[0].union(*per_status[1:], all=True).order_by(*ordering)
    if limit is not None:
        rows = rows[:limit]
    return [RunSnapshot(*row) for row in rows]


def check_run_ids(run_ids: Iterable[int]) -> list[int]:
    """Returns the ids as a sorted list, or raises naming every id that does not exist."""
    wanted = sorted(set(run_ids))
    found = set(QualificationRun.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    missing = [run_id for run_id in wanted if run_id not in found]
    if missing:
        raise UnknownRuns(missing)
    return wanted


# --- the sweep -------------------------------------------------------------------------------------


def recover_stuck_runs(
    *,
    source: str,
    timeout_minutes: int | None = None,
    actor: Any = None,
    run_ids: Sequence[int] | None = None,
    force: bool = False,
    dry_run: bool = False,
    list_limit: int | None = DEFAULT_LIST_LIMIT,
    log: bool = True,
    policy: str | None = None,
    worker_ids: Sequence[int] | None = None,
) -> RecoveryReport:
    """Recovers every dead run (or, with `force`, every named active run) exactly once: fails
    it, or under the `resume` policy (default RECOVERY_POLICY) puts it back in the queue,
    unless its worker has died RECOVERY_MAX_ATTEMPTS times on it. `worker_ids` bounds the dead
    workers' rows it removes (the recovery drill sweeps only what it made); None: any.

    Returns a report of what was active, what was dead and what was done to each run and why.
    Bad input raises `RecoveryInputError` before anything is read or changed.
    """
    if source not in RecoverySource.values:
        raise RecoveryInputError(f"unknown recovery source {source!r}")
    policy = conf.RECOVERY_POLICY if policy is None else policy
    if policy not in POLICIES:
        raise RecoveryInputError(f"policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    timeout = _timeout(timeout_minutes)
    if force and not run_ids:
        raise RecoveryInputError("force needs the ids of the runs to fail")
    if run_ids is not None:
        run_ids = check_run_ids(run_ids)
    from django.utils import timezone

    report = RecoveryReport(
        timeout_minutes=timeout,
        source=source,
        dry_run=dry_run,
        force=force,
        now=timezone.now(),  # for the report's ages only: every decision is the database's
        worker_timeout_seconds=conf.RECOVERY_WORKER_TIMEOUT_SECONDS,
        policy=policy,
    )
    started = time.monotonic()
    try:
        if dry_run:
            _look(report, run_ids, list_limit)
        else:
            with _single_flight(source) as ours:
                if ours:
                    _sweep(
                        report,
                        actor=actor,
                        run_ids=run_ids,
                        list_limit=list_limit,
                        worker_ids=worker_ids,
                    )
                else:
                    report.skipped_reason = SKIPPED
    except Exception:
        if not dry_run:
            with contextlib.suppress(DatabaseError):  # the database is likely what failed
                SweepTally.objects.record(source, SweepOutcome.ERROR, time.monotonic() - started)
        raise
    if not dry_run:  # a preview is not a sweep: it is not counted
        outcome = SweepOutcome.SKIPPED if report.skipped_reason else SweepOutcome.OK
        _record_sweep(source, outcome, time.monotonic() - started)
    if log:
        fields = {"event": "sweep", "source": source, "count": report.recovered_count}
        for line in report.lines(list_limit):
            logger.info(line.text, extra=fields)
    return report


@contextlib.contextmanager
def _single_flight(source: str) -> Iterator[bool]:
    """One sweep at a time across every process and host (PostgreSQL: a session advisory lock,
    taken before the sweep reads anything). Automatic sweeps skip while another runs; an
    operator's waits for it. SQLite has one writer at a time and one host: nothing to take."""
    if connection.vendor != "postgresql":
        yield True
        return
    automatic = source in AUTOMATIC_SOURCES
    with connection.cursor() as cursor:
        if automatic:  # bounded: a table locked by a migration must not hold a server's start
            cursor.execute(
                "SELECT set_config('statement_timeout', %s, false), pg_try_advisory_lock(%s)",
                [str(STARTUP_STATEMENT_TIMEOUT_MS), SWEEP_LOCK_KEY],
            )
            acquired = bool(cursor.fetchone()[1])
        else:
            cursor.execute("SELECT pg_advisory_lock(%s)", [SWEEP_LOCK_KEY])
            acquired = True
    try:
        yield acquired
    finally:
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
            if automatic:
                cursor.execute(
                    "SELECT set_config('statement_timeout', '0', false), "
                    "CASE WHEN %s THEN pg_advisory_unlock(%s) END",
                    [acquired, SWEEP_LOCK_KEY],
                )
            else:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [SWEEP_LOCK_KEY])


def _record_sweep(source: str, outcome: str, seconds: float) -> None:
    """Counts a finished sweep for /metrics and /readyz. Its work is committed by now, so a
    database error here is logged rather than reported as a failed sweep."""
    try:
        SweepTally.objects.record(source, outcome, seconds)
    except DatabaseError as exc:
        logger.warning(
            "[Recovery] The sweep could not be recorded: %s",
            " ".join(str(exc).split()) or type(exc).__name__,
        )


def _look(
    report: RecoveryReport, run_ids: Sequence[int] | None, list_limit: int | None
) -> tuple[liveness.Rule, QuerySet[QualificationRun]]:
    """What is active and what is dead (all a dry run does)."""
    rule = liveness.Rule.current(stuck_timeout_minutes=report.timeout_minutes, local=True)
    active = QualificationRun.objects.active()
    report.active_count = active.count()
    report.active = _snapshots(active, list_limit) if report.active_count else []
    victims = _candidates(rule, run_ids, report.force)
    report.stuck_count = victims.count() if report.active_count else 0
    if report.dry_run:
        report.stuck = _snapshots(victims, list_limit) if report.stuck_count else []
        if run_ids is not None:
            report.skipped = _skip_reasons(run_ids, report, rule)
    return rule, victims


def _sweep(
    report: RecoveryReport,
    *,
    actor: Any,
    run_ids: Sequence[int] | None,
    list_limit: int | None,
    worker_ids: Sequence[int] | None = None,
) -> None:
    rule, victims = _look(report, run_ids, list_limit)
    if report.stuck_count:
        _recover(
            report, victims.annotate(reason=reasons.cause_sentence(report.source, actor)), actor
        )
        report.locked_count = max(0, report.stuck_count - report.recovered_count)
    if run_ids is not None:
        report.skipped = _skip_reasons(run_ids, report, rule)
    if not report.force:
        report.workers_removed = remove_dead_workers(rule, worker_ids)


#: What a sweep reads of each dead run, in RecoveredRun's order, then what it decides with.
RECOVERED_FIELDS = (
    "pk",
    "status",
    "completed",
    "total",
    "created_at",
    "heartbeat_at",
    "last_seen",
    "reason",
    "cause",
)
DECISION_FIELDS = ("deaths", "task_id")
#: Where a slice belongs, in RecoveredRun's order after its decision fields.
SLICE_FIELDS = ("parent_id", "first_number", "last_number")


def _recover(report: RecoveryReport, victims: QuerySet[QualificationRun], actor: Any) -> None:
    """The batch loop: lock a batch, decide, write, commit; until none is left."""
    rows = victims.annotate(last_seen=last_sign_of_life()).order_by("pk")
    if connection.features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True, of=("self",))
    rows = rows.values_list(*RECOVERED_FIELDS, *DECISION_FIELDS, *SLICE_FIELDS)
    width = len(RECOVERED_FIELDS)
    decided = width + len(DECISION_FIELDS)
    while True:
        with transaction.atomic():
            batch: list[RecoveredRun] = []
            deaths: dict[int, int] = {}
            old_tasks: list[str] = []
            for row in rows[:BATCH_SIZE]:
                run = RecoveredRun(*row[:width])
                run_deaths, task_id = row[width:decided]
                run.parent_id, run.first_number, run.last_number = row[decided:]
                batch.append(run)
                deaths[run.id] = run_deaths
                old_tasks.append(task_id)
            if not batch:
                return
            _decide(batch, deaths, report.policy)
            _write(batch, report.source, actor)
            slices.settle(run.parent_id for run in batch)
            queue.fail_tasks(old_tasks, "The run was recovered: its worker is gone.")
            announce(batch, policy=report.policy, source=report.source)
        report.recovered += batch
        if len(batch) < BATCH_SIZE or len(report.recovered) >= report.stuck_count:
            return


def is_death(cause: str) -> bool:
    """The causes that mean a worker died on the run: what the crash-loop guard counts. A
    clean hand-back, a forced failure and a queued run whose task vanished are not deaths."""
    return cause in DEAD_RUN_CAUSES


#: A quarantine needs two deaths that each stopped exactly at one prospect, and an attempt
#: stops exactly only after a death (it then commits each result): three deaths at most.
QUARANTINE_DEATHS = 3


@dataclass(frozen=True)
class Verdict:
    """What recovery does with one dead run: its new status, the prospect it quarantines (the
    run goes on without it), or that the crash-loop guard gives up on it."""

    status: str
    quarantined: int | None = None
    gave_up: bool = False


def verdict(
    policy: str, *, died: bool, deaths: int, previous_stop: int | None, stop: int, total: int
) -> Verdict:
    """The one rule for a dead run, for the sweep and for what the pages say will happen.

    `deaths` counts this death (since the last Continue or quarantine); `stop` is where this
    attempt stopped (results done) and `previous_stop` where the attempt before it did. Under
    `resume`, a run whose worker died twice at one prospect has that prospect quarantined, and
    one whose worker has died RECOVERY_MAX_ATTEMPTS times elsewhere is failed."""
    if (
        policy == POLICY_RESUME
        and died
        and deaths >= min(QUARANTINE_DEATHS, conf.RECOVERY_MAX_ATTEMPTS)
    ):
        quarantined = poison_prospect(deaths, previous_stop, stop, total)
        if quarantined is not None:
            return Verdict(RunStatus.PENDING, quarantined=quarantined)
        if deaths >= conf.RECOVERY_MAX_ATTEMPTS:
            return Verdict(RunStatus.FAILED, gave_up=True)
    return Verdict(RunStatus.PENDING if policy == POLICY_RESUME else RunStatus.FAILED)


def _decide(batch: list[RecoveredRun], deaths: dict[int, int], policy: str) -> None:
    """Fail or resume each run by `verdict`; where earlier attempts stopped is read in one
    query, for the runs whose deaths the crash-loop guard judges.

    A run's `reason` is what the caller knows of the cause; the decision is put in front."""
    now_dead = {run.id: deaths[run.id] + is_death(run.cause) for run in batch}
    judged = {
        run.id
        for run in batch
        if policy == POLICY_RESUME
        and is_death(run.cause)
        and now_dead[run.id] >= min(QUARANTINE_DEATHS, conf.RECOVERY_MAX_ATTEMPTS)
    }
    stops = _attempt_stops(sorted(judged))
    for run in batch:
        why = run.reason
        count = now_dead[run.id]
        stopped = [*stops.get(run.id, []), run.completed][-count:] if run.id in judged else []
        decided = verdict(
            policy,
            died=is_death(run.cause),
            deaths=count,
            previous_stop=stopped[-2] if len(stopped) > 1 else None,
            stop=run.completed,
            total=run.total,
        )
        run.quarantined = decided.quarantined
        run.new_status = decided.status
        if decided.quarantined is not None:
            decision = f"{reasons.quarantined(run.quarantined, run.total)}. " + reasons.resumed(
                run.completed + 1, run.total
            )
        elif decided.gave_up:
            decision = reasons.gave_up(count, stopped, run.total)
        elif decided.status == RunStatus.PENDING:
            decision = reasons.resumed(run.completed, run.total)
        else:
            decision = ""
        if decision:
            run.reason = f"{decision}. {why}" if why else decision
        if run.parent_id is not None:
            run.reason = f"Slice of {run.slice_label}: {run.reason}"


def poison_prospect(deaths: int, previous_stop: int | None, stop: int, total: int) -> int | None:
    """The prospect that crashed its worker twice, or None: `deaths` since the last Continue
    or quarantine, and where the last two attempts stopped (results done).

    An attempt after a death commits each result, so where it stopped is exact: it died on the
    first prospect without a result. Two such deaths in a row at the same place (the earlier
    one after a death too, hence three deaths) point at one prospect; deaths elsewhere point
    at none, and the crash-loop guard decides."""
    if deaths < QUARANTINE_DEATHS or previous_stop != stop or stop >= total:
        return None
    return stop + 1


def _attempt_stops(run_ids: list[int]) -> dict[int, list[int]]:
    """Where each earlier death of these runs left them (results done), oldest first, since
    they were last continued or had a prospect quarantined."""
    if not run_ids:
        return {}
    events = (
        RecoveryEvent.objects.filter(
            Q(slice_id__in=run_ids) | Q(slice__isnull=True, run_id__in=run_ids)
        )
        .filter(Q(cause__in=DEAD_RUN_CAUSES) | Q(source=RecoverySource.CONTINUE))
        .order_by("created_at", "pk")
        .annotate(lease=Coalesce("slice_id", "run_id"))
        .values_list("lease", "source", "completed", "quarantined_prospect")
    )
    stops: dict[int, list[int]] = defaultdict(list)
    for run_id, source, completed, quarantined in events:
        if source == RecoverySource.CONTINUE or quarantined is not None:
            stops[run_id] = []  # Continue and a quarantine start the count again
        else:
            stops[run_id].append(completed)
    return stops


def end_of_attempt(until: Any) -> dict[str, Any]:
    """The changes that close a PROCESSING attempt: its seconds (from its start to `until`, on
    the database's clock) added to the run's. A queued run has no attempt under way."""
    return {
        "worked_seconds": Case(
            When(
                status=RunStatus.PROCESSING,
                then=F("worked_seconds") + SecondsBetween(F("started_at"), until),
            ),
            default=F("worked_seconds"),
            output_field=FloatField(),
        )
    }


def _write(batch: list[RecoveredRun], source: str, actor: Any) -> None:
    """The transitions of a locked batch, then its events: a few statements, whatever its size."""
    locked = QualificationRun.leases.filter(status__in=ACTIVE_STATUSES)
    died = [run.id for run in batch if is_death(run.cause)]
    quarantined = {run.id: run.quarantined for run in batch if run.quarantined is not None}
    # A dead attempt worked until its last sign of life, not until it was found dead.
    common = {
        **end_of_attempt(last_sign_of_life()),
        "deaths": Case(
            When(pk__in=list(quarantined), then=Value(0)),  # explained: the count starts again
            When(pk__in=died, then=F("deaths") + 1),
            default=F("deaths"),
            output_field=PositiveIntegerField(),
        ),
    }
    if quarantined:
        common["skip_prospect"] = Case(
            *(When(pk=pk, then=Value(prospect)) for pk, prospect in quarantined.items()),
            default=F("skip_prospect"),
            output_field=PositiveIntegerField(),
        )
    failed = [run for run in batch if run.new_status == RunStatus.FAILED]
    if failed and _fail_batch(failed, set(died)) != len(failed):  # pragma: no cover
        raise RuntimeError("recovery batch changed under its lock; rolled back")
    send_back(locked, [run.id for run in batch if run.new_status == RunStatus.PENDING], common)
    record_events(batch, source=source, actor=actor)


def _fail_batch(failed: list[RecoveredRun], died: set[int]) -> int:
    """FAILED, with each run's own reason, in one statement for the whole batch.

    The one hand-written statement of the sweep, kept because the sweep benchmark proves it is
    needed: every run has a reason of its own (its minutes of silence, its worker's host), and
    the ORM can only write per-row values as a CASE with a WHEN per value, which the database
    evaluates row by row (10,000 dead runs took 23x a bare UPDATE that way). Here the values
    are one VALUES list joined by id (PostgreSQL, and SQLite since 3.33). The run must still be
    active, as the locked read saw it; the attempt's seconds end at its last sign of life.
    """
    table = connection.ops.quote_name(QualificationRun._meta.db_table)
    compiler = QualificationRun.objects.all().query.get_compiler(connection=connection)
    now_sql, now_params = compiler.compile(Now())
    last_seen = "COALESCE(run.heartbeat_at, run.started_at, run.created_at)"
    if connection.vendor == "postgresql":
        worked = f"EXTRACT(EPOCH FROM ({last_seen} - run.started_at))"
    else:
        worked = f"(julianday({last_seen}) - julianday(run.started_at)) * 86400.0"
    ids = [run.id for run in failed]
    reasons_ = [run.reason for run in failed]
    deaths = [int(run.id in died) for run in failed]
    if connection.vendor == "postgresql":  # three arrays: three parameters, whatever the batch
        source = (
            "unnest(%s::bigint[], %s::text[], %s::integer[]) AS decided (column1, column2, column3)"
        )
        source_params: list[Any] = [ids, reasons_, deaths]
    else:
        source = "(VALUES " + ", ".join(["(%s, %s, %s)"] * len(failed)) + ") AS decided"
        source_params = [value for row in zip(ids, reasons_, deaths, strict=True) for value in row]
    # The values are named column1, column2, ... as a VALUES list's are (SQLite allows no
    # other names for them, and its driver counts no rows for a statement that starts with WITH).
    sql = f"""
        UPDATE {table} AS run
        SET status = %s,
            completed_at = {now_sql},
            failure_reason = decided.column2,
            deaths = run.deaths + decided.column3,
            worked_seconds = CASE WHEN run.status = %s
                THEN run.worked_seconds + COALESCE({worked}, 0) ELSE run.worked_seconds END
        FROM {source}
        WHERE run.id = decided.column1 AND run.status IN (%s, %s)
    """  # noqa: S608 - the table's name and Django's SQL for now; values are parameters
    params = [RunStatus.FAILED, *now_params, RunStatus.PROCESSING, *source_params]
    params += ACTIVE_STATUSES
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _skip_reasons(
    run_ids: Sequence[int], report: RecoveryReport, rule: liveness.Rule
) -> dict[int, SkipReason]:
    """Why each named run the sweep did not recover was left alone, as the liveness rule sees
    it now (a dry run skips none of the dead ones)."""
    recovered = {run.run_id for run in report.recovered}
    states = liveness.run_states([pk for pk in run_ids if pk not in recovered], rule)
    skipped: dict[int, SkipReason] = {}
    for pk, state in sorted(states.items()):
        if state.status in FINISHED_STATUSES:
            skipped[pk] = SkipReason.FINISHED
        elif report.force or state.liveness == liveness.DEAD:
            if not report.dry_run:
                skipped[pk] = SkipReason.LOCKED
        elif state.liveness == liveness.WAITING:
            skipped[pk] = SkipReason.WAITING
        else:
            skipped[pk] = SkipReason.ALIVE
    return skipped


def remove_dead_workers(
    rule: liveness.Rule | None = None, worker_ids: Sequence[int] | None = None
) -> int:
    """Removes the rows of workers (of `worker_ids`, or any) that stopped beating or whose
    process exited on this host (their runs were recovered first)."""
    rule = rule or liveness.Rule.current(local=True)
    dead = liveness.dead_workers(rule)
    if worker_ids is not None:
        dead = dead.filter(pk__in=worker_ids)
    ids = list(dead.values_list("pk", flat=True))
    if not ids:
        return 0
    Worker.objects.filter(pk__in=ids).delete()
    logger.info(
        "[Recovery] Removed %d dead workers",
        len(ids),
        extra={"event": "workers_removed", "count": len(ids)},
    )
    return len(ids)


# --- the transitions every path shares ------------------------------------------------------------


def _event_origin() -> tuple[str, int]:
    return socket.gethostname()[:255], os.getpid()


#: The columns an event is written with, in `record_events`' order (`created_at` is the
#: database's now, its column default).
EVENT_COLUMNS = (
    "run_id",
    "from_status",
    "to_status",
    "source",
    "cause",
    "reason",
    "completed",
    "total",
    "heartbeat_at",
    "quarantined_prospect",
    "slice_id",
    "first_prospect",
    "last_prospect",
    "host",
    "pid",
    "actor_id",
)
#: Their PostgreSQL types, for the arrays `record_events` sends.
EVENT_COLUMN_TYPES = (
    "bigint",
    "text",
    "text",
    "text",
    "text",
    "text",
    "integer",
    "integer",
    "timestamptz",
    "integer",
    "bigint",
    "integer",
    "integer",
    "text",
    "integer",
    "integer",
)


def record_events(runs: Sequence[RecoveredRun], *, source: str, actor: Any = None) -> None:
    """One audit event per recovered run, in the caller's transaction: from the status the run
    had to its new one, with the cause, reason and progress, and who recovered it from where.

    One INSERT with a VALUES list, the same for every path (sweep, hand-back, continue). Written
    by hand because the sweep benchmark proves it: the ORM's bulk_create builds and prepares a
    model instance per event, which was most of a 10,000-run sweep's time.
    """
    if not runs:
        return
    host, pid = _event_origin()
    actor_id = getattr(actor, "pk", None)
    table = connection.ops.quote_name(RecoveryEvent._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(column) for column in EVENT_COLUMNS)
    row = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
    adapt = connection.ops.adapt_datetimefield_value
    params: list[Any] = []
    for run in runs:
        params += (
            run.run_id,
            run.status,
            run.new_status,
            source,
            run.cause,
            run.reason,
            run.completed,
            run.total,
            adapt(run.heartbeat_at),
            run.quarantined_number,
            run.id if run.parent_id is not None else None,
            run.first_number,
            run.last_number,
            host,
            pid,
            actor_id,
        )
    width = len(EVENT_COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":  # one array per column: 16 parameters in all
            arrays = [params[column::width] for column in range(width)]
            types = ", ".join(f"%s::{kind}[]" for kind in EVENT_COLUMN_TYPES)
            cursor.execute(
                f"INSERT INTO {table} ({columns}) SELECT * FROM unnest({types})",  # noqa: S608 - names only; values are parameters
                arrays,
            )
            return
        for start in range(0, len(runs), EVENT_ROWS_PER_INSERT):
            chunk = len(runs[start : start + EVENT_ROWS_PER_INSERT])
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * chunk)}",  # noqa: S608 - names only; values are parameters
                params[start * width : (start + chunk) * width],
            )


def announce(runs: Sequence[RecoveredRun], *, policy: str, source: str) -> None:
    """Sends `run_recovered` for each run once the current transaction commits (never if it
    rolls back). The runs are read in one query, and only when someone listens. A receiver
    that raises is logged and does not stop the recovery or the other receivers."""
    if not runs:
        return
    sent = [(run.id, str(run.status), str(run.new_status), run.reason) for run in runs]

    def send() -> None:
        if not run_recovered.has_listeners(QualificationRun):
            return
        found = QualificationRun.leases.in_bulk([run_id for run_id, *_ in sent])
        for run_id, previous, new, reason in sent:
            if run_id not in found:
                continue
            answers = run_recovered.send_robust(
                sender=QualificationRun,
                run=found[run_id],
                previous_status=previous,
                new_status=new,
                policy=policy,
                source=source,
                reason=reason,
            )
            for receiver, answer in answers:
                if isinstance(answer, Exception):
                    logger.error(
                        "[Recovery] A run_recovered receiver (%s) failed for run %s",
                        getattr(receiver, "__qualname__", receiver),
                        run_id,
                        exc_info=answer,
                    )

    transaction.on_commit(send, robust=True)


def send_back(
    expected: QuerySet[QualificationRun],
    run_ids: Sequence[int],
    changes: dict[str, Any] | None = None,
) -> int:
    """The one transition back to the queue: the runs of `expected` (a queryset naming the
    state the caller expects) among `run_ids` become PENDING without a worker, with a new task
    each (and `changes`); their results are kept, and the next worker skips every prospect that
    has one.

    Call it inside the transaction that writes the event, so the new task is enqueued with the
    change (django-tasks-db). Each run stays on the queue its task was on, and takes its place
    in it by the queue's rule (`queue.queue_priorities`). One read of those queues and owners,
    one of their places, one UPDATE, one enqueue per run (the tasks API has no bulk enqueue)
    and one UPDATE for the task ids. Returns how many runs changed: all of them
    or, for a single run, none.
    """
    if not run_ids:
        return 0
    found = queue.queues_and_owners(expected.filter(pk__in=run_ids))
    priorities = queue.queue_priorities(
        [(pk, found[pk][1]) for pk in run_ids if pk in found], returning=True
    )
    changed = expected.filter(pk__in=run_ids).update(
        status=RunStatus.PENDING,
        worker=None,
        queued_at=Now(),
        task_id="",
        completed_at=None,
        failure_reason="",
        priority=queue.by_run(priorities, IntegerField()),
        **(changes or {}),
    )
    if not changed:
        return 0
    if changed != len(run_ids):  # callers hold the rows locked (or name one run)
        raise RuntimeError("runs sent back to the queue changed under their lock; rolled back")
    task_ids = {
        run_id: queue.queue_run(run_id, found[run_id][0], priorities[run_id])
        for run_id in run_ids
    }
    known = {run_id: task_id for run_id, task_id in task_ids.items() if task_id}
    if known:
        QualificationRun.leases.filter(pk__in=known).update(
            task_id=queue.by_run(known, CharField())
        )
    return changed


def continue_failed_runs(
    run_ids: Sequence[int], *, source: str, actor: Any = None
) -> list[RecoveredRun]:
    """FAILED runs with prospects left go back to the queue in place (the same run, its
    results kept), through the same transition as every resume, with their death count
    started again; returns the runs continued.

    The rows are locked first, so of two concurrent calls for one run exactly one continues
    it; the other finds it PENDING and continues nothing (the caller says why).
    """
    with transaction.atomic():
        runs = QualificationRun.objects.continuable().filter(pk__in=run_ids)
        locked = list(runs.select_for_update(of=("self",)).values_list("pk", flat=True))
        # A run worked as slices is continued by continuing its failed slices.
        rows = (
            QualificationRun.leases.continuable()
            .filter(Q(pk__in=locked) | Q(parent_id__in=locked))
            .annotate(last_seen=last_sign_of_life())
            .order_by("pk")
            .select_for_update(of=("self",))
            .values_list(*RECOVERED_FIELDS[:7], *SLICE_FIELDS)
        )
        batch = []
        for row in rows:
            run = RecoveredRun(*row[:7])
            run.parent_id, run.first_number, run.last_number = row[7:]
            batch.append(run)
        if not batch:
            return []
        for run in batch:
            run.new_status = RunStatus.PENDING
            run.reason = reasons.continued(run.completed, run.total, source, actor)
            if run.parent_id is not None:
                run.reason = f"Slice of {run.slice_label}: {run.reason}"
        send_back(QualificationRun.leases.continuable(), [run.id for run in batch], {"deaths": 0})
        record_events(batch, source=source, actor=actor)
        slices.settle(run.parent_id for run in batch)
        announce(batch, policy=POLICY_RESUME, source=source)
    for run in batch:
        logger.info(
            "[Recovery] Run %s: %s",
            run.run_id,
            run.reason,
            extra={"event": "run_continued", "run_id": run.run_id, "source": source},
        )
    return batch


def hand_back(worker: Worker, *, source: str, cause: str, label: str = "") -> list[int]:
    """The one way a worker gives its leases back: at shutdown (`shutdown`: not a death), when
    its executor crashed (`crashed`: a death, counted by the crash-loop guard) or when its
    supervisor was lost. Each run goes back to the queue (results kept, a new task), with the
    prospect that crashed its worker twice quarantined, or is failed once its worker has died
    RECOVERY_MAX_ATTEMPTS times on it (`_decide`, as in a sweep); one event each.

    Each run is a conditional UPDATE under the worker and attempt that own it: a run that
    completed or was recovered meanwhile is left alone, and the refused write is counted.
    Returns the ids of the runs given back.
    """
    label = label or str(worker)
    handed: list[int] = []
    rows = QualificationRun.leases.filter(worker=worker, status=RunStatus.PROCESSING)
    for run in rows:
        owned = QualificationRun.leases.filter(
            pk=run.pk, status=RunStatus.PROCESSING, worker=worker, attempts=run.attempts
        )
        recovered = RecoveredRun(
            run.pk,
            RunStatus.PROCESSING,
            run.completed,
            run.total,
            run.created_at,
            run.heartbeat_at,
            run.last_seen,
            cause=cause,
            parent_id=run.parent_id,
            first_number=run.first_number,
            last_number=run.last_number,
        )
        died = is_death(cause)
        changes: dict[str, Any] = {**end_of_attempt(Now()), "deaths": run.deaths + died}
        with transaction.atomic():
            if died:  # the sweep's decision, in the sweep's one place
                _decide([recovered], {run.pk: run.deaths}, POLICY_RESUME)
                recovered.reason = f"{recovered.reason} ({reasons.where(source)})."
            else:
                recovered.new_status = RunStatus.PENDING
                recovered.reason = reasons.handed_back(run.completed, run.total, source)
                if run.parent_id is not None:
                    recovered.reason = f"Slice of {recovered.slice_label}: {recovered.reason}"
            if recovered.quarantined is not None:
                changes |= {"deaths": 0, "skip_prospect": recovered.quarantined}
            reason = recovered.reason
            if recovered.new_status == RunStatus.FAILED:
                changed = owned.update(
                    status=RunStatus.FAILED, completed_at=Now(), failure_reason=reason, **changes
                )
            else:
                changed = send_back(owned, [run.pk], changes)
            if changed:
                record_events([recovered], source=source)
                slices.settle([run.parent_id])
                announce([recovered], policy=POLICY_RESUME, source=source)
        if not changed:  # recovered meanwhile: the run is no longer this worker's
            FencedWrite.objects.record(run, FencedWriteKind.HAND_BACK, label)
            continue
        queue.fail_tasks([run.task_id], reason)
        logger.info(
            "[Recovery] Run %s: %s",
            run.whole_run_id,
            reason,
            extra={
                "event": "run_handed_back",
                "run_id": run.whole_run_id,
                "worker": label,
                "source": source,
                "cause": cause,
                "reason": reason,
            },
        )
        handed.append(run.pk)
    return handed
