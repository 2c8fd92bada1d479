"""Helpers for tests that start real processes (servers, workers, sweepers).

Such processes cannot see pytest-django's test database (in memory on SQLite, inside a
transaction otherwise), so each test gets a database of its own: a migrated SQLite file, or a
PostgreSQL database created from a migrated template, named after the current DATABASE_URL's
engine so the suite exercises the backend it runs on.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from django.conf import settings

PROJECT_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN_DIR = Path(PYTHON).parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

_template_cache: dict[str, str] = {}

#: In the names of the PostgreSQL databases this test process creates: the xdist worker ("gw0",
#: or "main" without xdist) and a random part, so that workers, and test runs of other checkouts
#: on the same server, never touch each other's databases.
RUN_ID = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{uuid.uuid4().hex[:8]}"


def on_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def base_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment for a child process: the project's settings, this database, no .env."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "PYTEST_", "RUN_MAIN"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="qualifier.settings",
        DATABASE_URL=database_url,
        SECRET_KEY="process-tests-secret-key",
        DEBUG="false",
        ALLOWED_HOSTS="localhost,127.0.0.1",
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",
        QUALIFIER_IGNORE_DOTENV="1",
    )
    env.update(extra)
    return env


def manage(
    args: Sequence[str], database_url: str, timeout: float = 120, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=base_env(database_url, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _migrated_template(tmp_root: Path) -> str:
    """A migrated database to copy from, made once per test process (each xdist worker is
    one) and copied for every test that starts processes."""
    key = "postgres" if on_postgres() else "sqlite"
    if key in _template_cache:
        return _template_cache[key]
    if on_postgres():
        name = f"qualifier_tpl_{RUN_ID}"
        _pg_admin(f'CREATE DATABASE "{name}"')
        url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    else:
        path = tmp_root / "template.sqlite3"
        url = f"sqlite:///{path}"
    result = manage(["migrate", "--noinput", "-v0"], url, RECOVERY_ON_STARTUP="false")
    if result.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{result.stdout}\n{result.stderr}")
    _template_cache[key] = url
    return url


def _pg_admin(*statements: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@contextmanager
def fresh_database(tmp_path: Path, tmp_root: Path | None = None) -> Iterator[str]:
    """Yields the DATABASE_URL of a new, migrated database; drops it afterwards."""
    template = _migrated_template(tmp_root or tmp_path)
    if template.startswith("postgresql://"):
        template_name = template.rsplit("/", 1)[1]
        name = f"qualifier_proc_{RUN_ID}_{uuid.uuid4().hex[:8]}"
        _pg_admin(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
        try:
            yield f"postgresql://postgres@127.0.0.1:5432/{name}"
        finally:
            _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    else:
        source = Path(template.removeprefix("sqlite:///"))
        target = tmp_path / f"db-{uuid.uuid4().hex[:8]}.sqlite3"
        shutil.copyfile(source, target)
        yield f"sqlite:///{target}"


def drop_template_databases() -> None:
    url = _template_cache.pop("postgres", None)
    if url:
        _pg_admin(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Process:
    """A child process in its own process group, with its output in a file."""

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        log_path: Path,
    ) -> None:
        """The child starts with SIGINT's default disposition, as under a terminal, even when
        the tests run from a background shell: that shell ignores SIGINT in its children, an
        ignored signal stays ignored across exec, and Python then installs no KeyboardInterrupt
        handler, so a test that sends SIGINT would find it ignored."""
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            list(args),
            cwd=PROJECT_DIR,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_sigint,
        )

    @property
    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output:
                return True
            if self.popen.poll() is not None:
                return text in self.output
            time.sleep(0.1)
        return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10) -> str:
        if self.popen.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(timeout)
        self._log.close()
        return self.log_path.read_text(errors="replace")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_http(url: str, timeout: float = 30, process: Process | None = None) -> int:
    """Polls until the URL answers; returns the HTTP status (redirects not followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise RuntimeError(f"process exited early:\n{process.output}")
        try:
            with opener.open(url, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last_error = exc
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout}s: {last_error}")


def bin_path(name: str) -> str:
    return str(BIN_DIR / name)
