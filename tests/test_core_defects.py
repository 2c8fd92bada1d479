"""Issue 14's defects that need no process of their own: the cost of an idle sweep over a
backlog of queued runs, timestamps on the database's clock, honest recovery counts, and true
skip reasons in the admin. Their process counterparts are in test_core_defects_processes.py."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone as django_timezone
from django.utils.html import strip_tags
from django_tasks_db.models import DBTaskResult
from prometheus_client.parser import text_string_to_metric_families

from qualifier.prospects import ProspectData
from qualifier.runs import continue_run, create_run
from qualifier.tasks import execute_run
from recovery.models import QualificationRun, RecoveryEvent, RunStatus
from recovery.sweep import recover_stuck_runs
from tests.conftest import make_worker

pytestmark = pytest.mark.django_db

BACKLOG = 2_000
METRICS_TOKEN = "d" * 40


def prospects(count: int) -> list[ProspectData]:
    return [
        ProspectData(
            name=f"P{i}",
            company="C",
            industry="Software",
            employees=100,
            title="VP",
            position=i + 2,
        )
        for i in range(count)
    ]


def seconds_from_database_now(table: str, pk: int, column: str = "created_at") -> float:
    """How far the row's timestamp is from the database's clock, in seconds (computed by the
    database; a test transaction does not hold its clock still)."""
    if connection.vendor == "postgresql":
        expression = f"EXTRACT(EPOCH FROM (clock_timestamp() - {column}))"
    else:
        expression = f"(julianday('now') - julianday({column})) * 86400"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {expression} FROM {table} WHERE id = %s", [pk])
        return abs(float(cursor.fetchone()[0]))


# --- 7. sweep cost does not grow with the backlog -------------------------------------------------


@pytest.fixture
def backlog() -> list[QualificationRun]:
    """BACKLOG runs queued far longer than the worker timeout, each with its task waiting
    (READY, enqueued through the task API), and one live worker: registered last, so that its
    beat is fresh however long making the backlog took (the worker timeout is 8 s)."""
    runs = QualificationRun.objects.bulk_create(
        QualificationRun(status=RunStatus.PENDING, total=1) for _ in range(BACKLOG)
    )
    for run in runs:
        run.task_id = str(execute_run.enqueue(run.pk).id)
    QualificationRun.objects.bulk_update(runs, ["task_id"], batch_size=500)
    an_hour = dt.timedelta(hours=1)
    QualificationRun.objects.update(queued_at=F("queued_at") - an_hour)
    assert DBTaskResult.objects.filter(status="READY").count() == BACKLOG
    make_worker()
    return runs


def test_an_idle_sweep_over_2000_queued_runs_makes_at_most_10_queries(backlog):
    with CaptureQueriesContext(connection) as queries:
        report = recover_stuck_runs(source="sweeper", log=False)
    assert report.recovered_count == 0
    assert len(queries) <= 10, f"an idle sweep made {len(queries)} queries"


def test_the_bounded_sweep_still_finds_a_queued_run_whose_task_is_gone(backlog):
    orphan = backlog[BACKLOG // 2]
    DBTaskResult.objects.filter(id=orphan.task_id).delete()
    with CaptureQueriesContext(connection) as queries:
        report = recover_stuck_runs(source="sweeper", log=False)
    assert [run.id for run in report.recovered] == [orphan.pk]
    assert list(RecoveryEvent.objects.values_list("run_id", "cause")) == [(orphan.pk, "no_task")]
    # A bound of our own: the idle sweep's 10, and a handful for the one run it recovers.
    assert len(queries) <= 25, f"a sweep recovering one run made {len(queries)} queries"


# --- 8. clocks and counts -------------------------------------------------------------------------


class _HourAhead(dt.datetime):
    """This host's clock, an hour ahead of the database's."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return super().now(tz) + dt.timedelta(hours=1)


def test_a_run_is_created_on_the_database_clock_not_the_hosts(monkeypatch):
    # timezone.now() reads the module's `datetime`: a field's default=timezone.now sees it too.
    monkeypatch.setattr(django_timezone, "datetime", _HourAhead)
    assert django_timezone.now() - dt.datetime.now(dt.UTC) > dt.timedelta(minutes=59)
    run = create_run(user=None, prospects=prospects(2))
    off = seconds_from_database_now(QualificationRun._meta.db_table, run.pk)
    assert off < 60, f"the run's created_at is {off:.0f} s from the database's clock"


def overview_recovered(client: Any) -> int:
    page = client.get(reverse("admin:recovery_overview")).content.decode()
    found = re.search(r'data-figure="recovered">\s*(\d+)\s*<', page)
    assert found, "no 'Runs recovered' figure on the overview"
    return int(found.group(1))


def recoveries_total(client: Any) -> float:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
        if sample.name == "qualifier_recoveries_total"
    )


def test_an_owners_continue_is_not_counted_as_a_recovery(admin_client, settings):
    settings.METRICS_TOKEN = METRICS_TOKEN
    run = create_run(user=None, prospects=prospects(5))
    forced = recover_stuck_runs(source="command", run_ids=[run.pk], force=True, log=False)
    assert forced.recovered_count == 1  # one real recovery: an operator's force-fail
    before = overview_recovered(admin_client), recoveries_total(admin_client)
    assert before == (1, 1)

    continue_run(QualificationRun.objects.get(pk=run.pk), user=None)

    after = overview_recovered(admin_client), recoveries_total(admin_client)
    assert after == before, f"Continue counted as a recovery: {before} -> {after}"


def test_the_admin_does_not_call_a_queued_run_without_a_worker_alive(admin_client):
    """No worker is registered: a queued run that is skipped waits for one; nothing about it
    is a live worker making progress."""
    run = create_run(user=None, prospects=prospects(3))
    response = admin_client.post(
        reverse("admin:recovery_qualificationrun_changelist"),
        {"action": "mark_stuck_failed", "_selected_action": [run.pk]},
        follow=True,
    )
    said = " ".join(strip_tags(str(m.message)) for m in response.context["messages"])
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.PENDING
    assert "skipped" in said, said
    assert "live worker" not in said, said
