"""The qualification run, its lifecycle, and the audit trail of every recovery.

Every state change is a conditional UPDATE that names the state it expects and reports whether
it happened, so a stale writer can never overwrite a newer state: a worker whose run was
recovered cannot write PROCESSING, progress or COMPLETED over FAILED, and recovery cannot fail
a run that has just completed or beaten.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class RunStatus(models.TextChoices):
    PENDING = "PENDING", _("Pending")
    PROCESSING = "PROCESSING", _("Processing")
    COMPLETED = "COMPLETED", _("Completed")
    FAILED = "FAILED", _("Failed")


ACTIVE_STATUSES: tuple[str, ...] = (RunStatus.PENDING, RunStatus.PROCESSING)
FINISHED_STATUSES: tuple[str, ...] = (RunStatus.COMPLETED, RunStatus.FAILED)


def last_sign_of_life() -> Coalesce:
    """The last heartbeat, or the start, or the creation of a run that never beat.

    The partial index `run_active_last_seen_idx` is built on this same expression, so the
    stuck query is an index scan however many finished runs the table holds.
    """
    return Coalesce("heartbeat_at", "started_at", "created_at")


def current_owner() -> str:
    """Identifies the process doing the work: host and pid (read on each call: forks change it)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class QualificationRunQuerySet(models.QuerySet["QualificationRun"]):
    def active(self) -> QualificationRunQuerySet:
        return self.filter(status__in=ACTIVE_STATUSES)

    def finished(self) -> QualificationRunQuerySet:
        return self.filter(status__in=FINISHED_STATUSES)

    def silent_since(self, cutoff: dt.datetime) -> QualificationRunQuerySet:
        """Active runs whose last sign of life is older than `cutoff`."""
        return self.active().alias(last_seen=last_sign_of_life()).filter(last_seen__lt=cutoff)

    def stuck(
        self, timeout_minutes: int, now: dt.datetime | None = None
    ) -> QualificationRunQuerySet:
        """The one definition of "stuck": active, and silent for longer than the timeout."""
        return self.silent_since(stuck_cutoff(timeout_minutes, now))

    def not_stuck(
        self, timeout_minutes: int, now: dt.datetime | None = None
    ) -> QualificationRunQuerySet:
        cutoff = stuck_cutoff(timeout_minutes, now)
        return self.alias(last_seen=last_sign_of_life()).filter(
            ~Q(status__in=ACTIVE_STATUSES) | Q(last_seen__gte=cutoff)
        )

    def with_last_seen(self) -> QualificationRunQuerySet:
        return self.annotate(last_seen=last_sign_of_life())


def stuck_cutoff(timeout_minutes: int, now: dt.datetime | None = None) -> dt.datetime:
    return (now or timezone.now()) - dt.timedelta(minutes=timeout_minutes)


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
    retry_of = models.ForeignKey(
        "self",
        verbose_name=_("retry of"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
    completed_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    failure_reason = models.TextField(_("failure reason"), blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    owner = models.CharField(_("owner (host:pid)"), max_length=255, blank=True)

    objects = QualificationRunQuerySet.as_manager()

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
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(completed__lte=F("total")), name="run_completed_lte_total"
            ),
            models.CheckConstraint(
                condition=Q(status__in=RunStatus.values), name="run_status_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.status}, {self.progress})"

    # --- derived values -------------------------------------------------------------------

    @property
    def progress(self) -> str:
        return f"{self.completed}/{self.total}"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def last_seen(self) -> dt.datetime:
        return self.heartbeat_at or self.started_at or self.created_at

    def age(self, now: dt.datetime | None = None) -> dt.timedelta:
        return (now or timezone.now()) - self.created_at

    def duration(self) -> dt.timedelta | None:
        if self.started_at is None:
            return None
        return (self.completed_at or timezone.now()) - self.started_at

    def is_stuck(self, timeout_minutes: int, now: dt.datetime | None = None) -> bool:
        return self.is_active and self.last_seen < stuck_cutoff(timeout_minutes, now)

    # --- lifecycle: every transition is a compare-and-set -------------------------------------

    def _owned(self) -> QualificationRunQuerySet:
        """This run, only while PROCESSING under this owner and attempt (the fencing token)."""
        return QualificationRun.objects.filter(
            pk=self.pk, status=RunStatus.PROCESSING, owner=self.owner, attempts=self.attempts
        )

    def _apply(self, changes: dict[str, Any]) -> None:
        for field, value in changes.items():
            setattr(self, field, value)

    def start(self, owner: str | None = None) -> bool:
        """PENDING → PROCESSING under `owner`, with the start time and a first heartbeat."""
        now = timezone.now()
        changes = {
            "status": RunStatus.PROCESSING,
            "owner": owner or current_owner(),
            "started_at": now,
            "heartbeat_at": now,
            "attempts": self.attempts + 1,
        }
        started = QualificationRun.objects.filter(
            pk=self.pk, status=RunStatus.PENDING, attempts=self.attempts
        ).update(**changes)
        if started:
            self._apply(changes)
        return bool(started)

    def beat(self, *, completed: int | None = None) -> bool:
        """Records a sign of life (and progress); False means the run is no longer ours."""
        changes: dict[str, Any] = {"heartbeat_at": timezone.now()}
        if completed is not None:
            changes["completed"] = completed
        beaten = self._owned().update(**changes)
        if beaten:
            self._apply(changes)
        return bool(beaten)

    def complete(self) -> bool:
        now = timezone.now()
        changes = {"status": RunStatus.COMPLETED, "completed_at": now, "heartbeat_at": now}
        done = self._owned().update(**changes)
        if done:
            self._apply(changes)
        return bool(done)

    def fail(self, reason: str) -> bool:
        """The worker gives up on its own run (an unexpected error)."""
        changes = {
            "status": RunStatus.FAILED,
            "completed_at": timezone.now(),
            "failure_reason": reason[:2000],
        }
        failed = self._owned().update(**changes)
        if failed:
            self._apply(changes)
        return bool(failed)


class RecoverySource(models.TextChoices):
    STARTUP = "startup", _("Server start")
    COMMAND = "command", _("Management command")
    ADMIN = "admin", _("Admin action")
    API = "api", _("API")
    SWEEPER = "sweeper", _("Periodic sweeper")


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
    created_at = models.DateTimeField(_("recovered at"), default=timezone.now)
    from_status = models.CharField(_("from status"), max_length=16, choices=RunStatus.choices)
    to_status = models.CharField(_("to status"), max_length=16, choices=RunStatus.choices)
    source = models.CharField(_("source"), max_length=16, choices=RecoverySource.choices)
    reason = models.TextField(_("reason"))
    completed = models.PositiveIntegerField(_("prospects done"))
    total = models.PositiveIntegerField(_("prospects"))
    heartbeat_at = models.DateTimeField(_("last heartbeat"), null=True, blank=True)
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
        return f"Run {self.run_id}: {self.from_status} → {self.to_status} ({self.source})"

    @property
    def progress(self) -> str:
        return f"{self.completed}/{self.total}"
