"""Setting up a machine: `manage.py ensure_database` (run by scripts/start before migrate) and
the settings a second instance on the same host needs."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from tests.processes import PG_ADMIN_URL, free_port, manage


def pg_url(name: str, user: str = "postgres", password: str = "") -> str:
    secret = f":{password}" if password else ""
    return f"postgres://{user}{secret}@127.0.0.1:5432/{name}"


def database_exists(name: str) -> bool:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        return bool(
            admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
        )


@pytest.fixture
def missing_database():
    """A PostgreSQL database name that does not exist, dropped again after the test."""
    name = f"qualifier_setup_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_created_and_named_without_its_password(
    missing_database,
):
    url = pg_url(missing_database, password="not-needed-with-trust-auth")

    created = manage(["ensure_database"], url)
    again = manage(["ensure_database"], url)

    assert created.returncode == 0, created.stderr
    assert created.stdout.strip() == (
        f'PostgreSQL database "{missing_database}" on 127.0.0.1:5432 as postgres (created now)'
    )
    assert database_exists(missing_database)
    assert (
        again.stdout.strip()
        == f'PostgreSQL database "{missing_database}" on 127.0.0.1:5432 as postgres'
    )
    assert "not-needed" not in created.stdout + created.stderr


@pytest.fixture
def login_without_createdb():
    """A PostgreSQL login that may not create databases, dropped again after the test."""
    role = f"qualifier_setup_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    yield role
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.postgres
def test_a_user_who_may_not_create_the_database_is_told_the_command_to_run(
    missing_database, login_without_createdb
):
    result = manage(["ensure_database"], pg_url(missing_database, user=login_without_createdb))

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f'CommandError: The PostgreSQL database "{missing_database}" on 127.0.0.1:5432 as '
        f"{login_without_createdb} does not exist and this user may not create it. Create it "
        f"with: createdb -h 127.0.0.1 -p 5432 -U <admin user> -O {login_without_createdb} "
        f"{missing_database}"
    )
    assert not database_exists(missing_database)


def test_an_unreachable_postgresql_server_is_one_line_on_stderr():
    url = f"postgres://postgres:hunter2@127.0.0.1:{free_port()}/qualifier"

    result = manage(["ensure_database"], url)

    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith('CommandError: Cannot connect to the PostgreSQL database "qualifier"')
    assert "Connection refused" in line
    assert "hunter2" not in line


def test_an_sqlite_file_in_a_missing_folder_is_one_line_on_stderr(tmp_path):
    result = manage(["ensure_database"], f"sqlite:///{tmp_path}/nowhere/db.sqlite3")

    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"CommandError: The folder {tmp_path}/nowhere for the SQLite file does not exist; "
        "create it or change DATABASE_URL."
    )


def test_an_sqlite_database_is_named_by_its_file(tmp_path):
    result = manage(["ensure_database"], f"sqlite:///{tmp_path}/db.sqlite3")

    assert (result.returncode, result.stdout.strip()) == (0, f"SQLite file {tmp_path}/db.sqlite3")


def test_the_session_cookie_name_comes_from_the_environment(tmp_path):
    """Two instances on one host (ports 8000 and 8001) share cookies unless their names differ."""
    show = [
        "shell",
        "--no-imports",
        "-c",
        "from django.conf import settings; print(settings.SESSION_COOKIE_NAME)",
    ]
    database = f"sqlite:///{tmp_path}/db.sqlite3"

    assert manage(show, database).stdout.strip() == "sessionid"
    assert manage(show, database, SESSION_COOKIE_NAME="qualifier8001").stdout.strip() == (
        "qualifier8001"
    )
