"""Runs worked as slices: one run on many workers, with every guarantee of a run per slice.

A run of more than RECOVERY_SLICE_SIZE prospects is queued as slices: rows of the run model
over consecutive ranges of its prospects' numbers (`parent`, `first_number`, `last_number`).
A slice is a lease like a run worked whole: it is started by one worker under an attempt
(the fencing token), beats, completes or fails, dies, is resumed or failed by the sweep, is
handed back at shutdown, has its poison prospect quarantined, and is queued by the fair rule
(`queue.queue_priorities`). Nothing in liveness, the sweep or the worker side tells a slice
from a run: that is why a slice is a run's row and not a model of its own.

The run itself then holds no lease (`slice_count` > 0): it is never queued, started or judged
dead. Its status, progress and times are its slices', settled here in one statement whenever a
slice changes state: PROCESSING while a slice is, else PENDING while one waits, else FAILED if
one failed, else COMPLETED. Results are written under the run, so its pages, API and CSV are
the same whether it was sliced or not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import CharField, IntegerField, QuerySet
from django.db.models.functions import Coalesce, Now
from django.tasks.base import DEFAULT_TASK_PRIORITY

from . import queue
from .conf import conf
from .models import QualificationRun, RunStatus


def ranges(total: int, size: int) -> list[tuple[int, int]]:
    """The slices of a run of `total` prospects: consecutive ranges of at most `size` numbers,
    the last one no shorter than half a slice (a run of 230 at 100 is 100 and 130, not a slice
    of 30 that would cost a task for a few seconds of work)."""
    if total <= size:
        return [(1, total)]
    count = total // size
    if total % size * 2 >= size:
        count += 1
    bounds = [round(total * index / count) for index in range(count + 1)]
    return [(bounds[i] + 1, bounds[i + 1]) for i in range(count)]


def queue_new_run(
    run: QualificationRun, queue_name: str | None = None, slice_size: int | None = None
) -> None:
    """Queues a run just created (inside its transaction): whole, or as slices when it has more
    than `slice_size` (default RECOVERY_SLICE_SIZE) prospects. Each lease takes its place in the queue by the fair
    rule, one step behind its owner's waiting leases: the slices of one run are taken in
    order, and round robin with other users' runs."""
    spans = ranges(run.total, slice_size or conf.RECOVERY_SLICE_SIZE)
    if len(spans) == 1:
        leases = [run]
    else:
        leases = QualificationRun.leases.bulk_create(
            QualificationRun(
                parent=run,
                user_id=run.user_id,
                status=RunStatus.PENDING,
                total=last - first + 1,
                first_number=first,
                last_number=last,
            )
            for first, last in spans
        )
        run.slice_count = len(leases)
        QualificationRun.objects.filter(pk=run.pk).update(slice_count=run.slice_count)
    priorities = queue.queue_priorities([(lease.pk, run.user_id) for lease in leases])
    task_ids = {
        lease.pk: queue.queue_run(lease.pk, queue_name, priorities[lease.pk]) for lease in leases
    }
    # Nothing to write for a lease at the default priority whose task id is not known yet.
    changed = [pk for pk in task_ids if task_ids[pk] or priorities[pk] != DEFAULT_TASK_PRIORITY]
    QualificationRun.leases.filter(pk__in=changed).update(
        task_id=queue.by_run(task_ids, CharField()),
        priority=queue.by_run(priorities, IntegerField()),
    )
    for lease in leases:
        lease.task_id, lease.priority = task_ids[lease.pk], priorities[lease.pk]


def slices_of(run: QualificationRun | int) -> QuerySet[QualificationRun]:
    """A sliced run's slices, in the order of their prospects."""
    run_id = run if isinstance(run, int) else run.pk
    return QualificationRun.leases.filter(parent_id=run_id).order_by("first_number")


def settle(run_ids: Iterable[int | None]) -> int:
    """Brings sliced runs in line with their slices (call it in the transaction that changed a
    slice). The runs are locked first, so when two slices end at once the second to commit
    sees the first: the last slice to end always settles its run.

    Runs that are not sliced (and None) are ignored; returns how many runs were settled."""
    ids = sorted({pk for pk in run_ids if pk is not None})
    if not ids:
        return 0
    with transaction.atomic():
        # A statement of its own: the aggregate below then reads every slice committed
        # before the lock was granted (PostgreSQL's UPDATE would not read them again).
        locked = QualificationRun.objects.filter(pk__in=ids, slice_count__gt=0)
        if not list(locked.select_for_update().values_list("pk", flat=True)):
            return 0
        with connection.cursor() as cursor:
            cursor.execute(*_settle_sql(ids))
            return cursor.rowcount


def started(run_id: int) -> None:
    """A slice of the run started: the run is PROCESSING, since its first slice's start. One
    small UPDATE that commutes with `settle` (whichever commits last, the run is PROCESSING
    while the slice is), so it takes no lock: a slice starts every few seconds per worker."""
    QualificationRun.objects.filter(pk=run_id, slice_count__gt=0).update(
        status=RunStatus.PROCESSING,
        started_at=Coalesce("started_at", Now()),
        heartbeat_at=Now(),
        completed_at=None,
        failure_reason="",
    )


def _settle_sql(ids: list[int]) -> tuple[str, list[Any]]:
    """The one hand-written statement of slicing: the run's figures from its slices' in one
    UPDATE joined to one aggregate. Written by hand because the benchmark proves it: the ORM
    built the same statement from eight subqueries in 25 ms of CPU, twice per slice, which
    was most of what slicing cost a worker (docs/explanation/benchmarks.md)."""
    table = connection.ops.quote_name(QualificationRun._meta.db_table)
    if connection.vendor == "postgresql":
        among, params = "= ANY(%s)", [ids]
    else:
        among, params = "IN (" + ", ".join(["%s"] * len(ids)) + ")", list(ids)
    processing, pending, failed, completed = (
        RunStatus.PROCESSING,
        RunStatus.PENDING,
        RunStatus.FAILED,
        RunStatus.COMPLETED,
    )
    sql = f"""
        UPDATE {table} AS run SET
            status = CASE
                WHEN agg.processing > 0 THEN %s
                WHEN agg.pending > 0 THEN %s
                WHEN agg.failed > 0 THEN %s
                ELSE %s END,
            completed = agg.done,
            started_at = agg.first_start,
            heartbeat_at = COALESCE(agg.last_beat, run.heartbeat_at),
            worked_seconds = agg.worked,
            completed_at = CASE WHEN agg.processing + agg.pending > 0 THEN NULL
                ELSE agg.last_end END,
            failure_reason = CASE WHEN agg.processing + agg.pending = 0 AND agg.failed > 0 THEN (
                SELECT 'Prospects ' || part.first_number || '–' || part.last_number || ': '
                    || part.failure_reason
                FROM {table} AS part
                WHERE part.parent_id = run.id AND part.status = %s
                ORDER BY part.completed_at, part.id LIMIT 1
            ) ELSE '' END
        FROM (
            SELECT parent_id,
                SUM(CASE WHEN status = %s THEN 1 ELSE 0 END) AS processing,
                SUM(CASE WHEN status = %s THEN 1 ELSE 0 END) AS pending,
                SUM(CASE WHEN status = %s THEN 1 ELSE 0 END) AS failed,
                SUM(completed) AS done,
                MIN(started_at) AS first_start,
                MAX(heartbeat_at) AS last_beat,
                SUM(worked_seconds) AS worked,
                MAX(completed_at) AS last_end
            FROM {table}
            WHERE parent_id {among}
            GROUP BY parent_id
        ) AS agg
        WHERE run.id = agg.parent_id
    """  # noqa: S608 - the table's name; values are parameters
    return sql, [
        processing, pending, failed, completed, failed, processing, pending, failed, *params,
    ]  # fmt: skip
