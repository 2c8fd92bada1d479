"""`manage.py recovery_drill`: a self-contained recovery drill against the configured database.
Parse, check the prerequisites, run `qualifier.drill`, print what each fault cost."""

from __future__ import annotations

import signal
from argparse import ArgumentParser, ArgumentTypeError
from functools import partial
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.test import override_settings

from common.values import parse_bounded, parse_choice
from qualifier.drill.drill import Drill, Timeouts
from qualifier.drill.faults import DESCRIPTIONS, FAULTS, FaultSummary, run_trial
from qualifier.drill.workers import DRILL_QUEUE
from recovery.checks import check_recovery_settings
from recovery.conf import conf as recovery_conf
from recovery.queue import run_task, stores_tasks_in_database

MAX_TRIALS = 1000


def argument(parse: Any, value: str) -> Any:
    """An argparse `type=`: the project's reader, its message as argparse's."""
    try:
        return parse(value)
    except ValueError as exc:
        raise ArgumentTypeError(str(exc)) from None


def fault_list(value: str) -> list[str]:
    faults = [parse_choice(part, FAULTS) for part in value.split(",")]
    return list(dict.fromkeys(faults))


class Command(BaseCommand):
    help = (
        "Run a recovery drill: start workers on the drill's own queue, give them sample runs, "
        "kill and freeze them (SIGKILL, a lost host, SIGSTOP past the worker timeout, SIGTERM), "
        "and print how fast each death was found, false recoveries, duplicate results and "
        "wasted scorer calls; then remove everything the drill made."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        seconds = partial(argument, partial(parse_bounded, minimum=1))
        parser.add_argument(
            "--trials",
            type=partial(argument, partial(parse_bounded, minimum=1, maximum=MAX_TRIALS)),
            default=3,
            metavar="N",
            help="Trials per fault (default: %(default)s).",
        )
        parser.add_argument(
            "--faults",
            type=partial(argument, fault_list),
            default=list(FAULTS),
            metavar="FAULT[,FAULT...]",
            help=f"The faults to drill, comma-separated, of: {', '.join(FAULTS)} (default: all).",
        )
        parser.add_argument(
            "--heartbeat",
            type=seconds,
            metavar="SECONDS",
            help="Drill with this RECOVERY_HEARTBEAT_SECONDS instead of the configured one.",
        )
        parser.add_argument(
            "--worker-timeout",
            type=seconds,
            metavar="SECONDS",
            help="Drill with this RECOVERY_WORKER_TIMEOUT_SECONDS instead of the configured one.",
        )
        parser.add_argument(
            "--sweep-interval",
            type=seconds,
            metavar="SECONDS",
            help="Drill with this RECOVERY_SWEEP_INTERVAL_SECONDS instead of the configured one.",
        )
        parser.add_argument(
            "--scoring-delay",
            type=partial(argument, partial(parse_bounded, minimum=1, maximum=1000)),
            default=50,
            metavar="MS",
            help="Milliseconds the drill's scorer takes per prospect (default: %(default)s).",
        )

    def handle(
        self,
        *,
        trials: int,
        faults: list[str],
        heartbeat: int | None,
        worker_timeout: int | None,
        sweep_interval: int | None,
        scoring_delay: int,
        verbosity: int,
        **options: Any,
    ) -> None:
        configured = Timeouts.configured()
        timeouts = Timeouts(
            heartbeat or configured.heartbeat,
            worker_timeout or configured.worker_timeout,
            sweep_interval or configured.sweep_interval,
        )
        with override_settings(**timeouts.settings()):
            self.check_prerequisites(timeouts)
            self.stdout.write(
                f"Recovery drill: {trials} trial{'s' * (trials != 1)} per fault; heartbeat "
                f"{timeouts.heartbeat} s, worker timeout {timeouts.worker_timeout} s, sweep "
                f"interval {timeouts.sweep_interval} s, policy {recovery_conf.RECOVERY_POLICY}, "
                f"{connection.vendor}; queue {DRILL_QUEUE}"
            )
            say = self.stdout.write if verbosity >= 1 else lambda text: None
            summaries = [FaultSummary(fault) for fault in faults]
            # SIGTERM ends the drill as Ctrl-C does: its workers stopped, what it made removed.
            previous = signal.signal(signal.SIGTERM, interrupt)
            try:
                self.drill(summaries, timeouts, scoring_delay, trials, verbosity, say)
            except KeyboardInterrupt as stop:
                raise CommandError(
                    f"Interrupted ({stop or 'Ctrl-C'}): the drill's workers were stopped and "
                    "everything it made was removed.",
                    returncode=1,
                ) from None
            finally:
                signal.signal(signal.SIGTERM, previous)
            self.print_summary(summaries, timeouts)
        problems = [
            f"{summary.fault}: {problem}" for summary in summaries for problem in summary.problems
        ]
        wrong = sum(s.total("false_recoveries") + s.total("duplicate_results") for s in summaries)
        if wrong or problems:
            raise CommandError(
                "The drill found problems: "
                + "; ".join(
                    [f"{wrong} false recoveries or duplicate results"] * bool(wrong) + problems
                ),
                returncode=1,
            )
        self.stdout.write(self.style.SUCCESS("Drill passed; everything it made was removed."))

    def drill(
        self,
        summaries: list[FaultSummary],
        timeouts: Timeouts,
        scoring_delay: int,
        trials: int,
        verbosity: int,
        say: Any,
    ) -> None:
        with Drill(timeouts=timeouts, delay_ms=scoring_delay, say=say) as drill:
            for summary in summaries:
                say(f"{summary.fault}: {DESCRIPTIONS[summary.fault]}")
                for number in range(1, trials + 1):
                    result = run_trial(drill, summary.fault)
                    summary.trials.append(result)
                    if verbosity >= 2 or result.problem:
                        say(f"  trial {number}: {describe(result)}")

    def check_prerequisites(self, timeouts: Timeouts) -> None:
        """A drill needs sane timeouts, and real workers on a queue of their own in a
        database they can share."""
        errors = [error for error in check_recovery_settings() if error.is_serious()]
        if errors:
            raise CommandError(
                "These liveness settings cannot be drilled: "
                + " ".join(f"{error.msg} {error.hint or ''}".strip() for error in errors)
            )
        if not stores_tasks_in_database():
            raise CommandError(
                "The recovery drill needs the run task's queue in the database (TASKS_BACKEND "
                "django_tasks_db.DatabaseBackend): its workers are `manage.py db_worker`."
            )
        queues = run_task().get_backend().queues
        if queues and DRILL_QUEUE not in queues:
            raise CommandError(
                f"The task backend does not accept the drill's queue {DRILL_QUEUE!r}: add it to "
                "TASKS['default']['QUEUES'] (qualifier/settings.py lists it)."
            )
        if connection.vendor == "sqlite" and connection.is_in_memory_db():
            raise CommandError(
                "The recovery drill needs a database its worker processes can open: this SQLite "
                "database is in memory."
            )

    def print_summary(self, summaries: list[FaultSummary], timeouts: Timeouts) -> None:
        header = (
            f"{'fault':<18} {'trials':>6} {'found by':<15} {'median':>7} {'worst':>7} "
            f"{'false rec.':>10} {'dup. results':>12} {'wasted calls':>12} {'fenced':>6}"
        )
        self.stdout.write("")
        self.stdout.write(header)
        for s in summaries:
            self.stdout.write(
                f"{s.fault:<18} {len(s.trials):>6} {s.causes:<15} {seconds(s.median):>7} "
                f"{seconds(s.worst):>7} {s.total('false_recoveries'):>10} "
                f"{s.total('duplicate_results'):>12} {s.total('wasted_calls'):>12} "
                f"{s.total('fenced_writes'):>6}"
            )
        self.stdout.write(
            f"A dead host's run should be found within {timeouts.detection_bound} s (worker "
            "timeout + sweep interval) and the time a sweep takes; median and worst are seconds "
            "from the fault to the run's recovery event."
        )


def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(signal.strsignal(signum))


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def describe(result: Any) -> str:
    if result.problem:
        return f"PROBLEM: {result.problem}"
    found = (
        f"recovered after {result.detected_after:.1f} s ({result.cause})"
        if result.detected_after is not None
        else "not recovered"
    )
    went_on = "" if result.went_on is None else f", woken worker went on: {result.went_on}"
    return (
        f"{found}, {result.false_recoveries} false recoveries, {result.duplicate_results} "
        f"duplicate results, {result.wasted_calls} wasted scorer calls, {result.fenced_writes} "
        f"fenced writes{went_on}"
    )
