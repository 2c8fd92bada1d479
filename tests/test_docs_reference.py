"""The reference pages cannot drift from the code: every setting, metric and management command
the code has is documented, and every one documented exists. The names are read from the code
(settings.py, the apps' conf.py, .env.example, the /metrics collector, Django's command
registry), never from a hand-kept list."""

from __future__ import annotations

import ast
import io
import re
from collections.abc import Mapping
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command, get_commands

from qualifier import conf as qualifier_conf
from recovery import conf as recovery_conf
from recovery.metrics import RecoveryCollector

PROJECT = Path(__file__).resolve().parent.parent
REFERENCE = PROJECT / "docs" / "reference"
#: The apps whose management commands are the project's own.
PROJECT_APPS = {"common", "qualifier", "recovery"}


def documented(page: str, pattern: str) -> set[str]:
    return set(re.findall(pattern, (REFERENCE / page).read_text(), flags=re.MULTILINE))


def difference_message(what: str, page: str, in_code: set[str], in_docs: set[str]) -> str:
    lines = []
    if missing := sorted(in_code - in_docs):
        lines.append(f"{what} in the code but not in docs/reference/{page}: {', '.join(missing)}")
    if stale := sorted(in_docs - in_code):
        lines.append(f"{what} in docs/reference/{page} but not in the code: {', '.join(stale)}")
    return "\n".join(lines)


# --- settings --------------------------------------------------------------------------------


def environment_variables_read_by_settings() -> set[str]:
    """The names qualifier/settings.py reads from the environment: every `env.<reader>("NAME")`
    call, and each key of an `env.app_settings(PREFIX, defaults)` mapping as PREFIX + KEY."""
    tree = ast.parse((PROJECT / "qualifier" / "settings.py").read_text())
    # QUALIFIER_DEFAULT_CRITERIA = env.criteria("QUALIFIER_", defaults): one variable per
    # key of the mapping that setting holds.
    groups = {
        id(node.value): node.targets[0].id
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    names: set[str] = set()
    for call in ast.walk(tree):
        if not (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and isinstance(call.func.value, ast.Name)
            and call.func.value.id in {"env", "_env"}
            and call.args
            and isinstance(call.args[0], ast.Constant)
            and isinstance(call.args[0].value, str)
        ):
            continue
        name = call.args[0].value
        if call.func.attr in {"app_settings", "criteria"}:
            names |= {name + key.upper() for key in getattr(settings, groups[id(call)])}
        else:
            names.add(name)
    return names


def application_setting_defaults() -> set[str]:
    """The settings whose defaults the apps' conf.py modules keep (a mapping-valued default is
    a group of variables, read by settings.py's app_settings)."""
    return {
        name
        for defaults in (recovery_conf.DEFAULTS, qualifier_conf.DEFAULTS)
        for name, default in defaults.items()
        if not isinstance(default, Mapping)
    }


def env_example_variables() -> set[str]:
    text = (PROJECT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def test_every_setting_in_the_code_is_in_the_settings_reference_and_the_reverse():
    in_code = (
        environment_variables_read_by_settings()
        | application_setting_defaults()
        | env_example_variables()
    )
    in_docs = documented("settings.md", r"^\| `([A-Z][A-Z0-9_]*)` \|")
    assert in_code == in_docs, difference_message("Settings", "settings.md", in_code, in_docs)


def test_every_variable_env_example_documents_is_read_from_the_environment():
    """A variable in .env.example, or an application setting with a default, that settings.py
    does not read from the environment would be silently ignored."""
    read = environment_variables_read_by_settings()
    ignored = sorted((env_example_variables() | application_setting_defaults()) - read)
    assert not ignored, f"not read from the environment by qualifier/settings.py: {ignored}"


# --- metrics ---------------------------------------------------------------------------------


def exported_metric_names() -> set[str]:
    """The names /metrics exports, as a scrape shows them: counters with `_total`."""
    names = set()
    for family in RecoveryCollector().collect():
        names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def test_every_metric_exported_is_in_the_metrics_reference_and_the_reverse(make_run):
    # A real recovery and a real sweep, so that the families exported only once there has
    # been one (the age of the last recovery and of the last successful sweep) are there too.
    make_run(heartbeat_minutes_ago=20, worker_beat_seconds_ago=300)
    call_command("recover_stuck_runs", stdout=io.StringIO())
    in_code = exported_metric_names()
    in_docs = documented("metrics.md", r"^\| `(qualifier_[a-z_]+)` \|")
    assert in_code == in_docs, difference_message("Metrics", "metrics.md", in_code, in_docs)


# --- management commands ---------------------------------------------------------------------


def test_every_management_command_of_the_project_is_in_the_commands_reference_and_the_reverse():
    in_code = {name for name, app in get_commands().items() if app in PROJECT_APPS}
    assert in_code, "no command found for the project's apps"
    in_docs = documented("commands.md", r"^## `([a-z_]+)`$")
    assert in_code == in_docs, difference_message("Commands", "commands.md", in_code, in_docs)


@pytest.mark.parametrize("page", sorted(p.name for p in REFERENCE.glob("*.md")))
def test_reference_pages_are_in_the_site_navigation(page):
    """mkdocs build --strict fails on a link to a missing page; a page left out of the
    navigation would only be found by search."""
    assert f"reference/{page}" in (PROJECT / "mkdocs.yml").read_text()
