"""Which processes recover at start (`detect_server()` with fake argv), and the hook's guards,
through the startup module's public functions; the real processes are started in
test_startup_processes.py."""

from __future__ import annotations

import logging
import sys
import threading
import time

import pytest
from django.db import OperationalError, ProgrammingError
from django.test import override_settings

from recovery import startup
from recovery.models import QualificationRun, RecoveryEvent, RunStatus
from recovery.startup import Server, StartupRecovery
from recovery.worker import sweeper

VENV = "/srv/app/.venv/bin"


def role(*argv: str) -> str | None:
    server = startup.detect_server(list(argv))
    return server.name if server else None


# --- runserver -----------------------------------------------------------------------------


def test_runserver_under_the_autoreloader_is_told_apart_from_noreload():
    """Its watcher and its serving child have the same arguments: autoreload_started, which
    Django sends in the child only, decides (see the hook's tests below)."""
    autoreloaded = Server("runserver", autoreload=True)
    assert startup.detect_server(["manage.py", "runserver"]) == autoreloaded
    assert startup.detect_server(["manage.py", "runserver", "127.0.0.1:8000"]) == autoreloaded


def test_runserver_noreload_recovers_in_its_only_process():
    noreload = Server("runserver")
    assert startup.detect_server(["manage.py", "runserver", "--noreload"]) == noreload
    assert startup.detect_server(["manage.py", "runserver", "0.0.0.0:80", "--noreload"]) == (
        noreload
    )


def test_runserver_abbreviated_noreload_counts_as_noreload():
    assert startup.detect_server(["manage.py", "runserver", "--norel"]) == Server("runserver")


def test_runserver_through_django_admin_or_python_m_django_recovers():
    assert role(f"{VENV}/django-admin", "runserver", "--noreload") == "runserver"
    assert role("/usr/lib/python3/django/__main__.py", "runserver") == "runserver"


def test_runserver_help_is_not_a_server_and_prints_nothing(capsys):
    assert role("manage.py", "runserver", "--help") is None
    assert role("manage.py", "runserver", "--version", "--noreload") is None
    assert capsys.readouterr() == ("", "")


# --- db_worker -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [(), ("--no-reload",), ("--reload",), ("--batch",), ("--executor-of", "3", "--no-reload")],
)
def test_db_worker_never_sweeps_from_the_hook_its_supervisor_does(args):
    """The supervisor sweeps before it takes work (recovery.worker.supervisor); its executor child,
    which runs the same command, must not sweep at all."""
    assert role("manage.py", "db_worker", *args) is None


# --- servers launched by their own program ---------------------------------------------------


@pytest.mark.parametrize(
    "argv0",
    [
        f"{VENV}/gunicorn",
        "gunicorn",
        "/usr/bin/gunicorn3",
        "/usr/lib/python3.13/site-packages/gunicorn/__main__.py",
    ],
)
def test_gunicorn_is_a_server_however_it_is_launched(argv0):
    assert role(argv0, "qualifier.wsgi", "-w", "3") == "gunicorn"
    assert role(argv0, "--preload", "qualifier.wsgi") == "gunicorn"


@pytest.mark.parametrize("server", ["uvicorn", "daphne", "hypercorn"])
def test_asgi_servers_are_servers(server):
    assert role(f"{VENV}/{server}", "qualifier.asgi:application") == server


def test_a_project_folder_named_like_a_server_does_not_make_commands_servers():
    assert role("/srv/gunicorn/manage.py", "migrate") is None
    assert role("/srv/gunicorn-app/manage.py", "runserver", "--noreload") == "runserver"
    assert role("/srv/uvicorn/manage.py", "runserver") == "runserver"


# --- everything else -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["manage.py", "migrate"],
        ["manage.py", "makemigrations", "--check"],
        ["manage.py", "check"],
        ["manage.py", "shell", "-c", "print(1)"],
        ["manage.py", "showmigrations"],
        ["manage.py", "collectstatic", "--noinput"],
        ["manage.py", "createsuperuser", "--noinput"],
        ["manage.py", "recover_stuck_runs"],
        ["manage.py", "test"],
        ["manage.py"],
        ["-c"],
        [],
        [f"{VENV}/pytest", "tests"],
        [f"{VENV}/celery", "worker"],
    ],
)
def test_other_commands_and_programs_are_not_servers(argv):
    assert startup.detect_server(argv) is None


def test_reads_the_real_argv_by_default(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver", "--noreload"])
    assert startup.detect_server() == Server("runserver")
    monkeypatch.setattr(sys, "argv", ["manage.py", "migrate"])
    assert startup.detect_server() is None


# --- the hook --------------------------------------------------------------------------------


def _recovery_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == startup.THREAD_NAME]


def test_never_scheduled_under_pytest_even_for_a_server_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver", "--noreload"])
    hook = StartupRecovery()
    hook.schedule()
    assert hook.scheduled is False
    assert _recovery_threads() == []


@pytest.fixture
def hook() -> StartupRecovery:
    """A fresh hook, as a process that has scheduled nothing yet has."""
    return StartupRecovery()


@pytest.fixture
def outside_pytest(monkeypatch, hook):
    """The hook as a server process sees it: no pytest, and the thread start and fork hooks
    recorded instead of done."""
    monkeypatch.delitem(sys.modules, "pytest")
    calls: dict[str, list] = {"threads": [], "fork_hooks": []}
    monkeypatch.setattr(hook, "start", lambda role: calls["threads"].append(role))
    monkeypatch.setattr(
        startup.os, "register_at_fork", lambda **hooks: calls["fork_hooks"].append(hooks)
    )
    return calls


def test_scheduled_at_most_once_per_process(monkeypatch, hook, outside_pytest):
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver", "--noreload"])
    hook.schedule()
    hook.schedule()
    assert outside_pytest == {"threads": ["runserver"], "fork_hooks": []}


def test_startup_recovery_off_still_sweeps_periodically(monkeypatch, hook, outside_pytest):
    """RECOVERY_ON_STARTUP and RECOVERY_SWEEP_INTERVAL_SECONDS are independent switches."""
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver", "--noreload"])
    with override_settings(RECOVERY_ON_STARTUP=False):
        hook.schedule()
    assert outside_pytest == {"threads": ["runserver"], "fork_hooks": []}


def test_not_scheduled_when_both_switched_off(monkeypatch, hook, outside_pytest):
    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver", "--noreload"])
    with override_settings(RECOVERY_ON_STARTUP=False, RECOVERY_SWEEP_INTERVAL_SECONDS=0):
        hook.schedule()
    assert outside_pytest == {"threads": [], "fork_hooks": []}


def recovered_yet() -> bool:
    """Polled while the sweep writes: SQLite's shared in-memory test database answers "table
    is locked" instead of waiting, so that counts as not yet."""
    from django.db import OperationalError

    try:
        return RecoveryEvent.objects.exists()
    except OperationalError:
        return False


@pytest.mark.django_db(transaction=True)
def test_with_startup_recovery_off_the_thread_only_sweeps_periodically(make_run, caplog):
    """No startup sweep: the stuck run is recovered by the first periodic sweep, as `sweeper`."""
    run = make_run(created_minutes_ago=30, heartbeat_minutes_ago=30)
    hook = StartupRecovery()
    caplog.set_level(logging.INFO, logger="recovery")
    with override_settings(RECOVERY_ON_STARTUP=False, RECOVERY_SWEEP_INTERVAL_SECONDS=1):
        thread = threading.Thread(target=hook.run, args=("runserver",))
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not recovered_yet() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            hook.stopping.set()
            thread.join(5)
    assert not thread.is_alive()
    assert list(RecoveryEvent.objects.values_list("run_id", "source")) == [(run.pk, "sweeper")]
    assert not any(message.startswith("[Startup]") for message in caplog.messages)


def test_runserver_under_the_autoreloader_recovers_when_autoreload_started_says_it_serves(
    monkeypatch, hook, outside_pytest
):
    from django.utils.autoreload import StatReloader, autoreload_started

    monkeypatch.setattr(sys, "argv", ["manage.py", "runserver"])
    hook.schedule()
    try:
        assert outside_pytest == {"threads": [], "fork_hooks": []}  # the watcher, so far
        autoreload_started.send(sender=StatReloader())  # what Django does in the serving child
        assert outside_pytest == {"threads": ["runserver"], "fork_hooks": []}
    finally:
        autoreload_started.disconnect(hook.on_autoreload_started)


def test_gunicorn_preload_master_never_sweeps_but_closes_connections_before_forking(
    monkeypatch, hook, outside_pytest
):
    from django.db import connections

    monkeypatch.setattr(sys, "argv", ["/srv/.venv/bin/gunicorn", "--preload", "qualifier.wsgi"])
    hook.schedule()
    assert outside_pytest["threads"] == []
    assert outside_pytest["fork_hooks"] == [
        {"before": connections.close_all, "after_in_child": hook.after_gunicorn_fork}
    ]


def test_gunicorn_with_its_server_hooks_is_left_to_them(monkeypatch, hook, outside_pytest):
    """With `-c python:qualifier.gunicorn_conf`, gunicorn's pre_fork and post_worker_init do
    what the stack would otherwise be searched for (test_startup_processes.py runs it)."""
    hook.hooked_servers.add("gunicorn")
    for argv in (["gunicorn", "--preload", "qualifier.wsgi"], ["gunicorn", "qualifier.wsgi"]):
        monkeypatch.setattr(sys, "argv", argv)
        hook.scheduled = False
        _gunicorn_function("spawn_worker")(hook.schedule)
        hook.schedule()
    assert outside_pytest == {"threads": [], "fork_hooks": []}


def test_gunicorn_preload_master_still_closes_connections_when_switched_off(
    monkeypatch, hook, outside_pytest
):
    from django.db import connections

    monkeypatch.setattr(sys, "argv", ["/srv/.venv/bin/gunicorn", "--preload", "qualifier.wsgi"])
    with override_settings(RECOVERY_ON_STARTUP=False, RECOVERY_SWEEP_INTERVAL_SECONDS=0):
        hook.schedule()
    assert outside_pytest == {"threads": [], "fork_hooks": [{"before": connections.close_all}]}


def _gunicorn_function(name: str):
    """A function that looks to a stack inspection like gunicorn's own `name`."""
    namespace: dict = {}
    source = f"def {name}(call):\n    return call()\n"
    exec(compile(source, "/srv/.venv/lib/gunicorn/arbiter.py", "exec"), namespace)
    return namespace[name]


def test_gunicorn_worker_loading_the_app_itself_sweeps_in_that_worker(
    monkeypatch, hook, outside_pytest
):
    monkeypatch.setattr(sys, "argv", ["/srv/.venv/bin/gunicorn", "qualifier.wsgi"])
    _gunicorn_function("spawn_worker")(hook.schedule)
    assert outside_pytest == {"threads": ["gunicorn"], "fork_hooks": []}


def test_only_forks_for_http_workers_sweep_after_a_preload(hook, outside_pytest):
    hook.after_gunicorn_fork()  # a process some worker forked itself
    _gunicorn_function("reexec")(hook.after_gunicorn_fork)  # USR2 re-exec
    _gunicorn_function("spawn_dirty_arbiter")(hook.after_gunicorn_fork)
    assert outside_pytest["threads"] == []
    _gunicorn_function("spawn_worker")(hook.after_gunicorn_fork)
    assert outside_pytest["threads"] == ["gunicorn"]


@pytest.mark.parametrize("enabled", [True, False])
def test_recovery_on_startup_is_read_as_set(enabled):
    """settings.py reads the environment's text; a bad value set in Python is recovery.E002."""
    with override_settings(RECOVERY_ON_STARTUP=enabled):
        assert startup.recovery_enabled() is enabled


# --- the sweep itself, run in this process ---------------------------------------------------


def test_startup_recovery_fails_stuck_runs_with_source_startup_and_logs_like_the_original(
    make_run, caplog
):
    stuck = make_run(total=10, completed=5, created_minutes_ago=12, heartbeat_minutes_ago=12)
    alive = make_run(total=3, completed=1, created_minutes_ago=12, heartbeat_minutes_ago=1)
    with caplog.at_level(logging.INFO, logger="recovery"):
        startup.run_startup_recovery("runserver")

    stuck.refresh_from_db()
    alive.refresh_from_db()
    assert (stuck.status, alive.status) == (RunStatus.FAILED, RunStatus.PROCESSING)
    assert list(RecoveryEvent.objects.values_list("run_id", "source")) == [(stuck.pk, "startup")]
    assert caplog.messages[0] == "[Startup] Checking for stuck qualification runs..."
    assert caplog.messages[1] == "[Recovery] Found 2 active run(s) in database:"
    assert f"  - {stuck.pk}: PROCESSING, 5/10, age: 12min, last heartbeat 12min ago" in (
        caplog.messages
    )
    assert caplog.messages[-4:] == [
        "[Recovery] Found 1 stuck runs (worker gone, exited or silent for 8+ s, no progress "
        "for 5+ minutes, or queued without a live task)",
        "[Recovery] Marked 1 runs as FAILED",
        f"  - Run {stuck.pk}: 5/10 completed (status: PROCESSING → FAILED; no progress)",
        "[Startup] Recovered 1 stuck runs",
    ]


@pytest.mark.parametrize(
    "settings_",
    [
        {"STUCK_RUN_TIMEOUT_MINUTES": "abc"},
        {"STUCK_RUN_TIMEOUT_MINUTES": "0"},
        {"STUCK_RUN_TIMEOUT_MINUTES": "1", "RECOVERY_HEARTBEAT_SECONDS": "40"},
    ],
)
def test_startup_recovery_with_settings_the_system_checks_reject_touches_nothing(
    make_run, caplog, settings_
):
    run = make_run(created_minutes_ago=12, heartbeat_minutes_ago=12)
    with override_settings(**settings_), caplog.at_level(logging.INFO, logger="recovery"):
        startup.run_startup_recovery("gunicorn")
    run.refresh_from_db()
    assert run.status == RunStatus.PROCESSING
    assert not RecoveryEvent.objects.exists()
    assert caplog.messages == [
        "[Startup] Recovery skipped: the recovery settings are invalid "
        "(see the system check errors)"
    ]


def test_startup_recovery_with_no_stuck_runs_says_so(db, caplog):
    with caplog.at_level(logging.INFO, logger="recovery"):
        startup.run_startup_recovery("db_worker")
    assert caplog.messages[-1] == "[Startup] No stuck runs found"
    assert QualificationRun.objects.count() == 0


def test_database_error_during_startup_recovery_is_one_warning_line(monkeypatch, db, caplog):
    def refuse(**kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 1 failed: refused')

    monkeypatch.setattr("recovery.sweep.recover_stuck_runs", refuse)
    with caplog.at_level(logging.INFO, logger="recovery"):
        startup.run_startup_recovery("runserver")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "[Startup] Recovery skipped: the database is unavailable "
        '[connection to server at "127.0.0.1", port 1 failed: refused]'
    ]


def test_unexpected_error_during_startup_recovery_never_propagates(monkeypatch, db, caplog):
    def explode(**kwargs):
        raise KeyError("boom")

    monkeypatch.setattr("recovery.sweep.recover_stuck_runs", explode)
    with caplog.at_level(logging.INFO, logger="recovery"):
        startup.run_startup_recovery("runserver")
    assert caplog.messages[-1] == "[Startup] Recovery failed: KeyError: 'boom'"


@pytest.mark.parametrize(
    ("error", "meaning"),
    [
        (OperationalError("no such table: recovery_qualificationrun"), "not migrated yet"),
        (
            ProgrammingError('relation "recovery_qualificationrun" does not exist\nLINE 1'),
            "not migrated yet",
        ),
        (OperationalError("canceling statement due to statement timeout"), "did not answer"),
        (OperationalError("connection timeout expired"), "did not answer in time"),
        (OperationalError("database is locked"), "stayed locked by another process"),
        (OperationalError("connection refused"), "unavailable"),
    ],
)
def test_database_errors_are_described_in_one_line_an_operator_can_act_on(error, meaning):
    text = startup.describe_database_error(error)
    assert meaning in text
    assert "\n" not in text


# --- off the startup path, and bounded -------------------------------------------------------


def test_the_hook_returns_at_once_and_sweeps_on_a_daemon_thread(monkeypatch):
    started, release = threading.Event(), threading.Event()

    def slow_sweep(role: str) -> None:
        started.set()
        release.wait(10)

    monkeypatch.setattr(startup, "run_startup_recovery", slow_sweep)
    monkeypatch.setattr(sweeper, "run_periodic_sweeps", lambda stop: None)
    joins: list[tuple] = []
    monkeypatch.setattr(startup.atexit, "register", lambda *args: joins.append(args))
    hook = StartupRecovery()
    started_thread = hook.start("runserver")
    try:
        assert started.wait(5)
        (thread,) = _recovery_threads()
        assert thread is started_thread
        assert thread.daemon and thread.is_alive()
        assert hook.start("runserver") is None  # once per process
        # A process that exits at once waits a bounded time for the sweep, never forever.
        assert joins == [(hook.stop, thread)]
        monkeypatch.setattr(startup, "EXIT_GRACE_SECONDS", 0.05)
        before = time.monotonic()
        hook.stop(thread)
        assert time.monotonic() - before < 2
        assert hook.stopping.is_set()
    finally:
        release.set()
    thread.join(5)
    assert not thread.is_alive()


@pytest.mark.postgres
def test_startup_sweep_gives_up_on_a_locked_table_after_its_statement_timeout(
    transactional_db, make_run, monkeypatch, caplog
):
    import psycopg
    from django.db import connection

    run = make_run(created_minutes_ago=12, heartbeat_minutes_ago=12)
    monkeypatch.setattr("recovery.sweep.STARTUP_STATEMENT_TIMEOUT_MS", 300)
    monkeypatch.setattr(sweeper, "run_periodic_sweeps", lambda stop: None)
    db = connection.settings_dict
    with (
        psycopg.connect(
            dbname=db["NAME"], user=db["USER"], host=db["HOST"], port=db["PORT"] or 5432
        ) as other,
        caplog.at_level(logging.INFO, logger="recovery"),
    ):
        other.execute("LOCK TABLE recovery_qualificationrun IN ACCESS EXCLUSIVE MODE")
        # On a thread of its own, as at startup: the timeout is set on that thread's
        # connection, which is closed afterwards.
        thread = threading.Thread(target=StartupRecovery().run, args=("runserver",))
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
        other.rollback()
    assert caplog.messages[-1].startswith(
        "[Startup] Recovery skipped: the database did not answer in time [canceling statement"
    )
    run.refresh_from_db()
    assert run.status == RunStatus.PROCESSING
