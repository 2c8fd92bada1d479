"""Storage stays bounded: `prune_runs` deletes finished runs past their retention with their
prospects and results, keeps the audit trail longer, and each user may submit a bounded number
of prospects a day (issue 15, item 8)."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from django.core.checks import run_checks
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from qualifier.models import IdempotencyKey, Outcome, Prospect, ProspectResult, RunInput
from recovery.models import QualificationRun, RecoveryEvent, RecoverySource, RunStatus
from tests.helpers import CSRF_SECRET, DUMMY

DAY_MINUTES = 24 * 60


@pytest.fixture
def finished_run(make_run):
    """A finished run created `created` days ago that ended `ended` days ago, with
    `prospects` prospects of which `results` have a result."""

    def make(
        *,
        created: float,
        ended: float,
        prospects: int = 3,
        results: int = 2,
        status: str = RunStatus.COMPLETED,
        **fields,
    ) -> QualificationRun:
        run = make_run(
            status,
            total=prospects,
            completed=results,
            created_minutes_ago=created * DAY_MINUTES,
            completed_at=timezone.now() - dt.timedelta(days=ended),
            **fields,
        )
        stored = Prospect.objects.bulk_create(
            Prospect(run=run, position=n + 1, number=n + 1, name=f"P{n}", company="Acme")
            for n in range(prospects)
        )
        ProspectResult.objects.bulk_create(
            ProspectResult(run=run, prospect=p, outcome=Outcome.QUALIFIED, score=80)
            for p in stored[:results]
        )
        return run

    return make


def event(run: QualificationRun, days_ago: float) -> RecoveryEvent:
    return RecoveryEvent.objects.create(
        run=run,
        created_at=timezone.now() - dt.timedelta(days=days_ago),
        from_status=RunStatus.PROCESSING,
        to_status=RunStatus.FAILED,
        source=RecoverySource.COMMAND,
        reason="test",
        completed=0,
        total=run.total,
        host="host.test",
        pid=1,
    )


def prune(*args: str) -> str:
    out = io.StringIO()
    call_command("prune_runs", *args, stdout=out)
    return out.getvalue()


def test_finished_runs_past_retention_go_with_their_prospects_and_results(
    finished_run, make_run, alice
):
    old = finished_run(created=100, ended=95, user=alice)
    RunInput.objects.create(run=old, columns=["name", "company"])
    IdempotencyKey.objects.create(user=alice, key="k", body_hash="0" * 64, run=old)
    old_failed = finished_run(created=60, ended=59, status=RunStatus.FAILED, results=1)
    ended_lately = finished_run(created=100, ended=10)  # created long ago, continued lately
    recent = finished_run(created=5, ended=5)
    active = make_run(RunStatus.PENDING, created_minutes_ago=100 * DAY_MINUTES)

    output = prune("--days", "30")

    assert "Deleted 2 runs (6 prospects, 3 results) that ended before" in output
    assert set(QualificationRun.objects.values_list("pk", flat=True)) == {
        ended_lately.pk,
        recent.pk,
        active.pk,
    }
    assert not Prospect.objects.filter(run_id__in=[old.pk, old_failed.pk]).exists()
    assert not ProspectResult.objects.filter(run_id__in=[old.pk, old_failed.pk]).exists()
    assert not RunInput.objects.exists()
    assert not IdempotencyKey.objects.exists()
    assert Prospect.objects.filter(run=recent).count() == 3


def test_recovery_events_outlive_their_runs_and_keep_them(finished_run):
    recovered = finished_run(created=100, ended=95)
    event(recovered, days_ago=95)
    plain = finished_run(created=100, ended=95)

    output = prune("--days", "30", "--event-days", "365")
    assert "Deleted 1 run (3 prospects, 2 results)" in output
    assert "and 0 recovery events" in output
    assert "Kept 1 older run: recovery events still name them." in output
    assert list(QualificationRun.objects.values_list("pk", flat=True)) == [recovered.pk]
    assert RecoveryEvent.objects.count() == 1
    assert not QualificationRun.objects.filter(pk=plain.pk).exists()

    # Once its events are past their own retention, they go first, then the run.
    output = prune("--days", "30", "--event-days", "90")
    assert "Deleted 1 run (3 prospects, 2 results)" in output
    assert "and 1 recovery event recorded before" in output
    assert not QualificationRun.objects.exists()
    assert not RecoveryEvent.objects.exists()


def test_a_dry_run_says_what_it_would_delete_and_deletes_nothing(finished_run):
    finished_run(created=100, ended=95)
    event(finished_run(created=100, ended=95), days_ago=95)
    output = prune("--days", "30", "--event-days", "90", "--dry-run")
    assert output.startswith("Would delete 2 runs (6 prospects, 4 results) that ended before"), (
        output
    )
    assert "and 1 recovery event recorded before" in output
    assert QualificationRun.objects.count() == 2
    assert RecoveryEvent.objects.count() == 1
    assert Prospect.objects.count() == 6


def test_runs_are_deleted_in_bounded_batches(finished_run):
    for _ in range(5):
        finished_run(created=100, ended=95)
    output = prune("--days", "30", "--batch-size", "2")
    assert "Deleted 5 runs (15 prospects, 10 results)" in output
    assert "in 3 batches" in output
    assert not QualificationRun.objects.exists()


def test_the_queries_of_a_batch_do_not_grow_with_its_rows(finished_run):
    """The same statements delete 2 runs of 2 prospects and 8 runs of 40: none per row."""

    def queries_to_prune(runs: int, prospects: int) -> int:
        for _ in range(runs):
            finished_run(created=100, ended=95, prospects=prospects, results=prospects // 2)
        with CaptureQueriesContext(connection) as queries:
            prune("--days", "30")
        assert not QualificationRun.objects.exists()
        return len(queries)

    assert queries_to_prune(2, 2) == queries_to_prune(8, 40)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--days", "0"], "is not a whole number of days (1 to 36,500)"),
        (["--days", "\u0663\u0660"], "is not a whole number of days"),
        (["--event-days", "36501"], "is not a whole number of days"),
        (["--batch-size", "0"], "is not a batch size"),
        (["--days", "400", "--event-days", "365"], "the audit trail must outlive the runs"),
    ],
)
def test_bad_input_is_a_command_error_and_deletes_nothing(finished_run, args, message):
    finished_run(created=1000, ended=1000)
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prune(*args)
    assert QualificationRun.objects.count() == 1


@pytest.mark.parametrize(
    ("settings", "check_id"),
    [
        ({"QUALIFIER_RUN_RETENTION_DAYS": 0}, "qualifier.E021"),
        ({"RECOVERY_EVENT_RETENTION_DAYS": "forever"}, "recovery.E021"),
        (
            {"QUALIFIER_RUN_RETENTION_DAYS": 400, "RECOVERY_EVENT_RETENTION_DAYS": 365},
            "qualifier.E022",
        ),
        ({"QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY": 0}, "qualifier.E020"),
    ],
)
def test_retention_and_daily_limit_settings_are_checked(settings, check_id):
    with override_settings(**settings):
        errors = [message for message in run_checks(databases=[]) if message.id == check_id]
    assert len(errors) == 1
    assert errors[0].hint


# --- the daily prospect limit ---------------------------------------------------------------


def post_run(client: Client, count: int):
    body = json.dumps({"prospects": [{"name": f"P{n}", "company": "Acme"} for n in range(count)]})
    return client.post(
        "/api/qualify/runs",
        body,
        content_type="application/json",
        headers={"X-CSRFToken": CSRF_SECRET},
    )


@override_settings(QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY=5, TASKS=DUMMY)
def test_the_api_refuses_prospects_beyond_the_daily_limit_with_a_stable_code(alice, bob, make_run):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies["csrftoken"] = CSRF_SECRET
    # Yesterday's prospects and another user's do not count.
    make_run(RunStatus.COMPLETED, user=alice, total=5, created_minutes_ago=DAY_MINUTES + 1)
    make_run(RunStatus.COMPLETED, user=bob, total=5)
    assert post_run(client, 3).status_code == 201
    refused = post_run(client, 3)
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "daily_prospect_limit"
    assert "You have submitted 3 prospects in the last 24 hours" in body["error"]
    assert QualificationRun.objects.filter(user=alice).count() == 2
    assert post_run(client, 2).status_code == 201


@override_settings(QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY=2, TASKS=DUMMY)
def test_the_page_shows_the_daily_limit_on_the_form(client, alice):
    client.force_login(alice)
    upload = SimpleUploadedFile(
        "p.csv", b"name,company\nAnn,Acme\nBo,Acme\nCy,Acme\n", content_type="text/csv"
    )
    response = client.post("/runs/new/", {"prospects_file": upload})
    assert response.status_code == 200
    assert "more than the 2 one user may submit per day" in response.content.decode()
    assert not QualificationRun.objects.exists()


@pytest.mark.parametrize(
    "name",
    [
        "QUALIFIER_RUN_RETENTION_DAYS",
        "RECOVERY_EVENT_RETENTION_DAYS",
        "QUALIFIER_MAX_PROSPECTS_PER_USER_PER_DAY",
        "AUTH_TRUSTED_PROXIES",
        "EMAIL_URL",
    ],
)
def test_the_new_settings_are_read_from_the_environment(name):
    """settings.py types each of them: a bad value stops the command with one line."""
    from tests.processes import manage

    result = manage(["check"], "sqlite:///:memory:", **{name: "bogus"})
    assert result.returncode != 0
    assert f"Setting {name} is invalid" in result.stderr
    assert "Traceback" not in result.stderr
