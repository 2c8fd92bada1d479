"""The recovery sweep fails each stuck run exactly once, whoever else is sweeping or working,
and its number of queries does not grow with the number of stuck runs.

Concurrency is shown with real processes released together by a start file, against the
test database (PostgreSQL) or one database file (SQLite); the races with a worker are made
deterministic by holding row locks or by acting between the sweep's count and its update.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from recovery import sweep
from recovery.models import (
    QualificationRun,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    SweepOutcome,
    SweepTally,
    Worker,
)
from tests import processes, sweeper_child

#: One batch loop serves both databases (there used to be a PostgreSQL-only statement).
PATHS = ["one-loop"]

SWEEPERS = 8
STUCK = 2_000
HEALTHY = 40
FINISHED = 60
PROCESS_TIMEOUT = 120.0

sqlite_only = pytest.mark.skipif(
    processes.on_postgres(),
    reason="the file-sharing case is SQLite's; PostgreSQL runs the test-database cases",
)


# --- sweeper processes -------------------------------------------------------------------------


class Sweepers:
    """Sweeper processes that are started, connected, and then released together."""

    def __init__(self, database_url: str, workdir: Path, options: list[str]) -> None:
        self.go = workdir / "go"
        self.ready = [workdir / f"ready-{index}" for index in range(SWEEPERS)]
        env = processes.base_env(database_url)
        command = [processes.PYTHON, "-m", "tests.sweeper_child", "sweep"]
        self.procs = [
            subprocess.Popen(
                [*command, "--ready", str(ready), "--go", str(self.go), *options],
                cwd=processes.PROJECT_DIR,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for ready in self.ready
        ]

    def wait_until_ready(self) -> None:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while not all(path.exists() for path in self.ready):
            for proc in self.procs:
                if proc.poll() is not None:
                    pytest.fail(f"a sweeper exited before the start:\n{proc.communicate()[1]}")
            if time.monotonic() > deadline:
                pytest.fail("the sweepers did not get ready in time")
            time.sleep(0.02)

    def start(self) -> None:
        self.go.touch()

    def wait_until_exited(self, count: int) -> None:
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while sum(proc.poll() is not None for proc in self.procs) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {count} sweepers finished in time")
            time.sleep(0.02)

    def results(self) -> list[dict[str, Any]]:
        results = []
        for proc in self.procs:
            stdout, stderr = proc.communicate(timeout=PROCESS_TIMEOUT)
            assert proc.returncode == 0, stderr
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        return results

    def kill(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


@contextmanager
def sweepers(database_url: str, workdir: Path, *options: str) -> Iterator[Sweepers]:
    group = Sweepers(database_url, workdir, list(options))
    try:
        yield group
    finally:
        group.kill()


def run_together(database_url: str, workdir: Path, *options: str) -> list[dict[str, Any]]:
    with sweepers(database_url, workdir, *options) as group:
        group.wait_until_ready()
        group.start()
        return group.results()


def current_database_url() -> str:
    """The database this transactional test runs in, for its child processes."""
    settings = connection.settings_dict
    password = f":{settings['PASSWORD']}" if settings["PASSWORD"] else ""
    return (
        f"postgres://{settings['USER']}{password}@{settings['HOST']}:{settings['PORT']}"
        f"/{settings['NAME']}"
    )


def child(database_url: str, *args: str) -> Any:
    result = subprocess.run(
        [processes.PYTHON, "-m", "tests.sweeper_child", *args],
        cwd=processes.PROJECT_DIR,
        env=processes.base_env(database_url),
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def assert_each_stuck_run_recovered_once(
    results: list[dict[str, Any]],
    facts: dict[str, Any],
    stuck: list[int],
    untouched_before: dict[str, list[str]],
) -> None:
    recovered = [run_id for result in results for run_id in result["recovered"]]
    assert len(recovered) == STUCK, "the processes' recovered counts must add up to the stuck runs"
    assert sorted(recovered) == sorted(stuck), "each stuck run recovered by exactly one process"
    assert facts["failed_stuck"] == STUCK
    assert facts["events"] == STUCK
    assert facts["event_run_ids"] == sorted(stuck)
    assert facts["max_events_per_run"] == 1
    assert facts["events_by_pid"] == {
        str(result["pid"]): len(result["recovered"]) for result in results if result["recovered"]
    }, "each process wrote the events of exactly the runs it reported"
    assert facts["untouched"] == untouched_before, "healthy and finished runs must not change"


# --- PostgreSQL: eight processes against the test database -------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_startup_sweeps_from_eight_processes_recover_each_run_once_and_the_others_skip(tmp_path):
    seeded = sweeper_child.seed(stuck=STUCK, healthy=HEALTHY, finished=FINISHED)
    untouched = seeded["healthy"] + seeded["finished"]
    before = sweeper_child.run_states(untouched)
    events_table = connection.ops.quote_name(RecoveryEvent._meta.db_table)

    with sweepers(current_database_url(), tmp_path, "--source", RecoverySource.STARTUP) as group:
        group.wait_until_ready()
        # Holding the events table keeps the first sweeper's transaction (and so its advisory
        # lock) open until every other sweeper has tried the lock: the overlap is certain,
        # not a matter of timing.
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {events_table} IN SHARE MODE")
            group.start()
            group.wait_until_exited(SWEEPERS - 1)
        results = group.results()

    facts = sweeper_child.summary(seeded["stuck"], untouched)
    assert_each_stuck_run_recovered_once(results, facts, seeded["stuck"], before)
    winners = [result for result in results if result["recovered"]]
    assert len(winners) == 1
    assert not winners[0]["skipped_reason"]
    skipped = [result for result in results if result["skipped_reason"]]
    assert len(skipped) == SWEEPERS - 1
    assert {result["skipped_reason"] for result in skipped} == {
        "another process is recovering stuck runs right now"
    }
    # Every process counted its own sweep in the shared tallies that /metrics exports.
    tallies = dict(
        SweepTally.objects.filter(source=RecoverySource.STARTUP)
        .values_list("outcome")
        .annotate(n=Sum("sweeps"))
    )
    assert tallies == {SweepOutcome.OK: 1, SweepOutcome.SKIPPED: SWEEPERS - 1}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("batch_size", [0, 100], ids=["default-batches", "batches-of-100"])
def test_sweeps_from_eight_processes_at_once_fail_each_stuck_run_exactly_once(
    tmp_path, path, batch_size
):
    """Operators' sweeps (the command, the admin, the API) wait for each other instead of
    skipping; the generic path relies on SKIP LOCKED alone, and with small batches its
    processes share the work. Either way no run is failed or audited twice."""
    seeded = sweeper_child.seed(stuck=STUCK, healthy=HEALTHY, finished=FINISHED)
    untouched = seeded["healthy"] + seeded["finished"]
    before = sweeper_child.run_states(untouched)
    options = ["--source", RecoverySource.COMMAND, "--batch-size", str(batch_size)]

    results = run_together(current_database_url(), tmp_path, *options)

    facts = sweeper_child.summary(seeded["stuck"], untouched)
    assert_each_stuck_run_recovered_once(results, facts, seeded["stuck"], before)
    assert not any(result["skipped_reason"] for result in results)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_periodic_sweeps_from_eight_processes_are_single_flight(tmp_path):
    """Every server sweeps periodically; at most one sweep runs at a time on PostgreSQL."""
    seeded = sweeper_child.seed(stuck=STUCK, healthy=HEALTHY, finished=FINISHED)
    untouched = seeded["healthy"] + seeded["finished"]
    before = sweeper_child.run_states(untouched)

    results = run_together(current_database_url(), tmp_path, "--source", RecoverySource.SWEEPER)

    facts = sweeper_child.summary(seeded["stuck"], untouched)
    assert_each_stuck_run_recovered_once(results, facts, seeded["stuck"], before)


# --- SQLite: eight processes against one database file -----------------------------------------


@sqlite_only
@pytest.mark.parametrize("source", [RecoverySource.STARTUP, RecoverySource.SWEEPER])
def test_sweeps_from_eight_processes_on_one_sqlite_file_fail_each_stuck_run_exactly_once(
    process_database, tmp_path, source
):
    counts = ["--stuck", str(STUCK), "--healthy", str(HEALTHY), "--finished", str(FINISHED)]
    seeded = child(process_database, "seed", *counts)
    untouched = seeded["healthy"] + seeded["finished"]
    ids_file = tmp_path / "ids.json"
    ids_file.write_text(json.dumps({"stuck": seeded["stuck"], "untouched": untouched}))
    workdir = tmp_path / "sweepers"
    workdir.mkdir()

    results = run_together(process_database, workdir, "--source", source)

    facts = child(process_database, "summary", str(ids_file))
    assert_each_stuck_run_recovered_once(
        results, facts, seeded["stuck"], seeded["untouched_states"]
    )


# --- races with the worker ---------------------------------------------------------------------


def sweep_path(monkeypatch: pytest.MonkeyPatch, path: str) -> tuple[str, Callable[..., None]]:
    """The batch loop `recover_stuck_runs` calls once it has counted the dead runs."""
    return "_recover", sweep._recover


def started_run(owner: str, *, silent_minutes: int = 30) -> QualificationRun:
    """A run its worker started and that has made no progress since: the worker's own instance."""
    host, pid = owner.split(":")
    run = QualificationRun.objects.create(total=10)
    assert run.start(Worker.objects.create(host=host, pid=int(pid)))
    long_ago = timezone.now() - dt.timedelta(minutes=silent_minutes)
    QualificationRun.objects.filter(pk=run.pk).update(
        created_at=long_ago, started_at=long_ago, heartbeat_at=long_ago
    )
    return run


def sweep_waits_for_me() -> bool:
    """Whether another session is blocked on a lock this connection holds (PostgreSQL)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity"
            " WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid)))"
        )
        return bool(cursor.fetchone()[0])


def events_of(run: QualificationRun) -> int:
    return RecoveryEvent.objects.filter(run=run).count()


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_a_run_that_beats_or_completes_after_the_sweep_counted_it_is_left_alone(monkeypatch, path):
    beating = started_run("worker:1")
    completing = started_run("worker:2")
    silent = started_run("worker:3")
    dispatched, target = sweep_path(monkeypatch, path)

    def workers_act_then_sweep(*args: Any) -> None:
        # Between the sweep's candidate query (the count) and its update.
        assert beating.beat(completed=7)
        assert completing.complete()
        target(*args)

    monkeypatch.setattr(sweep, dispatched, workers_act_then_sweep)
    report = sweep.recover_stuck_runs(source=RecoverySource.COMMAND, log=False)

    assert report.stuck_count == 3, "all three were stuck when the sweep counted"
    assert [run.id for run in report.recovered] == [silent.pk]
    beaten = QualificationRun.objects.get(pk=beating.pk)
    assert (beaten.status, beaten.completed, beaten.failure_reason) == (RunStatus.PROCESSING, 7, "")
    assert beaten.heartbeat_at > timezone.now() - dt.timedelta(minutes=1), "the beat is kept"
    assert QualificationRun.objects.get(pk=completing.pk).status == RunStatus.COMPLETED
    assert events_of(beating) == events_of(completing) == 0
    assert QualificationRun.objects.get(pk=silent.pk).status == RunStatus.FAILED
    assert events_of(silent) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", PATHS)
def test_a_run_its_worker_holds_while_the_sweep_runs_keeps_the_workers_beat_or_completion(
    monkeypatch, path
):
    """The workers lock their rows, write, and commit only after the sweep has returned: the
    sweep must pass those runs by, not fail them over the workers' newer state."""
    beating = started_run("worker:1")
    completing = started_run("worker:2")
    silent = started_run("worker:3")
    sweep_path(monkeypatch, path)
    written = threading.Event()
    swept = threading.Event()
    outcome: list[bool] = []

    def worker() -> None:
        try:
            with transaction.atomic():
                list(
                    QualificationRun.objects.select_for_update()
                    .filter(pk__in=[beating.pk, completing.pk])
                    .values_list("pk", flat=True)
                )
                outcome.extend([beating.beat(completed=7), completing.complete()])
                written.set()
                # Commit once the sweep has passed the rows by, or is waiting for them.
                deadline = time.monotonic() + PROCESS_TIMEOUT
                while not swept.wait(0.02) and not sweep_waits_for_me():
                    assert time.monotonic() < deadline, "the sweep neither returned nor waited"
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        assert written.wait(PROCESS_TIMEOUT)
        report = sweep.recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
    finally:
        swept.set()
        thread.join(PROCESS_TIMEOUT)

    assert outcome == [True, True]
    assert report.stuck_count == 3, "the workers' writes were not committed when it counted"
    assert [run.id for run in report.recovered] == [silent.pk]
    beaten = QualificationRun.objects.get(pk=beating.pk)
    assert (beaten.status, beaten.completed) == (RunStatus.PROCESSING, 7)
    assert beaten.heartbeat_at > timezone.now() - dt.timedelta(minutes=1), "the beat is kept"
    assert QualificationRun.objects.get(pk=completing.pk).status == RunStatus.COMPLETED
    assert events_of(beating) == events_of(completing) == 0
    assert events_of(silent) == 1
    again = sweep.recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
    assert again.recovered == []


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
def test_a_stale_worker_cannot_beat_complete_or_fail_a_run_the_sweep_recovered(monkeypatch, path):
    stale = started_run("worker:1")
    sweep_path(monkeypatch, path)

    report = sweep.recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
    assert [run.id for run in report.recovered] == [stale.pk]
    recovered = QualificationRun.objects.get(pk=stale.pk)

    assert stale.beat() is False
    assert stale.beat(completed=9) is False
    assert stale.complete() is False
    assert stale.fail("the worker noticed an error") is False
    after = QualificationRun.objects.get(pk=stale.pk)
    assert after.status == RunStatus.FAILED
    assert (after.completed, after.heartbeat_at, after.completed_at, after.failure_reason) == (
        recovered.completed,
        recovered.heartbeat_at,
        recovered.completed_at,
        report.recovered[0].reason,
    )
    assert sweep.recover_stuck_runs(source=RecoverySource.SWEEPER, log=False).recovered == []
    assert events_of(stale) == 1


# --- queries per sweep -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("source", [RecoverySource.STARTUP, RecoverySource.COMMAND])
def test_a_sweep_of_300_stuck_runs_takes_as_many_queries_as_a_sweep_of_10(
    monkeypatch, path, source
):
    sweep_path(monkeypatch, path)
    sizes = {}
    for stuck in (10, 300):
        sweeper_child.seed(stuck=stuck, healthy=HEALTHY, finished=FINISHED)
        with CaptureQueriesContext(connection) as queries:
            report = sweep.recover_stuck_runs(source=source, log=False)
        assert report.recovered_count == stuck
        sizes[stuck] = [query["sql"][:80] for query in queries.captured_queries]
    assert len(sizes[300]) == len(sizes[10]), sizes


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_sweep_whose_stuck_runs_fill_whole_batches_takes_no_extra_statement(monkeypatch):
    """Batches stop at the count made before the sweep: exactly one batch of stuck runs
    is one locked read, not a second one that finds nothing."""
    monkeypatch.setattr(sweep, "BATCH_SIZE", 10)
    sizes = {}
    for stuck in (3, 10, 30):
        sweeper_child.seed(stuck=stuck, healthy=HEALTHY, finished=FINISHED)
        with CaptureQueriesContext(connection) as queries:
            report = sweep.recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
        assert report.recovered_count == report.stuck_count == stuck
        sizes[stuck] = sum("SKIP LOCKED" in query["sql"] for query in queries.captured_queries)
    assert sizes == {3: 1, 10: 1, 30: 3}


# --- the bounded listing -----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("limit", [0, 1, 5, 12, None])
def test_the_listings_show_the_oldest_runs_of_every_active_status_in_creation_order(limit):
    now = timezone.now()
    for index in range(12):
        # Statuses interleaved in time, and pairs of runs created at the same instant.
        created = now - dt.timedelta(minutes=60 - (index // 2))
        QualificationRun.objects.create(
            status=RunStatus.PENDING if index % 3 else RunStatus.PROCESSING,
            created_at=created,
            queued_at=created,
            total=10,
        )
    QualificationRun.objects.create(
        status=RunStatus.COMPLETED, created_at=now - dt.timedelta(hours=9)
    )
    expected = list(
        QualificationRun.objects.active().order_by("created_at", "pk").values_list("pk", flat=True)
    )

    report = sweep.recover_stuck_runs(
        source=RecoverySource.COMMAND, dry_run=True, list_limit=limit, log=False
    )

    shown = expected if limit is None else expected[:limit]
    assert [run.id for run in report.active] == shown
    assert [run.id for run in report.stuck] == shown
    assert report.active_count == report.stuck_count == 12
