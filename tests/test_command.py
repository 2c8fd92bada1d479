"""`manage.py recover_stuck_runs`: options, output, exit status."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from recovery.models import QualificationRun, RecoveryEvent, RunStatus


def run_command(*args: str) -> str:
    out = io.StringIO()
    call_command("recover_stuck_runs", *args, stdout=out, no_color=True)
    return out.getvalue()


@pytest.fixture
def runs(make_run):
    return {
        "stuck": make_run(total=10, completed=5, created_minutes_ago=12, heartbeat_minutes_ago=12),
        "pending": make_run(RunStatus.PENDING, total=5, created_minutes_ago=8),
        "healthy": make_run(total=10, completed=3, created_minutes_ago=60, heartbeat_minutes_ago=0),
        "done": make_run(RunStatus.COMPLETED, total=2, completed=2, created_minutes_ago=90),
    }


def test_recovers_stuck_runs_and_prints_the_original_log_lines(runs):
    output = run_command()

    assert "[Recovery] Found 3 active run(s) in database:" in output
    assert f"  - {runs['stuck'].pk}: PROCESSING, 5/10, age: 12min" in output
    assert (
        "[Recovery] Found 2 stuck runs (worker gone, exited or silent for 8+ s, no progress "
        "for 5+ minutes, or queued without a live task)" in output
    )
    assert "[Recovery] Marked 2 runs as FAILED" in output
    assert (
        f"  - Run {runs['stuck'].pk}: 5/10 completed (status: PROCESSING → FAILED; no progress)"
        in output
    )
    assert set(QualificationRun.objects.filter(status="FAILED").values_list("pk", flat=True)) == {
        runs["stuck"].pk,
        runs["pending"].pk,
    }
    assert set(RecoveryEvent.objects.values_list("source", flat=True)) == {"command"}


def test_no_stuck_runs(db):
    assert "[Recovery] No stuck runs found" in run_command()


def test_timeout_option_overrides_the_setting(runs):
    """The timeout is the no-progress backstop; a queued run without a task is dead anyway."""
    output = run_command("--timeout", "15")

    assert (
        "Found 1 stuck runs (worker gone, exited or silent for 8+ s, no progress for 15+ "
        "minutes, or queued without a live task)" in output
    )
    assert QualificationRun.objects.get(pk=runs["stuck"].pk).status == RunStatus.PROCESSING
    assert QualificationRun.objects.get(pk=runs["pending"].pk).status == RunStatus.FAILED


def test_dry_run_says_would_and_changes_nothing(runs):
    output = run_command("--dry-run")

    assert "[Recovery] Would mark 2 runs as FAILED (dry run: nothing changed)" in output
    assert QualificationRun.objects.filter(status="FAILED").count() == 0
    assert RecoveryEvent.objects.count() == 0


def test_json_output_is_one_document_with_the_documented_keys(runs):
    document = json.loads(run_command("--json"))

    assert document["timeout_minutes"] == 5
    assert document["dry_run"] is False
    assert {"active", "stuck", "recovered"} <= document.keys()
    assert len(document["active"]) == 3
    assert len(document["recovered"]) == 2
    for run in document["active"] + document["recovered"]:
        assert {"id", "status", "completed", "total", "age_minutes", "heartbeat_at"} <= run.keys()
    stuck = next(r for r in document["recovered"] if r["id"] == runs["stuck"].pk)
    assert stuck["status"] == "PROCESSING"
    assert (stuck["completed"], stuck["total"], stuck["age_minutes"]) == (5, 10, 12)


def test_json_dry_run_lists_stuck_runs(runs):
    document = json.loads(run_command("--json", "--dry-run"))

    assert document["dry_run"] is True
    assert {r["id"] for r in document["stuck"]} == {runs["stuck"].pk, runs["pending"].pk}
    assert document["recovered"] == []


def test_run_option_limits_the_sweep_and_repeats(runs):
    run_command("--run", str(runs["stuck"].pk), "--run", str(runs["healthy"].pk))

    assert QualificationRun.objects.get(pk=runs["stuck"].pk).status == RunStatus.FAILED
    assert QualificationRun.objects.get(pk=runs["pending"].pk).status == RunStatus.PENDING
    assert QualificationRun.objects.get(pk=runs["healthy"].pk).status == RunStatus.PROCESSING


def test_force_with_run_fails_a_live_run(runs):
    output = run_command("--run", str(runs["healthy"].pk), "--force")

    assert "Marked 1 runs as FAILED" in output
    healthy = QualificationRun.objects.get(pk=runs["healthy"].pk)
    assert healthy.status == RunStatus.FAILED
    assert healthy.failure_reason.startswith("Stopped by an operator")


def test_verbosity_zero_prints_nothing(runs):
    assert run_command("-v", "0") == ""
    assert QualificationRun.objects.filter(status="FAILED").count() == 2


def test_listing_is_bounded_unless_verbose(make_run):
    for _ in range(30):
        make_run(created_minutes_ago=1)

    assert "  ... and 10 more" in run_command()
    assert "... and" not in run_command("-v", "2")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "987654"], "No qualification run with id 987654"),
        (["--force"], "--force needs --run"),
    ],
)
def test_bad_arguments_raise_command_error_and_change_nothing(runs, args, message):
    with pytest.raises(CommandError, match=message):
        run_command(*args)

    assert QualificationRun.objects.filter(status="FAILED").count() == 0
    assert RecoveryEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0"], "must be greater than 0"),
        (["--timeout", "-3"], "must be greater than 0"),
        (["--timeout", "abc"], "'abc' is not a whole number of minutes"),
        (["--run", "x"], "'x' is not a run id"),
        (["--run", "987654"], "No qualification run with id 987654"),
        (["--force"], "--force needs --run"),
    ],
)
def test_bad_arguments_exit_non_zero_with_a_message_on_stderr(
    runs, args, message, capsys, monkeypatch
):
    """Through the command line, as an operator runs it."""
    from django.core.management import ManagementUtility
    from django.db import connections

    # run_from_argv closes every connection when it ends, the test's own included.
    monkeypatch.setattr(connections, "close_all", lambda: None)

    with pytest.raises(SystemExit) as exit_info:
        ManagementUtility(["manage.py", "recover_stuck_runs", *args]).execute()

    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert QualificationRun.objects.filter(status="FAILED").count() == 0


def test_lines_are_styled_by_their_kind_not_their_wording(runs):
    """Found-stuck and would-mark lines warn, the marked line succeeds, the rest is plain."""
    from django.core.management.color import color_style

    style = color_style(force_color=True)
    out = io.StringIO()
    call_command("recover_stuck_runs", stdout=out, force_color=True)
    lines = out.getvalue().splitlines()

    assert style.SUCCESS("[Recovery] Marked 2 runs as FAILED") in lines
    found = (
        "[Recovery] Found 2 stuck runs (worker gone, exited or silent for 8+ s, no progress "
        "for 5+ minutes, or queued without a live task)"
    )
    assert style.WARNING(found) in lines
    assert "[Recovery] Found 3 active run(s) in database:" in lines


def test_json_says_why_each_named_run_was_skipped(runs):
    named = [runs["stuck"], runs["healthy"], runs["done"]]
    report = json.loads(run_command("--json", *(f"--run={run.pk}" for run in named)))

    assert [run["id"] for run in report["recovered"]] == [runs["stuck"].pk]
    assert report["skipped_runs"] == [
        {"id": runs["healthy"].pk, "reason": "alive"},
        {"id": runs["done"].pk, "reason": "finished"},
    ]
