"""The figures behind issue 15's fixes, through the whole Django stack (test client, middleware
included), on PostgreSQL by default:

- a results page of a 10,000-result run: page 1 and page 200 (the deepest), HTML and API, and
  the old numbering's row query (a correlated COUNT per row) on the same pages, for comparison;
- hostile bodies: 400,000 unknown criteria keys (5.5 MB), 3,000,000 empty prospects (9 MB):
  status, answer size, time;
- /readyz polled: per request, answered from the process's last check and checked each time;
- a crafted profile: one prospect's matching, phrases of 254 characters (what was allowed) and
  of 64 (the bound now), against a title of 255 characters with a word start every 2.

    .venv/bin/python bench/hardening.py [--database-url URL] [--repeats 5]

The database's name must contain "bench"; the script adds one user and one big run and deletes
them at the end. Prints a Markdown table per part (docs/security.md records them).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

# Run as a script, sys.path[0] is bench/; the project must come first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import create_database, describe_machine, setup_django

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_hardening_bench"
BIG = 10_000


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if "bench" not in urlsplit(args.database_url).path:
        parser.error("use a database whose name contains 'bench'")
    return args


def median_seconds(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def big_run(user):
    from qualifier.models import Outcome, Prospect, ProspectResult
    from recovery.models import QualificationRun, RunStatus

    run = QualificationRun.objects.create(
        user=user, status=RunStatus.COMPLETED, total=BIG, completed=BIG, criteria={}
    )
    prospects = Prospect.objects.bulk_create(
        (
            Prospect(run=run, position=n + 2, number=n + 1, name=f"P{n}", company="Co")
            for n in range(BIG)
        ),
        batch_size=1_000,
    )
    ProspectResult.objects.bulk_create(
        (
            ProspectResult(run=run, prospect=p, outcome=Outcome.QUALIFIED, score=n % 101)
            for n, p in enumerate(prospects)
        ),
        batch_size=1_000,
    )
    return run


def old_numbering_rows(run, offset: int) -> None:
    """The row query the results page ran before: a correlated COUNT numbers each row."""
    from django.db.models import Count, OuterRef, Subquery

    from qualifier.listings import ordered_results
    from qualifier.models import Prospect

    earlier = (
        Prospect.objects.filter(run=OuterRef("run"), position__lte=OuterRef("prospect__position"))
        .order_by()
        .values("run")
        .annotate(count=Count("pk"))
        .values("count")
    )
    list(ordered_results(run, None).annotate(number=Subquery(earlier))[offset : offset + 50])


def pages(client, run, repeats: int) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    print("\n| results page of a 10,000-result run | page 1 | page 200 | queries |")
    print("|---|---:|---:|---:|")
    for label, path in (
        ("HTML page", f"/runs/{run.pk}/?page="),
        ("API", f"/api/qualify/runs/{run.pk}/results?page="),
    ):
        first = median_seconds(lambda p=path: client.get(p + "1"), repeats)
        deepest = median_seconds(lambda p=path: client.get(p + "200"), repeats)
        with CaptureQueriesContext(connection) as queries:
            client.get(path + "200")
        print(f"| {label} | {first * 1000:.0f} ms | {deepest * 1000:.0f} ms | {len(queries)} |")
    first = median_seconds(lambda: old_numbering_rows(run, 0), 1)
    deepest = median_seconds(lambda: old_numbering_rows(run, BIG - 50), 1)
    print(
        f"| before: the row query numbered by a correlated COUNT | {first * 1000:.0f} ms "
        f"| {deepest * 1000:.0f} ms | 1 |"
    )


def post(client, body: bytes):
    from tests.helpers import CSRF_SECRET

    started = time.perf_counter()
    response = client.post(
        "/api/qualify/runs",
        body,
        content_type="application/json",
        headers={"X-CSRFToken": CSRF_SECRET},
    )
    return response, time.perf_counter() - started


def bodies(client) -> None:
    print("\n| hostile body | size | status | answer | time |")
    print("|---|---:|---:|---:|---:|")
    unknown = {f"c{n:06}": 1 for n in range(400_000)}
    cases = (
        (
            "400,000 unknown criteria keys",
            json.dumps({"prospects": [{"name": "a", "company": "b"}], "criteria": unknown}),
        ),
        ("3,000,000 empty prospects", '{"prospects":[' + ",".join(["{}"] * 3_000_000) + "]}"),
        ("400,000 unknown fields", json.dumps({"prospects": [], **unknown})),
    )
    for label, text in cases:
        raw = text.encode()
        response, seconds = post(client, raw)
        print(
            f"| {label} | {len(raw) / 1e6:.1f} MB | {response.status_code} "
            f"| {len(response.content):,} B | {seconds:.2f} s |"
        )


def readyz(client, repeats: int) -> None:
    from recovery import health

    count = 50 * repeats
    started = time.perf_counter()
    for _ in range(count):
        client.get("/readyz")
    cached = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for _ in range(count):
        health._last_readiness = None
        client.get("/readyz")
    checked = (time.perf_counter() - started) / count
    started = time.perf_counter()
    for _ in range(count):
        client.get("/healthz")
    healthz = (time.perf_counter() - started) / count
    print("\n| endpoint | per request |")
    print("|---|---:|")
    print(f"| /healthz | {healthz * 1000:.2f} ms |")
    print(f"| /readyz, checked each time (before) | {checked * 1000:.2f} ms |")
    print(f"| /readyz, from the last check (within a second) | {cached * 1000:.2f} ms |")


def matching(repeats: int) -> None:
    from qualifier.criteria import WordMatcher

    title = ("a " * 128)[:255]
    plain = WordMatcher(("CEO", "Founder", "VP"))
    usual = "Senior Account Executive, Enterprise Sales"
    normal = median_seconds(lambda: [plain.search(usual) for _ in range(1000)], 3)
    print("\n| one prospect's title, 255 characters | per match |")
    print("|---|---:|")
    print(f"| a usual title and profile | {normal * 1000:.2f} µs |")
    for length in (254, 64):
        phrases = tuple(("a " * 128)[: length - 1] + c for c in "bcdefghijk")
        matcher = WordMatcher(phrases)
        seconds = median_seconds(lambda m=matcher: [m.search(title) for _ in range(100)], repeats)
        print(f"| crafted phrases of {length} characters | {seconds * 10_000:.0f} µs |")


def main() -> None:
    args = parse_args()
    create_database(args.database_url)
    setup_django(args.database_url, ALLOWED_HOSTS="testserver")
    from django.contrib.auth import get_user_model
    from django.test import Client

    from tests.helpers import CSRF_SECRET

    print(describe_machine())
    user = get_user_model().objects.create_user("hardening-bench")
    try:
        client = Client()
        client.force_login(user)
        client.cookies["csrftoken"] = CSRF_SECRET
        pages(client, big_run(user), args.repeats)
        bodies(client)
        readyz(client, args.repeats)
        matching(args.repeats)
    finally:
        user.delete()


if __name__ == "__main__":
    main()
