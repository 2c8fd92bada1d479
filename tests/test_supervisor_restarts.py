"""How soon the supervisor starts a new executor after one exits unexpectedly: at once when it
died with a run in hand (the run's deaths are the crash-loop guard's, counted per run), after a
growing pause when it keeps dying quickly with nothing in hand (it cannot start). The loop runs
in-process with the executor and the hand-back replaced; the real processes are
tests/test_core_defects_processes.py and tests/test_resume_processes.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from recovery.worker import supervisor as supervisor_module
from recovery.worker.executor import EXIT_LOST
from recovery.worker.supervisor import Supervisor


class Script:
    """Exit codes the executor returns in turn, and what each hand-back gave back."""

    def __init__(self, exits: list[tuple[int, list[int]]]) -> None:
        self.exits: Iterator[tuple[int, list[int]]] = iter(exits)
        self.handed: list[int] = []
        self.pauses: list[float] = []


@pytest.fixture
def run_supervisor(monkeypatch):
    monkeypatch.setattr("recovery.startup.recovery_enabled", lambda: False)
    monkeypatch.setattr(supervisor_module.sweeper, "run_periodic_sweeps", lambda stop: None)

    def run(exits: list[tuple[int, list[int]]]) -> list[float]:
        script = Script(exits)
        supervisor = Supervisor({"batch": False})
        monkeypatch.setattr(supervisor, "_register", lambda: None)

        def run_child() -> int:
            code, script.handed = next(script.exits)
            return code

        def pause(seconds: float | None = None) -> bool:
            script.pauses.append(seconds or 0.0)
            return False

        monkeypatch.setattr(supervisor, "_run_child", run_child)
        monkeypatch.setattr(supervisor, "_after_child", lambda code: script.handed)
        monkeypatch.setattr(supervisor.stopping, "wait", pause)
        supervisor.run()
        return script.pauses

    return run


def test_an_executor_that_dies_with_a_run_in_hand_is_started_again_at_once(run_supervisor):
    # Four quick deaths, each on a run it was scoring, then a clean end (--max-tasks).
    assert run_supervisor([(-9, [7]), (-9, [7]), (1, [8]), (-9, [8]), (0, [])]) == []


def test_an_executor_that_keeps_dying_with_nothing_in_hand_is_paused_longer_each_time(
    run_supervisor, caplog
):
    caplog.set_level(logging.WARNING, logger="recovery")
    pauses = run_supervisor([(1, []), (1, []), (1, []), (0, [])])
    assert pauses == [2.0, 4.0, 8.0]
    assert "Restarting the executor in 8 s" in caplog.text


def test_a_death_with_a_run_in_hand_ends_the_pauses_of_a_crash_loop(run_supervisor):
    pauses = run_supervisor([(1, []), (1, []), (-9, [3]), (1, []), (0, [])])
    assert pauses == [2.0, 4.0, 2.0]


def test_an_executor_found_dead_while_alive_is_restarted_at_once(run_supervisor):
    assert run_supervisor([(EXIT_LOST, []), (EXIT_LOST, []), (0, [])]) == []


def test_an_executor_that_ran_long_before_dying_with_nothing_in_hand_is_not_a_crash_loop(
    run_supervisor, monkeypatch
):
    clock = iter(range(0, 1000, 60))  # each executor lives a minute
    monkeypatch.setattr(supervisor_module.time, "monotonic", lambda: float(next(clock)))
    assert run_supervisor([(1, []), (1, []), (0, [])]) == []
