"""The run lifecycle: every transition is a compare-and-set that names the state it expects."""

from __future__ import annotations

import time

import pytest
from django.db import IntegrityError, transaction

from recovery.models import QualificationRun, RunStatus
from recovery.sweep import recover_stuck_runs
from tests.conftest import make_worker


@pytest.fixture
def pending(make_run):
    return make_run(RunStatus.PENDING, total=10)


@pytest.fixture
def me(db):
    return make_worker(host="host-a", pid=101)


def test_start_moves_pending_to_processing_with_worker_start_and_first_heartbeat(pending, me):
    assert pending.start(me) is True

    run = QualificationRun.objects.get(pk=pending.pk)
    assert run.status == RunStatus.PROCESSING
    assert run.worker == me
    assert run.started_at is not None
    assert run.heartbeat_at == run.started_at
    assert pending.started_at == run.started_at  # read back from the database's clock
    assert run.attempts == 1


def test_a_run_cannot_be_started_twice(pending, me):
    other = QualificationRun.objects.get(pk=pending.pk)
    assert pending.start(me) is True

    assert other.start(make_worker(host="host-b", pid=2)) is False
    assert QualificationRun.objects.get(pk=pending.pk).worker == me


def test_beat_records_heartbeat_and_progress_for_the_owner(pending, me):
    pending.start(me)
    first_beat = pending.heartbeat_at
    time.sleep(0.002)  # SQLite's clock counts milliseconds

    assert pending.beat(completed=4) is True

    run = QualificationRun.objects.get(pk=pending.pk)
    assert run.completed == 4
    assert run.heartbeat_at > first_beat


def test_beat_by_another_worker_changes_nothing(pending, me):
    pending.start(me)
    impostor = QualificationRun.objects.get(pk=pending.pk)
    impostor.worker_id = make_worker(host="someone-else", pid=2).pk

    assert impostor.beat(completed=9) is False
    assert QualificationRun.objects.get(pk=pending.pk).completed == 0


def test_beat_by_an_earlier_attempt_of_the_same_worker_changes_nothing(pending, me):
    pending.start(me)
    stale = QualificationRun.objects.get(pk=pending.pk)
    QualificationRun.objects.filter(pk=pending.pk).update(attempts=2)

    assert stale.beat(completed=3) is False


def test_beat_before_start_changes_nothing(pending):
    assert pending.beat(completed=1) is False
    assert QualificationRun.objects.get(pk=pending.pk).status == RunStatus.PENDING


def test_complete_sets_completed_and_end_time(pending, me):
    pending.start(me)
    pending.beat(completed=10)

    assert pending.complete() is True

    run = QualificationRun.objects.get(pk=pending.pk)
    assert run.status == RunStatus.COMPLETED
    assert run.completed_at is not None


def test_fail_records_the_reason(pending, me):
    pending.start(me)

    assert pending.fail("scorer exploded") is True

    run = QualificationRun.objects.get(pk=pending.pk)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == "scorer exploded"
    assert run.completed_at is not None


def test_a_recovered_run_never_goes_back_to_processing_or_completed(make_run):
    run = make_run(RunStatus.PENDING, total=10, created_minutes_ago=30)
    worker = make_worker(pid=7)
    run.start(worker)
    QualificationRun.objects.filter(pk=run.pk).update(
        heartbeat_at=run.heartbeat_at.replace(year=2000)
    )
    recover_stuck_runs(source="command", log=False)

    # The stale worker still holds its in-memory copy and keeps trying.
    assert run.beat(completed=5) is False
    assert run.complete() is False
    assert run.fail("late") is False
    assert run.start(worker) is False

    fresh = QualificationRun.objects.get(pk=run.pk)
    assert fresh.status == RunStatus.FAILED
    assert fresh.completed == 0
    assert fresh.failure_reason.startswith("No progress for ")


def test_a_completed_run_cannot_be_failed_by_its_worker(pending, me):
    pending.start(me)
    pending.complete()

    assert pending.fail("too late") is False
    assert QualificationRun.objects.get(pk=pending.pk).status == RunStatus.COMPLETED


def test_progress_can_never_exceed_total(pending, me):
    pending.start(me)
    with pytest.raises(IntegrityError), transaction.atomic():
        pending.beat(completed=11)


def test_progress_and_derived_values(make_run):
    run = make_run(RunStatus.PROCESSING, total=10, completed=5, created_minutes_ago=12)

    assert run.progress == "5/10"
    assert run.is_active
