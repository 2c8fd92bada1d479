"""`manage.py ensure_database`: parse, call qualifier.database, print. `scripts/start` runs it
before `migrate` and shows its line in the banner."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from qualifier.database import DatabaseSetupError, describe, ensure_database


class Command(BaseCommand):
    help = (
        "Create the PostgreSQL database named by DATABASE_URL if it does not exist, then print "
        "which database is used (without its password)."
    )
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help="The database alias to prepare (default: %(default)s).",
        )

    def handle(self, *, database: str, verbosity: int, **options: Any) -> None:
        try:
            created = ensure_database(database)
        except DatabaseSetupError as exc:
            raise CommandError(str(exc)) from None
        if verbosity:
            note = " (created now)" if created else ""
            self.stdout.write(describe(connections[database].settings_dict) + note)
