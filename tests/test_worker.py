"""The worker's side of the run lifecycle, in-process: start, batches of results with progress,
heartbeats, completion, failure, errors on single prospects, and fencing after a recovery."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from django.db import DatabaseError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from qualifier import execution
from qualifier.criteria import Criteria
from qualifier.execution import execute
from qualifier.models import Outcome, Prospect, ProspectResult
from qualifier.prospects import ProspectData
from qualifier.runs import create_run
from qualifier.scoring import Score
from recovery.models import (
    QualificationRun,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    current_owner,
)
from recovery.sweep import recover_stuck_runs
from tests.helpers import DUMMY, IMMEDIATE

CRITERIA = Criteria(
    industries=("Software",), min_employees=50, title_keywords=("VP",), min_score=60
)


def make_pending_run(count: int, criteria: Criteria = CRITERIA) -> QualificationRun:
    data = [
        ProspectData(
            name=f"P{i}",
            company=f"C{i}",
            industry="Software" if i % 2 == 0 else "Retail",
            employees=100,
            title="VP Sales",
            position=i + 2,
        )
        for i in range(count)
    ]
    with override_settings(TASKS=DUMMY):
        return create_run(user=None, prospects=data, criteria=criteria)


class CountingScorer:
    """Scores like the default scorer and runs `hook(call_number, prospect)` first."""

    def __init__(self, hook: Callable[[int, ProspectData], object] | None = None) -> None:
        self.calls = 0
        self.hook = hook

    def __call__(self, prospect: ProspectData, criteria: Criteria) -> Score:
        self.calls += 1
        if self.hook is not None:
            self.hook(self.calls, prospect)
        qualified = prospect.industry == "Software"
        return Score(score=90 if qualified else 20, qualified=qualified, reasons=("test",))


def wait_for(predicate: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def force_recover(run: QualificationRun) -> None:
    report = recover_stuck_runs(source=RecoverySource.COMMAND, run_ids=[run.pk], force=True)
    assert report.recovered_count == 1


# --- lifecycle --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_run_is_started_by_this_process_scored_and_completed():
    run = make_pending_run(5)
    summary = execute(run.pk, scorer=CountingScorer())
    run.refresh_from_db()
    assert summary.outcome == "completed"
    assert (run.status, run.completed, run.total, run.attempts) == (RunStatus.COMPLETED, 5, 5, 1)
    assert run.owner == current_owner()
    assert run.started_at <= run.heartbeat_at <= run.completed_at
    outcomes = list(
        ProspectResult.objects.filter(run=run)
        .order_by("prospect__position")
        .values_list("outcome", flat=True)
    )
    assert outcomes == [Outcome.QUALIFIED, Outcome.NOT_QUALIFIED] * 2 + [Outcome.QUALIFIED]


@pytest.mark.django_db
def test_the_default_scorer_uses_the_criteria_stored_on_the_run():
    run = make_pending_run(2, CRITERIA.with_overrides({"min_score": 100}))
    execute(run.pk)
    results = dict(
        ProspectResult.objects.filter(run=run).values_list("prospect__position", "score")
    )
    assert results == {2: 100, 3: 70}
    assert not ProspectResult.objects.filter(outcome=Outcome.QUALIFIED, score__lt=100).exists()
    first = ProspectResult.objects.get(run=run, prospect__position=2)
    assert first.reasons == [
        "industry matches: Software",
        "company size fits: 100 employees",
        "title matches 'VP': VP Sales",
    ]


@pytest.mark.django_db
@override_settings(QUALIFIER_SCORER="tests.test_worker.all_errors_scorer")
def test_the_scorer_setting_chooses_the_scorer():
    run = make_pending_run(2)
    execute(run.pk)
    assert set(ProspectResult.objects.filter(run=run).values_list("error", flat=True)) == {
        "RuntimeError: the model is unavailable"
    }


def all_errors_scorer(prospect: ProspectData, criteria: Criteria) -> Score:
    raise RuntimeError("the model is unavailable")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "owner"),
    [
        (RunStatus.PROCESSING, "other-host:1"),
        (RunStatus.FAILED, ""),
        (RunStatus.COMPLETED, ""),
    ],
)
def test_a_run_that_is_not_pending_is_left_alone_and_nothing_is_written(status, owner):
    run = make_pending_run(3)
    QualificationRun.objects.filter(pk=run.pk).update(status=status, owner=owner)
    scorer = CountingScorer()
    summary = execute(run.pk, scorer=scorer)
    run.refresh_from_db()
    assert (summary.outcome, summary.status) == ("skipped", status)
    assert (run.status, run.owner, run.attempts, run.completed) == (status, owner, 0, 0)
    assert scorer.calls == 0
    assert not ProspectResult.objects.exists()


@pytest.mark.django_db
def test_a_run_that_does_not_exist_is_reported_not_raised(caplog):
    summary = execute(999_999, scorer=CountingScorer())
    assert summary.outcome == "missing"
    assert "Run 999999 does not exist" in caplog.text


@pytest.mark.django_db
@override_settings(TASKS=IMMEDIATE)
def test_the_task_runs_the_run_and_returns_a_json_summary():
    from qualifier.tasks import execute_run

    run = make_pending_run(3)
    result = execute_run.enqueue(run.pk)
    assert result.status == "SUCCESSFUL"
    assert result.return_value["outcome"] == "completed"
    assert result.return_value["completed"] == 3


# --- batches and progress ---------------------------------------------------------------------


@pytest.mark.django_db
def test_results_and_progress_are_written_together_batch_by_batch():
    seen: list[tuple[int, int]] = []

    def look(call: int, prospect: ProspectData) -> None:
        run.refresh_from_db(fields=["completed"])
        seen.append((ProspectResult.objects.filter(run=run).count(), run.completed))

    run = make_pending_run(7)
    execute(run.pk, scorer=CountingScorer(look), batch_size=3)
    assert seen == [(0, 0), (0, 0), (0, 0), (3, 3), (3, 3), (3, 3), (6, 6)]
    run.refresh_from_db()
    assert (run.completed, ProspectResult.objects.filter(run=run).count()) == (7, 7)


@pytest.mark.django_db
def test_a_batch_is_also_written_when_it_has_been_open_long_enough():
    run = make_pending_run(3)
    summary = execute(run.pk, scorer=CountingScorer(), batch_size=100, batch_seconds=0)
    assert summary.batches == 3


@pytest.mark.django_db
def test_fast_prospects_cost_the_same_queries_however_many_there_are():
    """No write per prospect: start, one batch (insert + beat), complete."""

    def queries_for(count: int) -> list[str]:
        run = make_pending_run(count)
        with CaptureQueriesContext(connection) as captured:
            execute(run.pk, scorer=CountingScorer(), batch_seconds=60)
        return [query["sql"].split()[0].upper() for query in captured.captured_queries]

    small, large = queries_for(10), queries_for(400)
    assert len(small) == len(large)
    assert large.count("INSERT") == 1
    assert large.count("UPDATE") == 3  # start, the batch's beat, complete


@pytest.mark.django_db
def test_prospects_that_already_have_a_result_are_not_scored_again():
    run = make_pending_run(4)
    first_two = Prospect.objects.filter(run=run).order_by("position")[:2]
    ProspectResult.objects.bulk_create(
        ProspectResult(run=run, prospect=p, outcome=Outcome.QUALIFIED, score=99) for p in first_two
    )
    scorer = CountingScorer()
    summary = execute(run.pk, scorer=scorer)
    run.refresh_from_db()
    assert scorer.calls == 2
    assert (summary.outcome, run.completed) == ("completed", 4)
    assert ProspectResult.objects.filter(run=run, score=99).count() == 2


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_prospect_whose_scorer_raises_is_errored_and_the_run_goes_on():
    def explode(call: int, prospect: ProspectData) -> None:
        if call == 2:
            raise TimeoutError("LLM did not answer in 30s")

    run = make_pending_run(4)
    summary = execute(run.pk, scorer=CountingScorer(explode))
    run.refresh_from_db()
    assert (run.status, run.completed, summary.errored) == (RunStatus.COMPLETED, 4, 1)
    errored = ProspectResult.objects.get(run=run, outcome=Outcome.ERRORED)
    assert (errored.prospect.position, errored.score, errored.reasons) == (3, None, [])
    assert errored.error == "TimeoutError: LLM did not answer in 30s"


@pytest.mark.django_db
def test_an_answer_that_is_not_a_score_errors_only_that_prospect():
    def answer(prospect: ProspectData, criteria: Criteria) -> object:
        return {"score": 250} if prospect.position == 2 else {"score": 80, "reasons": ["ok"]}

    run = make_pending_run(2)
    execute(run.pk, scorer=answer)
    results = dict(
        ProspectResult.objects.filter(run=run).values_list("prospect__position", "error")
    )
    assert results == {
        2: "InvalidScore: the scorer returned the score 250, expected 0 to 100",
        3: "",
    }


@pytest.mark.django_db
def test_an_unexpected_error_fails_the_run_with_the_reason_and_keeps_finished_batches(
    monkeypatch,
):
    real_bulk_create = ProspectResult.objects.bulk_create
    batches: list[int] = []

    def failing_bulk_create(objs, *args, **kwargs):
        batches.append(len(objs))
        if len(batches) == 2:
            raise DatabaseError("disk full")
        return real_bulk_create(objs, *args, **kwargs)

    monkeypatch.setattr(ProspectResult.objects, "bulk_create", failing_bulk_create)
    run = make_pending_run(5)
    summary = execute(run.pk, scorer=CountingScorer(), batch_size=2)
    run.refresh_from_db()
    assert summary.outcome == "failed"
    assert (run.status, run.completed) == (RunStatus.FAILED, 2)
    assert run.failure_reason == "unexpected error: DatabaseError: disk full"
    assert ProspectResult.objects.filter(run=run).count() == 2


@pytest.mark.django_db
def test_criteria_that_cannot_be_read_fail_the_run_before_any_scoring():
    run = make_pending_run(2)
    QualificationRun.objects.filter(pk=run.pk).update(criteria={"min_score": "lots"})
    scorer = CountingScorer()
    summary = execute(run.pk, scorer=scorer)
    run.refresh_from_db()
    assert (summary.outcome, run.status, scorer.calls) == ("failed", RunStatus.FAILED, 0)
    assert run.failure_reason.startswith("unexpected error: CriteriaError: Invalid criteria")


@pytest.mark.django_db
def test_a_stopped_worker_fails_its_run_and_keeps_its_results():
    def interrupt(call: int, prospect: ProspectData) -> None:
        if call == 3:
            raise KeyboardInterrupt

    run = make_pending_run(5)
    with pytest.raises(KeyboardInterrupt):
        execute(run.pk, scorer=CountingScorer(interrupt), batch_size=2)
    run.refresh_from_db()
    assert (run.status, run.completed) == (RunStatus.FAILED, 2)
    assert run.failure_reason == "the worker was stopped (KeyboardInterrupt)"
    assert ProspectResult.objects.filter(run=run).count() == 2


# --- fencing ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_recovered_run_rolls_back_the_batch_in_progress_and_the_worker_stops():
    def recover_at_fifth(call: int, prospect: ProspectData) -> None:
        if call == 5:
            force_recover(run)

    run = make_pending_run(10)
    scorer = CountingScorer(recover_at_fifth)
    summary = execute(run.pk, scorer=scorer, batch_size=2)
    run.refresh_from_db()
    assert summary.outcome == "fenced"
    assert scorer.calls == 6  # stopped at the beat that closes the batch of prospects 5-6
    assert (run.status, run.completed) == (RunStatus.FAILED, 4)
    assert run.failure_reason.startswith("force-failed by an operator")
    assert ProspectResult.objects.filter(run=run).count() == 4
    event = RecoveryEvent.objects.get(run=run)
    assert (event.from_status, event.completed) == (RunStatus.PROCESSING, 4)


@pytest.mark.django_db
def test_a_run_recovered_during_its_last_batch_is_not_completed():
    def recover_at_last(call: int, prospect: ProspectData) -> None:
        if call == 3:
            force_recover(run)

    run = make_pending_run(3)
    summary = execute(run.pk, scorer=CountingScorer(recover_at_last))
    run.refresh_from_db()
    assert (summary.outcome, run.status, run.completed) == ("fenced", RunStatus.FAILED, 0)
    assert not ProspectResult.objects.filter(run=run).exists()


# --- the heartbeat thread (real threads: the data must be committed) ---------------------------


def heartbeat_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("heartbeat-run-")]


@pytest.mark.django_db(transaction=True)
@override_settings(RECOVERY_HEARTBEAT_SECONDS="1")
def test_a_slow_prospect_keeps_the_run_beating(caplog):
    caplog.set_level(logging.DEBUG, logger="qualifier")
    beats_during_slow_prospect: list[int] = []

    def slow_first(call: int, prospect: ProspectData) -> None:
        if call == 1:
            wait_for(lambda: caplog.text.count("heartbeat from the heartbeat thread") >= 2)
            beats_during_slow_prospect.append(caplog.text.count("heartbeat from the heartbeat"))

    run = make_pending_run(3)
    started = QualificationRun.objects.get(pk=run.pk).created_at
    summary = execute(run.pk, scorer=CountingScorer(slow_first))
    run.refresh_from_db()
    assert beats_during_slow_prospect and beats_during_slow_prospect[0] >= 2
    assert summary.heartbeats >= 2
    assert (summary.outcome, run.status, run.completed) == ("completed", RunStatus.COMPLETED, 3)
    assert run.heartbeat_at > started
    assert heartbeat_threads() == []  # the thread ended with the run


@pytest.mark.django_db(transaction=True)
@override_settings(RECOVERY_HEARTBEAT_SECONDS="1")
def test_a_recovery_during_a_slow_prospect_stops_the_worker_at_its_next_heartbeat(caplog):
    def recover_then_stall(call: int, prospect: ProspectData) -> None:
        if call == 1:
            force_recover(run)
            wait_for(lambda: "heartbeat refused" in caplog.text)

    run = make_pending_run(4)
    scorer = CountingScorer(recover_then_stall)
    summary = execute(run.pk, scorer=scorer)
    run.refresh_from_db()
    assert summary.outcome == "fenced"
    assert scorer.calls == 1  # nothing scored after the refused heartbeat
    assert (run.status, run.completed) == (RunStatus.FAILED, 0)
    assert not ProspectResult.objects.filter(run=run).exists()
    assert heartbeat_threads() == []


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_retries_after_a_database_error(monkeypatch, caplog):
    run = make_pending_run(1)
    assert QualificationRun.objects.get(pk=run.pk).start("me:1")
    run.refresh_from_db()
    calls: list[int] = []
    real_beat = QualificationRun.beat

    def flaky_beat(self, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise DatabaseError("connection lost")
        return real_beat(self, **kwargs)

    monkeypatch.setattr(QualificationRun, "beat", flaky_beat)
    monkeypatch.setattr(execution, "HEARTBEAT_RETRY_SECONDS", 0.05)
    heartbeat = execution.Heartbeat(run, interval=0.1)
    with heartbeat:
        wait_for(lambda: heartbeat.beats >= 1)
    assert "heartbeat failed, retrying: connection lost" in caplog.text
    assert not heartbeat.lost.is_set()
