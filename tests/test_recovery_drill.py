"""`manage.py recovery_drill`: it refuses what it cannot drill before making anything, and a
short drill (one trial per fault, real workers and signals) passes on this database, removes
all it made, and leaves every run, worker and task it did not make exactly as it was."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import override_settings

from tests.helpers import IMMEDIATE
from tests.processes import manage
from tests.test_worker_processes import shell

SHORT = ["--heartbeat", "1", "--worker-timeout", "3", "--sweep-interval", "1"]


def drill(*args: str) -> str:
    out = io.StringIO()
    call_command("recovery_drill", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_the_drill_refuses_a_task_backend_that_does_not_keep_its_queue_in_the_database():
    with override_settings(TASKS=IMMEDIATE), pytest.raises(CommandError, match="in the database"):
        drill("--trials", "1")
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_the_drill_refuses_a_task_backend_that_does_not_accept_its_queue():
    tasks = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}
    with override_settings(TASKS=tasks), pytest.raises(CommandError, match="recovery-drill"):
        drill("--trials", "1")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trials", "0"], "positive integer"),
        (["--trials", "x"], "positive integer"),
        (["--faults", "sigkill,meteor"], "not one of"),
        (["--heartbeat", "0"], "positive integer"),
        (["--sweep-interval", "-1"], "positive integer"),
        (["--heartbeat", "5", "--worker-timeout", "6"], "at least three heartbeats"),
    ],
)
def test_the_drill_refuses_bad_options_before_making_anything(args, message):
    with pytest.raises(CommandError, match=message):
        drill(*args)
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_the_drill_refuses_a_sqlite_database_in_memory():
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("the test database is in memory on SQLite only")
    with pytest.raises(CommandError, match="in memory"):
        drill("--trials", "1")


# --- a real drill ------------------------------------------------------------------------------

SEED = """
from django_tasks_db.models import DBTaskResult
from qualifier.prospects import ProspectData
from qualifier.runs import create_run
from recovery.models import QualificationRun, RunStatus, Worker
data = [ProspectData(name=f'N{i}', company='Theirs', industry='Software', employees=100,
        title='VP', position=i + 2) for i in range(3)]
queued = create_run(user=None, prospects=data)
done = create_run(user=None, prospects=data)
QualificationRun.objects.filter(pk=done.pk).update(status=RunStatus.COMPLETED, completed=3)
# A dead worker of this host (no such process) and its stuck run: the service's sweeps would
# recover them; the drill's must not touch them.
gone = Worker.objects.create(host=__import__('socket').gethostname(), pid=4_000_000)
stuck = create_run(user=None, prospects=data)
QualificationRun.objects.filter(pk=stuck.pk).update(status=RunStatus.PROCESSING, worker=gone)
"""

SNAPSHOT = """
import json
from django.contrib.auth import get_user_model
from django_tasks_db.models import DBTaskResult
from qualifier.models import Prospect, ProspectResult
from recovery.models import FencedWrite, QualificationRun, RecoveryEvent, Worker
tables = {
    model.__name__: list(model.objects.order_by('pk').values())
    for model in (QualificationRun, Worker, DBTaskResult, RecoveryEvent, FencedWrite, Prospect,
                  ProspectResult, get_user_model())
}
print('SNAPSHOT' + json.dumps(tables, default=str, sort_keys=True))
"""


def snapshot(url: str) -> dict:
    return json.loads(shell(url, SNAPSHOT).split("SNAPSHOT", 1)[1])


def run_short_drill(url: str) -> str:
    shell(url, SEED)
    before = snapshot(url)
    result = manage(["recovery_drill", "--trials", "1", *SHORT], url, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert snapshot(url) == before  # theirs unchanged, byte for byte; ours all gone
    return result.stdout


def summary_line(output: str, fault: str) -> list[str]:
    [line] = [line for line in output.splitlines() if line.startswith(f"{fault} ")]
    return line.split()


def check_drill_output(output: str) -> None:
    assert "Drill passed; everything it made was removed." in output
    for fault, cause in [
        ("sigterm", "shutdown"),
        ("sigkill", "process_gone"),
        ("host-loss", "worker_silent"),
        ("freeze", "worker_silent"),
        ("supervisor-freeze", "-"),
    ]:
        fields = summary_line(output, fault)
        assert fields[1:3] == ["1", cause], fields
        false_recoveries, duplicates = fields[-4], fields[-3]
        assert (false_recoveries, duplicates) == ("0", "0"), fields


@pytest.mark.slow(seconds=120)
def test_a_short_drill_passes_cleans_up_and_leaves_what_it_did_not_make_alone(process_database):
    check_drill_output(run_short_drill(process_database))


# --- a run keeps its queue ----------------------------------------------------------------------


def queued_run(queue_name: str | None):
    from qualifier.prospects import ProspectData
    from qualifier.runs import create_run

    data = [ProspectData(name="N", company="C", industry="Software", employees=100, position=2)]
    return create_run(user=None, prospects=data, queue_name=queue_name)


def queue_of(run) -> str:
    from django_tasks_db.models import DBTaskResult

    run.refresh_from_db()
    return DBTaskResult.objects.get(pk=run.task_id).queue_name


@pytest.mark.django_db
def test_a_drill_run_goes_back_to_the_drill_queue_however_it_is_sent_back():
    """Resumed by a sweep, handed back by its worker, continued by its owner: each new task is
    on the queue of the task before it, so the service's workers never take a drill's run."""
    from qualifier.conf import DRILL_QUEUE
    from recovery.models import RecoverySource, RunStatus, Worker
    from recovery.sweep import continue_failed_runs, hand_back, recover_stuck_runs

    ours, theirs = queued_run(DRILL_QUEUE), queued_run(None)
    assert (queue_of(ours), queue_of(theirs)) == (DRILL_QUEUE, "default")
    worker = Worker.objects.create(host="h", pid=1)
    for run in (ours, theirs):
        assert run.start(worker)
    recover_stuck_runs(
        source=RecoverySource.COMMAND, run_ids=[ours.pk, theirs.pk], force=True, policy="resume"
    )
    assert (queue_of(ours), queue_of(theirs)) == (DRILL_QUEUE, "default")

    for run in (ours, theirs):
        run.refresh_from_db()
        assert run.status == RunStatus.PENDING and run.start(worker)
    hand_back(worker, source=RecoverySource.SHUTDOWN, cause="shutdown")
    assert (queue_of(ours), queue_of(theirs)) == (DRILL_QUEUE, "default")

    for run in (ours, theirs):
        run.refresh_from_db()
        assert run.start(worker) and run.fail("test")
    continue_failed_runs([ours.pk, theirs.pk], source=RecoverySource.CONTINUE)
    assert (queue_of(ours), queue_of(theirs)) == (DRILL_QUEUE, "default")
