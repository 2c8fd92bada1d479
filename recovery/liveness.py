"""Alive, waiting or dead: the only code that decides it, for workers and for runs, and why.

Everything that shows or acts on liveness asks here: the sweep, the pages' "worker not
responding", /metrics, /readyz, the overview and the admin's skip reasons. Every age is on the
database's clock; no one is judged silent until the database itself has been up that long.

| signal                                                        | a PROCESSING run is       |
| ------------------------------------------------------------- | ------------------------- |
| its worker beat within RECOVERY_WORKER_TIMEOUT_SECONDS        | alive                     |
| it made progress within the same timeout                      | alive, whatever the beat  |
| its worker's row is gone                                      | dead: worker_gone         |
| its worker's process on this host exited (or its pid reused)  | dead: process_gone        |
| neither beat nor progress within the timeout                  | dead: worker_silent       |
| no progress for STUCK_RUN_TIMEOUT_MINUTES, though it beats    | dead: no_progress (hung)  |

A PENDING run is waiting while a live task is behind it (waiting in the queue, or claimed by
a live worker), and dead (no_task) once it has been queued for the worker timeout without one.

What a worker owns is a lease: a run, or a slice of one (`recovery.slices`: a row of the same
model), its worker, its attempt (the fencing token) and its last progress (`heartbeat_at`).
Slices are judged by these same pieces; a run worked as slices holds no lease and is never
dead itself (`dead()`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Greatest, Least, Now

from .clock import DatabaseStartedAt, SecondsBetween, SecondsSince, ago
from .conf import conf
from .models import QualificationRun, RecoveryCause, RunStatus, Worker, last_sign_of_life
from .queue import LastWorkerId, stores_tasks_in_database, task_key

ALIVE = "alive"
WAITING = "waiting"
DEAD = "dead"


@dataclass(frozen=True)
class Rule:
    """The timeouts a judgement uses, and what only this host can tell (its exited workers)."""

    worker_timeout_seconds: int
    stuck_timeout_minutes: int
    exited_worker_ids: tuple[int, ...] = field(default=())
    #: Queued runs another task backend said have no live task (see `no_task`).
    orphaned_pending_ids: tuple[int, ...] = field(default=())

    @classmethod
    def current(cls, *, stuck_timeout_minutes: int | None = None, local: bool = False) -> Rule:
        """The configured rule; `local` adds what only a sweep asks: this host's process table
        and, for a task backend other than django-tasks-db, the backend itself."""
        rule = cls(
            worker_timeout_seconds=conf.RECOVERY_WORKER_TIMEOUT_SECONDS,
            stuck_timeout_minutes=stuck_timeout_minutes or conf.STUCK_RUN_TIMEOUT_MINUTES,
        )
        if not local:
            return rule
        return cls(
            rule.worker_timeout_seconds,
            rule.stuck_timeout_minutes,
            exited_worker_ids=exited_worker_ids(),
            orphaned_pending_ids=() if stores_tasks_in_database() else _ask_backend(rule),
        )

    def lenient(self, extra_seconds: int) -> Rule:
        """The same rule with `extra_seconds` more on each timeout (/readyz: dead for long)."""
        return Rule(
            self.worker_timeout_seconds + extra_seconds,
            self.stuck_timeout_minutes + -(-extra_seconds // 60),
        )


# --- the named pieces ---------------------------------------------------------------------------
# Each needs the aliases `with_clock()` adds: `last_seen` (the lease's last progress) and
# `database_started`.


def with_clock(runs: QuerySet[QualificationRun]) -> QuerySet[QualificationRun]:
    return runs.alias(database_started=DatabaseStartedAt(), last_seen=last_sign_of_life())


def _quiet_since(name: str, seconds: int) -> Q:
    """`name` is older than `seconds`, and the database has been up that long."""
    cutoff = ago(seconds)
    return Q(**{f"{name}__lt": cutoff}, database_started__lt=cutoff)


def worker_gone() -> Q:
    return Q(status=RunStatus.PROCESSING, worker_id__isnull=True)


def process_gone(rule: Rule) -> Q:
    if not rule.exited_worker_ids:
        return Q(pk__in=[])
    return Q(status=RunStatus.PROCESSING, worker_id__in=rule.exited_worker_ids)


def silent(rule: Rule) -> Q:
    """Neither a beat nor progress within the worker timeout: any sign of life counts."""
    return (
        Q(status=RunStatus.PROCESSING)
        & _quiet_since("worker__last_beat_at", rule.worker_timeout_seconds)
        & _quiet_since("last_seen", rule.worker_timeout_seconds)
    )


def hung(rule: Rule) -> Q:
    """Its worker beats, but the run has made no progress for the stuck timeout."""
    return Q(status=RunStatus.PROCESSING) & _quiet_since(
        "last_seen", rule.stuck_timeout_minutes * 60
    )


def no_task(rule: Rule) -> Q:
    """Queued for the worker timeout with no live task behind it.

    With django-tasks-db this is one subquery against its task table (a task waiting, or
    claimed by a live worker, is live); any other backend is asked per run by the sweep, a
    bounded number of runs per sweep (`queue.orphaned_pending`), and pages call it waiting.
    """
    queued = Q(status=RunStatus.PENDING, queued_at__lt=ago(rule.worker_timeout_seconds))
    if not stores_tasks_in_database():
        return Q(status=RunStatus.PENDING, pk__in=rule.orphaned_pending_ids)
    return queued & ~Exists(live_tasks(rule).filter(pk=OuterRef("task_key")))


def live_tasks(rule: Rule) -> QuerySet[Any]:
    """django-tasks-db's task rows that still stand behind a run: waiting, claimed by a worker
    that is alive (our workers claim under their row's id), or claimed within the worker
    timeout: an executor whose worker was just found dead claims a task before it can see
    that, and puts it back untouched a query later (`recovery.worker.executor`). The claim time
    is the claiming host's clock, so one that is off by more than the timeout gets no grace."""
    from django.tasks import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    timeout = rule.worker_timeout_seconds
    alive_ids = alive_workers(rule).annotate(text=Cast("pk", CharField())).values("text")
    return DBTaskResult.objects.alias(last_worker=LastWorkerId("worker_ids")).filter(
        Q(status=TaskResultStatus.READY)
        | Q(status=TaskResultStatus.RUNNING, last_worker__in=alive_ids)
        | Q(
            status=TaskResultStatus.RUNNING,
            started_at__gt=ago(timeout),
            started_at__lt=ago(-timeout),
        )
    )


def _ask_backend(rule: Rule) -> tuple[int, ...]:
    """Another task backend is asked run by run, oldest queued first, a bounded number."""
    from .queue import orphaned_pending

    alive = {str(pk) for pk in alive_workers(rule).values_list("pk", flat=True)}
    waiting = (
        QualificationRun.leases.filter(
            status=RunStatus.PENDING, queued_at__lt=ago(rule.worker_timeout_seconds)
        )
        .order_by("queued_at", "pk")
        .values_list("pk", "task_id")
    )
    return orphaned_pending(waiting.iterator(), alive)


def dead(rule: Rule) -> Q:
    """A lease that is dead by one of the rules. A run worked as slices holds no lease: its
    slices are judged, each alone."""
    leased = Q(slice_count=0)
    return leased & (worker_gone() | process_gone(rule) | silent(rule) | hung(rule) | no_task(rule))


def cause(rule: Rule) -> Case:
    """Why a dead run is dead, one cause each, most certain first."""
    return Case(
        When(status=RunStatus.PENDING, then=Value(RecoveryCause.NO_TASK)),
        When(worker_gone(), then=Value(RecoveryCause.WORKER_GONE)),
        When(process_gone(rule), then=Value(RecoveryCause.PROCESS_GONE)),
        When(silent(rule), then=Value(RecoveryCause.WORKER_SILENT)),
        default=Value(RecoveryCause.NO_PROGRESS),
        output_field=CharField(),
    )


# --- runs ---------------------------------------------------------------------------------------


def dead_runs(rule: Rule | None = None) -> QuerySet[QualificationRun]:
    """The dead leases (runs worked whole, and slices), each annotated with its `cause`: one
    query, however many."""
    rule = rule or Rule.current(local=True)
    runs = with_clock(QualificationRun.leases.all()).alias(task_key=task_key())
    return runs.filter(dead(rule)).annotate(cause=cause(rule))


def dead_in(rule: Rule) -> Any:
    """Whole seconds until a PROCESSING run is dead if no sign of life comes (neither a beat
    nor progress): the first of `silent` and `hung` to fire, from the same timestamps and
    timeouts, on the database's clock. A rule fires once every age it reads is past its
    timeout, the database's uptime included."""
    beat = SecondsSince("worker__last_beat_at")
    seen = SecondsSince(F("last_seen"))
    up = SecondsSince(F("database_started"))
    quiet = Value(rule.worker_timeout_seconds)
    stuck = Value(rule.stuck_timeout_minutes * 60)
    until_silent = Greatest(quiet - beat, quiet - seen, quiet - up)
    until_hung = Greatest(stuck - seen, stuck - up)
    return Greatest(Value(0), Least(until_silent, until_hung))


def annotate_runs(runs: QuerySet[QualificationRun], rule: Rule | None = None) -> QuerySet[Any]:
    """What the pages show, from the same pieces: `liveness` (alive, waiting or dead, for
    active runs), `dead_cause`, seconds since the last activity, since queued and of the
    current attempt; for a PROCESSING run, seconds since its worker's last beat
    (`worker_beat_seconds`) and until the rule finds it dead if no sign of life comes
    (`dead_in_seconds`: 0 once it is dead)."""
    rule = rule or Rule.current()
    is_dead = dead(rule)
    return (
        with_clock(runs)
        .alias(task_key=task_key())
        .annotate(
            liveness=Case(
                When(is_dead, then=Value(DEAD)),
                When(status=RunStatus.PENDING, then=Value(WAITING)),
                When(status=RunStatus.PROCESSING, then=Value(ALIVE)),
                default=Value(""),
                output_field=CharField(),
            ),
            dead_cause=Case(When(is_dead, then=cause(rule)), default=Value("")),
            activity_seconds=SecondsSince(Coalesce("heartbeat_at", "started_at")),
            queued_seconds=SecondsSince("queued_at"),
            worker_alive_anywhere=Exists(alive_workers(rule)),
            attempt_seconds=Case(
                When(status=RunStatus.PROCESSING, then=SecondsBetween(F("started_at"), Now())),
                default=None,
            ),
            worker_beat_seconds=SecondsSince("worker__last_beat_at"),
            dead_in_seconds=Case(
                When(is_dead, then=Value(0)),
                When(status=RunStatus.PROCESSING, then=dead_in(rule)),
                default=None,
                output_field=IntegerField(),
            ),
        )
    )


@dataclass(frozen=True)
class RunState:
    """One run as the rule sees it now."""

    status: str
    liveness: str  # alive, waiting, dead, or "" for a finished run
    cause: str = ""


def run_states(run_ids: list[int], rule: Rule | None = None) -> dict[int, RunState]:
    """The state of each named run, in one query (the admin's skip reasons)."""
    rule = rule or Rule.current(local=True)
    rows = annotate_runs(QualificationRun.objects.filter(pk__in=run_ids), rule).values_list(
        "pk", "status", "liveness", "dead_cause"
    )
    return {pk: RunState(status, state, why) for pk, status, state, why in rows}


# --- workers ------------------------------------------------------------------------------------


def _worker_silent(rule: Rule) -> Q:
    return _quiet_since("last_beat_at", rule.worker_timeout_seconds)


def alive_workers(rule: Rule | None = None) -> QuerySet[Worker]:
    rule = rule or Rule.current()
    return Worker.objects.alias(database_started=DatabaseStartedAt()).exclude(_worker_silent(rule))


def annotate_workers(workers: QuerySet[Worker], rule: Rule | None = None) -> QuerySet[Worker]:
    """Each worker's `is_alive` and the run it is executing (`current_run_id`, or None; for a
    slice, the slice's run, and `current_first_number`/`current_last_number` its prospects)."""
    rule = rule or Rule.current()
    current = QualificationRun.leases.filter(worker=OuterRef("pk"), status=RunStatus.PROCESSING)
    current = current.annotate(whole=Coalesce("parent_id", "pk"))
    return workers.alias(database_started=DatabaseStartedAt()).annotate(
        is_alive=Case(
            When(_worker_silent(rule), then=Value(False)),
            default=Value(True),
            output_field=BooleanField(),
        ),
        current_run_id=Subquery(current.values("whole")[:1]),
        current_first_number=Subquery(current.values("first_number")[:1]),
        current_last_number=Subquery(current.values("last_number")[:1]),
    )


def dead_workers(rule: Rule) -> QuerySet[Worker]:
    """Workers to remove: silent, or their process exited on this host; never one that still
    owns a PROCESSING run (its runs are judged, and recovered, first)."""
    gone = _worker_silent(rule)
    if rule.exited_worker_ids:
        gone |= Q(pk__in=rule.exited_worker_ids)
    return (
        Worker.objects.alias(database_started=DatabaseStartedAt())
        .filter(gone)
        .exclude(runs__status=RunStatus.PROCESSING)
    )


def any_worker_alive() -> bool:
    return alive_workers().exists()


# --- this host's process table -------------------------------------------------------------------


def host_name() -> str:
    """The name this host's workers register under: RECOVERY_HOSTNAME, or the machine's."""
    return (conf.RECOVERY_HOSTNAME or socket.gethostname())[:255]


def process_started_at(pid: int) -> dt.datetime | None:
    """When the OS started process `pid` (Linux), or None where that cannot be read.

    Computed from the boot time and the process's start in clock ticks, so it is the same value
    every time it is read: a reused pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5); fields[0] is field 3
        with open("/proc/stat", encoding="ascii") as proc_stat:
            boot = next(int(line.split()[1]) for line in proc_stat if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    seconds = boot + ticks / os.sysconf("SC_CLK_TCK")
    return dt.datetime.fromtimestamp(round(seconds, 2), tz=dt.UTC)


def process_exists(pid: int, started_at: dt.datetime | None) -> bool:
    """Whether `pid` on this host is still the process that registered with `started_at`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if _is_zombie(pid):
        return False  # it has exited; only its parent has not collected it yet
    if started_at is None:
        return True
    current = process_started_at(pid)
    return current is None or abs((current - started_at).total_seconds()) < 0.5


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def exited_worker_ids() -> tuple[int, ...]:
    """This host's registered workers whose processes have exited (or whose pid was reused).

    One query for the few workers of this host, then a local check per process: no waiting for
    a timeout when the host itself can tell that the process is gone. A worker whose supervisor
    died while its executor still runs is not gone yet: the executor hands its run back.
    """
    rows = Worker.objects.filter(host=host_name()).values_list(
        "pk", "pid", "process_started_at", "executor_pid"
    )
    return tuple(
        pk
        for pk, pid, started, executor in rows
        if not process_exists(pid, started) and not (executor and process_exists(executor, None))
    )
