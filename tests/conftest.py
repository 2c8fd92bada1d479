"""Shared fixtures: run factories, the PostgreSQL requirement, and helpers for tests that
start real processes."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from recovery.models import QualificationRun, RunStatus, Worker

PG_URL = os.environ.get("POSTGRES_CHECK_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=3):
            return True
    except Exception:
        return False


def pytest_sessionstart(session: pytest.Session) -> None:
    if os.environ.get("CI") == "true" and not postgres_reachable():
        pytest.exit(
            f"CI=true but PostgreSQL is not reachable at {PG_URL}: "
            "the PostgreSQL tests cannot be skipped in CI.",
            returncode=1,
        )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: two test processes per CPU. The slow tests spend most of their time waiting
    for the real processes they start (which wait on timeouts of a few seconds), so one per CPU
    leaves the CPUs half idle."""
    return 2 * (os.cpu_count() or 1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from django.conf import settings

    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    items[:] = spread_for_xdist(items, workers)
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine == "django.db.backends.postgresql":
        return
    skip = pytest.mark.skip(
        reason="needs PostgreSQL: this pass runs on SQLite; run the tests with "
        "DATABASE_URL=postgres://postgres@127.0.0.1:5432/qualifier to include it"
    )
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


def expected_seconds(item: pytest.Item) -> float:
    """How long a test takes, roughly: `slow(seconds=…)`, 10 for other slow ones, else 0."""
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 10))


def spread_for_xdist(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """The order that keeps `workers` test processes busy to the end under `--dist worksteal`.

    worksteal gives each process an equal run of the list and steals from the end of the
    longest queue, so each run starts with an equal share of the slow tests (the ones that
    start real processes and mostly wait), longest first, and fills up with fast ones: a long
    test never starts last, and what is stolen at the end is fast. Only speed depends on it.
    """
    if workers < 2:
        return items
    slow = sorted((i for i in items if expected_seconds(i)), key=expected_seconds, reverse=True)
    fast = iter([item for item in items if not expected_seconds(item)])
    runs: list[list[pytest.Item]] = [[] for _ in range(workers)]
    seconds = [0.0] * workers
    for item in slow:  # each to the run with the least expected time so far
        least = seconds.index(min(seconds))
        runs[least].append(item)
        seconds[least] += expected_seconds(item)
    left, ordered = len(items), []
    for index, run in enumerate(runs):
        size = left // (workers - index)  # how worksteal cuts the list
        left -= size
        ordered += run + [next(fast) for _ in range(max(0, size - len(run)))]
    return ordered + list(fast)


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Failed sign-ins and tokens are counted in the cache: each test starts from zero."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def _fresh_readiness() -> None:
    """/readyz answers from its last check for a second: each test checks afresh."""
    from recovery import health

    health._last_readiness = None


@pytest.fixture(autouse=True)
def _answers_match_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every answer the test client receives under /api/ is checked against the OpenAPI
    document (tests/contract.py): an undocumented status or field fails the test."""
    from django.test import Client

    from tests import contract

    send = Client.request

    def request(self: Client, **environ: Any) -> Any:
        response = send(self, **environ)
        contract.check(response.wsgi_request, response)
        return response

    monkeypatch.setattr(Client, "request", request)


@pytest.fixture
def make_run(db: Any) -> Callable[..., QualificationRun]:
    """Creates a run whose clock fields are given in minutes ago.

    A PROCESSING run gets a live worker on another host unless `worker_beat_seconds_ago` says
    otherwise (None: no worker row at all, as if it had been removed); a PENDING run is queued
    when it was created and has no task (so it is dead once queued longer than the worker
    timeout) unless `task_id` is given.
    """

    def make(
        status: str = RunStatus.PROCESSING,
        *,
        total: int = 10,
        completed: int = 0,
        created_minutes_ago: float = 0,
        started_minutes_ago: float | None = None,
        heartbeat_minutes_ago: float | None = None,
        worker_beat_seconds_ago: float | None = 0,
        **fields: Any,
    ) -> QualificationRun:
        now = timezone.now()

        def ago(minutes: float | None) -> dt.datetime | None:
            return None if minutes is None else now - dt.timedelta(minutes=minutes)

        if status == RunStatus.PROCESSING and worker_beat_seconds_ago is not None:
            fields.setdefault("worker", make_worker(beat_seconds_ago=worker_beat_seconds_ago))
        return QualificationRun.objects.create(
            status=status,
            total=total,
            completed=completed,
            created_at=ago(created_minutes_ago),
            queued_at=ago(created_minutes_ago),
            started_at=ago(started_minutes_ago),
            heartbeat_at=ago(heartbeat_minutes_ago),
            **fields,
        )

    return make


def live_task_id() -> str:
    """The id of a task waiting in django-tasks-db's queue: a queued run with it is waiting."""
    from django_tasks_db.models import DBTaskResult

    task = DBTaskResult.objects.create(
        status="READY", task_path="qualifier.tasks.execute_run", args_kwargs={}
    )
    return str(task.id)


def make_worker(
    *, host: str = "worker-host.test", pid: int = 4242, beat_seconds_ago: float = 0
) -> Worker:
    """A registered worker on another host (its process is not checked locally)."""
    beat = timezone.now() - dt.timedelta(seconds=beat_seconds_ago)
    return Worker.objects.create(host=host, pid=pid, last_beat_at=beat, registered_at=beat)


@pytest.fixture(autouse=True)
def _fresh_worker_identity(monkeypatch: pytest.MonkeyPatch):
    """Each test starts as a process that has executed no run yet. A test that executes a run
    in-process acts as a registered worker's executor: its worker row is registered on first
    use (in production only `db_worker`'s executor executes runs)."""
    from recovery.worker import registry

    real_current = registry.current

    def current() -> Worker:
        if registry._current is None:
            registry.set_current(registry.register())
        return real_current()

    monkeypatch.setattr(registry, "current", current)
    yield
    registry.release()


@pytest.fixture
def on_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture(scope="session")
def _process_templates(tmp_path_factory: pytest.TempPathFactory):
    from tests import processes

    yield tmp_path_factory.mktemp("process-db-templates")
    processes.drop_template_databases()


@pytest.fixture
def process_database(tmp_path, _process_templates) -> Any:
    """The DATABASE_URL of a fresh migrated database that child processes can use."""
    from tests import processes

    with processes.fresh_database(tmp_path, _process_templates) as url:
        yield url


@pytest.fixture
def alice(db: Any) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("alice", "alice@corp.test")


@pytest.fixture
def bob(db: Any) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user("bob", "bob@other.test")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The hostile-input table (tests/test_hostile_input.py), when those tests ran."""
    from tests.tally import TALLY, table

    if TALLY:
        terminalreporter.section("hostile input: tried and refused cleanly")
        for line in table():
            terminalreporter.write_line(line)
