"""Benchmark: under RECOVERY_POLICY=resume, how long a run killed with its worker takes to run
again, and what a resumed run costs compared with one that never crashed.

Each trial creates a run, starts a real `manage.py db_worker`, waits until some results are
written, SIGKILLs the supervisor and its executor together (as a dying machine would), and at
once starts a new worker: its startup sweep finds the dead worker's run (the pid is gone on
this host) and puts it back in the queue, and its executor takes it. The time measured is from
the SIGKILL to the run being PROCESSING again under the new worker. The run then completes.

The scorer is the default one wrapped to count its calls (`bench.resume_scorer`), so the extra
cost is measured as scorer calls beyond the run's prospects (prospects scored again) and as
result rows beyond one per prospect (which the unique constraint forbids). A run that never
crashed is measured the same way as the baseline.

    .venv/bin/python bench/resume.py [--database-url URL] [--trials 10] [--prospects 60]

The database (default qualifier_resumebench on 127.0.0.1; sqlite:////path also works) is
created and migrated if needed, and emptied of runs, tasks and workers first (use a database of
its own); every worker started here is stopped before the script ends.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path[0] = str(PROJECT_DIR)

from bench.common import (  # noqa: E402
    clean_slate,
    create_benchmark_run,
    create_database,
    describe_machine,
    setup_django,
)

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_resumebench"
DELAY_MS = "50"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--prospects", type=int, default=60)
    return parser.parse_args()


class Worker:
    """A real db_worker (supervisor + executor), in its own process group."""

    def __init__(self, url: str, calls_log: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
        env.update(
            DJANGO_SETTINGS_MODULE="qualifier.settings",
            DATABASE_URL=url,
            SECRET_KEY="bench-only-secret-key",
            DEBUG="false",
            QUALIFIER_IGNORE_DOTENV="1",
            RECOVERY_POLICY="resume",
            RECOVERY_ON_STARTUP="true",  # its startup sweep is what requeues the dead run
            RECOVERY_HEARTBEAT_SECONDS="1",
            QUALIFIER_SCORING_DELAY_MS=DELAY_MS,
            QUALIFIER_SCORER="bench.resume_scorer.scorer",
            BENCH_SCORER_CALLS=str(calls_log),
        )
        self.log = log.open("w")
        self.popen = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "db_worker",
                "--no-reload",
                "--no-startup-delay",
                "--interval",
                "0.1",
            ],
            cwd=PROJECT_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def executors(self) -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.popen.pid:
                    found.append(int(stat.parent.name))
        return found

    def kill(self) -> None:
        """SIGKILL to the supervisor and its executor at once."""
        executors = self.executors()
        with suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in executors:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        if not self.log.closed:
            self.log.close()


def wait_for(check: Any, timeout: float = 60, step: float = 0.01) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return time.monotonic()
        time.sleep(step)
    raise TimeoutError("the benchmark waited too long")


def state(run_id: int) -> tuple[str, int, int | None]:
    from recovery.models import QualificationRun

    return QualificationRun.objects.values_list("status", "completed", "worker_id").get(pk=run_id)


def results(run_id: int) -> tuple[int, int]:
    from django.db.models import Count

    from qualifier.models import ProspectResult

    counts = ProspectResult.objects.filter(run_id=run_id).aggregate(
        rows=Count("pk"), prospects=Count("prospect", distinct=True)
    )
    return counts["rows"], counts["prospects"]


def calls(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def one_run(url: str, count: int, work: Path, trial: int, *, crash: bool) -> dict[str, float]:
    calls_log = work / f"calls-{trial}-{crash}.txt"
    run_id = create_benchmark_run(count)
    started = time.monotonic()
    worker = Worker(url, calls_log, work / f"worker-{trial}-{crash}-1.log")
    second = None
    figures: dict[str, float] = {}
    try:
        if crash:
            wait_for(lambda: state(run_id)[1] >= count // 3)
            # Anywhere within the next batch: the results in flight are what a kill costs.
            time.sleep(random.uniform(0, 1.0))
            dead_worker = state(run_id)[2]
            killed = time.monotonic()
            worker.kill()
            # Frozen now: what was committed, and how many scorer calls the dead worker made.
            committed, _ = results(run_id)
            calls_at_kill = calls(calls_log)
            second = Worker(url, calls_log, work / f"worker-{trial}-{crash}-2.log")
            running = wait_for(
                lambda: (lambda s: s[0] == "PROCESSING" and s[2] not in (None, dead_worker))(
                    state(run_id)
                )
            )
            figures["back_s"] = running - killed
        wait_for(lambda: state(run_id)[0] in ("COMPLETED", "FAILED"), timeout=120, step=0.05)
        figures["wall_s"] = time.monotonic() - started
    finally:
        worker.stop()
        if second is not None:
            second.stop()
    status = state(run_id)[0]
    rows, prospects = results(run_id)
    assert status == "COMPLETED", f"run {run_id} ended {status}"
    figures["rescored"] = calls(calls_log) - count
    if crash:
        # Calls after the kill beyond the prospects that had no result: prospects with a
        # result scored again (must be 0). Calls before it beyond the committed results: the
        # batch in flight that the kill lost (it had no result, so it is scored again).
        figures["rescored_with_result"] = (calls(calls_log) - calls_at_kill) - (count - committed)
        figures["lost_in_flight"] = calls_at_kill - committed
    figures["duplicates"] = rows - prospects
    figures["missing"] = count - prospects
    return figures


def main() -> int:
    args = parse_args()
    create_database(args.database_url)
    setup_django(args.database_url, RECOVERY_POLICY="resume")
    print(describe_machine())
    clean_slate()
    work = Path(tempfile.mkdtemp(prefix="resume-bench-"))
    crashed, clean = [], []
    for trial in range(args.trials):
        crashed.append(one_run(args.database_url, args.prospects, work, trial, crash=True))
        clean.append(one_run(args.database_url, args.prospects, work, trial, crash=False))
        print(
            f"trial {trial + 1}: back in {crashed[-1]['back_s']:.2f} s; resumed run "
            f"{crashed[-1]['wall_s']:.1f} s vs {clean[-1]['wall_s']:.1f} s; scorer calls "
            f"repeated {crashed[-1]['rescored']:.0f} (clean {clean[-1]['rescored']:.0f}): "
            f"{crashed[-1]['rescored_with_result']:.0f} of prospects that had a result, "
            f"{crashed[-1]['lost_in_flight']:.0f} lost in flight; duplicate "
            f"results {crashed[-1]['duplicates']:.0f}; missing {crashed[-1]['missing']:.0f}"
        )
    back = [trial["back_s"] for trial in crashed]
    with_result = sum(trial["rescored_with_result"] for trial in crashed)
    lost = [trial["lost_in_flight"] for trial in crashed]
    print(
        f"prospects that had a result scored again: {with_result:.0f}; scored in the batch the "
        f"kill lost: median {statistics.median(lost):.0f}, worst {max(lost):.0f}"
    )
    print(
        f"SIGKILL to running again: median {statistics.median(back):.2f} s, worst {max(back):.2f} s"
    )
    for name, runs in (("resumed", crashed), ("never crashed", clean)):
        print(
            f"{name}: wall median {statistics.median(r['wall_s'] for r in runs):.1f} s; "
            f"prospects re-scored total {sum(r['rescored'] for r in runs):.0f} "
            f"(max {max(r['rescored'] for r in runs):.0f} per run); duplicate results "
            f"{sum(r['duplicates'] for r in runs):.0f}; missing {sum(r['missing'] for r in runs):.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
