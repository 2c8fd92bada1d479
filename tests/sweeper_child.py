"""A recovery sweep in a process of its own, for the concurrency tests.

`python -m tests.sweeper_child sweep ...` sets Django up against DATABASE_URL, connects, says it
is ready (a file), waits for the start signal (another file) so that every sweeper calls
`recover_stuck_runs()` at the same moment, and prints its report as one JSON line. `seed` and
`summary` create and inspect the runs of a database the test process cannot reach itself (a
process database). The functions are also imported by the tests, so nothing here touches
Django at import time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

#: The runs `seed` makes, by kind; the stuck ones are silent for far longer than any timeout.
STUCK_SILENT_MINUTES = 30
START_TIMEOUT_SECONDS = 60.0


def waiting_task_id() -> str:
    """A task waiting in django-tasks-db's queue, for a run that is waiting, not dead."""
    from django_tasks_db.models import DBTaskResult

    task = DBTaskResult.objects.create(
        status="READY", task_path="qualifier.tasks.execute_run", args_kwargs={}
    )
    return str(task.id)


def seed(*, stuck: int, healthy: int, finished: int) -> dict[str, list[int]]:
    """Stuck runs of every shape (beat long ago, started and never beat, queued without a task),
    healthy active runs (a live worker; queued with a waiting task), and finished runs as old as
    the stuck ones."""
    from django.utils import timezone

    from recovery.models import QualificationRun, RunStatus, Worker

    now = timezone.now()
    old = now - dt.timedelta(minutes=STUCK_SILENT_MINUTES)
    ancient = now - dt.timedelta(minutes=STUCK_SILENT_MINUTES * 4)
    # On another host, and beating far into the future: alive for as long as the test runs.
    live = Worker.objects.create(
        host="live-host.test", pid=1, last_beat_at=now + dt.timedelta(days=1)
    )

    def stuck_run(index: int) -> QualificationRun:
        shape = index % 3
        if shape == 0:  # beat, then went silent
            return QualificationRun(
                status=RunStatus.PROCESSING,
                total=10,
                completed=index % 10,
                created_at=ancient,
                started_at=ancient,
                heartbeat_at=old,
                attempts=1,
            )
        if shape == 1:  # died before its first heartbeat was written
            return QualificationRun(
                status=RunStatus.PROCESSING,
                total=10,
                created_at=ancient,
                started_at=old,
                attempts=1,
            )
        return QualificationRun(status=RunStatus.PENDING, total=10, created_at=old, queued_at=old)

    def healthy_run(index: int) -> QualificationRun:
        if index % 2:  # waiting behind a live task: waiting, however slowly the test starts
            return QualificationRun(
                status=RunStatus.PENDING,
                total=10,
                created_at=now,
                queued_at=now,
                task_id=waiting_task_id(),
            )
        return QualificationRun(
            worker=live,
            status=RunStatus.PROCESSING,
            total=10,
            completed=3,
            created_at=ancient,
            started_at=ancient,
            heartbeat_at=now,
            attempts=1,
        )

    def finished_run(index: int) -> QualificationRun:
        status = RunStatus.COMPLETED if index % 2 else RunStatus.FAILED
        return QualificationRun(
            status=status,
            total=10,
            completed=10 if status == RunStatus.COMPLETED else 4,
            created_at=ancient,
            started_at=ancient,
            heartbeat_at=old,
            completed_at=old,
            failure_reason="" if status == RunStatus.COMPLETED else "worker error",
            attempts=1,
        )

    def create(runs: list[QualificationRun]) -> list[int]:
        return [run.pk for run in QualificationRun.objects.bulk_create(runs, batch_size=1000)]

    return {
        "stuck": create([stuck_run(i) for i in range(stuck)]),
        "healthy": create([healthy_run(i) for i in range(healthy)]),
        "finished": create([finished_run(i) for i in range(finished)]),
    }


def run_states(ids: list[int]) -> dict[str, list[str]]:
    """What a sweep must leave alone: status, clocks, progress and reason, by id."""
    from recovery.models import QualificationRun

    rows = QualificationRun.objects.filter(pk__in=ids).values_list(
        "pk", "status", "completed", "heartbeat_at", "completed_at", "failure_reason"
    )
    return {str(pk): [str(value) for value in rest] for pk, *rest in rows}


def summary(stuck: list[int], untouched: list[int]) -> dict[str, Any]:
    """The facts the exactly-once assertions need, as JSON-friendly values."""
    from django.db.models import Count

    from recovery.models import QualificationRun, RecoveryEvent, RunStatus

    runs = QualificationRun.objects
    per_run = RecoveryEvent.objects.values("run_id").annotate(n=Count("pk"))
    return {
        "failed_stuck": runs.filter(pk__in=stuck, status=RunStatus.FAILED).count(),
        "events": RecoveryEvent.objects.count(),
        "event_run_ids": sorted(RecoveryEvent.objects.values_list("run_id", flat=True)),
        "max_events_per_run": max((row["n"] for row in per_run), default=0),
        "events_by_pid": {
            str(row["pid"]): row["n"]
            for row in RecoveryEvent.objects.values("pid").annotate(n=Count("pk"))
        },
        "untouched": run_states(untouched),
    }


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"no start signal ({path}) within {START_TIMEOUT_SECONDS}s")
        time.sleep(0.001)


def sweep(args: argparse.Namespace) -> dict[str, Any]:
    from django.db import connection

    from recovery import sweep as sweep_module

    if args.batch_size:
        sweep_module.BATCH_SIZE = args.batch_size
    connection.ensure_connection()
    Path(args.ready).touch()
    _wait_for(Path(args.go))
    report = sweep_module.recover_stuck_runs(source=args.source, log=False)
    return {
        "pid": os.getpid(),
        "recovered": [run.id for run in report.recovered],
        "stuck_count": report.stuck_count,
        "skipped_reason": report.skipped_reason,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sweeper_child")
    commands = parser.add_subparsers(dest="command", required=True)
    seeding = commands.add_parser("seed")
    seeding.add_argument("--stuck", type=int, required=True)
    seeding.add_argument("--healthy", type=int, default=0)
    seeding.add_argument("--finished", type=int, default=0)
    sweeping = commands.add_parser("sweep")
    sweeping.add_argument("--source", required=True)
    sweeping.add_argument("--ready", required=True)
    sweeping.add_argument("--go", required=True)
    sweeping.add_argument("--batch-size", type=int, default=0)
    summing = commands.add_parser("summary")
    summing.add_argument("ids", help="JSON file with the 'stuck' and 'untouched' run ids")
    args = parser.parse_args(argv)

    import django

    django.setup()
    if args.command == "seed":
        result: Any = seed(stuck=args.stuck, healthy=args.healthy, finished=args.finished)
        result["untouched_states"] = run_states(result["healthy"] + result["finished"])
    elif args.command == "sweep":
        result = sweep(args)
    else:
        ids = json.loads(Path(args.ids).read_text())
        result = summary(ids["stuck"], ids["untouched"])
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
