"""The run and its task: enqueued in the run's own transaction when the queue is the database,
judged through the tasks API while queued, and marked FAILED in the queue's own table when the
run is recovered; plus the bounds on connections that keep a dead run from being held."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.urls import reverse
from django_tasks_db.models import DBTaskResult

from qualifier.prospects import ProspectData
from qualifier.runs import create_run
from recovery.models import QualificationRun, RunStatus
from recovery.sweep import recover_stuck_runs, stuck_runs
from tests.conftest import make_worker


def prospects(count: int) -> list[ProspectData]:
    return [
        ProspectData(name=f"P{i}", company="C", industry="Software", employees=100, position=i + 2)
        for i in range(count)
    ]


@pytest.mark.django_db
def test_the_task_is_enqueued_in_the_runs_own_transaction():
    run = create_run(user=None, prospects=prospects(2))

    task = DBTaskResult.objects.get(id=run.task_id)
    assert task.status == "READY"
    assert task.args_kwargs["args"] == [run.pk]
    assert QualificationRun.objects.get(pk=run.pk).task_id == run.task_id


@pytest.mark.django_db(transaction=True)
def test_a_run_rolled_back_leaves_no_task_behind():
    """One transaction: no task without its run, and no run without its task."""
    with pytest.raises(RuntimeError), transaction.atomic():
        create_run(user=None, prospects=prospects(2))
        raise RuntimeError("the request failed after the run was created")

    assert QualificationRun.objects.count() == 0
    assert DBTaskResult.objects.count() == 0


@pytest.mark.django_db
def test_a_queued_run_whose_task_was_claimed_by_a_dead_worker_is_dead(make_run):
    alive, dead = make_worker(pid=1), make_worker(pid=2, beat_seconds_ago=120)
    runs = {}
    for name, worker in (("on_alive", alive), ("on_dead", dead)):
        run = create_run(user=None, prospects=prospects(1))
        DBTaskResult.objects.filter(id=run.task_id).update(
            status="RUNNING", worker_ids=[str(worker.pk)]
        )
        QualificationRun.objects.filter(pk=run.pk).update(
            queued_at=QualificationRun.objects.get(pk=run.pk).created_at.replace(year=2020)
        )
        runs[name] = run

    causes = dict(stuck_runs().values_list("pk", "cause"))

    assert causes == {runs["on_dead"].pk: "no_task"}


@pytest.mark.django_db
def test_a_recovered_runs_task_row_is_marked_failed_so_the_queue_tells_the_truth(make_run):
    run = create_run(user=None, prospects=prospects(1))
    worker = make_worker(beat_seconds_ago=120)
    DBTaskResult.objects.filter(id=run.task_id).update(
        status="RUNNING", worker_ids=[str(worker.pk)]
    )
    long_ago = QualificationRun.objects.get(pk=run.pk).created_at.replace(year=2020)
    QualificationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.PROCESSING, worker=worker, started_at=long_ago, heartbeat_at=long_ago
    )

    report = recover_stuck_runs(source="sweeper", log=False)

    assert [r.id for r in report.recovered] == [run.pk]
    task = DBTaskResult.objects.get(id=run.task_id)
    assert task.status == "FAILED"
    assert task.exception_class_path == "recovery.exceptions.RunRecovered"
    assert task.finished_at is not None


@pytest.mark.django_db
def test_the_sweep_removes_the_rows_of_dead_workers_once_their_runs_are_recovered(make_run):
    run = make_run(started_minutes_ago=1, worker_beat_seconds_ago=120)
    alive = make_worker(host="other-host", pid=9)

    report = recover_stuck_runs(source="sweeper", log=False)

    assert report.workers_removed == 1
    assert list(type(alive).objects.values_list("pk", flat=True)) == [alive.pk]
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.FAILED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_sweep_reports_dead_runs_another_transaction_holds_locked(make_run):
    import psycopg

    run = make_run(started_minutes_ago=1, worker_beat_seconds_ago=None)
    db = connection.settings_dict
    with psycopg.connect(
        dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"] or 5432
    ) as other:
        other.execute("SELECT 1 FROM recovery_qualificationrun WHERE id = %s FOR UPDATE", [run.pk])
        report = recover_stuck_runs(source="command", log=False)
        other.rollback()

    assert (report.stuck_count, report.recovered_count, report.locked_count) == (1, 0, 1)
    assert any("held locked by another transaction" in line.text for line in report.lines())
    assert recover_stuck_runs(source="command", log=False).recovered_count == 1


@pytest.mark.postgres
@pytest.mark.django_db
def test_connections_end_transactions_a_vanished_client_left_open():
    with connection.cursor() as cursor:
        cursor.execute("SHOW idle_in_transaction_session_timeout")
        assert cursor.fetchone()[0] == "1min"


@pytest.mark.django_db
def test_the_admin_lists_workers_read_only_with_whether_they_answer(client, make_run):
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456789")
    client.force_login(admin)
    run = make_run(started_minutes_ago=1)
    make_worker(host="silent-host", pid=77, beat_seconds_ago=300)

    page = client.get(reverse("admin:recovery_worker_changelist")).content.decode()

    assert "worker-host.test" in page and "silent-host" in page
    assert page.count(">alive<") == 1 and page.count(">not responding<") == 1
    assert f"Run {run.pk}" in page
    assert reverse("admin:recovery_worker_add") not in page
    change = reverse("admin:recovery_worker_change", args=[run.worker_id])
    assert client.post(change, {"host": "x"}).status_code == 403


@pytest.mark.django_db
def test_a_task_claimed_a_moment_ago_by_a_worker_found_dead_is_live_until_it_is_put_back(
    make_run,
):
    """An executor whose worker a sweep just removed (a freeze, a partition) claims a task
    before it can tell, and puts it back untouched a query later: a sweep in between must not
    fail the run. A claim older than the worker timeout, or stamped by a clock that far ahead,
    is gone as before."""
    from django.utils import timezone

    gone = make_worker(pid=3)
    gone_id = gone.pk
    gone.delete()
    now, runs = timezone.now(), {}
    for name, claimed_at in (
        ("just_now", now),
        ("long_ago", now - dt.timedelta(minutes=5)),
        ("clock_ahead", now + dt.timedelta(minutes=5)),
    ):
        run = create_run(user=None, prospects=prospects(1))
        DBTaskResult.objects.filter(id=run.task_id).update(
            status="RUNNING", worker_ids=[str(gone_id)], started_at=claimed_at
        )
        QualificationRun.objects.filter(pk=run.pk).update(queued_at=now - dt.timedelta(hours=1))
        runs[name] = run.pk

    causes = dict(stuck_runs().values_list("pk", "cause"))

    assert causes == {runs["long_ago"]: "no_task", runs["clock_ahead"]: "no_task"}
