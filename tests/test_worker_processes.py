"""Real `manage.py db_worker` processes: a run completes; a worker killed with SIGKILL mid-run
(supervisor and executor, as when a machine dies) leaves a PROCESSING run that keeps its
results, which the recover_stuck_runs command or a restarted worker's startup recovery then
fails at once (the dead process was on this host), keeping the results."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.processes import PYTHON, Process, base_env, manage

pytestmark = pytest.mark.slow

#: Per prospect; with a batch written every second, a run of 80 takes about 8 seconds.
DELAY_MS = "100"


def sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Reads the child processes' database directly (fast enough to poll)."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"), timeout=20)) as conn:
            return conn.execute(statement.replace("%s", "?"), params).fetchall()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def run_state(url: str, run_id: int) -> tuple[str, int, int]:
    """(status, completed, result rows) of a run."""
    [(status, completed)] = sql(
        url, "SELECT status, completed FROM recovery_qualificationrun WHERE id = %s", (run_id,)
    )
    [(results,)] = sql(
        url, "SELECT COUNT(*) FROM qualifier_prospectresult WHERE run_id = %s", (run_id,)
    )
    return status, completed, results


def recovery_events(url: str, run_id: int) -> list[tuple[str, int]]:
    return sql(
        url,
        "SELECT source, completed FROM recovery_recoveryevent WHERE run_id = %s",
        (run_id,),
    )


def shell(url: str, code: str) -> str:
    result = manage(["shell", "-c", code], url, RECOVERY_ON_STARTUP="false")
    assert result.returncode == 0, result.stderr
    return result.stdout


def create_run(url: str, count: int) -> int:
    out = shell(
        url,
        "from qualifier.prospects import ProspectData\n"
        "from qualifier.runs import create_run\n"
        f"data = [ProspectData(name=f'P{{i}}', company='C', industry='Software', "
        f"employees=100, title='VP', position=i + 2) for i in range({count})]\n"
        "print('RUN', create_run(user=None, prospects=data).pk)\n",
    )
    return int(out.split("RUN", 1)[1].split()[0])


def start_worker(url: str, log: Path, **env: str) -> Process:
    settings = {"QUALIFIER_SCORING_DELAY_MS": DELAY_MS, "RECOVERY_HEARTBEAT_SECONDS": "1", **env}
    return Process(
        [
            PYTHON,
            "manage.py",
            "db_worker",
            "--no-reload",
            "--no-startup-delay",
            "--interval",
            "0.2",
        ],
        base_env(url, **settings),
        log,
    )


def wait_until(check: Callable[[], bool], what: str, worker: Process, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; worker output:\n{worker.output}")
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (the supervisor's executor)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def kill_worker(worker: Process) -> None:
    """SIGKILL to the supervisor and its executor at once: nothing gets to clean up."""
    executors = children(worker.popen.pid)
    worker.kill(signal.SIGKILL)
    for pid in executors:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    worker.popen.wait(10)


def kill_mid_run(url: str, tmp_path: Path, total: int = 80) -> tuple[int, int]:
    """Starts a worker on a new run, SIGKILLs it once results exist; returns (run, results)."""
    run_id = create_run(url, total)
    worker = start_worker(url, tmp_path / "killed-worker.log")
    try:
        wait_until(lambda: run_state(url, run_id)[1] >= 10, "the first batches", worker)
        kill_worker(worker)
    finally:
        worker.stop()
    status, completed, results = run_state(url, run_id)
    assert status == "PROCESSING"
    assert 0 < completed == results < total  # progress and results were written together
    return run_id, results


def test_a_real_worker_completes_a_run(process_database, tmp_path):
    run_id = create_run(process_database, 30)
    worker = start_worker(process_database, tmp_path / "worker.log", QUALIFIER_SCORING_DELAY_MS="0")
    try:
        wait_until(
            lambda: run_state(process_database, run_id)[0] == "COMPLETED", "completion", worker
        )
        # The line is written after the run's row says COMPLETED: wait for it, do not race it.
        assert worker.wait_for_output(f"Run {run_id} completed: 30 prospects"), worker.output
    finally:
        worker.stop()
    assert run_state(process_database, run_id) == ("COMPLETED", 30, 30)
    [(task_status,)] = sql(
        process_database, "SELECT status FROM django_tasks_database_dbtaskresult"
    )
    assert task_status == "SUCCESSFUL"


def test_a_killed_worker_leaves_a_processing_run_that_the_command_fails_at_once(
    process_database, tmp_path
):
    """The worker's process is gone from this host: no timeout to wait for."""
    run_id, results = kill_mid_run(process_database, tmp_path)
    result = manage(["recover_stuck_runs"], process_database)
    assert result.returncode == 0, result.stderr
    assert "Marked 1 runs as FAILED" in result.stdout
    assert "process gone" in result.stdout
    assert run_state(process_database, run_id) == ("FAILED", results, results)
    assert recovery_events(process_database, run_id) == [("command", results)]


def test_a_killed_worker_leaves_a_run_an_operator_can_force_fail_at_once(
    process_database, tmp_path
):
    run_id, results = kill_mid_run(process_database, tmp_path)
    result = manage(
        ["recover_stuck_runs", "--run", str(run_id), "--force", "--json"], process_database
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [run["id"] for run in report["recovered"]] == [run_id]
    assert run_state(process_database, run_id) == ("FAILED", results, results)


def test_a_restarted_worker_recovers_the_dead_workers_run_at_its_start_before_taking_work(
    process_database, tmp_path
):
    run_id, results = kill_mid_run(process_database, tmp_path)

    restarted = start_worker(process_database, tmp_path / "restarted-worker.log")
    try:
        assert restarted.wait_for_output("[Worker] Executor started"), restarted.output
        output = restarted.output
    finally:
        restarted.stop()
    assert output.index("[Startup] Recovered 1 stuck runs") < output.index("Executor started")
    assert f"Run {run_id}: {results}/80 completed (status: PROCESSING → FAILED; process gone)" in (
        output
    )
    assert run_state(process_database, run_id) == ("FAILED", results, results)
    assert recovery_events(process_database, run_id) == [("startup", results)]
