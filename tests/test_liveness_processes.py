"""Liveness with real processes and real signals: a supervised `db_worker` stopped the ways
people stop it (SIGTERM, Ctrl-C, honcho, the autoreloader, a second signal) hands its run back
and the next worker continues it without scoring anything twice; an executor that crashes is
noticed at once; queued runs behind a long run are never failed; clocks that are minutes off
change nothing; a database restart ends no process and fails no run."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.processes import BIN_DIR, PYTHON, Process, base_env, on_postgres
from tests.test_worker_processes import (
    children,
    create_run,
    kill_worker,
    run_state,
    sql,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.slow

#: Fast beats and sweeps, so that what takes the defaults 30-40 s takes a few seconds here.
FAST = {
    "RECOVERY_HEARTBEAT_SECONDS": "1",
    "RECOVERY_WORKER_TIMEOUT_SECONDS": "3",
    "RECOVERY_SWEEP_INTERVAL_SECONDS": "1",
}


def events(url: str, run_id: int) -> list[tuple[str, str, str]]:
    return sql(
        url,
        "SELECT source, cause, to_status FROM recovery_recoveryevent WHERE run_id = %s ORDER BY id",
        (run_id,),
    )


def duplicate_results(url: str, run_id: int) -> int:
    [(rows, distinct)] = sql(
        url,
        "SELECT COUNT(*), COUNT(DISTINCT prospect_id) FROM qualifier_prospectresult"
        " WHERE run_id = %s",
        (run_id,),
    )
    return rows - distinct


def workers_registered(url: str) -> int:
    [(count,)] = sql(url, "SELECT COUNT(*) FROM recovery_worker")
    return count


def task_statuses(url: str) -> list[str]:
    return [
        status
        for (status,) in sql(
            url, "SELECT status FROM django_tasks_database_dbtaskresult ORDER BY enqueued_at"
        )
    ]


def assert_handed_back(url: str, run_id: int, total: int) -> int:
    """PENDING with its results, one `shutdown` event, its old task FAILED and a new one READY,
    and the worker's row gone; returns how many prospects were done."""
    status, completed, results = run_state(url, run_id)
    assert status == "PENDING"
    assert 0 < completed == results < total
    assert events(url, run_id) == [("shutdown", "shutdown", "PENDING")]
    assert task_statuses(url) == ["FAILED", "READY"]
    assert workers_registered(url) == 0
    return completed


def assert_continued_without_rescoring(url: str, run_id: int, total: int, tmp_path: Path) -> None:
    worker = start_worker(url, tmp_path / "next-worker.log", QUALIFIER_SCORING_DELAY_MS="0")
    try:
        wait_until(lambda: run_state(url, run_id)[0] == "COMPLETED", "completion", worker)
    finally:
        worker.stop()
    assert run_state(url, run_id) == ("COMPLETED", total, total)
    assert duplicate_results(url, run_id) == 0


def started(url: str, tmp_path: Path, total: int = 60, **env: str) -> tuple[int, Process]:
    run_id = create_run(url, total)
    worker = start_worker(url, tmp_path / "worker.log", **env)
    wait_until(lambda: run_state(url, run_id)[1] >= 5, "the first batches", worker)
    return run_id, worker


# --- stopping a worker the way people do ---------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stopped_worker_hands_its_run_back_and_the_next_one_continues_it(
    process_database, tmp_path, sig
):
    run_id, worker = started(process_database, tmp_path)
    os.kill(worker.popen.pid, sig)
    assert worker.popen.wait(15) == 0
    output = worker.stop()
    assert "[Worker] Stopping (received" in output
    assert "Back in the queue with" in output
    assert_handed_back(process_database, run_id, 60)
    assert_continued_without_rescoring(process_database, run_id, 60, tmp_path)


def test_under_the_autoreloader_sigterm_to_its_watcher_still_hands_the_run_back(
    process_database, tmp_path
):
    """Django's reloader kills its child when it gets SIGTERM; the executor notices that its
    supervisor is gone and hands the run back itself."""
    run_id = create_run(process_database, 60)
    env = base_env(process_database, DEBUG="true", QUALIFIER_SCORING_DELAY_MS="100", **FAST)
    worker = Process(
        [PYTHON, "manage.py", "db_worker", "--reload", "--no-startup-delay", "--interval", "0.2"],
        env,
        tmp_path / "reloading-worker.log",
    )
    try:
        wait_until(lambda: run_state(process_database, run_id)[1] >= 5, "batches", worker)
        os.kill(worker.popen.pid, signal.SIGTERM)  # the watcher, as a process manager would
        wait_until(
            lambda: run_state(process_database, run_id)[0] == "PENDING", "hand-back", worker, 15
        )
        wait_until(lambda: not children_alive(worker), "every process to end", worker, 15)
    finally:
        output = worker.stop()
    assert "hands its run back itself" in output
    assert_handed_back(process_database, run_id, 60)


def children_alive(worker: Process) -> bool:
    """Whether any process of the worker (reloader, supervisor, executor) is still running."""
    return worker.popen.poll() is None or bool(_descendants(worker.popen.pid))


def _descendants(pid: int) -> list[int]:
    found = children(pid)
    for child in list(found):
        found += _descendants(child)
    return found


def test_ctrl_c_on_honcho_hands_the_run_back(process_database, tmp_path):
    """scripts/start runs the Procfile with honcho; Ctrl-C there is SIGINT to honcho, which
    sends SIGTERM to each process group and SIGKILL five seconds later."""
    procfile = tmp_path / "Procfile"
    procfile.write_text("worker: python manage.py db_worker --no-startup-delay --interval 0.2\n")
    run_id = create_run(process_database, 60)
    env = base_env(
        process_database,
        DEBUG="true",
        QUALIFIER_SCORING_DELAY_MS="100",
        RECOVERY_SHUTDOWN_GRACE_SECONDS="3",
        PATH=f"{BIN_DIR}:{os.environ['PATH']}",
    )
    honcho = Process(
        [str(BIN_DIR / "honcho"), "-f", str(procfile), "-d", ".", "start"],
        env,
        tmp_path / "honcho.log",
    )
    try:
        wait_until(lambda: run_state(process_database, run_id)[1] >= 5, "batches", honcho)
        os.kill(honcho.popen.pid, signal.SIGINT)
        honcho.popen.wait(15)
        wait_until(
            lambda: run_state(process_database, run_id)[0] == "PENDING", "hand-back", honcho, 15
        )
    finally:
        honcho.stop()
    assert_handed_back(process_database, run_id, 60)


def test_a_second_signal_stops_at_once_and_still_hands_the_run_back(process_database, tmp_path):
    """Slow prospects (8 s each) would hold a graceful stop; the second signal does not wait."""
    run_id = create_run(process_database, 10)
    worker = start_worker(
        process_database, tmp_path / "worker.log", QUALIFIER_SCORING_DELAY_MS="8000"
    )
    wait_until(lambda: run_state(process_database, run_id)[1] >= 1, "the first prospect", worker)
    os.kill(worker.popen.pid, signal.SIGTERM)
    time.sleep(1.5)  # past the debounce that takes honcho's SIGINT and SIGTERM as one request
    assert worker.popen.poll() is None, "the first signal waits for the prospect in hand"
    second = time.monotonic()
    os.kill(worker.popen.pid, signal.SIGTERM)
    worker.popen.wait(10)
    stopped_after = time.monotonic() - second
    output = worker.stop()
    assert stopped_after < 3, output
    assert "Received Terminated again: stopping at once" in output
    status, completed, results = run_state(process_database, run_id)
    assert (status, completed == results) == ("PENDING", True)
    assert events(process_database, run_id) == [("shutdown", "shutdown", "PENDING")]
    assert workers_registered(process_database) == 0


def test_a_crashed_executor_is_noticed_at_once_and_its_run_continues(process_database, tmp_path):
    run_id, worker = started(process_database, tmp_path, QUALIFIER_SCORING_DELAY_MS="100")
    try:
        (executor,) = children(worker.popen.pid)
        killed_at = time.monotonic()
        os.kill(executor, signal.SIGKILL)
        wait_until(
            lambda: bool(events(process_database, run_id)), "the hand-back", worker, timeout=10
        )
        noticed = time.monotonic() - killed_at
        wait_until(
            lambda: run_state(process_database, run_id)[0] == "COMPLETED", "completion", worker
        )
    finally:
        output = worker.stop()
    assert noticed < 3, f"the supervisor noticed after {noticed:.1f} s"
    assert "The executor exited unexpectedly (killed by SIGKILL)" in output
    assert events(process_database, run_id) == [("supervisor", "crashed", "PENDING")]
    assert run_state(process_database, run_id) == ("COMPLETED", 60, 60)
    assert duplicate_results(process_database, run_id) == 0


def sweeps_so_far(url: str) -> int:
    [(sweeps,)] = sql(url, "SELECT COALESCE(SUM(sweeps), 0) FROM recovery_sweeptally")
    return sweeps


def last_beat(url: str) -> object:
    [(beat,)] = sql(url, "SELECT last_beat_at FROM recovery_worker")
    return beat


def test_a_scorer_that_holds_the_gil_for_longer_than_the_worker_timeout_is_not_failed(
    process_database, tmp_path
):
    """The beat comes from the supervisor, so a long C call in a scorer cannot stop it. The
    scorer holds the GIL until the test has seen, past the worker timeout, the supervisor beat
    and a sweep finish; a slow or busy machine only makes each of those come later."""
    url = process_database
    holding, release, stall_file = tmp_path / "holding", tmp_path / "release", tmp_path / "stall"
    os.mkfifo(release)
    run_id = create_run(url, 2)
    worker = start_worker(
        url,
        tmp_path / "worker.log",
        QUALIFIER_SCORER="tests.gil_scorer.scorer",
        QUALIFIER_SCORING_DELAY_MS="0",
        GIL_HOLDING_FILE=str(holding),
        GIL_RELEASE_FIFO=str(release),
        GIL_STALL_FILE=str(stall_file),
        **FAST,
    )
    timeout = float(FAST["RECOVERY_WORKER_TIMEOUT_SECONDS"])
    try:
        wait_until(holding.exists, "the scorer to take the GIL", worker)
        held_since = time.monotonic()
        wait_until(lambda: time.monotonic() - held_since > timeout, "the worker timeout", worker)
        beat, sweeps = last_beat(url), sweeps_so_far(url)
        wait_until(lambda: last_beat(url) != beat, "a beat past the timeout", worker)
        wait_until(lambda: sweeps_so_far(url) > sweeps, "a sweep past the timeout", worker)
        assert run_state(url, run_id)[0] == "PROCESSING"
        with open(release, "wb") as fifo:  # the scorer's read() returns: the GIL is let go
            fifo.write(b"x")
        wait_until(lambda: run_state(url, run_id)[0] == "COMPLETED", "completion", worker)
    finally:
        if not stall_file.exists():  # never leave the scorer blocked
            with contextlib.suppress(OSError):
                fd = os.open(release, os.O_WRONLY | os.O_NONBLOCK)
                os.write(fd, b"x")
                os.close(fd)
        worker.stop()
    stalled = float(stall_file.read_text())
    assert stalled > timeout, f"the scorer held the GIL for only {stalled} s"
    assert events(url, run_id) == []


# --- waiting is not dying -----------------------------------------------------------------------


@pytest.mark.slow(seconds=30)
def test_runs_queued_behind_a_long_run_are_never_failed(process_database, tmp_path):
    """One worker, a long run, and runs that wait far longer than the worker timeout."""
    long_run = create_run(process_database, 60)
    queued = [create_run(process_database, 3) for _ in range(3)]
    worker = start_worker(
        process_database, tmp_path / "worker.log", QUALIFIER_SCORING_DELAY_MS="150", **FAST
    )
    try:
        wait_until(
            lambda: all(
                run_state(process_database, run)[0] == "COMPLETED" for run in [long_run, *queued]
            ),
            "every run to complete",
            worker,
            timeout=90,
        )
    finally:
        worker.stop()
    [(recoveries,)] = sql(process_database, "SELECT COUNT(*) FROM recovery_recoveryevent")
    assert recoveries == 0


# --- one clock ---------------------------------------------------------------------------------


SKEWED_CLOCK = Path(__file__).parent / "skewed_clock"


@pytest.mark.postgres
@pytest.mark.parametrize("offset", [-600, 600], ids=["10-minutes-behind", "10-minutes-ahead"])
def test_a_worker_whose_clock_is_off_is_never_failed_and_found_on_time_when_dead(
    process_database, tmp_path, offset
):
    """Every liveness time is the database's: a worker host 10 minutes off changes nothing."""
    if not on_postgres():
        pytest.skip("SQLite's clock is each process's own")
    skewed_env = base_env(
        process_database,
        QUALIFIER_SCORING_DELAY_MS="100",
        RECOVERY_HOSTNAME="skewed-host",  # another host: judged by its beats, not its pid
        SKEWED_CLOCK_SECONDS=str(offset),
        PYTHONPATH=str(SKEWED_CLOCK),
        **FAST,
    )
    sweeper_env = base_env(process_database, RECOVERY_HOSTNAME="sweeping-host", **FAST)
    args = [PYTHON, "manage.py", "db_worker", "--no-reload", "--no-startup-delay"]
    live_run = create_run(process_database, 30)
    skewed = Process([*args, "--interval", "0.2"], skewed_env, tmp_path / "skewed.log")
    sweeper = Process([*args, "--queue-name", "nothing"], sweeper_env, tmp_path / "sweeper.log")
    try:
        assert skewed.wait_for_output("Executor started"), skewed.output
        assert_clock_is_off(skewed_env, offset)
        wait_until(
            lambda: run_state(process_database, live_run)[0] == "COMPLETED", "completion", skewed
        )
        assert events(process_database, live_run) == []

        dead_run = create_run(process_database, 60)
        wait_until(lambda: run_state(process_database, dead_run)[1] >= 5, "batches", skewed)
        kill_worker(skewed)
        killed_at = time.monotonic()
        wait_until(lambda: bool(events(process_database, dead_run)), "recovery", sweeper, 30)
        found_after = time.monotonic() - killed_at
    finally:
        skewed.stop()
        sweeper.stop()
    assert events(process_database, dead_run) == [("sweeper", "worker_silent", "FAILED")]
    # Worker timeout (3 s) plus one sweep interval (1 s), with room for a busy machine.
    assert found_after < 10, f"found {found_after:.1f} s after the kill"


def assert_clock_is_off(env: dict[str, str], offset: int) -> None:
    """The skewed processes really see a wrong time, through the functions Django uses."""
    probe = subprocess.run(
        [PYTHON, "-c", "from django.utils import timezone; print(timezone.now().timestamp())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    skewed_now = float(probe.stdout)
    assert abs(skewed_now - time.time() - offset) < 5, probe.stdout


# --- a database restart ------------------------------------------------------------------------


class Cluster:
    """A PostgreSQL cluster of the test's own, so restarting it disturbs nothing else."""

    def __init__(self, root: Path, port: int) -> None:
        bin_dirs = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        if not bin_dirs or shutil.which("runuser") is None:
            pytest.skip("needs PostgreSQL's server binaries and runuser to start a cluster")
        self.bin = bin_dirs[-1]
        self.root = root
        self.data = root / "data"
        self.port = port
        self.url = f"postgresql://postgres@127.0.0.1:{port}/qualifier"

    def _run(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=60
        )

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.pg_ctl("start", "-w")
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "qualifier")

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            action,
            *extra,
        )

    def stop(self) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "stop",
                "-m",
                "immediate",
            ],
            capture_output=True,
            check=False,
        )


@pytest.mark.slow(seconds=45)
@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_restart_mid_run_ends_no_process_and_fails_no_run(tmp_path, mode):
    from tests.processes import free_port, manage

    if os.geteuid() != 0:
        pytest.skip("starting a cluster of the test's own needs root (runuser postgres)")
    cluster = Cluster(Path("/tmp") / f"qualifier-pg-{os.getpid()}-{mode}", free_port())
    busy = idle = None
    try:
        cluster.start()
        migrated = manage(["migrate", "--noinput"], cluster.url)
        assert migrated.returncode == 0, migrated.stderr
        busy_run = create_run(cluster.url, 80)
        busy = start_worker(cluster.url, tmp_path / "busy.log", **FAST)
        idle = start_worker(
            cluster.url, tmp_path / "idle.log", **FAST
        )  # both take from the queue; the second one idles once the run is taken
        wait_until(lambda: run_state(cluster.url, busy_run)[1] >= 5, "batches", busy)
        cluster.pg_ctl("restart", "-m", mode, "-w")
        queued_run = create_run(cluster.url, 5)
        wait_until(
            lambda: (
                run_state(cluster.url, busy_run)[0] == "COMPLETED"
                and run_state(cluster.url, queued_run)[0] == "COMPLETED"
            ),
            "both runs to complete after the restart",
            busy,
            timeout=90,
        )
        assert busy.popen.poll() is None and idle.popen.poll() is None, "a worker exited"
        outputs = busy.stop() + idle.stop()
        [(failed,)] = sql(
            cluster.url, "SELECT COUNT(*) FROM recovery_qualificationrun WHERE status = 'FAILED'"
        )
        assert failed == 0
        assert duplicate_results(cluster.url, busy_run) == 0
        assert "Database unavailable" in outputs
        assert "Traceback" not in outputs.split("Database unavailable", 1)[0][-2000:]
    finally:
        for worker in (busy, idle):
            if worker is not None:
                worker.stop()  # a failed test leaves no worker behind
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.mark.postgres
def test_a_stop_signal_while_the_database_is_away_still_stops_the_worker(tmp_path):
    """Ctrl-C during an outage: the run cannot be handed back, so the worker waits the grace
    period for the database, then stops all the same; once the database is back, a sweep finds
    the run (its process is gone) and no run stays stuck."""
    from tests.processes import free_port, manage

    if os.geteuid() != 0:
        pytest.skip("starting a cluster of the test's own needs root (runuser postgres)")
    cluster = Cluster(Path("/tmp") / f"qualifier-pg-{os.getpid()}-outage-stop", free_port())
    worker = None
    try:
        cluster.start()
        migrated = manage(["migrate", "--noinput"], cluster.url)
        assert migrated.returncode == 0, migrated.stderr
        run = create_run(cluster.url, 80)
        worker = start_worker(
            cluster.url, tmp_path / "worker.log", RECOVERY_SHUTDOWN_GRACE_SECONDS="2", **FAST
        )
        wait_until(lambda: run_state(cluster.url, run)[1] >= 5, "batches", worker)
        cluster.pg_ctl("stop", "-m", "fast", "-w")
        worker.kill(signal.SIGTERM)
        try:
            worker.popen.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the worker ignored SIGTERM during the outage:\n{worker.output}")
        output = worker.stop()
        assert "Could not hand back the runs of worker" in output
        assert "a sweep will recover them" in output
        cluster.pg_ctl("start", "-w")
        # The worker's process is gone: any sweep on this host recovers its run at once.
        swept = manage(["recover_stuck_runs"], cluster.url)
        assert swept.returncode == 0, swept.stderr
        status, _, _ = run_state(cluster.url, run)
        assert status in ("FAILED", "PENDING"), status
        assert sql(cluster.url, "SELECT COUNT(*) FROM recovery_worker") == [(0,)]
    finally:
        if worker is not None:
            worker.stop()
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)
