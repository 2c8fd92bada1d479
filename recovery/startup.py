"""Recovery whenever a server process starts, scheduled from `RecoveryConfig.ready()`.

`ready()` must not query the database, so it only decides whether this process serves
requests or runs tasks and, if so, starts a daemon thread that waits for the app registry to
be ready and then sweeps. The server never waits for it; a database that is down, slow or not
migrated costs one warning line.

Which processes recover: `runserver` (the serving child, not the autoreloader's watcher; also
with --noreload), `db_worker` (likewise), gunicorn workers (with or without --preload: the
master never opens a connection that forked workers would inherit), and uvicorn, daphne or
hypercorn. Every other command, and pytest, never does.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, connections

from .conf import conf
from .models import RecoverySource

logger = logging.getLogger("recovery")

#: How long the thread waits for the app registry before giving up.
APPS_READY_TIMEOUT_SECONDS = 60.0
ASGI_SERVERS = frozenset({"uvicorn", "daphne", "hypercorn"})

_schedule_lock = threading.Lock()
_scheduled = False


def server_role(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """Names the kind of server this process is, or None if it serves nothing."""
    argv = list(sys.argv if argv is None else argv)
    environ = os.environ if environ is None else environ
    # "…/bin/gunicorn" or, for `python -m gunicorn`, "…/gunicorn/__main__.py".
    launcher = (argv[0] if argv else "").split(os.sep)[-2:]
    for server in ("gunicorn", *sorted(ASGI_SERVERS)):
        if any(part == server or part.startswith(f"{server}-") for part in launcher):
            return server
    command = argv[1] if len(argv) > 1 else ""
    if command == "runserver":
        reloads = "--noreload" not in argv
    elif command == "db_worker":
        reloads = "--reload" in argv or (settings.DEBUG and "--no-reload" not in argv)
    else:
        return None
    if reloads and environ.get("RUN_MAIN") != "true":
        return None  # the autoreloader's watcher: its child is the one that serves
    return command


def schedule_startup_recovery() -> None:
    """Called from `ready()`: at most once per process, and never under pytest."""
    global _scheduled
    if "pytest" in sys.modules or not conf.RECOVERY_ON_STARTUP:
        return
    role = server_role()
    if role is None:
        return
    with _schedule_lock:
        if _scheduled:
            return
        _scheduled = True
    if role == "gunicorn" and not _inside_gunicorn_worker():
        # --preload: this is the master. Sweep in each forked worker instead (startup sweeps
        # are single-flight in the database), so no connection is ever opened here and leaked
        # into the children.
        os.register_at_fork(after_in_child=lambda: _start_thread("gunicorn worker"))
        return
    _start_thread(role)


def _inside_gunicorn_worker() -> bool:
    """True when the app is being loaded by a gunicorn worker (no --preload)."""
    frame = sys._getframe()
    while frame is not None:
        if f"gunicorn{os.sep}workers{os.sep}" in frame.f_code.co_filename:
            return True
        frame = frame.f_back
    return False


def _start_thread(role: str) -> None:
    threading.Thread(
        target=run_startup_recovery, args=(role,), name="startup-recovery", daemon=True
    ).start()


def run_startup_recovery(role: str) -> None:
    """Waits for the app registry, sweeps once, and never raises."""
    deadline = time.monotonic() + APPS_READY_TIMEOUT_SECONDS
    while not apps.ready:
        if time.monotonic() > deadline:
            logger.warning("[Startup] Recovery skipped: the apps did not finish loading in time")
            return
        time.sleep(0.05)
    from .sweep import recover_stuck_runs

    logger.info(
        "[Startup] Checking for stuck qualification runs (%s, pid %s)...", role, os.getpid()
    )
    try:
        report = recover_stuck_runs(source=RecoverySource.STARTUP)
    except DatabaseError as exc:
        logger.warning("[Startup] Recovery skipped: %s", describe_database_error(exc))
        return
    except Exception as exc:  # startup must never break because of recovery
        logger.warning("[Startup] Recovery failed: %s: %s", type(exc).__name__, exc)
        return
    finally:
        connections.close_all()
    if report.skipped_reason:
        logger.info("[Startup] %s", report.skipped_reason.capitalize())
    elif report.recovered:
        logger.info("[Startup] Recovered %d stuck runs", report.recovered_count)
    else:
        logger.info("[Startup] No stuck runs found")


def describe_database_error(exc: DatabaseError) -> str:
    """One line an operator can act on."""
    text = " ".join(str(exc).split())
    lowered = text.lower()
    if "no such table" in lowered or ("relation" in lowered and "does not exist" in lowered):
        return f"the database is not migrated yet (run: python manage.py migrate) [{text}]"
    if "timeout" in lowered or "canceling statement" in lowered:
        return f"the database did not answer in time [{text}]"
    return f"the database is unavailable [{text}]"
