"""The cost of the admin's recovery overview with many runs and many recoveries (PostgreSQL).

    .venv/bin/python bench/overview.py [--database-url URL] [--runs 100000] [--events 1000 10000 100000]

The runs come from bench/sweep.py's `generate()`; then, for each size, that many recovery
events spread evenly over the last 7 days (the window both charts read), with every cause.
The page is requested through the whole Django stack as a signed-in superuser: two warm-ups,
then the median of the repeats, with the number of queries. The database's name must contain
"bench"; its runs are replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from urllib.parse import urlsplit

# Run as a script, sys.path[0] is bench/; the project must come first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import create_database, describe_machine, setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_overview_bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        parser.error("the benchmark needs PostgreSQL (--database-url postgres://...)")
    if "bench" not in urlsplit(args.database_url).path:
        parser.error("use a database whose name contains 'bench': its runs are replaced")
    return args


def spread_events(events: int) -> int:
    """`events` recovery events over the last 7 days, for the runs with a heartbeat (reused
    in turn when there are more events than runs), every cause, 5 s to 50 min after a beat."""
    from bench.sweep import execute

    execute("TRUNCATE recovery_recoveryevent")
    return execute(
        f"""
        INSERT INTO recovery_recoveryevent (run_id, created_at, from_status, to_status, source,
            cause, reason, completed, total, heartbeat_at, host, pid)
        SELECT run.id, at, 'PROCESSING', CASE WHEN g % 3 = 0 THEN 'PENDING' ELSE 'FAILED' END,
               (ARRAY['sweeper', 'startup', 'shutdown', 'command'])[1 + g % 4],
               (ARRAY['worker_silent', 'worker_gone', 'process_gone', 'no_progress', 'no_task',
                      'forced', 'shutdown', 'crashed', ''])[1 + g % 9],
               'bench', 0, 50, at - (5 + g % 3000) * interval '1 second', 'bench-host', 1
        FROM generate_series(1, {events}) AS g
        CROSS JOIN LATERAL (
            SELECT now() - (g * interval '604000 seconds' / {events}) AS at
        ) AS moment
        JOIN recovery_qualificationrun AS run
            ON run.id = 1 + g % (SELECT count(*) FROM recovery_qualificationrun)
        """
    )


def main() -> int:
    args = parse_args()
    create_database(args.database_url)
    setup_django(args.database_url, ALLOWED_HOSTS="testserver", CONN_MAX_AGE="600")
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    from bench.health import timed
    from bench.sweep import execute, generate

    client = Client()
    out = sys.stdout
    out.write(f"Machine: {describe_machine()}\n")
    generate(args.runs)
    execute("UPDATE recovery_worker SET last_beat_at = now()")
    User.objects.filter(username="bench").delete()
    client.force_login(User.objects.create_superuser("bench", "bench@example.com", None))
    url = reverse("admin:recovery_overview")
    rows = []
    for events in args.events:
        made = spread_events(events)
        execute("VACUUM ANALYZE recovery_recoveryevent")
        execute("VACUUM ANALYZE recovery_qualificationrun")
        seconds, status, queries = timed(client, url, args.repeats)
        rows.append((made, seconds, status, queries))
        out.write(f"{args.runs:,} runs, {made:,} events: {seconds * 1000:.1f} ms ({status})\n")
        out.flush()
    out.write(
        "\n| runs | recovery events in the last 7 days | the overview (median) | queries |\n"
        "|---:|---:|---:|---:|\n"
    )
    for made, seconds, status, queries in rows:
        out.write(
            f"| {args.runs:,} | {made:,} | {seconds * 1000:.1f} ms ({status}) | {queries} |\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
