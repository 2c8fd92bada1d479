"""Benchmark: the recovery sweep against the original's single raw UPDATE, on 1,000,000 runs.

The sweep (`recover_stuck_runs`, events included) and the bare UPDATE fail the same N stuck
runs of the same table, in rotation, with the data restored and vacuumed before every
measurement; the medians are compared. Also prints the queries per sweep, the plan of the stuck
query, and what an idle sweep costs with 0 and 2,000 runs queued behind live tasks. Target: at most 2.5x the raw UPDATE at N = 10,000, events included,
and queries per sweep constant in N.

    .venv/bin/python bench/sweep.py [--database-url URL] [--runs 1000000]
                                    [--stuck 100,10000,100000] [--repeats 9] [--idle-only]

--idle-only measures only what a periodic sweep that finds nothing costs (and lists its queries).

The database (default: qualifier_bench on 127.0.0.1) is created and migrated if needed and its
runs are replaced, so its name must contain "bench". Exits with status 1 when a target is
missed (or the stuck query does not use run_active_last_seen_idx).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/; the project must come first.
sys.path[0] = str(PROJECT_DIR)

from bench.common import create_database, describe_machine, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_bench"
TIMEOUT_MINUTES = 5
TARGET_N = 10_000
TARGET_RATIO = 2.5
#: The queued backlog of a busy day that an idle sweep must not pay for per run.
QUEUED_BACKLOG = 2_000
#: Every tenth of the newest runs may be made stuck; the others of the pool rest COMPLETED.
POOL_EVERY = 10
#: One run in HEALTHY_EVERY is a live PROCESSING run, one more a fresh PENDING run.
HEALTHY_EVERY = 1000
#: The original's recovery, adapted to this project's definition of stuck (the same N rows).
RAW_UPDATE = """
    UPDATE recovery_qualificationrun
    SET status = 'FAILED', completed_at = now()
    WHERE status IN ('PENDING', 'PROCESSING')
      AND COALESCE(heartbeat_at, started_at, created_at) < now() - interval '5 minutes'
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument(
        "--stuck",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[100, 10_000, 100_000],
        help="comma-separated numbers of stuck runs (default: 100,10000,100000)",
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--idle-only", action="store_true")
    args = parser.parse_args()
    parts = urlsplit(args.database_url)
    if parts.scheme not in ("postgres", "postgresql"):
        parser.error("the benchmark needs PostgreSQL (--database-url postgres://...)")
    if "bench" not in parts.path.lstrip("/"):
        parser.error(
            f"refusing to replace the runs of database {parts.path.lstrip('/')!r}: "
            "use a database whose name contains 'bench'"
        )
    if min(args.stuck) < 1 or max(args.stuck) * POOL_EVERY > args.runs:
        parser.error(f"each --stuck must be between 1 and --runs / {POOL_EVERY}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def execute(statement: str) -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement)
        return cursor.rowcount


def generate(runs: int) -> None:
    """All runs in one INSERT ... SELECT generate_series: mostly completed, a tenth failed, a
    thousandth live and as many fresh, and a pool (every tenth of the newest) that rests as
    COMPLETED until `arrange` makes N of them stuck."""
    execute(
        "TRUNCATE recovery_recoveryevent, recovery_qualificationrun, recovery_worker"
        " RESTART IDENTITY CASCADE"
    )
    # The live runs' worker, on another host, beating (arrange() keeps it beating).
    execute(
        "INSERT INTO recovery_worker (host, pid, registered_at, last_beat_at)"
        " VALUES ('bench-host', 1, now(), now())"
    )
    live, fresh = 1, 2  # g % HEALTHY_EVERY
    execute(
        f"""
        INSERT INTO recovery_qualificationrun (status, total, completed, criteria, created_at,
            started_at, heartbeat_at, completed_at, failure_reason, attempts, deaths,
            worked_seconds, task_id, queued_at, worker_id)
        SELECT CASE WHEN g % {HEALTHY_EVERY} = {live} THEN 'PROCESSING'
                    WHEN g % {HEALTHY_EVERY} = {fresh} THEN 'PENDING'
                    WHEN g % 10 = 3 THEN 'FAILED'
                    ELSE 'COMPLETED' END,
               50,
               CASE WHEN g % {HEALTHY_EVERY} IN ({live}, {fresh}) THEN g % 20
                    WHEN g % 10 = 3 THEN g % 50
                    ELSE 50 END,
               '{{}}'::jsonb,
               created,
               CASE WHEN g % {HEALTHY_EVERY} = {fresh} THEN NULL
                    ELSE created + interval '10 seconds' END,
               CASE WHEN g % {HEALTHY_EVERY} = {fresh} THEN NULL
                    ELSE created + interval '1 minute' END,
               CASE WHEN g % {HEALTHY_EVERY} IN ({live}, {fresh}) THEN NULL
                    ELSE created + interval '3 minutes' END,
               CASE WHEN g % 10 = 3 AND g % {HEALTHY_EVERY} NOT IN ({live}, {fresh})
                    THEN 'worker error' ELSE '' END,
               CASE WHEN g % {HEALTHY_EVERY} = {fresh} THEN 0 ELSE 1 END,
               0,
               CASE WHEN g % {HEALTHY_EVERY} = {fresh} THEN 0 ELSE 170 END,
               '',
               created,
               CASE WHEN g % {HEALTHY_EVERY} = {live} THEN 1 END
        FROM (
            SELECT g, now() - interval '1 hour' - ({runs} - g) * interval '7 seconds' AS created
            FROM generate_series(1, {runs}) AS g
        ) AS numbered
        """
    )


def arrange(runs: int, stuck: int) -> None:
    """Makes exactly the `stuck` newest pool runs stuck (as they were before any sweep), the
    rest of the pool COMPLETED and the live runs live; drops the events; vacuums."""
    first_stuck = runs - stuck * POOL_EVERY
    # A checkpoint now rather than during a measurement; the updates below then log the full
    # pages, so neither contender pays for full-page images (the steady state).
    execute("CHECKPOINT")
    # Stuck shapes: beat then went silent; started and never beat (every 30th); never
    # started (every 40th, PENDING).
    execute(
        f"""
        UPDATE recovery_qualificationrun
        SET status = CASE WHEN id % 40 = 0 THEN 'PENDING' ELSE 'PROCESSING' END,
            started_at = CASE WHEN id % 40 = 0 THEN NULL
                              ELSE created_at + interval '10 seconds' END,
            heartbeat_at = CASE WHEN id % 40 = 0 OR id % 30 = 0 THEN NULL
                                ELSE created_at + interval '1 minute' END,
            completed = CASE WHEN id % 40 = 0 THEN 0 ELSE id % 50 END,
            completed_at = NULL, failure_reason = '', queued_at = created_at,
            attempts = CASE WHEN id % 40 = 0 THEN 0 ELSE 1 END
        WHERE id % {POOL_EVERY} = 0 AND id > {first_stuck}
          AND (status NOT IN ('PENDING', 'PROCESSING') OR failure_reason <> '')
        """
    )
    execute(
        f"""
        UPDATE recovery_qualificationrun
        SET status = 'COMPLETED', completed = 50, started_at = created_at + interval '10 seconds',
            heartbeat_at = created_at + interval '1 minute',
            completed_at = created_at + interval '3 minutes', failure_reason = '', attempts = 1
        WHERE id % {POOL_EVERY} = 0 AND id <= {first_stuck} AND status <> 'COMPLETED'
        """
    )
    execute(
        f"UPDATE recovery_qualificationrun SET heartbeat_at = now() WHERE id % {HEALTHY_EVERY} = 1"
    )
    execute(
        f"UPDATE recovery_qualificationrun SET created_at = now(), queued_at = now()"
        f" WHERE id % {HEALTHY_EVERY} = 2"
    )
    execute("UPDATE recovery_worker SET last_beat_at = now()")
    execute("TRUNCATE recovery_recoveryevent")
    execute("VACUUM ANALYZE recovery_qualificationrun")
    execute("VACUUM ANALYZE recovery_recoveryevent")

    from recovery.sweep import stuck_runs

    found = stuck_runs(TIMEOUT_MINUTES).count()
    if found != stuck:
        raise SystemExit(f"data error: {found} stuck runs instead of {stuck}")


def sweep_once(stuck: int) -> float:
    from recovery.models import RecoveryEvent, RecoverySource
    from recovery.sweep import recover_stuck_runs

    started = time.perf_counter()
    report = recover_stuck_runs(
        source=RecoverySource.COMMAND, timeout_minutes=TIMEOUT_MINUTES, log=False
    )
    elapsed = time.perf_counter() - started
    if report.recovered_count != stuck or RecoveryEvent.objects.count() != stuck:
        raise SystemExit(f"the sweep recovered {report.recovered_count} runs, not {stuck}")
    return elapsed


def raw_once(stuck: int) -> float:
    started = time.perf_counter()
    changed = execute(RAW_UPDATE)
    elapsed = time.perf_counter() - started
    if changed != stuck:
        raise SystemExit(f"the raw UPDATE changed {changed} runs, not {stuck}")
    return elapsed


def warm_up(runs: int, stuck: int) -> int:
    """An untimed sweep under CaptureQueriesContext: its number of queries (BEGIN and COMMIT
    are logged too)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    arrange(runs, stuck)
    with CaptureQueriesContext(connection) as captured:
        sweep_once(stuck)
    return len(captured.captured_queries) - 1  # the last one is sweep_once's own check


def stuck_plan(runs: int, stuck: int) -> tuple[str, str]:
    """The stuck query as the sweep builds it, and its EXPLAIN ANALYZE."""
    from django.db import connection

    from recovery.sweep import stuck_runs

    arrange(runs, stuck)
    query = stuck_runs(TIMEOUT_MINUTES).order_by().values_list("pk")
    text = connection.ops.compose_sql(*query.query.sql_with_params())
    return text, query.explain(analyze=True)


def queue_behind_live_tasks(count: int) -> None:
    """`count` runs waiting in the queue for longer than the worker timeout, each with its task
    waiting in django-tasks-db's table: a busy day's backlog, none of it dead."""
    from django.db import connection

    from qualifier.tasks import execute_run

    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM recovery_qualificationrun WHERE id %% {POOL_EVERY} = 0"
            " AND status = 'COMPLETED' ORDER BY id LIMIT %s",
            [count],
        )
        ids = [row[0] for row in cursor.fetchall()]
        pairs = [(run_id, str(execute_run.enqueue(run_id).id)) for run_id in ids]
        cursor.execute(
            "UPDATE recovery_qualificationrun AS run SET status = 'PENDING', started_at = NULL,"
            " heartbeat_at = NULL, completed = 0, completed_at = NULL, worker_id = NULL,"
            " queued_at = now() - interval '1 hour', task_id = queued.task_id"
            " FROM (SELECT * FROM unnest(%s::bigint[], %s::text[])) AS queued (id, task_id)"
            " WHERE run.id = queued.id",
            [[run_id for run_id, _ in pairs], [task for _, task in pairs]],
        )


def idle_sweeps(
    runs: int, repeats: int, listing: list[str] | None = None, queued: int = 0
) -> tuple[float, int]:
    """What each server pays every RECOVERY_SWEEP_INTERVAL_SECONDS when nothing is dead, with
    `queued` runs waiting behind live tasks (`listing`, if given, receives the last sweep's
    statements)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django_tasks_db.models import DBTaskResult

    from recovery.models import RecoverySource
    from recovery.sweep import recover_stuck_runs

    arrange(runs, 0)
    DBTaskResult.objects.all().delete()
    if queued:
        queue_behind_live_tasks(queued)
        execute("VACUUM ANALYZE recovery_qualificationrun")
    times = []
    for _ in range(repeats):
        with CaptureQueriesContext(connection) as captured:
            started = time.perf_counter()
            report = recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
            times.append(time.perf_counter() - started)
        if report.recovered_count:
            raise SystemExit("the idle sweep recovered runs")
    if listing is not None:
        listing.extend(query["sql"] for query in captured.captured_queries)
    DBTaskResult.objects.all().delete()
    return statistics.median(times), len(captured.captured_queries)


def tally_alone(repeats: int) -> float:
    """The statement each sweep adds to count itself (`SweepTally.objects.record`)."""
    from recovery.models import RecoverySource, SweepOutcome, SweepTally

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        SweepTally.objects.record(RecoverySource.SWEEPER, SweepOutcome.OK, 0.005)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(
    runs: int, stuck: int, repeats: int, methods: dict[str, Callable[[int], float]]
) -> dict[str, list[float]]:
    """Rotates the contenders, each on freshly arranged data, so drift hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            arrange(runs, stuck)
            times[name].append(methods[name](stuck))
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def main() -> int:
    args = parse_args()
    create_database(args.database_url)
    setup_django(args.database_url)

    out = sys.stdout
    began = time.perf_counter()
    generate(args.runs)
    out.write(f"{args.runs:,} runs generated in {time.perf_counter() - began:.1f}s\n")
    out.write(f"Machine: {describe_machine()}\n")
    if args.idle_only:
        for queued in (0, QUEUED_BACKLOG):
            statements: list[str] = []
            idle, idle_queries = idle_sweeps(args.runs, args.repeats, statements, queued)
            out.write(
                f"A periodic sweep that finds nothing (source sweeper, {args.runs:,} runs, "
                f"{args.runs // HEALTHY_EVERY * 2:,} of them active and alive, {queued:,} "
                f"queued behind live tasks): median {ms(idle)} of {args.repeats}, "
                f"{idle_queries} queries:\n"
            )
            out.write("".join(f"  {' '.join(sql.split())[:140]}\n" for sql in statements))
        out.write(f"Of which the sweep's tally (one upsert), alone: median {ms(tally_alone(99))}\n")
        return 0
    out.write(f"Median of {args.repeats} rotating repeats, data restored before each.\n\n")
    out.flush()
    rows = []
    for stuck in args.stuck:
        queries = warm_up(args.runs, stuck)
        times = measure(args.runs, stuck, args.repeats, {"raw": raw_once, "sweep": sweep_once})
        medians = {name: statistics.median(values) for name, values in times.items()}
        # Each repeat measures all a moment apart: their ratio is steadier than either time.
        pairs = zip(times["raw"], times["sweep"], strict=True)
        paired = statistics.median(swept / raw for raw, swept in pairs)
        rows.append((stuck, medians, paired, queries))
        raw = medians["raw"]
        out.write(
            f"N={stuck:,}: raw UPDATE {ms(raw)}, sweep {ms(medians['sweep'])}, "
            f"ratio {medians['sweep'] / raw:.2f}x (median of paired ratios {paired:.2f}x), "
            f"{queries} queries per sweep\n"
        )
        for name, values in times.items():
            out.write(f"  {name + ':':10} {' '.join(f'{t * 1000:.0f}' for t in values)} ms\n")
        out.flush()

    out.write(
        f"\n| stuck runs (of {args.runs:,}) | raw UPDATE | recover_stuck_runs, events "
        "included | ratio | median of paired ratios | queries per sweep |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
    )
    for stuck, medians, paired, queries in rows:
        raw, swept = medians["raw"], medians["sweep"]
        out.write(
            f"| {stuck:,} | {ms(raw)} | {ms(swept)} | {swept / raw:.2f}x | {paired:.2f}x "
            f"| {queries} |\n"
        )

    plan_n = 10_000 if 10_000 in args.stuck else args.stuck[0]
    text, plan = stuck_plan(args.runs, plan_n)
    out.write(f"\nThe stuck query on {args.runs:,} runs, {plan_n:,} of them stuck:\n\n")
    out.write(f"    EXPLAIN ANALYZE {text}\n\n")
    out.write("".join(f"    {line}\n" for line in plan.splitlines()))
    uses_index = "Seq Scan on recovery_qualificationrun" not in plan
    out.write(f"\nThe runs table read through an index: {'yes' if uses_index else 'NO'}\n")
    for queued in (0, QUEUED_BACKLOG):
        idle, idle_queries = idle_sweeps(args.runs, args.repeats, queued=queued)
        out.write(
            f"A periodic sweep that finds nothing ({queued:,} runs queued behind live tasks): "
            f"median {ms(idle)}, {idle_queries} queries\n"
        )
    # A batch is a few statements whatever its size: queries grow only by one batch's worth
    # per BATCH_SIZE runs, never per run.
    from recovery.sweep import BATCH_SIZE

    per_batch = {
        queries - 5 * -(-stuck // BATCH_SIZE) for stuck, *_, queries in rows
    }  # 5 statements per batch
    constant = len(per_batch) == 1
    out.write(f"Queries per sweep constant in N, batches aside: {'yes' if constant else 'NO'}\n")
    ratios = {stuck: medians["sweep"] / medians["raw"] for stuck, medians, *_ in rows}
    met = ratios.get(TARGET_N, 0.0) <= TARGET_RATIO
    if TARGET_N in ratios:
        out.write(
            f"Target sweep <= {TARGET_RATIO}x raw UPDATE at N={TARGET_N:,}: "
            f"{'met' if met else 'MISSED'} ({ratios[TARGET_N]:.2f}x)\n"
        )
    out.write(f"Total time: {time.perf_counter() - began:.0f}s\n")
    return 0 if uses_index and constant and met else 1


if __name__ == "__main__":
    sys.exit(main())
