"""Requests per second of the notifier endpoint against a minimal view, on gunicorn -w 2.

    .venv/bin/python bench/api_throughput.py [--database-url URL] [--runs 1000] [--active 3]
        [--seconds 10] [--rounds 3] [--conn-max-age 0 600]

A signed-in user with `--runs` runs (`--active` of them pending or processing, under a worker
that beats; the rest finished over two months) is served by `gunicorn -c
python:qualifier.gunicorn_conf -w 2` with the bench-only settings `bench.throughput_settings`
(the project's, plus a minimal view at /bench/minimal). wrk, in a process of its own, loads
`GET /api/qualify/runs/active` and the minimal view in turns, `--rounds` times each, and the
medians and their ratio are printed for each CONN_MAX_AGE. The database's name must contain
"bench"; the bench user's runs are replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

# Run as a script, sys.path[0] is bench/; the project must come first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import create_database, describe_machine, qualifying_prospects, setup_django

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/qualifier_api_bench"
USERNAME = "notifier-bench"
ACTIVE_PATH = "/api/qualify/runs/active"
MINIMAL_PATH = "/bench/minimal"
PROSPECTS_PER_ACTIVE_RUN = 200
#: Every open page polls the notifier this often.
POLL_SECONDS = 2


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--active", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="each wrk run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per endpoint (default 3)")
    parser.add_argument("--connections", type=int, default=4, help="wrk -c (default 4)")
    parser.add_argument(
        "--conn-max-age", type=int, nargs="+", default=[0, 600], help="default: 0 600"
    )
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        parser.error("the benchmark needs PostgreSQL (--database-url postgres://...)")
    if "bench" not in urlsplit(args.database_url).path:
        parser.error("use a database whose name contains 'bench': its runs are replaced")
    if not 1 <= args.active < args.runs:
        parser.error("--active must be at least 1 and less than --runs")
    if shutil.which("wrk") is None:
        parser.error("wrk is needed (Debian: apt-get install -y wrk)")
    return args


def arrange(runs: int, active: int) -> tuple[str, int]:
    """The bench user's runs and a signed-in session; returns (session key, worker id)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore
    from django.utils import timezone

    from qualifier.models import Outcome, Prospect, ProspectResult
    from qualifier.runs import create_run
    from recovery.models import QualificationRun, RecoveryEvent, RunStatus, Worker

    user, _ = User.objects.get_or_create(username=USERNAME)
    old = QualificationRun.objects.filter(user=user)
    RecoveryEvent.objects.filter(run__in=old).delete()
    old.delete()
    Worker.objects.filter(host="notifier-bench-worker").delete()
    now = timezone.now()
    history = []
    for i in range(runs - active):
        created = now - dt.timedelta(minutes=90 * (runs - i))  # about two months
        failed = i % 10 == 0
        history.append(
            QualificationRun(
                user=user,
                status=RunStatus.FAILED if failed else RunStatus.COMPLETED,
                total=100,
                completed=60 if failed else 100,
                created_at=created,
                queued_at=created,
                started_at=created + dt.timedelta(seconds=5),
                heartbeat_at=created + dt.timedelta(seconds=60),
                completed_at=created + dt.timedelta(seconds=60),
                failure_reason="The worker on host web-2 stopped responding 40 s ago." * failed,
                attempts=1,
            )
        )
    QualificationRun.objects.bulk_create(history, batch_size=1_000)
    # On another host, so no sweep here checks its pid; it beats (keep_alive) while measured.
    worker = Worker.objects.create(host="notifier-bench-worker", pid=1)
    data = qualifying_prospects(PROSPECTS_PER_ACTIVE_RUN)
    # Through the project's task backend: the queued run's task waits in the database's queue
    # (no worker takes it), which the sweeps see as a live task.
    active_runs = [create_run(user=user, prospects=data) for _ in range(active)]
    for run in active_runs[1:]:  # the first stays queued; the others are half done
        assert run.start(worker)
        done = PROSPECTS_PER_ACTIVE_RUN // 2
        prospects = Prospect.objects.filter(run=run).order_by("position")[:done]
        ProspectResult.objects.bulk_create(
            ProspectResult(run=run, prospect=p, outcome=Outcome.QUALIFIED, score=90, reasons=["x"])
            for p in prospects
        )
        assert run.beat(completed=done)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key, worker.pk


def keep_alive(worker_id: int, stop: threading.Event) -> None:
    """Beats for the bench worker and its runs, so the servers' sweeps leave them alive."""
    from django.db import connection
    from django.db.models.functions import Now

    from recovery.models import QualificationRun, RunStatus, Worker

    while not stop.wait(5):
        Worker.objects.filter(pk=worker_id).update(last_beat_at=Now())
        QualificationRun.objects.filter(worker_id=worker_id, status=RunStatus.PROCESSING).update(
            heartbeat_at=Now()
        )
    connection.close()


def queries_per_request(session_key: str) -> dict[str, int]:
    """The queries each endpoint makes, counted in this process through the same stack."""
    from django.conf import settings
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext

    client = Client()
    client.cookies[settings.SESSION_COOKIE_NAME] = session_key
    counts = {}
    with override_settings(ROOT_URLCONF="bench.throughput_urls", ALLOWED_HOSTS=["testserver"]):
        for path in (ACTIVE_PATH, MINIMAL_PATH):
            client.get(path)
            with CaptureQueriesContext(connection) as queries:
                response = client.get(path)
            if response.status_code != 200:
                raise SystemExit(f"{path} answered {response.status_code} in-process")
            counts[path] = len(queries)
    return counts


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(database_url: str, conn_max_age: int, port: int) -> subprocess.Popen:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "RECOVERY_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="bench.throughput_settings",
        DATABASE_URL=database_url,
        SECRET_KEY="bench-only-secret-key",
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        CONN_MAX_AGE=str(conn_max_age),
        QUALIFIER_IGNORE_DOTENV="1",
    )
    gunicorn = Path(sys.executable).parent / "gunicorn"
    command = [str(gunicorn), "-c", "python:qualifier.gunicorn_conf", "-w", "2"]
    command += ["-b", f"127.0.0.1:{port}", "qualifier.wsgi"]
    server = subprocess.Popen(
        command, cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    server.terminate()
    raise SystemExit("gunicorn did not start")


def check_answer(port: int, session_key: str, active: int) -> None:
    """The endpoint answers the signed-in user's active runs (not a redirect or an error)."""
    import json

    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{ACTIVE_PATH}", headers={"Cookie": f"sessionid={session_key}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.load(response)
    if body["count"] != active:
        raise SystemExit(f"the notifier listed {body['count']} runs, not {active}")


def wrk(port: int, path: str, session_key: str, seconds: int, connections: int) -> float:
    """Requests per second wrk sustained; every answer must be a 2xx."""
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s"]
    command += ["-H", f"Cookie: sessionid={session_key}", f"http://127.0.0.1:{port}{path}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in output or "Socket errors" in output:
        raise SystemExit(f"wrk saw errors on {path}:\n{output}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))


def measure(args: argparse.Namespace, session_key: str, conn_max_age: int) -> dict[str, list]:
    port = free_port()
    server = start_server(args.database_url, conn_max_age, port)
    try:
        check_answer(port, session_key, args.active)
        for path in (ACTIVE_PATH, MINIMAL_PATH):  # warm-up: imports, connections, caches
            wrk(port, path, session_key, 2, args.connections)
        rates: dict[str, list] = {ACTIVE_PATH: [], MINIMAL_PATH: []}
        for round_ in range(args.rounds):
            order = (ACTIVE_PATH, MINIMAL_PATH) if round_ % 2 else (MINIMAL_PATH, ACTIVE_PATH)
            for path in order:
                rates[path].append(wrk(port, path, session_key, args.seconds, args.connections))
        return rates
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    args = parse_args()
    create_database(args.database_url)
    setup_django(args.database_url)
    out = sys.stdout
    out.write(f"Machine: {describe_machine()}\n")
    session_key, worker_id = arrange(args.runs, args.active)
    queries = queries_per_request(session_key)
    out.write(
        f"{args.runs:,} runs for one signed-in user, {args.active} active; queries per request: "
        f"notifier {queries[ACTIVE_PATH]}, minimal view {queries[MINIMAL_PATH]}\n"
        f"gunicorn -w 2 (sync workers, periodic sweeps on); wrk -t 2 -c {args.connections}, "
        f"{args.rounds} x {args.seconds} s per endpoint, in turns\n"
    )
    out.flush()
    stop = threading.Event()
    beating = threading.Thread(target=keep_alive, args=(worker_id, stop), daemon=True)
    beating.start()
    rows = []
    try:
        for conn_max_age in args.conn_max_age:
            rates = measure(args, session_key, conn_max_age)
            active = statistics.median(rates[ACTIVE_PATH])
            minimal = statistics.median(rates[MINIMAL_PATH])
            paired = statistics.median(
                a / m for a, m in zip(rates[ACTIVE_PATH], rates[MINIMAL_PATH], strict=True)
            )
            rows.append((conn_max_age, active, minimal, paired))
            out.write(
                f"CONN_MAX_AGE={conn_max_age}: notifier {active:.0f} req/s "
                f"({' '.join(f'{r:.0f}' for r in rates[ACTIVE_PATH])}), minimal view "
                f"{minimal:.0f} req/s ({' '.join(f'{r:.0f}' for r in rates[MINIMAL_PATH])}), "
                f"ratio {active / minimal:.2f} (median of paired ratios {paired:.2f})\n"
            )
            out.flush()
    finally:
        stop.set()
        beating.join(10)
    out.write(
        "\n| CONN_MAX_AGE | notifier (req/s) | minimal view (req/s) | ratio | "
        f"open pages polling every {POLL_SECONDS} s |\n|---:|---:|---:|---:|---:|\n"
    )
    for conn_max_age, active, minimal, paired in rows:
        out.write(
            f"| {conn_max_age} | {active:.0f} | {minimal:.0f} | {active / minimal:.2f} "
            f"(paired {paired:.2f}) | {active * POLL_SECONDS:,.0f} |\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
