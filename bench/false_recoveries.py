"""False recoveries under the conditions the liveness defaults are chosen for, and what beats
cost: real `manage.py db_worker` processes on PostgreSQL, one condition per database.

A *false recovery* is a recovery of a run whose worker was still making progress or beating.
Each condition counts every recovery event (hand-backs of the script's own SIGTERMs at the end
apart), the workers whose row a sweep removed while they lived (they register again; not a
run recovery, but counted), duplicate results, and the database writes on the workers' table
(pg_stat_user_tables: beats are its updates) and the sweeps' tallies per worker and second.

- crowd: 30 workers on this machine for --minutes, with 45 runs of 2,000 prospects (100 ms
  each): every worker busy, half of them taking a second run.
- lock: 4 workers with long runs; the workers' table locked for 45 s (ACCESS EXCLUSIVE, as a
  migration would), then its rows locked for 45 s (SELECT ... FOR UPDATE: beats wait, reads do
  not), while the runs progress.
- latency: 4 workers behind a proxy that adds --latency seconds to every packet each way
  (tests/latency_proxy.py), their runs progressing; a sweeper outside the proxy.
- freeze: 4 workers with long runs; in turn, one worker's supervisor alone, then its executor
  alone, is stopped with SIGSTOP for 40 s (neither may cause a recovery); then one whole worker
  for 40 s (past the timeout: recovered by design; its late writes must be refused, it must
  register again, and no prospect may get two results).

Every condition also runs one worker on an empty queue outside any fault: it sweeps.

    .venv/bin/python bench/false_recoveries.py latency lock freeze --database-url postgres://postgres@127.0.0.1:5432/qualifier_falsebench
    .venv/bin/python bench/false_recoveries.py crowd --minutes 5 --database-url ...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    create_benchmark_run,
    create_database,
    describe_machine,
    parse_database_url,
    setup_django,
)
from bench.liveness import Proc, use_database, worker

CONDITIONS = ("crowd", "lock", "latency", "freeze")


def settings_env(args: argparse.Namespace) -> dict[str, str]:
    env = {}
    for name, value in (
        ("RECOVERY_HEARTBEAT_SECONDS", args.heartbeat),
        ("RECOVERY_WORKER_TIMEOUT_SECONDS", args.timeout),
        ("RECOVERY_SWEEP_INTERVAL_SECONDS", args.interval),
    ):
        if value is not None:
            env[name] = str(value)
    return env


def table_writes() -> tuple[int, int]:
    """Updates (beats, executor pids) on the workers' table, and upserts of sweep tallies."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT relname, n_tup_upd + n_tup_ins FROM pg_stat_user_tables "
            "WHERE relname IN ('recovery_worker', 'recovery_sweeptally')"
        )
        rows = dict(cursor.fetchall())
    return rows.get("recovery_worker", 0), rows.get("recovery_sweeptally", 0)


def start_workers(url: str, count: int, name: str, env: dict[str, str], **extra: str) -> list[Proc]:
    return [worker(f"{name}-{n}", url, **env, **extra) for n in range(count)]


def wait_registered(count: int, timeout: float = 300) -> None:
    from recovery.models import Worker

    deadline = time.monotonic() + timeout
    while Worker.objects.filter(executor_pid__isnull=False).count() < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {Worker.objects.count()} of {count} workers registered")
        time.sleep(0.5)


def outcome(
    started_pk: int,
    seconds: float,
    workers: int,
    writes: tuple[int, int],
    until_pk: int | None = None,
) -> str:
    """What happened since the event `started_pk` (up to `until_pk`), counted before the
    script stops its workers (stopping them is no part of a condition)."""
    from django.db.models import Count

    from qualifier.models import ProspectResult
    from recovery.models import QualificationRun, RecoveryEvent

    events = RecoveryEvent.objects.filter(pk__gt=started_pk).exclude(source="shutdown")
    if until_pk is not None:
        events = events.filter(pk__lte=until_pk)
    by_cause = dict(events.order_by().values_list("cause").annotate(n=Count("pk")))
    duplicates = (
        ProspectResult.objects.values("run", "prospect")
        .annotate(n=Count("pk"))
        .filter(n__gt=1)
        .count()
    )
    statuses = dict(
        QualificationRun.objects.order_by().values_list("status").annotate(n=Count("pk"))
    )
    beats, tallies = table_writes()
    return (
        f"false recoveries {sum(by_cause.values())} {by_cause or ''}, duplicate results "
        f"{duplicates}, "
        f"runs {statuses}; per worker per second: {(beats - writes[0]) / seconds / workers:.2f} "
        f"writes on the workers' table, {(tallies - writes[1]) / seconds / workers:.2f} sweep "
        f"tallies ({workers} workers, {seconds:.0f} s)"
    )


def run_condition(name: str, url: str, args: argparse.Namespace) -> str:
    from bench.liveness import LOGS
    from recovery.models import RecoveryEvent

    use_database(url)
    for old_log in LOGS.glob(f"fr-{name}-*.log"):
        old_log.unlink()
    env = settings_env(args)
    latest = RecoveryEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    procs: list[Proc] = [worker(f"fr-{name}-sweeper", url, queue="bench-idle", **env)]
    try:
        if name == "crowd":
            for _ in range(45):
                create_benchmark_run(2000)  # 200 s each: half the workers take a second run
            procs += start_workers(url, 30, f"fr-{name}", env, QUALIFIER_SCORING_DELAY_MS="100")
            wait_registered(31)
            writes, started = table_writes(), time.monotonic()
            time.sleep(args.minutes * 60)
            summary = outcome(latest, time.monotonic() - started, 31, writes)
        elif name == "latency":
            from tests.latency_proxy import LatencyProxy

            parts = parse_database_url(url)
            proxy = LatencyProxy((parts["HOST"], int(parts["PORT"] or 5432)), 0.0)
            proxy.__enter__()
            try:
                proxied = url.replace(f"{parts['HOST']}:{parts['PORT']}", f"127.0.0.1:{proxy.port}")
                for _ in range(4):
                    create_benchmark_run(3000)  # each longer than the condition
                procs += start_workers(
                    proxied, 4, f"fr-{name}", env, QUALIFIER_SCORING_DELAY_MS="100"
                )
                wait_registered(5)
                time.sleep(10)
                proxy.set_delay(args.latency)
                writes, started = table_writes(), time.monotonic()
                time.sleep(args.minutes * 60)
                summary = outcome(latest, time.monotonic() - started, 5, writes)
            finally:
                for proc in procs:
                    proc.stop()
                proxy.__exit__(None, None, None)
        elif name == "lock":
            for _ in range(4):
                create_benchmark_run(3000)
            procs += start_workers(url, 4, f"fr-{name}", env, QUALIFIER_SCORING_DELAY_MS="100")
            wait_registered(5)
            writes, started = table_writes(), time.monotonic()
            time.sleep(15)
            hold_lock(url, "LOCK TABLE recovery_worker IN ACCESS EXCLUSIVE MODE", 45)
            time.sleep(30)
            hold_lock(url, "SELECT id FROM recovery_worker FOR UPDATE", 45)
            time.sleep(30)
            summary = outcome(latest, time.monotonic() - started, 5, writes)
        else:  # freeze
            for _ in range(4):
                create_benchmark_run(3000)
            procs += start_workers(url, 4, f"fr-{name}", env, QUALIFIER_SCORING_DELAY_MS="100")
            wait_registered(5)
            writes, started = table_writes(), time.monotonic()
            victims = procs[1:]
            for proc in victims[:2]:
                for alone in ("supervisor", "executor"):
                    pids = [proc.popen.pid] if alone == "supervisor" else proc.children()
                    pause(pids, 40)
                    time.sleep(10)
            before = RecoveryEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
            whole = victims[2]
            pause([whole.popen.pid, *whole.children()], 40)
            time.sleep(30)
            by_design = RecoveryEvent.objects.filter(pk__gt=before).exclude(source="shutdown")
            from recovery.models import FencedWrite

            summary = (
                outcome(latest, time.monotonic() - started, 5, writes, until_pk=before)
                + f"; whole worker stopped 40 s: {by_design.count()} recoveries by design "
                f"({', '.join(sorted(set(by_design.values_list('cause', flat=True))))}), "
                f"refused late writes {FencedWrite.objects.count()}"
            )
    finally:
        for proc in procs:
            proc.stop()
    return f"{name}: {summary}; workers found dead while alive {found_dead_while_alive_in(name)}"


def found_dead_while_alive_in(name: str) -> int:
    from bench.liveness import LOGS

    return sum(
        log.read_text(errors="replace").count("found dead by a sweep while it lives")
        for log in LOGS.glob(f"fr-{name}-*.log")
    )


def pause(pids: list[int], seconds: float) -> None:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def hold_lock(url: str, statement: str, seconds: float) -> None:
    import psycopg

    parts = parse_database_url(url)
    with psycopg.connect(
        host=parts["HOST"], port=parts["PORT"] or 5432, user=parts["USER"], dbname=parts["NAME"]
    ) as conn:
        conn.execute(statement)
        time.sleep(seconds)
        conn.rollback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("conditions", nargs="+", choices=CONDITIONS)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--minutes", type=float, default=3)
    parser.add_argument("--latency", type=float, default=2.0)
    parser.add_argument("--heartbeat", type=int)
    parser.add_argument("--timeout", type=int)
    parser.add_argument("--interval", type=int)
    args = parser.parse_args()
    create_database(args.database_url)
    setup_django(args.database_url)
    from django.conf import settings

    print(describe_machine())
    overrides = settings_env(args)
    print(
        "heartbeat {} s, worker timeout {} s, sweep interval {} s".format(
            overrides.get("RECOVERY_HEARTBEAT_SECONDS", settings.RECOVERY_HEARTBEAT_SECONDS),
            overrides.get(
                "RECOVERY_WORKER_TIMEOUT_SECONDS", settings.RECOVERY_WORKER_TIMEOUT_SECONDS
            ),
            overrides.get(
                "RECOVERY_SWEEP_INTERVAL_SECONDS", settings.RECOVERY_SWEEP_INTERVAL_SECONDS
            ),
        ),
        flush=True,
    )
    if len(args.conditions) == 1:
        name = args.conditions[0]
        print(run_condition(name, f"{args.database_url}_{name}", args), flush=True)
        return
    # Side by side, each in a process of its own (one database connection setting each).
    children = [
        subprocess.Popen([sys.executable, *sys.argv[:1], name, *rest(sys.argv[1:])])
        for name in args.conditions
    ]
    sys.exit(max(child.wait() for child in children))


def rest(argv: list[str]) -> list[str]:
    """The command line without the condition names."""
    return [arg for arg in argv if arg not in CONDITIONS]


if __name__ == "__main__":
    main()
