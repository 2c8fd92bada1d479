"""The recovery API: GET shows, POST recovers; staff only, by session (with CSRF) or token."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from recovery.models import QualificationRun, RecoveryEvent, RecoverySource, RunStatus
from tests.helpers import CSRF_SECRET

URL = "/api/qualify/recovery"
TOKEN = "s3cret-recovery-token-for-the-test-suite"

pytestmark = pytest.mark.django_db


def staff_user(username: str, *codenames: str):
    user = get_user_model().objects.create_user(username, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def staff(db):
    """An operator: staff with the admin's change permission on runs."""
    return staff_user("ops", "change_qualificationrun")


@pytest.fixture
def member(db):
    return get_user_model().objects.create_user("member")


@pytest.fixture
def staff_client(staff) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


def post_json(client: Client, body: object = None):
    """A session POST with the CSRF header that goes with the staff client's cookie."""
    data = "" if body is None else json.dumps(body)
    return client.post(
        URL, data, content_type="application/json", headers={"X-CSRFToken": CSRF_SECRET}
    )


@pytest.fixture
def stuck_and_live(make_run):
    stuck = make_run(created_minutes_ago=30, started_minutes_ago=30, heartbeat_minutes_ago=20)
    live = make_run(created_minutes_ago=30, started_minutes_ago=30, heartbeat_minutes_ago=0)
    return stuck, live


# --- authentication and permissions ----------------------------------------------------------


def test_anonymous_caller_gets_401_json(client):
    response = client.get(URL)
    assert response.status_code == 401
    assert "sign in" in response.json()["error"].lower()


@override_settings(RECOVERY_API_TOKEN=TOKEN)
def test_401_names_the_bearer_scheme_when_a_token_is_configured(client):
    response = client.get(URL)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_anonymous_post_gets_401_not_a_csrf_error(stuck_and_live):
    response = Client(enforce_csrf_checks=True).post(URL)
    assert response.status_code == 401
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0


def test_non_staff_user_gets_403(client, member, stuck_and_live):
    client.force_login(member)
    assert client.get(URL).status_code == 403
    response = client.post(URL)
    assert response.status_code == 403
    assert "staff" in response.json()["error"]
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0


def test_session_post_without_csrf_token_is_refused_with_json(staff, stuck_and_live):
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    response = client.post(URL)
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0


@override_settings(RECOVERY_API_TOKEN=TOKEN)
def test_valid_token_recovers_without_csrf_and_without_actor(stuck_and_live):
    stuck, _live = stuck_and_live
    client = Client(enforce_csrf_checks=True)
    response = client.post(URL, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.content
    assert [run["id"] for run in response.json()["recovered"]] == [stuck.pk]
    event = RecoveryEvent.objects.get(run=stuck)
    assert event.source == RecoverySource.API
    assert event.actor is None


@override_settings(RECOVERY_API_TOKEN=TOKEN)
@pytest.mark.parametrize(
    "given",
    [TOKEN[:-1], TOKEN[:-1] + "X", TOKEN.upper(), f"{TOKEN[:-1]}\u00e9", "\u2603" * len(TOKEN)],
    ids=["prefix", "last-character", "other-case", "non-ascii-end", "all-non-ascii"],
)
def test_only_the_exact_token_is_accepted_and_near_misses_are_401_not_errors(
    client, given, stuck_and_live
):
    """Near misses, and tokens a str comparison of mixed text would crash on, are refused
    cleanly; the exact token, with surrounding spaces, is accepted."""
    refused = client.post(URL, headers={"Authorization": f"Bearer {given}"})
    accepted = client.get(URL, headers={"Authorization": f"Bearer  {TOKEN} "})

    assert (refused.status_code, refused.json()["error"]) == (401, "Invalid API token.")
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0
    assert accepted.status_code == 200


@override_settings(RECOVERY_API_TOKEN=TOKEN)
@pytest.mark.parametrize(
    "header",
    [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN],
    ids=["wrong-token", "empty-token", "other-scheme", "no-scheme"],
)
def test_bad_authorization_header_is_401_even_with_a_staff_session(staff, header, stuck_and_live):
    client = Client()
    client.force_login(staff)
    response = client.post(URL, headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json()["error"]
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0


@override_settings(RECOVERY_API_TOKEN="")
def test_without_a_configured_operator_token_a_wrong_token_is_simply_invalid(client):
    """Personal tokens work whatever RECOVERY_API_TOKEN says, so a wrong token is never told
    that token authentication is off."""
    response = client.get(URL, headers={"Authorization": "Bearer "})
    assert response.status_code == 401
    response = client.get(URL, headers={"Authorization": "Bearer anything"})
    assert (response.status_code, response.json()["error"]) == (401, "Invalid API token.")
    assert response["WWW-Authenticate"] == 'Bearer realm="qualifier", error="invalid_token"'


# --- GET: look, change nothing -------------------------------------------------------------


def test_get_lists_active_and_stuck_runs_and_changes_nothing(staff_client, stuck_and_live):
    stuck, live = stuck_and_live
    response = staff_client.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["dry_run"] is True
    assert body["source"] == "api"
    assert body["timeout_minutes"] == 5
    assert body["active_count"] == 2
    assert body["stuck_count"] == 1
    assert [run["id"] for run in body["stuck"]] == [stuck.pk]
    assert {run["id"] for run in body["active"]} == {stuck.pk, live.pk}
    assert body["recovered"] == []
    assert QualificationRun.objects.filter(status=RunStatus.PROCESSING).count() == 2
    assert not RecoveryEvent.objects.exists()


def test_get_has_the_same_keys_as_the_commands_json(staff_client, stuck_and_live):
    from recovery.sweep import recover_stuck_runs

    expected = recover_stuck_runs(source="api", dry_run=True, log=False).as_dict()
    body = staff_client.get(URL).json()
    assert set(body) == set(expected)
    assert body["active"][0].keys() == expected["active"][0].keys()


def test_get_takes_a_timeout(staff_client, stuck_and_live):
    body = staff_client.get(URL, {"timeout_minutes": "60"}).json()
    assert body["timeout_minutes"] == 60
    assert body["stuck_count"] == 0


@pytest.mark.parametrize("value", ["abc", "0", "-3", "1.5"])
def test_get_with_a_bad_timeout_is_400(staff_client, value):
    response = staff_client.get(URL, {"timeout_minutes": value})
    assert response.status_code == 400
    assert "timeout_minutes" in response.json()["fields"]


# --- POST: recover now ---------------------------------------------------------------------


def test_post_recovers_stuck_runs_with_the_staff_user_as_actor(staff, staff_client, stuck_and_live):
    stuck, live = stuck_and_live
    response = staff_client.post(URL, headers={"X-CSRFToken": CSRF_SECRET})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["dry_run"] is False
    assert body["recovered_count"] == 1
    recovered = body["recovered"][0]
    assert recovered["id"] == stuck.pk
    assert recovered["previous_status"] == "PROCESSING"
    assert recovered["new_status"] == "FAILED"
    assert "recovered through the recovery API by ops" in recovered["reason"]
    stuck.refresh_from_db()
    live.refresh_from_db()
    assert stuck.status == RunStatus.FAILED
    assert live.status == RunStatus.PROCESSING
    event = RecoveryEvent.objects.get()
    assert (event.run_id, event.source, event.actor) == (stuck.pk, RecoverySource.API, staff)


def test_post_twice_recovers_once(staff_client, stuck_and_live):
    first = post_json(staff_client)
    second = staff_client.post(URL, headers={"X-CSRFToken": CSRF_SECRET})
    assert first.json()["recovered_count"] == 1
    assert second.json()["recovered_count"] == 0
    assert RecoveryEvent.objects.count() == 1


def test_post_with_timeout_run_ids_and_force(staff_client, stuck_and_live):
    stuck, live = stuck_and_live
    response = post_json(
        staff_client,
        {"run_ids": [live.pk], "force": True, "timeout_minutes": 10},
    )
    assert response.status_code == 200, response.content
    assert [run["id"] for run in response.json()["recovered"]] == [live.pk]
    assert "Stopped by an operator" in response.json()["recovered"][0]["reason"]
    stuck.refresh_from_db()
    assert stuck.status == RunStatus.PROCESSING


def test_post_with_a_longer_timeout_leaves_younger_runs(staff_client, stuck_and_live):
    response = post_json(staff_client, {"timeout_minutes": 60})
    assert response.json()["recovered_count"] == 0
    assert not RecoveryEvent.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timeout_minutes": 0}, "timeout_minutes"),
        ({"timeout_minutes": "5"}, "timeout_minutes"),
        ({"timeout_minutes": True}, "timeout_minutes"),
        ({"run_ids": "1"}, "run_ids"),
        ({"run_ids": []}, "run_ids"),
        ({"run_ids": [1, "2"]}, "run_ids"),
        ({"force": "yes", "run_ids": [1]}, "force"),
        ({"force": True}, "run_ids"),
        ({"everything": True}, "everything"),
    ],
)
def test_post_with_bad_options_is_400_naming_the_field(staff_client, stuck_and_live, body, field):
    response = post_json(staff_client, body)
    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0


def test_post_naming_a_run_that_does_not_exist_is_404_naming_the_field(
    staff_client, stuck_and_live
):
    """Like a missing run on the user API (found by Schemathesis: it was a 400 without the
    field, for a request the document allows)."""
    response = post_json(staff_client, {"run_ids": [999999]})
    assert response.status_code == 404
    body = response.json()
    assert body["code"] == "run_not_found"
    assert body["fields"] == {"run_ids": "No qualification run with id 999999."}
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0


@pytest.mark.parametrize("raw", ['{"timeout_minutes": ', "[1, 2]", "null"])
def test_post_with_malformed_or_non_object_json_is_400(staff_client, stuck_and_live, raw):
    response = staff_client.post(
        URL, raw, content_type="application/json", headers={"X-CSRFToken": CSRF_SECRET}
    )
    assert response.status_code == 400
    assert response.json()["error"]
    assert QualificationRun.objects.filter(status=RunStatus.FAILED).count() == 0


def test_post_with_an_oversized_body_is_413(staff_client, stuck_and_live):
    body = json.dumps({"run_ids": [1] * 600_000})
    response = staff_client.post(
        URL, body, content_type="application/json", headers={"X-CSRFToken": CSRF_SECRET}
    )
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_are_405_with_allow_header(staff_client, method):
    response = getattr(staff_client, method)(URL, headers={"X-CSRFToken": CSRF_SECRET})
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD, POST"
    assert "not allowed" in response.json()["error"]


def test_unknown_api_urls_answer_json_404(client):
    response = client.post("/api/qualify/nothing-here")
    assert response.status_code == 404
    assert response.json() == {
        "error": "There is no API endpoint at /api/qualify/nothing-here.",
        "code": "no_endpoint",
        "fields": {},
    }
