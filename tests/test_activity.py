"""What the run page and the notifier say about an active run: how long it has been queued,
when it last made progress, or that its worker stopped responding and recovery is coming."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils import timezone

from recovery.models import QualificationRun, RunStatus
from tests.conftest import live_task_id, make_worker


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def active(alice_client) -> dict[int, dict]:
    body = alice_client.get(reverse("qualifier-api:active-runs")).json()
    return {run["id"]: run for run in body["results"]}


def test_a_queued_run_says_it_is_queued_and_for_how_long(alice_client, alice, make_run):
    make_worker()
    run = make_run(RunStatus.PENDING, user=alice, created_minutes_ago=3, task_id=live_task_id())

    shown = active(alice_client)[run.pk]

    assert shown["activity"] == "Queued, waiting for a worker (for 3 min)"
    assert 180 <= shown["queued_seconds"] < 200
    page = alice_client.get(reverse("qualifier:run-detail", args=[run.pk])).content.decode()
    assert "Queued, waiting for a worker (for 3 min)" in page


def test_a_working_run_shows_its_last_activity(alice_client, alice, make_run):
    run = make_run(user=alice, started_minutes_ago=2, heartbeat_minutes_ago=0.1)

    shown = active(alice_client)[run.pk]

    assert shown["activity"] == "Last activity 6 s ago"
    assert shown["worker_responding"] is True


def test_a_run_whose_worker_stopped_responding_says_recovery_is_coming(
    alice_client, alice, make_run
):
    """Dead but not yet swept: no frozen bar, the page says what is going on."""
    run = make_run(
        user=alice, started_minutes_ago=2, heartbeat_minutes_ago=0.5, worker_beat_seconds_ago=45
    )

    shown = active(alice_client)[run.pk]

    assert shown["activity"] == "The worker stopped responding; recovering…"
    assert shown["worker_responding"] is False
    page = alice_client.get(reverse("qualifier:run-detail", args=[run.pk])).content.decode()
    assert "The worker stopped responding; recovering…" in page


def test_finished_runs_say_nothing_about_activity(alice_client, alice, make_run):
    run = make_run(RunStatus.COMPLETED, user=alice, completed_at=timezone.now())
    run_json = alice_client.get(reverse("qualifier-api:run", args=[run.pk])).json()

    assert run_json["activity"] == ""
    assert QualificationRun.objects.get(pk=run.pk).activity() == ""


def test_a_queued_run_with_no_worker_anywhere_says_so(alice_client, alice, make_run):
    """Not only the admin knows: the run page and the runs list say no worker is running."""
    run = make_run(RunStatus.PENDING, user=alice, created_minutes_ago=3, task_id=live_task_id())

    shown = active(alice_client)[run.pk]

    assert shown["activity"] == "No worker is running: the run starts when one does"
    page = alice_client.get(reverse("qualifier:run-detail", args=[run.pk])).content.decode()
    assert "No worker is running: the run starts when one does" in page
    assert "No worker is running" in alice_client.get("/").content.decode()


def test_a_run_handed_back_at_shutdown_says_it_was_interrupted_and_will_continue(
    alice_client, alice, make_run
):
    make_worker()
    run = make_run(
        RunStatus.PENDING,
        user=alice,
        total=25,
        completed=12,
        created_minutes_ago=5,
        started_minutes_ago=4,
        task_id=live_task_id(),
    )

    shown = active(alice_client)[run.pk]

    assert shown["activity"].startswith(
        "Interrupted at 12 of 25; it continues where it stopped when a worker takes it"
    )
