"""Finding and recovering stuck runs: the one module that every entry point calls.

The startup hook, the `recover_stuck_runs` command, the admin actions and the API all go
through `recover_stuck_runs()`, so "stuck", the FAILED transition, the failure reason and the
audit event are defined once.

Exactly once: on PostgreSQL each batch is one statement that locks its victims with
`FOR UPDATE SKIP LOCKED`, fails them and inserts their events; concurrent sweepers take disjoint
rows, and a row that beat or completed meanwhile no longer matches when it is locked. Elsewhere
(SQLite) the batch runs in one transaction under the database write lock.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import socket
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, Value, When
from django.utils import timezone

from .conf import conf
from .models import (
    ACTIVE_STATUSES,
    QualificationRun,
    QualificationRunQuerySet,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    last_sign_of_life,
)

logger = logging.getLogger("recovery")

#: How many runs one statement recovers; a larger sweep takes several batches.
BATCH_SIZE = 100_000
#: How many runs one batch recovers where each needs a row of parameters (SQLite).
GENERIC_BATCH_SIZE = 2_000
#: How many runs a log listing shows before it ends with "... and N more".
DEFAULT_LIST_LIMIT = 20
#: Startup sweeps on PostgreSQL are single-flight across hosts under this advisory lock key.
STARTUP_LOCK_KEY = 0x5155414C  # "QUAL"
#: A startup sweep never holds a server's start for longer than this (PostgreSQL).
STARTUP_STATEMENT_TIMEOUT_MS = 30_000

SOURCE_PHRASES = {
    RecoverySource.STARTUP: "recovered at server start",
    RecoverySource.COMMAND: "recovered by the recover_stuck_runs command",
    RecoverySource.ADMIN: "recovered from the admin",
    RecoverySource.API: "recovered through the recovery API",
    RecoverySource.SWEEPER: "recovered by the periodic sweeper",
}


class RecoveryInputError(ValueError):
    """Bad arguments to a sweep: nothing was changed."""


@dataclass(slots=True)  # not frozen: a sweep builds one per recovered run, and frozen
class RunSnapshot:  # dataclasses pay an object.__setattr__ per field for it
    """An active run as a sweep saw it."""

    id: int
    status: str
    completed: int
    total: int
    created_at: dt.datetime
    heartbeat_at: dt.datetime | None
    last_seen: dt.datetime

    def age_minutes(self, now: dt.datetime) -> int:
        return _whole_minutes(now - self.created_at)

    def silent_minutes(self, now: dt.datetime) -> int:
        return _whole_minutes(now - self.last_seen)

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "completed": self.completed,
            "total": self.total,
            "age_minutes": self.age_minutes(now),
            "heartbeat_at": self.heartbeat_at.isoformat() if self.heartbeat_at else None,
            "silent_minutes": self.silent_minutes(now),
        }

    def listing_line(self, now: dt.datetime) -> str:
        beat = (
            f"last heartbeat {_whole_minutes(now - self.heartbeat_at)}min ago"
            if self.heartbeat_at
            else "no heartbeat yet"
        )
        return (
            f"  - {self.id}: {self.status}, {self.completed}/{self.total}, "
            f"age: {self.age_minutes(now)}min, {beat}"
        )


@dataclass(slots=True)
class RecoveredRun(RunSnapshot):
    """A run a sweep moved to FAILED; `status` is the status it had before."""

    reason: str = ""

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        return {
            **RunSnapshot.as_dict(self, now),  # slots dataclasses lose zero-argument super()
            "previous_status": self.status,
            "new_status": RunStatus.FAILED.value,
            "reason": self.reason,
        }

    def recovered_line(self) -> str:
        return (
            f"  - Run {self.id}: {self.completed}/{self.total} completed "
            f"(status: {self.status} → {RunStatus.FAILED})"
        )


@dataclass
class RecoveryReport:
    """What a sweep saw and did; the command prints it, the API returns it."""

    timeout_minutes: int
    source: str
    dry_run: bool
    force: bool
    now: dt.datetime
    active_count: int = 0
    active: list[RunSnapshot] = field(default_factory=list)
    stuck_count: int = 0
    stuck: list[RunSnapshot] = field(default_factory=list)
    recovered: list[RecoveredRun] = field(default_factory=list)
    skipped_reason: str = ""

    @property
    def recovered_count(self) -> int:
        return len(self.recovered)

    def as_dict(self) -> dict[str, Any]:
        return {
            "timeout_minutes": self.timeout_minutes,
            "dry_run": self.dry_run,
            "force": self.force,
            "source": self.source,
            "checked_at": self.now.isoformat(),
            "active_count": self.active_count,
            "stuck_count": self.stuck_count,
            "recovered_count": self.recovered_count,
            "active": [run.as_dict(self.now) for run in self.active],
            "stuck": [run.as_dict(self.now) for run in self.stuck],
            "recovered": [run.as_dict(self.now) for run in self.recovered],
            "skipped_reason": self.skipped_reason,
        }

    def lines(self, list_limit: int | None = DEFAULT_LIST_LIMIT) -> list[str]:
        """The log lines of the original write-up, listings bounded by `list_limit`."""
        lines = [f"[Recovery] Found {self.active_count} active run(s) in database:"]
        lines += _bounded(
            [run.listing_line(self.now) for run in self.active], self.active_count, list_limit
        )
        if self.skipped_reason:
            lines.append(f"[Recovery] Skipped: {self.skipped_reason}")
            return lines
        rule = (
            "named by the operator, forced"
            if self.force
            else f"no sign of life for {self.timeout_minutes}+ minutes"
        )
        if not self.stuck_count:
            lines.append(f"[Recovery] No stuck runs found ({rule})")
            return lines
        lines.append(f"[Recovery] Found {self.stuck_count} stuck runs ({rule})")
        if self.dry_run:
            lines += _bounded(
                [run.listing_line(self.now) for run in self.stuck], self.stuck_count, list_limit
            )
            lines.append(
                f"[Recovery] Would mark {self.stuck_count} runs as FAILED (dry run: nothing changed)"
            )
            return lines
        lines.append(f"[Recovery] Marked {self.recovered_count} runs as FAILED")
        lines += _bounded(
            [run.recovered_line() for run in self.recovered], self.recovered_count, list_limit
        )
        return lines


def _bounded(lines: list[str], total: int, limit: int | None) -> list[str]:
    shown = lines if limit is None else lines[:limit]
    if total > len(shown):
        shown = [*shown, f"  ... and {total - len(shown)} more"]
    return shown


def _whole_minutes(delta: dt.timedelta) -> int:
    return max(0, math.floor(delta.total_seconds() / 60))


# --- queries ---------------------------------------------------------------------------------


def active_runs() -> QualificationRunQuerySet:
    return QualificationRun.objects.active()


def stuck_runs(timeout_minutes: int | None = None, now: dt.datetime | None = None):
    """The stuck runs for a timeout: a query only, it changes nothing (the original's getStuckRuns)."""
    return QualificationRun.objects.stuck(_timeout(timeout_minutes), now)


def candidates(
    *,
    timeout_minutes: int,
    now: dt.datetime,
    run_ids: Sequence[int] | None = None,
    force: bool = False,
) -> QualificationRunQuerySet:
    """The runs a sweep may fail: stuck ones, or with `force` any named active one."""
    runs = QualificationRun.objects.active() if force else stuck_runs(timeout_minutes, now)
    if run_ids is not None:
        runs = runs.filter(pk__in=run_ids)
    return runs


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
        raise RecoveryInputError(
            "No qualification run with id " + ", ".join(str(run_id) for run_id in missing)
        )
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
) -> RecoveryReport:
    """Fails every stuck run (or, with `force`, every named active run) exactly once.

    Returns a report of what was active, what was stuck and what was recovered. Bad input
    raises `RecoveryInputError` before anything is changed.
    """
    if source not in RecoverySource.values:
        raise RecoveryInputError(f"unknown recovery source {source!r}")
    timeout = _timeout(timeout_minutes)
    if force and not run_ids:
        raise RecoveryInputError("force needs the ids of the runs to fail")
    if run_ids is not None:
        run_ids = check_run_ids(run_ids)
    now = timezone.now()
    report = RecoveryReport(
        timeout_minutes=timeout, source=source, dry_run=dry_run, force=force, now=now
    )
    report.active_count = active_runs().count()
    report.active = _snapshots(active_runs(), list_limit)
    victims = candidates(timeout_minutes=timeout, now=now, run_ids=run_ids, force=force)
    report.stuck_count = victims.count() if report.active_count else 0
    if dry_run:
        report.stuck = _snapshots(victims, list_limit) if report.stuck_count else []
    elif report.stuck_count:
        reason = ReasonTemplate.for_sweep(source=source, force=force, actor=actor)
        if connection.vendor == "postgresql":
            _sweep_postgresql(report, victims, reason, actor)
        else:
            _sweep_generic(report, victims, reason, actor)
    if log:
        for line in report.lines(list_limit):
            logger.info(line)
    return report


@dataclass(frozen=True)
class ReasonTemplate:
    """The failure reason is `prefix + <minutes silent> + suffix`, built in SQL or in Python."""

    prefix: str
    suffix: str

    @classmethod
    def for_sweep(cls, *, source: str, force: bool, actor: Any) -> ReasonTemplate:
        where = SOURCE_PHRASES[RecoverySource(source)]
        if actor is not None:
            where += f" by {actor.get_username()}"
        if force:
            return cls("force-failed by an operator (last sign of life ", f" min ago); {where}")
        return cls("no sign of life for ", f" min; {where}")

    def render(self, silent_minutes: int) -> str:
        return f"{self.prefix}{silent_minutes}{self.suffix}"


def _event_origin() -> tuple[str, int]:
    return socket.gethostname()[:255], os.getpid()


def _sweep_postgresql(
    report: RecoveryReport,
    victims: QualificationRunQuerySet,
    reason: ReasonTemplate,
    actor: Any,
) -> None:
    """One statement per batch: lock the victims (skipping rows others hold), fail them,
    insert their events, and return what was done."""
    runs_table = connection.ops.quote_name(QualificationRun._meta.db_table)
    events_table = connection.ops.quote_name(RecoveryEvent._meta.db_table)
    host, pid = _event_origin()
    while True:
        with transaction.atomic():
            if report.source == RecoverySource.STARTUP and not _startup_lock():
                report.skipped_reason = "another process is recovering stuck runs right now"
                return
            locked = (
                victims.annotate(last_seen=last_sign_of_life())
                .order_by()
                .values_list("pk", "status", "last_seen")
                .select_for_update(skip_locked=True, of=("self",))[:BATCH_SIZE]
            )
            select_sql, select_params = locked.query.sql_with_params()
            sql = f"""
                WITH victims (id, status, last_seen) AS ({select_sql}),
                updated AS (
                    UPDATE {runs_table} AS run
                    SET status = %s,
                        completed_at = %s,
                        failure_reason = %s
                            || FLOOR(EXTRACT(EPOCH FROM (%s - victims.last_seen)) / 60)::bigint
                            || %s
                    FROM victims
                    WHERE run.id = victims.id
                    RETURNING run.id, victims.status AS from_status, run.completed, run.total,
                              run.created_at, run.heartbeat_at, victims.last_seen,
                              run.failure_reason
                ),
                events AS (
                    INSERT INTO {events_table} (run_id, created_at, from_status, to_status,
                        source, reason, completed, total, heartbeat_at, host, pid, actor_id)
                    SELECT id, %s, from_status, %s, %s, failure_reason, completed, total,
                           heartbeat_at, %s, %s, %s
                    FROM updated
                )
                SELECT id, from_status, completed, total, created_at, heartbeat_at, last_seen,
                       failure_reason
                FROM updated
            """  # noqa: S608 - only table names are formatted in; values are parameters
            params = [
                *select_params,
                RunStatus.FAILED,
                report.now,
                reason.prefix,
                report.now,
                reason.suffix,
                report.now,
                RunStatus.FAILED,
                report.source,
                host,
                pid,
                getattr(actor, "pk", None),
            ]
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
        report.recovered += [RecoveredRun(*row) for row in rows]
        # A short batch means nothing is left; a full one that reaches the count made before
        # the sweep means the same, without one more statement to find out.
        if len(rows) < BATCH_SIZE or len(report.recovered) >= report.stuck_count:
            return


def _startup_lock() -> bool:
    """Startup sweeps are single-flight: N workers starting at once make one sweep, not N."""
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL statement_timeout = {STARTUP_STATEMENT_TIMEOUT_MS}")
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [STARTUP_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _sweep_generic(
    report: RecoveryReport,
    victims: QualificationRunQuerySet,
    reason: ReasonTemplate,
    actor: Any,
) -> None:
    """Portable sweep: per batch, read the victims, fail them in one UPDATE and bulk-insert
    their events, all in one transaction that holds the write lock (SQLite IMMEDIATE mode)
    or row locks (databases with SELECT ... FOR UPDATE)."""
    host, pid = _event_origin()
    actor_id = getattr(actor, "pk", None)
    while True:
        with transaction.atomic():
            rows = victims.annotate(last_seen=last_sign_of_life()).order_by("pk")
            if connection.features.has_select_for_update_skip_locked:
                rows = rows.select_for_update(skip_locked=True, of=("self",))
            batch = [
                RunSnapshot(*row)
                for row in rows.values_list(
                    "pk", "status", "completed", "total", "created_at", "heartbeat_at", "last_seen"
                )[:GENERIC_BATCH_SIZE]
            ]
            if not batch:
                return
            reasons = {run.id: reason.render(run.silent_minutes(report.now)) for run in batch}
            by_reason: dict[str, list[int]] = defaultdict(list)
            for run_id, text in reasons.items():
                by_reason[text].append(run_id)
            changed = QualificationRun.objects.filter(
                pk__in=list(reasons), status__in=ACTIVE_STATUSES
            ).update(
                status=RunStatus.FAILED,
                completed_at=report.now,
                failure_reason=Case(
                    *(When(pk__in=ids, then=Value(text)) for text, ids in by_reason.items()),
                    default=Value(""),
                ),
            )
            if changed != len(batch):  # pragma: no cover - the write lock makes this impossible
                raise RuntimeError("recovery batch changed under its lock; rolled back")
            RecoveryEvent.objects.bulk_create(
                RecoveryEvent(
                    run_id=run.id,
                    created_at=report.now,
                    from_status=run.status,
                    to_status=RunStatus.FAILED,
                    source=report.source,
                    reason=reasons[run.id],
                    completed=run.completed,
                    total=run.total,
                    heartbeat_at=run.heartbeat_at,
                    host=host,
                    pid=pid,
                    actor_id=actor_id,
                )
                for run in batch
            )
        report.recovered += [
            RecoveredRun(
                run.id,
                run.status,
                run.completed,
                run.total,
                run.created_at,
                run.heartbeat_at,
                run.last_seen,
                reasons[run.id],
            )
            for run in batch
        ]
        if len(batch) < GENERIC_BATCH_SIZE:
            return
