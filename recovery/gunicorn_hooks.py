"""gunicorn's server hooks for recovery: import them into a gunicorn config module
(`qualifier/gunicorn_conf.py` does) and recovery starts where gunicorn says a worker is ready,
instead of guessing from the call stack which process is a worker.

Importing this module tells the startup hook in `ready()` to leave gunicorn to these hooks.
"""

from __future__ import annotations

from typing import Any

from . import startup

startup.use_server_hooks("gunicorn")


def pre_fork(server: Any, worker: Any) -> None:
    """In the master, before each worker is forked (after a --preload, the system checks may
    have opened a connection): no worker inherits the master's database connections."""
    startup.close_connections_before_fork()


def post_worker_init(worker: Any) -> None:
    """In each worker, once it has loaded the application: recover, then keep sweeping."""
    startup.start_recovery("gunicorn")
