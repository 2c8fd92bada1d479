"""Fuzzes the API with Schemathesis against a live server, from its OpenAPI document.

A fresh PostgreSQL database is migrated and seeded (a staff operator with the run permissions,
a plain user, a few runs of each, one of them stuck), gunicorn serves it on a free port, and
`schemathesis run` covers every operation once per way of signing in: the staff user's
session, the plain user's session, the staff user's personal API token, and the operator's
token (RECOVERY_API_TOKEN). It
exits non-zero when any check fails (a server error, an answer the document does not allow, a
crash), and prints how many cases each pass generated. `scripts/fuzz-api` runs it.

Every answer must come within FUZZ_MAX_RESPONSE_SECONDS (default 5) and hold at most
FUZZ_MAX_ANSWER_BYTES (default 1 MiB, scripts/fuzz_checks.py); each user has a run of 10,000
results, so a page whose cost grows with its offset, or an error answer that repeats its
request, fails the run. The stateful phase follows the document's links: from a list of
FAILED runs to continuing one (each user has a few to continue), and the summary says how many
continues succeeded.

Environment: FUZZ_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/qualifier_fuzz; the
database is created afresh and dropped at the end), FUZZ_PORT (default: a free port),
FUZZ_MAX_EXAMPLES (most cases per operation and phase, default 15), FUZZ_SEED,
FUZZ_REPORT_DIR (default .fuzz-report), FUZZ_MAX_RESPONSE_SECONDS, FUZZ_MAX_ANSWER_BYTES.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROJECT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
DATABASE_URL = os.environ.get(
    "FUZZ_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/qualifier_fuzz"
)
MAX_EXAMPLES = os.environ.get("FUZZ_MAX_EXAMPLES", "15")
PORT = os.environ.get("FUZZ_PORT", "")
MAX_RESPONSE_SECONDS = os.environ.get("FUZZ_MAX_RESPONSE_SECONDS", "5")
#: Failed runs each user has to continue (one per successful continue).
FAILED_RUNS = 20
#: Results in each user's big run: a deep page of it must cost what the first does.
BIG_RUN = 10_000
SEED = os.environ.get("FUZZ_SEED", "")
REPORT_DIR = Path(os.environ.get("FUZZ_REPORT_DIR", PROJECT / ".fuzz-report"))
#: Schemathesis's settings for every pass: all its checks, with these adjustments (docs/development.md,
#: "The contract, tested and fuzzed", says why).
CONFIG = """
[checks.negative_data_rejection]
# 413 (too many prospects, too large a body) and 414 (gunicorn: a request line over 4,094
# bytes) are refusals too.
expected-statuses = [400, 401, 403, 404, 405, 406, 409, 413, 414, 415, 422, 428, 429]

[[operations]]
include-operation-id = "createRun"
# A prospect accepts more than JSON Schema can state exactly (column names in any case, a
# bound on all of its extra data together, min_employees <= max_employees).
checks.positive_data_acceptance.enabled = false
"""

SEED_SCRIPT = """
import datetime as dt, json, secrets
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone
from qualifier.criteria import Criteria
from qualifier.models import Outcome, Prospect, ProspectResult
from recovery.models import QualificationRun, RunStatus
from common.tokens import issue_token

def session(user):
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key

def runs(user):
    now = timezone.now()
    criteria = Criteria.defaults().as_dict()
    big = QualificationRun.objects.create(
        user=user, status=RunStatus.COMPLETED, total=BIG_RUN, completed=BIG_RUN,
        criteria=criteria, started_at=now, completed_at=now)
    prospects = Prospect.objects.bulk_create(
        (Prospect(run=big, position=n + 2, number=n + 1, name=f"Person {n}", company="Acme")
         for n in range(BIG_RUN)), batch_size=1000)
    ProspectResult.objects.bulk_create(
        (ProspectResult(run=big, prospect=p, outcome=Outcome.QUALIFIED, score=n % 101)
         for n, p in enumerate(prospects)), batch_size=1000)
    for _ in range(FAILED_RUNS):  # older than the rest: continued ones leave the FAILED list
        failed = QualificationRun.objects.create(
            user=user, status=RunStatus.FAILED, total=2, completed=0, criteria=criteria,
            started_at=now, completed_at=now, failure_reason="The worker died.")
        Prospect.objects.bulk_create(
            Prospect(run=failed, position=n + 2, number=n + 1, name="Left", company="Acme")
            for n in range(2))
    done = QualificationRun.objects.create(
        user=user, status=RunStatus.COMPLETED, total=3, completed=3, criteria=criteria,
        started_at=now, completed_at=now)
    failed = QualificationRun.objects.create(
        user=user, status=RunStatus.FAILED, total=3, completed=1, criteria=criteria,
        started_at=now, completed_at=now, failure_reason="The worker died.")
    for run, scored in ((done, 3), (failed, 1)):
        for position in range(1, 4):
            prospect = Prospect.objects.create(
                run=run, position=position, number=position, name=f"Person {position}", company="Acme",
                employees=100 * position, extra={"note": "seeded"})
            if position <= scored:
                ProspectResult.objects.create(
                    run=run, prospect=prospect, outcome=Outcome.QUALIFIED, score=80,
                    reasons=["industry matches: Software"])
    QualificationRun.objects.create(  # stuck: its worker fell silent half an hour ago
        user=user, status=RunStatus.PROCESSING, total=5, completed=2, criteria=criteria,
        attempts=1, deaths=0, created_at=now - dt.timedelta(minutes=40),
        started_at=now - dt.timedelta(minutes=35), heartbeat_at=now - dt.timedelta(minutes=30))

staff = User.objects.create_user("operator", is_staff=True)
staff.user_permissions.set(Permission.objects.filter(
    codename__in=["view_qualificationrun", "change_qualificationrun"]))
member = User.objects.create_user("member")
runs(staff)
runs(member)
print(json.dumps({
    "staff": session(staff),
    "member": session(member),
    "staff_token": issue_token(staff, "fuzz-api")[1],
}))
"""


def main() -> int:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(36)
    env = environment(token)
    fresh_database()
    manage(["migrate", "--noinput", "-v", "0"], env)
    seed = f"BIG_RUN = {BIG_RUN}\nFAILED_RUNS = {FAILED_RUNS}\n{SEED_SCRIPT}"
    sessions = json.loads(manage(["shell", "--no-imports", "-c", seed], env))
    port = int(PORT) if PORT else free_port()
    gunicorn = [str(BIN / "gunicorn"), "-c", "python:qualifier.gunicorn_conf", "qualifier.wsgi"]
    server = subprocess.Popen(
        [*gunicorn, "--bind", f"127.0.0.1:{port}", "--workers", "4", "--access-logfile", "-"],
        cwd=PROJECT,
        env=env,
        stdout=(REPORT_DIR / "server.log").open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{base}/healthz", server)
        csrf = secrets.token_hex(16)  # a CSRF secret of 32 characters, as Django makes them
        passes = {
            "staff-session": _session_auth(sessions["staff"], csrf),
            "user-session": _session_auth(sessions["member"], csrf),
            "staff-token": {"bearer": {"bearer": sessions["staff_token"]}},
            "operator-token": {"bearer": {"bearer": token}},
        }
        results = {name: fuzz(base, name, headers) for name, headers in passes.items()}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        drop_database()
    total = sum(cases for cases, _, _ in results.values())
    print("\n=== Schemathesis: cases generated")
    for name, (cases, continued, code) in results.items():
        outcome = "ok" if code == 0 else f"FAILED (exit {code})"
        print(f"{name:16} {cases:6,} cases  {continued:3} continues succeeded  {outcome}")
    print(f"{'all':16} {total:6,} cases")
    return 0 if all(code == 0 for _, _, code in results.values()) else 1


def _session_auth(session_key: str, csrf: str) -> dict[str, dict[str, str]]:
    """A signed-in session with its CSRF cookie and header, by the document's scheme names."""
    return {
        "session": {"api_key": session_key},
        "csrfCookie": {"api_key": csrf},
        "csrfHeader": {"api_key": csrf},
    }


def fuzz(base: str, name: str, auth: dict[str, dict[str, str]]) -> tuple[int, int, int]:
    """One pass of `schemathesis run` signed in with `auth` (credentials by security scheme):
    (cases generated, continues that succeeded, its exit code)."""
    report = REPORT_DIR / f"{name}.ndjson"
    config = REPORT_DIR / f"{name}.toml"
    credentials = "".join(
        f"\n[auth.openapi.{scheme}]\n"
        + "".join(f'{key} = "{value}"\n' for key, value in values.items())
        for scheme, values in auth.items()
    )
    config.write_text(credentials + CONFIG)
    command = [
        str(BIN / "schemathesis"),
        "--config-file", str(config),
        "--no-color",
        "run",
        f"{base}/api/qualify/openapi.json",
        "--max-examples", MAX_EXAMPLES,
        "--report", "ndjson",
        "--report-ndjson-path", str(report),
        "--request-timeout", "20",
        "--max-response-time", MAX_RESPONSE_SECONDS,
        "--workers", "4",
    ]  # fmt: skip
    if SEED:
        command += ["--seed", SEED]
    print(f"\n=== Schemathesis, {name}", flush=True)
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(PROJECT / "scripts" / "fuzz_checks.py")}
    code = subprocess.run(command, cwd=PROJECT, env=env, check=False).returncode
    config.unlink()  # it holds credentials
    return count_cases(report), count_continues(report), code


def count_cases(report: Path) -> int:
    """Test cases Schemathesis generated, from its ndjson events (one per generated case)."""
    cases = 0
    if not report.exists():
        return 0
    with report.open() as lines:
        for line in lines:
            event = json.loads(line)
            finished = event.get("ScenarioFinished")
            if finished:
                cases += len(finished.get("recorder", {}).get("cases", {}))
    return cases


def count_continues(report: Path) -> int:
    """Continues of a run that answered 200, from the ndjson events."""
    continued = 0
    if not report.exists():
        return 0
    with report.open() as lines:
        for line in lines:
            finished = json.loads(line).get("ScenarioFinished") or {}
            interactions = finished.get("recorder", {}).get("interactions", {})
            for interaction in interactions.values():
                request = interaction.get("request") or {}
                response = interaction.get("response") or {}
                if (
                    request.get("method") == "POST"
                    and str(request.get("uri", "")).endswith("/continue")
                    and response.get("status_code") == 200
                ):
                    continued += 1
    return continued


def environment(token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="qualifier.settings",
        QUALIFIER_IGNORE_DOTENV="1",
        DATABASE_URL=DATABASE_URL,
        SECRET_KEY=secrets.token_urlsafe(50),
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        RECOVERY_API_TOKEN=token,
        # The fuzzer sends many wrong tokens on purpose; with the default limit every request
        # from 127.0.0.1 would be a 429 after the tenth. 429 itself is covered by the tests.
        AUTH_FAILURE_LIMIT="86400",
        # Runs the fuzzer creates stay PENDING (no worker): they must not make every continue
        # a 429. The limit itself is covered by the tests.
        QUALIFIER_MAX_ACTIVE_RUNS_PER_USER="10000",
        RECOVERY_ON_STARTUP="false",
        RECOVERY_SWEEP_INTERVAL_SECONDS="0",
        PYTHONUNBUFFERED="1",
    )
    return env


def fresh_database() -> None:
    drop_database()
    _administer("CREATE DATABASE {}")


def drop_database() -> None:
    _administer("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def _administer(statement: str) -> None:
    """Runs `statement` about the fuzz database from the server's `postgres` database."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(DATABASE_URL)
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        name = sql.Identifier(parts.path.lstrip("/"))
        connection.execute(sql.SQL(statement).format(name))


def manage(args: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited early; see {REPORT_DIR / 'server.log'}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"the server did not answer {url} within {timeout:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
