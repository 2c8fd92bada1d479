"""/readyz in a real server whose database is down: 503 within a second, whether the database's
port is closed or a host accepts the connection and never answers."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from recovery import health
from tests import processes

pytestmark = pytest.mark.slow


@contextmanager
def server(tmp_path, database_url: str) -> Iterator[str]:
    """gunicorn (one worker, no startup recovery or sweeps) on a free port; yields its URL."""
    port = processes.free_port()
    env = processes.base_env(
        database_url, RECOVERY_ON_STARTUP="false", RECOVERY_SWEEP_INTERVAL_SECONDS="0"
    )
    process = processes.Process(
        [processes.bin_path("gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "qualifier.wsgi"],
        env,
        tmp_path / "gunicorn.log",
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert processes.wait_for_http(f"{url}/healthz", process=process) == 200
        yield url
    finally:
        process.stop()


def timed_get(url: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body), time.monotonic() - started


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word (a frozen host)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield sock.getsockname()[1]


def closed_port() -> int:
    return processes.free_port()  # bound and released: nothing listens there


@pytest.mark.parametrize("database", ["closed port", "silent host"])
def test_readyz_answers_503_within_a_second_when_the_database_is_down(tmp_path, database):
    with silent_listener() as silent:
        port = silent if database == "silent host" else closed_port()
        expected = (
            f"no answer within {health.DATABASE_PROBE_SECONDS:g} s"
            if database == "silent host"
            else "unreachable: OperationalError"
        )
        with server(tmp_path, f"postgres://postgres@127.0.0.1:{port}/qualifier") as url:
            for _ in range(3):
                status, body, seconds = timed_get(f"{url}/readyz")
                assert status == 503, body
                assert body["status"] == "unavailable"
                assert body["reasons"] == [f"database: {expected}"]
                # The issue's own bound: the probe gives up at half of it, so only a machine
                # stalled for half a second could miss it.
                assert seconds < 1.0, f"{database}: answered in {seconds:.2f} s"
            status, body, _ = timed_get(f"{url}/healthz")
            assert (status, body) == (200, {"status": "ok"})


def test_readyz_answers_200_in_a_real_server_with_a_live_worker(tmp_path, process_database):
    created = processes.manage(
        [
            "shell",
            "-c",
            "from recovery.models import Worker; Worker.objects.create(host='h', pid=1)",
        ],
        process_database,
    )
    assert created.returncode == 0, created.stderr
    with server(tmp_path, process_database) as url:
        status, body, _ = timed_get(f"{url}/readyz")
    assert status == 200, body
    assert body["checks"]["workers"] == "ok: 1 live"
