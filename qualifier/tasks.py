"""Background tasks (django.tasks; the database is the queue, `manage.py db_worker` runs them)."""

from __future__ import annotations

from typing import Any

from django.tasks import task

from . import execution


@task
def execute_run(run_id: int) -> dict[str, Any]:
    """Scores a run's prospects; enqueued by `qualifier.runs.create_run` and by recovery when a
    run goes back to the queue (`RECOVERY_RUN_TASK`)."""
    return execution.execute(run_id).as_dict()
