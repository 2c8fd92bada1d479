"""Making sure the configured database exists before `migrate`, for `scripts/start`: one clear
line instead of a traceback when it does not, and a description of it without the password."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.db import DatabaseError, connections

#: The database every PostgreSQL server has, to connect to while ours does not exist yet.
MAINTENANCE_DATABASE = "postgres"


class DatabaseSetupError(Exception):
    """The database cannot be used or created; the message says what to do."""


def describe(config: dict[str, Any]) -> str:
    """Which database a settings entry names, e.g. 'PostgreSQL database "qualifier" on
    127.0.0.1:5432 as postgres'; never the password."""
    engine = config["ENGINE"].rsplit(".", 1)[-1]
    if engine == "sqlite3":
        return f"SQLite file {config['NAME']}"
    name = {"postgresql": "PostgreSQL"}.get(engine, engine)
    where = f"{config.get('HOST') or 'localhost'}:{config.get('PORT') or 'default port'}"
    user = f" as {config['USER']}" if config.get("USER") else ""
    return f'{name} database "{config["NAME"]}" on {where}{user}'


def ensure_database(alias: str = "default") -> bool:
    """Connects to the database, creating it first if it is a PostgreSQL database that does
    not exist yet. Returns whether it was created; raises DatabaseSetupError otherwise."""
    connection = connections[alias]
    config = connection.settings_dict
    if connection.vendor == "sqlite":
        folder = Path(str(config["NAME"])).parent
        if not folder.is_dir():
            raise DatabaseSetupError(
                f"The folder {folder} for the SQLite file does not exist; create it or change "
                "DATABASE_URL."
            )
    try:
        connection.ensure_connection()
    except DatabaseError as exc:
        if connection.vendor != "postgresql":
            message = f"Cannot open the {describe(config)}: {_first_line(exc)}"
            raise DatabaseSetupError(message) from None
        return _create_postgresql_database(connection, exc)
    finally:
        connection.close()
    return False


def _create_postgresql_database(connection: Any, error: Exception) -> bool:
    """Through the server's maintenance database: tells a missing database (created here)
    from a server that cannot be reached or a login that is refused (reported)."""
    import psycopg
    from psycopg import sql

    config = connection.settings_dict
    name = config["NAME"]
    params = {**connection.get_connection_params(), "dbname": MAINTENANCE_DATABASE}
    params.pop("cursor_factory", None)
    params.pop("context", None)
    try:
        with psycopg.connect(**params, autocommit=True) as admin:
            exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
            if exists.fetchone():
                raise DatabaseSetupError(
                    f"Cannot open the {describe(config)}: {_first_line(error)}"
                )
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.errors.InsufficientPrivilege:
        raise DatabaseSetupError(
            f"The {describe(config)} does not exist and this user may not create it. Create it "
            f"with: createdb -h {config.get('HOST') or 'localhost'} -p {config.get('PORT') or 5432} "
            f"-U <admin user> -O {config.get('USER') or '<user>'} {name}"
        ) from None
    except psycopg.Error as exc:
        raise DatabaseSetupError(
            f"Cannot connect to the {describe(config)}: {_first_line(exc)}"
        ) from None
    return True


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
