"""Benchmark: how long a second user's small run waits behind a first user's backlog, with
queued runs taken round robin across owners (RECOVERY_QUEUE_ORDER=fair) and first come, first
served (fifo).

Each trial empties the database, queues `--runs` runs of `--prospects` prospects for alice and
then one 3-prospect run for bob (all in one transaction, so they enter the queue together),
and starts `--workers` real `manage.py db_worker` processes. Measured on the database's clock:
how long bob's run waited (from the first run's start, so the workers' own start does not
count), and how long one of alice's runs takes to execute; both orders are run one after the other on the same machine.

    .venv/bin/python bench/fairness.py [--database-url URL] [--workers 2] [--runs 5]
        [--prospects 300] [--delay-ms 10]

The database (default qualifier_fairbench on 127.0.0.1; sqlite:////path also works) is created
and migrated if needed, and emptied of runs, tasks and workers first (use a database of its
own); every worker started here is stopped before the script ends.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
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

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_fairbench"
ORDERS = ("fifo", "fair")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--prospects", type=int, default=300)
    parser.add_argument("--delay-ms", type=int, default=10)
    return parser.parse_args()


def trial(args: argparse.Namespace, order: str, logs: Path) -> tuple[float, float, int]:
    """(bob's wait after the first start, mean execution of alice's runs, alice's runs started
    before bob's)."""
    from django.contrib.auth import get_user_model
    from django.db import transaction
    from django.test.utils import override_settings

    from qualifier.runs import create_run
    from recovery.clock import SecondsBetween
    from recovery.models import QualificationRun

    clean_slate()
    users = get_user_model().objects
    alice = users.get_or_create(username="alice")[0]
    bob = users.get_or_create(username="bob")[0]
    with (
        override_settings(RECOVERY_QUEUE_ORDER=order, QUALIFIER_MAX_ACTIVE_RUNS_PER_USER=1000),
        transaction.atomic(),
    ):
        for _ in range(args.runs):
            create_run(user=alice, prospects=qualifying_prospects(args.prospects))
        bobs = create_run(user=bob, prospects=qualifying_prospects(3)).pk
    workers = [
        start_worker(
            args.database_url,
            logs / f"{order}-{n}.log",
            RECOVERY_QUEUE_ORDER=order,
            QUALIFIER_SCORING_DELAY_MS=str(args.delay_ms),
        )
        for n in range(args.workers)
    ]
    try:
        deadline = time.monotonic() + 600
        while QualificationRun.objects.exclude(status="COMPLETED").exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the runs did not complete; see the logs in {logs}")
            time.sleep(0.2)
    finally:
        stop(workers)
    runs = QualificationRun.objects.annotate(
        took=SecondsBetween("started_at", "completed_at"),
    )
    bob_run = runs.get(pk=bobs)
    alices = list(runs.exclude(pk=bobs))
    ahead = sum(1 for run in alices if run.started_at < bob_run.started_at)
    first_start = min(run.started_at for run in [bob_run, *alices])
    waited = (bob_run.started_at - first_start).total_seconds()
    return waited, sum(run.took for run in alices) / len(alices), ahead


def main() -> None:
    args = parse_args()
    create_database(args.database_url)
    setup_django(args.database_url)
    logging.getLogger("qualifier").setLevel(logging.WARNING)  # not a line per run created
    print(f"Machine: {describe_machine()}")
    print(
        f"{args.workers} workers; alice queues {args.runs} runs of {args.prospects} prospects "
        f"({args.delay_ms} ms each), then bob queues one run of 3."
    )
    print()
    print("| order | bob's run waited | alice's runs started before it | one of alice's runs |")
    print("| --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="fairbench-") as logs:
        for order in ORDERS:
            waited, took, ahead = trial(args, order, Path(logs))
            print(f"| {order} | {waited:.1f} s | {ahead} of {args.runs} | {took:.1f} s |")


if __name__ == "__main__":
    main()
