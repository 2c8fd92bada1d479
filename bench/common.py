"""What both benchmarks share: their database, their settings, and the machine line."""

from __future__ import annotations

import os
import platform
import signal
import sqlite3
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent


def create_database(url: str) -> None:
    """Creates a PostgreSQL benchmark database if it does not exist (SQLite makes its file)."""
    if url.startswith("sqlite:///"):
        return
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def setup_django(url: str, **extra_env: str) -> None:
    """The project's settings on this database (no startup recovery, DEBUG off), migrated."""
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "qualifier.settings"
    os.environ.setdefault("SECRET_KEY", "bench-only-secret-key")
    os.environ["RECOVERY_ON_STARTUP"] = "false"
    os.environ["DEBUG"] = "false"
    os.environ.update(extra_env)
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)


def describe_machine() -> str:
    """CPU model, cores, Python, and the database server (call after django.setup())."""
    from django.db import connection

    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            database = f"PostgreSQL {cursor.fetchone()[0].split()[0]}"
    else:
        database = f"SQLite {sqlite3.sqlite_version} (WAL, synchronous=NORMAL)"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {database}"


def parse_database_url(url: str) -> dict:
    """The connection settings for `url`, as the project's settings would read them."""
    import environ

    return {
        key: value
        for key, value in environ.Env.db_url_config(url).items()
        if key in ("NAME", "USER", "PASSWORD", "HOST", "PORT")
    }


def qualifying_prospects(count: int) -> list:
    """`count` prospects that qualify under the default criteria (positions as CSV lines)."""
    from qualifier.prospects import ProspectData

    return [
        ProspectData(
            name=f"P{i}",
            company="C",
            industry="Software",
            employees=100,
            title="VP",
            position=i + 2,
        )
        for i in range(count)
    ]


def create_benchmark_run(count: int) -> int:
    """A queued run of `count` qualifying prospects, its task enqueued; returns its id."""
    from qualifier.runs import create_run

    return create_run(user=None, prospects=qualifying_prospects(count)).pk


def clean_slate() -> None:
    """Empties the benchmark database's runs, tasks and workers: a run left over from an
    interrupted benchmark would be resumed by the first worker and counted in its figures."""
    from django_tasks_db.models import DBTaskResult

    from recovery.models import FencedWrite, QualificationRun, RecoveryEvent, Worker

    RecoveryEvent.objects.all().delete()
    FencedWrite.objects.all().delete()
    QualificationRun.objects.all().delete()
    DBTaskResult.objects.all().delete()
    Worker.objects.all().delete()


def start_worker(url: str, log: Path, **settings: str) -> subprocess.Popen[bytes]:
    """A real `manage.py db_worker` on `url` with `settings` in its environment, in a session
    of its own (so `stop` reaches its executor too), its output in `log`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env.update(
        DJANGO_SETTINGS_MODULE="qualifier.settings",
        DATABASE_URL=url,
        SECRET_KEY="bench-only-secret-key",
        DEBUG="false",
        QUALIFIER_IGNORE_DOTENV="1",
        RECOVERY_ON_STARTUP="false",
        **settings,
    )
    command = ["manage.py", "db_worker", "--no-reload", "--no-startup-delay", "--interval", "0.1"]
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, *command],
            cwd=PROJECT_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every worker's session (a clean stop), SIGKILL past 30 s."""
    for worker in workers:
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
