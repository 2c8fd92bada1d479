"""Creating runs (run, prospects and task together), continuing failed runs, counting results."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from qualifier.criteria import Criteria
from qualifier.models import Outcome, Prospect, ProspectResult
from qualifier.prospects import ProspectData, ProspectInputError, TooManyProspects
from qualifier.runs import RetryNotAllowed, RunCounts, continue_run, counts_for, create_run
from recovery.models import QualificationRun, RecoveryEvent, RecoverySource, RunStatus
from tests.helpers import DUMMY, IMMEDIATE

pytestmark = pytest.mark.django_db


def prospects(count: int, **fields) -> list[ProspectData]:
    return [
        ProspectData(
            name=f"Person {i}",
            company=f"Company {i}",
            industry="Software",
            employees=100,
            title="VP Sales",
            extra={"row": str(i)},
            position=i + 2,
            **fields,
        )
        for i in range(count)
    ]


@pytest.fixture
def user():
    return get_user_model().objects.create_user("ann")


@override_settings(TASKS=DUMMY)
def test_create_run_stores_a_pending_run_with_its_prospects_and_criteria(user):
    criteria = Criteria.defaults().with_overrides({"min_score": 75})
    run = create_run(user=user, prospects=prospects(3), criteria=criteria)
    run.refresh_from_db()
    assert (run.status, run.total, run.completed, run.user) == (RunStatus.PENDING, 3, 0, user)
    assert run.criteria == criteria.as_dict()
    rows = list(Prospect.objects.filter(run=run).values_list("position", "name", "extra"))
    assert rows == [
        (2, "Person 0", {"row": "0"}),
        (3, "Person 1", {"row": "1"}),
        (4, "Person 2", {"row": "2"}),
    ]


@override_settings(TASKS=DUMMY)
def test_a_run_without_criteria_stores_the_project_defaults(user):
    run = create_run(user=user, prospects=prospects(1))
    assert run.criteria == Criteria.defaults().as_dict()


@override_settings(TASKS=DUMMY)
def test_the_task_is_enqueued_only_once_the_run_is_committed(
    user, django_capture_on_commit_callbacks
):
    from django.tasks import default_task_backend

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        run = create_run(user=user, prospects=prospects(2))
    assert default_task_backend.results == []
    assert len(callbacks) == 1
    callbacks[0]()
    [result] = default_task_backend.results
    assert result.task.name == "execute_run"
    assert result.args == [run.pk]


@override_settings(TASKS=IMMEDIATE)
def test_a_created_run_is_executed_by_its_task(user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        run = create_run(user=user, prospects=prospects(5))
    run.refresh_from_db()
    assert (run.status, run.completed) == (RunStatus.COMPLETED, 5)
    assert ProspectResult.objects.filter(run=run).count() == 5


@override_settings(TASKS=DUMMY)
def test_a_queue_failure_is_logged_and_leaves_the_run_pending_for_recovery(
    user, django_capture_on_commit_callbacks, monkeypatch, caplog
):
    from django.tasks.backends.dummy import DummyBackend

    def broken(self, task, args, kwargs):
        raise ConnectionError("queue is down")

    monkeypatch.setattr(DummyBackend, "enqueue", broken)
    with (
        caplog.at_level(logging.ERROR, "qualifier"),
        django_capture_on_commit_callbacks(execute=True),
    ):
        run = create_run(user=user, prospects=prospects(1))
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    assert f"Run {run.pk} could not be queued" in caplog.text


def test_a_run_without_prospects_is_rejected_and_nothing_is_created(user):
    with pytest.raises(ProspectInputError):
        create_run(user=user, prospects=[])
    assert not QualificationRun.objects.exists()


@override_settings(QUALIFIER_MAX_PROSPECTS=2)
def test_a_run_with_too_many_prospects_is_rejected_and_nothing_is_created(user):
    with pytest.raises(TooManyProspects):
        create_run(user=user, prospects=prospects(3))
    assert not QualificationRun.objects.exists()
    assert not Prospect.objects.exists()


@override_settings(TASKS=DUMMY)
def test_an_anonymous_user_creates_a_run_without_an_owner():
    from django.contrib.auth.models import AnonymousUser

    run = create_run(user=AnonymousUser(), prospects=prospects(1))
    assert run.user is None


# --- retry ------------------------------------------------------------------------------------


def failed_run_with_results(user, *, scored: int, total: int = 5) -> QualificationRun:
    criteria = Criteria.defaults().with_overrides({"min_score": 10})
    with override_settings(TASKS=DUMMY):
        run = create_run(user=user, prospects=prospects(total), criteria=criteria)
    done = list(Prospect.objects.filter(run=run).order_by("position")[:scored])
    ProspectResult.objects.bulk_create(
        ProspectResult(run=run, prospect=p, outcome=Outcome.QUALIFIED, score=90) for p in done
    )
    QualificationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.FAILED, completed=scored, failure_reason="worker died"
    )
    run.refresh_from_db()
    return run


@override_settings(TASKS=DUMMY)
def test_continue_puts_the_same_run_back_in_the_queue_with_a_new_task_and_an_event(
    user, django_capture_on_commit_callbacks
):
    run = failed_run_with_results(user, scored=2)
    old_task = run.task_id
    with django_capture_on_commit_callbacks(execute=True):
        continued = continue_run(run, user=user)
    assert continued.pk == run.pk
    assert QualificationRun.objects.count() == 1  # no new run
    run.refresh_from_db()
    assert (run.status, run.completed, run.failure_reason) == (RunStatus.PENDING, 2, "")
    assert run.task_id and run.task_id != old_task
    assert ProspectResult.objects.filter(run=run).count() == 2  # results kept, in one run
    [event] = RecoveryEvent.objects.filter(run=run)
    assert (event.from_status, event.to_status, event.source, event.actor) == (
        RunStatus.FAILED,
        RunStatus.PENDING,
        RecoverySource.CONTINUE,
        user,
    )
    assert event.reason.startswith(
        "Resumed: back in the queue with 2 of 5 prospects done; the next worker starts at "
        "prospect 3 of 5, the first without a result"
    )


@override_settings(TASKS=IMMEDIATE)
def test_a_continued_run_finishes_only_the_prospects_left(user, django_capture_on_commit_callbacks):
    run = failed_run_with_results(user, scored=2)
    with django_capture_on_commit_callbacks(execute=True):
        continue_run(run, user=user)
    run.refresh_from_db()
    assert (run.status, run.completed) == (RunStatus.COMPLETED, 5)
    assert ProspectResult.objects.filter(run=run).count() == 5
    # The two results written before are the very same rows: they were not scored again.
    assert ProspectResult.objects.filter(run=run, score=90).count() >= 2


@override_settings(TASKS=DUMMY)
def test_a_second_continue_while_the_run_is_pending_is_refused_and_queues_nothing(user):
    run = failed_run_with_results(user, scored=2)
    continue_run(run, user=user)
    task = QualificationRun.objects.get(pk=run.pk).task_id
    with pytest.raises(RetryNotAllowed, match="already pending: it was continued"):
        continue_run(run, user=user)
    run.refresh_from_db()
    assert run.task_id == task
    assert RecoveryEvent.objects.filter(run=run).count() == 1


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (RunStatus.PENDING, "is already pending"),
        (RunStatus.PROCESSING, "is already processing"),
        (RunStatus.COMPLETED, "only a failed run can be continued"),
    ],
)
def test_only_a_failed_run_can_be_continued(user, status, message):
    with override_settings(TASKS=DUMMY):
        run = create_run(user=user, prospects=prospects(1))
    QualificationRun.objects.filter(pk=run.pk).update(status=status)
    with pytest.raises(RetryNotAllowed, match=message):
        continue_run(run, user=user)
    assert QualificationRun.objects.get(pk=run.pk).status == status
    assert not RecoveryEvent.objects.exists()


def test_continue_reads_the_current_status_not_a_stale_instance(user):
    run = failed_run_with_results(user, scored=1)
    QualificationRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    with pytest.raises(RetryNotAllowed):
        continue_run(run, user=user)
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.COMPLETED


def test_a_failed_run_with_every_result_has_nothing_to_continue(user):
    run = failed_run_with_results(user, scored=5)
    with pytest.raises(RetryNotAllowed, match="nothing left to continue"):
        continue_run(run, user=user)
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.FAILED


# --- counts -----------------------------------------------------------------------------------


def test_counts_for_counts_each_outcome_per_run_in_one_query(user, django_assert_num_queries):
    with override_settings(TASKS=DUMMY):
        first = create_run(user=user, prospects=prospects(4))
        second = create_run(user=user, prospects=prospects(2))
        empty = create_run(user=user, prospects=prospects(1))
    outcomes = [Outcome.QUALIFIED, Outcome.QUALIFIED, Outcome.NOT_QUALIFIED, Outcome.ERRORED]
    ProspectResult.objects.bulk_create(
        ProspectResult(run=first, prospect=p, outcome=o, score=None if o == Outcome.ERRORED else 50)
        for p, o in zip(first.prospects.order_by("position"), outcomes, strict=True)
    )
    ProspectResult.objects.bulk_create(
        ProspectResult(run=second, prospect=p, outcome=Outcome.NOT_QUALIFIED, score=5)
        for p in second.prospects.all()
    )
    with django_assert_num_queries(1):
        counts = counts_for([first, second, empty])
    assert counts == {
        first.pk: RunCounts(qualified=2, not_qualified=1, errored=1),
        second.pk: RunCounts(qualified=0, not_qualified=2, errored=0),
        empty.pk: RunCounts(),
    }
    assert counts[first.pk].scored == 4


def test_counts_for_no_runs_makes_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert counts_for([]) == {}
