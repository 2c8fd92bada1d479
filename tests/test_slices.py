"""One run on many workers: a run of more than RECOVERY_SLICE_SIZE prospects is worked as
slices, each a lease of its own, and the run is settled from them."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connections, transaction
from django.test import override_settings
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from qualifier import execution
from qualifier.models import ProspectResult
from qualifier.prospects import ProspectData
from qualifier.runs import continue_run, create_run
from recovery import metrics, outlook, slices, sweep
from recovery.checks import check_recovery_settings
from recovery.models import QualificationRun, RecoveryEvent, RunStatus
from recovery.sweep import recover_stuck_runs
from recovery.worker import registry
from tests.conftest import make_worker
from tests.helpers import DUMMY, IMMEDIATE

pytestmark = pytest.mark.django_db


def prospects(count: int) -> list[ProspectData]:
    return [
        ProspectData(name=f"P{i}", company="C", industry="Software", employees=100, position=i + 2)
        for i in range(count)
    ]


def user(name: str):
    return get_user_model().objects.create_user(username=name, password="pw-for-tests-only")


def test_ranges_cover_every_prospect_once():
    assert slices.ranges(50, 100) == [(1, 50)]
    assert slices.ranges(100, 100) == [(1, 100)]
    assert slices.ranges(120, 100) == [(1, 120)]
    assert slices.ranges(250, 100) == [(1, 83), (84, 167), (168, 250)]


@override_settings(RECOVERY_SLICE_SIZE=10)
def test_a_sliced_run_completes_when_its_last_slice_does():
    run = create_run(user=None, prospects=prospects(35))
    assert run.slice_count == 4
    parts = list(slices.slices_of(run))
    spans = [(s.first_number, s.last_number) for s in parts]
    assert spans == [(1, 9), (10, 18), (19, 26), (27, 35)]
    assert QualificationRun.objects.count() == 1
    for part in parts:
        summary = execution.execute(part.pk)
        assert summary.outcome == "completed", summary
        run.refresh_from_db()
        assert run.status == (RunStatus.COMPLETED if part is parts[-1] else RunStatus.PENDING)
    assert run.completed == 35
    assert ProspectResult.objects.filter(run=run).count() == 35


# --- helpers ------------------------------------------------------------------------------------


class Crash(BaseException):
    """What a worker's death looks like from inside: nothing after it runs."""


class CrashAfter:
    """Scores like the default scorer, and takes the process down at its `after`+1th call."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.calls = 0

    def __call__(self, data, criteria):
        from qualifier.scoring import get_scorer

        self.calls += 1
        if self.calls > self.after:
            raise Crash
        return get_scorer()(data, criteria)


def as_worker(worker) -> None:
    registry.set_current(worker)


def work(part: QualificationRun, worker, scorer=None, batch_size: int = 1) -> None:
    """`worker` takes `part` and works it in this process (a Crash leaves it PROCESSING, as a
    killed worker does)."""
    as_worker(worker)
    with contextlib.suppress(Crash):
        execution.execute(part.pk, scorer=scorer, batch_size=batch_size)


def sliced_run(count: int = 30, owner=None) -> tuple[QualificationRun, list[QualificationRun]]:
    with override_settings(RECOVERY_SLICE_SIZE=10):
        run = create_run(user=owner, prospects=prospects(count))
    return run, list(slices.slices_of(run))


def one_result_each(run: QualificationRun) -> None:
    numbers = list(
        ProspectResult.objects.filter(run=run).values_list("prospect__number", flat=True)
    )
    assert sorted(numbers) == list(range(1, run.total + 1))


# --- queueing -----------------------------------------------------------------------------------


def test_each_slice_is_a_task_of_its_own_and_the_run_is_none():
    run, parts = sliced_run(30)
    assert [(p.first_number, p.last_number, p.total) for p in parts] == [
        (1, 10, 10), (11, 20, 10), (21, 30, 10),
    ]  # fmt: skip
    tasks = {t.args_kwargs["args"][0]: t for t in DBTaskResult.objects.all()}
    assert set(tasks) == {p.pk for p in parts}  # the run itself is never queued
    assert [tasks[p.pk].priority for p in parts] == [p.priority for p in parts] == [0, -1, -2]
    assert all(p.task_id == str(tasks[p.pk].id) for p in parts)
    # People see one run: the slices are the run's business.
    assert list(QualificationRun.objects.values_list("pk", flat=True)) == [run.pk]
    assert QualificationRun.leases.filter(parent=run).count() == 3
    run.refresh_from_db()
    assert (run.status, run.slice_count, run.task_id) == (RunStatus.PENDING, 3, "")


def test_another_users_run_is_taken_after_one_slice_not_after_the_whole_run():
    alice, bob = user("alice"), user("bob")
    _run, parts = sliced_run(50, owner=alice)
    small = create_run(user=bob, prospects=prospects(3))
    order = [t.args_kwargs["args"][0] for t in DBTaskResult.objects.ready()]
    assert order == [parts[0].pk, small.pk, *[p.pk for p in parts[1:]]]


@override_settings(RECOVERY_SLICE_SIZE=0)
def test_a_bad_slice_size_is_a_system_check_error():
    errors = [e for e in check_recovery_settings() if e.id == "recovery.E023"]
    assert errors and "RECOVERY_SLICE_SIZE" in errors[0].msg


# --- many workers on one run --------------------------------------------------------------------


def test_two_workers_work_one_run_at_once():
    run, parts = sliced_run(30)
    w1, w2 = make_worker(pid=1), make_worker(pid=2)
    work(parts[0], w1, CrashAfter(4))  # w1 is still on it (PROCESSING, alive)
    work(parts[1], w2, CrashAfter(2))
    seen = outlook.annotate(QualificationRun.objects.filter(pk=run.pk)).get()
    said = outlook.outlook_of(seen)
    assert seen.status == RunStatus.PROCESSING
    assert said.workers_on_it == 2
    assert said.slices == {
        "total": 3, "working": 2, "queued": 1, "done": 0, "failed": 0, "dead": 0,
    }  # fmt: skip
    assert seen.completed == 6  # each slice's progress adds to its run's
    assert "3 slices" in said.text and "2 workers on it" in said.text
    assert "only its slice is recovered" in said.text


def test_a_dead_workers_slice_is_recovered_and_the_live_ones_are_not_touched():
    run, parts = sliced_run(30)
    w1, w2 = make_worker(pid=1), make_worker(pid=2)
    work(parts[0], w1, CrashAfter(4))
    work(parts[1], w2, CrashAfter(2))
    w1.delete()  # w1 is gone; w2 lives

    report = recover_stuck_runs(source="command", policy="resume")

    assert [r.id for r in report.recovered] == [parts[0].pk]
    [event] = RecoveryEvent.objects.all()
    assert (event.run_id, event.slice_id) == (run.pk, parts[0].pk)
    assert (event.first_prospect, event.last_prospect, event.completed) == (1, 10, 4)
    assert event.reason.startswith("Slice of prospects 1–10: ")
    first, second, third = QualificationRun.leases.filter(parent=run).order_by("first_number")
    assert (first.status, first.deaths, first.worker_id) == (RunStatus.PENDING, 1, None)
    assert (second.status, second.worker_id, second.deaths) == (RunStatus.PROCESSING, w2.pk, 0)
    run.refresh_from_db()
    assert run.status == RunStatus.PROCESSING  # w2 is still on it

    # The slice goes on where it stopped, on any worker; the run completes, each prospect once.
    w3 = make_worker(pid=3)
    for part in (first, third):
        work(part, w3)
    as_worker(w2)
    second.refresh_from_db()
    execution.RunExecution(second).run()
    run.refresh_from_db()
    assert (run.status, run.completed) == (RunStatus.COMPLETED, 30)
    one_result_each(run)


def test_under_fail_the_run_fails_once_its_other_slices_have_finished_and_continue_ends_it():
    alice = user("alice")
    run, parts = sliced_run(30, owner=alice)
    w1, w2 = make_worker(pid=1), make_worker(pid=2)
    work(parts[0], w1, CrashAfter(3))
    w1.delete()
    recover_stuck_runs(source="command", policy="fail")
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING  # two slices wait; one failed
    for part in parts[1:]:
        work(part, w2)
    run.refresh_from_db()
    assert (run.status, run.completed) == (RunStatus.FAILED, 23)
    assert run.failure_reason.startswith("Prospects 1–10: ")
    assert run.completed_at is not None

    continued = continue_run(run, user=alice)
    assert continued.status == RunStatus.PENDING
    [event] = RecoveryEvent.objects.filter(source="continue")
    assert (event.run_id, event.slice_id) == (run.pk, parts[0].pk)
    work(QualificationRun.leases.get(pk=parts[0].pk), w2)
    run.refresh_from_db()
    assert (run.status, run.completed, run.failure_reason) == (RunStatus.COMPLETED, 30, "")
    one_result_each(run)


def test_a_stopping_worker_hands_back_its_slice_only():
    run, parts = sliced_run(30)
    w1, w2 = make_worker(pid=1), make_worker(pid=2)
    work(parts[0], w1, CrashAfter(4))
    work(parts[1], w2, CrashAfter(5))
    handed = sweep.hand_back(w1, source="shutdown", cause="shutdown")
    assert handed == [parts[0].pk]
    first, second, _ = QualificationRun.leases.filter(parent=run).order_by("first_number")
    assert (first.status, first.deaths) == (RunStatus.PENDING, 0)
    assert (second.status, second.worker_id) == (RunStatus.PROCESSING, w2.pk)
    [event] = RecoveryEvent.objects.all()
    assert (event.run_id, event.slice_id, event.source) == (run.pk, first.pk, "shutdown")


def test_a_recovered_slices_old_worker_writes_nothing_more():
    run, parts = sliced_run(30)
    w1 = make_worker(pid=1)
    as_worker(w1)
    part = QualificationRun.leases.get(pk=parts[0].pk)
    assert part.start(w1)
    w1.delete()
    recover_stuck_runs(source="command", policy="resume")
    summary = execution.RunExecution(part).run()  # the old worker wakes up
    assert summary.outcome == "fenced"
    assert ProspectResult.objects.filter(run=run).count() == 0
    run.refresh_from_db()
    assert run.completed == 0


def test_the_poison_prospect_of_a_slice_is_quarantined_by_its_number_in_the_run():
    run, parts = sliced_run(30)
    part = parts[1]  # prospects 11–20
    for pid in (1, 2, 3):
        worker = make_worker(pid=pid)
        work(QualificationRun.leases.get(pk=part.pk), worker, CrashAfter(0 if pid > 1 else 4))
        worker.delete()
        recover_stuck_runs(source="command", policy="resume")
    quarantined = RecoveryEvent.objects.filter(quarantined_prospect__isnull=False).get()
    assert (quarantined.run_id, quarantined.slice_id) == (run.pk, part.pk)
    assert quarantined.quarantined_prospect == 15  # the 5th of 11–20, as the results number it
    # The other slices' deaths are their own: none.
    assert set(QualificationRun.leases.filter(parent=run).values_list("pk", "deaths")) == {
        (parts[0].pk, 0), (part.pk, 0), (parts[2].pk, 0),
    }  # fmt: skip


def test_the_metrics_count_slices_queued_and_running():
    _run, parts = sliced_run(30)
    work(parts[0], make_worker(pid=1), CrashAfter(2))
    assert metrics.slices_in_flight() == {"queued": 2, "running": 1}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_when_the_last_two_slices_end_at_once_the_second_to_commit_completes_the_run():
    """Slice A completes (its transaction still open) while slice B completes on another
    connection: B's settle waits for A's lock on the run, then reads A's slice as committed,
    so the run is COMPLETED. Without the lock, B's statement would read A's slice as it was
    when B began, PROCESSING, and leave the run PROCESSING for ever."""
    run, parts = sliced_run(20)  # two slices of 10
    w1, w2 = make_worker(pid=1), make_worker(pid=2)
    a, b = (QualificationRun.leases.get(pk=part.pk) for part in parts)
    assert a.start(w1) and b.start(w2)
    a_done = threading.Event()
    b_waiting = threading.Event()
    errors: list[BaseException] = []

    def complete_a() -> None:
        try:
            with transaction.atomic():
                assert a.complete()
                a_done.set()
                b_waiting.wait(10)
                time.sleep(0.5)  # B is blocked on the run's row by now
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    def complete_b() -> None:
        try:
            a_done.wait(10)
            b_waiting.set()
            assert b.complete()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=complete_a), threading.Thread(target=complete_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED


def test_a_finished_sliced_run_is_pruned_with_its_slices():
    from qualifier.retention import prune

    run, parts = sliced_run(20)
    worker = make_worker(pid=1)
    for part in parts:
        work(part, worker)
    old = timezone.now() - dt.timedelta(days=400)
    QualificationRun.objects.filter(pk=run.pk).update(created_at=old, completed_at=old)
    report = prune(run_days=30, event_days=30)
    assert report.runs == 1
    assert not QualificationRun.leases.filter(pk__in=[p.pk for p in parts]).exists()


def test_the_api_and_the_run_page_say_how_many_workers_are_on_a_sliced_run(client):
    alice = user("alice")
    run, parts = sliced_run(30, owner=alice)
    work(parts[0], make_worker(pid=1), CrashAfter(2))
    work(parts[1], make_worker(pid=2), CrashAfter(2))
    client.force_login(alice)
    page = client.get(f"/runs/{run.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Workers on it" in html and "<dd data-workers-on-it" in html
    assert "2 workers on it now" in html


@pytest.fixture
def superuser_client(db, client):
    client.force_login(
        get_user_model().objects.create_superuser("root", "root@example.com", "pw-for-tests")
    )
    return client


def test_the_admin_shows_each_slices_lease_and_the_slice_in_each_workers_hands(
    superuser_client,
):
    run, parts = sliced_run(30)
    w1 = make_worker(pid=1)
    work(parts[0], w1, CrashAfter(3))
    page = superuser_client.get(f"/admin/recovery/qualificationrun/{run.pk}/change/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'class="slice-table"' in html
    assert "<td>1–10</td><td>Processing</td><td>3/10</td>" in html
    assert "<td>11–20</td><td>Pending</td><td>0/10</td>" in html
    # Slices are the run's business: not runs in the list.
    listing = superuser_client.get("/admin/recovery/qualificationrun/").content.decode()
    assert f"/admin/recovery/qualificationrun/{parts[0].pk}/change/" not in listing
    workers = superuser_client.get("/admin/recovery/worker/").content.decode()
    assert f"Run {run.pk} (slice of prospects 1–10)" in workers
    overview = superuser_client.get("/admin/recovery/qualificationrun/overview/").content.decode()
    assert "slice of prospects 1–10" in overview


def test_the_admins_stuck_filter_lists_a_run_with_a_dead_slice(superuser_client):
    run, parts = sliced_run(30)
    w1 = make_worker(pid=1)
    work(parts[0], w1, CrashAfter(3))
    listing = superuser_client.get("/admin/recovery/qualificationrun/?stuck=yes").content.decode()
    assert f"/admin/recovery/qualificationrun/{run.pk}/change/" not in listing
    w1.delete()
    listing = superuser_client.get("/admin/recovery/qualificationrun/?stuck=yes").content.decode()
    assert f"/admin/recovery/qualificationrun/{run.pk}/change/" in listing
    recover_stuck_runs(source="command", policy="resume")
    events = superuser_client.get("/admin/recovery/recoveryevent/").content.decode()
    assert '<td class="field-prospects">1–10</td>' in events


@override_settings(RECOVERY_QUEUE_ORDER="fifo")
def test_a_queued_run_counts_the_runs_ahead_of_it_not_their_slices():
    sliced_run(30)  # three slices, queued first
    small = create_run(user=None, prospects=prospects(3))
    seen = outlook.annotate(QualificationRun.objects.filter(pk=small.pk)).get()
    assert seen.place_in_line == 1
    assert "1 queued run ahead of it" in outlook.outlook_of(seen).text


def test_resuming_a_run_with_two_dead_slices_in_the_admin_says_one_run(superuser_client):
    run, parts = sliced_run(30)
    w1, w2 = make_worker(pid=1), make_worker(pid=2)
    work(parts[0], w1, CrashAfter(3))
    work(parts[1], w2, CrashAfter(3))
    w1.delete()
    w2.delete()
    answer = superuser_client.post(
        "/admin/recovery/qualificationrun/",
        {"action": "resume_selected", "_selected_action": [run.pk]},
        follow=True,
    )
    said = [str(message) for message in answer.context["messages"]]
    assert said == ["Resumed 1 run (1 stuck, 0 failed with prospects left)."], said
    assert RecoveryEvent.objects.filter(run=run).count() == 2  # one per slice


def test_a_run_whose_slice_lost_its_worker_says_it_is_recovering_that_slice():
    run, parts = sliced_run(30)
    w1, w2 = make_worker(pid=1), make_worker(pid=2)
    work(parts[0], w1, CrashAfter(3))
    work(parts[1], w2, CrashAfter(3))
    w1.delete()
    seen = outlook.annotate(QualificationRun.objects.filter(pk=run.pk)).get()
    said = outlook.outlook_of(seen)
    assert (said.state, said.workers_on_it) == ("recovering", 1)
    assert said.slices["dead"] == 1
    assert "1 of its slices lost their worker" in said.text
    assert metrics.rows_dead_runs() == 1


@override_settings(TASKS=DUMMY)
def test_with_a_task_queue_elsewhere_each_slice_records_its_task_once_committed(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        run, parts = sliced_run(30)
    from django.tasks import default_task_backend

    queued = {result.args[0]: result.id for result in default_task_backend.results}
    assert set(queued) == {part.pk for part in parts}
    recorded = dict(QualificationRun.leases.filter(parent=run).values_list("pk", "task_id"))
    assert recorded == queued  # else the sweep would take every slice for one without a task


@override_settings(TASKS=IMMEDIATE)
def test_with_the_immediate_backend_a_sliced_run_completes_when_it_is_committed(
    django_capture_on_commit_callbacks,
):
    with django_capture_on_commit_callbacks(execute=True):
        run, _parts = sliced_run(30)
    run.refresh_from_db()
    assert (run.status, run.completed) == (RunStatus.COMPLETED, 30)
    one_result_each(run)
