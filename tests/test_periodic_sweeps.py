"""Task workers keep sweeping after their startup sweep, so a run whose worker died is failed
even when no process restarts afterwards."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from django.test import override_settings

from recovery.models import QualificationRun, RecoveryEvent, RunStatus
from recovery.worker import sweeper
from tests.processes import PYTHON, Process, base_env
from tests.test_startup_processes import events, seed_stuck_runs, statuses, wait_for_sweeps


class Rounds(threading.Event):
    """A stop event that lets the loop run `rounds` times without waiting."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds
        self.waits: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout or 0)
        return len(self.waits) > self.rounds


def sweep_in_a_thread(stop: threading.Event) -> None:
    """The loop closes its thread's connections, as in a worker: keep it off the test's own."""
    thread = threading.Thread(target=sweeper.run_periodic_sweeps, args=(stop,))
    thread.start()
    thread.join(30)
    assert not thread.is_alive()


@pytest.mark.django_db(transaction=True)
def test_a_periodic_sweep_recovers_with_source_sweeper_and_says_so(make_run, caplog):
    caplog.set_level(logging.INFO, logger="recovery")
    run = make_run(total=4, completed=2, created_minutes_ago=30, heartbeat_minutes_ago=9)

    stop = Rounds(1)
    sweep_in_a_thread(stop)

    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == (
        "No progress for 9 min; the worker seems stuck on this run "
        "(recovered by the periodic sweeper)."
    )
    assert RecoveryEvent.objects.get().source == "sweeper"
    assert stop.waits == [2, 2]  # RECOVERY_SWEEP_INTERVAL_SECONDS's default
    assert "[Sweeper] Recovered 1 stuck runs" in caplog.messages


@pytest.mark.django_db(transaction=True)
def test_periodic_sweeps_are_quiet_when_nothing_is_stuck(make_run, caplog):
    caplog.set_level(logging.INFO, logger="recovery")
    make_run(created_minutes_ago=30, heartbeat_minutes_ago=0)

    sweep_in_a_thread(Rounds(3))

    assert [m for m in caplog.messages if m.startswith(("[Sweeper]", "[Recovery]"))] == []
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0


@pytest.mark.django_db(transaction=True)
def test_interval_zero_turns_periodic_sweeps_off(make_run):
    make_run(created_minutes_ago=30)
    stop = Rounds(5)

    with override_settings(RECOVERY_SWEEP_INTERVAL_SECONDS=0):
        sweep_in_a_thread(stop)

    assert stop.waits == []
    assert RecoveryEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_failing_sweep_is_one_warning_and_the_next_round_still_runs(
    make_run, caplog, monkeypatch
):
    from recovery import sweep

    caplog.set_level(logging.INFO, logger="recovery")
    make_run(created_minutes_ago=30)
    real = sweep.recover_stuck_runs
    calls = []

    def flaky(**kwargs):
        calls.append(kwargs["source"])
        if len(calls) == 1:
            raise sweep.RecoveryInputError("database hiccup")
        return real(**kwargs)

    monkeypatch.setattr(sweep, "recover_stuck_runs", flaky)
    sweep_in_a_thread(Rounds(2))

    assert calls == ["sweeper", "sweeper"]
    assert "[Sweeper] Sweep failed: RecoveryInputError: database hiccup" in caplog.messages
    assert RecoveryEvent.objects.count() == 1


@pytest.mark.slow
def test_a_running_worker_fails_a_run_that_dies_after_the_worker_started(
    process_database, tmp_path
):
    """The restarted worker's startup sweep comes too early for a run that died just before;
    the periodic sweep is what fails it."""
    env = base_env(process_database, RECOVERY_SWEEP_INTERVAL_SECONDS="1")
    worker = Process(
        [PYTHON, "manage.py", "db_worker", "--no-reload", "--no-startup-delay"],
        env,
        tmp_path / "worker.log",
    )
    try:
        assert wait_for_sweeps(worker) == ["No stuck runs found"]
        (run_id,) = seed_stuck_runs(process_database)
        deadline = time.monotonic() + 20
        while not events(process_database) and time.monotonic() < deadline:
            time.sleep(0.2)
        ((event_run, source, pid),) = events(process_database)
    finally:
        output = worker.stop()
    assert (event_run, source, pid) == (run_id, "sweeper", worker.popen.pid)
    assert statuses(process_database) == {run_id: "FAILED"}
    assert "[Sweeper] Recovered 1 stuck runs" in output
