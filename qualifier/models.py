"""Prospects to qualify and their results.

A run owns its prospects (a retry copies the ones still without a result into the new run).
Results are written as they are produced, one per prospect per run, so a run whose worker dies
keeps everything it finished, and no prospect is ever scored twice within a run.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from recovery.models import QualificationRun

from .criteria import normalize_domain


class Prospect(models.Model):
    run = models.ForeignKey(
        QualificationRun, verbose_name=_("run"), on_delete=models.CASCADE, related_name="prospects"
    )
    #: The prospect's place in the input (its CSV data line number, or JSON index + 1).
    position = models.PositiveIntegerField(_("position"))
    #: The prospect's place in the run, from 1, as the results page numbers it: stored, so a
    #: page of a big run is numbered without counting the prospects before each row.
    number = models.PositiveIntegerField(_("number"))
    name = models.CharField(_("name"), max_length=255)
    email = models.CharField(_("email"), max_length=255, blank=True)
    company = models.CharField(_("company"), max_length=255)
    domain = models.CharField(_("website or domain"), max_length=255, blank=True)
    title = models.CharField(_("title"), max_length=255, blank=True)
    industry = models.CharField(_("industry"), max_length=255, blank=True)
    employees = models.PositiveIntegerField(_("employees"), null=True, blank=True)
    country = models.CharField(_("country"), max_length=100, blank=True)
    #: Columns the input had that we do not know, kept as given.
    extra = models.JSONField(_("extra data"), default=dict, blank=True)

    class Meta:
        verbose_name = _("prospect")
        verbose_name_plural = _("prospects")
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="prospect_unique_position"),
            models.UniqueConstraint(fields=["run", "number"], name="prospect_unique_number"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.company})"

    @property
    def domain_name(self) -> str:
        """The domain the scorer judges ("https://www.acme.io/" -> "acme.io"): from the
        website or domain column, else from the email."""
        return normalize_domain(self.domain or self.email)


class RunInput(models.Model):
    """The columns of a run's input as they were given, in their order, so the results
    download has the shape of the upload and can be uploaded again."""

    run = models.OneToOneField(
        QualificationRun,
        verbose_name=_("run"),
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="input",
    )
    columns = models.JSONField(_("input columns"), default=list)
    #: The CSV delimiter of the upload, which its download uses too: a spreadsheet set for a
    #: locale whose decimal mark is a comma opens semicolon-separated files.
    delimiter = models.CharField(_("CSV delimiter"), max_length=1, default=",")

    class Meta:
        verbose_name = _("run input")
        verbose_name_plural = _("run inputs")

    def __str__(self) -> str:
        return f"Run {self.run_id}: {', '.join(self.columns)}"


class Outcome(models.TextChoices):
    QUALIFIED = "QUALIFIED", _("Qualified")
    NOT_QUALIFIED = "NOT_QUALIFIED", _("Not qualified")
    ERRORED = "ERRORED", _("Errored")


class ProspectResult(models.Model):
    run = models.ForeignKey(
        QualificationRun, verbose_name=_("run"), on_delete=models.CASCADE, related_name="results"
    )
    prospect = models.ForeignKey(
        Prospect, verbose_name=_("prospect"), on_delete=models.CASCADE, related_name="results"
    )
    outcome = models.CharField(_("outcome"), max_length=16, choices=Outcome.choices)
    #: 0 to 100; null when the scorer raised on this prospect.
    score = models.PositiveSmallIntegerField(_("score"), null=True, blank=True)
    reasons = models.JSONField(_("reasons"), default=list, blank=True)
    error = models.TextField(_("error"), blank=True)
    created_at = models.DateTimeField(_("scored at"), db_default=Now())

    class Meta:
        verbose_name = _("result")
        verbose_name_plural = _("results")
        ordering = ["run", "prospect__position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "prospect"], name="result_once_per_prospect"),
            models.CheckConstraint(
                condition=Q(score__isnull=True) | Q(score__lte=100), name="result_score_0_100"
            ),
        ]
        indexes = [models.Index(fields=["run", "outcome"], name="result_run_outcome_idx")]

    def __str__(self) -> str:
        return f"{self.prospect_id}: {self.outcome} ({self.score})"

    @property
    def qualified(self) -> bool:
        return self.outcome == Outcome.QUALIFIED


class IdempotencyKey(models.Model):
    """An `Idempotency-Key` a user sent with `POST /api/qualify/runs`, and the run it created:
    repeating the request returns that run instead of creating another. Kept for a day; the
    unique (user, key) constraint decides between two requests that race with one key."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, verbose_name=_("user"), on_delete=models.CASCADE
    )
    key = models.CharField(_("key"), max_length=255)
    #: SHA-256 of the request body: the same key with another body is refused, not replayed.
    body_hash = models.CharField(_("body hash"), max_length=64)
    run = models.ForeignKey(QualificationRun, verbose_name=_("run"), on_delete=models.CASCADE)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        verbose_name = _("idempotency key")
        verbose_name_plural = _("idempotency keys")
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_once_per_user")
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_created_idx")]

    def __str__(self) -> str:
        return f"{self.key} → run {self.run_id}"
