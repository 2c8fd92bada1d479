"""`manage.py recover_stuck_runs`: parse, call the recovery module, print. No logic here."""

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.inputs import parse_whole_number, show
from recovery.conf import MAX_TIMEOUT_MINUTES, POLICIES, conf
from recovery.models import RecoverySource
from recovery.report import DEFAULT_LIST_LIMIT, LineKind
from recovery.sweep import RecoveryInputError, recover_stuck_runs


def positive_minutes(value: str) -> int:
    try:
        parse_whole_number(value)
    except ValueError:
        raise ArgumentTypeError(f"{show(value)} is not a whole number of minutes") from None
    try:
        return parse_whole_number(value, minimum=1, maximum=MAX_TIMEOUT_MINUTES)
    except ValueError:
        raise ArgumentTypeError(
            f"must be greater than 0 and at most {MAX_TIMEOUT_MINUTES:,} (ten years), "
            f"not {value.strip()}"
        ) from None


def run_id(value: str) -> int:
    try:
        return parse_whole_number(value, minimum=1)
    except ValueError:
        raise ArgumentTypeError(f"{show(value)} is not a run id (a whole number from 1)") from None


class Command(BaseCommand):
    help = (
        "Recover dead qualification runs (worker gone, exited or silent, no progress, or queued "
        "without a live task): mark them FAILED, or with --policy resume put them back in the "
        "queue, keeping their progress and results, with one recovery event per run."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--timeout",
            type=positive_minutes,
            default=None,
            metavar="MINUTES",
            help="Minutes without progress after which a processing run is stuck although its "
            "worker answers "
            f"(default: STUCK_RUN_TIMEOUT_MINUTES, currently {self._default_timeout()}).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would be recovered and change nothing.",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            dest="as_json",
            help="Print one JSON document on stdout instead of text.",
        )
        parser.add_argument(
            "--run",
            type=run_id,
            action="append",
            dest="run_ids",
            metavar="ID",
            help="Only consider this run (repeatable).",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="With --run: fail the named active runs even before the timeout.",
        )
        parser.add_argument(
            "--policy",
            choices=POLICIES,
            default=None,
            help="fail dead runs, or resume them (back to the queue) (default: RECOVERY_POLICY).",
        )

    @staticmethod
    def _default_timeout() -> str:
        return str(conf.STUCK_RUN_TIMEOUT_MINUTES)

    def handle(
        self,
        *,
        verbosity: int,
        timeout: int | None,
        dry_run: bool,
        as_json: bool,
        run_ids: list[int] | None,
        force: bool,
        policy: str | None,
        **options: Any,
    ) -> None:
        if force and not run_ids:
            raise CommandError("--force needs --run ID: name the runs you know are dead.")
        list_limit = None if verbosity >= 2 or as_json else DEFAULT_LIST_LIMIT
        try:
            report = recover_stuck_runs(
                source=RecoverySource.COMMAND,
                timeout_minutes=timeout,
                run_ids=run_ids,
                force=force,
                dry_run=dry_run,
                list_limit=list_limit,
                log=False,
                policy=policy,
            )
        except RecoveryInputError as exc:
            raise CommandError(str(exc)) from exc

        if as_json:
            self.stdout.write(report.as_json())
        elif verbosity:
            styles = {LineKind.SUCCESS: self.style.SUCCESS, LineKind.WARNING: self.style.WARNING}
            for line in report.lines(list_limit):
                self.stdout.write(styles.get(line.kind, str)(line.text))
