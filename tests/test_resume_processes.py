"""Real processes under the `resume` policy: a worker SIGKILLed twice in one run, a scorer that
kills its worker on one prospect (quarantined: the run completes without it), one that kills it
at other prospects each time (the crash-loop guard), and two processes continuing the same
failed run at once."""

from __future__ import annotations

import time

import pytest

from tests.processes import PYTHON, Process, base_env
from tests.test_worker_processes import (
    kill_worker,
    run_state,
    shell,
    sql,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.slow

RESUME = {"RECOVERY_POLICY": "resume", "QUALIFIER_SCORING_DELAY_MS": "50"}


def create_run(url: str, names: list[str]) -> int:
    out = shell(
        url,
        "from qualifier.prospects import ProspectData\n"
        "from qualifier.runs import create_run\n"
        f"names = {names!r}\n"
        "data = [ProspectData(name=n, company='C', industry='Software', employees=100, "
        "title='VP', position=i + 2) for i, n in enumerate(names)]\n"
        "print('RUN', create_run(user=None, prospects=data, slice_size=len(data)).pk)\n",
    )
    return int(out.split("RUN", 1)[1].split()[0])


def results_per_prospect(url: str, run_id: int) -> tuple[int, int, int]:
    """(prospects, results, prospects with exactly one result) of a run."""
    [(prospects,)] = sql(
        url, "SELECT COUNT(*) FROM qualifier_prospect WHERE run_id = %s", (run_id,)
    )
    [(results, distinct)] = sql(
        url,
        "SELECT COUNT(*), COUNT(DISTINCT prospect_id) FROM qualifier_prospectresult "
        "WHERE run_id = %s",
        (run_id,),
    )
    return prospects, results, distinct


def events(url: str, run_id: int) -> list[tuple[str, str, str, str]]:
    return sql(
        url,
        "SELECT source, cause, to_status, reason FROM recovery_recoveryevent WHERE run_id = %s "
        "ORDER BY id",
        (run_id,),
    )


def test_a_worker_killed_twice_in_one_run_under_resume_completes_it_with_one_result_each(
    process_database, tmp_path
):
    url, total = process_database, 120
    run_id = create_run(url, [f"P{i}" for i in range(total)])
    progress = [0]
    for kill in (1, 2):
        worker = start_worker(url, tmp_path / f"worker-{kill}.log", **RESUME)
        try:
            # Running again (the restarted worker's startup sweep requeued it): new results.
            wait_until(
                lambda: run_state(url, run_id)[1] >= progress[-1] + 10, "new results", worker
            )
            kill_worker(worker)
        finally:
            worker.stop()
        status, completed, results = run_state(url, run_id)
        assert status == "PROCESSING" and completed == results < total
        progress.append(completed)
    last = start_worker(url, tmp_path / "worker-3.log", **RESUME)
    try:
        wait_until(lambda: run_state(url, run_id)[0] == "COMPLETED", "completion", last)
    finally:
        output = last.stop()
    assert run_state(url, run_id) == ("COMPLETED", total, total)
    assert results_per_prospect(url, run_id) == (total, total, total)
    resumed = events(url, run_id)
    assert [(source, cause, to) for source, cause, to, _ in resumed] == [
        ("startup", "process_gone", "PENDING"),
        ("startup", "process_gone", "PENDING"),
    ]
    assert resumed[1][3].startswith(
        f"Resumed: back in the queue with {progress[2]} of {total} prospects done; the next "
        f"worker starts at prospect {progress[2] + 1} of {total}"
    )
    assert "(policy: resume)" in output
    assert f"{total - progress[2]} scored now" in output  # only the prospects left


def test_a_prospect_that_kills_its_worker_twice_is_quarantined_and_the_run_completes(
    process_database, tmp_path
):
    """A scorer that kills its process on prospect 38 of 100 (20 ms each, so the first death
    loses a whole unwritten batch): the prospect is found exactly, written as errored, and the
    other 99 are scored, within at most 4 deaths (the figure in docs/explanation/benchmarks.md)."""
    url, total, poison = process_database, 100, 38
    names = [f"P{i}" for i in range(1, total + 1)]
    names[poison - 1] = "Killer"
    run_id = create_run(url, names)
    calls = tmp_path / "calls"
    worker = start_worker(
        url,
        tmp_path / "worker.log",
        RECOVERY_POLICY="resume",
        RECOVERY_MAX_ATTEMPTS="3",
        QUALIFIER_SCORER="tests.killer_scorer.scorer",
        QUALIFIER_SCORING_DELAY_MS="20",
        KILLER_CALLS_FILE=str(calls),
    )
    try:
        wait_until(
            lambda: run_state(url, run_id)[0] in ("COMPLETED", "FAILED"), "the run", worker, 120
        )
        assert worker.popen.poll() is None  # the worker lives on; only its executors died
    finally:
        output = worker.stop()
    assert run_state(url, run_id) == ("COMPLETED", total, total), output
    outcomes = sql(
        url,
        "SELECT p.name, r.outcome, r.error FROM qualifier_prospectresult r "
        "JOIN qualifier_prospect p ON p.id = r.prospect_id WHERE r.run_id = %s",
        (run_id,),
    )
    errored = [(name, error) for name, outcome, error in outcomes if outcome == "ERRORED"]
    assert errored == [("Killer", "crashed its worker twice; skipped")]
    assert results_per_prospect(url, run_id) == (total, total, total)
    recovered = sql(
        url,
        "SELECT source, cause, to_status, completed, quarantined_prospect "
        "FROM recovery_recoveryevent WHERE run_id = %s ORDER BY id",
        (run_id,),
    )
    deaths = [row for row in recovered if row[1] == "crashed"]
    assert recovered == deaths and 2 <= len(deaths) <= 4, recovered
    assert [row[4] for row in deaths] == [None] * (len(deaths) - 1) + [poison]
    assert deaths[-1][3] == poison - 1 and all(row[2] == "PENDING" for row in deaths)
    [(reason,)] = sql(
        url,
        "SELECT reason FROM recovery_recoveryevent WHERE run_id = %s AND "
        "quarantined_prospect IS NOT NULL",
        (run_id,),
    )
    assert reason.startswith(
        f"Prospect {poison} of {total} crashed its worker twice; skipped (written to the "
        "results as errored)"
    ), reason
    made = calls.read_text().split()
    wasted = len(made) - (total - 1)
    assert made.count("Killer") == len(deaths)
    print(f"QUARANTINE deaths={len(deaths)} calls={len(made)} wasted={wasted}")


def test_a_scorer_that_kills_its_worker_on_other_prospects_each_time_is_given_up(
    process_database, tmp_path
):
    """Deaths that do not point at one prospect are the crash-loop guard's: three deaths at
    three places fail the run, and nothing is quarantined."""
    url = process_database
    crash = tmp_path / "crash"
    run_id = create_run(url, [f"P{i}" for i in range(150)])
    worker = start_worker(
        url,
        tmp_path / "worker.log",
        RECOVERY_POLICY="resume",
        RECOVERY_MAX_ATTEMPTS="3",
        QUALIFIER_SCORER="tests.defect_scorers.crash",
        QUALIFIER_SCORING_DELAY_MS="20",
        DEFECT_CRASH_FILE=str(crash),
    )

    def deaths() -> int:
        return len([e for e in events(url, run_id) if e[1] == "crashed"])

    try:
        for death in (1, 2, 3):
            done = run_state(url, run_id)[1]
            wait_until(lambda d=done: run_state(url, run_id)[1] >= d + 3, "progress", worker)
            crash.touch()
            wait_until(lambda d=death: deaths() == d, f"death {death}", worker)
        wait_until(lambda: run_state(url, run_id)[0] == "FAILED", "the guard", worker)
    finally:
        worker.stop()
    [(reason,)] = sql(
        url, "SELECT failure_reason FROM recovery_qualificationrun WHERE id = %s", (run_id,)
    )
    assert reason.startswith("Gave up after the worker died 3 times on this run"), reason
    assert sql(
        url,
        "SELECT COUNT(*) FROM recovery_recoveryevent WHERE quarantined_prospect IS NOT NULL",
    ) == [(0,)]


#: Each caller says it is ready (a file) and waits for the go file, so both call continue_run
#: at the same moment however long each took to start.
CONTINUE = """
import time
from pathlib import Path
from recovery.models import QualificationRun
from qualifier.runs import RetryNotAllowed, continue_run
run = QualificationRun.objects.get(pk={run_id})
Path({ready!r}).touch()
deadline = time.monotonic() + 60
while not Path({go!r}).exists() and time.monotonic() < deadline:
    time.sleep(0.001)
try:
    continue_run(run, user=None)
    print("OUTCOME continued")
except RetryNotAllowed as exc:
    print("OUTCOME refused:", exc)
"""


def test_two_processes_continuing_one_failed_run_at_once_give_one_execution(
    process_database, tmp_path
):
    url = process_database
    run_id = create_run(url, [f"P{i}" for i in range(20)])
    shell(
        url,
        "from recovery.models import QualificationRun\n"
        "from django_tasks_db.models import DBTaskResult\n"
        f"QualificationRun.objects.filter(pk={run_id}).update(status='FAILED', "
        "failure_reason='worker died')\n"
        "DBTaskResult.objects.all().delete()\n",
    )
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{i}" for i in (1, 2)]
    env = base_env(url, RECOVERY_ON_STARTUP="false")
    callers = [
        Process(
            [
                PYTHON,
                "manage.py",
                "shell",
                "-c",
                CONTINUE.format(run_id=run_id, ready=str(ready_file), go=str(go)),
            ],
            env,
            tmp_path / f"caller-{i}.log",
        )
        for i, ready_file in enumerate(ready, 1)
    ]
    deadline = time.monotonic() + 60
    while not all(path.exists() for path in ready):
        assert all(c.popen.poll() is None for c in callers), [c.output for c in callers]
        assert time.monotonic() < deadline, "the callers did not get ready in time"
        time.sleep(0.02)
    go.touch()
    outputs = []
    for caller in callers:
        caller.popen.wait(60)
        outputs.append(caller.stop())
    outcomes = sorted(line for out in outputs for line in out.splitlines() if "OUTCOME" in line)
    assert outcomes == [
        "OUTCOME continued",
        f"OUTCOME refused: Run {run_id} is already pending: it was continued and will finish "
        "the prospects left; it is not started twice.",
    ], outputs
    assert sql(url, "SELECT COUNT(*) FROM django_tasks_database_dbtaskresult") == [(1,)]
    assert sql(url, "SELECT COUNT(*) FROM recovery_recoveryevent WHERE run_id = %s", (run_id,)) == [
        (1,)
    ]
    worker = start_worker(url, tmp_path / "worker.log", QUALIFIER_SCORING_DELAY_MS="0")
    try:
        wait_until(lambda: run_state(url, run_id)[0] == "COMPLETED", "completion", worker)
        # A second execution, if there were one, would have a task of its own: wait until the
        # worker has finished every task (none waiting or running) rather than a fixed time.
        wait_until(
            lambda: (
                sql(
                    url,
                    "SELECT COUNT(*) FROM django_tasks_database_dbtaskresult "
                    "WHERE status IN ('READY', 'RUNNING')",
                )
                == [(0,)]
            ),
            "the queue to drain",
            worker,
        )
        output = worker.stop()
    finally:
        worker.stop()
    assert output.count(f"Run {run_id} started by") == 1
    assert run_state(url, run_id) == ("COMPLETED", 20, 20)
