"""Benchmark: one run on many workers (slices), with real `manage.py db_worker` processes.

Three measurements, each in one run on this machine:

1. Scale-out. A run of `--prospects` prospects with a `--delay-ms` scorer, in slices of
   `--slice-size`, on 1, 2 and 4 workers: the time from its first start to its completion (the
   database's clock), as a ratio to 1 worker; and the workers' CPU time per prospect (user +
   system of every worker process, from the run's first start to its end), against the same
   run worked whole by one worker (a slice as large as the run: the single-task pipeline).
2. Fairness. Alice queues `--fair-runs` runs of `--fair-prospects`; once the workers are on
   them, bob queues a 3-prospect run. How long bob's run waited to start, in slice times (a
   slice's mean time to work, measured in the same trial).
3. Recovery per slice. Under `resume`, one of 3 workers on one run is SIGKILLed mid-slice: the
   run completes, with one result per prospect, and the recovery events name only the killed
   worker's slice.

    .venv/bin/python bench/slices.py [--database-url URL] [--prospects 2000] [--delay-ms 50]
        [--slice-size 100] [--workers 1,2,4] [--fair-runs 5] [--fair-prospects 5000]

The database (default qualifier_slicebench on 127.0.0.1) is created and migrated if needed and
emptied of runs, tasks and workers before each trial (use a database of its own).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(PROJECT_DIR)

from bench.common import (  # noqa: E402
    clean_slate,
    create_database,
    describe_machine,
    qualifying_prospects,
    setup_django,
    start_worker,
    stop,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_slicebench"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--prospects", type=int, default=2000)
    parser.add_argument("--delay-ms", type=int, default=50)
    parser.add_argument("--slice-size", type=int, default=100)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--fair-runs", type=int, default=5)
    parser.add_argument("--fair-prospects", type=int, default=5000)
    parser.add_argument("--fair-workers", type=int, default=2)
    parser.add_argument(
        "--parts", default="scale,fair,kill", help="which measurements, comma-separated"
    )
    return parser.parse_args()


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a worker: its supervisor and executor)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with suppress(OSError):
            for child in (task / "children").read_text().split():
                found += process_tree(int(child))
    return found


def cpu_seconds(workers: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU of every process of these workers so far."""
    total = 0
    for worker in workers:
        for pid in process_tree(worker.pid):
            with suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLOCK_TICKS


def wait_for(check: Callable[[], bool], what: str, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def scale_out(args: argparse.Namespace, workers: int, slice_size: int, logs: Path) -> tuple:
    """(seconds from first start to completion, worker CPU seconds per prospect, slices)."""
    from django.test.utils import override_settings

    from qualifier.runs import create_run
    from recovery.clock import SecondsBetween
    from recovery.models import QualificationRun

    clean_slate()
    with override_settings(RECOVERY_SLICE_SIZE=slice_size):
        run = create_run(user=None, prospects=qualifying_prospects(args.prospects))
    started = [
        start_worker(
            args.database_url,
            logs / f"scale-{workers}-{slice_size}-{n}.log",
            QUALIFIER_SCORING_DELAY_MS=str(args.delay_ms),
        )
        for n in range(workers)
    ]
    try:
        # Count CPU from the run's first start: the workers' own start is not the pipeline's.
        wait_for(
            lambda: QualificationRun.leases.filter(
                status="PROCESSING", **({"parent": run} if run.slice_count else {"pk": run.pk})
            ).exists(),
            "the first start",
        )
        before = cpu_seconds(started)
        wait_for(
            lambda: QualificationRun.objects.filter(pk=run.pk, status="COMPLETED").exists(),
            "completion",
        )
        after = cpu_seconds(started)
    finally:
        stop(started)
    took = QualificationRun.objects.annotate(took=SecondsBetween("started_at", "completed_at")).get(
        pk=run.pk
    )
    return took.took, (after - before) / args.prospects, run.slice_count or 1


def fairness(args: argparse.Namespace, logs: Path) -> tuple[float, float, int]:
    """(bob's wait in seconds, a slice's mean time, alice's slices started before bob's)."""
    from django.contrib.auth import get_user_model
    from django.db.models import Avg
    from django.test.utils import override_settings

    from qualifier.runs import create_run
    from recovery.clock import SecondsBetween
    from recovery.models import QualificationRun

    clean_slate()
    users = get_user_model().objects
    alice = users.get_or_create(username="alice")[0]
    bob = users.get_or_create(username="bob")[0]
    limits = {"QUALIFIER_MAX_ACTIVE_RUNS_PER_USER": 1000, "RECOVERY_SLICE_SIZE": args.slice_size}
    with override_settings(**limits):
        for _ in range(args.fair_runs):
            create_run(user=alice, prospects=qualifying_prospects(args.fair_prospects))
    workers = [
        start_worker(
            args.database_url,
            logs / f"fair-{n}.log",
            QUALIFIER_SCORING_DELAY_MS=str(args.delay_ms),
        )
        for n in range(args.fair_workers)
    ]
    try:
        # Bob submits once every worker is busy with alice's slices.
        wait_for(
            lambda: (
                QualificationRun.leases.filter(status="PROCESSING").count() >= args.fair_workers
            ),
            "the workers on alice's runs",
        )
        time.sleep(args.slice_size * args.delay_ms / 1000 / 2)  # mid-slice
        with override_settings(**limits):
            bobs = create_run(user=bob, prospects=qualifying_prospects(3))
        wait_for(
            lambda: QualificationRun.objects.filter(pk=bobs.pk, status="COMPLETED").exists(),
            "bob's run",
        )
    finally:
        stop(workers)
    bob_run = QualificationRun.objects.annotate(
        waited=SecondsBetween("created_at", "started_at")
    ).get(pk=bobs.pk)
    slice_time = (
        QualificationRun.leases.filter(parent__user=alice, status="COMPLETED")
        .annotate(took=SecondsBetween("started_at", "completed_at"))
        .aggregate(mean=Avg("took"))["mean"]
    )
    ahead = QualificationRun.leases.filter(
        parent__user=alice, started_at__gt=bob_run.created_at, started_at__lt=bob_run.started_at
    ).count()
    return bob_run.waited, slice_time, ahead


def kill_one_of_three(args: argparse.Namespace, logs: Path) -> dict[str, object]:
    """SIGKILL one of 3 workers on one run under resume; what recovery did."""
    from django.db.models import Count
    from django.test.utils import override_settings

    from qualifier.models import ProspectResult
    from qualifier.runs import create_run
    from recovery.clock import SecondsBetween
    from recovery.models import FencedWrite, QualificationRun, RecoveryEvent, Worker

    clean_slate()
    with override_settings(RECOVERY_SLICE_SIZE=args.slice_size):
        run = create_run(user=None, prospects=qualifying_prospects(args.prospects))
    settings = {
        "QUALIFIER_SCORING_DELAY_MS": str(args.delay_ms),
        "RECOVERY_POLICY": "resume",
        "RECOVERY_SWEEP_INTERVAL_SECONDS": "1",
    }
    workers = [
        start_worker(args.database_url, logs / f"kill-{n}.log", **settings) for n in range(3)
    ]
    try:
        in_hand = QualificationRun.leases.filter(parent=run, status="PROCESSING")
        victim = workers[0]
        wait_for(lambda: Worker.objects.filter(pid=victim.pid).exists(), "the victim's row")
        row = Worker.objects.get(pid=victim.pid)
        wait_for(
            lambda: in_hand.count() >= 3 and in_hand.filter(worker=row, completed__gt=0).exists(),
            "three workers on it, the victim's slice with results",
        )
        lost = in_hand.get(worker=row)
        others = dict(in_hand.exclude(pk=lost.pk).values_list("pk", "attempts"))
        for pid in process_tree(victim.pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        victim.wait(10)
        wait_for(
            lambda: QualificationRun.objects.filter(pk=run.pk, status="COMPLETED").exists(),
            "completion",
        )
    finally:
        stop(workers)
    results = ProspectResult.objects.filter(run=run).aggregate(
        rows=Count("pk"), prospects=Count("prospect", distinct=True)
    )
    events = list(RecoveryEvent.objects.filter(run=run).values_list("slice_id", "cause"))
    untouched = dict(QualificationRun.leases.filter(pk__in=others).values_list("pk", "attempts"))
    took = QualificationRun.objects.annotate(took=SecondsBetween("started_at", "completed_at")).get(
        pk=run.pk
    )
    return {
        "seconds": took.took,
        "results": results["rows"],
        "prospects with a result": results["prospects"],
        "events": events,
        "lost slice": lost.pk,
        "other slices in hand, attempts before and after": (others, untouched),
        "fenced writes": FencedWrite.objects.count(),
    }


def main() -> None:
    args = parse_args()
    create_database(args.database_url)
    setup_django(args.database_url)
    logging.getLogger("qualifier").setLevel(logging.WARNING)
    print(f"Machine: {describe_machine()}")
    print()
    parts = set(args.parts.split(","))
    with tempfile.TemporaryDirectory(prefix="slicebench-") as tmp:
        logs = Path(tmp)
        if "scale" in parts:
            print(
                f"## Scale-out: one run of {args.prospects:,} prospects, {args.delay_ms} ms "
                f"each, slices of {args.slice_size}"
            )
            print()
            print("| workers | slices | time to complete | speed-up | worker CPU per prospect |")
            print("| ---: | ---: | ---: | ---: | ---: |")
            whole_took, whole_cpu, _ = scale_out(args, 1, args.prospects, logs)
            print(
                f"| 1 (whole) | 1 | {whole_took:.1f} s | 1.00× | "
                f"{whole_cpu * 1000:.2f} ms (1.00×) |"
            )
            base = None
            for count in [int(n) for n in args.workers.split(",")]:
                took, cpu, slices = scale_out(args, count, args.slice_size, logs)
                base = base or took
                print(
                    f"| {count} | {slices} | {took:.1f} s | {base / took:.2f}× | "
                    f"{cpu * 1000:.2f} ms ({cpu / whole_cpu:.2f}×) |"
                )
            print()
        if "fair" in parts:
            print(
                f"## Fairness: bob's 3-prospect run behind alice's {args.fair_runs} runs of "
                f"{args.fair_prospects:,}, {args.fair_workers} workers"
            )
            waited, slice_time, ahead = fairness(args, logs)
            print()
            print(
                f"Bob's run waited {waited:.2f} s to start = {waited / slice_time:.2f} slice "
                f"times (a slice took {slice_time:.2f} s); {ahead} of alice's slices started "
                "in between."
            )
            print()
        if "kill" in parts:
            print("## Recovery per slice: SIGKILL one of 3 workers on one run (resume)")
            print()
            for name, value in kill_one_of_three(args, logs).items():
                print(f"- {name}: {value}")


if __name__ == "__main__":
    main()
