"""The database's clock: every liveness age and every timestamp is measured on it, in the same
statement, never on a host's own clock (hosts drift; the database is the one clock they share)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import DateTimeField, F, FloatField, Func, IntegerField
from django.db.models.functions import Now


def ago(seconds: float) -> Any:
    """The database's now minus `seconds`."""
    return Now() - dt.timedelta(seconds=seconds)


class SecondsSince(Func):
    """Whole seconds from a timestamp to the database's now; never negative, NULL for NULL.

    On PostgreSQL a row written by a statement that began after this one, and committed before
    this one took its snapshot, carries a later time than this statement's: its age is 0, not
    -1 (a run page's "last sign of life" read mid-batch answered 500 for that).
    """

    output_field = IntegerField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        seconds = f"FLOOR(EXTRACT(EPOCH FROM (STATEMENT_TIMESTAMP() - {sql})))::bigint"
        return f"(CASE WHEN {seconds} < 0 THEN 0 ELSE {seconds} END)", (*params, *params)

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # SQLite's MAX of several values is NULL when one of them is.
        return self.as_sql(
            compiler,
            connection,
            template=(
                "MAX(0, CAST((julianday('now') - julianday(%(expressions)s)) * 86400 AS INTEGER))"
            ),
            **extra,
        )


class SecondsBetween(Func):
    """Seconds (with fractions) from the first timestamp to the second; 0 when either is NULL."""

    output_field = FloatField()
    arity = 2

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        first, second = self.source_expressions
        first_sql, first_params = compiler.compile(first)
        second_sql, second_params = compiler.compile(second)
        if connection.vendor == "postgresql":
            sql = f"COALESCE(EXTRACT(EPOCH FROM ({second_sql} - {first_sql}))::float8, 0)"
        else:
            sql = f"COALESCE((julianday({second_sql}) - julianday({first_sql})) * 86400.0, 0)"
        return sql, (*second_params, *first_params)


def since_start_until(end: Any) -> SecondsBetween:
    """The seconds an attempt worked: from its start to `end` (Now(), or its last sign of life)."""
    return SecondsBetween(F("started_at"), end)


class DatabaseStartedAt(Func):
    """When the database server began to accept connections (PostgreSQL); a date long past
    elsewhere. Nobody is judged silent until it has been up for the worker timeout.

    The server's start time is not enough after a crash or an immediate restart: crash recovery
    replays WAL before any worker can connect, and under load that takes longer than the worker
    timeout. The WAL writer and the launchers are started only once recovery has ended, so their
    start is when connections began to be accepted. Reading it needs a superuser or
    pg_read_all_stats (PostgreSQL shows other sessions' start times to no one else); without
    it the server's start time is used."""

    output_field = DateTimeField()
    template = "'1970-01-01 00:00:00'"

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # GREATEST ignores NULLs: the launchers' start times, when visible and later.
        return (
            "GREATEST(pg_postmaster_start_time(), (SELECT MAX(backend_start) FROM "
            "pg_stat_activity WHERE backend_type IN "
            "('walwriter', 'autovacuum launcher', 'logical replication launcher')))",
            [],
        )


__all__ = ["DatabaseStartedAt", "Now", "SecondsBetween", "SecondsSince", "ago", "since_start_until"]
