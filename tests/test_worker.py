"""The worker's side of the run lifecycle, in-process: start, batches of results with progress,
completion, failure, errors on single prospects, stopping and handing back, database outages,
fencing after a recovery, and the worker's beat thread."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
from django.db import OperationalError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from qualifier.criteria import Criteria
from qualifier.execution import execute
from qualifier.models import Outcome, Prospect, ProspectResult
from qualifier.prospects import ProspectData
from qualifier.runs import create_run
from qualifier.scoring import Score
from recovery import sweep
from recovery.exceptions import WorkerStopping
from recovery.models import (
    FencedWrite,
    FencedWriteKind,
    QualificationRun,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    Worker,
)
from recovery.sweep import hand_back, recover_stuck_runs
from recovery.worker import outage
from recovery.worker import registry as workers
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


#: Batches that close by size only: these tests count the scorer's calls between batch
#: boundaries, which a busy machine must not move by closing a batch at its time limit.
BY_SIZE_ONLY = float("inf")


@pytest.fixture(autouse=True)
def this_worker(request):
    """The worker row this process executes for (a supervised executor's, in real life)."""
    request.getfixturevalue("db")  # or the transactional database the test's marker asks for
    worker = workers.register()
    workers.set_current(worker)
    return worker


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
    assert run.worker == workers.current()
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
@pytest.mark.parametrize("status", [RunStatus.PROCESSING, RunStatus.FAILED, RunStatus.COMPLETED])
def test_a_run_that_is_not_pending_is_left_alone_and_nothing_is_written(status):
    run = make_pending_run(3)
    QualificationRun.objects.filter(pk=run.pk).update(status=status)
    scorer = CountingScorer()
    summary = execute(run.pk, scorer=scorer)
    run.refresh_from_db()
    assert (summary.outcome, summary.status) == ("skipped", status)
    assert (run.status, run.attempts, run.completed) == (status, 0, 0)
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
    execute(run.pk, scorer=CountingScorer(look), batch_size=3, batch_seconds=BY_SIZE_ONLY)
    assert seen == [(0, 0), (0, 0), (0, 0), (3, 3), (3, 3), (3, 3), (6, 6)]
    run.refresh_from_db()
    assert (run.completed, ProspectResult.objects.filter(run=run).count()) == (7, 7)


@pytest.mark.django_db
def test_a_batch_is_also_written_when_it_has_been_open_long_enough():
    run = make_pending_run(3)
    summary = execute(run.pk, scorer=CountingScorer(), batch_size=100, batch_seconds=0)
    assert summary.batches == 3


@pytest.mark.django_db
@override_settings(RECOVERY_SLICE_SIZE=1_000)  # one lease: tests/test_slices.py slices it
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
    assert large.count("SELECT") == small.count("SELECT")


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
            raise ValueError("a result the model refuses")
        return real_bulk_create(objs, *args, **kwargs)

    monkeypatch.setattr(ProspectResult.objects, "bulk_create", failing_bulk_create)
    run = make_pending_run(5)
    summary = execute(run.pk, scorer=CountingScorer(), batch_size=2)
    run.refresh_from_db()
    assert summary.outcome == "failed"
    assert (run.status, run.completed) == (RunStatus.FAILED, 2)
    assert run.failure_reason == "unexpected error: ValueError: a result the model refuses"
    assert ProspectResult.objects.filter(run=run).count() == 2


@pytest.mark.django_db(transaction=True)  # the outage closes the connection, as a real one does
def test_a_database_outage_while_writing_a_batch_is_waited_out_not_failed(monkeypatch, caplog):
    """A brief blip must not fail the run: the batch is kept and written once it is back."""
    caplog.set_level(logging.WARNING, logger="recovery")
    real_bulk_create = ProspectResult.objects.bulk_create
    calls: list[int] = []

    def flaky_bulk_create(objs, *args, **kwargs):
        calls.append(len(objs))
        if len(calls) in (2, 3, 4):
            raise OperationalError("server closed the connection unexpectedly")
        return real_bulk_create(objs, *args, **kwargs)

    monkeypatch.setattr(ProspectResult.objects, "bulk_create", flaky_bulk_create)
    monkeypatch.setattr(outage.Outage, "failed", lambda self, exc: _first_failure(self, exc))
    run = make_pending_run(5)
    summary = execute(run.pk, scorer=CountingScorer(), batch_size=2)
    run.refresh_from_db()
    assert (summary.outcome, run.status, run.completed) == ("completed", RunStatus.COMPLETED, 5)
    assert ProspectResult.objects.filter(run=run).count() == 5
    outage_lines = [r.getMessage() for r in caplog.records if "Database" in r.getMessage()]
    assert len(outage_lines) == 2, outage_lines  # one when it went away, one when it was back
    assert "unavailable" in outage_lines[0] and "is back" in outage_lines[1]


_real_failed = outage.Outage.failed


def _first_failure(outage: outage.Outage, exc: BaseException) -> float:
    _real_failed(outage, exc)
    return 0.01


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
def test_a_stop_request_writes_the_batch_in_hand_and_the_run_is_handed_back(this_worker):
    def stop_after_third(call: int, prospect: ProspectData) -> None:
        if call == 3:
            workers.stop_requested.set()

    run = make_pending_run(6)
    with pytest.raises(WorkerStopping):
        execute(run.pk, scorer=CountingScorer(stop_after_third), batch_size=10)
    run.refresh_from_db()
    # The third prospect was scored and its batch written; nothing after it was scored.
    assert (run.status, run.completed) == (RunStatus.PROCESSING, 3)
    assert ProspectResult.objects.filter(run=run).count() == 3

    with override_settings(TASKS=DUMMY):
        handed = hand_back(this_worker, source=RecoverySource.SHUTDOWN, cause="shutdown")
    assert handed == [run.pk]
    run.refresh_from_db()
    assert (run.status, run.completed, run.worker_id) == (RunStatus.PENDING, 3, None)
    event = RecoveryEvent.objects.get(run=run)
    assert (event.source, event.cause, event.to_status) == ("shutdown", "shutdown", "PENDING")
    assert event.reason.startswith("Back in the queue with 3 of 6 prospects done")

    workers.stop_requested.clear()
    scorer = CountingScorer()
    summary = execute(run.pk, scorer=scorer)
    run.refresh_from_db()
    assert (summary.outcome, run.status, run.completed, run.attempts) == (
        "completed",
        RunStatus.COMPLETED,
        6,
        2,
    )
    assert scorer.calls == 3  # only the prospects without a result
    assert ProspectResult.objects.filter(run=run).count() == 6


@pytest.mark.django_db
@override_settings(RECOVERY_MAX_ATTEMPTS=2)
def test_a_run_whose_worker_keeps_crashing_is_failed_after_the_max_attempts(this_worker):
    run = make_pending_run(4)
    for attempt in (1, 2):
        assert QualificationRun.objects.get(pk=run.pk).start(this_worker)
        QualificationRun.objects.filter(pk=run.pk).update(completed=attempt)
        with override_settings(TASKS=DUMMY):
            hand_back(this_worker, source=RecoverySource.SUPERVISOR, cause="crashed")
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.failure_reason.startswith(
        "Gave up after the worker died 2 times on this run; its attempts stopped at prospect "
        "2 and 3 of 4 (the first without a result). Continue runs the prospects left once "
        "more (noticed by its worker's supervisor)."
    )
    assert list(RecoveryEvent.objects.filter(run=run).values_list("to_status", flat=True)) == [
        RunStatus.FAILED,
        RunStatus.PENDING,
    ]


@pytest.mark.django_db
def test_an_interrupted_process_leaves_its_run_to_the_supervisor_with_its_results():
    def interrupt(call: int, prospect: ProspectData) -> None:
        if call == 3:
            raise KeyboardInterrupt

    run = make_pending_run(5)
    with pytest.raises(KeyboardInterrupt):
        execute(run.pk, scorer=CountingScorer(interrupt), batch_size=2, batch_seconds=BY_SIZE_ONLY)
    run.refresh_from_db()
    assert (run.status, run.completed) == (RunStatus.PROCESSING, 2)
    assert ProspectResult.objects.filter(run=run).count() == 2


# --- fencing ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_recovered_run_rolls_back_the_batch_in_progress_and_the_worker_stops():
    def recover_at_fifth(call: int, prospect: ProspectData) -> None:
        if call == 5:
            force_recover(run)

    run = make_pending_run(10)
    scorer = CountingScorer(recover_at_fifth)
    summary = execute(run.pk, scorer=scorer, batch_size=2, batch_seconds=BY_SIZE_ONLY)
    run.refresh_from_db()
    assert summary.outcome == "fenced"
    assert scorer.calls == 6  # stopped at the beat that closes the batch of prospects 5-6
    assert (run.status, run.completed) == (RunStatus.FAILED, 4)
    assert run.failure_reason.startswith("Stopped by an operator")
    assert ProspectResult.objects.filter(run=run).count() == 4
    event = RecoveryEvent.objects.get(run=run)
    assert (event.from_status, event.completed) == (RunStatus.PROCESSING, 4)
    refused = FencedWrite.objects.values_list("run_id", "kind", "worker", "attempt")
    assert list(refused) == [(run.pk, FencedWriteKind.PROGRESS, str(workers.current()), 1)]


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
    assert list(FencedWrite.objects.values_list("kind", flat=True)) == [FencedWriteKind.PROGRESS]


@pytest.mark.django_db
def test_a_run_recovered_after_its_last_batch_refuses_the_completion(monkeypatch):
    complete = QualificationRun.complete

    def recovered_first(run: QualificationRun) -> bool:
        force_recover(run)
        return complete(run)

    monkeypatch.setattr(QualificationRun, "complete", recovered_first)
    run = make_pending_run(3)
    summary = execute(run.pk, scorer=CountingScorer())
    run.refresh_from_db()
    assert (summary.outcome, run.status, run.completed) == ("fenced", RunStatus.FAILED, 3)
    assert list(FencedWrite.objects.values_list("kind", flat=True)) == [FencedWriteKind.COMPLETE]


@pytest.mark.django_db
def test_a_hand_back_of_a_run_recovered_meanwhile_is_refused_and_counted(this_worker, monkeypatch):
    run = make_pending_run(3)
    assert run.start(this_worker)

    real_reason = sweep.reasons.resumed

    def recovered_meanwhile(*args: object) -> str:  # between reading the run and handing it back
        force_recover(run)
        return real_reason(*args)

    monkeypatch.setattr(sweep.reasons, "resumed", recovered_meanwhile)
    handed = hand_back(this_worker, source=RecoverySource.SUPERVISOR, cause="crashed")
    run.refresh_from_db()
    assert (handed, run.status) == ([], RunStatus.FAILED)
    assert list(FencedWrite.objects.values_list("kind", flat=True)) == [FencedWriteKind.HAND_BACK]


@pytest.mark.django_db
def test_an_execution_that_is_never_fenced_records_no_refused_write():
    run = make_pending_run(5)
    assert execute(run.pk, scorer=CountingScorer(), batch_size=2).outcome == "completed"
    assert not FencedWrite.objects.exists()


# --- the worker's beat thread (real threads: the data must be committed) ------------------------


@pytest.mark.django_db(transaction=True)
def test_the_beat_thread_beats_on_the_database_clock_and_retries_after_a_database_error(
    monkeypatch, caplog, this_worker
):
    first = Worker.objects.get(pk=this_worker.pk).last_beat_at
    calls: list[int] = []
    real_beat = workers.beat

    def flaky_beat(worker):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("connection lost")
        return real_beat(worker)

    monkeypatch.setattr(workers, "beat", flaky_beat)
    monkeypatch.setattr(outage, "MAX_BACKOFF_SECONDS", 0.05)
    beat = workers.Beat(this_worker, interval=0.1).start()
    try:
        wait_for(lambda: len(calls) >= 3)
    finally:
        beat.stop()
    assert "Database unavailable, retrying until it is back: connection lost" in caplog.text
    assert not beat.lost.is_set()
    assert Worker.objects.get(pk=this_worker.pk).last_beat_at > first


@pytest.mark.django_db(transaction=True)
def test_the_beat_thread_notices_that_a_sweep_removed_its_worker(this_worker, caplog):
    beat = workers.Beat(this_worker, interval=0.05).start()
    Worker.objects.filter(pk=this_worker.pk).delete()
    try:
        wait_for(beat.lost.is_set)
    finally:
        beat.stop()
    assert "was found dead by a sweep" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_an_executor_whose_worker_is_gone_puts_a_claimed_task_back_untouched(this_worker):
    """Woken from a freeze after a sweep removed its row, the executor claims one task at
    most, gives it back as it was and ends (to register again): it never burns the queue."""
    from django_tasks_db.models import DBTaskResult

    from recovery.worker.executor import ExecutorQueueWorker

    task = DBTaskResult.objects.create(
        status="READY", task_path="qualifier.tasks.execute_run", args_kwargs={}, worker_ids=["7"]
    )
    executor = ExecutorQueueWorker(
        queue_names=["default"],
        interval=0.1,
        batch=False,
        backend_name="default",
        startup_delay=False,
        max_tasks=None,
        worker_id=str(this_worker.pk),
        excluded_queue_names=[],
        worker=this_worker,
    )
    Worker.objects.filter(pk=this_worker.pk).delete()
    task.claim(str(this_worker.pk))
    executor.run_task(task)
    task.refresh_from_db()
    assert (task.status, task.worker_ids, task.started_at) == ("READY", ["7"], None)
    assert executor.lost and not executor.running


def test_a_task_handed_back_at_shutdown_is_logged_as_one_line_not_an_error():
    from recovery.log import HandedBackTasks

    try:
        raise WorkerStopping("the worker is shutting down; the run goes back to the queue")
    except WorkerStopping:
        import sys

        record = logging.LogRecord(
            "django.tasks",
            logging.ERROR,
            __file__,
            1,
            "Task id=%s state=%s",
            ("t1", "FAILED"),
            sys.exc_info(),
        )
    assert HandedBackTasks().filter(record)
    assert (record.levelno, record.exc_info) == (logging.INFO, None)
    assert record.getMessage() == (
        "Task id=t1 state=FAILED (handed back: the worker is shutting down; the run goes back "
        "to the queue)"
    )


# --- the poison prospect ------------------------------------------------------------------------


@pytest.mark.django_db
def test_after_a_death_each_result_is_committed_until_past_the_dead_batch(this_worker):
    """A run its worker died on commits one result per batch for `batch_size` prospects, then
    batches again; a run without a death writes its batches as usual."""
    died = make_pending_run(8)
    QualificationRun.objects.filter(pk=died.pk).update(deaths=1)
    healthy = make_pending_run(8)
    after_death = execute(died.pk, scorer=CountingScorer(), batch_size=3, batch_seconds=60)
    normal = execute(healthy.pk, scorer=CountingScorer(), batch_size=3, batch_seconds=60)
    assert (after_death.batches, normal.batches) == (3 + 2, 3)


@pytest.mark.django_db
def test_the_quarantined_prospect_is_written_as_errored_without_calling_the_scorer(this_worker):
    run = make_pending_run(5)
    QualificationRun.objects.filter(pk=run.pk).update(skip_prospect=3)
    seen: list[str] = []
    scorer = CountingScorer(hook=lambda _, prospect: seen.append(prospect.name))
    summary = execute(run.pk, scorer=scorer)

    assert (summary.outcome, summary.completed, summary.errored) == ("completed", 5, 1)
    assert seen == ["P0", "P1", "P3", "P4"]
    skipped = ProspectResult.objects.get(run=run, outcome=Outcome.ERRORED)
    assert (skipped.prospect.name, skipped.error, skipped.score) == (
        "P2",
        "crashed its worker twice; skipped",
        None,
    )
