"""The `resume` policy, the crash-loop guard, the admin's "Resume selected runs", the command's
and the API's policy, and the `run_recovered` signal (recovery/sweep.py, recovery/signals.py)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.contrib.auth.models import Permission, User
from django.core.checks import Error
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django_tasks_db.models import DBTaskResult

from recovery.checks import check_recovery_settings
from recovery.models import (
    QualificationRun,
    RecoveryCause,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
)
from recovery.signals import run_recovered
from recovery.sweep import continue_failed_runs, hand_back, recover_stuck_runs
from tests.conftest import make_worker
from tests.helpers import CSRF_SECRET

TASKS_TABLE = DBTaskResult._meta.db_table


def dead_run(make_run, **fields) -> QualificationRun:
    """A PROCESSING run whose worker stopped beating two minutes ago (dead for the sweep)."""
    fields.setdefault("total", 10)
    fields.setdefault("completed", 3)
    return make_run(
        created_minutes_ago=3,
        started_minutes_ago=3,
        heartbeat_minutes_ago=2,
        worker_beat_seconds_ago=120,
        **fields,
    )


@pytest.fixture
def signals_received():
    received: list[dict] = []

    def receiver(sender, **kwargs):
        received.append({"sender": sender, **kwargs})

    run_recovered.connect(receiver, dispatch_uid="test-receiver")
    yield received
    run_recovered.disconnect(dispatch_uid="test-receiver")


# --- the policy -----------------------------------------------------------------------------


def test_under_resume_a_dead_run_goes_back_to_the_queue_with_a_new_task_and_a_resumed_event(
    make_run, caplog
):
    caplog.set_level(logging.INFO, logger="recovery")
    run = dead_run(make_run, attempts=1, task_id="")
    report = recover_stuck_runs(source=RecoverySource.SWEEPER, policy="resume")

    run.refresh_from_db()
    assert (run.status, run.worker_id, run.completed, run.failure_reason) == (
        RunStatus.PENDING,
        None,
        3,
        "",
    )
    assert DBTaskResult.objects.filter(id=run.task_id, status="READY").exists()
    [event] = RecoveryEvent.objects.filter(run=run)
    assert (event.from_status, event.to_status, event.source, event.cause) == (
        RunStatus.PROCESSING,
        RunStatus.PENDING,
        RecoverySource.SWEEPER,
        RecoveryCause.WORKER_SILENT,
    )
    assert event.reason.startswith(
        "Resumed: back in the queue with 3 of 10 prospects done; the next worker starts at "
        "prospect 4 of 10, the first without a result. The worker on host worker-host.test "
        "stopped responding"
    )
    assert report.policy == "resume"
    assert report.as_dict()["policy"] == "resume"
    assert [(r.id, r.new_status) for r in report.recovered] == [(run.pk, RunStatus.PENDING)]
    assert "[Recovery] Resumed 1 runs (back in the queue), marked 0 as FAILED" in caplog.messages


def test_the_policy_comes_from_the_setting_and_defaults_to_fail(make_run, settings):
    first = dead_run(make_run)
    assert recover_stuck_runs(source="command", log=False).policy == "fail"
    assert QualificationRun.objects.get(pk=first.pk).status == RunStatus.FAILED
    settings.RECOVERY_POLICY = "resume"
    second = dead_run(make_run)
    assert recover_stuck_runs(source="command", log=False).policy == "resume"
    assert QualificationRun.objects.get(pk=second.pk).status == RunStatus.PENDING


def test_a_queued_run_without_a_task_is_requeued_under_resume(make_run):
    run = make_run(RunStatus.PENDING, created_minutes_ago=2, attempts=5)
    recover_stuck_runs(source="sweeper", policy="resume", log=False)
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING  # never started: the crash-loop guard is not its rule
    assert DBTaskResult.objects.filter(id=run.task_id).exists()
    assert RecoveryEvent.objects.get(run=run).cause == RecoveryCause.NO_TASK


def test_the_old_task_of_a_resumed_run_is_marked_failed(make_run):
    old = DBTaskResult.objects.create(
        status="RUNNING", task_path="qualifier.tasks.execute_run", args_kwargs={}
    )
    run = dead_run(make_run, task_id=str(old.id))
    recover_stuck_runs(source="sweeper", policy="resume", log=False)
    old.refresh_from_db()
    assert old.status == "FAILED"
    assert QualificationRun.objects.get(pk=run.pk).task_id != str(old.id)


@override_settings(RECOVERY_MAX_ATTEMPTS=3)
def test_the_crash_loop_guard_fails_a_run_whose_worker_died_on_each_attempt_even_under_resume(
    make_run,
):
    looping = dead_run(make_run, attempts=5, deaths=2, completed=4)
    second_try = dead_run(make_run, attempts=5, deaths=1)
    report = recover_stuck_runs(source="sweeper", policy="resume", log=False)

    looping.refresh_from_db()
    assert looping.status == RunStatus.FAILED
    assert looping.failure_reason.startswith(
        "Gave up after the worker died 3 times on this run; its attempts stopped at prospect "
        "5 of 10 (the first without a result). Continue runs the prospects left once more. "
        "The worker on host worker-host.test"
    )
    assert QualificationRun.objects.get(pk=second_try.pk).status == RunStatus.PENDING
    by_run = {run.id: run.new_status for run in report.recovered}
    assert by_run == {looping.pk: RunStatus.FAILED, second_try.pk: RunStatus.PENDING}
    assert RecoveryEvent.objects.get(run=looping).to_status == RunStatus.FAILED


def earlier_deaths(run: QualificationRun, *stops: int) -> None:
    """Recovery events for deaths of `run` that stopped at `stops` (results done), oldest first."""
    for completed in stops:
        RecoveryEvent.objects.create(
            run=run,
            from_status=RunStatus.PROCESSING,
            to_status=RunStatus.PENDING,
            source=RecoverySource.SWEEPER,
            cause=RecoveryCause.PROCESS_GONE,
            reason="died",
            completed=completed,
            total=run.total,
            host="h",
            pid=1,
        )


@override_settings(RECOVERY_MAX_ATTEMPTS=3)
def test_a_prospect_two_exact_deaths_stopped_at_is_quarantined_and_the_run_resumed(make_run):
    """Deaths that stopped at 0, then twice at 6 (the attempts after a death commit each
    result): prospect 7 crashed its worker twice; it is skipped and the run goes on."""
    run = dead_run(make_run, attempts=3, deaths=2, completed=6)
    earlier_deaths(run, 0, 6)
    recover_stuck_runs(source="sweeper", policy="resume", log=False)

    run.refresh_from_db()
    assert (run.status, run.deaths, run.skip_prospect) == (RunStatus.PENDING, 0, 7)
    event = RecoveryEvent.objects.filter(run=run).latest("pk")
    assert (event.quarantined_prospect, event.to_status) == (7, RunStatus.PENDING)
    assert event.reason.startswith(
        "Prospect 7 of 10 crashed its worker twice; skipped (written to the results as "
        "errored); the other prospects go on. Resumed:"
    )


@pytest.mark.parametrize(
    ("max_attempts", "stops"),
    [(3, (0, 5)), (3, (6, 0)), (2, (6,))],
    ids=["three-places", "back-and-forth", "first-death-inexact"],
)
def test_deaths_that_do_not_point_at_one_prospect_are_the_crash_loop_guards(
    make_run, settings, max_attempts, stops
):
    """Deaths at different places fail the run at RECOVERY_MAX_ATTEMPTS; so do two at one
    place when the earlier one ended an attempt that wrote batches (not exact: the worker may
    have died on any prospect of its unwritten batch)."""
    settings.RECOVERY_MAX_ATTEMPTS = max_attempts
    run = dead_run(make_run, attempts=3, deaths=len(stops), completed=6)
    earlier_deaths(run, *stops)
    recover_stuck_runs(source="sweeper", policy="resume", log=False)

    run.refresh_from_db()
    assert (run.status, run.skip_prospect) == (RunStatus.FAILED, None)
    assert run.failure_reason.startswith(
        f"Gave up after the worker died {len(stops) + 1} times on this run"
    )
    assert not RecoveryEvent.objects.filter(quarantined_prospect__isnull=False).exists()


@override_settings(RECOVERY_MAX_ATTEMPTS=3)
def test_a_quarantine_starts_the_count_of_deaths_again(make_run):
    """A death after a quarantine is the first of a new count: resumed, not given up."""
    run = dead_run(make_run, attempts=4, deaths=0, completed=8)
    earlier_deaths(run, 0, 6)
    RecoveryEvent.objects.filter(run=run).update(quarantined_prospect=None)
    RecoveryEvent.objects.filter(run=run, completed=6).update(quarantined_prospect=7)
    recover_stuck_runs(source="sweeper", policy="resume", log=False)

    run.refresh_from_db()
    assert (run.status, run.deaths) == (RunStatus.PENDING, 1)


def test_a_resume_sweep_makes_the_same_queries_for_1_and_for_6_runs_besides_one_enqueue_each(
    make_run,
):
    def sweep_queries(count: int) -> tuple[int, int]:
        for _ in range(count):
            dead_run(make_run)
        with CaptureQueriesContext(connection) as queries:
            report = recover_stuck_runs(source="sweeper", policy="resume", log=False)
        assert report.recovered_count == count
        enqueues = [q for q in queries if q["sql"].startswith(f'INSERT INTO "{TASKS_TABLE}"')]
        assert len(enqueues) == count
        return len(queries) - len(enqueues), len(enqueues)

    one = sweep_queries(1)
    six = sweep_queries(6)
    assert six[0] == one[0]


def test_a_bad_policy_is_refused_before_anything_changes(make_run):
    run = dead_run(make_run)
    with pytest.raises(Exception, match="policy must be one of fail, resume"):
        recover_stuck_runs(source="command", policy="retry")
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PROCESSING


@override_settings(RECOVERY_POLICY="sometimes")
def test_a_bad_policy_setting_is_a_system_check_error():
    errors = [e for e in check_recovery_settings() if e.id == "recovery.E016"]
    assert errors == [
        Error(
            "Setting RECOVERY_POLICY is invalid: 'sometimes' is not one of fail, resume.",
            hint="Set it to fail (a dead run is failed, keeping its results) or resume (a dead "
            "run goes back to the queue and continues where it stopped).",
            id="recovery.E016",
        )
    ]


# --- the command, the API and the admin take the policy -------------------------------------


def test_the_command_takes_policy_and_reports_it(make_run):
    run = dead_run(make_run)
    out = io.StringIO()
    call_command("recover_stuck_runs", "--policy", "resume", "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["policy"] == "resume"
    assert report["recovered"][0]["new_status"] == "PENDING"
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PENDING


def test_the_command_refuses_an_unknown_policy(make_run):
    run = dead_run(make_run)
    with pytest.raises(CommandError, match="invalid choice: 'later'"):
        call_command("recover_stuck_runs", "--policy", "later", stdout=io.StringIO())
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PROCESSING


@pytest.fixture
def staff_api(db) -> Client:
    user = User.objects.create_user("ops", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="change_qualificationrun"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


def test_the_recovery_api_takes_and_reports_the_policy(staff_api, make_run):
    run = dead_run(make_run)
    dry = staff_api.get("/api/qualify/recovery", {"policy": "resume"})
    assert dry.status_code == 200
    assert (dry.json()["policy"], dry.json()["stuck_count"]) == ("resume", 1)
    response = staff_api.post(
        "/api/qualify/recovery",
        json.dumps({"policy": "resume"}),
        content_type="application/json",
        headers={"X-CSRFToken": CSRF_SECRET},
    )
    assert response.status_code == 200, response.content
    assert response.json()["policy"] == "resume"
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PENDING


@pytest.mark.parametrize("policy", ["later", 1, ""])
def test_the_recovery_api_refuses_an_unknown_policy(staff_api, make_run, policy):
    run = dead_run(make_run)
    response = staff_api.post(
        "/api/qualify/recovery",
        json.dumps({"policy": policy}),
        content_type="application/json",
        headers={"X-CSRFToken": CSRF_SECRET},
    )
    assert response.status_code == 400
    assert response.json()["fields"] == {"policy": "One of fail, resume."}
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PROCESSING
    assert staff_api.get("/api/qualify/recovery", {"policy": "x"}).status_code == 400


def test_the_admin_resumes_stuck_runs_and_failed_runs_with_prospects_left(make_run, client):
    operator = User.objects.create_user("operator", is_staff=True)
    operator.user_permissions.set(
        Permission.objects.filter(codename__in=["view_qualificationrun", "change_qualificationrun"])
    )
    client.force_login(operator)
    stuck = dead_run(make_run)
    failed = make_run(RunStatus.FAILED, total=10, completed=4, failure_reason="boom")
    done = make_run(RunStatus.FAILED, total=10, completed=10)
    completed = make_run(RunStatus.COMPLETED, total=10, completed=10)
    alive = make_run(started_minutes_ago=1, heartbeat_minutes_ago=0)
    selected = [stuck, failed, done, completed, alive]
    response = client.post(
        "/admin/recovery/qualificationrun/",
        {"action": "resume_selected", "_selected_action": [run.pk for run in selected]},
        follow=True,
    )
    [message] = [str(m) for m in response.context["messages"]]
    assert message == (
        "Resumed 2 runs (1 stuck, 1 failed with prospects left); 3 skipped: 1 still alive "
        "(its worker beats or it made progress lately), 1 already completed, 1 failed with no "
        "prospect left."
    )
    statuses = dict(QualificationRun.objects.values_list("pk", "status"))
    assert statuses[stuck.pk] == statuses[failed.pk] == RunStatus.PENDING
    assert statuses[done.pk] == RunStatus.FAILED
    assert statuses[alive.pk] == RunStatus.PROCESSING
    events = RecoveryEvent.objects.filter(source=RecoverySource.ADMIN, actor=operator)
    assert sorted(events.values_list("run_id", flat=True)) == sorted([stuck.pk, failed.pk])


def test_viewers_do_not_get_the_resume_action(make_run, client):
    viewer = User.objects.create_user("viewer", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_qualificationrun"))
    client.force_login(viewer)
    make_run(RunStatus.FAILED)
    html = client.get("/admin/recovery/qualificationrun/").content.decode()
    assert "resume_selected" not in html


# --- the signal ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_signal_is_sent_once_per_recovered_run_after_commit(make_run, signals_received):
    failed = dead_run(make_run)
    recover_stuck_runs(source="sweeper", policy="fail", log=False)
    resumed = dead_run(make_run)
    with transaction.atomic():
        recover_stuck_runs(source="command", policy="resume", log=False)
        assert signals_received[1:] == []  # not before the commit
    assert [
        (s["run"].pk, s["previous_status"], s["new_status"], s["policy"], s["source"])
        for s in signals_received
    ] == [
        (failed.pk, "PROCESSING", "FAILED", "fail", "sweeper"),
        (resumed.pk, "PROCESSING", "PENDING", "resume", "command"),
    ]
    assert signals_received[0]["sender"] is QualificationRun
    assert (
        signals_received[0]["reason"] == QualificationRun.objects.get(pk=failed.pk).failure_reason
    )
    assert signals_received[1]["run"].status == RunStatus.PENDING
    assert signals_received[1]["reason"].startswith("Resumed: back in the queue")
    recover_stuck_runs(source="sweeper", policy="resume", log=False)
    assert len(signals_received) == 2  # nothing more to recover, nothing more sent


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("policy", ["fail", "resume"])
def test_the_signal_is_never_sent_for_a_rolled_back_recovery(make_run, signals_received, policy):
    run = dead_run(make_run)
    with pytest.raises(RuntimeError, match="rolled back on purpose"), transaction.atomic():
        report = recover_stuck_runs(source="command", policy=policy, log=False)
        assert report.recovered_count == 1
        raise RuntimeError("rolled back on purpose")
    assert signals_received == []
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PROCESSING
    assert not RecoveryEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_signal_is_sent_for_a_hand_back_and_for_a_continue(make_run, signals_received):
    worker = make_worker()
    run = make_run(worker=worker, total=10, completed=2, attempts=1)
    hand_back(worker, source=RecoverySource.SUPERVISOR, cause=RecoveryCause.CRASHED)
    failed = make_run(RunStatus.FAILED, total=10, completed=2)
    continue_failed_runs([failed.pk], source=RecoverySource.CONTINUE)
    continue_failed_runs([failed.pk], source=RecoverySource.CONTINUE)  # already pending: none
    assert [
        (s["run"].pk, s["previous_status"], s["new_status"], s["policy"], s["source"])
        for s in signals_received
    ] == [
        (run.pk, "PROCESSING", "PENDING", "resume", "supervisor"),
        (failed.pk, "FAILED", "PENDING", "resume", "continue"),
    ]


@pytest.mark.django_db(transaction=True)
def test_a_receiver_that_raises_is_logged_and_does_not_stop_the_recovery(
    make_run, signals_received, caplog
):
    def broken(sender, **kwargs):
        raise RuntimeError("mail server down")

    run_recovered.connect(broken, dispatch_uid="broken-receiver")
    try:
        first, second = dead_run(make_run), dead_run(make_run)
        report = recover_stuck_runs(source="sweeper", policy="resume", log=False)
    finally:
        run_recovered.disconnect(dispatch_uid="broken-receiver")
    assert report.recovered_count == 2
    assert sorted(s["run"].pk for s in signals_received) == sorted([first.pk, second.pk])
    assert caplog.text.count("A run_recovered receiver") == 2
    assert "mail server down" in caplog.text
