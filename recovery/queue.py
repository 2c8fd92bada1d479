"""The recovery app's view of the task queue, through Django's tasks API.

A run keeps the id of the task that executes it. Whether that task is still waiting or running
is read with the backend's `get_result()`, so recovery works on any django.tasks backend that
supports it (django-tasks-db, RQ, Celery adapters). Two things are specific to a queue that
lives in the project's own database (django-tasks-db), and only that: the run's task is enqueued
inside the run's own transaction, and the task row of a recovered run is marked failed, since
nothing else would ever finish it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from django.db import transaction
from django.db.models import (
    Case,
    CharField,
    Field,
    Func,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    UUIDField,
    Value,
    When,
)
from django.db.models.functions import Cast, Now, NullIf, Replace
from django.tasks import TaskResultStatus
from django.tasks.base import DEFAULT_TASK_PRIORITY, TASK_MIN_PRIORITY
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils.module_loading import import_string

from .conf import QUEUE_FAIR, conf
from .exceptions import RunRecovered

logger = logging.getLogger("recovery")

LIVE_STATUSES = frozenset({TaskResultStatus.READY, TaskResultStatus.RUNNING})
#: Runs whose task a sweep asks another backend about (one get_result() each), oldest first;
#: the rest wait for the next sweep. django-tasks-db needs no such bound: one subquery.
MAX_TASK_LOOKUPS_PER_SWEEP = 100


class LastWorkerId(Func):
    """The last worker id in django-tasks-db's `worker_ids` (a JSON array), as text: the worker
    that claimed the task most recently."""

    output_field = CharField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template="(%(expressions)s ->> -1)", **extra)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(
            compiler, connection, template="json_extract(%(expressions)s, '$[#-1]')", **extra
        )


def run_task() -> Any:
    return import_string(conf.RECOVERY_RUN_TASK)


def stores_tasks_in_database() -> bool:
    """True when the run task's backend keeps its queue in this project's database."""
    backend = run_task().get_backend()
    try:
        from django_tasks_db.backend import DatabaseBackend
    except ImportError:  # pragma: no cover - django-tasks-db is a dependency
        return False
    return isinstance(backend, DatabaseBackend)


def run_task_on(queue_name: str | None) -> Any:
    """The run task on `queue_name`; the task's own queue for None, or for a queue its backend
    no longer accepts (a run must go back to some queue rather than stay without a task)."""
    task = run_task()
    if not queue_name or queue_name == task.queue_name:
        return task
    accepted = task.get_backend().queues
    if accepted and queue_name not in accepted:
        logger.warning(
            "Queue %r is not among the task backend's QUEUES; the run goes to %r",
            queue_name,
            task.queue_name,
        )
        return task
    return task.using(queue_name=queue_name)


def takes_priorities() -> bool:
    """True when the run task's backend orders its queue by task priority."""
    return bool(run_task().get_backend().supports_priority)


def queue_priorities(
    runs: Sequence[tuple[int, int | None]], *, returning: bool = False
) -> dict[int, int]:
    """The priority each run gets as it enters the queue, from (run id, owner id) pairs in the
    order they are queued, in one query: the rule that makes the queue fair.

    Under `RECOVERY_QUEUE_ORDER=fair` a run goes one step below the lowest priority among its
    owner's runs already waiting (the default priority when none is waiting), so an owner's runs
    keep their order, and a user's first waiting run goes ahead of another user's second: round
    robin across owners (runs without an owner are one owner). Workers take the highest
    priority first, then the oldest. The lowest priority the tasks framework allows holds the
    rest of a long backlog, first come, first served. Under `fifo`, or with a backend that does
    not order by priority, every run gets the default priority.

    Runs `returning` to the queue (handed back, resumed, continued: they had their turn) take
    the priority of their owner's first waiting run instead, so they come next in their
    owner's line rather than last: an interrupted slice does not wait for its owner's other
    runs, and still takes its turn with other users'.
    """
    if conf.RECOVERY_QUEUE_ORDER != QUEUE_FAIR or not takes_priorities():
        return {run_id: DEFAULT_TASK_PRIORITY for run_id, _owner in runs}
    from .models import QualificationRun, RunStatus

    owners = {owner for _run_id, owner in runs}
    mine = Q(user_id__in=[owner for owner in owners if owner is not None])
    if None in owners:
        mine |= Q(user__isnull=True)
    waiting = (
        QualificationRun.leases.filter(mine, status=RunStatus.PENDING)
        .exclude(pk__in=[run_id for run_id, _owner in runs])
        .order_by()
        .values("user_id")
    )
    if returning:
        first = dict(waiting.annotate(first=Max("priority")).values_list("user_id", "first"))
        return {run_id: first.get(owner, DEFAULT_TASK_PRIORITY) for run_id, owner in runs}
    lowest = dict(waiting.annotate(lowest=Min("priority")).values_list("user_id", "lowest"))
    priorities = {}
    for run_id, owner in runs:
        below = lowest.get(owner)
        priority = DEFAULT_TASK_PRIORITY if below is None else max(below - 1, TASK_MIN_PRIORITY)
        priorities[run_id] = lowest[owner] = priority
    return priorities


def enqueue_run(run_id: int, queue_name: str | None = None, priority: int = 0) -> str:
    """Enqueues the run's task now and returns its id (call inside the run's transaction when
    `stores_tasks_in_database()`, so a crash cannot separate the run from its task)."""
    task = run_task_on(queue_name)
    if priority != task.priority:
        task = task.using(priority=priority)
    return str(task.enqueue(run_id).id)


def enqueue_run_after_commit(run_id: int, queue_name: str | None = None, priority: int = 0) -> None:
    """For a queue outside the database: enqueue once the run is committed (a worker must not
    pick up a run it cannot see yet), then record the task's id. If the enqueue fails, the run
    stays PENDING without a task, and the sweep finds it."""
    from .models import QualificationRun

    def enqueue() -> None:
        try:
            task_id = enqueue_run(run_id, queue_name, priority)
        except Exception:
            logger.exception("Run %s could not be queued; the sweep will recover it", run_id)
            return
        QualificationRun.leases.filter(pk=run_id, task_id="").update(task_id=task_id)

    transaction.on_commit(enqueue)


def queue_run(run_id: int, queue_name: str | None = None, priority: int = 0) -> str:
    """Queues the run (on `queue_name`, or the run task's own queue, with `priority` from
    `queue_priorities`) the safest way its backend allows; returns the task id if known now."""
    if stores_tasks_in_database():
        return enqueue_run(run_id, queue_name, priority)
    enqueue_run_after_commit(run_id, queue_name, priority)
    return ""


def task_key() -> Any:
    """A run's task id as django-tasks-db's primary key column holds it, so a lookup of the
    run's task is an index probe: a UUID on PostgreSQL, 32 hex digits on SQLite."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return Cast(NullIf("task_id", Value("")), UUIDField())
    return Replace("task_id", Value("-"), Value(""))


def queues_and_owners(runs: QuerySet[Any]) -> dict[int, tuple[str | None, int | None]]:
    """Each run's (queue its current task is on, owner), in one query. The queue is read from
    django-tasks-db (other backends keep no queue we can read in bulk: None, and their runs go
    back to the task's own queue). A run sent back to the queue stays on its queue: the
    recovery drill's runs never reach the queues of the service's workers."""
    if not stores_tasks_in_database():
        return {pk: (None, owner) for pk, owner in runs.values_list("pk", "user_id")}
    from django_tasks_db.models import DBTaskResult

    queue_name = DBTaskResult.objects.filter(pk=OuterRef("task_key")).values("queue_name")[:1]
    rows = (
        runs.alias(task_key=task_key())
        .annotate(task_queue=Subquery(queue_name))
        .values_list("pk", "task_queue", "user_id")
    )
    return {pk: (name or None, owner) for pk, name, owner in rows}


def task_state(task_id: str, alive_worker_ids: Collection[str]) -> str:
    """'live' when the task is waiting, or running on a worker that is alive; else 'gone'.

    A RUNNING task whose last worker id names one of our registered workers that is no longer
    alive is gone too (its worker died between claiming it and starting the run). Worker ids
    that are not ours (another backend's workers) are taken at their word.
    """
    try:
        result = run_task().get_backend().get_result(task_id)
    except TaskResultDoesNotExist:
        return "gone"
    if result.status not in LIVE_STATUSES:
        return "gone"
    if result.status == TaskResultStatus.RUNNING and result.worker_ids:
        last = str(result.worker_ids[-1])
        if last.isdigit() and last not in alive_worker_ids:
            return "gone"
    return "live"


def orphaned_pending(
    runs: Iterable[tuple[int, str]], alive_worker_ids: Collection[str]
) -> tuple[int, ...]:
    """The ids of PENDING runs with no live task behind them, from (id, task_id) pairs.

    For backends other than django-tasks-db (whose answer is one subquery, see
    `recovery.liveness.no_task`): one `get_result()` per run asked about, since the tasks API has
    no bulk read, and at most MAX_TASK_LOOKUPS_PER_SWEEP runs per sweep (the caller passes the
    oldest first; the rest are asked at the next sweep).
    """
    found: list[int] = []
    for asked, (run_id, task_id) in enumerate(runs):
        if asked >= MAX_TASK_LOOKUPS_PER_SWEEP:
            break
        if not task_id or task_state(task_id, alive_worker_ids) == "gone":
            found.append(run_id)
    return tuple(found)


def fail_tasks(task_ids: Iterable[str], reason: str) -> int:
    """Marks the recovered runs' unfinished task rows failed, so django-tasks-db's admin and
    counts are true (a killed worker's row would stay RUNNING forever). Other backends keep
    their own books; nothing to do for them."""
    ids = [task_id for task_id in task_ids if task_id]
    if not ids or not stores_tasks_in_database():
        return 0
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(id__in=ids, status__in=list(LIVE_STATUSES)).update(
        status=TaskResultStatus.FAILED,
        finished_at=Now(),
        exception_class_path=f"{RunRecovered.__module__}.{RunRecovered.__qualname__}",
        traceback=reason[:2000],
    )


def by_run(values: dict[int, Any], output_field: Field) -> Case:
    """A value per run in one UPDATE: one WHEN per distinct value, naming its runs."""
    runs_by_value: dict[Any, list[int]] = {}
    for run_id, value in values.items():
        runs_by_value.setdefault(value, []).append(run_id)
    return Case(
        *(When(pk__in=run_ids, then=Value(value)) for value, run_ids in runs_by_value.items()),
        default=None,
        output_field=output_field,
    )
