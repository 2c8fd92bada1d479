"""Hardening: the specific hostile inputs and abuses of issue 8, each refused cleanly (a 4xx with
a clear message and nothing changed), bounded, logged or throttled."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.checks import run_checks
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client, RequestFactory, override_settings
from django.views.debug import ExceptionReporter

from common.checks import check_common_settings
from common.inputs import MAX_BIGINT, parse_ids, parse_whole_number, unstorable
from qualifier.criteria import MAX_LIST_ITEMS, Criteria, CriteriaError, WordMatcher
from qualifier.models import Prospect
from qualifier.prospects import (
    MAX_EXTRA_LENGTH,
    MAX_EXTRA_VALUE_LENGTH,
    ProspectInputError,
    parse_csv,
    parse_json,
)
from qualifier.spreadsheets import neutralise
from recovery.models import QualificationRun, RecoveryEvent, RunStatus
from tests.helpers import CSRF_SECRET, DUMMY

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
API = "/api/qualify"
RECOVERY = f"{API}/recovery"
TOKEN = "a-recovery-token-long-enough-for-the-check"
PROSPECT = {"name": "Ann Lee", "company": "Acme"}


@pytest.fixture
def api(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


def post(client: Client, url: str, raw: str | bytes):
    return client.post(
        url, raw, content_type="application/json", headers={"X-CSRFToken": CSRF_SECRET}
    )


def nothing_stored() -> bool:
    return not (
        QualificationRun.objects.exists()
        or Prospect.objects.exists()
        or RecoveryEvent.objects.exists()
    )


# --- one reader per kind of input -----------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["\u0663", "\u00b2", "\uff11\uff12", "1_000", "+5", "5.0", "", "0x10", True]
)
def test_whole_numbers_are_ascii_digits_only(value):
    with pytest.raises(ValueError, match="is not a whole number"):
        parse_whole_number(value)


def test_whole_numbers_are_bounded_before_int_sees_them():
    with pytest.raises(ValueError, match="too many digits"):
        parse_whole_number("9" * 5000)
    with pytest.raises(ValueError, match="is more than"):
        parse_whole_number(MAX_BIGINT + 1)
    # The message never prints a huge number (Python refuses to above 4,300 digits).
    with pytest.raises(ValueError, match="a number of about 1,001 digits"):
        parse_whole_number(10**1000)


@pytest.mark.parametrize(
    ("text", "problem"), [("a\x00b", "NUL character"), ("a\ud800b", "lone surrogate")]
)
def test_text_the_database_cannot_store_is_named(text, problem):
    assert problem in unstorable(text)
    assert unstorable("Ann Lee, Zoë, 李") is None


def test_id_lists_are_bounded_and_typed():
    assert parse_ids([1, 2], max_items=2) == [1, 2]
    # JSON (and the document's `integer`) do not tell 1.0 from 1 (found by Schemathesis).
    assert parse_ids([1.0, 2], max_items=2) == [1, 2]
    for bad in ([], [1, 2, 3], ["1"], [1.5], [True], [0], [MAX_BIGINT + 1], "1"):
        with pytest.raises(ValueError):
            parse_ids(bad, max_items=2)


# --- the 500 classes of the audit, now 4xx -------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("[" * 100_000 + "]" * 100_000, "nest more than 20 levels"),
        ('{"prospects": ' + "[" * 30 + "]" * 30 + "}", "nest more than 20 levels"),
        (
            '{"prospects": [{"name": "A", "company": "B", "employees": ' + "9" * 5000 + "}]}",
            "a number has 5,000 digits; at most 100 are allowed",
        ),
        ('{"prospects": [{"name": "A", "company": "B", "x": NaN}]}', "NaN is not a number"),
        ('{"prospects": [{"name": "A", "company": "B", "x": 1e999}]}', "too large"),
        ('{"prospects": [{"name": "A\\u0000", "company": "B"}]}', "NUL character"),
        ('{"prospects": [{"name": "A\\ud800", "company": "B"}]}', "lone surrogate"),
        ('{"prospects": [{"name": "A", "company": "B", "x\\ud800": "1"}]}', "lone surrogate"),
        ('{"prospects": [{"name": "A", "company": "B", "x": "\\udfff"}]}', "lone surrogate"),
        ('{"prospects": [{"name": "A", "company": "B", "x": {"y": "\\ud800"}}]}', "lone surrogate"),
        (
            '{"prospects": [{"name": "A", "company": "B"}], "criteria": {"industries": ["\\u0000"]}}',
            "NUL character",
        ),
        (
            '{"prospects": [{"name": "A", "company": "B"}], "criteria": {"min_score": '
            + "9" * 4000
            + "}}",
            "a number has 4,000 digits",
        ),
        (
            '{"prospects": [{"name": "A", "company": "B"}], "criteria": {"min_employees": "١٢"}}',
            "not a whole number",
        ),
    ],
)
def test_hostile_json_bodies_are_a_400_that_says_why(api, raw, message):
    response = post(api, f"{API}/runs", raw)
    assert response.status_code == 400, response.content
    assert message in response.json()["error"]
    assert nothing_stored()


@pytest.mark.parametrize("page", ["\u0661", "\u00b2", "9" * 5000, "0", "-1"])
def test_page_numbers_in_other_scripts_or_out_of_range_are_400(api, page):
    response = api.get(f"{API}/runs", {"page": page})
    assert response.status_code == 400
    assert response.json()["fields"] == {"page": "A whole number from 1 up."}


@pytest.fixture
def operator(db):
    user = get_user_model().objects.create_user("ops", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="change_qualificationrun"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


@pytest.mark.parametrize("minutes", ["99999999999999", "\u0665", str(10**30), "5256001"])
def test_huge_or_foreign_timeouts_are_400_not_a_date_overflow(operator, make_run, minutes):
    make_run(created_minutes_ago=60)
    response = operator.get(RECOVERY, {"timeout_minutes": minutes})
    assert response.status_code == 400
    assert "timeout_minutes" in response.json()["fields"]
    body = json.dumps({"timeout_minutes": int(minutes) if minutes.isascii() else minutes})
    response = post(operator, RECOVERY, body)
    assert response.status_code == 400
    assert QualificationRun.objects.get().status == RunStatus.PROCESSING


def test_run_ids_beyond_bigint_are_400(operator):
    response = post(operator, RECOVERY, json.dumps({"run_ids": [2**70]}))
    assert response.status_code == 400
    assert "is more than" in response.json()["fields"]["run_ids"]


def test_an_oversized_number_in_the_form_shows_no_python_internals(client, alice):
    client.force_login(alice)
    csv = b"name,company\nAnn,Acme\n"
    response = client.post(
        "/runs/new/",
        {
            "prospects_file": SimpleUploadedFile("p.csv", csv, content_type="text/csv"),
            "min_employees": "9" * 5000,
            "min_score": "9" * 40,
        },
    )
    html = response.content.decode()
    assert "has too many digits" in html
    assert "Exceeds the limit" not in html and "int()" not in html
    assert not QualificationRun.objects.exists()


# --- bounded work -----------------------------------------------------------------------------


def csv_bytes(header: list[str], *rows: list[str]) -> bytes:
    lines = [",".join(header), *(",".join(row) for row in rows)]
    return ("\n".join(lines) + "\n").encode()


@override_settings(QUALIFIER_MAX_EXTRA_COLUMNS=3)
def test_more_extra_columns_than_allowed_is_refused_naming_the_limit():
    header = ["name", "company", "a", "b", "c", "d"]
    with pytest.raises(ProspectInputError, match="more than 3 columns besides the known ones"):
        parse_csv(csv_bytes(header, ["Ann", "Acme", "1", "2", "3", "4"]))
    with pytest.raises(ProspectInputError, match="Item 1: there are more than 3 columns"):
        parse_json([{"name": "Ann", "company": "Acme", "a": 1, "b": 2, "c": 3, "d": 4}])


def test_the_default_extra_column_limit_is_50():
    header = ["name", "company", *(f"x{i}" for i in range(51))]
    with pytest.raises(ProspectInputError, match="more than 50 columns"):
        parse_csv(csv_bytes(header, ["Ann", "Acme", *["v"] * 51]))
    (prospect,) = parse_csv(csv_bytes(header[:-1], ["Ann", "Acme", *["v"] * 50]))
    assert len(prospect.extra) == 50


def test_only_non_empty_extra_values_are_kept():
    (prospect,) = parse_csv(
        csv_bytes(["name", "company", "a", "b", "c"], ["Ann", "Acme", "", " ", "x"])
    )
    assert prospect.extra == {"c": "x"}


def test_extra_values_are_bounded_each_and_per_row():
    long_value = "v" * (MAX_EXTRA_VALUE_LENGTH + 1)
    with pytest.raises(ProspectInputError, match="column 'a': the value is 1,001 characters"):
        parse_csv(csv_bytes(["name", "company", "a"], ["Ann", "Acme", long_value]))
    columns = [f"c{i}" for i in range(MAX_EXTRA_LENGTH // MAX_EXTRA_VALUE_LENGTH + 1)]
    values = ["v" * (MAX_EXTRA_VALUE_LENGTH - 5)] * len(columns)
    with pytest.raises(ProspectInputError, match="more than 10,000 characters in this row"):
        parse_csv(csv_bytes(["name", "company", *columns], ["Ann", "Acme", *values]))


def test_criteria_lists_are_bounded_in_items_and_size():
    with pytest.raises(CriteriaError) as excinfo:
        Criteria().with_overrides({"title_keywords": ["k"] * (MAX_LIST_ITEMS + 1)})
    assert "at most 500 are allowed" in excinfo.value.errors["title_keywords"]
    with pytest.raises(CriteriaError) as excinfo:
        Criteria().with_overrides({"industries": [f"industry {i:04} " * 4 for i in range(200)]})
    assert "more than 10,000 characters long together" in excinfo.value.errors["industries"]


@pytest.mark.parametrize(
    ("phrases", "text", "found"),
    [
        (("VP",), "VP Sales", "VP"),
        (("VP",), "MVP of the year", None),
        (("VP", "Vice President"), "Senior vice president, sales", "Vice President"),
        (("Co-Founder", "Founder"), "co-founder & CEO", "Co-Founder"),
        (("Head",), "Head-of-growth", "Head"),
        (("C++",), "Lead C++ engineer", "C++"),
        (("Director",), "Directors' club", None),
        (("ß",), "STRASSE ss", "ß"),
    ],
)
def test_word_matcher_finds_whole_words_ignoring_case(phrases, text, found):
    assert WordMatcher(phrases).search(text) == found


# --- per-user limit of active runs ----------------------------------------------------------------


@override_settings(QUALIFIER_MAX_ACTIVE_RUNS_PER_USER=2, TASKS=DUMMY)
def test_the_api_answers_429_with_the_reason_beyond_the_active_runs_limit(api, alice, make_run):
    body = json.dumps({"prospects": [PROSPECT]})
    assert post(api, f"{API}/runs", body).status_code == 201
    assert post(api, f"{API}/runs", body).status_code == 201
    response = post(api, f"{API}/runs", body)
    assert response.status_code == 429
    assert response.json()["error"] == (
        "You have 2 runs pending or processing; at most 2 may be active at once. Start this "
        "run when one of them has finished."
    )
    assert QualificationRun.objects.count() == 2
    failed = make_run(RunStatus.FAILED, user=alice)
    Prospect.objects.create(run=failed, position=2, number=1, name="Ann", company="Acme")
    assert post(api, f"{API}/runs/{failed.pk}/continue", "").status_code == 429


@override_settings(QUALIFIER_MAX_ACTIVE_RUNS_PER_USER=1, TASKS=DUMMY)
def test_the_page_shows_the_active_runs_limit_on_the_form(client, alice, bob, make_run):
    make_run(RunStatus.PENDING, user=alice)
    make_run(RunStatus.PROCESSING, user=bob)  # another user's run does not count
    client.force_login(alice)
    upload = SimpleUploadedFile("p.csv", b"name,company\nAnn,Acme\n", content_type="text/csv")
    response = client.post("/runs/new/", {"prospects_file": upload})
    assert response.status_code == 200
    assert "You have 1 run pending or processing; at most 1 may be active" in (
        response.content.decode()
    )
    assert QualificationRun.objects.filter(user=alice).count() == 1


def test_the_active_runs_limit_defaults_to_5():
    from qualifier.conf import conf

    assert conf.QUALIFIER_MAX_ACTIVE_RUNS_PER_USER == 5
    assert conf.QUALIFIER_MAX_EXTRA_COLUMNS == 50


# --- upload limit while streaming ------------------------------------------------------------------


@override_settings(QUALIFIER_MAX_UPLOAD_BYTES=1000)
def test_an_upload_declared_over_the_limit_is_refused_before_its_file_is_read(
    client, alice, monkeypatch
):
    stored = []
    original = "django.core.files.uploadhandler.MemoryFileUploadHandler.receive_data_chunk"
    monkeypatch.setattr(original, lambda self, data, start: stored.append(len(data)))
    client.force_login(alice)
    big = SimpleUploadedFile("p.csv", b"name,company\n" + b"x,y\n" * 50_000)
    response = client.post("/runs/new/", {"prospects_file": big})
    html = response.content.decode()
    assert re.search(
        r"The upload is 2\d\d,\d\d\d bytes \(19\d\.\d KiB\); the limit for the file", html
    )
    assert "1,000 bytes" in html
    assert stored == []  # no byte of the file reached the handlers that store it
    assert not QualificationRun.objects.exists()


def test_a_form_encoded_api_post_over_the_memory_limit_is_json_413(api):
    response = api.post(
        f"{API}/runs",
        {"prospects": "x" * (3 * 1024 * 1024)},
        headers={"X-CSRFToken": CSRF_SECRET},
    )
    assert response.status_code == 413
    assert "Send JSON" in response.json()["error"]


# --- permissions -----------------------------------------------------------------------------------


def staff_client(*codenames: str) -> Client:
    user = get_user_model().objects.create_user("_".join(codenames) or "plain", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


def test_a_viewer_may_look_but_not_recover_or_force(make_run):
    run = make_run(created_minutes_ago=60)
    viewer = staff_client("view_qualificationrun")
    assert viewer.get(RECOVERY).status_code == 200
    for body in ({}, {"run_ids": [run.pk], "force": True}):
        response = post(viewer, RECOVERY, json.dumps(body))
        assert response.status_code == 403
        assert "'change qualification run' permission" in response.json()["error"]
    run.refresh_from_db()
    assert run.status == RunStatus.PROCESSING
    assert not RecoveryEvent.objects.exists()


def test_staff_without_run_permissions_may_not_even_look():
    assert staff_client().get(RECOVERY).status_code == 403


def test_the_change_permission_may_force(make_run):
    run = make_run(created_minutes_ago=1, heartbeat_minutes_ago=0)
    response = post(
        staff_client("change_qualificationrun"),
        RECOVERY,
        json.dumps({"run_ids": [run.pk], "force": True}),
    )
    assert response.status_code == 200
    assert response.json()["recovered_count"] == 1


# --- CSV formulas -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell", ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
)
def test_formula_cells_are_neutralised(cell):
    assert neutralise(cell) == "'" + cell


@pytest.mark.parametrize("cell", ["Ann", "", "a=b", 42, -5, None])
def test_other_cells_are_left_alone(cell):
    assert neutralise(cell) == cell


@override_settings(TASKS=DUMMY)
def test_the_csv_download_neutralises_formulas(client, alice, make_run):
    from qualifier.models import Outcome, ProspectResult

    run = make_run(RunStatus.COMPLETED, user=alice)
    prospect = Prospect.objects.create(
        run=run, position=2, number=1, name='=HYPERLINK("http://evil")', company="@SUM(1)"
    )
    ProspectResult.objects.create(
        run=run, prospect=prospect, outcome=Outcome.ERRORED, error="-boom"
    )
    client.force_login(alice)
    body = b"".join(client.get(f"/runs/{run.pk}/results.csv").streaming_content).decode()
    assert "'=HYPERLINK" in body
    assert "'@SUM(1)" in body
    assert "'-boom" in body


# --- throttling -------------------------------------------------------------------------------------


@override_settings(AUTH_FAILURE_LIMIT=3, AUTH_FAILURE_WINDOW_SECONDS=60)
@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_failed_sign_ins_are_throttled_with_retry_after_and_logged(client, alice, url, caplog):
    alice.set_password("right-password")
    alice.is_staff = True  # so the admin's sign-in takes her too
    alice.save()
    caplog.set_level(logging.INFO, logger="common.throttle")
    for _ in range(3):
        response = client.post(url, {"username": "alice", "password": "wrong"})
        assert response.status_code == 200
    response = client.post(url, {"username": "alice", "password": "right-password"})
    assert response.status_code == 429
    assert 0 < int(response["Retry-After"]) <= 60
    assert "Too many failed sign-ins" in response.content.decode()
    assert "Refused sign-in from 127.0.0.1: 3 failed" in caplog.text
    assert "Failed sign-in from 127.0.0.1 (1 in this window)" in caplog.text
    # Another client is not affected.
    other = client.post(
        url, {"username": "alice", "password": "right-password"}, REMOTE_ADDR="10.0.0.9"
    )
    assert other.status_code == 302


@override_settings(AUTH_FAILURE_LIMIT=3, RECOVERY_API_TOKEN=TOKEN)
def test_failed_bearer_tokens_are_throttled_even_the_right_one_then(client, caplog):
    caplog.set_level(logging.INFO, logger="common.throttle")
    for _ in range(3):
        assert client.get(RECOVERY, headers={"Authorization": "Bearer wrong"}).status_code == 401
    response = client.get(RECOVERY, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    assert "Too many failed API tokens" in response.json()["error"]
    assert "Refused API token from 127.0.0.1" in caplog.text


@override_settings(
    AUTH_FAILURE_LIMIT=2,
    AUTH_CLIENT_IP_HEADER="X-Forwarded-For",
    AUTH_TRUSTED_PROXIES=(ip_network("127.0.0.1/32"),),
)
def test_behind_a_proxy_clients_are_told_apart_by_the_forwarded_address(client):
    def attempt(address: str) -> int:
        headers = {"Authorization": "Bearer wrong", "X-Forwarded-For": f"6.6.6.6, {address}"}
        return client.get(RECOVERY, headers=headers).status_code

    assert [attempt("1.1.1.1") for _ in range(3)] == [401, 401, 429]
    assert attempt("2.2.2.2") == 401


@pytest.mark.parametrize(("token", "ok"), [("", True), ("x" * 31, False), ("x" * 32, True)])
def test_a_recovery_api_token_shorter_than_32_characters_is_a_check_error(token, ok):
    with override_settings(RECOVERY_API_TOKEN=token):
        ids = [error.id for error in check_common_settings()]
    assert ids == ([] if ok else ["recovery.E011"])


# --- errors are logged, and say so -----------------------------------------------------------------


def test_a_500_is_logged_with_its_traceback_and_the_page_says_so(alice, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr("qualifier.views.counts_for", broken)
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.get("/")
    assert response.status_code == 500
    assert "written to the server" in response.content.decode()
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert record.levelno == logging.ERROR
    assert record.exc_info[1].args == ("database on fire",)


def test_the_logging_configuration_sends_request_errors_to_a_handler():
    from django.conf import settings

    assert settings.LOGGING["root"]["handlers"] == ["errors"]
    logger = logging.getLogger("django.request")
    handlers = [h for h in logging.getLogger().handlers if h.level <= logging.ERROR]
    assert logger.propagate and logging.getLogger("django").propagate
    assert handlers


def request_with_database_url():
    password = "hun" + "ter2"  # spelled apart: the page shows this test's source lines too
    return RequestFactory().get("/", DATABASE_URL=f"postgres://app:{password}@db:5432/q")


def test_the_debug_error_page_hides_the_database_password():
    request = request_with_database_url()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        html = ExceptionReporter(request, *sys.exc_info()).get_traceback_html()
    assert "postgres://app:********@db:5432/q" in html
    assert "hun" + "ter2" not in html


# --- production settings ------------------------------------------------------------------------------


def test_pages_with_prospect_data_are_private_and_not_stored(client, alice, make_run):
    run = make_run(RunStatus.COMPLETED, user=alice)
    client.force_login(alice)
    for url in (f"/runs/{run.pk}/", f"/runs/{run.pk}/results.csv", f"{API}/runs/{run.pk}/results"):
        cache_control = client.get(url)["Cache-Control"]
        assert "private" in cache_control and "no-store" in cache_control, url


def test_pages_carry_a_content_security_policy(client, alice):
    client.force_login(alice)
    policy = client.get("/")["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "q8Jz1v0-Xr5Lm2Tn9Pw4Ys7Kb3Hd6Gf1Ca8Ve5Ru2Io0Up9Ax4Zl7Qs3Wm6En1Ty5Ob8",
    "ALLOWED_HOSTS": "qualifier.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://qualifier.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SESSION_COOKIE_SECURE": "true",
    "CSRF_COOKIE_SECURE": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto",
    "AUTH_CLIENT_IP_HEADER": "X-Forwarded-For",
    "AUTH_TRUSTED_PROXIES": "127.0.0.1,::1",
    "RECOVERY_API_TOKEN": "",
}


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "SECURE_", "SESSION_", "CSRF_"))
    }
    environment.update({"QUALIFIER_IGNORE_DOTENV": "1", "DATABASE_URL": "sqlite:///:memory:"})
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_deploy_has_no_warnings_with_the_documented_production_settings():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CONN_MAX_AGE", "abc", "Setting CONN_MAX_AGE is invalid: 'abc' is not a whole number"),
        (
            "DATABASE_URL",
            "postgres://app:hunter2@db:port/q",
            "Setting DATABASE_URL is invalid: 'postgres://app:********@db:port/q' is not a URL",
        ),
        ("TIME_ZONE", "Mars/Olympus", "Setting TIME_ZONE is invalid: 'Mars/Olympus' is not"),
        ("SECURE_HSTS_SECONDS", "\u0661", "Setting SECURE_HSTS_SECONDS is invalid: '\u0661' is"),
        ("DEBUG", "maybe", "Setting DEBUG is invalid: 'maybe' is not a boolean"),
        # The apps' settings too: each typed once, in settings.py.
        ("RECOVERY_POLICY", "sometimes", "Setting RECOVERY_POLICY is invalid: 'sometimes' is not"),
        (
            "RECOVERY_HEARTBEAT_SECONDS",
            "0",
            "Setting RECOVERY_HEARTBEAT_SECONDS is invalid: '0' is not a positive integer",
        ),
        (
            "METRICS_ALLOWED_NETWORKS",
            "10.0.0.0/33",
            "Setting METRICS_ALLOWED_NETWORKS is invalid: '10.0.0.0/33' is not a network",
        ),
        ("QUALIFIER_MIN_SCORE", "200", "Setting QUALIFIER_MIN_SCORE is invalid: '200' is not"),
        ("QUALIFIER_SCORER", "scorer", "Setting QUALIFIER_SCORER is invalid: 'scorer' is not"),
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_its_value(name, value, message):
    result = manage("check", **{**PRODUCTION, name: value})
    assert result.returncode != 0
    assert result.stderr.strip().startswith(f"Error: {message}"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.stderr


def test_every_check_passes_with_the_defaults():
    assert [
        message.id for message in run_checks(databases=[]) if message.id.startswith("qualifier")
    ] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "\u0665"], "is not a whole number of minutes"),
        (["--timeout", "9" * 5000], "is not a whole number of minutes"),
        (["--timeout", "99999999999"], "at most 5,256,000 (ten years)"),
        (["--run", "\u00b2"], "is not a run id"),
        (["--run", str(2**64)], "is not a run id"),
    ],
)
def test_command_options_go_through_the_same_readers(args, message, make_run):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    make_run(created_minutes_ago=60)
    with pytest.raises(CommandError, match=re.escape(message)):
        call_command("recover_stuck_runs", *args)
    assert not RecoveryEvent.objects.exists()


@pytest.mark.parametrize(
    ("name", "value", "check_id"),
    [
        ("QUALIFIER_MAX_EXTRA_COLUMNS", "lots", "qualifier.E006"),
        ("QUALIFIER_MAX_EXTRA_COLUMNS", "1001", "qualifier.E006"),
        ("QUALIFIER_MAX_ACTIVE_RUNS_PER_USER", "0", "qualifier.E007"),
        ("QUALIFIER_MAX_ACTIVE_RUNS_PER_USER", "\u0665", "qualifier.E007"),
        ("QUALIFIER_MAX_PROSPECTS", "9" * 40, "qualifier.E001"),
        ("AUTH_FAILURE_LIMIT", "0", "recovery.E012"),
        ("AUTH_FAILURE_WINDOW_SECONDS", "forever", "recovery.E013"),
        ("STUCK_RUN_TIMEOUT_MINUTES", "5256001", "recovery.E001"),
        ("QUALIFIER_MAX_UPLOAD_BYTES", "0", "qualifier.E008"),
        ("QUALIFIER_MAX_UPLOAD_BYTES", str(1024**3 + 1), "qualifier.E008"),
        ("AUTH_CLIENT_IP_HEADER", 5, "recovery.E014"),
    ],
)
def test_new_and_bounded_settings_are_checked_by_name(name, value, check_id):
    with override_settings(**{name: value}):
        errors = [message for message in run_checks(databases=[]) if message.id == check_id]
    assert len(errors) == 1
    assert f"Setting {name} is invalid" in errors[0].msg
    assert errors[0].hint


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(QUALIFIER_MAX_ACTIVE_RUNS_PER_USER=1, TASKS=DUMMY)
def test_two_requests_racing_for_the_last_place_start_one_run(monkeypatch):
    """Each request counts, then waits for the other to have counted too: without the lock on
    the user's row both would see 0 active runs and both would start one."""
    import threading

    from django.db import connections

    from qualifier import runs
    from qualifier.prospects import ProspectData

    user = get_user_model().objects.create_user("racer")
    barrier = threading.Barrier(2)
    check = runs.check_active_runs

    def check_then_wait(who):
        check(who)
        # A broken barrier means the other request is waiting for our lock, as it should.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=2)

    monkeypatch.setattr(runs, "check_active_runs", check_then_wait)
    outcomes = []

    def request():
        try:
            runs.create_run(user=user, prospects=[ProspectData("Ann", "Acme", position=2)])
            outcomes.append("created")
        except runs.TooManyActiveRuns:
            outcomes.append("refused")
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["created", "refused"]
    assert QualificationRun.objects.filter(user=user).count() == 1
