"""What happens next to a run (recovery/outlook.py), on the run's page, the admin's run page and
in the API: each state, the sweep's own verdict behind it, and queries that do not grow with
the number of runs. Ages are set on the clock the database reads (SQLite and PostgreSQL here
share the test machine's clock, as `make_run` assumes)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from recovery import outlook
from recovery.models import (
    QualificationRun,
    RecoveryCause,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
)
from recovery.sweep import recover_stuck_runs
from tests.conftest import live_task_id, make_worker

#: The figures these tests read the outlook against, set here rather than taken from the
#: defaults (2 s beats, 8 s timeout, 2 s sweeps) so that a countdown has room to be seen.
TIMEOUT = 30  # RECOVERY_WORKER_TIMEOUT_SECONDS
INTERVAL = 10  # RECOVERY_SWEEP_INTERVAL_SECONDS


@pytest.fixture(autouse=True)
def liveness_figures(settings):
    settings.RECOVERY_HEARTBEAT_SECONDS = 10
    settings.RECOVERY_WORKER_TIMEOUT_SECONDS = TIMEOUT
    settings.RECOVERY_SWEEP_INTERVAL_SECONDS = INTERVAL


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def api_outlook(client: Client, run: QualificationRun) -> dict[str, Any]:
    return client.get(reverse("qualifier-api:run", args=[run.pk])).json()["outlook"]


def page(client: Client, run: QualificationRun) -> str:
    return client.get(reverse("qualifier:run-detail", args=[run.pk])).content.decode()


def working_run(make_run, alice, *, quiet_seconds: float, **fields: Any) -> QualificationRun:
    """A processing run whose worker beat, and which made progress, `quiet_seconds` ago."""
    fields.setdefault("total", 2000)
    fields.setdefault("completed", 811)
    run = make_run(
        user=alice,
        created_minutes_ago=5,
        started_minutes_ago=4,
        worker_beat_seconds_ago=quiet_seconds,
        **fields,
    )
    QualificationRun.objects.filter(pk=run.pk).update(
        heartbeat_at=timezone.now() - dt.timedelta(seconds=quiet_seconds)
    )
    return run


def test_a_working_run_says_who_beats_and_when_it_would_be_recovered_and_resumed(
    alice_client, alice, make_run, settings
):
    settings.RECOVERY_POLICY = "resume"
    run = working_run(make_run, alice, quiet_seconds=4)

    shown = api_outlook(alice_client, run)

    assert shown["state"] == outlook.WORKING
    assert shown["worker"] == "worker-host.test:4242"
    assert 4 <= shown["worker_beat_seconds"] <= 6
    assert 4 <= shown["last_sign_of_life_seconds"] <= 6
    # Dead once both ages pass the worker timeout, found by the next sweep at the latest.
    assert TIMEOUT - 6 + INTERVAL <= shown["recover_within_seconds"] <= TIMEOUT - 4 + INTERVAL
    assert (shown["recovery"], shown["resume_at"], shown["remaining"]) == ("resume", 812, 1189)
    within = shown["recover_within_seconds"]
    assert shown["text"] == (
        f"Last sign of life {shown['last_sign_of_life_seconds']} s ago (worker "
        f"worker-host.test:4242, last beat {shown['worker_beat_seconds']} s ago). The sweep runs "
        f"every 10 s: if no further sign of life comes, this run will be recovered within "
        f"{within} s and will then resume at prospect 812 of 2,000 (811 done)."
    )
    assert shown["summary"].startswith("Last activity")
    assert "will then resume at prospect 812 of 2,000 (811 done)" in page(alice_client, run)


def test_under_fail_a_working_run_says_it_will_be_failed_and_continue_can_finish_it(
    alice_client, alice, make_run, settings
):
    settings.RECOVERY_POLICY = "fail"
    run = working_run(make_run, alice, quiet_seconds=1)

    shown = api_outlook(alice_client, run)

    assert (shown["state"], shown["recovery"], shown["resume_at"]) == ("working", "fail", None)
    assert shown["text"].endswith(
        "will then be failed, keeping its 811 results; Continue finishes the other 1,189."
    )


def test_a_silent_run_about_to_be_recovered_counts_down(alice_client, alice, make_run):
    """25 s of silence of the 30 allowed: dead in about 5 s, recovered within a sweep more."""
    run = working_run(make_run, alice, quiet_seconds=25)

    shown = api_outlook(alice_client, run)

    assert shown["state"] == outlook.WORKING
    assert INTERVAL + 4 <= shown["recover_within_seconds"] <= INTERVAL + 5


def test_a_run_found_dead_will_be_recovered_by_the_next_sweep(alice_client, alice, make_run):
    run = working_run(make_run, alice, quiet_seconds=45)

    shown = api_outlook(alice_client, run)

    assert shown["state"] == outlook.RECOVERING
    assert shown["recover_within_seconds"] == INTERVAL
    assert shown["summary"] == "The worker stopped responding; recovering…"
    assert (
        "Its worker stopped responding: the sweep runs every 10 s and will recover it "
        in (shown["text"])
    )
    assert "within 10 s unless a sign of life comes first" in page(alice_client, run)


def test_with_sweeps_off_the_outlook_says_what_recovers_the_run(
    alice_client, alice, make_run, settings
):
    settings.RECOVERY_SWEEP_INTERVAL_SECONDS = 0
    run = working_run(make_run, alice, quiet_seconds=45)

    shown = api_outlook(alice_client, run)

    assert (shown["sweep_interval_seconds"], shown["recover_within_seconds"]) == (0, None)
    assert "Periodic sweeps are off (RECOVERY_SWEEP_INTERVAL_SECONDS is 0)" in shown["text"]


def died_before(run: QualificationRun, *stops: int) -> None:
    """Earlier deaths of the run's worker, stopped where `stops` say (results done)."""
    for completed in stops:
        RecoveryEvent.objects.create(
            run=run,
            from_status=RunStatus.PROCESSING,
            to_status=RunStatus.PENDING,
            source=RecoverySource.SWEEPER,
            cause=RecoveryCause.WORKER_SILENT,
            reason="died",
            completed=completed,
            total=run.total,
            host="h",
            pid=1,
        )
    QualificationRun.objects.filter(pk=run.pk).update(deaths=len(stops))


def test_a_run_the_crash_loop_guard_would_give_up_on_says_so(
    alice_client, alice, make_run, settings
):
    settings.RECOVERY_POLICY = "resume"
    settings.RECOVERY_MAX_ATTEMPTS = 3
    run = working_run(make_run, alice, quiet_seconds=2, total=100, completed=40)
    died_before(run, 0, 30)  # its third death would stop elsewhere: no one prospect to blame

    shown = api_outlook(alice_client, run)

    assert (shown["recovery"], shown["deaths"], shown["max_deaths"]) == ("give_up", 2, 3)
    assert shown["text"].endswith(
        "will then be failed, keeping its 40 results; Continue finishes the other 60: it would "
        "be its worker's death 3 on this run, and the crash-loop guard gives up at 3 "
        "(RECOVERY_MAX_ATTEMPTS)."
    )


def test_a_run_whose_worker_died_twice_at_one_prospect_would_have_it_quarantined(
    alice_client, alice, make_run, settings
):
    settings.RECOVERY_POLICY = "resume"
    settings.RECOVERY_MAX_ATTEMPTS = 3
    run = working_run(make_run, alice, quiet_seconds=2, total=100, completed=37)
    died_before(run, 0, 37)

    shown = api_outlook(alice_client, run)

    assert (shown["recovery"], shown["resume_at"]) == ("quarantine", 39)
    assert "skip prospect 38 (it crashed its worker twice" in shown["text"]


@pytest.mark.parametrize("policy", ["fail", "resume"])
@pytest.mark.parametrize(
    ("stops", "completed"),
    [((), 5), ((0, 30), 40), ((0, 37), 37)],
    ids=["first", "guard", "poison"],
)
def test_the_outlook_of_a_dead_run_is_what_the_sweep_then_does(
    alice, make_run, settings, policy, stops, completed
):
    """The page's prediction and the sweep read one rule (`sweep.verdict`): they agree."""
    settings.RECOVERY_POLICY = policy
    settings.RECOVERY_MAX_ATTEMPTS = 3
    run = working_run(make_run, alice, quiet_seconds=45, total=100, completed=completed)
    died_before(run, *stops)
    predicted = outlook.outlook_of(outlook.annotate(QualificationRun.objects.all()).get(pk=run.pk))

    recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)

    run.refresh_from_db()
    expected_status = {"resume": "PENDING", "quarantine": "PENDING"}.get(
        predicted.recovery or "", "FAILED"
    )
    assert run.status == expected_status
    assert run.skip_prospect == (
        predicted.resume_at - 1 if predicted.recovery == "quarantine" else None
    )


def test_a_quarantined_prospect_is_named(alice_client, alice, make_run):
    run = working_run(make_run, alice, quiet_seconds=1, total=100, completed=40)
    QualificationRun.objects.filter(pk=run.pk).update(skip_prospect=38)

    shown = api_outlook(alice_client, run)

    assert shown["quarantined_prospect"] == 38
    assert shown["text"].endswith(
        "Prospect 38 is quarantined: it crashed its worker twice, so it is written to the "
        "results as errored and the others go on."
    )


def test_a_queued_run_with_no_worker_says_it_starts_when_one_does(alice_client, alice, make_run):
    run = make_run(RunStatus.PENDING, user=alice, created_minutes_ago=1, task_id=live_task_id())

    shown = api_outlook(alice_client, run)

    assert (shown["state"], shown["workers_alive"], shown["place_in_line"]) == ("queued", False, 0)
    assert shown["text"] == (
        "Queued for 1 min: 10 prospects to score. It is next in line. No worker is "
        "running: the run starts when one does."
    )
    assert "No worker is running: the run starts when one does." in page(alice_client, run)


def test_a_queued_run_says_its_place_in_line(alice_client, alice, bob, make_run):
    """Runs queued before it count, whoever's they are; runs queued after it do not."""
    make_worker()
    for minutes, owner in ((9, bob), (8, alice), (7, bob)):
        make_run(RunStatus.PENDING, user=owner, created_minutes_ago=minutes, task_id=live_task_id())
    run = make_run(RunStatus.PENDING, user=alice, created_minutes_ago=6, task_id=live_task_id())
    make_run(RunStatus.PENDING, user=bob, created_minutes_ago=1, task_id=live_task_id())
    make_run(RunStatus.PROCESSING, user=bob, created_minutes_ago=10)

    shown = api_outlook(alice_client, run)

    assert (shown["state"], shown["place_in_line"], shown["workers_alive"]) == ("queued", 3, True)
    assert "3 queued runs ahead of it; it starts when a worker is free." in shown["text"]


def test_a_run_handed_back_says_it_was_interrupted_and_will_continue(alice_client, alice, make_run):
    make_worker()
    run = make_run(
        RunStatus.PENDING,
        user=alice,
        total=25,
        completed=14,
        created_minutes_ago=2,
        started_minutes_ago=2,
        task_id=live_task_id(),
    )

    shown = api_outlook(alice_client, run)

    assert (shown["state"], shown["resume_at"], shown["remaining"]) == ("interrupted", 15, 11)
    assert shown["text"].startswith(
        "Interrupted at 14 of 25: it will continue at prospect 15, the first without a result, "
        "and keep its 14 results. It is next in line; it starts when a worker is free."
    )


def test_a_failed_run_says_what_continue_would_do(alice_client, alice, make_run):
    run = make_run(RunStatus.FAILED, user=alice, total=25, completed=11)

    shown = api_outlook(alice_client, run)

    assert (shown["state"], shown["remaining"], shown["resume_at"]) == ("failed", 14, 12)
    assert shown["text"] == (
        "Press Continue to finish the remaining 14 prospects; the 11 results so far are kept."
    )
    assert shown["text"] in page(alice_client, run)


def test_a_completed_run_has_nothing_to_happen(alice_client, alice, make_run):
    run = make_run(RunStatus.COMPLETED, user=alice, completed=10, completed_at=timezone.now())

    shown = api_outlook(alice_client, run)

    assert (shown["state"], shown["recovery"], shown["remaining"]) == ("completed", None, 0)
    assert shown["text"] == "Completed: nothing more will happen to this run."


def test_the_admin_run_page_says_what_happens_next(make_run, settings):
    settings.RECOVERY_POLICY = "resume"
    staff = Client()
    staff.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    run = make_run(created_minutes_ago=3, started_minutes_ago=3, total=20, completed=7)

    html = staff.get(reverse("admin:recovery_qualificationrun_change", args=[run.pk]))

    assert "What happens next" in html.content.decode()
    assert "will then resume at prospect 8 of 20 (7 done)" in html.content.decode()


def test_the_api_and_the_runs_page_read_outlooks_in_queries_that_do_not_grow(
    alice_client, alice, make_run, django_assert_num_queries
):
    """A queued, a working, a handed-back and a failed run: place in line, worker, previous
    stop and liveness come in the list's own query, whatever the number of runs."""
    make_worker(host="other.test")

    def add_runs() -> None:
        make_run(RunStatus.PENDING, user=alice, task_id=live_task_id())
        run = make_run(user=alice, started_minutes_ago=1, heartbeat_minutes_ago=0.1)
        died_before(run, 3)
        make_run(RunStatus.PENDING, user=alice, started_minutes_ago=1, task_id=live_task_id())

    def count(url: str) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert alice_client.get(url).status_code == 200
        return len(queries)

    add_runs()
    urls = [reverse("qualifier-api:runs"), reverse("qualifier-api:active-runs"), "/"]
    first = [count(url) for url in urls]
    for _ in range(3):
        add_runs()
    for url, queries in zip(urls, first, strict=True):
        with django_assert_num_queries(queries):
            alice_client.get(url)
    listed = alice_client.get(reverse("qualifier-api:active-runs")).json()["results"]
    assert {run["outlook"]["state"] for run in listed} == {"queued", "working", "interrupted"}


def test_the_admin_says_how_an_operator_resumes_a_failed_run(make_run):
    staff = Client()
    staff.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    run = make_run(RunStatus.FAILED, total=25, completed=11)

    html = staff.get(reverse("admin:recovery_qualificationrun_change", args=[run.pk]))

    assert (
        "Its owner&#x27;s Continue, or the action Resume selected runs, puts it back in the "
        "queue for the 14 prospects without a result; its 11 results are kept."
    ) in html.content.decode()
