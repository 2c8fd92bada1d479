"""Signs of life that reach the database late or from one process only are still signs of life:
a frozen supervisor whose executor goes on, and a worker whose every round trip to the database
takes longer than its heartbeat interval, are never recovered (real processes and signals; the
slow link is tests/latency_proxy.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.latency_proxy import LatencyProxy
from tests.test_core_defects_processes import (
    FAST,
    WORKER_TIMEOUT,
    events,
    needs_postgres,
    new_run,
    one_result_each,
)
from tests.test_core_defects_processes import fleet as fleet
from tests.test_worker_processes import run_state

pytestmark = pytest.mark.slow


@pytest.mark.slow(seconds=30)
def test_a_frozen_supervisor_whose_executor_goes_on_causes_no_recovery(fleet):
    """SIGSTOP of the supervisor alone for three worker timeouts: it cannot beat, but its
    executor writes progress, and progress is a sign of life."""
    url, total = fleet.url, 400
    run_id = new_run(url, total)
    worker = fleet.start("busy")
    fleet.start("sweeper", QUEUE="nothing")
    fleet.wait(lambda: run_state(url, run_id)[1] >= 20, "progress")
    os.kill(worker.popen.pid, signal.SIGSTOP)
    frozen_at, at_freeze = time.monotonic(), run_state(url, run_id)[1]
    try:
        fleet.wait(
            lambda: (
                (
                    time.monotonic() - frozen_at >= 3 * WORKER_TIMEOUT
                    and run_state(url, run_id)[1] >= at_freeze + 40
                )
                or bool(events(url, run_id))
            ),
            "three worker timeouts of a frozen supervisor while the run progresses",
            120,
        )
    finally:
        os.kill(worker.popen.pid, signal.SIGCONT)
    assert run_state(url, run_id)[1] < total, "the run finished during the freeze: nothing shown"
    fleet.wait(
        lambda: run_state(url, run_id)[0] == "COMPLETED" or bool(events(url, run_id)),
        "the run to complete",
        120,
    )
    assert events(url, run_id) == [], f"a progressing run was recovered\n{fleet.outputs()}"
    assert one_result_each(url, run_id) == (total, total, total)


@pytest.mark.postgres
@pytest.mark.slow(seconds=70)
def test_a_worker_whose_round_trips_outlast_its_heartbeat_interval_is_never_taken_for_dead(fleet):
    """2.2 s added to every packet each way (a 4.4 s round trip) in front of a worker beating
    every 2 s with a 6 s timeout, while a worker outside the slow link sweeps every second: its
    beats, on a fixed rate, land a round trip apart, within the timeout. (Beats that waited an
    interval after each answer landed 6.4 s apart, measured; this test did not catch that,
    since the windows of silence were shorter than the sweeps could see every time.)"""
    needs_postgres()
    settings = {**FAST, "RECOVERY_HEARTBEAT_SECONDS": "2", "RECOVERY_WORKER_TIMEOUT_SECONDS": "6"}
    url = fleet.url
    run_id = new_run(url, 300)
    host, rest = url.removeprefix("postgresql://").split("@", 1)[1].split("/", 1)
    address, port = host.split(":")
    with LatencyProxy((address, int(port)), 0.0) as proxy:
        slow_url = f"postgresql://postgres@127.0.0.1:{proxy.port}/{rest}"
        # It starts on a fast link (the proxy adds nothing yet), which is slowed down below.
        worker = far_worker(fleet, slow_url, settings)
        fleet.start("sweeper", QUEUE="nothing", **settings)
        fleet.wait(lambda: run_state(url, run_id)[0] == "PROCESSING", "the run to start", 120)
        proxy.set_delay(2.2)
        slowed_at = time.monotonic()
        fleet.wait(
            lambda: time.monotonic() - slowed_at >= 5 * 6 or bool(events(url, run_id)),
            "five worker timeouts of a slow link",
            120,
        )
        proxy.set_delay(0.0)
        assert events(url, run_id) == [], f"a live worker was taken for dead\n{fleet.outputs()}"
        assert "found dead by a sweep while it lives" not in worker.output
        fleet.wait(lambda: run_state(url, run_id)[0] == "COMPLETED", "the run to complete", 180)
    assert events(url, run_id) == []


def far_worker(workers, url: str, settings: dict[str, str]):
    """A worker of the fleet `workers` whose database connections all go through the slow link."""
    from tests.processes import Process, base_env
    from tests.test_core_defects_processes import PYTHON

    worker = Process(
        [
            PYTHON,
            "manage.py",
            "db_worker",
            "--no-startup-delay",
            "--interval",
            "0.2",
            "--no-reload",
        ],
        base_env(url, QUALIFIER_SCORING_DELAY_MS="100", **settings),
        workers.tmp_path / "far.log",
    )
    workers.workers.append(worker)
    return worker
