"""What happens next, seen through the API of a real server while a real worker is SIGKILLed
mid-run: the run's outlook goes from working (its worker beats) to "will be recovered within
N s" (the liveness rule finds it silent) to interrupted, resumed where it stopped, once a sweep
has recovered it.

The server and the worker register under different host names, as on two machines: the server
cannot see the worker's process table, so it learns of the death by silence, the case whose
timing the outlook states. Every wait is on the API's answer, polled against a deadline.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import PYTHON, Process, base_env, free_port, manage, wait_for_http
from tests.test_core_defects_processes import new_run
from tests.test_worker_processes import kill_worker

pytestmark = pytest.mark.slow

INTERVAL = 600  # long: only the operator's sweep below recovers the run, when the test says
ENV = {
    "QUALIFIER_SCORING_DELAY_MS": "100",
    "RECOVERY_POLICY": "resume",
    "RECOVERY_ON_STARTUP": "false",
    "RECOVERY_HEARTBEAT_SECONDS": "1",
    "RECOVERY_WORKER_TIMEOUT_SECONDS": "3",
    "RECOVERY_SWEEP_INTERVAL_SECONDS": str(INTERVAL),
}
PATIENCE = 120  # seconds: a bound against hangs on a loaded machine, never a timing claim


@pytest.fixture
def server(process_database: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, alice's API token) of a server on host web.test."""
    made = manage(
        [
            "shell",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_user('alice')",
        ],
        process_database,
    )
    assert made.returncode == 0, made.stderr
    token = manage(["create_api_token", "alice", "--name", "outlook"], process_database)
    assert token.returncode == 0, token.stderr
    port = free_port()
    web = Process(
        [PYTHON, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        base_env(process_database, RECOVERY_HOSTNAME="web.test", **ENV),
        tmp_path / "web.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_for_http(f"{base}/accounts/login/", PATIENCE, web) == 200
        yield base, token.stdout.strip()
    except BaseException:
        print(f"--- web log ---\n{web.output[-4000:]}")
        raise
    finally:
        web.stop()


def outlook_until(
    read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """The run's answers, one every 100 ms, until `done(answer)`; fails at the deadline."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        seen.append(read())
        if done(seen[-1]):
            return seen
        time.sleep(0.1)
    pytest.fail(f"not reached in {PATIENCE} s; last answer: {seen[-1] if seen else None}")


def test_a_killed_workers_run_goes_from_working_to_will_be_recovered_to_resumed(
    server: tuple[str, str], process_database: str, tmp_path: Path
) -> None:
    base, token = server
    run_id = new_run(process_database, 400, owner="alice")

    def read() -> dict[str, Any]:
        request = urllib.request.Request(
            f"{base}/api/qualify/runs/{run_id}", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=PATIENCE) as answer:
            return json.load(answer)

    worker = Process(
        [PYTHON, "manage.py", "db_worker", "--no-reload", "--no-startup-delay"],
        base_env(process_database, RECOVERY_HOSTNAME="worker.test", **ENV),
        tmp_path / "worker.log",
    )
    try:
        working = outlook_until(
            read, lambda run: run["outlook"]["state"] == "working" and run["completed"] > 0
        )[-1]["outlook"]
        assert working["worker"] == f"worker.test:{worker.popen.pid}"
        assert working["recovery"] == "resume"
        assert 0 < working["recover_within_seconds"] <= 3 + INTERVAL
        assert (
            "if no further sign of life comes, this run will be recovered within"
            in (working["text"])
        )

        kill_worker(worker)  # the supervisor and its executor at once: nobody hands back
        seen = outlook_until(read, lambda run: run["outlook"]["state"] == "recovering")
    finally:
        worker.stop()

    dead = seen[-1]
    stopped = dead["completed"]
    assert dead["status"] == "PROCESSING"
    assert dead["outlook"]["recover_within_seconds"] == INTERVAL
    assert dead["outlook"]["resume_at"] == stopped + 1
    assert (
        f"Its worker stopped responding: the sweep runs every {INTERVAL} s and will recover it "
        f"within 10 min unless a sign of life comes first, and will then resume at prospect "
        f"{stopped + 1} of 400 ({stopped} done)."
    ) in dead["outlook"]["text"]
    # Between the kill and the rule finding it dead, the countdown only went down.
    countdown = [run["outlook"]["recover_within_seconds"] for run in seen[:-1]]
    assert countdown == sorted(countdown, reverse=True)
    assert all(run["completed"] == stopped for run in seen)

    swept = manage(["recover_stuck_runs"], process_database, RECOVERY_HOSTNAME="web.test", **ENV)
    assert swept.returncode == 0, swept.stderr
    resumed = read()
    assert (resumed["status"], resumed["outlook"]["state"]) == ("PENDING", "interrupted")
    assert resumed["outlook"]["resume_at"] == stopped + 1
    assert resumed["outlook"]["workers_alive"] is False
    assert resumed["outlook"]["text"].startswith(
        f"Interrupted at {stopped} of 400: it will continue at prospect {stopped + 1}, the first "
        f"without a result, and keep its {stopped} results. It is next in line. No worker is "
        "running: the run starts when one does."
    )
