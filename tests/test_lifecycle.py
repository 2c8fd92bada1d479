"""The run lifecycle: every transition is a compare-and-set that names the state it expects."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from recovery.models import QualificationRun, RunStatus
from recovery.sweep import recover_stuck_runs


@pytest.fixture
def pending(make_run):
    return make_run(RunStatus.PENDING, total=10)


def test_start_moves_pending_to_processing_with_owner_start_and_first_heartbeat(pending):
    assert pending.start("host-a:101") is True

    run = QualificationRun.objects.get(pk=pending.pk)
    assert run.status == RunStatus.PROCESSING
    assert run.owner == "host-a:101"
    assert run.started_at is not None
    assert run.heartbeat_at == run.started_at
    assert run.attempts == 1


def test_start_without_owner_records_this_host_and_pid(pending):
    import os
    import socket

    pending.start()

    assert QualificationRun.objects.get(pk=pending.pk).owner == (
        f"{socket.gethostname()}:{os.getpid()}"
    )


def test_a_run_cannot_be_started_twice(pending):
    other = QualificationRun.objects.get(pk=pending.pk)
    assert pending.start("host-a:1") is True

    assert other.start("host-b:2") is False
    assert QualificationRun.objects.get(pk=pending.pk).owner == "host-a:1"


def test_beat_records_heartbeat_and_progress_for_the_owner(pending):
    pending.start("me:1")
    first_beat = pending.heartbeat_at

    assert pending.beat(completed=4) is True

    run = QualificationRun.objects.get(pk=pending.pk)
    assert run.completed == 4
    assert run.heartbeat_at > first_beat


def test_beat_by_another_owner_changes_nothing(pending):
    pending.start("me:1")
    impostor = QualificationRun.objects.get(pk=pending.pk)
    impostor.owner = "someone-else:2"

    assert impostor.beat(completed=9) is False
    assert QualificationRun.objects.get(pk=pending.pk).completed == 0


def test_beat_before_start_changes_nothing(pending):
    assert pending.beat(completed=1) is False
    assert QualificationRun.objects.get(pk=pending.pk).status == RunStatus.PENDING


def test_complete_sets_completed_and_end_time(pending):
    pending.start("me:1")
    pending.beat(completed=10)

    assert pending.complete() is True

    run = QualificationRun.objects.get(pk=pending.pk)
    assert run.status == RunStatus.COMPLETED
    assert run.completed_at is not None


def test_fail_records_the_reason(pending):
    pending.start("me:1")

    assert pending.fail("scorer exploded") is True

    run = QualificationRun.objects.get(pk=pending.pk)
    assert run.status == RunStatus.FAILED
    assert run.failure_reason == "scorer exploded"
    assert run.completed_at is not None


def test_a_recovered_run_never_goes_back_to_processing_or_completed(make_run):
    run = make_run(RunStatus.PENDING, total=10, created_minutes_ago=30)
    run.start("worker:7")
    QualificationRun.objects.filter(pk=run.pk).update(
        heartbeat_at=run.heartbeat_at.replace(year=2000)
    )
    recover_stuck_runs(source="command", log=False)

    # The stale worker still holds its in-memory copy and keeps trying.
    assert run.beat(completed=5) is False
    assert run.complete() is False
    assert run.fail("late") is False
    assert run.start("worker:7") is False

    fresh = QualificationRun.objects.get(pk=run.pk)
    assert fresh.status == RunStatus.FAILED
    assert fresh.completed == 0
    assert "no sign of life" in fresh.failure_reason


def test_a_completed_run_cannot_be_failed_by_its_worker(pending):
    pending.start("me:1")
    pending.complete()

    assert pending.fail("too late") is False
    assert QualificationRun.objects.get(pk=pending.pk).status == RunStatus.COMPLETED


def test_progress_can_never_exceed_total(pending):
    pending.start("me:1")
    with pytest.raises(IntegrityError), transaction.atomic():
        pending.beat(completed=11)


def test_progress_and_derived_values(make_run):
    run = make_run(RunStatus.PROCESSING, total=10, completed=5, created_minutes_ago=12)

    assert run.progress == "5/10"
    assert run.is_active
    assert 11 <= run.age().total_seconds() / 60 <= 13
