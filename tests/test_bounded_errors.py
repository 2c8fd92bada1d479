"""Error answers are bounded (issue 15, item 2): every list in one stops after the first 50 and
says how many more there are, an object with far more keys than there are fields is refused
with a count before any message is built, and a flood of JSON objects is refused while the
body is parsed."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client, override_settings

from common import jsonapi
from common.inputs import MAX_LISTED
from qualifier.criteria import FIELD_NAMES, Criteria, CriteriaError
from recovery.models import QualificationRun
from tests.helpers import CSRF_SECRET, DUMMY

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_queued_tasks")]

API = "/api/qualify"
PROSPECT = {"name": "Ada", "company": "Analytical Engines"}
#: An answer that names what is wrong, at most MAX_LISTED times, stays well under this.
SMALL_ANSWER = 20_000


@pytest.fixture
def _queued_tasks():
    with override_settings(TASKS=DUMMY):
        yield


@pytest.fixture
def api(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    client.cookies["csrftoken"] = CSRF_SECRET
    return client


def post(client: Client, url: str, body: object):
    return client.post(
        url, json.dumps(body), content_type="application/json", headers={"X-CSRFToken": CSRF_SECRET}
    )


def test_far_more_unknown_fields_than_known_are_counted_not_listed(api):
    body = {"prospects": [PROSPECT], **{f"field{i}": 1 for i in range(5_000)}}
    response = post(api, f"{API}/runs", body)
    assert response.status_code == 400
    assert len(response.content) < SMALL_ANSWER
    answer = response.json()
    assert answer["code"] == "invalid"
    assert answer["error"] == (
        "The body has 5,001 fields; the known fields are prospects, criteria."
    )
    assert QualificationRun.objects.count() == 0


def test_far_more_criteria_than_exist_are_one_error_that_counts_them(api):
    criteria = {f"criterion{i}": [] for i in range(5_000)}
    response = post(api, f"{API}/runs", {"prospects": [PROSPECT], "criteria": criteria})
    assert response.status_code == 400
    assert len(response.content) < SMALL_ANSWER
    assert response.json()["fields"] == {
        "criteria": f"5,000 fields were given; the criteria are {', '.join(FIELD_NAMES)}."
    }


def test_a_few_unknown_criteria_are_each_named(api):
    criteria = {"colour": "red", "size": 3, "min_score": 50}
    response = post(api, f"{API}/runs", {"prospects": [PROSPECT], "criteria": criteria})
    assert response.status_code == 400
    assert sorted(response.json()["fields"]) == ["criteria.colour", "criteria.size"]


def test_the_fields_of_an_error_answer_stop_after_the_first_50_and_say_how_many_more(api):
    # 45 unknown fields (not far more than exist) and 50 bad prospects: 95 problems in all.
    body = {"prospects": [{"name": "", "company": "Co"}] * 50}
    body |= {f"field{i:02}": 1 for i in range(45)}
    response = post(api, f"{API}/runs", body)
    assert response.status_code == 400
    answer = response.json()
    assert len(answer["fields"]) == MAX_LISTED
    assert answer["error"].endswith(" And 45 more fields, not listed.")


def test_a_huge_key_is_named_cut_short(api):
    key = "k" * 100_000
    for body in (
        {"prospects": [PROSPECT], key: 1},
        {"prospects": [PROSPECT], "criteria": {key: 1}},
    ):
        response = post(api, f"{API}/runs", body)
        assert response.status_code == 400
        assert len(response.content) < SMALL_ANSWER
        assert any(name.endswith("k" * 40 + "...") for name in response.json()["fields"])


@override_settings(QUALIFIER_MAX_PROSPECTS=100)
def test_a_flood_of_empty_prospects_is_refused_while_the_body_is_parsed(api, monkeypatch):
    built = []

    def after_parsing(payload):
        built.append(payload)
        return 1

    # The depth check walks the parsed body: it must never see the flood.
    monkeypatch.setattr(jsonapi, "_depth", after_parsing)
    response = post(api, f"{API}/runs", {"prospects": [{}] * 100_000})
    assert response.status_code == 413
    answer = response.json()
    assert answer["code"] == "too_many_prospects"
    assert answer["error"] == (
        "The body holds more than 102 JSON objects: a run takes at most 100 prospects, each "
        "one object."
    )
    assert built == []
    assert QualificationRun.objects.count() == 0


@override_settings(QUALIFIER_MAX_PROSPECTS=100)
def test_a_run_of_the_most_prospects_with_criteria_is_still_accepted(api):
    response = post(
        api, f"{API}/runs", {"prospects": [PROSPECT] * 100, "criteria": {"min_score": 10}}
    )
    assert response.status_code == 201, response.content[:300]


def test_unknown_run_ids_of_a_recovery_request_are_listed_up_to_50(db):
    operator = get_user_model().objects.create_user("ops", is_staff=True)
    operator.user_permissions.set(Permission.objects.filter(codename="change_qualificationrun"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(operator)
    client.cookies["csrftoken"] = CSRF_SECRET
    ids = list(range(10**6, 10**6 + 1_000))
    response = post(client, f"{API}/recovery", {"run_ids": ids})
    assert response.status_code == 404
    listed = ", ".join(map(str, ids[:MAX_LISTED]))
    expected = f"No qualification run with id {listed} and 950 more."
    assert response.json()["error"] == expected
    assert response.json()["fields"] == {"run_ids": expected}


def test_criteria_with_far_more_keys_than_exist_are_refused_before_any_is_judged():
    overrides = {f"x{i}": object() for i in range(10_000)}
    with pytest.raises(CriteriaError) as refused:
        Criteria().with_overrides(overrides)
    assert list(refused.value.errors) == ["criteria"]
