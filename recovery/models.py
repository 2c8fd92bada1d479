"""The qualification run, its lifecycle, and the audit trail of every recovery.

Every state change is a conditional UPDATE that names the state it expects and reports whether
it happened, so a stale writer can never overwrite a newer state: a worker whose run was
recovered cannot write PROCESSING, progress or COMPLETED over FAILED, and recovery cannot fail
a run that has just completed or beaten.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce, Now
from django.tasks.base import DEFAULT_TASK_PRIORITY, TASK_MAX_PRIORITY, TASK_MIN_PRIORITY
from django.utils.translation import gettext_lazy as _

from .clock import since_start_until

logger = logging.getLogger("recovery")


class RunStatus(models.TextChoices):
    PENDING = "PENDING", _("Pending")
    PROCESSING = "PROCESSING", _("Processing")
    COMPLETED = "COMPLETED", _("Completed")
    FAILED = "FAILED", _("Failed")


class RecoveryCause(models.TextChoices):
    """Why a run was recovered: the definition of "dead" names one of these for every run."""

    WORKER_GONE = "worker_gone", _("Worker gone")
    WORKER_SILENT = "worker_silent", _("Worker stopped responding")
    PROCESS_GONE = "process_gone", _("Worker process exited")
    NO_PROGRESS = "no_progress", _("No progress")
    NO_TASK = "no_task", _("Queued task gone")
    FORCED = "forced", _("Forced by an operator")
    SHUTDOWN = "shutdown", _("Handed back at shutdown")
    CRASHED = "crashed", _("Executor crashed")


#: The causes of runs found dead while PROCESSING (by a sweep, or by the supervisor when its
#: executor crashed): how long such a run stayed active says how quickly death is noticed.
#: Not hand-backs at shutdown, forced failures (an operator's call) or queued runs (no_task).
DEAD_RUN_CAUSES: tuple[str, ...] = (
    RecoveryCause.WORKER_GONE,
    RecoveryCause.WORKER_SILENT,
    RecoveryCause.PROCESS_GONE,
    RecoveryCause.NO_PROGRESS,
    RecoveryCause.CRASHED,
)

ACTIVE_STATUSES: tuple[str, ...] = (RunStatus.PENDING, RunStatus.PROCESSING)
FINISHED_STATUSES: tuple[str, ...] = (RunStatus.COMPLETED, RunStatus.FAILED)


def spoken(seconds: int) -> str:
    """A duration as people say it: "45 s", "12 min", "2 h 5 min" (the pages and the overview)."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def last_sign_of_life() -> Coalesce:
    """The last heartbeat, or the start, or the creation of a run that never beat.

    The partial index `run_active_last_seen_idx` is built on this same expression, so the
    stuck query is an index scan however many finished runs the table holds.
    """
    return Coalesce("heartbeat_at", "started_at", "created_at")


class Worker(models.Model):
    """A process that executes runs: registered when it starts, beating while it lives, removed
    on a clean exit. A run's owner is its worker's row, so a run is dead when that row is gone,
    silent, or names a process that no longer exists on its host."""

    host = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("pid"))
    # The OS's start time of the process: a pid reused by another process has another one.
    process_started_at = models.DateTimeField(_("process started"), null=True, blank=True)
    registered_at = models.DateTimeField(_("registered at"), db_default=Now())
    last_beat_at = models.DateTimeField(_("last beat"), db_default=Now())
    executor_pid = models.PositiveIntegerField(_("executor pid"), null=True, blank=True)

    class Meta:
        verbose_name = _("worker")
        verbose_name_plural = _("workers")
        ordering = ["host", "pid"]
        indexes = [models.Index(fields=["host"], name="worker_host_idx")]

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"


class QualificationRunQuerySet(models.QuerySet["QualificationRun"]):
    def leased(self) -> QualificationRunQuerySet:
        """What workers execute and liveness judges: runs worked whole, and slices; never a
        run worked as slices (its slices hold its leases)."""
        return self.filter(slice_count=0)

    def active(self) -> QualificationRunQuerySet:
        return self.filter(status__in=ACTIVE_STATUSES)

    def finished(self) -> QualificationRunQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def continuable(self) -> QualificationRunQuerySet:
        """FAILED runs with prospects left: their owner (or an operator) may continue them in
        place. `completed` counts the results written, so it says what is left."""
        return self.filter(status=RunStatus.FAILED, completed__lt=F("total"))


class RunManager(models.Manager["QualificationRun"]):
    """The runs people submitted (`QualificationRun.objects`): a run's slices are rows of
    this model too, but belong to their run, and are reached through `leases`."""

    def get_queryset(self) -> QualificationRunQuerySet:
        return QualificationRunQuerySet(self.model, using=self._db).filter(parent__isnull=True)


class LeaseManager(models.Manager["QualificationRun"]):
    """What workers execute and recovery judges (`QualificationRun.leases`): every run that is
    worked whole, and every slice of a run worked as slices."""

    def get_queryset(self) -> QualificationRunQuerySet:
        return QualificationRunQuerySet(self.model, using=self._db).leased()


class QualificationRun(models.Model):
    status = models.CharField(
        _("status"), max_length=16, choices=RunStatus.choices, default=RunStatus.PENDING
    )
    total = models.PositiveIntegerField(_("prospects"), default=0)
    completed = models.PositiveIntegerField(_("prospects done"), default=0)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="qualification_runs",
    )
    criteria = models.JSONField(_("criteria"), default=dict, blank=True)
    created_at = models.DateTimeField(_("created at"), db_default=Now())
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    completed_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    failure_reason = models.TextField(_("failure reason"), blank=True)
    # Bumped at every start: the fencing token, with `worker`.
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    # Bumped only when recovery finds the run's worker dead (never at a clean hand-back); the
    # crash-loop guard counts these, and Continue starts the count again.
    deaths = models.PositiveIntegerField(_("deaths"), default=0)
    # The prospect (its number in input order, from 1) that crashed the worker twice: the
    # next worker writes it to the results as errored instead of scoring it. Set by recovery.
    skip_prospect = models.PositiveIntegerField(_("prospect to skip"), null=True, blank=True)
    # The seconds every earlier attempt worked (database clock); the current one is added on
    # the fly while it runs.
    worked_seconds = models.FloatField(_("seconds worked"), default=0.0)
    # The worker executing the run (the fencing token, with `attempts`); SET_NULL when its row
    # is removed, so a PROCESSING run without a worker is one whose worker is gone.
    worker = models.ForeignKey(
        Worker,
        verbose_name=_("worker"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="runs",
    )
    # The task that executes it, read back through the tasks API's get_result().
    task_id = models.CharField(_("task id"), max_length=64, blank=True)
    # When it last entered the queue (creation, hand-back), on the database's clock.
    queued_at = models.DateTimeField(_("queued at"), null=True, blank=True, db_default=Now())
    # The priority its task was queued with (django.tasks: higher goes first): where it stands
    # in the queue, set by `recovery.queue.queue_priorities` (round robin across owners).
    priority = models.SmallIntegerField(
        _("queue priority"), default=DEFAULT_TASK_PRIORITY, db_default=DEFAULT_TASK_PRIORITY
    )

    # A run of more than RECOVERY_SLICE_SIZE prospects is worked as slices: rows of this model
    # over a range of its prospects' numbers, each a lease of its own (a worker, an attempt,
    # deaths, a task), so several workers work one run and recovery judges each slice alone.
    # The run itself then holds no lease: `slice_count` says so, and `recovery.slices` keeps
    # its status, progress and times as the sum of its slices'.
    parent = models.ForeignKey(
        "self",
        verbose_name=_("slice of run"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",  # reached through `leases`: the default manager hides slices
    )
    first_number = models.PositiveIntegerField(_("first prospect"), null=True, blank=True)
    last_number = models.PositiveIntegerField(_("last prospect"), null=True, blank=True)
    slice_count = models.PositiveIntegerField(_("slices"), default=0, db_default=0)

    objects = RunManager.from_queryset(QualificationRunQuerySet)()
    leases = LeaseManager.from_queryset(QualificationRunQuerySet)()

    class Meta:
        verbose_name = _("qualification run")
        verbose_name_plural = _("qualification runs")
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(
                last_sign_of_life(),
                name="run_active_last_seen_idx",
                condition=Q(status__in=ACTIVE_STATUSES),
            ),
            models.Index(fields=["user", "-created_at"], name="run_user_created_idx"),
            models.Index(fields=["status", "-created_at"], name="run_status_created_idx"),
            models.Index(
                fields=["parent", "status"],
                name="run_slice_parent_idx",
                condition=Q(parent__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(completed__lte=F("total")), name="run_completed_lte_total"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(priority__range=(TASK_MIN_PRIORITY, TASK_MAX_PRIORITY)),
                name="run_priority_range",
            ),
            models.CheckConstraint(
                condition=Q(
                    parent__isnull=True, first_number__isnull=True, last_number__isnull=True
                )
                | Q(
                    parent__isnull=False,
                    slice_count=0,
                    first_number__gte=1,
                    last_number__gte=F("first_number"),
                ),
                name="run_slice_range",
            ),
        ]

    def __str__(self) -> str:
        if self.parent_id is not None:
            return f"Run {self.parent_id}, {self.prospects_label} ({self.status}, {self.progress})"
        return f"Run {self.pk} ({self.status}, {self.progress})"

    # --- derived values -------------------------------------------------------------------

    @property
    def progress(self) -> str:
        return f"{self.completed}/{self.total}"

    @property
    def prospects_label(self) -> str:
        """Which of its run's prospects a slice works ("prospects 101–200")."""
        if self.first_number is None:
            return "all prospects"
        return f"prospects {self.first_number:,}–{self.last_number:,}"

    @property
    def label(self) -> str:
        """How logs and reasons name it: "Run 7", or "Run 7 (prospects 101–200)"."""
        if self.parent_id is None:
            return f"Run {self.pk}"
        return f"Run {self.parent_id} ({self.prospects_label})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def last_seen(self) -> dt.datetime:
        """The last sign of life as stored (what `last_sign_of_life()` computes in SQL)."""
        return self.heartbeat_at or self.started_at or self.created_at

    def activity(self) -> str:
        """What an active run is doing, in one short line for its owner (`outlook.Outlook`'s
        summary; needs `outlook.annotate()`); empty once it has finished."""
        from .outlook import outlook_of

        return outlook_of(self).summary

    def duration(self) -> dt.timedelta | None:
        """How long the run has worked, summed over its attempts, on the database's clock (the
        current attempt's share comes from `liveness.annotate_runs()`); for a run worked as
        slices, the time since its first slice started (its slices' seconds overlap)."""
        if self.started_at is None:
            return None
        if self.slice_count:  # its slices work side by side: from its first start to its end
            if self.completed_at is not None:
                return self.completed_at - self.started_at
            since_start = getattr(self, "attempt_seconds", None)
            if since_start is not None:
                return dt.timedelta(seconds=since_start)
        current = (
            getattr(self, "attempt_seconds", None) if self.status == RunStatus.PROCESSING else None
        )
        return dt.timedelta(seconds=self.worked_seconds + (current or 0))

    # --- lifecycle: every transition is a compare-and-set -------------------------------------

    def _owned(self) -> QualificationRunQuerySet:
        """This run, only while PROCESSING under this worker and attempt (the fencing token)."""
        return QualificationRun.leases.filter(
            pk=self.pk,
            status=RunStatus.PROCESSING,
            worker_id=self.worker_id,
            attempts=self.attempts,
        )

    def _apply(self, changes: dict[str, Any]) -> None:
        computed = []
        for field, value in changes.items():
            if hasattr(value, "resolve_expression"):
                computed.append(field)
            else:
                setattr(self, field, value)
        if computed:  # database-clock values and sums are read back
            self.refresh_from_db(fields=computed)

    @property
    def whole_run_id(self) -> int:
        """The run a user knows: a slice's run, or the run itself."""
        return self.parent_id or self.pk

    def _transition(self, leases: QualificationRunQuerySet, changes: dict[str, Any]) -> bool:
        """One compare-and-set; a slice's run follows in the same transaction."""
        if self.parent_id is None:
            changed = leases.update(**changes)
        else:
            from . import slices

            with transaction.atomic():
                changed = leases.update(**changes)
                if changed and changes["status"] == RunStatus.PROCESSING:
                    slices.started(self.parent_id)
                elif changed:
                    slices.settle([self.parent_id])
        if changed:
            self._apply(changes)
        return bool(changed)

    def start(self, worker: Worker) -> bool:
        """PENDING → PROCESSING under `worker`, with the start time (database clock)."""
        changes = {
            "status": RunStatus.PROCESSING,
            "worker_id": worker.pk,
            "started_at": Now(),
            "heartbeat_at": Now(),
            "attempts": self.attempts + 1,
        }
        pending = QualificationRun.leases.filter(
            pk=self.pk, status=RunStatus.PENDING, attempts=self.attempts
        )
        return self._transition(pending, changes)

    def beat(self, *, completed: int | None = None) -> bool:
        """Records progress; False means the run is no longer ours. A slice's progress is
        added to its run's (call it in the transaction that writes the results)."""
        changes: dict[str, Any] = {"heartbeat_at": Now()}
        if completed is not None:
            changes["completed"] = completed
        beaten = self._owned().update(**changes)
        if beaten and completed is not None and self.parent_id is not None:
            QualificationRun.objects.filter(pk=self.parent_id).update(
                completed=F("completed") + (completed - self.completed), heartbeat_at=Now()
            )
        if beaten and completed is not None:
            self.completed = completed  # the beat's time is not read back: one write a batch
        return bool(beaten)

    def complete(self) -> bool:
        changes = {
            "status": RunStatus.COMPLETED,
            "completed_at": Now(),
            "heartbeat_at": Now(),
            "worked_seconds": F("worked_seconds") + since_start_until(Now()),
        }
        return self._transition(self._owned(), changes)

    def fail(self, reason: str) -> bool:
        """The worker gives up on its own run (an unexpected error)."""
        changes = {
            "status": RunStatus.FAILED,
            "completed_at": Now(),
            "failure_reason": reason[:2000],
            "worked_seconds": F("worked_seconds") + since_start_until(Now()),
        }
        return self._transition(self._owned(), changes)


class RecoverySource(models.TextChoices):
    STARTUP = "startup", _("Server start")
    COMMAND = "command", _("Management command")
    ADMIN = "admin", _("Admin action")
    API = "api", _("API")
    SWEEPER = "sweeper", _("Periodic sweeper")
    SHUTDOWN = "shutdown", _("Worker shutdown")
    SUPERVISOR = "supervisor", _("Worker supervisor")
    CONTINUE = "continue", _("Continued by its owner")


class RecoveryEvent(models.Model):
    """One row per recovered run: who recovered it, when, from where, and what it had done."""

    # No database-level constraint: an event is written by the same statement that fails its
    # run, so the run exists; checking it again per row at commit cost a sweep of 10,000 runs
    # a fifth of its time. Deletes still go through the ORM's PROTECT, and an event outlives
    # any run removed behind Django's back: the audit trail is kept either way.
    run = models.ForeignKey(
        QualificationRun,
        verbose_name=_("run"),
        on_delete=models.PROTECT,
        related_name="recovery_events",
        db_constraint=False,
    )
    created_at = models.DateTimeField(_("recovered at"), db_default=Now())
    from_status = models.CharField(_("from status"), max_length=16, choices=RunStatus.choices)
    to_status = models.CharField(_("to status"), max_length=16, choices=RunStatus.choices)
    source = models.CharField(_("source"), max_length=16, choices=RecoverySource.choices)
    cause = models.CharField(
        _("cause"), max_length=16, choices=RecoveryCause.choices, blank=True, default=""
    )
    reason = models.TextField(_("reason"))
    completed = models.PositiveIntegerField(_("prospects done"))
    total = models.PositiveIntegerField(_("prospects"))
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    # The prospect (number in input order, from 1) this recovery quarantined: it crashed the
    # worker twice, so it is written as errored and the run goes on without it.
    quarantined_prospect = models.PositiveIntegerField(
        _("quarantined prospect"), null=True, blank=True
    )
    # For a run worked as slices: the slice recovered (a row of the run model), and its
    # prospects' numbers. `run` is the run the slice belongs to.
    slice = models.ForeignKey(
        QualificationRun,
        verbose_name=_("slice"),
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,  # removed with its run, whose events are kept or pruned
        related_name="+",
        db_constraint=False,
    )
    first_prospect = models.PositiveIntegerField(_("first prospect"), null=True, blank=True)
    last_prospect = models.PositiveIntegerField(_("last prospect"), null=True, blank=True)
    host = models.CharField(_("recovering host"), max_length=255)
    pid = models.PositiveIntegerField(_("recovering pid"))
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("actor"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,  # done by the ORM, so no per-row check at commit either
        related_name="+",
        db_constraint=False,
    )

    class Meta:
        verbose_name = _("recovery event")
        verbose_name_plural = _("recovery events")
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at"], name="recovery_event_created_idx")]

    def __str__(self) -> str:
        where = f", prospects {self.first_prospect}–{self.last_prospect}" if self.slice_id else ""
        return f"Run {self.run_id}{where}: {self.from_status} → {self.to_status} ({self.source})"

    @property
    def progress(self) -> str:
        return f"{self.completed}/{self.total}"


class FencedWriteKind(models.TextChoices):
    """Which of a worker's conditional writes the fencing token refused."""

    PROGRESS = "progress", _("A batch of results and progress")
    COMPLETE = "complete", _("Completing the run")
    FAIL = "fail", _("Failing the run")
    HAND_BACK = "hand_back", _("Handing the run back")


class FencedWriteQuerySet(models.QuerySet["FencedWrite"]):
    def record(self, run: QualificationRun, kind: str, worker: str = "") -> None:
        """Notes that `run`'s worker tried to write to it after losing it. Called after the
        refused write's transaction has rolled back, so the row is kept; a database error here
        is logged, never raised, since the refusal itself is what keeps the run safe."""
        try:
            self.create(run_id=run.pk, kind=kind, worker=worker[:255], attempt=run.attempts)
        except DatabaseError as exc:
            logger.warning(
                "Run %s: a refused %s write could not be recorded: %s",
                run.pk,
                kind,
                " ".join(str(exc).split()) or type(exc).__name__,
            )


class FencedWrite(models.Model):
    """One write refused by fencing: a worker wrote to a run that was no longer PROCESSING under
    its worker and attempt (recovery took it), so the write changed nothing. Rare by nature (a
    stale writer after a recovery), so one row each; /metrics counts them across every host."""

    # Kept when the run is deleted (no constraint, no cascade): a counter never goes down.
    run = models.ForeignKey(
        QualificationRun,
        verbose_name=_("run"),
        on_delete=models.DO_NOTHING,
        related_name="fenced_writes",
        db_constraint=False,
    )
    kind = models.CharField(_("kind"), max_length=16, choices=FencedWriteKind.choices)
    worker = models.CharField(_("worker (host:pid)"), max_length=255, blank=True)
    attempt = models.PositiveIntegerField(_("attempt"))
    created_at = models.DateTimeField(_("refused at"), db_default=Now())

    objects = FencedWriteQuerySet.as_manager()

    class Meta:
        verbose_name = _("fenced write")
        verbose_name_plural = _("fenced writes")
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Run {self.run_id}: {self.kind} refused (attempt {self.attempt})"


class SweepOutcome(models.TextChoices):
    """How a sweep ended. Successful means it ran to its end without an error (dead runs it
    could not lock, held by another transaction, are left to the next sweep and do not make it
    unsuccessful)."""

    OK = "ok", _("Completed")
    SKIPPED = "skipped", _("Skipped: another process was sweeping")
    ERROR = "error", _("Failed with an error")


#: Upper bounds (seconds) of the sweep-duration histogram; an idle sweep takes milliseconds.
SWEEP_SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def sweep_bucket(seconds: float) -> str:
    """The histogram bucket of a duration, as Prometheus writes its `le` label."""
    return next((str(bound) for bound in SWEEP_SECONDS_BUCKETS if seconds <= bound), "+Inf")


class SweepTallyQuerySet(models.QuerySet["SweepTally"]):
    def record(self, source: str, outcome: str, seconds: float) -> None:
        """Adds one sweep to its row: one upsert (INSERT ... ON CONFLICT DO UPDATE, on
        PostgreSQL and SQLite alike), so every sweep of every process and host is counted at
        the cost of one small statement. `last_at` is the database's clock."""
        connection = connections[self.db]
        table = connection.ops.quote_name(self.model._meta.db_table)
        now_sql, now_params = self.query.get_compiler(connection=connection).compile(Now())
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                INSERT INTO {table} (source, outcome, le, sweeps, seconds, last_at)
                VALUES (%s, %s, %s, 1, %s, {now_sql})
                ON CONFLICT (source, outcome, le) DO UPDATE
                SET sweeps = {table}.sweeps + 1,
                    seconds = {table}.seconds + excluded.seconds,
                    last_at = excluded.last_at
                """,  # noqa: S608 - the table's name and Django's SQL for now; values are parameters
                [source, outcome, sweep_bucket(seconds), seconds, *now_params],
            )


class SweepTally(models.Model):
    """Running totals of the sweeps, one row per source, outcome and duration bucket: what
    /metrics exports as the sweep counters and duration histogram, and /readyz reads for the
    last successful sweep. Bounded (a row per source, outcome and bucket), however long it runs."""

    source = models.CharField(_("source"), max_length=16, choices=RecoverySource.choices)
    outcome = models.CharField(_("outcome"), max_length=16, choices=SweepOutcome.choices)
    # The bucket's upper bound as Prometheus writes it ("0.05", "+Inf"); a sweep is counted in
    # the first bucket it fits (the exposition makes them cumulative).
    le = models.CharField(_("at most (seconds)"), max_length=16)
    sweeps = models.PositiveBigIntegerField(_("sweeps"), default=0)
    seconds = models.FloatField(_("seconds in all"), default=0.0)
    last_at = models.DateTimeField(_("last ended at"), db_default=Now())

    objects = SweepTallyQuerySet.as_manager()

    class Meta:
        verbose_name = _("sweep tally")
        verbose_name_plural = _("sweep tallies")
        constraints = [
            models.UniqueConstraint(
                fields=["source", "outcome", "le"], name="sweep_tally_unique_bucket"
            )
        ]

    def __str__(self) -> str:
        return f"{self.source} {self.outcome} ≤ {self.le} s: {self.sweeps}"
