"""/metrics, /healthz and /readyz: the figures after real recoveries, who may read them, and
what readiness reports."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection
from django.db.models import Sum
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from common.values import parse_networks
from qualifier.execution import execute
from recovery import health, sweep
from recovery.models import (
    FencedWrite,
    FencedWriteKind,
    RecoveryCause,
    RecoveryEvent,
    RecoverySource,
    RunStatus,
    SweepOutcome,
    SweepTally,
    Worker,
)
from recovery.sweep import continue_failed_runs, hand_back, recover_stuck_runs
from recovery.worker import registry as workers
from tests.conftest import make_worker
from tests.test_worker import CountingScorer, force_recover, make_pending_run

TOKEN = "m" * 40


def scrape(client: Any, **headers: str) -> dict[str, dict[tuple, float]]:
    """The samples of /metrics as {name: {labels: value}}, parsed by prometheus_client."""
    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}", **headers})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


@pytest.fixture
def metrics_on(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN


@pytest.mark.usefixtures("metrics_on")
def test_metrics_count_runs_workers_and_recoveries_after_real_sweeps(client, make_run):
    make_run(RunStatus.COMPLETED)
    # Queued for less than the worker timeout: not yet judged by the sweep.
    make_run(RunStatus.PENDING)
    make_run(RunStatus.PENDING, created_minutes_ago=1 / 12)
    make_run(RunStatus.PROCESSING)  # a live worker beating
    # Dead: worker silent for 5 minutes; last heartbeat 2 minutes ago and 20 minutes ago.
    make_run(heartbeat_minutes_ago=2, worker_beat_seconds_ago=300)
    make_run(heartbeat_minutes_ago=20, worker_beat_seconds_ago=300)

    before = scrape(client)
    assert before["qualifier_dead_runs"][()] == 2
    assert before["qualifier_runs"][(("status", "processing"),)] == 3
    assert before["qualifier_queued_runs"][()] == 2
    assert 4 <= before["qualifier_oldest_queued_seconds"][()] <= 7
    assert before["qualifier_workers"][(("state", "live"),)] == 1
    assert before["qualifier_workers"][(("state", "dead"),)] == 2
    assert "qualifier_last_recovery_age_seconds" not in before

    report = recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
    assert report.recovered_count == 2

    after = scrape(client)
    assert after["qualifier_dead_runs"][()] == 0
    assert after["qualifier_runs"][(("status", "failed"),)] == 2
    assert after["qualifier_runs"][(("status", "processing"),)] == 1
    key = (("cause", "worker_silent"), ("source", "command"), ("to_status", "failed"))
    assert after["qualifier_recoveries_total"][key] == 2
    assert after["qualifier_runs_handed_back_at_shutdown_total"][()] == 0
    assert 0 <= after["qualifier_last_recovery_age_seconds"][()] <= 5
    buckets = after["qualifier_dead_run_active_seconds_bucket"]
    # Stayed active ~120 s and ~1200 s after their last heartbeat.
    assert buckets[(("le", "60.0"),)] == 0
    assert buckets[(("le", "300.0"),)] == 1
    assert buckets[(("le", "600.0"),)] == 1
    assert buckets[(("le", "1800.0"),)] == 2
    assert buckets[(("le", "+Inf"),)] == 2
    assert after["qualifier_dead_run_active_seconds_count"][()] == 2
    assert 1300 <= after["qualifier_dead_run_active_seconds_sum"][()] <= 1340
    # The silent workers had no run left, so the sweep removed them.
    assert after["qualifier_workers"][(("state", "dead"),)] == 0


@pytest.mark.usefixtures("metrics_on")
def test_metrics_count_runs_handed_back_at_shutdown(client, make_run):
    run = make_run(heartbeat_minutes_ago=0)
    hand_back(run.worker, source=RecoverySource.SHUTDOWN, cause=RecoveryCause.SHUTDOWN)
    samples = scrape(client)
    assert samples["qualifier_runs_handed_back_at_shutdown_total"][()] == 1
    key = (("cause", "shutdown"), ("source", "shutdown"), ("to_status", "pending"))
    assert samples["qualifier_recoveries_total"][key] == 1


@pytest.mark.usefixtures("metrics_on")
def test_metrics_count_the_writes_refused_to_a_stale_worker_after_a_forced_recovery(client, db):
    workers.set_current(workers.register())
    run = make_pending_run(6)
    assert scrape(client)["qualifier_fenced_writes_total"] == {
        (("kind", kind),): 0 for kind in FencedWriteKind.values
    }

    def recover_midway(call: int, prospect: object) -> None:
        if call == 3:  # the worker has written one batch of two; an operator fails the run
            force_recover(run)

    assert execute(run.pk, scorer=CountingScorer(recover_midway), batch_size=2).outcome == "fenced"

    samples = scrape(client)
    assert samples["qualifier_fenced_writes_total"] == {
        (("kind", "complete"),): 0,
        (("kind", "fail"),): 0,
        (("kind", "hand_back"),): 0,
        (("kind", "progress"),): 1,
    }
    key = (("cause", "forced"), ("source", "command"), ("to_status", "failed"))
    assert samples["qualifier_recoveries_total"][key] == 1
    assert FencedWrite.objects.get().run_id == run.pk


@pytest.mark.usefixtures("metrics_on")
def test_metrics_count_sweeps_by_source_and_outcome_with_their_durations(
    client, make_run, monkeypatch
):
    before = scrape(client)
    assert "qualifier_last_successful_sweep_age_seconds" not in before
    assert "qualifier_sweeps_total" not in before

    recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
    recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
    recover_stuck_runs(source=RecoverySource.API, dry_run=True, log=False)  # a preview
    make_run(heartbeat_minutes_ago=10, worker_beat_seconds_ago=300)
    assert recover_stuck_runs(source=RecoverySource.COMMAND, log=False).recovered_count == 1

    def database_gone(*args: object) -> int:
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(sweep, "remove_dead_workers", database_gone)
    with pytest.raises(OperationalError):
        recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)

    samples = scrape(client)
    assert samples["qualifier_sweeps_total"] == {
        (("outcome", "error"), ("source", "sweeper")): 1,
        (("outcome", "ok"), ("source", "command")): 1,
        (("outcome", "ok"), ("source", "sweeper")): 2,
    }
    assert "api" not in str(samples["qualifier_sweep_duration_seconds_count"])
    count = samples["qualifier_sweep_duration_seconds_count"]
    assert count == {(("source", "command"),): 1, (("source", "sweeper"),): 2}
    buckets = samples["qualifier_sweep_duration_seconds_bucket"]
    assert buckets[(("le", "+Inf"), ("source", "sweeper"))] == 2
    assert buckets[(("le", "60.0"), ("source", "sweeper"))] == 2
    sweeper_bounds = sorted(
        (float(dict(labels)["le"]), value)
        for labels, value in buckets.items()
        if dict(labels)["source"] == "sweeper"
    )
    values = [value for _, value in sweeper_bounds]
    assert values == sorted(values), "cumulative"
    assert 0 < samples["qualifier_sweep_duration_seconds_sum"][(("source", "sweeper"),)] < 30
    assert 0 <= samples["qualifier_last_successful_sweep_age_seconds"][()] <= 5


def test_a_sweep_is_one_statement_more_than_its_work(make_run, django_assert_num_queries):
    """The tally is one upsert per sweep, whatever the sweep found."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as idle:
        recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
    tallies = [q["sql"] for q in idle.captured_queries if SweepTally._meta.db_table in q["sql"]]
    assert len(tallies) == 1
    for _ in range(5):
        make_run(heartbeat_minutes_ago=10, worker_beat_seconds_ago=300)
    with CaptureQueriesContext(connection) as busy:
        recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
    tallies = [q["sql"] for q in busy.captured_queries if SweepTally._meta.db_table in q["sql"]]
    assert len(tallies) == 1
    assert SweepTally.objects.aggregate(n=Sum("sweeps"))["n"] == 2


@pytest.mark.usefixtures("metrics_on")
def test_one_scrape_makes_the_same_few_queries_however_many_rows(
    client, make_run, django_assert_max_num_queries
):
    for _ in range(30):
        make_run(heartbeat_minutes_ago=10, worker_beat_seconds_ago=300)
    recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
    with django_assert_max_num_queries(11):
        scrape(client)


@pytest.mark.usefixtures("metrics_on")
def test_the_dead_run_histogram_counts_only_runs_found_dead(client, make_run):
    """A hand-back at shutdown and a continue after failing are recovery events too, but their
    runs were not dead while active: they stay out of the histogram."""
    dead = make_run(heartbeat_minutes_ago=2, worker_beat_seconds_ago=300)
    assert recover_stuck_runs(source=RecoverySource.COMMAND, log=False).recovered_count == 1
    continue_failed_runs([dead.pk], source=RecoverySource.CONTINUE)
    handed = make_run(heartbeat_minutes_ago=0)
    hand_back(handed.worker, source=RecoverySource.SHUTDOWN, cause=RecoveryCause.SHUTDOWN)
    assert RecoveryEvent.objects.count() == 3

    samples = scrape(client)
    assert samples["qualifier_dead_run_active_seconds_count"][()] == 1
    assert 115 <= samples["qualifier_dead_run_active_seconds_sum"][()] <= 130


def test_metrics_are_off_without_a_token_or_a_network(client, db):
    assert client.get("/metrics").status_code == 404


@pytest.mark.usefixtures("metrics_on")
@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (f"Bearer {TOKEN}", 200),
        (f"bearer {TOKEN}", 200),
        (f"Bearer {TOKEN[:-1]}x", 401),
        (f"Bearer {TOKEN}x", 401),
        (f"Basic {TOKEN}", 401),
        ("Bearer ", 401),
        (None, 401),
    ],
)
def test_metrics_need_the_right_bearer_token(client, db, authorization, status):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'


@pytest.mark.parametrize(
    ("networks", "address", "status"),
    [
        ("10.0.0.0/8", "10.1.2.3", 200),
        ("10.0.0.0/8, 192.168.1.7", "192.168.1.7", 200),
        ("10.0.0.0/8", "127.0.0.1", 403),
        ("::1/128", "::1", 200),
        ("::1/128", "127.0.0.1", 403),
    ],
)
def test_metrics_are_open_only_to_the_allowed_networks(client, db, networks, address, status):
    with override_settings(METRICS_ALLOWED_NETWORKS=parse_networks(networks)):
        assert client.get("/metrics", REMOTE_ADDR=address).status_code == status


def test_a_token_or_an_allowed_network_each_admit_a_scrape(client, db):
    with override_settings(
        METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=parse_networks("10.0.0.0/8")
    ):
        assert client.get("/metrics", REMOTE_ADDR="10.0.0.9").status_code == 200
        outside = client.get("/metrics", REMOTE_ADDR="8.8.8.8")
        assert outside.status_code == 401
        with_token = client.get(
            "/metrics", REMOTE_ADDR="8.8.8.8", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert with_token.status_code == 200


@pytest.mark.usefixtures("metrics_on")
def test_metrics_refuse_a_post(client):
    response = client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 405


@pytest.mark.parametrize(
    ("setting", "value", "check_id"),
    [
        ("METRICS_TOKEN", "short", "recovery.E017"),
        ("METRICS_ALLOWED_NETWORKS", "10.0.0.0/8,not-a-network", "recovery.E018"),
        ("METRICS_ALLOWED_NETWORKS", "10.0.0.0/33", "recovery.E018"),
    ],
)
def test_bad_metrics_settings_stop_the_server_with_a_check(setting, value, check_id):
    from recovery.checks import check_recovery_settings

    with override_settings(**{setting: value}):
        ids = [error.id for error in check_recovery_settings()]
    assert ids == [check_id]


def test_good_metrics_settings_pass_the_checks():
    from recovery.checks import check_recovery_settings

    networks = parse_networks("10.0.0.0/8, ::1")
    with override_settings(METRICS_TOKEN=TOKEN, METRICS_ALLOWED_NETWORKS=networks):
        assert check_recovery_settings() == []


# --- /healthz and /readyz ----------------------------------------------------------------------


def test_healthz_answers_without_the_database(client, db, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_with_a_live_worker_and_a_recent_sweep(client, db):
    make_worker()
    recover_stuck_runs(source=RecoverySource.SWEEPER, log=False)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {
        "database": "ok",
        "migrations": "ok",
        "workers": "ok: 1 live",
        "sweeps": "ok: last successful sweep 0 s ago",
    }


def test_readyz_is_ok_right_after_a_fresh_deploy_before_any_sweep(client, db):
    make_worker()  # registered just now; no sweep has run anywhere yet
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["sweeps"] == (
        "ok: starting (workers up for 0 s, no sweep succeeded yet)"
    )


def tally(outcome: str, seconds_ago: float, source: str = RecoverySource.SWEEPER) -> None:
    SweepTally.objects.create(
        source=source,
        outcome=outcome,
        le="0.01",
        sweeps=1,
        seconds=0.005,
        last_at=timezone.now() - dt.timedelta(seconds=seconds_ago),
    )


def old_worker(minutes: float = 10) -> Worker:
    """A live worker (it beats) that registered long ago."""
    return Worker.objects.create(
        host="h", pid=7, registered_at=timezone.now() - dt.timedelta(minutes=minutes)
    )


def test_readyz_is_unavailable_when_no_sweep_succeeded_for_several_intervals(client, db):
    old_worker()
    tally(SweepOutcome.OK, seconds_ago=300)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == [
        "sweeps: no successful sweep for 300 s (expected every 2 s)"
    ]


def test_readyz_says_when_the_sweeps_fail(client, db):
    old_worker()
    tally(SweepOutcome.OK, seconds_ago=300)
    tally(SweepOutcome.ERROR, seconds_ago=4)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == [
        "sweeps: no successful sweep for 300 s (expected every 2 s); the last sweep failed 4 s ago"
    ]


def test_readyz_is_unavailable_when_no_sweep_ever_succeeded_long_after_the_start(client, db):
    old_worker()
    tally(SweepOutcome.ERROR, seconds_ago=2)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == [
        "sweeps: no sweep has succeeded yet (expected every 2 s); the last sweep failed 2 s ago"
    ]


def test_readyz_grants_three_sweep_intervals_since_the_last_successful_sweep(client, db):
    old_worker()
    tally(SweepOutcome.OK, seconds_ago=5)  # within 3 x the default 2 s
    assert client.get("/readyz").status_code == 200
    health._last_readiness = None  # the answer is kept for a second
    with override_settings(RECOVERY_SWEEP_INTERVAL_SECONDS=1):
        assert client.get("/readyz").status_code == 503


def test_readyz_requires_no_recent_sweep_when_periodic_sweeps_are_off(client, db, settings):
    settings.RECOVERY_SWEEP_INTERVAL_SECONDS = 0
    old_worker()
    tally(SweepOutcome.OK, seconds_ago=3600)
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"]["sweeps"] == (
        "ok: periodic sweeps are off; last successful sweep 3600 s ago"
    )


def test_readyz_is_unavailable_without_a_live_worker(client, db):
    make_worker(beat_seconds_ago=3600)
    tally(SweepOutcome.OK, seconds_ago=1)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["workers: no live worker"]


def test_readyz_is_unavailable_when_sweeps_leave_runs_dead(client, make_run):
    make_worker(pid=1)
    # Its worker has been silent far longer than the timeout plus three sweep intervals.
    make_run(heartbeat_minutes_ago=30, worker_beat_seconds_ago=1800)
    response = client.get("/readyz")
    assert response.status_code == 503
    (reason,) = response.json()["reasons"]
    assert reason.startswith("sweeps: 1 run(s) dead for over 6 s past their timeout")


def test_readyz_tolerates_a_run_that_just_died(client, make_run):
    make_worker(pid=1)
    make_run(heartbeat_minutes_ago=1, worker_beat_seconds_ago=10)  # dead for 2 s
    assert client.get("/readyz").status_code == 200


def test_readyz_reports_unapplied_migrations(client, db, monkeypatch):
    make_worker()
    monkeypatch.setattr(health, "_migrations_applied", False)
    monkeypatch.setattr(
        "django.db.migrations.executor.MigrationExecutor.migration_plan",
        lambda self, targets: [("a migration", False)],
    )
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["migrations: 1 migration(s) not applied"]


def test_readyz_makes_few_queries(client, db, django_assert_max_num_queries):
    """The workers, the sweep tallies and the dead runs; on SQLite the probe is a fourth
    (elsewhere it has a connection of its own)."""
    make_worker()
    client.get("/readyz")  # reads the migration files once
    health._last_readiness = None
    with django_assert_max_num_queries(4 if connection.vendor == "sqlite" else 3):
        assert client.get("/readyz").status_code == 200


def test_readyz_checks_at_most_once_a_second_per_process(client, db, monkeypatch):
    """Polled often, /readyz answers from the last check (no query, no new connection) until
    READYZ_CACHE_SECONDS have passed; then it checks again and sees what changed."""
    now = [1_000.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: now[0])
    probes = []
    monkeypatch.setattr(health, "probe_database", lambda: probes.append(1) or "")
    make_worker()
    assert client.get("/readyz").json()["checks"]["workers"] == "ok: 1 live"
    Worker.objects.all().delete()
    now[0] += health.READYZ_CACHE_SECONDS - 0.01
    with CaptureQueriesContext(connection) as queries:
        for _ in range(20):
            cached = client.get("/readyz")
    assert (len(queries), len(probes)) == (0, 1)
    assert cached.json()["checks"]["workers"] == "ok: 1 live"
    now[0] += 0.01
    assert client.get("/readyz").json()["checks"]["workers"] == "no live worker"
    assert len(probes) == 2


def test_a_worker_that_beat_long_ago_counts_as_dead(db):
    from recovery.metrics import worker_counts

    make_worker(beat_seconds_ago=3)
    Worker.objects.create(host="h", pid=2, last_beat_at=timezone.now() - dt.timedelta(minutes=5))
    assert worker_counts() == (1, 1)
    assert RecoveryEvent.objects.count() == 0
    call_command("check")


@pytest.mark.postgres
def test_finished_runs_are_estimated_from_the_statistics_above_the_limit(make_run, monkeypatch):
    from django.db import connection

    from recovery import metrics

    for status in [RunStatus.COMPLETED] * 6 + [RunStatus.FAILED] * 4:
        make_run(status)
    make_run(RunStatus.PROCESSING)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE recovery_qualificationrun")  # counts this transaction's rows
    monkeypatch.setattr(metrics, "EXACT_COUNT_LIMIT", 5)
    assert metrics.finished_runs_by_status() == {"COMPLETED": 6, "FAILED": 4}
    monkeypatch.setattr(metrics, "EXACT_COUNT_LIMIT", 20_000)
    make_run(RunStatus.FAILED)
    assert metrics.finished_runs_by_status() == {"COMPLETED": 6, "FAILED": 5}


def test_health_checks_answer_over_plain_http_when_https_is_enforced(client, db, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.METRICS_TOKEN = TOKEN
    make_worker()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 301


@pytest.mark.usefixtures("metrics_on")
@override_settings(RECOVERY_MAX_ATTEMPTS=3)
def test_a_quarantined_prospect_is_counted_and_other_recoveries_are_not(client, make_run):
    assert scrape(client)["qualifier_quarantined_prospects_total"][()] == 0
    poison = make_run(deaths=2, completed=4, worker_beat_seconds_ago=None)
    other = make_run(deaths=0, completed=2, worker_beat_seconds_ago=None)
    for completed in (0, 4):
        RecoveryEvent.objects.create(
            run=poison,
            from_status=RunStatus.PROCESSING,
            to_status=RunStatus.PENDING,
            source=RecoverySource.SUPERVISOR,
            cause=RecoveryCause.CRASHED,
            reason="died",
            completed=completed,
            total=poison.total,
            host="h",
            pid=1,
        )
    report = recover_stuck_runs(source=RecoverySource.SWEEPER, policy="resume", log=False)
    assert {run.id: run.quarantined for run in report.recovered} == {poison.pk: 5, other.pk: None}
    assert scrape(client)["qualifier_quarantined_prospects_total"][()] == 1
