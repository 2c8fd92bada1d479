"""Issue 14's defects, shown with real `manage.py db_worker` processes: deaths counted rather
than starts; a worker found dead while it lives carries on (never exit 0); a stall that blocks
only beats recovers no live run; a late batch is refused by fencing, and only outages are
retried; a woken executor does not burn the queue; Ctrl-C under the autoreloader and a stop
during an outage; durations over attempts and results stamped on the database's clock.

Every wait is on an event (a row, a file, a log line, a process's exit) polled against a
deadline; the only durations the tests impose are the stimuli themselves (a freeze or a lock
held for longer than the worker timeout, measured on the database's clock where it can be).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.processes import PYTHON, Process, base_env, manage, on_postgres
from tests.test_worker_processes import children, run_state, sql

pytestmark = pytest.mark.slow

#: Fast beats and sweeps: a worker is dead after 3 s without a beat, sweeps every second.
FAST = {
    "RECOVERY_HEARTBEAT_SECONDS": "1",
    "RECOVERY_WORKER_TIMEOUT_SECONDS": "3",
    "RECOVERY_SWEEP_INTERVAL_SECONDS": "1",
}
WORKER_TIMEOUT = int(FAST["RECOVERY_WORKER_TIMEOUT_SECONDS"])
SCORERS = "tests.defect_scorers"


# --- helpers -----------------------------------------------------------------------------------


def shell(url: str, code: str, **env: str) -> str:
    result = manage(["shell", "-c", code], url, RECOVERY_ON_STARTUP="false", **env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def new_runs(url: str, *runs: list[str], owner: str = "") -> list[int]:
    """Creates runs through `create_run` (each with its task), one list of prospect names each;
    `owner`: the username that owns them (created if needed)."""
    out = shell(
        url,
        "from django.contrib.auth import get_user_model\n"
        "from qualifier.prospects import ProspectData\n"
        "from qualifier.runs import create_run\n"
        f"owner = {owner!r}\n"
        "user = get_user_model().objects.get_or_create(username=owner)[0] if owner else None\n"
        f"for names in {list(runs)!r}:\n"
        "    data = [ProspectData(name=n, company='C', industry='Software', employees=100,\n"
        "            title='VP', position=i + 2) for i, n in enumerate(names)]\n"
        "    print('RUN', create_run(user=user, prospects=data, slice_size=len(data)).pk)\n",
    )
    return [int(line.split()[1]) for line in out.splitlines() if line.startswith("RUN ")]


def new_run(url: str, count: int, owner: str = "") -> int:
    return new_runs(url, [f"P{i}" for i in range(count)], owner=owner)[0]


def events(url: str, run_id: int) -> list[tuple[str, str, str, str]]:
    return sql(
        url,
        "SELECT source, cause, to_status, reason FROM recovery_recoveryevent WHERE run_id = %s "
        "ORDER BY id",
        (run_id,),
    )


def one_result_each(url: str, run_id: int) -> tuple[int, int, int]:
    """(prospects, results, prospects with a result) of a run."""
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


def worker_rows(url: str, pid: int) -> list[tuple[int, int | None]]:
    """(id, executor_pid) of the worker rows registered by process `pid`."""
    return sql(url, "SELECT id, executor_pid FROM recovery_worker WHERE pid = %s", (pid,))


def failure_reason(url: str, run_id: int) -> str:
    [(reason,)] = sql(
        url, "SELECT failure_reason FROM recovery_qualificationrun WHERE id = %s", (run_id,)
    )
    return reason


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        found += descendants(child)
    return found


class Fleet:
    """The workers a test starts; every process of theirs (supervisor, executor, a reloader's
    child) is killed at the end, whatever the test did to them."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.workers: list[Process] = []
        self.pids: set[int] = set()

    def start(self, name: str, *, reload: bool = False, **env: str) -> Process:
        settings = {"QUALIFIER_SCORING_DELAY_MS": "50", **FAST, **env}
        args = [PYTHON, "manage.py", "db_worker", "--no-startup-delay", "--interval", "0.2"]
        args.append("--reload" if reload else "--no-reload")
        if "QUEUE" in settings:
            args += ["--queue-name", settings.pop("QUEUE")]
        worker = Process(
            args,
            base_env(self.url, **settings),
            self.tmp_path / f"{name}.log",
        )
        self.workers.append(worker)
        return worker

    def remember(self, worker: Process) -> list[int]:
        """Every live process of `worker` (noted, so it is killed at the end even once it has
        been re-parented)."""
        pids = [worker.popen.pid, *descendants(worker.popen.pid)]
        self.pids.update(pids)
        return pids

    def outputs(self) -> str:
        return "\n".join(f"--- {w.log_path.name}:\n{w.output[-4000:]}" for w in self.workers)

    def wait(self, check: Callable[[], bool], what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.outputs()}")
            time.sleep(0.1)

    def close(self) -> None:
        for worker in self.workers:
            if worker.popen.poll() is None:
                self.remember(worker)
        for pid in self.pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        for worker in self.workers:
            worker.stop()


@pytest.fixture
def fleet(process_database: str, tmp_path: Path) -> Iterator[Fleet]:
    started = Fleet(process_database, tmp_path)
    try:
        yield started
    finally:
        started.close()


def executor_of(fleet: Fleet, worker: Process) -> int:
    """The pid of `worker`'s executor, once the supervisor has recorded it."""

    def recorded() -> bool:
        rows = worker_rows(fleet.url, worker.popen.pid)
        return bool(rows) and rows[0][1] is not None and alive(rows[0][1])

    fleet.wait(recorded, "the executor's pid in the worker's row")
    [(_, executor)] = worker_rows(fleet.url, worker.popen.pid)
    fleet.pids.add(executor)
    return executor


def in_transaction(url: str) -> bool:
    """Whether some connection holds a transaction open (a write lock on SQLite)."""
    if url.startswith("sqlite:///"):
        try:
            with closing(
                sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0.2, isolation_level=None)
            ) as conn:
                conn.execute("BEGIN EXCLUSIVE")
                conn.execute("ROLLBACK")
        except sqlite3.OperationalError:
            return True
        return False
    [(count,)] = sql(
        url,
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state LIKE 'idle in transaction%%'",
    )
    return count > 0


def freeze(url: str, pids: list[int]) -> None:
    """SIGSTOP to every process of a worker, at a moment when none of them holds a transaction
    open (a frozen transaction would block everyone else, which is another test)."""
    for _ in range(100):
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        if not in_transaction(url):
            return
        thaw(pids)
        time.sleep(0.02)  # let the transaction end before freezing again
    raise AssertionError("could not freeze the worker outside a transaction")


def thaw(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def sweep_until(fleet: Fleet, done: Callable[[], bool], what: str, *extra: str) -> None:
    """Sweeps from processes of their own (the recover_stuck_runs command, with the fast
    timeouts) until `done()`."""
    deadline = time.monotonic() + 60
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out sweeping until {what}\n{fleet.outputs()}")
        swept = manage(["recover_stuck_runs", *extra], fleet.url, **FAST)
        assert swept.returncode == 0, swept.stderr


@contextmanager
def worker_table_locked(url: str) -> Iterator[Any]:
    """PostgreSQL: the worker table locked (ACCESS EXCLUSIVE) by a transaction of the test's
    own until the block ends; yields that connection."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE recovery_worker IN ACCESS EXCLUSIVE MODE")
        try:
            yield conn
        finally:
            conn.rollback()


@contextmanager
def worker_row_locked(url: str, pid: int) -> Iterator[Any]:
    """PostgreSQL: the worker rows of process `pid` locked (SELECT ... FOR UPDATE) by a
    transaction of the test's own until the block ends: that worker's beats wait, and nothing
    else does (reads of the row go on). Yields that connection."""
    import psycopg

    with psycopg.connect(url) as conn:
        locked = conn.execute(
            "SELECT id FROM recovery_worker WHERE pid = %s FOR UPDATE", (pid,)
        ).fetchall()
        assert locked, f"no worker row for pid {pid}"
        try:
            yield conn
        finally:
            conn.rollback()


def held_for(conn: Any) -> float:
    """Seconds the transaction of `conn` (the lock holder) has been open, on the database's
    clock: how long the stall has lasted, whatever the workers do meanwhile."""
    [(seconds,)] = conn.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp() - now())")
    return float(seconds)


def pg_execute(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def needs_postgres() -> None:
    if not on_postgres():
        pytest.skip("needs PostgreSQL: a lock on the worker table, or a server-side trigger")


def crashes(url: str, run_id: int) -> list[str]:
    """The status each executor crash noticed by the supervisor left the run in."""
    return [to for source, _, to, _ in events(url, run_id) if source == "supervisor"]


DIED = re.compile(r"\b(died|deaths?)\b", re.IGNORECASE)


# --- 1. deaths, not starts ---------------------------------------------------------------------


@pytest.mark.slow(seconds=30)
def test_two_clean_hand_backs_and_one_crash_are_one_death_and_the_run_completes(fleet):
    """Two deploys (SIGTERM, each time a new worker) and then one executor crash: the worker
    died once, so the crash-loop guard (3 deaths) hands the run back and it completes."""
    url, total = fleet.url, 150
    env = {"RECOVERY_POLICY": "resume", "RECOVERY_MAX_ATTEMPTS": "3"}
    run_id = new_run(url, total)
    done = 0
    for deploy in (1, 2):
        worker = fleet.start(f"deploy-{deploy}", **env)
        fleet.wait(lambda d=done: run_state(url, run_id)[1] >= d + 5, f"deploy {deploy} progress")
        os.kill(worker.popen.pid, signal.SIGTERM)
        fleet.wait(lambda w=worker: w.popen.poll() is not None, f"deploy {deploy} to stop", 30)
        status, done, _ = run_state(url, run_id)
        assert status == "PENDING", fleet.outputs()
        assert [e[0] for e in events(url, run_id)] == ["shutdown"] * deploy
    worker = fleet.start("crashing", **env)
    fleet.wait(lambda: run_state(url, run_id)[1] >= done + 5, "progress after the deploys")
    os.kill(executor_of(fleet, worker), signal.SIGKILL)
    fleet.wait(lambda: len(events(url, run_id)) == 3, "the crash to be noticed")
    fleet.wait(lambda: run_state(url, run_id)[0] in ("COMPLETED", "FAILED"), "the run to end")
    assert run_state(url, run_id)[0] == "COMPLETED", (
        f"one crash after two clean hand-backs failed the run: {failure_reason(url, run_id)!r}"
    )
    assert [(s, c, to) for s, c, to, _ in events(url, run_id)] == [
        ("shutdown", "shutdown", "PENDING"),
        ("shutdown", "shutdown", "PENDING"),
        ("supervisor", "crashed", "PENDING"),
    ]
    assert one_result_each(url, run_id) == (total, total, total)


@pytest.mark.slow(seconds=30)
def test_a_continued_run_starts_counting_deaths_again_and_names_them_when_it_gives_up(
    fleet, tmp_path
):
    """Three crashes give up (the reason names 3 deaths); the owner's Continue starts the count
    again, so the next crash hands the run back and it completes."""
    url = fleet.url
    crash = tmp_path / "crash"
    env = {
        "RECOVERY_POLICY": "resume",
        "RECOVERY_MAX_ATTEMPTS": "3",
        "QUALIFIER_SCORER": f"{SCORERS}.crash",
        "DEFECT_CRASH_FILE": str(crash),
    }
    run_id = new_run(url, 150)
    fleet.start("worker", **env)
    for death in (1, 2, 3):
        progress = run_state(url, run_id)[1]
        fleet.wait(lambda p=progress: run_state(url, run_id)[1] >= p + 3, f"progress {death}")
        crash.touch()
        fleet.wait(lambda d=death: len(crashes(url, run_id)) == d, f"death {death}")
    assert run_state(url, run_id)[0] == "FAILED"
    reason = failure_reason(url, run_id)
    assert re.search(r"\b3\b", reason) and DIED.search(reason), reason

    shell(
        url,
        "from recovery.models import QualificationRun\n"
        "from qualifier.runs import continue_run\n"
        f"continue_run(QualificationRun.objects.get(pk={run_id}), user=None)\n",
    )
    progress = run_state(url, run_id)[1]
    fleet.wait(lambda: run_state(url, run_id)[1] >= progress + 3, "progress after Continue")
    crash.touch()
    fleet.wait(lambda: len(crashes(url, run_id)) == 4, "the crash after Continue")
    fleet.wait(lambda: run_state(url, run_id)[0] in ("COMPLETED", "FAILED"), "the run to end")
    assert run_state(url, run_id)[0] == "COMPLETED", (
        f"a continued run gave up at its first crash: {failure_reason(url, run_id)!r}"
    )
    assert crashes(url, run_id)[-1] == "PENDING"
    assert one_result_each(url, run_id) == (150, 150, 150)


# --- 2. a worker found dead while it lives -------------------------------------------------------


def test_a_frozen_worker_found_dead_registers_again_and_takes_new_work(fleet):
    """SIGSTOP past the worker timeout while another process sweeps: its run is recovered and
    its row removed. Woken, the worker keeps running (never exit 0), registers again and
    completes the next run (it is the only worker)."""
    url = fleet.url
    run_id = new_run(url, 150)
    worker = fleet.start("frozen")
    fleet.wait(lambda: run_state(url, run_id)[1] >= 5, "progress")
    executor_of(fleet, worker)
    pids = fleet.remember(worker)
    freeze(url, pids)
    try:
        sweep_until(
            fleet,
            lambda: bool(events(url, run_id)) and not worker_rows(url, worker.popen.pid),
            "the run is recovered and the worker's row removed",
        )
    finally:
        thaw(pids)
    fleet.wait(
        lambda: worker.popen.poll() is not None or bool(worker_rows(url, worker.popen.pid)),
        "the woken worker to register again (or exit)",
        30,
    )
    code = worker.popen.poll()
    assert code is None, f"the woken worker exited with status {code}\n{fleet.outputs()}"
    [next_run] = new_runs(url, ["N1", "N2", "N3"])
    fleet.wait(lambda: run_state(url, next_run)[0] == "COMPLETED", "the next run", 60)
    assert worker.popen.poll() is None


@contextmanager
def every_worker_row_locked(url: str) -> Iterator[Any]:
    """PostgreSQL: every row of the worker table locked (FOR UPDATE): beats, and sweeps that
    remove workers, wait; reads go on."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("SELECT id FROM recovery_worker FOR UPDATE")
        try:
            yield conn
        finally:
            conn.rollback()


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["table", "rows"])
def test_a_lock_on_the_worker_table_longer_than_the_timeout_leaves_a_working_fleet(fleet, kind):
    """Two workers; the worker table locked (LOCK TABLE, or every row FOR UPDATE) for well over
    the worker timeout. Afterwards at least one worker lives and queued runs are done: the
    fleet never reaches zero."""
    needs_postgres()
    url = fleet.url
    workers = [fleet.start(f"worker-{i}", QUALIFIER_SCORING_DELAY_MS="0") for i in (1, 2)]
    for worker in workers:
        executor_of(fleet, worker)
    locked = worker_table_locked if kind == "table" else every_worker_row_locked
    with locked(url) as lock:
        # Three worker timeouts (and so, three beats of each worker at least) go by.
        fleet.wait(lambda: held_for(lock) >= 3 * WORKER_TIMEOUT, "three worker timeouts")
    runs = new_runs(url, *[[f"R{r}-{i}" for i in range(5)] for r in range(3)])

    def settled() -> bool:
        gone = all(w.popen.poll() is not None for w in workers)
        return gone or all(run_state(url, r)[0] == "COMPLETED" for r in runs)

    fleet.wait(settled, "the queued runs to complete (or every worker to exit)", 60)
    codes = [w.popen.poll() for w in workers]
    assert None in codes, f"every worker exited (statuses {codes}): the fleet is gone"
    assert [run_state(url, r)[0] for r in runs] == ["COMPLETED"] * 3


# --- 3. a stall that blocks only beats ----------------------------------------------------------


@pytest.mark.postgres
def test_a_run_that_progresses_while_beats_are_blocked_is_not_recovered(fleet):
    """The busy worker's row is locked for longer than the worker timeout (its beats wait; a
    stall in front of the beats only) while its run keeps writing results, and another process
    sweeps: recent progress is a sign of life, whatever the worker's beat says."""
    needs_postgres()
    url, total = fleet.url, 1500
    run_id = new_run(url, total)
    worker = fleet.start("busy", QUALIFIER_SCORING_DELAY_MS="10")
    fleet.start("sweeper", QUEUE="nothing")
    fleet.wait(lambda: run_state(url, run_id)[1] >= 20, "progress")
    with worker_row_locked(url, worker.popen.pid) as lock:
        at_lock = run_state(url, run_id)[1]
        fleet.wait(
            lambda: (
                held_for(lock) >= 2 * WORKER_TIMEOUT + 1
                and (run_state(url, run_id)[1] >= at_lock + 50 or bool(events(url, run_id)))
            ),
            "two worker timeouts of lock while the run progresses",
        )
        at_release = run_state(url, run_id)[1]
    assert at_release < total, "the run finished during the lock: nothing was shown"
    fleet.wait(
        lambda: run_state(url, run_id)[0] in ("COMPLETED", "FAILED") or bool(events(url, run_id)),
        "the run to complete",
        90,
    )
    assert events(url, run_id) == [], f"a progressing run was recovered\n{worker.output[-3000:]}"
    fleet.wait(lambda: run_state(url, run_id)[0] == "COMPLETED", "the run to complete", 90)
    assert one_result_each(url, run_id) == (total, total, total)


# --- 4. fence first; only outages are outages ----------------------------------------------------


def test_a_late_batch_is_refused_by_the_fence_and_the_worker_takes_new_runs(fleet, tmp_path):
    """A scorer call hangs; meanwhile the run is recovered (forced, resume) and another worker
    completes it. Released, the stale worker's batch is refused by fencing (a FencedWrite of
    kind progress), never retried as an outage, and the worker takes the next run."""
    url = fleet.url
    hang, release = tmp_path / "hang", tmp_path / "release"
    run_id = new_run(url, 60)
    stale = fleet.start(
        "stale",
        QUALIFIER_SCORER=f"{SCORERS}.hang",
        DEFECT_HANG_FILE=str(hang),
        DEFECT_RELEASE_FILE=str(release),
    )
    fleet.wait(lambda: run_state(url, run_id)[1] >= 5, "progress")
    hang.touch()
    fleet.wait(lambda: Path(f"{hang}.taken").exists(), "the scorer to hang")
    forced = manage(
        ["recover_stuck_runs", "--run", str(run_id), "--force", "--policy", "resume"], url
    )
    assert forced.returncode == 0, forced.stderr
    assert run_state(url, run_id)[0] == "PENDING"
    other = fleet.start("other", QUALIFIER_SCORING_DELAY_MS="0")
    fleet.wait(lambda: run_state(url, run_id)[0] == "COMPLETED", "the other worker to complete it")
    os.kill(other.popen.pid, signal.SIGTERM)
    fleet.wait(lambda: other.popen.poll() is not None, "the other worker to stop", 30)

    release.touch()
    fleet.wait(
        lambda: bool(
            sql(url, "SELECT kind FROM recovery_fencedwrite WHERE run_id = %s", (run_id,))
        ),
        "the late batch to be refused by the fence",
        30,
    )
    assert ("progress",) in sql(
        url, "SELECT kind FROM recovery_fencedwrite WHERE run_id = %s", (run_id,)
    )
    [next_run] = new_runs(url, ["N1", "N2", "N3"])
    fleet.wait(lambda: run_state(url, next_run)[0] == "COMPLETED", "the stale worker's next run")
    assert "Database unavailable" not in stale.output
    assert one_result_each(url, run_id) == (60, 60, 60)


@pytest.mark.postgres
def test_a_scorer_reason_with_a_nul_byte_is_stored_not_retried_forever(fleet):
    needs_postgres()
    url = fleet.url
    run_id = new_run(url, 10)
    worker = fleet.start("nul", QUALIFIER_SCORER=f"{SCORERS}.nul", QUALIFIER_SCORING_DELAY_MS="0")
    fleet.wait(
        lambda: (
            run_state(url, run_id)[0] in ("COMPLETED", "FAILED")
            or "Database unavailable" in worker.output
        ),
        "the run to end",
        30,
    )
    assert "Database unavailable" not in worker.output, worker.output[-3000:]
    assert run_state(url, run_id) == ("COMPLETED", 10, 10)


def test_a_batch_that_breaks_a_constraint_is_a_bug_not_an_outage(fleet):
    """The (run, prospect) constraint broken while the run is still this worker's: logged once
    with its traceback, the run failed with a reason or handed back, the worker carries on."""
    url = fleet.url
    [run_id] = new_runs(url, ["A", "B", "Clash", "D", "E"])
    worker = fleet.start(
        "clash", QUALIFIER_SCORER=f"{SCORERS}.clash", QUALIFIER_SCORING_DELAY_MS="0"
    )

    def ended() -> bool:
        status = run_state(url, run_id)[0]
        return status in ("FAILED", "COMPLETED") or bool(events(url, run_id))

    fleet.wait(
        lambda: ended() or worker.output.count("Database unavailable") > 0, "the run to end", 30
    )
    assert "Database unavailable" not in worker.output, worker.output[-3000:]
    status = run_state(url, run_id)[0]
    assert (status == "FAILED" and failure_reason(url, run_id)) or events(url, run_id)
    assert worker.wait_for_output("Traceback"), worker.output[-3000:]
    [next_run] = new_runs(url, ["N1", "N2"])
    fleet.wait(lambda: run_state(url, next_run)[0] == "COMPLETED", "the next run", 60)


# --- 5. a woken executor does not burn the queue -------------------------------------------------


def test_runs_queued_while_the_only_worker_was_frozen_and_found_dead_are_all_done(fleet):
    url = fleet.url
    worker = fleet.start("frozen", QUALIFIER_SCORING_DELAY_MS="0")
    executor_of(fleet, worker)
    # A first run done: the executor is in its queue loop, polling for the next task.
    [warm_up] = new_runs(url, ["W1", "W2"])
    fleet.wait(lambda: run_state(url, warm_up)[0] == "COMPLETED", "a first run")
    pids = fleet.remember(worker)
    freeze(url, pids)
    try:
        sweep_until(fleet, lambda: not worker_rows(url, worker.popen.pid), "the row is removed")
        runs = new_runs(url, *[[f"R{r}-{i}" for i in range(3)] for r in range(10)])
    finally:
        thaw(pids)

    def task_failures() -> list[tuple[str]]:
        return sql(
            url,
            "SELECT exception_class_path FROM django_tasks_database_dbtaskresult "
            "WHERE status = 'FAILED'",
        )

    def settled() -> bool:
        states = [run_state(url, r)[0] for r in runs]
        return (
            all(s == "COMPLETED" for s in states)
            or "FAILED" in states
            or bool(task_failures())
            or worker.popen.poll() is not None
        )

    fleet.wait(settled, "the queued runs to be done", 60)
    burnt = [path for (path,) in task_failures() if "WorkerStopping" in path]
    assert burnt == [], f"{len(burnt)} queued tasks failed with WorkerStopping\n{fleet.outputs()}"
    assert "FAILED" not in [run_state(url, r)[0] for r in runs]
    assert worker.popen.poll() is None, f"the worker exited with {worker.popen.poll()}"
    fleet.wait(lambda: all(run_state(url, r)[0] == "COMPLETED" for r in runs), "all runs", 60)


# --- 6. stop requests ----------------------------------------------------------------------------


def test_ctrl_c_to_the_process_group_under_the_autoreloader_hands_the_run_back(fleet):
    """As a terminal does: SIGINT to every process of the foreground group (the reloader's
    watcher and its child, the supervisor), mid-run."""
    url, total = fleet.url, 100
    run_id = new_run(url, total)
    worker = fleet.start("reloading", reload=True, DEBUG="true")
    fleet.wait(lambda: run_state(url, run_id)[1] >= 5, "progress")
    [(_, executor)] = sql(url, "SELECT id, executor_pid FROM recovery_worker")
    pids = [*fleet.remember(worker), executor]
    fleet.pids.add(executor)
    os.killpg(worker.popen.pid, signal.SIGINT)
    fleet.wait(lambda: not any(alive(pid) for pid in pids), "every process to end", 30)
    status, completed, results = run_state(url, run_id)
    assert status == "PENDING", (
        f"Ctrl-C left the run {status} with events {events(url, run_id)}\n{fleet.outputs()}"
    )
    assert [(s, to) for s, _, to, _ in events(url, run_id)] == [("shutdown", "PENDING")]
    assert 0 < completed == results < total


@pytest.mark.postgres
def test_a_stop_signal_while_the_pid_cannot_be_recorded_still_stops_the_worker(fleet):
    """The database is away for exactly the write that records an executor's pid in the
    worker's row, however it is written (each try loses its connection, as in an outage);
    SIGTERM must still stop the worker within the grace period."""
    needs_postgres()
    url = fleet.url
    pg_execute(
        url,
        # A sequence counts the tries: it is not rolled back with the killed transaction.
        "CREATE SEQUENCE defect_pid_writes",
        """
        CREATE FUNCTION defect_drop_connection() RETURNS trigger AS $$
        BEGIN
            PERFORM nextval('defect_pid_writes');
            PERFORM pg_terminate_backend(pg_backend_pid());
            PERFORM pg_sleep(5);
            RETURN NEW;
        END $$ LANGUAGE plpgsql
        """,
        """
        CREATE TRIGGER defect_executor_pid_updated BEFORE UPDATE ON recovery_worker
        FOR EACH ROW WHEN (NEW.executor_pid IS DISTINCT FROM OLD.executor_pid)
        EXECUTE FUNCTION defect_drop_connection()
        """,
        """
        CREATE TRIGGER defect_executor_pid_inserted BEFORE INSERT ON recovery_worker
        FOR EACH ROW WHEN (NEW.executor_pid IS NOT NULL)
        EXECUTE FUNCTION defect_drop_connection()
        """,
    )
    worker = fleet.start(
        "stopped", RECOVERY_SHUTDOWN_GRACE_SECONDS="2", RECOVERY_ON_STARTUP="false"
    )
    fleet.wait(
        lambda: sql(url, "SELECT is_called FROM defect_pid_writes") == [(True,)],
        "a try to record the executor's pid",
    )
    fleet.remember(worker)
    os.kill(worker.popen.pid, signal.SIGTERM)
    fleet.wait(
        lambda: worker.popen.poll() is not None, "the worker to stop after SIGTERM", timeout=20
    )


# --- 8. clocks over attempts ---------------------------------------------------------------------


def api_run(url: str, run_id: int, owner: str) -> dict[str, Any]:
    """The run as GET /api/qualify/runs/<id> shows it to its owner."""
    out = shell(
        url,
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "from django.test import Client\n"
        "client = Client(SERVER_NAME='localhost')\n"
        f"client.force_login(get_user_model().objects.get(username={owner!r}))\n"
        f"response = client.get('/api/qualify/runs/{run_id}')\n"
        "print('JSON', json.dumps(response.json()))\n",
    )
    return json.loads(out.split("JSON ", 1)[1])


def started_at(url: str, run_id: int) -> Any:
    [(value,)] = sql(
        url, "SELECT started_at FROM recovery_qualificationrun WHERE id = %s", (run_id,)
    )
    return value


def seconds_between(url: str, later: str, earlier: str, run_id: int) -> float:
    """`later - earlier` of the run's row, in seconds, computed by the database."""
    if url.startswith("sqlite:///"):
        expression = f"(julianday({later}) - julianday({earlier})) * 86400"
    else:
        expression = f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    [(seconds,)] = sql(
        url, f"SELECT {expression} FROM recovery_qualificationrun WHERE id = %s", (run_id,)
    )
    return float(seconds)


def test_the_duration_of_a_run_sums_its_attempts(fleet):
    """Worked, handed back at a deploy, completed by the next worker: the duration is both
    attempts, not only the last."""
    url = fleet.url
    run_id = new_run(url, 80, owner="owner")
    first = fleet.start("first", QUALIFIER_SCORING_DELAY_MS="100")
    fleet.wait(lambda: run_state(url, run_id)[1] >= 20, "two seconds of work")
    os.kill(first.popen.pid, signal.SIGTERM)
    fleet.wait(lambda: run_state(url, run_id)[0] == "PENDING", "the hand-back", 30)
    fleet.wait(lambda: first.popen.poll() is not None, "the first worker to stop", 30)
    # From its start to its last progress: the least any definition of the attempt counts.
    first_attempt = seconds_between(url, "heartbeat_at", "started_at", run_id)
    assert first_attempt >= 1.5
    fleet.start("second", QUALIFIER_SCORING_DELAY_MS="0")
    fleet.wait(lambda: run_state(url, run_id)[0] == "COMPLETED", "completion")
    last_attempt = seconds_between(url, "completed_at", "started_at", run_id)
    shown = api_run(url, run_id, "owner")["duration_seconds"]
    assert shown >= first_attempt + last_attempt - 0.5, (
        f"duration {shown} s; the attempts took {first_attempt:.1f} s and {last_attempt:.1f} s"
    )


def test_right_after_continue_the_duration_keeps_the_earlier_attempts(fleet):
    url = fleet.url
    run_id = new_run(url, 200, owner="owner")
    fleet.start("worker", QUALIFIER_SCORING_DELAY_MS="100")
    fleet.wait(lambda: run_state(url, run_id)[1] >= 20, "two seconds of work")
    forced = manage(["recover_stuck_runs", "--run", str(run_id), "--force"], url)
    assert forced.returncode == 0, forced.stderr
    assert run_state(url, run_id)[0] == "FAILED"
    worked = api_run(url, run_id, "owner")["duration_seconds"]
    assert worked >= 1.5
    first_start = started_at(url, run_id)
    shell(
        url,
        "from recovery.models import QualificationRun\n"
        "from qualifier.runs import continue_run\n"
        f"continue_run(QualificationRun.objects.get(pk={run_id}), user=None)\n",
    )
    fleet.wait(lambda: started_at(url, run_id) != first_start, "the continued attempt to start")
    answer = api_run(url, run_id, "owner")
    # This attempt so far, to its last progress: the least any definition counts.
    this_attempt = (
        dt.datetime.fromisoformat(answer["heartbeat_at"])
        - dt.datetime.fromisoformat(answer["started_at"])
    ).total_seconds()
    shown = answer["duration_seconds"]
    assert shown >= worked + this_attempt - 0.5, (
        f"right after Continue the duration is {shown} s: the earlier attempt worked {worked} s "
        f"and this one {this_attempt:.1f} s"
    )


def test_results_are_stamped_on_the_database_clock_by_a_worker_an_hour_off(fleet):
    """The worker's Python clock runs an hour ahead (tests/skewed_clock); the database's does
    not (on SQLite too: its 'now' is the C library's, which the skew does not touch)."""
    url = fleet.url
    run_id = new_run(url, 5)
    fleet.start(
        "skewed",
        QUALIFIER_SCORING_DELAY_MS="0",
        SKEWED_CLOCK_SECONDS="3600",
        PYTHONPATH=str(Path(__file__).parent / "skewed_clock"),
    )
    fleet.wait(lambda: run_state(url, run_id)[0] == "COMPLETED", "completion")
    if url.startswith("sqlite:///"):
        seconds = "(julianday('now') - julianday(created_at)) * 86400"
    else:
        seconds = "EXTRACT(EPOCH FROM (now() - created_at))"
    [(latest,)] = sql(
        url,
        f"SELECT MAX(ABS({seconds})) FROM qualifier_prospectresult WHERE run_id = %s",
        (run_id,),
    )
    assert float(latest) < 300, f"results stamped {float(latest):.0f} s away from the database"
