"""A real `manage.py db_worker` takes queued runs round robin across their owners: a second
user's small run is taken right after the run in hand, not after the first user's backlog."""

from __future__ import annotations

import pytest

from tests.processes import manage
from tests.test_worker_processes import sql, start_worker, wait_until

pytestmark = pytest.mark.slow(seconds=15)


def queue_runs(url: str, runs: list[tuple[str, int]], order: str) -> list[int]:
    """Creates the runs, one (owner, prospects) pair each, in that order, in one process, under
    the queue order `order` (a run's place is given when it is queued)."""
    result = manage(
        [
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model\n"
            "from qualifier.prospects import ProspectData\n"
            "from qualifier.runs import create_run\n"
            f"for owner, count in {runs!r}:\n"
            "    user = get_user_model().objects.get_or_create(username=owner)[0]\n"
            "    data = [ProspectData(name=f'P{i}', company='C', industry='Software',\n"
            "            employees=100, title='VP', position=i + 2) for i in range(count)]\n"
            "    print('RUN', create_run(user=user, prospects=data).pk)\n",
        ],
        url,
        RECOVERY_ON_STARTUP="false",
        RECOVERY_QUEUE_ORDER=order,
    )
    assert result.returncode == 0, result.stderr
    return [int(line.split()[1]) for line in result.stdout.splitlines() if line.startswith("RUN")]


@pytest.mark.parametrize(
    ("order", "expected"),
    [("fair", ["a1", "b1", "a2", "a3"]), ("fifo", ["a1", "a2", "a3", "b1"])],
)
def test_a_second_users_small_run_is_taken_before_the_first_users_backlog(
    process_database, tmp_path, order, expected
):
    url = process_database
    a1, a2, a3, b1 = queue_runs(
        url, [("alice", 10), ("alice", 10), ("alice", 10), ("bob", 3)], order
    )
    names = {a1: "a1", a2: "a2", a3: "a3", b1: "b1"}
    log = tmp_path / "worker.log"
    worker = start_worker(url, log, RECOVERY_QUEUE_ORDER=order)
    try:
        wait_until(
            lambda: (
                sql(
                    url,
                    "SELECT COUNT(*) FROM recovery_qualificationrun WHERE status = %s",
                    ("COMPLETED",),
                )
                == [(4,)]
            ),
            "all four runs to complete",
            worker,
        )
    finally:
        worker.stop()
    started = sql(url, "SELECT id FROM recovery_qualificationrun ORDER BY started_at, id")
    assert [names[run_id] for (run_id,) in started] == expected, log.read_text()
