"""Recovery at server start, proven with real processes: runserver (with and without the
autoreloader), gunicorn (with and without --preload), db_worker, and the commands that must
never recover. Each test seeds stuck runs in a fresh database, starts the process, and reads
the RecoveryEvent rows and the log it wrote."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from pathlib import Path

import pytest

from tests.processes import (
    PYTHON,
    Process,
    _pg_admin,
    base_env,
    bin_path,
    free_port,
    manage,
    on_postgres,
    wait_for_http,
)

pytestmark = pytest.mark.slow

#: A page that answers 200 without touching the database (no session cookie is sent).
LOGIN = "/admin/login/"
CHECKING = "[Startup] Checking for stuck qualification runs..."
DB_INIT_WARNING = "Accessing the database during app initialization"
#: Every startup sweep ends with exactly one of these lines.
FINISHED = re.compile(r"^\[Startup\] (?!Checking)(.*)$", re.MULTILINE)
SKIPPED = re.compile(r"^\[Startup\] Recovery skipped: (.*)$", re.MULTILINE)

# --- the database the child processes use -----------------------------------------------------


def execute(url: str, sql: str, params: Sequence[object] = ()) -> list[tuple]:
    """Runs one statement on a child's database (SQL written with %s placeholders)."""
    if url.startswith("sqlite:///"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn, conn:
            return conn.execute(sql.replace("%s", "?"), params).fetchall()
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


def seed_stuck_runs(url: str, count: int = 1) -> list[int]:
    """Runs at 5/10 with no sign of life for 12 minutes."""
    ago = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=12)
    # Django keeps SQLite datetimes as naive UTC text.
    when = ago if not url.startswith("sqlite:///") else f"{ago:%Y-%m-%d %H:%M:%S.%f}"
    return [
        execute(
            url,
            "INSERT INTO recovery_qualificationrun (status, total, completed, criteria,"
            " created_at, started_at, heartbeat_at, failure_reason, attempts, deaths,"
            " worked_seconds, task_id)"
            " VALUES ('PROCESSING', 10, 5, '{}', %s, %s, %s, '', 1, 0, 0, '')"
            " RETURNING id",
            [when, when, when],
        )[0][0]
        for _ in range(count)
    ]


def events(url: str) -> list[tuple[int, str, int]]:
    """(run id, source, pid) of every recovery event."""
    return execute(url, "SELECT run_id, source, pid FROM recovery_recoveryevent ORDER BY run_id")


def statuses(url: str) -> dict[int, str]:
    return dict(execute(url, "SELECT id, status FROM recovery_qualificationrun"))


@contextmanager
def table_lock(url: str) -> Iterator[None]:
    """Holds an exclusive lock on the runs table (PostgreSQL): a sweep's first read waits."""
    import psycopg

    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE recovery_qualificationrun IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()


@pytest.fixture
def empty_database(tmp_path) -> Iterator[str]:
    """A database on the current backend with no tables at all."""
    if not on_postgres():
        yield f"sqlite:///{tmp_path / 'empty.sqlite3'}"
        return
    name = f"qualifier_startup_empty_{uuid.uuid4().hex[:10]}"
    _pg_admin(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_handles(pid: int, url: str) -> list[str]:
    """The open files of a process that are this database: the SQLite file (and its -wal,
    -shm), or TCP connections to PostgreSQL's port."""
    links = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(FileNotFoundError):
            links.append(os.readlink(fd))
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///")
        return [link for link in links if link.startswith(path)]
    sockets = {link[len("socket:[") : -1] for link in links if link.startswith("socket:[")}
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if remote_port == 5432 and fields[9] in sockets:
                found.append(f"socket:[{fields[9]}] -> :5432")
    return found


# --- processes ----------------------------------------------------------------------------------


@contextmanager
def running(args: Sequence[str], url: str, log: Path, **env: str) -> Iterator[Process]:
    process = Process(args, base_env(url, **env), log)
    try:
        yield process
    finally:
        process.stop()


def runserver(port: int, *extra: str, python_options: Sequence[str] = ()) -> list[str]:
    return [PYTHON, *python_options, "manage.py", "runserver", f"127.0.0.1:{port}", *extra]


#: The config module the docs recommend (docs/howto/deploy.md): gunicorn's own hooks start recovery.
GUNICORN_CONFIG = ("-c", "python:qualifier.gunicorn_conf")


def gunicorn(port: int, *extra: str, workers: int = 3) -> list[str]:
    return [
        bin_path("gunicorn"),
        "qualifier.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--no-control-socket",
        "--graceful-timeout",
        "5",
        *extra,
    ]


def db_worker(*extra: str) -> list[str]:
    return [PYTHON, "manage.py", "db_worker", "--no-startup-delay", "--interval", "0.5", *extra]


def wait_for_sweeps(process: Process, count: int = 1, timeout: float = 30) -> list[str]:
    """Waits until `count` startup sweeps have ended; returns their last lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        finished = FINISHED.findall(process.output)
        if len(finished) >= count:
            return finished
        if process.popen.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"{count} startup sweep(s) did not end in {timeout}s:\n{process.output}")


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def gunicorn_worker_pids(output: str) -> set[int]:
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", output)}


def assert_original_log_lines(output: str, run_id: int) -> None:
    expected = [
        CHECKING,
        "[Recovery] Found 1 active run(s) in database:",
        f"  - {run_id}: PROCESSING, 5/10, age: 12min, last heartbeat 12min ago",
        "[Recovery] Found 1 stuck runs (worker gone, exited or silent for 8+ s, no progress "
        "for 5+ minutes, or queued without a live task)",
        "[Recovery] Marked 1 runs as FAILED",
        f"  - Run {run_id}: 5/10 completed (status: PROCESSING → FAILED; worker gone)",
        "[Startup] Recovered 1 stuck runs",
    ]
    # The server's own output shares the log and may come between these lines.
    recovery_lines = [
        line for line in output.splitlines() if line.startswith(("[Startup]", "[Recovery]", "  - "))
    ]
    assert recovery_lines == expected


# --- where it runs -------------------------------------------------------------------------------


def test_runserver_with_autoreload_recovers_once_in_the_serving_child_not_the_watcher(
    process_database, tmp_path
):
    run_ids = seed_stuck_runs(process_database, 2)
    port = free_port()
    with running(runserver(port), process_database, tmp_path / "runserver.log") as server:
        assert wait_for_http(f"http://127.0.0.1:{port}{LOGIN}", process=server) == 200
        assert wait_for_sweeps(server) == ["Recovered 2 stuck runs"]
        recovered = events(process_database)
        (child_pid,) = {pid for _, _, pid in recovered}
        assert child_pid != server.popen.pid
        assert parent_pid(child_pid) == server.popen.pid  # the autoreloader's child
        output = server.output
    assert [(run_id, source) for run_id, source, _ in recovered] == [
        (run_id, "startup") for run_id in run_ids
    ]
    assert output.count(CHECKING) == 1


def test_runserver_noreload_recovers_without_database_access_during_app_initialisation(
    process_database, tmp_path
):
    (run_id,) = seed_stuck_runs(process_database)
    port = free_port()
    args = runserver(port, "--noreload", python_options=["-W", "error::RuntimeWarning"])
    with running(args, process_database, tmp_path / "runserver.log") as server:
        assert wait_for_http(f"http://127.0.0.1:{port}{LOGIN}", process=server) == 200
        assert wait_for_sweeps(server) == ["Recovered 1 stuck runs"]
        output = server.output
    assert events(process_database) == [(run_id, "startup", server.popen.pid)]
    assert statuses(process_database) == {run_id: "FAILED"}
    assert DB_INIT_WARNING not in output
    assert_original_log_lines(output, run_id)


@pytest.mark.parametrize(
    "config", [[], [*GUNICORN_CONFIG]], ids=["by-itself", "gunicorn-server-hooks"]
)
@pytest.mark.parametrize("preload", [False, True], ids=["workers-load-the-app", "preload"])
def test_gunicorn_workers_recover_each_stuck_run_exactly_once_and_the_master_holds_no_connection(
    process_database, tmp_path, preload, config
):
    run_ids = seed_stuck_runs(process_database, 3)
    port = free_port()
    args = gunicorn(port, *(["--preload"] if preload else []), *config, workers=3)
    with running(
        args, process_database, tmp_path / "gunicorn.log", PYTHONWARNINGS="error::RuntimeWarning"
    ) as server:
        assert wait_for_http(f"http://127.0.0.1:{port}{LOGIN}", process=server) == 200
        finished = wait_for_sweeps(server, count=3)
        master_handles = database_handles(server.popen.pid, process_database)
        output = server.output
    assert finished.count("Recovered 3 stuck runs") == 1
    recovered = events(process_database)
    assert [(run_id, source) for run_id, source, _ in recovered] == [
        (run_id, "startup") for run_id in run_ids
    ]
    workers = gunicorn_worker_pids(output)
    assert len(workers) == 3
    assert {pid for _, _, pid in recovered} <= workers
    assert output.count(CHECKING) == 3  # one per worker, none in the master
    assert master_handles == []
    assert DB_INIT_WARNING not in output


def test_database_handles_sees_an_open_connection(process_database):
    """The check that the gunicorn master holds no connection can fail. This test process may
    hold connections of its own to PostgreSQL's port already (its test database, opened by
    whichever tests ran before it in this xdist worker): the new one is what must be seen."""
    before = database_handles(os.getpid(), process_database)
    if on_postgres():
        import psycopg

        with psycopg.connect(process_database):
            assert len(database_handles(os.getpid(), process_database)) == len(before) + 1
    else:
        path = process_database.removeprefix("sqlite:///")
        with closing(sqlite3.connect(path)):
            assert len(database_handles(os.getpid(), process_database)) == len(before) + 1
    assert database_handles(os.getpid(), process_database) == before


@pytest.mark.parametrize(
    ("extra", "debug", "reloads"),
    [((), "true", True), (("--no-reload",), "false", False)],
    ids=["autoreload-under-debug", "no-reload"],
)
def test_db_worker_recovers_once_in_the_process_that_runs_tasks(
    process_database, tmp_path, extra, debug, reloads
):
    (run_id,) = seed_stuck_runs(process_database)
    with running(
        db_worker(*extra), process_database, tmp_path / "worker.log", DEBUG=debug
    ) as worker:
        assert wait_for_sweeps(worker) == ["Recovered 1 stuck runs"]
        ((_, source, pid),) = events(process_database)
        if reloads:
            assert pid != worker.popen.pid
            assert parent_pid(pid) == worker.popen.pid
        else:
            assert pid == worker.popen.pid
        output = worker.output
    assert (source, output.count(CHECKING)) == ("startup", 1)
    assert statuses(process_database) == {run_id: "FAILED"}


def test_db_worker_batch_that_exits_at_once_still_finishes_its_recovery(process_database):
    """Also shows that a command which did start a sweep could not exit before it ends, so the
    commands below that leave the runs alone really never recovered."""
    (run_id,) = seed_stuck_runs(process_database)
    result = manage(
        ["db_worker", "--batch", "--no-startup-delay"], process_database, timeout=60, DEBUG="true"
    )
    assert result.returncode == 0, result.stderr
    assert "[Startup] Recovered 1 stuck runs" in result.stderr
    assert [(r, s) for r, s, _ in events(process_database)] == [(run_id, "startup")]


# --- where it never runs ---------------------------------------------------------------------


OTHER_COMMANDS = {
    "migrate": ["migrate", "--noinput"],
    "makemigrations": ["makemigrations", "--check", "--dry-run"],
    "check": ["check"],
    "shell": ["shell", "-c", "print('hello')"],
    "showmigrations": ["showmigrations"],
    "collectstatic": ["collectstatic", "--noinput", "--dry-run"],  # the checkout is shared
    "createsuperuser": ["createsuperuser", "--noinput"],
}


def test_other_management_commands_never_recover(process_database, tmp_path):
    """All at once against the same stuck runs; an event's pid would name the culprit."""
    run_ids = seed_stuck_runs(process_database, 2)
    env = base_env(
        process_database,
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
        DJANGO_SUPERUSER_PASSWORD="a-long-test-password-1",
    )
    processes = {
        name: Process([PYTHON, "manage.py", *args], env, tmp_path / f"{name}.log")
        for name, args in OTHER_COMMANDS.items()
    }
    try:
        codes = {name: process.popen.wait(60) for name, process in processes.items()}
    finally:
        outputs = {name: process.stop() for name, process in processes.items()}
    by_pid = {process.popen.pid: name for name, process in processes.items()}
    for name, code in codes.items():
        if name != "makemigrations":  # its exit code reports pending model changes
            assert code == 0, f"{name}:\n{outputs[name]}"
        assert "[Startup]" not in outputs[name], f"{name}:\n{outputs[name]}"
    assert [(run_id, by_pid.get(pid, pid)) for run_id, _, pid in events(process_database)] == []
    assert statuses(process_database) == dict.fromkeys(run_ids, "PROCESSING")


def test_recover_stuck_runs_command_recovers_with_source_command_never_startup(
    process_database,
):
    run_ids = seed_stuck_runs(process_database, 2)
    result = manage(["recover_stuck_runs"], process_database)
    assert result.returncode == 0, result.stderr
    assert "[Recovery] Marked 2 runs as FAILED" in result.stdout
    assert "[Startup]" not in result.stdout + result.stderr
    assert [(r, s) for r, s, _ in events(process_database)] == [
        (run_id, "command") for run_id in run_ids
    ]


def test_recovery_on_startup_false_turns_it_off_for_servers_and_workers(process_database, tmp_path):
    # Periodic sweeps are the other, independent switch (every 2 s by default): off here, so
    # that only the startup sweep could have touched the runs.
    off = {"RECOVERY_ON_STARTUP": "false", "RECOVERY_SWEEP_INTERVAL_SECONDS": "0"}
    run_ids = seed_stuck_runs(process_database, 2)
    port = free_port()
    args = runserver(port, "--noreload")
    with running(args, process_database, tmp_path / "runserver.log", **off) as server:
        assert wait_for_http(f"http://127.0.0.1:{port}{LOGIN}", process=server) == 200
        server.kill(signal.SIGINT)  # a clean exit: a sweep in progress would be waited for
        assert server.popen.wait(15) == 0
        output = server.output
    worker = manage(
        ["db_worker", "--batch", "--no-startup-delay"],
        process_database,
        DEBUG="true",
        **off,
    )
    assert worker.returncode == 0, worker.stderr
    assert "[Startup]" not in output + worker.stdout + worker.stderr
    assert events(process_database) == []
    assert statuses(process_database) == dict.fromkeys(run_ids, "PROCESSING")


# --- it never blocks or breaks startup ---------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("server_kind", ["runserver", "gunicorn"])
def test_server_answers_while_its_recovery_waits_for_a_locked_table(
    process_database, tmp_path, server_kind
):
    """PostgreSQL only: on SQLite the write lock that would hold the sweep also holds Django's
    own startup checks (the JSONField probe opens a write transaction), so the server could
    not start either. test_startup.py shows the hook itself returns at once on both."""
    (run_id,) = seed_stuck_runs(process_database)
    port = free_port()
    args = (
        runserver(port, "--noreload") if server_kind == "runserver" else gunicorn(port, workers=1)
    )
    with running(args, process_database, tmp_path / "server.log") as server:
        with table_lock(process_database):
            assert wait_for_http(f"http://127.0.0.1:{port}{LOGIN}", process=server) == 200
            assert server.wait_for_output(CHECKING)
            assert FINISHED.findall(server.output) == []  # still waiting for the lock
        assert wait_for_sweeps(server) == ["Recovered 1 stuck runs"]
    assert [(r, s) for r, s, _ in events(process_database)] == [(run_id, "startup")]


def test_database_that_is_down_is_one_warning_line_and_gunicorn_still_serves(tmp_path):
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/qualifier"
    port = free_port()
    with running(gunicorn(port, workers=1), closed, tmp_path / "gunicorn.log") as server:
        assert wait_for_http(f"http://127.0.0.1:{port}{LOGIN}", process=server) == 200
        wait_for_sweeps(server)
        output = server.output
    (reason,) = SKIPPED.findall(output)
    assert reason.startswith("the database is unavailable [connection failed:")
    assert "Connection refused" in reason
    assert FINISHED.findall(output) == [f"Recovery skipped: {reason}"]
    assert "Traceback" not in output


@pytest.mark.parametrize("server_kind", ["runserver", "gunicorn"])
def test_database_that_is_not_migrated_is_one_warning_line_and_the_server_still_serves(
    empty_database, tmp_path, server_kind
):
    port = free_port()
    args = (
        runserver(port, "--noreload") if server_kind == "runserver" else gunicorn(port, workers=1)
    )
    with running(args, empty_database, tmp_path / "server.log") as server:
        assert wait_for_http(f"http://127.0.0.1:{port}{LOGIN}", process=server) == 200
        wait_for_sweeps(server)
        output = server.output
    (reason,) = SKIPPED.findall(output)
    assert reason.startswith("the database is not migrated yet (run: python manage.py migrate)")
    assert len(FINISHED.findall(output)) == 1
    assert "Traceback" not in output


# --- bad settings stop everything and touch nothing -------------------------------------------


def _refusals(url: str, tmp_path: Path, env: dict[str, str]) -> dict[str, tuple[int, str]]:
    """Starts runserver --noreload, gunicorn and recover_stuck_runs side by side; returns each
    one's exit code and output once it has exited."""
    commands = {
        "runserver": runserver(free_port(), "--noreload"),
        "gunicorn": gunicorn(free_port(), workers=1),
        "command": [PYTHON, "manage.py", "recover_stuck_runs"],
    }
    processes = {
        name: Process(args, base_env(url, **env), tmp_path / f"{name}.log")
        for name, args in commands.items()
    }
    results = {}
    try:
        for name, process in processes.items():
            code = process.popen.wait(30)
            results[name] = (code, process.output)
    finally:
        for process in processes.values():
            process.stop()
    return results


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"STUCK_RUN_TIMEOUT_MINUTES": "abc"},
            "Error: Setting STUCK_RUN_TIMEOUT_MINUTES is invalid: 'abc' is not a positive integer",
        ),
        (
            {"STUCK_RUN_TIMEOUT_MINUTES": "0"},
            "Error: Setting STUCK_RUN_TIMEOUT_MINUTES is invalid: '0' is not a positive integer",
        ),
        (
            {"STUCK_RUN_TIMEOUT_MINUTES": "-3"},
            "Error: Setting STUCK_RUN_TIMEOUT_MINUTES is invalid: '-3' is not a positive integer",
        ),
        (
            {"RECOVERY_ON_STARTUP": "maybe"},
            "Error: Setting RECOVERY_ON_STARTUP is invalid: 'maybe' is not a boolean",
        ),
        (
            {"STUCK_RUN_TIMEOUT_MINUTES": "1", "RECOVERY_HEARTBEAT_SECONDS": "40"},
            "(recovery.E004) RECOVERY_HEARTBEAT_SECONDS (40) must be at most half",
        ),
    ],
    ids=["timeout-abc", "timeout-0", "timeout-minus-3", "on-startup-maybe", "heartbeat-too-slow"],
)
def test_bad_recovery_settings_stop_servers_and_commands_and_touch_nothing(
    process_database, tmp_path, env, message
):
    run_ids = seed_stuck_runs(process_database, 2)
    results = _refusals(process_database, tmp_path, env)
    for name, (code, output) in results.items():
        assert code != 0, f"{name} started:\n{output}"
        assert message in output, f"{name}:\n{output}"
    assert events(process_database) == []
    assert statuses(process_database) == dict.fromkeys(run_ids, "PROCESSING")


def test_bad_recovery_setting_keeps_runserver_with_autoreload_from_serving(
    process_database, tmp_path
):
    """Under the autoreloader runserver waits for a fix of what a system check refuses (here
    two settings that do not fit together) instead of exiting; it serves nothing and touches
    nothing meanwhile. (A value the environment cannot be read as stops it at once, above.)"""
    run_ids = seed_stuck_runs(process_database, 1)
    port = free_port()
    slow_heartbeat = {"STUCK_RUN_TIMEOUT_MINUTES": "1", "RECOVERY_HEARTBEAT_SECONDS": "40"}
    with running(
        runserver(port), process_database, tmp_path / "rs.log", **slow_heartbeat
    ) as server:
        assert server.wait_for_output("(recovery.E004) RECOVERY_HEARTBEAT_SECONDS (40)")
        assert server.wait_for_output("System check identified")
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), timeout=2),
        ):
            pass
    assert events(process_database) == []
    assert statuses(process_database) == dict.fromkeys(run_ids, "PROCESSING")


def test_debug_off_without_secret_key_stops_servers_and_commands_with_a_clear_message(
    process_database, tmp_path
):
    run_ids = seed_stuck_runs(process_database, 1)
    results = _refusals(process_database, tmp_path, {"DEBUG": "false", "SECRET_KEY": ""})
    for name, (code, output) in results.items():
        assert code != 0, f"{name} started:\n{output}"
        assert "SECRET_KEY is not set and DEBUG is off" in output, f"{name}:\n{output}"
    assert events(process_database) == []
    assert statuses(process_database) == dict.fromkeys(run_ids, "PROCESSING")
