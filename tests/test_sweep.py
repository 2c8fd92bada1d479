"""What "stuck" means and what recovering a stuck run does (recovery/sweep.py)."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from recovery import sweep
from recovery.models import QualificationRun, RecoveryEvent, RunStatus
from recovery.report import SkipReason
from recovery.sweep import RecoveryInputError, recover_stuck_runs, stuck_runs


def recovery_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "recovery"]


# --- the original write-up's three test cases -----------------------------------------------


def test_case_1_no_stuck_runs(db, caplog):
    caplog.set_level(logging.INFO, logger="recovery")

    report = recover_stuck_runs(source="startup")

    assert report.recovered == []
    assert recovery_log(caplog) == [
        "[Recovery] Found 0 active run(s) in database:",
        "[Recovery] No stuck runs found (worker gone, exited or silent for 8+ s, no progress for 5+ minutes, or queued without a live task)",
    ]


def test_case_2_a_stuck_run_is_found_and_failed(make_run, caplog):
    caplog.set_level(logging.INFO, logger="recovery")
    run = make_run(total=1, completed=0, created_minutes_ago=10, started_minutes_ago=10)

    report = recover_stuck_runs(source="startup")

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.completed_at is not None
    assert [r.id for r in report.recovered] == [run.pk]
    assert recovery_log(caplog) == [
        "[Recovery] Found 1 active run(s) in database:",
        f"  - {run.pk}: PROCESSING, 0/1, age: 10min, no heartbeat yet",
        "[Recovery] Found 1 stuck runs (worker gone, exited or silent for 8+ s, no progress for 5+ minutes, or queued without a live task)",
        "[Recovery] Marked 1 runs as FAILED",
        f"  - Run {run.pk}: 0/1 completed (status: PROCESSING → FAILED; no progress)",
    ]


def test_case_3_a_recent_run_is_left_alone(make_run, caplog):
    caplog.set_level(logging.INFO, logger="recovery")
    run = make_run(total=10, completed=3, created_minutes_ago=2, started_minutes_ago=2)

    recover_stuck_runs(source="startup")

    run.refresh_from_db()
    assert run.status == RunStatus.PROCESSING
    assert recovery_log(caplog)[-1] == (
        "[Recovery] No stuck runs found (worker gone, exited or silent for 8+ s, no progress for 5+ minutes, or queued without a live task)"
    )


# --- the definition of stuck ---------------------------------------------------------------


def test_an_old_run_that_keeps_beating_is_not_stuck(make_run):
    """The original failed runs by age; a healthy long run must survive."""
    make_run(created_minutes_ago=600, started_minutes_ago=600, heartbeat_minutes_ago=0.2)

    assert stuck_runs(5).count() == 0
    assert recover_stuck_runs(source="command", log=False).recovered == []


def test_a_run_whose_heartbeat_stopped_is_stuck(make_run):
    run = make_run(created_minutes_ago=60, started_minutes_ago=60, heartbeat_minutes_ago=6)

    assert list(stuck_runs(5)) == [run]
    assert list(stuck_runs(10)) == []


def test_a_run_that_never_beat_is_judged_by_its_start(make_run):
    started_late = make_run(created_minutes_ago=60, started_minutes_ago=2)
    started_long_ago = make_run(created_minutes_ago=60, started_minutes_ago=7)

    assert list(stuck_runs(5)) == [started_long_ago]
    assert started_late not in stuck_runs(5)


def test_a_pending_run_is_dead_only_without_a_live_task(make_run):
    """A run waiting in the queue is waiting, however long; one with no task behind it is not."""
    from qualifier.tasks import execute_run

    queued_long = make_run(RunStatus.PENDING, created_minutes_ago=600)
    queued_long.task_id = str(execute_run.enqueue(queued_long.pk).id)
    queued_long.save(update_fields=["task_id"])
    no_task = make_run(RunStatus.PENDING, created_minutes_ago=1)
    make_run(RunStatus.PENDING, created_minutes_ago=0)  # just queued: its task may come

    dead = stuck_runs(5)
    assert list(dead) == [no_task]
    assert dead.get().cause == "no_task"


def test_a_pending_run_whose_task_finished_or_vanished_is_dead(make_run):
    from django_tasks_db.models import DBTaskResult

    from qualifier.tasks import execute_run

    finished = make_run(RunStatus.PENDING, created_minutes_ago=2)
    finished.task_id = str(execute_run.enqueue(finished.pk).id)
    finished.save(update_fields=["task_id"])
    DBTaskResult.objects.filter(id=finished.task_id).update(status="SUCCESSFUL")
    vanished = make_run(
        RunStatus.PENDING, created_minutes_ago=2, task_id="0c9d8e0b-6d4c-4d0f-9d8e-1a2b3c4d5e6f"
    )

    assert set(stuck_runs(5)) == {finished, vanished}


def test_a_processing_run_is_dead_when_its_worker_is_gone_or_silent(make_run):
    alive = make_run(started_minutes_ago=1, worker_beat_seconds_ago=5)
    silent = make_run(started_minutes_ago=1, worker_beat_seconds_ago=45)
    gone = make_run(started_minutes_ago=1, worker_beat_seconds_ago=None)

    causes = dict(stuck_runs(5).values_list("pk", "cause"))
    assert causes == {silent.pk: "worker_silent", gone.pk: "worker_gone"}
    assert alive.pk not in causes


def test_the_worker_timeout_comes_from_the_setting(make_run):
    run = make_run(started_minutes_ago=1, worker_beat_seconds_ago=45)

    with override_settings(RECOVERY_WORKER_TIMEOUT_SECONDS=60):
        assert run not in stuck_runs(5)
    assert run in stuck_runs(5)


def test_a_worker_on_this_host_whose_process_exited_is_dead_at_once(make_run):
    """No timeout to wait for: this host can tell that the pid is gone, or reused."""
    import socket
    import subprocess
    import sys

    from recovery.liveness import process_started_at

    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    exited_pid = int(finished.stdout)
    here = socket.gethostname()
    exited = make_run(started_minutes_ago=0.1)
    exited.worker.host, exited.worker.pid = here, exited_pid
    exited.worker.save()
    reused = make_run(started_minutes_ago=0.1)
    reused.worker.host, reused.worker.pid = here, os_getpid()
    reused.worker.process_started_at = process_started_at(os_getpid()).replace(year=2001)
    reused.worker.save()
    me = make_run(started_minutes_ago=0.1)
    me.worker.host, me.worker.pid = here, os_getpid()
    me.worker.process_started_at = process_started_at(os_getpid())
    me.worker.save()

    causes = dict(stuck_runs(5).values_list("pk", "cause"))
    assert causes == {exited.pk: "process_gone", reused.pk: "process_gone"}


def os_getpid() -> int:
    import os

    return os.getpid()


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.FAILED])
def test_finished_runs_are_never_stuck(make_run, status):
    make_run(status, created_minutes_ago=600, started_minutes_ago=600)

    assert stuck_runs(5).count() == 0


def test_the_timeout_comes_from_the_setting(make_run):
    make_run(created_minutes_ago=8, started_minutes_ago=8)

    with override_settings(STUCK_RUN_TIMEOUT_MINUTES=10):
        assert recover_stuck_runs(source="command", log=False).stuck_count == 0
    with override_settings(STUCK_RUN_TIMEOUT_MINUTES=7):
        assert recover_stuck_runs(source="command", log=False).stuck_count == 1


# --- what recovery does --------------------------------------------------------------------


def test_recovery_keeps_progress_and_writes_reason_and_one_event(make_run):
    run = make_run(
        total=10,
        completed=5,
        created_minutes_ago=20,
        started_minutes_ago=20,
        heartbeat_minutes_ago=12.5,
    )

    recover_stuck_runs(source="startup")

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.completed == 5 and run.total == 10
    assert run.failure_reason == (
        "No progress for 12 min; the worker seems stuck on this run (recovered at server start)."
    )
    event = RecoveryEvent.objects.get()
    assert event.run_id == run.pk
    assert (event.from_status, event.to_status) == ("PROCESSING", "FAILED")
    assert event.source == "startup"
    assert event.reason == run.failure_reason
    assert (event.completed, event.total) == (5, 10)
    assert event.heartbeat_at == run.heartbeat_at
    assert event.host and event.pid
    assert event.actor is None


def test_the_report_names_id_previous_status_progress_and_age(make_run):
    run = make_run(RunStatus.PENDING, total=4, created_minutes_ago=9)

    report = recover_stuck_runs(source="command", log=False)

    (recovered,) = report.recovered
    data = recovered.as_dict(report.now)
    assert data["id"] == run.pk
    assert data["previous_status"] == "PENDING"
    assert (data["completed"], data["total"]) == (0, 4)
    assert data["age_minutes"] == 9
    assert data["heartbeat_at"] is None


def test_the_actor_is_recorded_in_event_and_reason(make_run):
    admin = get_user_model().objects.create_user("alice")
    make_run(created_minutes_ago=30)

    recover_stuck_runs(source="admin", actor=admin, log=False)

    event = RecoveryEvent.objects.get()
    assert event.actor == admin
    assert event.reason.endswith("recovered from the admin by alice).")


def test_a_second_sweep_recovers_nothing_more(make_run):
    make_run(created_minutes_ago=30)
    recover_stuck_runs(source="command", log=False)

    assert recover_stuck_runs(source="command", log=False).recovered == []
    assert RecoveryEvent.objects.count() == 1


def test_dry_run_lists_and_changes_nothing(make_run, caplog):
    caplog.set_level(logging.INFO, logger="recovery")
    run = make_run(created_minutes_ago=30)

    report = recover_stuck_runs(source="command", dry_run=True)

    assert [r.id for r in report.stuck] == [run.pk]
    assert report.recovered == []
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PROCESSING
    assert RecoveryEvent.objects.count() == 0
    assert recovery_log(caplog)[-1].startswith("[Recovery] Would mark 1 runs as FAILED")


def test_only_the_named_runs_are_considered(make_run):
    first = make_run(created_minutes_ago=30)
    second = make_run(created_minutes_ago=30)

    report = recover_stuck_runs(source="command", run_ids=[second.pk], log=False)

    assert [r.id for r in report.recovered] == [second.pk]
    assert QualificationRun.objects.get(pk=first.pk).status == RunStatus.PROCESSING


def test_force_fails_a_named_active_run_before_the_timeout(make_run):
    fresh = make_run(created_minutes_ago=1, started_minutes_ago=1, heartbeat_minutes_ago=0)
    done = make_run(RunStatus.COMPLETED, created_minutes_ago=30)

    report = recover_stuck_runs(
        source="command", run_ids=[fresh.pk, done.pk], force=True, log=False
    )

    assert [r.id for r in report.recovered] == [fresh.pk]
    fresh.refresh_from_db()
    assert fresh.status == RunStatus.FAILED
    assert fresh.failure_reason.startswith("Stopped by an operator")
    assert QualificationRun.objects.get(pk=done.pk).status == RunStatus.COMPLETED


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout_minutes": 0}, "greater than 0"),
        ({"timeout_minutes": -5}, "greater than 0"),
        ({"timeout_minutes": "abc"}, "whole number"),
        ({"force": True}, "force needs the ids"),
        ({"run_ids": [424242]}, "No qualification run with id 424242"),
        ({"source": "somewhere"}, "unknown recovery source"),
    ],
)
def test_bad_input_raises_and_changes_nothing(make_run, kwargs, message):
    run = make_run(created_minutes_ago=30)
    arguments = {"source": "command", "log": False, **kwargs}

    with pytest.raises(RecoveryInputError, match=message):
        recover_stuck_runs(**arguments)

    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PROCESSING
    assert RecoveryEvent.objects.count() == 0


def test_long_listings_stop_after_a_bounded_number_of_lines(make_run, caplog):
    caplog.set_level(logging.INFO, logger="recovery")
    for _ in range(25):
        make_run(created_minutes_ago=1)

    recover_stuck_runs(source="command", list_limit=20)

    lines = recovery_log(caplog)
    assert lines[0] == "[Recovery] Found 25 active run(s) in database:"
    assert len([line for line in lines if line.startswith("  - ")]) == 20
    assert "  ... and 5 more" in lines


def test_sweeps_larger_than_a_batch_recover_everything(make_run, monkeypatch):
    from recovery import sweep

    monkeypatch.setattr(sweep, "BATCH_SIZE", 3)
    monkeypatch.setattr(sweep, "BATCH_SIZE", 3)
    runs = [make_run(created_minutes_ago=30) for _ in range(7)]

    report = recover_stuck_runs(source="sweeper", log=False)

    assert sorted(r.id for r in report.recovered) == sorted(r.pk for r in runs)
    assert RecoveryEvent.objects.count() == 7


def test_the_audit_trail_is_kept_a_recovered_run_cannot_be_deleted(make_run):
    from django.db.models import ProtectedError

    run = make_run(created_minutes_ago=30)
    recover_stuck_runs(source="command", log=False)

    with pytest.raises(ProtectedError):
        run.delete()
    assert RecoveryEvent.objects.filter(run_id=run.pk).count() == 1


def test_an_event_outlives_its_actor(make_run):
    admin = get_user_model().objects.create_user("bob")
    make_run(created_minutes_ago=30)
    recover_stuck_runs(source="admin", actor=admin, log=False)

    admin.delete()

    event = RecoveryEvent.objects.get()
    assert event.actor is None
    assert event.reason.endswith("by bob).")


# --- why named runs were skipped ----------------------------------------------------------------


def test_each_named_run_the_sweep_left_alone_has_its_reason(make_run):
    stuck = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)
    alive = make_run(created_minutes_ago=30, heartbeat_minutes_ago=1)
    done = make_run(RunStatus.COMPLETED, total=1, completed=1, created_minutes_ago=30)

    report = recover_stuck_runs(source="command", run_ids=[stuck.pk, alive.pk, done.pk])

    assert [run.id for run in report.recovered] == [stuck.pk]
    assert report.skipped == {alive.pk: SkipReason.ALIVE, done.pk: SkipReason.FINISHED}
    assert report.as_dict()["skipped_runs"] == [
        {"id": alive.pk, "reason": "alive"},
        {"id": done.pk, "reason": "finished"},
    ]


def test_a_dry_run_skips_only_the_named_runs_it_would_not_recover(make_run):
    stuck = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)
    alive = make_run(created_minutes_ago=30, heartbeat_minutes_ago=1)

    report = recover_stuck_runs(source="command", run_ids=[stuck.pk, alive.pk], dry_run=True)

    assert report.skipped == {alive.pk: SkipReason.ALIVE}


def test_a_sweep_without_named_runs_reports_no_skipped_runs(make_run):
    make_run(created_minutes_ago=30, heartbeat_minutes_ago=1)

    assert recover_stuck_runs(source="command").skipped == {}


def test_a_dead_named_run_the_locking_statement_did_not_take_is_skipped_as_locked(
    make_run, monkeypatch
):
    """Decided from what the sweep saw: the run was dead when it looked, so when the batch does
    not take it (held by another transaction), it is locked, whatever it looks like later."""
    stuck = make_run(created_minutes_ago=30, heartbeat_minutes_ago=9)
    monkeypatch.setattr(sweep, "_recover", lambda *args: None)

    report = recover_stuck_runs(source="command", run_ids=[stuck.pk])

    assert report.skipped == {stuck.pk: SkipReason.LOCKED}
    assert report.locked_count == 1


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_database_counts_as_up_from_the_end_of_crash_recovery():
    """Nobody is judged silent until the server has accepted connections for the timeout: on
    PostgreSQL that starts when the WAL writer started (after any crash recovery), not before."""
    from django.db import connection

    from recovery.clock import DatabaseStartedAt
    from recovery.models import Worker

    Worker.objects.create(host="h", pid=1)
    [started] = Worker.objects.annotate(at=DatabaseStartedAt()).values_list("at", flat=True)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_postmaster_start_time(), (SELECT backend_start FROM pg_stat_activity "
            "WHERE backend_type = 'walwriter'), (SELECT MAX(backend_start) FROM "
            "pg_stat_activity WHERE backend_type LIKE '%launcher')"
        )
        server_start, walwriter_start, launchers_start = cursor.fetchone()
    assert walwriter_start is not None  # the tests connect as a superuser, who may see it
    assert started == max(server_start, walwriter_start, launchers_start or walwriter_start)
    assert started > server_start
