"""Recovery whenever a server process starts, scheduled from `RecoveryConfig.ready()`.

`ready()` must not query the database, so it only decides whether this process serves
requests and, if so, starts a daemon thread that waits for the app registry to be ready and
then sweeps. The server never waits for it; a database that is down, slow or not migrated costs
one warning line, and every statement of the sweep is bounded. The thread also re-runs the
recovery system checks first: the server's own checks run beside it, and a sweep must never run
with settings they are about to reject.

Which processes recover here: `runserver` (the serving child, not the autoreloader's watcher:
Django's `autoreload_started` signal is sent in the child only; also with --noreload), gunicorn
workers (with or without --preload: the master never sweeps and closes any connection before
it forks), and uvicorn, daphne or hypercorn. `db_worker` sweeps from its supervisor instead
(`recovery.worker.supervisor`). Every other command, and pytest, never does. Each of these long-lived
processes then keeps sweeping every RECOVERY_SWEEP_INTERVAL_SECONDS, so a dead worker's runs
are recovered even when no worker is left. N processes sweeping at once make one recovery per
dead run: sweeps are single-flight in the database. RECOVERY_ON_STARTUP and the sweep interval
are independent.

Where a server offers hooks, they are used: gunicorn's `pre_fork` and `post_worker_init`
(`recovery.gunicorn_hooks`, offered by `gunicorn -c python:qualifier.gunicorn_conf`). Without
them recovery still starts by itself; what it must then guess from the arguments and the call
stack is guessed in one place, `detect_server()`.

Importable before Django is set up (a gunicorn config module imports it): models are imported
where they are used.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from types import FrameType
from typing import Any

from django.apps import apps
from django.db import DatabaseError, connections
from django.utils.autoreload import autoreload_started

from .conf import conf

logger = logging.getLogger("recovery")

#: How long the thread waits for the app registry before giving up.
APPS_READY_TIMEOUT_SECONDS = 60.0
#: How long a process that exits right after starting waits for its sweep to finish instead of
#: cutting it off.
EXIT_GRACE_SECONDS = 5.0
THREAD_NAME = "startup-recovery"
ASGI_SERVERS = frozenset({"uvicorn", "daphne", "hypercorn"})
LAUNCHERS = frozenset({"gunicorn", *ASGI_SERVERS})
#: The commands that serve requests; each may run under Django's autoreloader. (`db_worker`
#: sweeps from its own supervisor.)
SERVER_COMMANDS = frozenset({"runserver"})


# --- which process is this: the guesswork, in one place -----------------------------------------


@dataclass(frozen=True)
class Server:
    """The kind of server this process is, as far as its arguments and call stack tell."""

    name: str
    #: runserver under its autoreloader: the watcher and its serving child both look like
    #: this; `autoreload_started` is sent in the child only.
    autoreload: bool = False
    #: A gunicorn master loading the app before it forks its workers (--preload).
    preloading: bool = False


def detect_server(
    argv: Sequence[str] | None = None, frame: FrameType | None = None
) -> Server | None:
    """What kind of server this process is, or None if it serves nothing.

    The program's name tells gunicorn and the ASGI servers; runserver's own parser reads its
    options; a gunicorn process that loads the app outside gunicorn's `spawn_worker` (found on
    the call stack from `frame`) is a master preloading it.
    """
    argv = list(sys.argv if argv is None else argv)
    launcher = launcher_name(argv[0] if argv else "")
    if launcher == "gunicorn":
        frame = sys._getframe(1) if frame is None else frame
        return Server(launcher, preloading=not _on_stack(frame, is_gunicorn_spawn_worker))
    if launcher in ASGI_SERVERS:
        return Server(launcher)
    command = argv[1] if len(argv) > 1 else ""
    if command not in SERVER_COMMANDS:
        return None
    options = command_options(command, argv[2:])
    if options is None:
        return None
    return Server(command, autoreload=bool(options["use_reloader"]))


def launcher_name(path: str) -> str:
    """ "gunicorn" for …/bin/gunicorn (or gunicorn3) and for `python -m gunicorn`.

    Only the program's own name counts: a project folder called gunicorn does not make
    `manage.py migrate` a server.
    """
    parts = PurePath(path).parts
    name = parts[-1] if parts else ""
    if name == "__main__.py" and len(parts) > 1:
        name = parts[-2]
    return name.rstrip("0123456789.-")


def command_options(command: str, args: Sequence[str]) -> dict[str, Any] | None:
    """The options the command will run with, decided by its own parser.

    So abbreviations (`--norel`), the last of `--reload`/`--no-reload` and defaults that follow
    DEBUG mean here exactly what they mean to the command. None when the arguments are bad or
    ask for help: the command itself reports that and serves nothing.
    """
    from django.core.management import get_commands, load_command_class
    from django.core.management.base import BaseCommand

    try:
        app = get_commands()[command]
        cmd = app if isinstance(app, BaseCommand) else load_command_class(app, command)
        parser = cmd.create_parser("manage.py", command)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            options, _unknown = parser.parse_known_args(list(args))
    except SystemExit:  # --help, --version
        return None
    except Exception:  # bad arguments; startup must never break because of recovery
        return None
    return vars(options)


def is_gunicorn_spawn_worker(frame: FrameType) -> bool:
    """Whether `frame` runs gunicorn's Arbiter.spawn_worker, where each HTTP worker is forked."""
    code = frame.f_code
    return code.co_name == "spawn_worker" and PurePath(code.co_filename).parts[-2:] == (
        "gunicorn",
        "arbiter.py",
    )


def _on_stack(frame: FrameType | None, test: Any) -> bool:
    while frame is not None:
        if test(frame):
            return True
        frame = frame.f_back
    return False


# --- settings ----------------------------------------------------------------------------------


def recovery_enabled() -> bool:
    """RECOVERY_ON_STARTUP (settings.py has read it as a boolean already)."""
    return conf.RECOVERY_ON_STARTUP is True


def sweeps_enabled() -> bool:
    """RECOVERY_SWEEP_INTERVAL_SECONDS > 0; a value set in Python that is not a number means
    off (the system check reports it and stops the process)."""
    interval = conf.RECOVERY_SWEEP_INTERVAL_SECONDS
    return isinstance(interval, int) and interval > 0


# --- starting it -------------------------------------------------------------------------------


class StartupRecovery:
    """Starts recovery in this process: from `ready()` by itself, or from a server's hook."""

    def __init__(self) -> None:
        self.scheduled = False
        #: Servers whose own hooks start recovery (`use_server_hooks`): ready() leaves them be.
        self.hooked_servers: set[str] = set()
        #: Set at exit: ends the periodic sweeps.
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._started_in: int | None = None

    def schedule(self, argv: Sequence[str] | None = None) -> None:
        """Called from `ready()`: at most once per process, and never under pytest."""
        if "pytest" in sys.modules:
            return
        server = detect_server(argv)
        if server is None:
            return
        with self._lock:
            if self.scheduled:
                return
            self.scheduled = True
        if server.name in self.hooked_servers:
            return  # its hooks start recovery where the server says a worker is ready
        enabled = recovery_enabled() or sweeps_enabled()
        if server.preloading:
            # This is the master. It never sweeps; each worker it forks does. Whatever opened
            # a connection here (the system checks open one on SQLite) is closed before a fork,
            # so no worker inherits the master's connection.
            hooks: dict[str, Any] = {"before": connections.close_all}
            if enabled:
                hooks["after_in_child"] = self.after_gunicorn_fork
            os.register_at_fork(**hooks)
        elif not enabled:
            return
        elif server.autoreload:
            autoreload_started.connect(self.on_autoreload_started, weak=False)
        else:
            self.start(server.name)

    def on_autoreload_started(self, sender: Any, **kwargs: Any) -> None:
        """Django sends autoreload_started in the autoreloader's child, the one that serves."""
        self.start("runserver")

    def after_gunicorn_fork(self) -> None:
        """Runs in every child the --preload master forks; only its HTTP workers sweep (not a
        USR2 re-exec or the dirty arbiter, nor a process a worker forks itself)."""
        caller = sys._getframe(1)  # the Python frame that called os.fork()
        if is_gunicorn_spawn_worker(caller):
            self.start("gunicorn")

    def start(self, role: str) -> threading.Thread | None:
        """Starts the recovery thread of this process, once; returns it (None if it runs)."""
        with self._lock:
            if self._started_in == os.getpid():
                return None
            self._started_in = os.getpid()
        thread = threading.Thread(target=self.run, args=(role,), name=THREAD_NAME, daemon=True)
        thread.start()
        atexit.register(self.stop, thread)
        return thread

    def stop(self, thread: threading.Thread) -> None:
        """At exit: ends the periodic sweeps; a startup sweep under way may finish, for a
        bounded time."""
        self.stopping.set()
        thread.join(EXIT_GRACE_SECONDS)

    def run(self, role: str) -> None:
        """The thread's work: the startup sweep (if on), then the periodic sweeps."""
        if recovery_enabled():
            try:
                run_startup_recovery(role)
            finally:
                with contextlib.suppress(DatabaseError):
                    connections.close_all()  # this thread's connections only
        from .worker.sweeper import run_periodic_sweeps

        run_periodic_sweeps(self.stopping)


_process = StartupRecovery()


def schedule_startup_recovery() -> None:
    """Called from `RecoveryConfig.ready()`."""
    _process.schedule()


def use_server_hooks(server: str) -> None:
    """The server's own hooks start recovery in this process (see `recovery.gunicorn_hooks`)."""
    _process.hooked_servers.add(server)


def start_recovery(role: str) -> None:
    """Starts recovery now, in a process the server says is ready to serve (a server hook)."""
    if recovery_enabled() or sweeps_enabled():
        _process.start(role)


def close_connections_before_fork() -> None:
    """No forked worker may inherit a connection of the process that forks it."""
    if apps.ready:
        connections.close_all()


def run_startup_recovery(role: str) -> None:
    """Waits for the app registry, sweeps once, and never raises."""
    deadline = time.monotonic() + APPS_READY_TIMEOUT_SECONDS
    while not apps.ready:
        if time.monotonic() > deadline:
            logger.warning("[Startup] Recovery skipped: the apps did not finish loading in time")
            return
        time.sleep(0.05)
    from .checks import check_recovery_settings
    from .models import RecoverySource
    from .sweep import recover_stuck_runs
    from .worker.sweeper import policy_note

    # The server's own system checks report bad settings and stop it; they run beside this
    # thread, so without this a sweep could run with the very settings they reject.
    if check_recovery_settings():
        logger.warning(
            "[Startup] Recovery skipped: the recovery settings are invalid "
            "(see the system check errors)"
        )
        return
    logger.info("[Startup] Checking for stuck qualification runs...")
    try:
        report = recover_stuck_runs(source=RecoverySource.STARTUP)
    except DatabaseError as exc:
        logger.warning("[Startup] Recovery skipped: %s", describe_database_error(exc))
        return
    except Exception as exc:  # startup must never break because of recovery
        logger.warning("[Startup] Recovery failed: %s: %s", type(exc).__name__, exc)
        return
    if report.skipped_reason:
        logger.info("[Startup] %s", report.skipped_reason.capitalize())
    elif report.recovered:
        logger.info(
            "[Startup] Recovered %d stuck runs%s", report.recovered_count, policy_note(report)
        )
    else:
        logger.info("[Startup] No stuck runs found")
    logger.debug("[Startup] Recovery ran in the %s process %s", role, os.getpid())


def describe_database_error(exc: DatabaseError) -> str:
    """One line an operator can act on."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"the database is not migrated yet (run: python manage.py migrate) [{text}]"
    if "timeout" in lowered or "canceling statement" in lowered:
        return f"the database did not answer in time [{text}]"
    if "database is locked" in lowered:
        return f"the database stayed locked by another process [{text}]"
    return f"the database is unavailable [{text}]"
