"""`manage.py prune_runs`: parse, call qualifier.retention, print. Run it daily (cron or a
systemd timer, see docs/deploy.md), as one would `clearsessions`."""

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.inputs import parse_whole_number, show
from common.values import parse_bounded
from qualifier.conf import conf
from qualifier.retention import DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE, PruneReport, prune
from recovery.conf import MAX_RETENTION_DAYS
from recovery.conf import conf as recovery_conf


def days(value: str) -> int:
    """Days, read as the retention settings are (settings.py, the checks)."""
    try:
        return parse_bounded(value, minimum=1, maximum=MAX_RETENTION_DAYS)
    except ValueError:
        raise ArgumentTypeError(
            f"{show(value)} is not a whole number of days (1 to {MAX_RETENTION_DAYS:,})"
        ) from None


def batch_size(value: str) -> int:
    try:
        return parse_whole_number(value, minimum=1, maximum=MAX_BATCH_SIZE)
    except ValueError:
        raise ArgumentTypeError(
            f"{show(value)} is not a batch size (a whole number from 1 to {MAX_BATCH_SIZE:,})"
        ) from None


def plural(count: int, word: str, words: str = "") -> str:
    return f"{count:,} {word if count == 1 else words or word + 's'}"


class Command(BaseCommand):
    help = (
        "Delete finished runs that ended more than --days ago, with their prospects and "
        "results, in batches; and recovery events (the audit trail) older than --event-days, "
        "first. A run that a remaining recovery event names is kept until that event expires."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--days",
            type=days,
            default=None,
            help="Keep finished runs for this many days, 1 to "
            f"{MAX_RETENTION_DAYS:,} (default: QUALIFIER_RUN_RETENTION_DAYS, currently "
            f"{conf.QUALIFIER_RUN_RETENTION_DAYS}).",
        )
        parser.add_argument(
            "--event-days",
            type=days,
            default=None,
            help="Keep recovery events for this many days, at least --days (default: "
            "RECOVERY_EVENT_RETENTION_DAYS, currently "
            f"{recovery_conf.RECOVERY_EVENT_RETENTION_DAYS}).",
        )
        parser.add_argument(
            "--batch-size",
            type=batch_size,
            default=DEFAULT_BATCH_SIZE,
            help="Most runs (or events) deleted per transaction, 1 to "
            f"{MAX_BATCH_SIZE:,} (default: %(default)s).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Say what would be deleted and delete nothing.",
        )

    def handle(
        self,
        *,
        days: int | None,
        event_days: int | None,
        batch_size: int,
        dry_run: bool,
        verbosity: int,
        **options: Any,
    ) -> None:
        run_days = conf.QUALIFIER_RUN_RETENTION_DAYS if days is None else days
        if event_days is None:
            event_days = recovery_conf.RECOVERY_EVENT_RETENTION_DAYS
        if event_days < run_days:
            raise CommandError(
                f"Recovery events would be kept {event_days} days, fewer than the runs' "
                f"{run_days}: the audit trail must outlive the runs it describes.",
                returncode=2,
            )
        report = prune(
            run_days=run_days, event_days=event_days, batch_size=batch_size, dry_run=dry_run
        )
        if verbosity:
            self.stdout.write(self.describe(report))

    def describe(self, report: PruneReport) -> str:
        verb = "Would delete" if report.dry_run else "Deleted"
        runs = (
            f"{verb} {plural(report.runs, 'run')} ({plural(report.prospects, 'prospect')}, "
            f"{plural(report.results, 'result')}) that ended before "
            f"{report.run_cutoff:%Y-%m-%d %H:%M} UTC"
        )
        events = (
            f"{plural(report.events, 'recovery event')} recorded before "
            f"{report.event_cutoff:%Y-%m-%d %H:%M} UTC"
        )
        lines = [f"{runs}, and {events}."]
        if not report.dry_run and report.batches:
            lines[0] = lines[0][:-1] + f", in {plural(report.batches, 'batch', 'batches')}."
        if report.kept_for_events:
            lines.append(
                f"Kept {plural(report.kept_for_events, 'older run')}: recovery events still "
                "name them."
            )
        style = self.style.WARNING if report.dry_run else self.style.SUCCESS
        return "\n".join([style(lines[0]), *lines[1:]])
