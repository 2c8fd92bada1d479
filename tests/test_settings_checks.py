"""The recovery settings: their readers (common/values.py, common/inputs.py), the conf object
that reads them (recovery/conf.py) and the system checks that stop every server and command on
a bad value set in Python (recovery/checks.py). Values from the environment are read by
settings.py (tests/test_hardening.py runs those)."""

from __future__ import annotations

import pytest
from django.core import checks
from django.test import override_settings

from common.inputs import parse_bool
from common.values import parse_bounded
from recovery.checks import check_recovery_settings
from recovery.conf import DEFAULTS, conf


@pytest.mark.parametrize(
    ("value", "expected"), [("5", 5), (" 7 ", 7), ("0012", 12), (5, 5), (1440, 1440)]
)
def test_positive_int_accepts_whole_numbers_from_the_environment_or_python(value, expected):
    assert parse_bounded(value, minimum=1) == expected


@pytest.mark.parametrize(
    "value",
    ["abc", "0", "-3", "", " ", "1.5", "5min", "٣", "²", 0, -3, 2.0, True, False, None],
)
def test_positive_int_rejects_anything_else_naming_the_value(value):
    with pytest.raises(ValueError, match="is not a positive integer") as excinfo:
        parse_bounded(value, minimum=1)
    assert repr(value) in str(excinfo.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" yes ", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("False", False),
        ("no", False),
        ("off", False),
        ("0", False),
        (True, True),
        (False, False),
    ],
)
def test_bool_accepts_the_usual_words_in_any_case(value, expected):
    assert parse_bool(value) is expected


@pytest.mark.parametrize("value", ["maybe", "", "2", "tru", None, 1, 0])
def test_bool_rejects_anything_else_naming_the_value(value):
    with pytest.raises(ValueError, match="is not a boolean") as excinfo:
        parse_bool(value)
    assert repr(value) in str(excinfo.value)


def test_conf_reads_the_settings_at_each_access():
    with override_settings(
        STUCK_RUN_TIMEOUT_MINUTES=9, RECOVERY_ON_STARTUP=False, RECOVERY_HEARTBEAT_SECONDS=3
    ):
        assert conf.STUCK_RUN_TIMEOUT_MINUTES == 9
        assert conf.RECOVERY_ON_STARTUP is False
        assert conf.RECOVERY_HEARTBEAT_SECONDS == 3
    with override_settings(STUCK_RUN_TIMEOUT_MINUTES=11):
        assert conf.STUCK_RUN_TIMEOUT_MINUTES == 11


def test_conf_falls_back_to_the_defaults_when_a_setting_is_absent(settings):
    for name in DEFAULTS:
        delattr(settings, name)
    assert conf.STUCK_RUN_TIMEOUT_MINUTES == 5
    assert conf.RECOVERY_ON_STARTUP is True
    assert conf.RECOVERY_HEARTBEAT_SECONDS == 2
    assert conf.RECOVERY_WORKER_TIMEOUT_SECONDS == 8
    assert conf.RECOVERY_SWEEP_INTERVAL_SECONDS == 2
    assert check_recovery_settings() == []


def test_a_sweep_interval_of_zero_is_valid_and_means_off():
    with override_settings(RECOVERY_SWEEP_INTERVAL_SECONDS=0):
        assert check_recovery_settings() == []
        assert conf.RECOVERY_SWEEP_INTERVAL_SECONDS == 0


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("RECOVERY_ON_STARTUP", "false", "'false' should be given as False"),
        ("RECOVERY_HEARTBEAT_SECONDS", "10", "'10' should be given as 10"),
        (
            "RECOVERY_POLICY",
            " Resume",
            "' Resume' should be given as 'resume'",
        ),
        (
            "METRICS_ALLOWED_NETWORKS",
            "10.0.0.0/8",
            "'10.0.0.0/8' should be given as (IPv4Network('10.0.0.0/8'),)",
        ),
    ],
)
def test_text_set_in_python_is_an_error_not_read_as_the_environment_would(name, value, problem):
    """Only settings.py reads text (the environment's): in Python a setting holds its value."""
    with override_settings(**{name: value}):
        [error] = check_recovery_settings()
    assert error.msg == f"Setting {name} is invalid: {problem}."


def test_the_project_defaults_pass_the_checks():
    assert check_recovery_settings() == []


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("STUCK_RUN_TIMEOUT_MINUTES", "abc", "recovery.E001"),
        ("STUCK_RUN_TIMEOUT_MINUTES", "0", "recovery.E001"),
        ("STUCK_RUN_TIMEOUT_MINUTES", "-3", "recovery.E001"),
        ("RECOVERY_ON_STARTUP", "maybe", "recovery.E002"),
        ("RECOVERY_HEARTBEAT_SECONDS", "often", "recovery.E003"),
        ("RECOVERY_HEARTBEAT_SECONDS", "0", "recovery.E003"),
        ("RECOVERY_SWEEP_INTERVAL_SECONDS", "-1", "recovery.E005"),
        ("RECOVERY_SWEEP_INTERVAL_SECONDS", "hourly", "recovery.E005"),
        ("RECOVERY_WORKER_TIMEOUT_SECONDS", "0", "recovery.E006"),
        ("RECOVERY_WORKER_TIMEOUT_SECONDS", "\u0663\u0660", "recovery.E006"),
        ("RECOVERY_SHUTDOWN_GRACE_SECONDS", "soon", "recovery.E008"),
        ("RECOVERY_MAX_ATTEMPTS", "0", "recovery.E009"),
    ],
)
def test_a_bad_value_is_one_error_naming_the_setting_and_value_with_a_hint(name, value, check_id):
    with override_settings(**{name: value}):
        errors = check_recovery_settings()
    assert len(errors) == 1
    (error,) = errors
    assert error.id == check_id
    assert error.level == checks.ERROR
    kind = {
        "RECOVERY_ON_STARTUP": "boolean (use true or false)",
        "RECOVERY_SWEEP_INTERVAL_SECONDS": "whole number (0 to 86,400)",
        "STUCK_RUN_TIMEOUT_MINUTES": "positive integer (1 to 5,256,000)",
    }.get(name, "positive integer (1 to 86,400)")
    assert error.msg == f"Setting {name} is invalid: {value!r} is not a {kind}."
    assert error.hint


def test_every_bad_setting_is_reported_at_once():
    with override_settings(
        STUCK_RUN_TIMEOUT_MINUTES="abc", RECOVERY_ON_STARTUP="maybe", RECOVERY_HEARTBEAT_SECONDS="x"
    ):
        ids = [error.id for error in check_recovery_settings()]
    assert ids == ["recovery.E001", "recovery.E002", "recovery.E003"]


def test_a_heartbeat_slower_than_half_the_timeout_is_an_error():
    with override_settings(
        STUCK_RUN_TIMEOUT_MINUTES=1,
        RECOVERY_HEARTBEAT_SECONDS=31,
        RECOVERY_WORKER_TIMEOUT_SECONDS=93,
    ):
        errors = check_recovery_settings()
    assert [error.id for error in errors] == ["recovery.E004"]
    assert "RECOVERY_HEARTBEAT_SECONDS (31)" in errors[0].msg
    assert "STUCK_RUN_TIMEOUT_MINUTES (1 min = 60 s)" in errors[0].msg


def test_a_heartbeat_of_exactly_half_the_timeout_is_allowed():
    with override_settings(
        STUCK_RUN_TIMEOUT_MINUTES=1,
        RECOVERY_HEARTBEAT_SECONDS=30,
        RECOVERY_WORKER_TIMEOUT_SECONDS=90,
    ):
        assert check_recovery_settings() == []


def test_the_worker_timeout_must_cover_three_heartbeats():
    with override_settings(RECOVERY_HEARTBEAT_SECONDS=10, RECOVERY_WORKER_TIMEOUT_SECONDS=29):
        errors = check_recovery_settings()
    assert [error.id for error in errors] == ["recovery.E007"]
    assert "RECOVERY_WORKER_TIMEOUT_SECONDS (29)" in errors[0].msg
    with override_settings(RECOVERY_HEARTBEAT_SECONDS=10, RECOVERY_WORKER_TIMEOUT_SECONDS=30):
        assert check_recovery_settings() == []


def test_the_run_task_must_be_a_dotted_path():
    with override_settings(RECOVERY_RUN_TASK="not a path"):
        errors = check_recovery_settings()
    assert [error.id for error in errors] == ["recovery.E010"]


def test_the_check_is_registered_so_django_runs_it_for_every_command(db):
    with override_settings(STUCK_RUN_TIMEOUT_MINUTES="abc"):
        ids = [message.id for message in checks.run_checks(databases=[])]
    assert "recovery.E001" in ids


# --- one reader per kind, defaults in one place, no parsing in the conf objects -------------


@pytest.mark.parametrize("module", ["common.conf", "recovery.conf", "qualifier.conf"])
def test_a_conf_object_returns_the_setting_as_it_is(module):
    """No second parser: what settings.py (or override_settings) holds is what the app reads."""
    import importlib

    app_conf = importlib.import_module(module)
    for name in app_conf.DEFAULTS:
        marker = object()
        with override_settings(**{name: marker}):
            assert getattr(app_conf.conf, name) is marker


def test_the_default_minimum_score_is_written_once():
    from qualifier.conf import DEFAULT_CRITERIA
    from qualifier.conf import conf as qualifier_conf
    from qualifier.criteria import Criteria

    assert Criteria().min_score == DEFAULT_CRITERIA["min_score"] == 60
    assert Criteria.defaults().min_score == 60
    assert int(qualifier_conf.QUALIFIER_DEFAULT_CRITERIA["min_score"]) == 60


def test_app_code_reads_app_settings_only_through_its_conf_object():
    """No getattr(settings, ...) or settings.APP_SETTING outside the conf modules."""
    import re
    from pathlib import Path

    import common.conf
    import qualifier.conf
    import recovery.conf

    names = set(common.conf.DEFAULTS) | set(recovery.conf.DEFAULTS) | set(qualifier.conf.DEFAULTS)
    pattern = re.compile(r"getattr\(settings|settings\.(" + "|".join(names) + r")\b")
    root = Path(__file__).resolve().parent.parent
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for app in ("common", "recovery", "qualifier")
        for path in (root / app).rglob("*.py")
        if path.name not in ("conf.py", "settings.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


# --- settings.py's reader: django-environ with the project's readers as its casts ---------------


def test_the_environment_is_read_by_the_reader_of_each_kind(monkeypatch):
    from ipaddress import ip_network

    from qualifier.environment import Env

    for name, value in {
        "Q_NUMBER": " 12 ",
        "Q_BOOL": "Off",
        "Q_CHOICE": " Resume ",
        "Q_NETWORKS": "10.0.0.0/8, ::1",
        "Q_BLANK": "  ",
    }.items():
        monkeypatch.setenv(name, value)
    env = Env()
    assert env.int("Q_NUMBER", default=1, minimum=1) == 12
    assert env.bool("Q_BOOL", default=True) is False
    assert env.choice("Q_CHOICE", default="fail", choices=("fail", "resume")) == "resume"
    assert env.networks("Q_NETWORKS") == (ip_network("10.0.0.0/8"), ip_network("::1"))
    assert env.int("Q_BLANK", default=7) == 7  # blank means the default
    assert env.int("Q_UNSET", default=7) == 7


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("٣", "Setting Q_NUMBER is invalid: '٣' is not a positive integer (1 to 86,400)."),
        ("86401", "Setting Q_NUMBER is invalid: '86401' is not a positive integer (1 to 86,400)."),
        (  # bytes that are not UTF-8, as the environment may hold them
            "1\udc80",
            "Setting Q_NUMBER is invalid: the text contains a lone surrogate (\\udc80), which is "
            "not valid Unicode.",
        ),
    ],
)
def test_a_bad_environment_value_is_a_setting_error_naming_the_variable(
    monkeypatch, value, message
):
    from qualifier.environment import Env, SettingError

    monkeypatch.setenv("Q_NUMBER", value)
    with pytest.raises(SettingError) as excinfo:
        Env().int("Q_NUMBER", default=1, minimum=1)
    assert str(excinfo.value) == message


def test_a_secret_that_is_too_short_is_refused_without_repeating_it(monkeypatch):
    from qualifier.environment import Env, SettingError

    monkeypatch.setenv("Q_TOKEN", "hunter2")
    with pytest.raises(SettingError) as excinfo:
        Env().secret("Q_TOKEN")
    assert "hunter2" not in str(excinfo.value)
    assert "7 characters long; at least 32" in str(excinfo.value)


def test_the_default_criteria_from_the_environment_are_typed_and_a_blank_bound_means_none(
    monkeypatch,
):
    from qualifier.conf import DEFAULT_CRITERIA
    from qualifier.environment import Env

    monkeypatch.setenv("QUALIFIER_MIN_EMPLOYEES", "")
    monkeypatch.setenv("QUALIFIER_COUNTRIES", "Germany, France")
    criteria = Env().criteria("QUALIFIER_", DEFAULT_CRITERIA)
    assert criteria["min_employees"] is None
    assert criteria["max_employees"] == DEFAULT_CRITERIA["max_employees"]
    assert criteria["countries"] == ["Germany", "France"]
    assert criteria["min_score"] == 60
