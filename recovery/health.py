"""/healthz, /readyz and /metrics: what a load balancer, an orchestrator and Prometheus poll.

/healthz says the process answers (no database); /readyz says this instance can do its work
(database reachable, migrations applied, a worker alive, sweeps succeeding and keeping up);
/metrics serves the figures of `recovery.metrics` to a configured token or network, and is off
(404) otherwise.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any

from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from common.throttle import client_ip

from . import liveness
from .conf import conf
from .metrics import (
    RecoveryCollector,
    last_sweep_seconds,
    rows_dead_runs,
    sweep_rows,
    worker_figures,
)
from .models import SweepOutcome

logger = logging.getLogger("recovery")

#: How long /readyz waits for the database: the whole answer must come within a second.
DATABASE_PROBE_SECONDS = 0.5
#: Sweeps are not working when a dead run is left for this many sweep intervals past its
#: timeout, or when no sweep has succeeded for this many intervals.
SWEEP_INTERVALS_OF_GRACE = 3

#: How long a process answers /readyz from its last check: however often it is polled, the
#: checks (a new database connection and three queries on PostgreSQL) run about once a second.
READYZ_CACHE_SECONDS = 1.0

_migrations_applied = False
#: This process's last /readyz answer: (time.monotonic() when checked, status, body).
_last_readiness: tuple[float, int, dict[str, Any]] | None = None
_readiness_lock = threading.Lock()


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process answers requests; nothing else is asked (a restart would not fix the rest)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, else 503 naming each failed check; the same answer for
    READYZ_CACHE_SECONDS (one request checks while the others of the process wait for it)."""
    status, body = cached_readiness()
    response = JsonResponse(body, status=status)
    # An unready instance is an answer, not a server error: django.request would log every
    # poll's 503 as an ERROR (django.utils.log.log_response honours this flag).
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def cached_readiness() -> tuple[int, dict[str, Any]]:
    global _last_readiness
    with _readiness_lock:
        last = _last_readiness
        if last is None or time.monotonic() - last[0] >= READYZ_CACHE_SECONDS:
            status, body = readiness()
            # Stamped when the checks ended: a slow check is not answered stale at once.
            last = _last_readiness = (time.monotonic(), status, body)
    return last[1], last[2]


def readiness() -> tuple[int, dict[str, Any]]:
    """The status and body of /readyz, checked now."""
    checks: dict[str, str] = {}
    problem = probe_database()
    checks["database"] = problem or "ok"
    if not problem:
        try:
            checks.update(readiness_checks())
        except DatabaseError as exc:
            checks["database"] = f"query failed: {type(exc).__name__}"
    failed = {name: text for name, text in checks.items() if not text.startswith("ok")}
    body: dict[str, Any] = {"status": "unavailable" if failed else "ok", "checks": checks}
    if failed:
        body["reasons"] = [f"{name}: {text}" for name, text in failed.items()]
    return (503 if failed else 200), body


def probe_database() -> str:
    """ "" when the database answers `SELECT 1` within DATABASE_PROBE_SECONDS, else why not.

    On PostgreSQL the probe opens its own connection in a thread: psycopg waits at least 2 s
    to connect to a host that does not answer, and the view must not wait that long. On SQLite
    the file is local: the default connection is the probe.
    """
    if connection.vendor != "postgresql":
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            return f"unreachable: {type(exc).__name__}"
        return ""
    outcome: list[str] = []

    def probe() -> None:
        import psycopg

        params = {**connection.get_connection_params(), "connect_timeout": 2}
        try:
            with psycopg.connect(**params, autocommit=True) as probe_connection:
                probe_connection.execute("SELECT 1")
            outcome.append("")
        except psycopg.Error as exc:
            outcome.append(f"unreachable: {type(exc).__name__}")

    thread = threading.Thread(target=probe, name="readyz-database-probe", daemon=True)
    thread.start()
    thread.join(DATABASE_PROBE_SECONDS)
    if not outcome:
        return f"no answer within {DATABASE_PROBE_SECONDS:g} s"
    return outcome[0]


def readiness_checks() -> dict[str, str]:
    checks = {"migrations": migrations_check()}
    live, _, up = worker_figures()
    checks["workers"] = f"ok: {live} live" if live else "no live worker"
    checks["sweeps"] = sweeps_check(workers_up_seconds=up)
    return checks


def migrations_check() -> str:
    """Reads the migration files once per process: after the first success it stays "ok"
    (migrations are not unapplied under a running server)."""
    global _migrations_applied
    if _migrations_applied:
        return "ok"
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        return f"{len(plan)} migration(s) not applied"
    _migrations_applied = True
    return "ok"


def sweeps_check(workers_up_seconds: int | None = None) -> str:
    """Sweeps keep up when a sweep has succeeded (anywhere) within a few sweep intervals and
    no run has stayed dead for that long past its timeouts (a sweeper that runs but does not
    recover). The rows alone are asked (what every host agrees on), on the database's clock.

    Right after a fresh deploy, or a restart of everything, no sweep may have succeeded for a
    while: the count starts when the oldest live worker registered (`workers_up_seconds`).
    With periodic sweeps off nothing sweeps on a schedule, so neither is required.
    """
    interval = conf.RECOVERY_SWEEP_INTERVAL_SECONDS
    rows = sweep_rows()
    last_ok = last_sweep_seconds(rows, SweepOutcome.OK)
    if not interval:
        since = "" if last_ok is None else f"; last successful sweep {last_ok} s ago"
        return f"ok: periodic sweeps are off{since}"
    grace = SWEEP_INTERVALS_OF_GRACE * interval
    dead = rows_dead_runs(liveness.Rule.current().lenient(grace))
    if dead:
        return f"{dead} run(s) dead for over {grace} s past their timeout: sweeps are not recovering them"
    if last_ok is not None and last_ok <= grace:
        return f"ok: last successful sweep {last_ok} s ago"
    if workers_up_seconds is not None and workers_up_seconds <= grace:
        return f"ok: starting (workers up for {workers_up_seconds} s, no sweep succeeded yet)"
    last_error = last_sweep_seconds(rows, SweepOutcome.ERROR)
    failing = (
        f"; the last sweep failed {last_error} s ago"
        if last_error is not None and (last_ok is None or last_error < last_ok)
        else ""
    )
    if last_ok is None:
        return f"no sweep has succeeded yet (expected every {interval} s){failing}"
    return f"no successful sweep for {last_ok} s (expected every {interval} s){failing}"


def metrics_access(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read /metrics, else the answer that refuses it."""
    token, networks = conf.METRICS_TOKEN, conf.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        raise Http404("Metrics are off: set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS.")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    bearer = scheme.lower() == "bearer" and given.strip()
    if token and bearer and hmac.compare_digest(bearer.encode(), token.encode()):
        return None
    if networks:
        # The same client address as the throttle's: a forwarded header only from a trusted
        # proxy, so a spoofed header cannot claim an allowed network.
        address = client_ip(request)
        if address is not None and any(address in network for network in networks):
            return None
    if token:
        answer = "Wrong bearer token." if header else "A bearer token is required."
        response = JsonResponse({"error": answer}, status=401)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return JsonResponse({"error": "Your network may not read the metrics."}, status=403)


@never_cache
@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text exposition, computed from the database for this scrape."""
    refused = metrics_access(request)
    if refused is not None:
        return refused
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RecoveryCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
