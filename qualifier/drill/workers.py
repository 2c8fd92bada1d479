"""The drill's own workers: `manage.py db_worker` processes on the drill's queue, found by their
registration, and the faults done to them with real signals.

A worker is two processes: the supervisor (it registers and beats) and its executor child (it
runs the queue and scores). A machine that dies takes both at once, so the drill stops both
before it kills them: neither gets the chance to notice the other and hand the run back.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from qualifier.conf import DRILL_QUEUE
from recovery.models import Worker
from recovery.worker.executor import SUPERVISOR_PID_ENV

#: Where manage.py is: the drill's workers run from the project's folder.
PROJECT_DIR = Path(__file__).resolve().parents[2]


class DrillWorkerError(RuntimeError):
    """A drill worker did not start or register in time (its log says why)."""


class DrillWorker:
    """One `db_worker` started by the drill, in a session of its own, its output in a file."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        # manage.py (and django-admin --settings) name the settings in the environment.
        environment = {**os.environ, **env}
        environment.pop("DJANGO_AUTORELOAD_ENV", None)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
                [
                    sys.executable,
                    "-m",
                    "django",
                    "db_worker",
                    "--no-reload",
                    "--queue-name",
                    DRILL_QUEUE,
                    "--interval",
                    "0.5",
                ],
                cwd=str(PROJECT_DIR),
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        #: Every executor seen under it: one may outlive its supervisor for a moment.
        self.executors: set[int] = set()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def registration(self, *, after: int = 0, timeout: float = 120.0) -> Worker:
        """The worker's row (newer than the row `after`) once its executor runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = (
                Worker.objects.filter(pid=self.pid, pk__gt=after, executor_pid__isnull=False)
                .order_by("-pk")
                .first()
            )
            if row is not None:
                return row
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise DrillWorkerError(
            f"drill worker {self.name} did not register within {timeout:.0f} s "
            f"(exit status {self.popen.poll()}); see {self.log_path}"
        )

    def processes(self) -> list[int]:
        """The supervisor and its children (the executor), from the process table."""
        children = children_of(self.pid)
        self.executors.update(children)
        return [self.pid, *children]

    def send(self, signum: int, pids: list[int] | None = None) -> None:
        for pid in self.processes() if pids is None else pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill(self) -> None:
        """As when its machine dies: both processes at once, no hand-back possible."""
        pids = self.processes()
        self.send(signal.SIGSTOP, pids)
        self.send(signal.SIGKILL, pids)
        self.popen.wait()

    def freeze(self, *, supervisor_only: bool = False) -> list[int]:
        """SIGSTOP (the supervisor alone, or every process); returns the pids frozen."""
        pids = [self.pid] if supervisor_only else self.processes()
        self.send(signal.SIGSTOP, pids)
        return pids

    def thaw(self, pids: list[int]) -> None:
        self.send(signal.SIGCONT, pids)

    def terminate(self) -> None:
        """SIGTERM to the supervisor, as a process manager stops it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30.0) -> None:
        """Ends it whatever its state: thawed, asked to stop, then killed if it lingers."""
        if self.popen.poll() is None:
            self.send(signal.SIGCONT)
            self.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # An executor outlives its supervisor by the time it takes to hand its run back.
        deadline = time.monotonic() + timeout
        while self.orphans() and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in self.orphans():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def orphans(self) -> list[int]:
        """Its executors that still run after it ended."""
        return [pid for pid in self.executors if _runs_as_executor(pid, self.pid)]


def children_of(parent: int) -> list[int]:
    """The pids whose parent is `parent` (Linux's process table)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def _runs_as_executor(pid: int, supervisor: int) -> bool:
    """Whether `pid` is still an executor started by `supervisor` (not a reused pid)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"{SUPERVISOR_PID_ENV}={supervisor}".encode() in environ
