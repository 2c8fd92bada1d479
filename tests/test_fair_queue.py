"""Whose run is next: queued runs are taken round robin across their owners
(`RECOVERY_QUEUE_ORDER=fair`), through the task priority django-tasks-db's workers order by, so
one user's backlog does not hold back another user's run; `fifo` keeps the order of arrival."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import Warning
from django.db import connection
from django.tasks.backends.dummy import DummyBackend
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from qualifier.prospects import ProspectData
from qualifier.runs import continue_run, create_run
from recovery import outlook, queue
from recovery.checks import check_recovery_settings
from recovery.models import QualificationRun, RunStatus
from recovery.sweep import recover_stuck_runs
from tests.conftest import make_worker

pytestmark = pytest.mark.django_db


class BackendWithoutPriorities(DummyBackend):
    supports_priority = False


def prospects(count: int = 1) -> list[ProspectData]:
    return [
        ProspectData(name=f"P{i}", company="C", industry="Software", employees=100, position=i + 2)
        for i in range(count)
    ]


def user(name: str):
    return get_user_model().objects.create_user(username=name, password="pw-for-tests-only")


def queue_runs(owner, count: int) -> list[QualificationRun]:
    return [create_run(user=owner, prospects=prospects()) for _ in range(count)]


def taken_in_order() -> list[int]:
    """The run ids in the order django-tasks-db's workers would take their tasks (the queue's
    own ordering: priority, then age)."""
    return [task.args_kwargs["args"][0] for task in DBTaskResult.objects.ready()]


def take(run: QualificationRun) -> None:
    """What a worker does to the task and run it takes."""
    DBTaskResult.objects.filter(id=run.task_id).update(status="RUNNING", worker_ids=["1"])
    run.refresh_from_db()
    assert run.start(make_worker(pid=9))


def test_another_users_run_goes_ahead_of_a_users_backlog():
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    a1, a2, a3 = queue_runs(alice, 3)
    b1, b2 = queue_runs(bob, 2)
    [c1] = queue_runs(carol, 1)
    [n1] = queue_runs(None, 1)  # runs without an owner are one owner

    assert taken_in_order() == [r.pk for r in (a1, b1, c1, n1, a2, b2, a3)]
    stored = dict(QualificationRun.objects.values_list("pk", "priority"))
    tasks = {t.args_kwargs["args"][0]: t.priority for t in DBTaskResult.objects.all()}
    assert stored == tasks == {
        a1.pk: 0, a2.pk: -1, a3.pk: -2, b1.pk: 0, b2.pk: -1, c1.pk: 0, n1.pk: 0,
    }  # fmt: skip


def test_an_owners_runs_keep_their_order_after_the_first_starts():
    alice, bob = user("alice"), user("bob")
    a1, a2, a3 = queue_runs(alice, 3)
    take(a1)
    [a4] = queue_runs(alice, 1)  # behind a3, not beside it
    [b1] = queue_runs(bob, 1)

    assert taken_in_order() == [b1.pk, a2.pk, a3.pk, a4.pk]
    a4.refresh_from_db()
    assert a4.priority == -3


def test_a_long_backlog_shares_the_lowest_priority_and_stays_behind_everyone_else(settings):
    settings.QUALIFIER_MAX_ACTIVE_RUNS_PER_USER = 200
    alice, bob = user("alice"), user("bob")
    backlog = queue_runs(alice, 103)
    [b1] = queue_runs(bob, 1)

    assert [r.priority for r in backlog[-4:]] == [-99, -100, -100, -100]
    order = taken_in_order()
    assert order.index(b1.pk) == 1  # after alice's first
    assert order[-3:] == [r.pk for r in backlog[-3:]]  # first come, first served among them


@pytest.mark.parametrize("owners", [1, 10])
def test_the_places_of_runs_entering_the_queue_are_read_in_one_query(owners):
    users = [user(f"user{i}") for i in range(owners)]
    runs = [create_run(user=u, prospects=prospects()) for u in users for _ in range(2)]
    QualificationRun.objects.filter(pk__in=[r.pk for r in runs[1::2]]).update(status="FAILED")
    with CaptureQueriesContext(connection) as queries:
        priorities = queue.queue_priorities([(r.pk, r.user_id) for r in runs[1::2]])
    assert len(queries) == 1
    assert set(priorities.values()) == {-1}


def test_fifo_takes_runs_in_the_order_they_were_queued(settings):
    settings.RECOVERY_QUEUE_ORDER = "fifo"
    alice, bob = user("alice"), user("bob")
    a1, a2 = queue_runs(alice, 2)
    [b1] = queue_runs(bob, 1)

    assert taken_in_order() == [a1.pk, a2.pk, b1.pk]
    assert set(QualificationRun.objects.values_list("priority", flat=True)) == {0}


def test_resumed_runs_take_their_places_by_owner(settings):
    """A sweep that sends several owners' dead runs back gives each its place, in the one
    transition back to the queue."""
    settings.RECOVERY_POLICY = "resume"
    alice, bob = user("alice"), user("bob")
    [waiting] = queue_runs(bob, 1)
    dead = make_worker(pid=2, beat_seconds_ago=120)
    died = queue_runs(alice, 2) + queue_runs(bob, 1)
    for run in died:
        take(run)
    two_minutes_ago = timezone.now() - dt.timedelta(minutes=2)
    QualificationRun.objects.filter(pk__in=[r.pk for r in died]).update(
        worker=dead, heartbeat_at=two_minutes_ago, started_at=two_minutes_ago
    )

    report = recover_stuck_runs(source="command")

    assert sorted(r.id for r in report.recovered) == sorted(r.pk for r in died)
    a1, a2, b2 = died
    assert taken_in_order() == [waiting.pk, a1.pk, a2.pk, b2.pk]
    for run in died:
        run.refresh_from_db()
        assert run.status == RunStatus.PENDING
        assert DBTaskResult.objects.get(id=run.task_id).priority == run.priority


def test_a_continued_run_comes_next_in_its_owners_line():
    """It had its turn: it takes the priority of its owner's first waiting run (after it, as
    the newer of the two), ahead of the owner's others, and still in turn with other users'."""
    alice, bob = user("alice"), user("bob")
    [failed] = queue_runs(alice, 1)
    take(failed)
    failed.refresh_from_db()
    assert failed.fail("scorer down")
    a2, a3 = queue_runs(alice, 2)
    [b1] = queue_runs(bob, 1)

    continued = continue_run(failed, user=alice)

    assert continued.status == RunStatus.PENDING
    assert taken_in_order() == [a2.pk, b1.pk, failed.pk, a3.pk]


def test_the_place_in_line_counts_in_the_queues_order():
    make_worker(pid=1)  # alive: the outlook speaks of the line, not of a missing worker
    alice, bob = user("alice"), user("bob")
    queue_runs(alice, 4)
    [b1] = queue_runs(bob, 1)

    run = outlook.annotate(QualificationRun.objects.filter(pk=b1.pk)).get()
    assert run.place_in_line == 1
    assert "1 queued run ahead of it" in outlook.outlook_of(run).text


def test_fair_with_a_backend_that_ignores_priorities_is_a_warning_and_first_come_first_served(
    settings,
):
    settings.TASKS = {
        "default": {"BACKEND": f"{BackendWithoutPriorities.__module__}.BackendWithoutPriorities"}
    }
    warnings = [e for e in check_recovery_settings() if e.id == "recovery.W001"]
    assert warnings == [
        Warning(
            "RECOVERY_QUEUE_ORDER is fair, but the run task's backend does not order its queue "
            "by priority: runs are taken first come, first served.",
            hint="Use a task backend that supports priorities (django-tasks-db does), or set "
            "RECOVERY_QUEUE_ORDER=fifo.",
            id="recovery.W001",
        )
    ]
    assert queue.queue_priorities([(1, None), (2, None)]) == {1: 0, 2: 0}
    settings.RECOVERY_QUEUE_ORDER = "fifo"
    assert not [e for e in check_recovery_settings() if e.id == "recovery.W001"]


@pytest.mark.parametrize("value", ["FAIR", "round-robin", "", None, 1])
def test_an_unknown_queue_order_is_a_system_check_error(settings, value):
    settings.RECOVERY_QUEUE_ORDER = value
    errors = [e for e in check_recovery_settings() if e.id == "recovery.E022"]
    assert len(errors) == 1
    assert "RECOVERY_QUEUE_ORDER" in errors[0].msg
    assert "fair" in errors[0].hint and "fifo" in errors[0].hint
