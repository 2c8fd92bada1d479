"""Creating runs (run, prospects and task together), retrying failed runs, counting results."""

from __future__ import annotations

import logging

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from qualifier.criteria import Criteria
from qualifier.models import Outcome, Prospect, ProspectResult
from qualifier.prospects import ProspectData, ProspectInputError, TooManyProspects
from qualifier.runs import RetryNotAllowed, RunCounts, counts_for, create_run, retry_run
from recovery.models import QualificationRun, RunStatus
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


@override_settings(QUALIFIER_MAX_PROSPECTS="2")
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
def test_retry_creates_a_run_over_the_prospects_without_a_result(user):
    original = failed_run_with_results(user, scored=2)
    retry = retry_run(original, user=user)
    assert retry.pk != original.pk
    assert (retry.status, retry.total, retry.retry_of) == (RunStatus.PENDING, 3, original)
    assert retry.criteria == original.criteria
    copied = list(Prospect.objects.filter(run=retry).values_list("position", "name", "extra"))
    assert copied == [
        (4, "Person 2", {"row": "2"}),
        (5, "Person 3", {"row": "3"}),
        (6, "Person 4", {"row": "4"}),
    ]


@override_settings(TASKS=DUMMY)
def test_retry_keeps_the_original_runs_results(user):
    original = failed_run_with_results(user, scored=2)
    retry_run(original, user=user)
    original.refresh_from_db()
    assert original.status == RunStatus.FAILED
    assert ProspectResult.objects.filter(run=original).count() == 2
    assert Prospect.objects.filter(run=original).count() == 5


@pytest.mark.parametrize("status", [RunStatus.PENDING, RunStatus.PROCESSING, RunStatus.COMPLETED])
def test_only_a_failed_run_can_be_retried(user, status):
    with override_settings(TASKS=DUMMY):
        run = create_run(user=user, prospects=prospects(1))
    QualificationRun.objects.filter(pk=run.pk).update(status=status)
    with pytest.raises(RetryNotAllowed, match="only a failed run can be retried"):
        retry_run(run, user=user)
    assert QualificationRun.objects.count() == 1


def test_retry_reads_the_current_status_not_a_stale_instance(user):
    run = failed_run_with_results(user, scored=1)
    QualificationRun.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)
    with pytest.raises(RetryNotAllowed):
        retry_run(run, user=user)


def test_a_failed_run_with_every_result_has_nothing_to_retry(user):
    run = failed_run_with_results(user, scored=5)
    with pytest.raises(RetryNotAllowed, match="nothing left to retry"):
        retry_run(run, user=user)
    assert QualificationRun.objects.count() == 1


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
