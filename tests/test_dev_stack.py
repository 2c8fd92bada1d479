"""The development stack behaves like production: under honcho with the project's own Procfile
(what scripts/start runs), a worker killed with SIGKILL is started again and the web server keeps
serving meanwhile; Ctrl-C (SIGINT to honcho) still stops every process. Real processes, real
signals; every wait polls against a deadline."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.processes import BIN_DIR, PROJECT_DIR, Process, base_env, free_port, wait_for_http

pytestmark = pytest.mark.slow


def processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every process on the machine."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue  # gone meanwhile
        parent = next(int(line.split()[1]) for line in status.splitlines() if line[:5] == "PPid:")
        found[int(entry.name)] = (parent, command)
    return found


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every process below `pid`."""
    table = processes()
    found: dict[int, str] = {}
    parents = {pid}
    while parents:
        children = {child for child, (parent, _) in table.items() if parent in parents}
        found.update({child: table[child][1] for child in children})
        parents = children
    return found


def worker_supervisors(honcho: Process) -> list[int]:
    """The top Python process of each worker (its autoreloader under DEBUG, else its
    supervisor): a db_worker whose parent is not one (but a shell, or honcho)."""
    table = processes()

    def is_worker(pid: int) -> bool:
        command = table.get(pid, (0, ""))[1]
        return "python" in command.split(" ", 1)[0] and "manage.py db_worker" in command

    return sorted(
        pid
        for pid in descendants(honcho.popen.pid)
        if is_worker(pid) and not is_worker(table[pid][0])
    )


def wait_until(check: Callable[[], object], what: str, honcho: Process, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"gave up waiting for {what}:\n{honcho.output[-4000:]}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_a_killed_worker_comes_back_and_ctrl_c_still_stops_everything(process_database, tmp_path):
    port = free_port()
    env = base_env(
        process_database,
        DEBUG="true",
        PORT=str(port),
        PATH=f"{BIN_DIR}:{os.environ['PATH']}",
        RECOVERY_ON_STARTUP="false",
    )
    honcho = Process(
        [str(BIN_DIR / "honcho"), "-f", str(PROJECT_DIR / "Procfile"), "start"],
        env,
        tmp_path / "honcho.log",
    )
    try:
        login = f"http://127.0.0.1:{port}/accounts/login/"
        assert wait_for_http(login, timeout=60, process=honcho) == 200
        [first] = wait_until(lambda: worker_supervisors(honcho), "the worker", honcho)
        honcho.wait_for_output("[Worker] Registered", timeout=60)
        every_process = set(descendants(honcho.popen.pid))

        os.kill(first, signal.SIGKILL)
        wait_until(
            lambda: [pid for pid in worker_supervisors(honcho) if pid != first],
            "the worker to be started again",
            honcho,
        )
        wait_until(
            lambda: honcho.output.count("[Worker] Registered") >= 2, "it to register", honcho
        )
        assert "exited with status 137; starting it again" in honcho.output, honcho.output
        assert not alive(first), honcho.output
        # The worker started again is the one serving now (under load it may have been
        # restarted once more meanwhile: each restart is in honcho's output, and the check is
        # that one is alive, never that it is the same process).
        serving = wait_until(
            lambda: [pid for pid in worker_supervisors(honcho) if pid != first and alive(pid)],
            "a worker to be serving",
            honcho,
        )
        assert serving, honcho.output
        assert honcho.popen.poll() is None, "honcho stopped the stack"
        assert wait_for_http(login, timeout=10) == 200
        every_process |= set(descendants(honcho.popen.pid))

        # Ctrl-C in the terminal is SIGINT to honcho, the foreground process.
        os.kill(honcho.popen.pid, signal.SIGINT)
        honcho.popen.wait(30)
        wait_until(
            lambda: not [pid for pid in every_process if alive(pid)],
            "every process of the stack to end",
            honcho,
            timeout=30,
        )
        assert "keep-running" not in honcho.output.split("SIGINT received")[-1], honcho.output
    finally:
        honcho.stop()
