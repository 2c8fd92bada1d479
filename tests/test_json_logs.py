"""LOG_FORMAT=json: every log line is one JSON object with the structured fields."""

from __future__ import annotations

import json
import logging
import subprocess

import pytest

from qualifier.logformat import JsonFormatter
from tests import processes

SCRIPT = """
import logging
import django
django.setup()
from recovery.models import QualificationRun, RecoveryCause, RecoverySource, RunStatus, Worker
from recovery.sweep import hand_back, recover_stuck_runs
worker = Worker.objects.create(host="json-host.test", pid=77)
run = QualificationRun.objects.create(status=RunStatus.PROCESSING, total=3, worker=worker)
hand_back(worker, source=RecoverySource.SHUTDOWN, cause=RecoveryCause.SHUTDOWN)
recover_stuck_runs(source=RecoverySource.COMMAND)
logging.getLogger("django.request").warning("a library's warning")
try:
    1 / 0
except ZeroDivisionError:
    logging.getLogger("qualifier").exception("with a traceback")
print("RUN", run.pk)
"""


def test_a_record_becomes_one_json_object_with_its_structured_fields():
    record = logging.LogRecord("recovery", logging.INFO, __file__, 1, "Run %s: %s", (7, "x"), None)
    record.run_id, record.source, record.reason = 7, "sweeper", "gone\nquiet"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "INFO"
    assert data["logger"] == "recovery"
    assert data["message"] == "Run 7: x"
    assert (data["run_id"], data["source"], data["reason"]) == (7, "sweeper", "gone\nquiet")
    assert data["timestamp"].endswith("+00:00")
    assert "worker" not in data


def run_script(database_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    """SCRIPT in a fresh process: its settings, and so its logging, read from `env`."""
    result = subprocess.run(
        [processes.PYTHON, "-c", SCRIPT],
        cwd=processes.PROJECT_DIR,
        env=processes.base_env(database_url, RECOVERY_LOG_LEVEL="INFO", **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.slow
def test_log_format_json_makes_every_line_of_a_real_process_json(process_database):
    result = run_script(process_database, LOG_FORMAT="json")
    run_id = int(result.stdout.split("RUN ")[1])
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # each one JSON object
    assert lines
    for line in lines:
        assert {"timestamp", "level", "logger", "message"} <= line.keys()
    (handed,) = [line for line in lines if line.get("event") == "run_handed_back"]
    assert handed["run_id"] == run_id
    assert handed["worker"] == "json-host.test:77"
    assert handed["source"] == "shutdown"
    assert handed["reason"].startswith("Back in the queue")
    sweeps = [line for line in lines if line.get("event") == "sweep"]
    assert sweeps and all(line["source"] == "command" for line in sweeps)
    (warning,) = [line for line in lines if line["logger"] == "django.request"]
    assert warning["level"] == "WARNING"
    (failure,) = [line for line in lines if line["message"] == "with a traceback"]
    assert "ZeroDivisionError" in failure["exception"]


@pytest.mark.slow
def test_the_default_log_format_stays_readable_lines(process_database):
    lines = run_script(process_database).stderr.splitlines()
    assert any(line.startswith("[Recovery] Run ") for line in lines)
    assert not any(line.startswith("{") for line in lines)


def test_a_bad_log_format_stops_the_process_with_one_line(process_database):
    result = processes.manage(["check"], process_database, LOG_FORMAT="xml")
    assert result.returncode == 4
    assert result.stderr.strip() == (
        "Error: Setting LOG_FORMAT is invalid: 'xml' is not one of text, json."
    )
