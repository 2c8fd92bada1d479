"""Storage retention: finished runs older than QUALIFIER_RUN_RETENTION_DAYS are deleted with their
prospects and results, in bounded batches, as `clearsessions` keeps sessions bounded.

Recovery events are the audit trail and have their own, longer retention
(RECOVERY_EVENT_RETENTION_DAYS). An event keeps its run: events past their retention are
deleted first, and a run that still has an event is kept until its last event expires, so the
trail never names a run that is gone (RecoveryEvent.run stays PROTECT).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from recovery.models import QualificationRun, RecoveryEvent

from .models import Prospect, ProspectResult

DEFAULT_BATCH_SIZE = 100
MAX_BATCH_SIZE = 10_000
#: A batch of runs stops growing once it holds this many prospects (a single run may hold more
#: on its own), so the ids that one batch's deletes read stay bounded whatever the runs' sizes.
BATCH_PROSPECTS = 20_000


@dataclass
class PruneReport:
    """What a prune deleted, or with `dry_run` would delete."""

    run_cutoff: dt.datetime
    event_cutoff: dt.datetime
    dry_run: bool
    runs: int = 0
    prospects: int = 0
    results: int = 0
    events: int = 0
    #: Runs past their retention that are kept because a recovery event still names them.
    kept_for_events: int = 0
    batches: int = 0


def expired_runs(cutoff: dt.datetime) -> QuerySet[QualificationRun]:
    """Finished runs that ended before `cutoff`. A run ends after it is created, so the
    created_at bound (which the status/created index serves) never drops one."""
    return (
        QualificationRun.objects.finished()
        .filter(created_at__lt=cutoff)
        .filter(Q(completed_at__lt=cutoff) | Q(completed_at__isnull=True))
    )


def without_events_after(runs: QuerySet[QualificationRun], cutoff: dt.datetime) -> QuerySet:
    """The runs no recovery event from `cutoff` on names."""
    kept = RecoveryEvent.objects.filter(run=OuterRef("pk"), created_at__gte=cutoff)
    return runs.filter(~Exists(kept))


def prune(
    *,
    run_days: int,
    event_days: int,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    now: dt.datetime | None = None,
) -> PruneReport:
    """Deletes recovery events older than `event_days`, then finished runs older than
    `run_days` that no remaining event names, with their prospects and results: at most
    `batch_size` rows of each (and BATCH_PROSPECTS prospects) per transaction."""
    now = now or timezone.now()
    report = PruneReport(
        run_cutoff=now - dt.timedelta(days=run_days),
        event_cutoff=now - dt.timedelta(days=event_days),
        dry_run=dry_run,
    )
    old_events = RecoveryEvent.objects.filter(created_at__lt=report.event_cutoff)
    expired = expired_runs(report.run_cutoff)
    deletable = without_events_after(expired, report.event_cutoff)
    if dry_run:
        report.events = old_events.count()
        report.runs = deletable.count()
        report.prospects = Prospect.objects.filter(run__in=deletable).count()
        report.results = ProspectResult.objects.filter(run__in=deletable).count()
        report.kept_for_events = expired.count() - report.runs
        return report
    while True:
        with transaction.atomic():
            ids = list(old_events.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                break
            # Nothing refers to an event: one DELETE.
            report.events += RecoveryEvent.objects.filter(pk__in=ids).delete()[0]
            report.batches += 1
    while True:
        with transaction.atomic():
            # Locked, so a run continued meanwhile (it gets an event, and PENDING) is either
            # waited for and then no longer finished, or skipped.
            rows = list(
                deletable.order_by("pk")
                .select_for_update(skip_locked=True)
                .values_list("pk", "total")[:batch_size]
            )
            if not rows:
                break
            ids, prospects = [], 0
            for pk, total in rows:
                if ids and prospects + total > BATCH_PROSPECTS:
                    break
                ids.append(pk)
                prospects += total
            report.results += ProspectResult.objects.filter(run_id__in=ids).delete()[0]
            # One DELETE, where the ORM's delete() would read every prospect's id and delete
            # them a hundred at a time for the sake of a cascade to results, which are already
            # gone in this transaction (Django's own collector deletes this way).
            prospects_of_runs = Prospect.objects.filter(run_id__in=ids)
            report.prospects += prospects_of_runs._raw_delete(prospects_of_runs.db)
            # What is left refers to runs by the run: the ORM deletes it a batch at a time,
            # and refuses (PROTECT) a run that a recovery event names.
            # A run worked as slices takes its slices (rows of the same model) with it: the
            # runs counted are the runs people see.
            QualificationRun.objects.filter(pk__in=ids).delete()
            report.runs += len(ids)
            report.batches += 1
    report.kept_for_events = expired.count()
    return report
