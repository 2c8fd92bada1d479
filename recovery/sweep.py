"""Finding and recovering dead runs: the one module that every entry point calls.

The startup hook, the periodic sweeper, the `recover_stuck_runs` command, the admin actions and
the API all go through `recover_stuck_runs()`, and a stopping or crashed worker through
`hand_back_runs()`, and a continued failed run through `continue_failed_runs()`, so "dead"
(`QualificationRunQuerySet.dead`), the transitions (back to the queue: `send_back()`), the
crash-loop guard, the failure reasons, the audit events and the `run_recovered` signal are
defined once. Every age is measured on the database's clock.

Exactly once: on PostgreSQL each batch is one statement that locks its victims with
`FOR UPDATE SKIP LOCKED`, fails them and inserts their events; concurrent sweepers take disjoint
rows, and a row that beat or completed meanwhile no longer matches when it is locked. Elsewhere
(SQLite) the batch runs in one transaction under the database write lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import Case, CharField, F, Q, Value, When
from django.db.models.functions import Cast, Coalesce, Concat, Now
from django.utils import timezone

from . import queue, workers
from .conf import POLICIES, POLICY_RESUME, conf
from .models import (
    ACTIVE_STATUSES,
    FINISHED_STATUSES,
    DatabaseStartedAt,
    FencedWrite,
    FencedWriteKind,
    Liveness,
    QualificationRun,
    QualificationRunQuerySet,
    RecoveryCause,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    SecondsSince,
    SweepOutcome,
    SweepTally,
    Worker,
    ago,
    last_sign_of_life,
)
from .report import DEFAULT_LIST_LIMIT, RecoveredRun, RecoveryReport, RunSnapshot, SkipReason
from .signals import run_recovered

logger = logging.getLogger("recovery")

#: How many runs one statement recovers; a larger sweep takes several batches.
BATCH_SIZE = 100_000
#: How many runs one batch recovers where each needs a row of parameters (SQLite).
GENERIC_BATCH_SIZE = 2_000
#: Recovered runs whose task rows are failed per statement (SQLite allows 32,766 parameters).
TASK_BATCH_SIZE = 10_000
#: Sweeps on PostgreSQL are single-flight across hosts under this advisory lock key.
STARTUP_LOCK_KEY = 0x5155414C  # "QUAL"
#: The sources that skip a sweep while another one runs (an operator's sweep waits instead).
AUTOMATIC_SOURCES = frozenset({RecoverySource.STARTUP, RecoverySource.SWEEPER})
#: A startup sweep never holds a server's start for longer than this (PostgreSQL).
STARTUP_STATEMENT_TIMEOUT_MS = 30_000

SOURCE_PHRASES = {
    RecoverySource.STARTUP: "recovered at server start",
    RecoverySource.COMMAND: "recovered by the recover_stuck_runs command",
    RecoverySource.ADMIN: "recovered from the admin",
    RecoverySource.API: "recovered through the recovery API",
    RecoverySource.SWEEPER: "recovered by the periodic sweeper",
    RecoverySource.SHUTDOWN: "handed back when its worker shut down",
    RecoverySource.SUPERVISOR: "noticed by its worker's supervisor",
    RecoverySource.CONTINUE: "continued by its owner",
}


class RecoveryInputError(ValueError):
    """Bad arguments to a sweep: nothing was changed."""


class UnknownRuns(RecoveryInputError):
    """Run ids that name no run: nothing was changed."""

    def __init__(self, run_ids: list[int]) -> None:
        self.run_ids = run_ids
        super().__init__("No qualification run with id " + ", ".join(map(str, run_ids)))


# --- queries ---------------------------------------------------------------------------------


def active_runs() -> QualificationRunQuerySet:
    return QualificationRun.objects.active()


def liveness(timeout_minutes: int | None = None) -> Liveness:
    """What the rows cannot tell: this host's exited workers, and queued runs whose task is gone.

    Asks only about runs queued longer than the worker timeout (a task just enqueued is live),
    through the task backend's get_result().
    """
    worker_timeout = conf.RECOVERY_WORKER_TIMEOUT_SECONDS
    alive = {str(pk) for pk in Worker.objects.alive(worker_timeout).values_list("pk", flat=True)}
    waiting = QualificationRun.objects.filter(
        status=RunStatus.PENDING, queued_at__lt=ago(worker_timeout)
    ).values_list("pk", "task_id")
    return Liveness(
        worker_timeout_seconds=worker_timeout,
        stuck_timeout_minutes=_timeout(timeout_minutes),
        exited_worker_ids=workers.exited_worker_ids(),
        orphaned_pending_ids=queue.orphaned_pending(waiting, alive),
    )


def stuck_runs(timeout_minutes: int | None = None) -> QualificationRunQuerySet:
    """The dead runs right now: a query only, it changes nothing (the original's getStuckRuns)."""
    return QualificationRun.objects.dead(liveness(timeout_minutes))


def candidates(
    *,
    timeout_minutes: int,
    run_ids: Sequence[int] | None = None,
    force: bool = False,
) -> QualificationRunQuerySet:
    """The runs a sweep may fail: dead ones, or with `force` any named active one."""
    runs = QualificationRun.objects.forced() if force else stuck_runs(timeout_minutes)
    if run_ids is not None:
        runs = runs.filter(pk__in=run_ids)
    return runs


def failure_reason(source: str, actor: Any) -> Case:
    """The failure reason of each cause, written for the run's owner and computed by the
    database (its clock, the worker's host) in the statement that fails the run."""
    where = SOURCE_PHRASES[RecoverySource(source)]
    if actor is not None:
        where += f" by {actor.get_username()}"
    tail = Value(f" ({where}).")
    quiet_minutes = Cast(SecondsSince(last_sign_of_life()) / 60, CharField())
    host = Coalesce(F("worker__host"), Value("?"))

    def text(*parts: Any) -> Concat:
        return Concat(*(Value(p) if isinstance(p, str) else p for p in parts), tail)

    return Case(
        When(
            cause=RecoveryCause.NO_TASK,
            then=text("It waited in the queue, but its queued task is no longer there"),
        ),
        When(
            cause=RecoveryCause.WORKER_GONE,
            then=text(
                "Its worker shut down or was removed; last activity ", quiet_minutes, " min ago"
            ),
        ),
        When(
            cause=RecoveryCause.PROCESS_GONE,
            then=text(
                "The worker process on host ",
                host,
                " (pid ",
                Cast(F("worker__pid"), CharField()),
                ") has exited",
            ),
        ),
        When(
            cause=RecoveryCause.WORKER_SILENT,
            then=text(
                "The worker on host ",
                host,
                " stopped responding ",
                Cast(SecondsSince("worker__last_beat_at"), CharField()),
                " s ago",
            ),
        ),
        When(
            cause=RecoveryCause.FORCED,
            then=text("Stopped by an operator; last activity ", quiet_minutes, " min ago"),
        ),
        default=text("No progress for ", quiet_minutes, " min; the worker seems stuck on this run"),
        output_field=CharField(),
    )


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


def _snapshots(runs: QualificationRunQuerySet, limit: int | None) -> list[RunSnapshot]:
    """The oldest `limit` of these active runs.

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


# --- the sweep --------------------------------------------------------------------------------


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
) -> RecoveryReport:
    """Recovers every stuck run (or, with `force`, every named active run) exactly once:
    fails it, or under the `resume` policy (default RECOVERY_POLICY) puts it back in the
    queue, unless its worker already died RECOVERY_MAX_ATTEMPTS times.

    Returns a report of what was active, what was stuck and what was recovered. Bad input
    raises `RecoveryInputError` before anything is changed.
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
    now = timezone.now()  # for the report's ages only: every decision uses the database's clock
    report = RecoveryReport(
        timeout_minutes=timeout,
        source=source,
        dry_run=dry_run,
        force=force,
        now=now,
        worker_timeout_seconds=conf.RECOVERY_WORKER_TIMEOUT_SECONDS,
        policy=policy,
    )
    if dry_run:  # a preview, not a sweep: nothing is recorded
        _sweep(report, actor=actor, run_ids=run_ids, list_limit=list_limit)
    else:
        started = time.monotonic()
        try:
            _sweep(report, actor=actor, run_ids=run_ids, list_limit=list_limit)
        except Exception:
            with contextlib.suppress(DatabaseError):  # the database is likely what failed
                SweepTally.objects.record(source, SweepOutcome.ERROR, time.monotonic() - started)
            raise
        outcome = SweepOutcome.SKIPPED if report.skipped_reason else SweepOutcome.OK
        _record_sweep(source, outcome, time.monotonic() - started)
    if log:
        fields = {"event": "sweep", "source": source, "count": report.recovered_count}
        for line in report.lines(list_limit):
            logger.info(line.text, extra=fields)
    return report


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


def _sweep(
    report: RecoveryReport,
    *,
    actor: Any,
    run_ids: Sequence[int] | None,
    list_limit: int | None,
) -> None:
    """The sweep itself (or its dry run), filling `report`."""
    timeout, force, dry_run, policy = (
        report.timeout_minutes,
        report.force,
        report.dry_run,
        report.policy,
    )
    report.active_count = active_runs().count()
    report.active = _snapshots(active_runs(), list_limit)
    victims = candidates(timeout_minutes=timeout, run_ids=run_ids, force=force)
    report.stuck_count = victims.count() if report.active_count else 0
    named = _named_runs(run_ids, victims) if run_ids is not None else None
    if dry_run:
        report.stuck = _snapshots(victims, list_limit) if report.stuck_count else []
    elif report.stuck_count:
        victims = victims.annotate(reason=failure_reason(report.source, actor))
        if policy == POLICY_RESUME:
            old_tasks = _sweep_resume(report, victims, actor)
        else:
            if connection.vendor == "postgresql":
                _sweep_postgresql(report, victims, actor)
            else:
                _sweep_generic(report, victims, actor)
            old_tasks = None
        if not report.skipped_reason:
            report.locked_count = max(0, report.stuck_count - report.recovered_count)
        _fail_old_tasks(report, old_tasks)
    if named is not None:
        report.skipped = _skip_reasons(named, report)
    if not dry_run and not force and not report.skipped_reason:
        report.workers_removed = remove_dead_workers()


def _named_runs(
    run_ids: Sequence[int], victims: QualificationRunQuerySet
) -> dict[int, tuple[str, bool]]:
    """The status of each named run and whether it was dead (or forceable) just before the
    sweep: what its skip reason is decided from, without looking again afterwards."""
    eligible = set(victims.values_list("pk", flat=True))
    statuses = QualificationRun.objects.filter(pk__in=run_ids).values_list("pk", "status")
    return {pk: (status, pk in eligible) for pk, status in statuses}


def _skip_reasons(
    named: dict[int, tuple[str, bool]], report: RecoveryReport
) -> dict[int, SkipReason]:
    """Why each named run the sweep did not recover was left alone. A dead run the locking
    statement did not take was held (or changed) by another transaction; a dry run skips
    none of the dead ones."""
    recovered = {run.id for run in report.recovered}
    skipped: dict[int, SkipReason] = {}
    for pk, (status, eligible) in sorted(named.items()):
        if pk in recovered or (eligible and report.dry_run):
            continue
        if status in FINISHED_STATUSES:
            skipped[pk] = SkipReason.FINISHED
        elif eligible:
            skipped[pk] = SkipReason.LOCKED
        else:
            skipped[pk] = SkipReason.ALIVE
    return skipped


def _event_origin() -> tuple[str, int]:
    return socket.gethostname()[:255], os.getpid()


def record_events(runs: Sequence[RecoveredRun], *, source: str, actor: Any = None) -> None:
    """One audit event per recovered run, in the caller's transaction: from the status the run
    had to its new one, with the cause, reason and progress, and who recovered it from where."""
    host, pid = _event_origin()
    actor_id = getattr(actor, "pk", None)
    RecoveryEvent.objects.bulk_create(
        RecoveryEvent(
            run_id=run.id,
            created_at=Now(),
            from_status=run.status,
            to_status=run.new_status,
            source=source,
            cause=run.cause,
            reason=run.reason,
            completed=run.completed,
            total=run.total,
            heartbeat_at=run.heartbeat_at,
            host=host,
            pid=pid,
            actor_id=actor_id,
        )
        for run in runs
    )


def _sweep_postgresql(
    report: RecoveryReport, victims: QualificationRunQuerySet, actor: Any
) -> None:
    """One statement per batch: lock the victims (skipping rows others hold), fail them with
    the reason the database wrote, insert their events, and return what was done."""
    runs_table = connection.ops.quote_name(QualificationRun._meta.db_table)
    events_table = connection.ops.quote_name(RecoveryEvent._meta.db_table)
    host, pid = _event_origin()
    while True:
        with transaction.atomic():
            if not _sweep_lock(report.source):
                report.skipped_reason = "another process is recovering stuck runs right now"
                return
            locked = (
                victims.annotate(last_seen=last_sign_of_life())
                .order_by()
                .values_list("pk", "status", "last_seen", "cause", "reason")
                .select_for_update(skip_locked=True, of=("self",))[:BATCH_SIZE]
            )
            select_sql, select_params = locked.query.sql_with_params()
            sql = f"""
                WITH victims (id, status, last_seen, cause, reason) AS ({select_sql}),
                updated AS (
                    UPDATE {runs_table} AS run
                    SET status = %s,
                        completed_at = STATEMENT_TIMESTAMP(),
                        failure_reason = victims.reason
                    FROM victims
                    WHERE run.id = victims.id
                    RETURNING run.id, victims.status AS from_status, run.completed, run.total,
                              run.created_at, run.heartbeat_at, victims.last_seen,
                              run.failure_reason, victims.cause
                ),
                events AS (
                    INSERT INTO {events_table} (run_id, created_at, from_status, to_status,
                        source, cause, reason, completed, total, heartbeat_at, host, pid,
                        actor_id)
                    SELECT id, STATEMENT_TIMESTAMP(), from_status, %s, %s, cause,
                           failure_reason, completed, total, heartbeat_at, %s, %s, %s
                    FROM updated
                )
                SELECT id, from_status, completed, total, created_at, heartbeat_at, last_seen,
                       failure_reason, cause
                FROM updated
            """  # noqa: S608 - only table names are formatted in; values are parameters
            params = [
                *select_params,
                RunStatus.FAILED,
                RunStatus.FAILED,
                report.source,
                host,
                pid,
                getattr(actor, "pk", None),
            ]
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            batch = [RecoveredRun(*row) for row in rows]
            announce(batch, policy=report.policy, source=report.source)
        report.recovered += batch
        # A short batch means nothing is left; a full one that reaches the count made before
        # the sweep means the same, without one more statement to find out.
        if len(rows) < BATCH_SIZE or len(report.recovered) >= report.stuck_count:
            return


def _fail_old_tasks(report: RecoveryReport, old_tasks: list[str] | None) -> None:
    """Marks the recovered runs' old task rows failed, in bounded statements; `old_tasks` are
    the ids the runs had before a resume gave them new ones (None: read them now)."""
    reason = "The run was recovered: its worker is gone."
    if old_tasks is not None:
        for start in range(0, len(old_tasks), TASK_BATCH_SIZE):
            queue.fail_tasks(old_tasks[start : start + TASK_BATCH_SIZE], reason)
        return
    recovered_ids = [run.id for run in report.recovered]
    for start in range(0, len(recovered_ids), TASK_BATCH_SIZE):
        chunk = recovered_ids[start : start + TASK_BATCH_SIZE]
        queue.fail_tasks(
            QualificationRun.objects.filter(pk__in=chunk).values_list("task_id", flat=True),
            reason,
        )


def _sweep_lock(source: str) -> bool:
    """Sweeps are single-flight on PostgreSQL: the automatic ones (N servers starting or
    sweeping at once) skip while another runs; an operator's waits for it."""
    with connection.cursor() as cursor:
        if source in AUTOMATIC_SOURCES:
            cursor.execute(f"SET LOCAL statement_timeout = {STARTUP_STATEMENT_TIMEOUT_MS}")
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [STARTUP_LOCK_KEY])
            return bool(cursor.fetchone()[0])
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [STARTUP_LOCK_KEY])
        return True


#: What a sweep reads of each dead run, in RecoveredRun's order.
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


def _next_batch(
    victims: QualificationRunQuerySet, *extra: str
) -> list[tuple[RecoveredRun, tuple[Any, ...]]]:
    """The next batch of dead runs, locked for the caller's transaction (skipping rows that
    others hold, where the database can), each with the values of the `extra` fields."""
    rows = victims.annotate(last_seen=last_sign_of_life()).order_by("pk")
    if connection.features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True, of=("self",))
    width = len(RECOVERED_FIELDS)
    return [
        (RecoveredRun(*row[:width]), row[width:])
        for row in rows.values_list(*RECOVERED_FIELDS, *extra)[:GENERIC_BATCH_SIZE]
    ]


def _sweep_generic(report: RecoveryReport, victims: QualificationRunQuerySet, actor: Any) -> None:
    """Portable sweep: per batch, read the victims and the reasons the database wrote, fail
    them in one UPDATE and bulk-insert their events, all in one transaction that holds the
    write lock (SQLite IMMEDIATE mode) or row locks (databases with SELECT ... FOR UPDATE)."""
    while True:
        with transaction.atomic():
            batch = [run for run, _ in _next_batch(victims)]
            if not batch:
                return
            by_reason: dict[str, list[int]] = defaultdict(list)
            for run in batch:
                by_reason[run.reason].append(run.id)
            changed = QualificationRun.objects.filter(
                pk__in=[run.id for run in batch], status__in=ACTIVE_STATUSES
            ).update(
                status=RunStatus.FAILED,
                completed_at=Now(),
                failure_reason=Case(
                    *(When(pk__in=ids, then=Value(text)) for text, ids in by_reason.items()),
                    default=Value(""),
                ),
            )
            if changed != len(batch):  # pragma: no cover - the write lock makes this impossible
                raise RuntimeError("recovery batch changed under its lock; rolled back")
            record_events(batch, source=report.source, actor=actor)
            announce(batch, policy=report.policy, source=report.source)
        report.recovered += batch
        if len(batch) < GENERIC_BATCH_SIZE:
            return


def remove_dead_workers() -> int:
    """Removes the rows of workers that stopped beating or whose process exited on this host
    (their runs were recovered first). On PostgreSQL a row is kept until the database has been
    up for a worker timeout, so a worker that could not beat during an outage is not removed."""
    cutoff = ago(conf.RECOVERY_WORKER_TIMEOUT_SECONDS)
    dead = Q(last_beat_at__lt=cutoff, database_started__lt=cutoff)
    exited = workers.exited_worker_ids()
    if exited:
        dead |= Q(pk__in=exited)
    ids = list(
        Worker.objects.alias(database_started=DatabaseStartedAt())
        .filter(dead)
        .exclude(runs__status=RunStatus.PROCESSING)
        .values_list("pk", flat=True)
    )
    if not ids:
        return 0
    Worker.objects.filter(pk__in=ids).delete()
    logger.info(
        "[Recovery] Removed %d dead workers",
        len(ids),
        extra={"event": "workers_removed", "count": len(ids)},
    )
    return len(ids)


# --- resuming: the one way back to the queue ----------------------------------------------------


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
        found = QualificationRun.objects.in_bulk([run_id for run_id, *_ in sent])
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


def send_back(expected: QualificationRunQuerySet, run_ids: Sequence[int]) -> int:
    """The one transition back to the queue: the runs of `expected` (a queryset naming the
    state the caller expects) among `run_ids` become PENDING without a worker, with a new task
    each; their results are kept, and the next worker skips every prospect that has one.

    Used by a stopping or crashed worker's hand-back, by sweeps under the `resume` policy and
    by continuing a failed run. Call it inside the transaction that writes the event, so the
    new task is enqueued with the change (django-tasks-db). One UPDATE, one enqueue per run
    (the tasks API has no bulk enqueue) and one UPDATE for the task ids, however many runs.
    Returns how many runs changed: all of them or, for a single run, none.
    """
    if not run_ids:
        return 0
    changed = expected.filter(pk__in=run_ids).update(
        status=RunStatus.PENDING,
        worker=None,
        queued_at=Now(),
        task_id="",
        completed_at=None,
        failure_reason="",
    )
    if not changed:
        return 0
    if changed != len(run_ids):  # callers hold the rows locked (or name one run)
        raise RuntimeError("runs sent back to the queue changed under their lock; rolled back")
    task_ids = {run_id: queue.queue_run(run_id) for run_id in run_ids}
    known = {run_id: task_id for run_id, task_id in task_ids.items() if task_id}
    if known:
        QualificationRun.objects.filter(pk__in=known).update(
            task_id=Case(
                *(When(pk=run_id, then=Value(task_id)) for run_id, task_id in known.items()),
                output_field=CharField(),
            )
        )
    return changed


def gives_up(attempts: int) -> bool:
    """The crash-loop guard: a run whose worker died on each of RECOVERY_MAX_ATTEMPTS attempts
    is failed instead of queued once more, so a prospect that kills its worker cannot loop."""
    return attempts >= conf.RECOVERY_MAX_ATTEMPTS


def next_prospect(completed: int, total: int) -> str:
    """Where an attempt stopped: results are written in input order, so the first prospect
    without a result is number completed + 1 (the worker died on it or on one of the few
    after it, scored in the same unwritten batch)."""
    return f"prospect {min(completed + 1, total)} of {total}, the first without a result"


def gave_up_reason(attempts: int, completed: int, total: int) -> str:
    return (
        f"Gave up after {attempts} attempts; the worker died each time (the last attempt "
        f"stopped at {next_prospect(completed, total)})"
    )


def resumed_reason(completed: int, total: int) -> str:
    return (
        f"Resumed: back in the queue with {completed} of {total} prospects done; the next "
        f"worker starts at {next_prospect(completed, total)}"
    )


def _sweep_resume(
    report: RecoveryReport, victims: QualificationRunQuerySet, actor: Any
) -> list[str]:
    """The `resume` policy: per batch, lock the dead runs (skipping rows others hold), send
    them back to the queue, or fail those that reached the crash-loop guard, and write their
    events, in one transaction. Returns the task ids the runs had (to mark those tasks failed).

    The queries per batch do not depend on its size, except for the one enqueue per run that
    the tasks API needs.
    """
    old_tasks: list[str] = []
    while True:
        with transaction.atomic():
            if connection.vendor == "postgresql" and not _sweep_lock(report.source):
                report.skipped_reason = "another process is recovering stuck runs right now"
                return old_tasks
            batch: list[RecoveredRun] = []
            attempts: dict[int, int] = {}
            for run, (attempt, task_id) in _next_batch(victims, "attempts", "task_id"):
                attempts[run.id] = attempt
                old_tasks.append(task_id)
                batch.append(run)
            if not batch:
                return old_tasks
            failed: dict[str, list[int]] = defaultdict(list)
            resumed: list[int] = []
            for run in batch:
                why = run.reason
                if run.status == RunStatus.PROCESSING and gives_up(attempts[run.id]):
                    run.reason = (
                        f"{gave_up_reason(attempts[run.id], run.completed, run.total)}. {why}"
                    )
                    run.new_status = RunStatus.FAILED
                    failed[run.reason].append(run.id)
                else:
                    run.reason = f"{resumed_reason(run.completed, run.total)}. {why}"
                    run.new_status = RunStatus.PENDING
                    resumed.append(run.id)
            locked = QualificationRun.objects.filter(status__in=ACTIVE_STATUSES)
            if failed:
                changed = locked.filter(pk__in=[i for ids in failed.values() for i in ids]).update(
                    status=RunStatus.FAILED,
                    completed_at=Now(),
                    failure_reason=Case(
                        *(When(pk__in=ids, then=Value(text)) for text, ids in failed.items()),
                        default=Value(""),
                    ),
                )
                if changed != sum(len(ids) for ids in failed.values()):  # pragma: no cover
                    raise RuntimeError("recovery batch changed under its lock; rolled back")
            send_back(locked, resumed)
            record_events(batch, source=report.source, actor=actor)
            announce(batch, policy=report.policy, source=report.source)
        report.recovered += batch
        if len(batch) < GENERIC_BATCH_SIZE:
            return old_tasks


def continue_failed_runs(
    run_ids: Sequence[int], *, source: str, actor: Any = None
) -> list[RecoveredRun]:
    """FAILED runs with prospects left go back to the queue in place (the same run, its
    results kept), through the same transition as every resume; returns the runs continued.

    The rows are locked first, so of two concurrent calls for one run exactly one continues
    it; the other finds it PENDING and continues nothing (the caller says why).
    """
    with transaction.atomic():
        rows = (
            QualificationRun.objects.continuable()
            .filter(pk__in=run_ids)
            .with_last_seen()
            .order_by("pk")
            .select_for_update(of=("self",))
            .values_list(
                "pk", "status", "completed", "total", "created_at", "heartbeat_at", "last_seen"
            )
        )
        batch = [RecoveredRun(*row) for row in rows]
        if not batch:
            return []
        where = SOURCE_PHRASES[RecoverySource(source)]
        if actor is not None and source != RecoverySource.CONTINUE:
            where += f" by {actor.get_username()}"
        for run in batch:
            run.new_status = RunStatus.PENDING
            run.reason = f"{resumed_reason(run.completed, run.total)} ({where})."
        send_back(QualificationRun.objects.continuable(), [run.id for run in batch])
        record_events(batch, source=source, actor=actor)
        announce(batch, policy=POLICY_RESUME, source=source)
    for run in batch:
        logger.info(
            "[Recovery] Run %s: %s",
            run.id,
            run.reason,
            extra={
                "event": "run_continued",
                "run_id": run.id,
                "source": source,
                "reason": run.reason,
            },
        )
    return batch


# --- handing runs back --------------------------------------------------------------------------


def hand_back_runs(worker: Worker, *, source: str, cause: str) -> list[QualificationRun]:
    """The runs `worker` was executing go back to the queue (`send_back`): PENDING, a new task,
    results kept, one event each. A run whose worker already died RECOVERY_MAX_ATTEMPTS times
    is failed instead (`gives_up`), so a prospect that kills its worker cannot loop forever.

    Called by a stopping worker (source `shutdown`) and by a supervisor whose executor crashed
    (source `supervisor`). Each run is one conditional UPDATE under the worker and attempt that
    own it, in one transaction with its new task (when the queue lives in the database) and its
    event: a run that completed or was recovered meanwhile is left alone.
    """
    handed: list[QualificationRun] = []
    where = SOURCE_PHRASES[RecoverySource(source)]
    for run in QualificationRun.objects.filter(worker=worker, status=RunStatus.PROCESSING):
        owned = QualificationRun.objects.filter(
            pk=run.pk, status=RunStatus.PROCESSING, worker=worker, attempts=run.attempts
        )
        give_up = cause == RecoveryCause.CRASHED and gives_up(run.attempts)
        with transaction.atomic():
            if give_up:
                reason = f"{gave_up_reason(run.attempts, run.completed, run.total)} ({where})."
                changed = owned.update(
                    status=RunStatus.FAILED, completed_at=Now(), failure_reason=reason
                )
                to_status = RunStatus.FAILED
            else:
                reason = (
                    f"Back in the queue with {run.completed} of {run.total} prospects done "
                    f"({where})."
                )
                changed = send_back(owned, [run.pk])
                to_status = RunStatus.PENDING
            if changed:
                recovered = RecoveredRun(
                    run.pk,
                    RunStatus.PROCESSING,
                    run.completed,
                    run.total,
                    run.created_at,
                    run.heartbeat_at,
                    run.last_seen,
                    reason=reason,
                    cause=cause,
                    new_status=to_status,
                )
                record_events([recovered], source=source)
                announce([recovered], policy=POLICY_RESUME, source=source)
        if not changed:  # recovered meanwhile: the run is no longer this worker's
            FencedWrite.objects.record(run, FencedWriteKind.HAND_BACK)
            continue
        queue.fail_tasks([run.task_id], reason)
        logger.info(
            "[Recovery] Run %s: %s",
            run.pk,
            reason,
            extra={
                "event": "run_handed_back",
                "run_id": run.pk,
                "worker": str(worker),
                "source": source,
                "cause": cause,
                "reason": reason,
            },
        )
        run.refresh_from_db()
        handed.append(run)
    return handed
