"""The default gunicorn configuration serves behind a proxy: a private address whatever PORT says,
bounded timeouts (issue 15, item 9); and a per-process cache is named as a deployment problem."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import run_checks
from django.test import override_settings

ROOT = Path(__file__).resolve().parent.parent


def gunicorn_config(**env: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS")
    }
    environment.update(QUALIFIER_IGNORE_DOTENV="1", SECRET_KEY="deploy-test", **env)
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "--print-config",
            "-c",
            "python:qualifier.gunicorn_conf",
            "qualifier.wsgi",
        ],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^(\w+)\s+= (.*)$", result.stdout, re.MULTILINE))


@pytest.mark.parametrize(
    ("env", "bind"), [({}, "127.0.0.1:8000"), ({"PORT": "8621"}, "127.0.0.1:8621")]
)
def test_gunicorn_binds_to_loopback_even_when_port_is_set(env, bind):
    config = gunicorn_config(**env)
    assert config["bind"] == repr([bind])
    assert config["timeout"] == "30"
    assert config["graceful_timeout"] == "30"


def test_the_command_line_still_wins_over_the_defaults():
    config = gunicorn_config(GUNICORN_CMD_ARGS="--bind 10.0.0.5:9000 --workers 3")
    assert config["bind"] == repr(["10.0.0.5:9000"])
    assert config["workers"] == "3"


def test_a_per_process_cache_is_a_deployment_warning():
    locmem = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    shared = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "qualifier_cache",
        }
    }
    with override_settings(CACHES=locmem):
        ids = [m.id for m in run_checks(include_deployment_checks=True, tags=["security"])]
    assert "qualifier.W001" in ids
    with override_settings(CACHES=shared):
        ids = [m.id for m in run_checks(include_deployment_checks=True, tags=["security"])]
    assert "qualifier.W001" not in ids
