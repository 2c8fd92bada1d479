"""The qualification JSON API under /api/qualify/: every endpoint, its permissions and errors."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from qualifier.models import Outcome, Prospect, ProspectResult
from recovery.models import QualificationRun, RunStatus
from tests.helpers import CSRF_SECRET, DUMMY, IMMEDIATE

pytestmark = pytest.mark.django_db

API = "/api/qualify"
PROSPECTS = [
    {
        "name": "Ada Lovelace",
        "company": "Analytical Engines",
        "website": "https://analyticalengines.io",
        "title": "CTO",
        "industry": "Software",
        "employees": 250,
        "country": "United Kingdom",
        "linkedin": "ada-l",
    },
    {"name": "Linus Pauling", "company": "Helix Bio", "industry": "Biotech", "employees": 40},
]


@pytest.fixture
def api(alice) -> Client:
    """Alice's session, with CSRF enforced as for a real browser or script."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


def post(client: Client, url: str, body: object = None, *, raw: str | None = None):
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    return client.post(
        url, data, content_type="application/json", headers={"X-CSRFToken": CSRF_SECRET}
    )


def add_results(run: QualificationRun, outcomes: list[tuple[str, int | None]]) -> None:
    prospects = Prospect.objects.bulk_create(
        Prospect(
            run=run,
            position=index + 1,
            number=index + 1,
            name=f"Person {index}",
            company=f"Co {index}",
        )
        for index in range(len(outcomes))
    )
    ProspectResult.objects.bulk_create(
        ProspectResult(run=run, prospect=prospect, outcome=outcome, score=score, reasons=["r"])
        for prospect, (outcome, score) in zip(prospects, outcomes, strict=True)
    )


# --- authentication, methods, unknown URLs ---------------------------------------------------

ENDPOINTS = [
    ("get", "/runs"),
    ("post", "/runs"),
    ("get", "/runs/active"),
    ("get", "/runs/1"),
    ("get", "/runs/1/results"),
    ("post", "/runs/1/continue"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_endpoint_answers_401_json_without_a_session(method, path):
    response = getattr(Client(enforce_csrf_checks=True), method)(API + path)
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert "sign in" in response.json()["error"].lower()


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("delete", "/runs", "GET, HEAD, POST"),
        ("put", "/runs/1", "GET, HEAD"),
        ("post", "/runs/active", "GET, HEAD"),
        ("patch", "/runs/1/results", "GET, HEAD"),
        ("get", "/runs/1/continue", "POST"),
    ],
)
def test_a_wrong_method_is_405_json_with_allow_header(api, method, path, allow):
    response = getattr(api, method)(API + path, headers={"X-CSRFToken": CSRF_SECRET})
    assert response.status_code == 405
    assert response["Allow"] == allow
    assert "not allowed" in response.json()["error"]


def test_session_post_without_csrf_token_is_403_json(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(
        f"{API}/runs", json.dumps({"prospects": PROSPECTS}), content_type="application/json"
    )
    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]
    assert not QualificationRun.objects.exists()


# --- POST /runs ------------------------------------------------------------------------------


@override_settings(TASKS=DUMMY)
def test_create_run_answers_201_with_the_pending_run(api, alice):
    response = post(api, f"{API}/runs", {"prospects": PROSPECTS, "criteria": {"min_score": 70}})
    assert response.status_code == 201, response.content
    body = response.json()
    run = QualificationRun.objects.get()
    assert response["Location"] == f"/api/qualify/runs/{run.pk}"
    assert body["id"] == run.pk
    assert body["status"] == "PENDING"
    assert (body["total"], body["completed"], body["percent"]) == (2, 0, 0)
    assert body["counts"] == {"qualified": 0, "not_qualified": 0, "errored": 0}
    assert body["criteria"]["min_score"] == 70
    assert body["criteria"]["industries"] == [
        "Software",
        "SaaS",
        "Information Technology",
        "Fintech",
    ]
    assert body["url"] == f"/api/qualify/runs/{run.pk}"
    assert body["results_url"] == f"/api/qualify/runs/{run.pk}/results"
    assert body["page_url"] == f"/runs/{run.pk}/"
    assert run.user == alice
    assert Prospect.objects.get(run=run, position=1).extra == {"linkedin": "ada-l"}


def test_create_run_runs_to_completion_with_the_immediate_backend(
    api, django_capture_on_commit_callbacks
):
    with override_settings(TASKS=IMMEDIATE), django_capture_on_commit_callbacks(execute=True):
        created = post(api, f"{API}/runs", {"prospects": PROSPECTS})
    run_url = created.json()["url"]
    body = api.get(run_url).json()
    assert body["status"] == "COMPLETED"
    assert body["percent"] == 100
    assert body["counts"] == {"qualified": 1, "not_qualified": 1, "errored": 0}
    assert body["duration_seconds"] is not None


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"prospects"}),
        ({"prospects": []}, {"prospects"}),
        ({"prospects": "Ada"}, {"prospects"}),
        ({"prospects": [{"name": "Ada"}]}, {"prospects[0].company"}),
        (
            {"prospects": [{"name": "Ada", "company": "E", "employees": "lots"}]},
            {"prospects[0].employees"},
        ),
        ({"prospects": PROSPECTS, "criteria": []}, {"criteria"}),
        (
            {"prospects": PROSPECTS, "criteria": {"min_score": 101, "colour": "blue"}},
            {"criteria.min_score", "criteria.colour"},
        ),
        (
            {"prospects": [{"name": "Ada"}], "criteria": {"min_score": -1}},
            {"prospects[0].company", "criteria.min_score"},
        ),
        ({"prospects": PROSPECTS, "extra": 1}, {"extra"}),
    ],
    ids=[
        "missing",
        "empty",
        "not-a-list",
        "missing-company",
        "bad-employees",
        "criteria-not-object",
        "bad-criteria",
        "both",
        "unknown-field",
    ],
)
def test_create_run_with_bad_input_is_400_with_field_errors(api, body, fields):
    response = post(api, f"{API}/runs", body)
    assert response.status_code == 400
    answer = response.json()
    assert set(answer["fields"]) == fields
    assert answer["error"]
    assert not QualificationRun.objects.exists()


def test_create_run_error_names_the_item_and_field(api):
    bad = [PROSPECTS[0], {"name": "Grace", "company": "Cobol", "employees": "lots"}]
    response = post(api, f"{API}/runs", {"prospects": bad})
    assert response.json()["fields"] == {
        "prospects[1].employees": "Item 2, field 'employees': 'lots' is not a whole number."
    }


def test_create_run_reports_every_bad_field_and_every_bad_prospect(api):
    bad = [
        {"name": "", "company": "", "employees": "lots"},
        PROSPECTS[0],
        "Grace",
        {"name": "Alan", "company": "Bletchley", "email": True},
    ]
    response = post(
        api,
        f"{API}/runs",
        {"prospects": bad, "criteria": {"min_score": 101}, "colour": "blue"},
    )
    assert response.status_code == 400
    answer = response.json()
    assert answer["code"] == "invalid"
    assert answer["fields"] == {
        "colour": "Unknown field; the known fields are prospects, criteria.",
        "prospects[0].name": "Item 1, field 'name': a value is required here.",
        "prospects[0].company": "Item 1, field 'company': a value is required here.",
        "prospects[0].employees": "Item 1, field 'employees': 'lots' is not a whole number.",
        "prospects[2]": "Item 3: expected an object with the prospect's fields, got a string.",
        "prospects[3].email": "Item 4, field 'email': expected text or a number, got true or false.",
        "criteria.min_score": answer["fields"]["criteria.min_score"],
    }
    for name in answer["fields"]:
        assert f"{name}:" in answer["error"]
    assert not QualificationRun.objects.exists()


def test_create_run_reports_a_bounded_number_of_bad_prospects(api):
    from common.inputs import MAX_LISTED
    from qualifier.prospects import MAX_REPORTED_PROBLEMS

    bad = [{"name": "Ada", "company": ""}] * (MAX_REPORTED_PROBLEMS + 20)
    answer = post(api, f"{API}/runs", {"prospects": bad}).json()
    # At most MAX_LISTED fields: the note that there are more, then the first problems.
    assert len(answer["fields"]) == MAX_LISTED
    assert next(iter(answer["fields"])) == "prospects"
    assert answer["fields"]["prospects"] == "There are more problems than the answer lists."
    item_errors = [name for name in answer["fields"] if name.startswith("prospects[")]
    assert item_errors == [f"prospects[{index}].company" for index in range(MAX_LISTED - 1)]
    assert answer["error"].endswith(" And 1 more field, not listed.")


@pytest.mark.parametrize("raw", ['{"prospects": [', "not json", '"a string"', "[]", "\xff"])
def test_create_run_with_malformed_json_or_a_non_object_is_400(api, raw):
    response = post(api, f"{API}/runs", raw=raw)
    assert response.status_code == 400
    assert response.json()["error"]
    assert not QualificationRun.objects.exists()


def test_create_run_with_an_empty_body_is_400(api):
    response = post(api, f"{API}/runs")
    assert response.status_code == 400
    assert "empty" in response.json()["error"]


@override_settings(QUALIFIER_MAX_PROSPECTS=3)
def test_create_run_with_too_many_prospects_is_413(api):
    response = post(api, f"{API}/runs", {"prospects": PROSPECTS * 2})
    assert response.status_code == 413
    assert "at most 3" in response.json()["error"]
    assert not QualificationRun.objects.exists()


@override_settings(QUALIFIER_MAX_UPLOAD_BYTES=500)
def test_create_run_with_a_body_over_the_byte_limit_is_413(api):
    response = post(api, f"{API}/runs", {"prospects": PROSPECTS * 5})
    assert response.status_code == 413
    assert "limit is 500 bytes" in response.json()["error"]
    assert not QualificationRun.objects.exists()


# --- GET /runs -------------------------------------------------------------------------------


def test_list_runs_is_the_users_runs_newest_first_paginated(api, alice, bob, make_run):
    mine = [make_run(RunStatus.COMPLETED, user=alice, created_minutes_ago=i) for i in range(23)]
    make_run(RunStatus.COMPLETED, user=bob)
    first = api.get(f"{API}/runs").json()
    assert first["count"] == 23
    assert [run["id"] for run in first["results"]] == [run.pk for run in mine[:20]]
    assert first["previous"] is None
    assert first["next"] == "/api/qualify/runs?page=2"
    second = api.get(first["next"]).json()
    assert [run["id"] for run in second["results"]] == [run.pk for run in mine[20:]]
    assert second["next"] is None
    assert second["previous"] == "/api/qualify/runs?page=1"


def test_list_runs_filters_by_status_and_keeps_the_filter_in_links(api, alice, make_run):
    for _ in range(21):
        make_run(RunStatus.FAILED, user=alice)
    make_run(RunStatus.COMPLETED, user=alice)
    body = api.get(f"{API}/runs", {"status": "FAILED"}).json()
    assert body["count"] == 21
    assert {run["status"] for run in body["results"]} == {"FAILED"}
    assert body["next"] == "/api/qualify/runs?status=FAILED&page=2"


def test_list_runs_counts_outcomes_in_one_query_for_the_page(api, alice, make_run):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert api.get(f"{API}/runs").status_code == 200
        return len(captured)

    add_results(make_run(RunStatus.COMPLETED, user=alice), [(Outcome.QUALIFIED, 90)])
    few = queries()
    for _ in range(10):
        add_results(
            make_run(RunStatus.COMPLETED, user=alice),
            [(Outcome.QUALIFIED, 90), (Outcome.ERRORED, None)],
        )
    assert queries() == few
    assert api.get(f"{API}/runs").json()["results"][0]["counts"] == {
        "qualified": 1,
        "not_qualified": 0,
        "errored": 1,
    }


@pytest.mark.parametrize(
    ("query", "status"),
    [({"page": "0"}, 400), ({"page": "x"}, 400), ({"page": "9"}, 404), ({"status": "DONE"}, 400)],
)
def test_list_runs_with_a_bad_page_or_status(api, alice, make_run, query, status):
    make_run(RunStatus.COMPLETED, user=alice)
    response = api.get(f"{API}/runs", query)
    assert response.status_code == status
    assert response.json()["error"]


# --- GET /runs/active ------------------------------------------------------------------------


def test_active_runs_lists_the_users_pending_and_processing_runs(api, alice, bob, make_run):
    processing = make_run(RunStatus.PROCESSING, total=20, completed=5, user=alice)
    pending = make_run(RunStatus.PENDING, total=4, user=alice, created_minutes_ago=-1)
    make_run(RunStatus.COMPLETED, user=alice)
    make_run(RunStatus.FAILED, user=alice)
    make_run(RunStatus.PROCESSING, user=bob)
    body = api.get(f"{API}/runs/active").json()
    assert body["count"] == 2
    assert [run["id"] for run in body["results"]] == [processing.pk, pending.pk]
    assert body["results"][0]["percent"] == 25
    assert body["results"][0]["completed"] == 5


def test_a_run_leaves_the_active_list_once_it_is_recovered(api, alice, make_run):
    from recovery.sweep import recover_stuck_runs

    run = make_run(RunStatus.PROCESSING, user=alice, heartbeat_minutes_ago=30)
    assert api.get(f"{API}/runs/active").json()["count"] == 1
    recover_stuck_runs(source="command", log=False)
    assert api.get(f"{API}/runs/active").json() == {"count": 0, "results": []}
    detail = api.get(f"{API}/runs/{run.pk}").json()
    assert detail["status"] == "FAILED"
    assert "No progress for" in detail["failure_reason"]


# --- GET /runs/<id> and /runs/<id>/results ---------------------------------------------------


def test_run_detail_has_progress_and_counts(api, alice, make_run):
    run = make_run(RunStatus.PROCESSING, total=4, completed=3, user=alice)
    add_results(
        run, [(Outcome.QUALIFIED, 90), (Outcome.NOT_QUALIFIED, 10), (Outcome.ERRORED, None)]
    )
    body = api.get(f"{API}/runs/{run.pk}").json()
    assert (body["id"], body["status"], body["completed"], body["total"]) == (
        run.pk,
        "PROCESSING",
        3,
        4,
    )
    assert body["percent"] == 75
    assert body["counts"] == {"qualified": 1, "not_qualified": 1, "errored": 1}


@pytest.mark.parametrize("suffix", ["", "/results"])
def test_another_users_run_is_404_like_a_missing_one(api, bob, make_run, suffix):
    theirs = make_run(RunStatus.COMPLETED, user=bob)
    response = api.get(f"{API}/runs/{theirs.pk}{suffix}")
    assert response.status_code == 404
    assert response.json() == {
        "error": f"Run {theirs.pk} does not exist or is not yours.",
        "code": "run_not_found",
        "fields": {},
    }
    assert api.get(f"{API}/runs/999999{suffix}").status_code == 404


def test_results_are_paginated_and_sortable_by_score(api, alice, make_run):
    run = make_run(RunStatus.COMPLETED, total=55, completed=55, user=alice)
    add_results(
        run, [(Outcome.QUALIFIED, score) for score in range(54)] + [(Outcome.ERRORED, None)]
    )
    first = api.get(f"{API}/runs/{run.pk}/results").json()
    assert first["count"] == 55
    assert first["run"] == run.pk
    assert len(first["results"]) == 50
    assert first["results"][0] == {
        "position": 1,
        "name": "Person 0",
        "company": "Co 0",
        "email": "",
        "domain": "",
        "title": "",
        "industry": "",
        "employees": None,
        "country": "",
        "extra": {},
        "outcome": "QUALIFIED",
        "score": 0,
        "reasons": ["r"],
        "error": "",
        "scored_at": first["results"][0]["scored_at"],
    }
    best = api.get(f"{API}/runs/{run.pk}/results", {"sort": "-score"}).json()
    assert [item["score"] for item in best["results"][:3]] == [53, 52, 51]
    assert best["next"] == f"/api/qualify/runs/{run.pk}/results?sort=-score&page=2"
    last = api.get(best["next"]).json()
    assert last["results"][-1]["score"] is None  # errored results sort last either way
    worst = api.get(f"{API}/runs/{run.pk}/results", {"sort": "score"}).json()
    assert [item["score"] for item in worst["results"][:2]] == [0, 1]


def test_results_with_an_unknown_sort_is_400(api, alice, make_run):
    run = make_run(RunStatus.COMPLETED, user=alice)
    response = api.get(f"{API}/runs/{run.pk}/results", {"sort": "name"})
    assert response.status_code == 400
    assert "sort" in response.json()["fields"]


# --- POST /runs/<id>/retry -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["continue"])
@override_settings(TASKS=DUMMY)
def test_continue_answers_200_with_the_same_run_pending_again(api, alice, make_run, endpoint):
    original = make_run(RunStatus.FAILED, total=3, completed=1, user=alice, criteria={})
    add_results(original, [(Outcome.QUALIFIED, 90)])
    Prospect.objects.bulk_create(
        Prospect(run=original, position=position, number=position, name="Left", company="Co")
        for position in (2, 3)
    )
    response = post(api, f"{API}/runs/{original.pk}/{endpoint}")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["status"], body["total"], body["completed"]) == (
        original.pk,
        "PENDING",
        3,
        1,
    )
    assert response["Location"] == body["url"]
    assert QualificationRun.objects.count() == 1
    assert ProspectResult.objects.filter(run=original).count() == 1


@override_settings(TASKS=DUMMY)
def test_a_second_continue_is_409_and_queues_nothing_more(api, alice, make_run):
    run = make_run(RunStatus.FAILED, total=3, completed=0, user=alice, criteria={})
    assert post(api, f"{API}/runs/{run.pk}/continue").status_code == 200
    task = QualificationRun.objects.get(pk=run.pk).task_id
    response = post(api, f"{API}/runs/{run.pk}/continue")
    assert response.status_code == 409
    assert response.json()["error"] == (
        f"Run {run.pk} is already pending: it was continued and will finish the prospects "
        "left; it is not started twice."
    )
    assert QualificationRun.objects.get(pk=run.pk).task_id == task


@pytest.mark.parametrize("status", [RunStatus.COMPLETED, RunStatus.PROCESSING, RunStatus.PENDING])
def test_continue_of_a_run_that_is_not_failed_is_409(api, alice, make_run, status):
    run = make_run(status, user=alice)
    response = post(api, f"{API}/runs/{run.pk}/continue")
    assert response.status_code == 409
    assert f"Run {run.pk} is" in response.json()["error"]
    assert QualificationRun.objects.get(pk=run.pk).status == status


def test_retry_of_another_users_run_is_404(api, bob, make_run):
    theirs = make_run(RunStatus.FAILED, user=bob)
    assert post(api, f"{API}/runs/{theirs.pk}/continue").status_code == 404
    assert QualificationRun.objects.count() == 1


def test_an_unexpected_error_is_a_json_500(alice, monkeypatch):
    def broken(runs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr("qualifier.api.counts_for", broken)
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    response = client.get(f"{API}/runs")
    assert response.status_code == 500
    assert response.json() == {
        "error": "Internal server error; the error has been logged.",
        "code": "server_error",
        "fields": {},
    }


def test_unknown_api_urls_are_json_404(api):
    response = api.get(f"{API}/runz")
    assert response.status_code == 404
    assert response.json() == {
        "error": "There is no API endpoint at /api/qualify/runz.",
        "code": "no_endpoint",
        "fields": {},
    }


@pytest.mark.parametrize("path", ["runs/", "runs/active/", "runs/{pk}/", "runs/{pk}/results/"])
def test_a_trailing_slash_answers_like_the_documented_path(api, make_run, alice, path):
    run = make_run(RunStatus.COMPLETED, user=alice)
    with_slash = api.get(f"{API}/{path.format(pk=run.pk)}")
    without = api.get(f"{API}/{path.format(pk=run.pk).rstrip('/')}")
    assert with_slash.status_code == without.status_code == 200
    assert with_slash.json() == without.json() or path == "runs/"  # links name the path asked


def test_a_trailing_slash_on_a_post_creates_the_run(api):
    response = post(api, f"{API}/runs/", {"prospects": PROSPECTS})
    assert response.status_code == 201
    assert QualificationRun.objects.count() == 1


@pytest.mark.parametrize("status", ["failed", "Failed", "FAILED"])
def test_the_status_filter_takes_any_case(api, make_run, alice, status):
    failed = make_run(RunStatus.FAILED, user=alice)
    make_run(RunStatus.COMPLETED, user=alice)
    answer = api.get(f"{API}/runs?status={status}").json()
    assert [run["id"] for run in answer["results"]] == [failed.pk]


def test_an_unknown_status_names_the_choices(api):
    answer = api.get(f"{API}/runs?status=stuck").json()
    assert answer["code"] == "invalid"
    assert answer["fields"] == {"status": "One of PENDING, PROCESSING, COMPLETED, FAILED."}


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "text/plain", "application/xml"]
)
def test_a_body_that_is_not_json_is_415(api, content_type):
    response = api.post(
        f"{API}/runs",
        data="prospects=Ada",
        content_type=content_type,
        headers={"X-CSRFToken": CSRF_SECRET},
    )
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
    assert response["Accept-Post"] == "application/json"
    assert not QualificationRun.objects.exists()


def test_a_json_body_with_a_charset_or_a_json_suffix_type_is_read(api):
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        response = api.post(
            f"{API}/runs",
            data=json.dumps({"prospects": PROSPECTS}),
            content_type=content_type,
            headers={"X-CSRFToken": CSRF_SECRET},
        )
        assert response.status_code == 201, response.json()


# --- Idempotency-Key on POST /runs ----------------------------------------------------------


def post_with_key(client: Client, key: str, body: object):
    return client.post(
        f"{API}/runs",
        json.dumps(body),
        content_type="application/json",
        headers={"X-CSRFToken": CSRF_SECRET, "Idempotency-Key": key},
    )


@override_settings(TASKS=DUMMY)
def test_repeating_a_create_with_the_same_idempotency_key_returns_the_first_run(api):
    first = post_with_key(api, "order-42", {"prospects": PROSPECTS})
    again = post_with_key(api, "order-42", {"prospects": PROSPECTS})
    assert first.status_code == 201, first.content
    assert again.status_code == 200
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert QualificationRun.objects.count() == 1


@override_settings(TASKS=DUMMY)
def test_an_idempotency_key_is_per_user(api, bob):
    other = Client()
    other.force_login(bob)
    other.cookies["csrftoken"] = CSRF_SECRET
    mine = post_with_key(api, "same-key", {"prospects": PROSPECTS})
    theirs = post_with_key(other, "same-key", {"prospects": PROSPECTS})
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"]


@override_settings(TASKS=DUMMY)
def test_an_idempotency_key_reused_with_another_body_is_422_and_creates_nothing(api):
    first = post_with_key(api, "k1", {"prospects": PROSPECTS})
    other = post_with_key(api, "k1", {"prospects": PROSPECTS[:1]})
    assert other.status_code == 422
    assert other.json()["error"] == (
        f"The Idempotency-Key 'k1' was used within the last day for another request "
        f"(run {first.json()['id']}); use a new key for a new run."
    )
    assert QualificationRun.objects.count() == 1


@override_settings(TASKS=DUMMY)
def test_a_replay_after_the_run_was_given_to_another_user_shows_nothing_of_it(api, bob):
    """The key was alice's, the run is now bob's: alice learns that it is no longer hers and
    nothing else (not its status, counts, criteria or reason), and nothing is created."""
    first = post_with_key(api, "order-7", {"prospects": PROSPECTS})
    run_id = first.json()["id"]
    QualificationRun.objects.filter(pk=run_id).update(
        user=bob, status=RunStatus.FAILED, failure_reason="Bob's secret reason"
    )
    again = post_with_key(api, "order-7", {"prospects": PROSPECTS})
    assert again.status_code == 409
    assert again.json() == {
        "error": f"The Idempotency-Key 'order-7' created run {run_id} within the last day, and "
        "that run is no longer yours; nothing was created. Use a new key for a new run.",
        "code": "idempotency_key_run_not_yours",
        "fields": {},
    }
    assert "Location" not in again
    assert QualificationRun.objects.count() == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there"])
@override_settings(TASKS=DUMMY)
def test_a_bad_idempotency_key_is_400_and_creates_nothing(api, key):
    response = post_with_key(api, key, {"prospects": PROSPECTS})
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]
    assert not QualificationRun.objects.exists()


@override_settings(TASKS=DUMMY)
def test_an_idempotency_key_older_than_a_day_is_forgotten_and_purged(api):
    import datetime as dt

    from django.utils import timezone

    from qualifier.models import IdempotencyKey

    first = post_with_key(api, "k", {"prospects": PROSPECTS})
    IdempotencyKey.objects.update(created_at=timezone.now() - dt.timedelta(days=1, seconds=1))
    again = post_with_key(api, "k", {"prospects": PROSPECTS})
    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert list(IdempotencyKey.objects.values_list("run_id", flat=True)) == [again.json()["id"]]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@override_settings(TASKS=DUMMY)
def test_two_requests_racing_with_one_idempotency_key_create_one_run(alice):
    """The unique (user, key) constraint decides: the loser's run is rolled back with it, and
    it answers with the winner's run."""
    import threading

    from django.db import connections

    barrier = threading.Barrier(2)
    answers: list[tuple[int, int]] = []

    def request() -> None:
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        client.cookies["csrftoken"] = CSRF_SECRET
        barrier.wait()
        try:
            response = post_with_key(client, "race", {"prospects": PROSPECTS})
            answers.append((response.status_code, response.json()["id"]))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(status for status, _ in answers) == [200, 201]
    assert len({run_id for _, run_id in answers}) == 1
    assert QualificationRun.objects.count() == 1


@override_settings(TASKS=DUMMY)
def test_a_key_taken_between_the_check_and_the_insert_answers_the_winners_run(
    api, alice, monkeypatch
):
    """The losing side of a race: its own run is rolled back with the key's insert."""
    import qualifier.api as api_module
    from qualifier.models import IdempotencyKey

    real_replay = api_module._replay
    winner = QualificationRun.objects.create(user=alice, total=2)
    calls = []

    def replay_after_a_concurrent_insert(caller, key, body_hash):
        calls.append(key)
        if len(calls) == 1:  # the other request commits its key right after our check
            IdempotencyKey.objects.create(user=alice, key=key, body_hash=body_hash, run=winner)
            return None
        return real_replay(caller, key, body_hash)

    monkeypatch.setattr(api_module, "_replay", replay_after_a_concurrent_insert)
    response = post_with_key(api, "race", {"prospects": PROSPECTS})
    assert response.status_code == 200
    assert response.json()["id"] == winner.pk
    assert list(QualificationRun.objects.values_list("pk", flat=True)) == [winner.pk]
