"""Benchmark: memory of a run of 10,000 prospects with 50 extra columns, in the web process
and in the worker. Target: under 200 MB peak resident memory each.

Each measurement runs in a fresh Python process, so its peak RSS (ru_maxrss) is that phase's
alone, interpreter and Django included:

- **web**: what a "New run" request does with the upload: the CSV bytes through `NewRunForm`
  (`parse_csv`: decoding, 10,000 rows, 50 extra columns each) and `create_run` (the run and the
  10,000 prospect rows in one transaction; the task is queued, not run);
- **worker**: `qualifier.execution.execute` on such a run, as the `execute_run` task does:
  the prospects loaded with their extra data, scored, and the results written in batches.

A second pair of processes measures the peak of Python's own allocations with tracemalloc
(which slows the work down, so it is kept apart from the RSS figure).

    .venv/bin/python bench/memory.py [--database-url URL] [--prospects 10000] [--extra 50]

The database (default qualifier_memorybench on 127.0.0.1; sqlite:////path also works) is
created and migrated if needed. Rows the benchmark creates are deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(PROJECT_DIR)

from bench.common import create_database, describe_machine, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_memorybench"
TARGET_MB = 200
DUMMY = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}
KNOWN = ["name", "email", "company", "website", "title", "industry", "employees", "country"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--prospects", type=int, default=10_000)
    parser.add_argument("--extra", type=int, default=50)
    parser.add_argument("--phase", choices=["web", "worker"], help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.database_url.startswith(("postgres://", "postgresql://", "sqlite:///")):
        parser.error("--database-url must be postgres://... or sqlite:////path")
    return args


def make_csv(prospects: int, extra: int) -> bytes:
    """Realistic rows: every extra column filled with a short value (the worst common case)."""
    rng = random.Random(8)
    header = KNOWN + [f"custom field {i}" for i in range(extra)]
    lines = [",".join(header)]
    industries = ["Software", "SaaS", "Retail", "Fintech", "Manufacturing"]
    titles = ["VP Sales", "Head of Growth", "Engineer", "CTO", "Director IT"]
    for i in range(prospects):
        known = [
            f"Person {i}",
            f"person{i}@company{i % 997}.example",
            f"Company {i}",
            f"https://company{i % 997}.example",
            rng.choice(titles),
            rng.choice(industries),
            str(rng.choice([5, 40, 120, 800, 4000])),
            rng.choice(["Germany", "USA", "France"]),
        ]
        values = [f"v{j} {rng.randrange(10**6)}" for j in range(extra)]
        lines.append(",".join(known + values))
    return ("\n".join(lines) + "\n").encode()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(args: argparse.Namespace) -> None:
    """One phase in this (fresh) process; prints a JSON line."""
    setup_django(args.database_url, QUALIFIER_LOG_LEVEL="WARNING")
    from django.contrib.auth import get_user_model
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.test import override_settings

    from qualifier.criteria import Criteria
    from qualifier.execution import execute
    from qualifier.forms import NewRunForm
    from qualifier.runs import create_run

    baseline = peak_rss_mb()
    if args.trace:
        tracemalloc.start()
    started = time.perf_counter()
    if args.phase == "web":
        data = Path(args.input).read_bytes()
        user, _ = get_user_model().objects.get_or_create(username="bench-memory")
        upload = SimpleUploadedFile("prospects.csv", data, content_type="text/csv")
        form = NewRunForm({}, {"prospects_file": upload}, defaults=Criteria.defaults())
        assert form.is_valid(), form.errors
        with override_settings(TASKS=DUMMY):
            run = create_run(user=user, prospects=form.prospects, criteria=form.criteria)
        result = {"run": run.pk, "prospects": run.total}
    else:
        summary = execute(int(args.input))
        assert summary.outcome == "completed", summary
        result = {"run": summary.run_id, "prospects": summary.completed}
    elapsed = time.perf_counter() - started
    if args.trace:
        result["tracemalloc_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    result |= {"baseline_mb": baseline, "peak_rss_mb": peak_rss_mb(), "seconds": elapsed}
    print(json.dumps(result))


def child(args: argparse.Namespace, phase: str, value: str, *, trace: bool) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--database-url",
        args.database_url,
        "--phase",
        phase,
        "--input",
        value,
    ] + (["--trace"] if trace else [])
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.phase:
        measure(args)
        return
    create_database(args.database_url)
    setup_django(args.database_url)
    from recovery.models import QualificationRun

    data = make_csv(args.prospects, args.extra)
    print(describe_machine())
    print(
        f"CSV: {args.prospects:,} prospects x ({len(KNOWN)} known + {args.extra} extra "
        f"columns), {len(data):,} bytes"
    )
    created: list[int] = []
    failed = False
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "prospects.csv"
            path.write_bytes(data)
            rows = []
            for trace in (False, True):
                web = child(args, "web", str(path), trace=trace)
                created.append(web["run"])
                worker = child(args, "worker", str(web["run"]), trace=trace)
                rows.append((trace, web, worker))
        for trace, web, worker in rows:
            for name, figures in (("web", web), ("worker", worker)):
                if trace:
                    print(
                        f"{name:6} tracemalloc peak {figures['tracemalloc_peak_mb']:6.1f} MB "
                        f"({figures['seconds']:.1f} s with tracing)"
                    )
                    continue
                ok = figures["peak_rss_mb"] < TARGET_MB
                failed |= not ok
                print(
                    f"{name:6} peak RSS {figures['peak_rss_mb']:6.1f} MB (after setup "
                    f"{figures['baseline_mb']:.1f} MB, +{figures['peak_rss_mb'] - figures['baseline_mb']:.1f} MB) "
                    f"in {figures['seconds']:.1f} s: {'OK' if ok else 'OVER'} the {TARGET_MB} MB target"
                )
    finally:
        QualificationRun.objects.filter(pk__in=created).delete()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
