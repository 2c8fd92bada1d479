"""Benchmark: the worker pipeline against the bare scorer plus one bulk insert, on 10,000 prospects.

Each round puts 10,000 prospects through the real pipeline: `create_run` (the run, the
prospect rows, the task enqueued), then the `execute_run` task run synchronously in-process by
django.tasks' immediate backend (start, prospects loaded, batches of results with progress
fenced by `run.beat`, completion). In the same round it times the bare work: the default
scorer over the same prospects plus one `bulk_create` of the results. The order alternates per
round and the medians are compared. Target: the task at most 1.25x the bare work.

    .venv/bin/python bench/worker.py [--database-url URL] [--prospects 10000] [--repeats 5]

The database (default qualifier_workerbench on 127.0.0.1; sqlite:////path also works) is
created and migrated if needed. Rows the benchmark creates are deleted at the end.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Run as a script, sys.path[0] is bench/; the project must come first.
sys.path[0] = str(PROJECT_DIR)

from bench.common import create_database, describe_machine, setup_django  # noqa: E402

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_workerbench"
TARGET_RATIO = 1.25
IMMEDIATE = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
DUMMY = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--prospects", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.database_url.startswith(("postgres://", "postgresql://", "sqlite:///")):
        parser.error("--database-url must be postgres://... or sqlite:////path")
    if args.prospects < 1 or args.repeats < 1:
        parser.error("--prospects and --repeats must be at least 1")
    return args


def make_prospects(count: int) -> list[Any]:
    """A realistic mix: about a third qualify, a few are excluded, some fields unknown."""
    from qualifier.prospects import ProspectData

    rng = random.Random(42)
    industries = ["Software", "SaaS", "Retail", "Fintech", "Manufacturing", "Healthcare", ""]
    titles = ["VP Sales", "Head of Growth", "Engineer", "CTO", "Analyst", "Director IT", ""]
    countries = ["Germany", "USA", "France", "United Kingdom", "Brazil", ""]
    return [
        ProspectData(
            name=f"Person {i}",
            company=f"Company {i}",
            email=f"person{i}@company{i % 997}.example",
            domain=f"company{i % 997}.example" if i % 50 else "rival.example",
            title=rng.choice(titles),
            industry=rng.choice(industries),
            employees=rng.choice([None, 5, 40, 120, 800, 4000, 20000]),
            country=rng.choice(countries),
            extra={"source": "bench", "row": str(i)},
            position=i + 2,
        )
        for i in range(count)
    ]


def criteria() -> Any:
    from qualifier.criteria import Criteria

    return Criteria.defaults().with_overrides({"excluded_domains": ["rival.example"]})


@dataclass
class Pipeline:
    created: float
    executed: float
    cpu: float
    run_id: int
    summary: dict[str, Any]


@dataclass
class Bare:
    scored: float
    inserted: float
    cpu: float
    run_id: int

    @property
    def total(self) -> float:
        return self.scored + self.inserted


def pipeline_once(prospects: list[Any]) -> Pipeline:
    """create_run, then the task through the immediate backend (timed on its own)."""
    from django.test.utils import override_settings

    from qualifier.runs import create_run
    from qualifier.tasks import execute_run

    started = time.perf_counter()
    with override_settings(TASKS=DUMMY):  # enqueued, not run: the task is timed on its own
        run = create_run(user=None, prospects=prospects, criteria=criteria())
    created = time.perf_counter() - started
    gc.collect()
    with override_settings(TASKS=IMMEDIATE):
        cpu, started = time.process_time(), time.perf_counter()
        result = execute_run.enqueue(run.pk)
        executed, cpu = time.perf_counter() - started, time.process_time() - cpu
    summary = result.return_value
    if summary["outcome"] != "completed" or summary["completed"] != len(prospects):
        raise SystemExit(f"the run did not complete: {summary}")
    return Pipeline(created, executed, cpu, run.pk, summary)


def bare_once(prospects: list[Any], prospect_ids: list[int]) -> Bare:
    """The default scorer over the same prospects, then one bulk insert of the results into a
    run of their own."""
    from django.db import transaction

    from qualifier.models import Outcome, ProspectResult
    from qualifier.scoring import rule_based_scorer
    from recovery.models import QualificationRun, RunStatus

    run = QualificationRun.objects.create(status=RunStatus.PROCESSING, total=len(prospects))
    rules = criteria()
    gc.collect()
    cpu, started = time.process_time(), time.perf_counter()
    scores = [rule_based_scorer(prospect, rules) for prospect in prospects]
    scored = time.perf_counter() - started
    started = time.perf_counter()
    with transaction.atomic():
        ProspectResult.objects.bulk_create(
            ProspectResult(
                run_id=run.pk,
                prospect_id=prospect_id,
                outcome=Outcome.QUALIFIED if score.qualified else Outcome.NOT_QUALIFIED,
                score=score.score,
                reasons=list(score.reasons),
            )
            for prospect_id, score in zip(prospect_ids, scores, strict=True)
        )
    inserted, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Bare(scored, inserted, cpu, run.pk)


def cleanup(run_ids: list[int]) -> None:
    from qualifier.models import Prospect, ProspectResult
    from recovery.models import QualificationRun

    ProspectResult.objects.filter(run_id__in=run_ids).delete()
    ProspectResult.objects.filter(prospect__run_id__in=run_ids).delete()
    Prospect.objects.filter(run_id__in=run_ids).delete()
    QualificationRun.objects.filter(pk__in=run_ids).delete()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> int:
    args = parse_args()
    create_database(args.database_url)
    setup_django(
        args.database_url,
        QUALIFIER_SCORING_DELAY_MS="0",
        QUALIFIER_MAX_PROSPECTS=str(max(args.prospects, 10_000)),
        QUALIFIER_LOG_LEVEL=os.environ.get("QUALIFIER_LOG_LEVEL", "WARNING"),
    )
    from qualifier.models import Prospect
    from recovery.worker import registry

    # This process executes runs as a registered worker's executor does under db_worker.
    worker = registry.register()
    registry.set_current(worker)
    out = sys.stdout
    prospects = make_prospects(args.prospects)
    out.write(f"Machine: {describe_machine()}, load average {os.getloadavg()[0]:.1f}\n")
    out.write(f"{args.prospects:,} prospects, {args.repeats} rounds (+1 warm-up)\n\n")
    pipelines: list[Pipeline] = []
    bares: list[Bare] = []
    created_runs: list[int] = []
    try:
        for round_number in range(args.repeats + 1):
            # Each round measures both back to back, in alternating order, so a burst of
            # load from elsewhere hits one round rather than one side.
            if round_number % 2 == 0:
                pipeline = pipeline_once(prospects)
                bare = bare_once(prospects, prospect_ids(Prospect, pipeline.run_id))
            else:
                bare = bare_once(prospects, prospect_ids(Prospect, created_runs[0]))
                pipeline = pipeline_once(prospects)
            created_runs += [pipeline.run_id, bare.run_id]
            if round_number == 0:
                continue  # warm-up: imports, compiled patterns, database caches
            pipelines.append(pipeline)
            bares.append(bare)
            out.write(
                f"round {round_number}: task {ms(pipeline.executed)}; bare {ms(bare.total)} "
                f"(scorer {ms(bare.scored)} + insert {ms(bare.inserted)}); "
                f"ratio {pipeline.executed / bare.total:.2f}x; "
                f"create_run {ms(pipeline.created)}\n"
            )
            out.flush()
    finally:
        cleanup(created_runs)
        registry.deregister(worker)

    median = statistics.median
    ratio = median(p.executed / b.total for p, b in zip(pipelines, bares, strict=True))
    cpu_ratio = median(p.cpu / b.cpu for p, b in zip(pipelines, bares, strict=True))
    summary = pipelines[-1].summary
    out.write(
        f"\nTask (start, load, {summary['batches']} batches of progress fenced first + "
        f"results, complete): "
        f"{ms(median(p.executed for p in pipelines))}\n"
        f"Bare: scorer {ms(median(b.scored for b in bares))} + one bulk insert "
        f"{ms(median(b.inserted for b in bares))} = {ms(median(b.total for b in bares))}\n"
        f"Ratio task / bare (median of the rounds): {ratio:.2f}x "
        f"(target <= {TARGET_RATIO:.2f}x)\n"
        f"Ratio of this process's CPU time (median): {cpu_ratio:.2f}x\n"
        f"create_run (run + {args.prospects:,} prospect rows + enqueue): "
        f"{ms(median(p.created for p in pipelines))}\n"
        f"Load average at the end: {os.getloadavg()[0]:.1f}\n"
    )
    return 0 if ratio <= TARGET_RATIO else 1


def prospect_ids(prospect_model: Any, run_id: int) -> list[int]:
    return list(
        prospect_model.objects.filter(run_id=run_id)
        .order_by("position")
        .values_list("pk", flat=True)
    )


if __name__ == "__main__":
    sys.exit(main())
