"""The API's contract: the OpenAPI 3.1 document, where it is served, its readable page, and the
checker that holds every API test's answers to it (tests/contract.py)."""

from __future__ import annotations

import json

import pytest
from django.http import JsonResponse
from django.test import Client, RequestFactory, override_settings
from openapi_spec_validator import validate
from qualifier.openapi import any_case, document

from tests import contract
from tests.helpers import DUMMY

pytestmark = pytest.mark.django_db

URL = "/api/qualify/openapi.json"


def test_the_document_is_valid_openapi_3_1():
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any error


def test_the_document_is_public_json_and_the_same_as_the_code_builds():
    response = Client().get(URL)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == json.loads(json.dumps(document()))


def test_the_document_describes_every_api_url():
    """Each URL pattern under /api/qualify/ is a path of the document (and nothing else is);
    the same path with a trailing slash answers alike."""
    from django.urls import get_resolver

    from qualifier import api_urls
    from recovery import urls as recovery_urls

    routes = {
        "/api/qualify/" + str(pattern.pattern).replace("<int:pk>", "{id}").rstrip("/")
        for patterns in (api_urls.urlpatterns, recovery_urls.urlpatterns)
        for pattern in patterns
    }
    assert routes == set(document()["paths"])
    assert get_resolver()  # the project's URLconf loads


def test_the_document_takes_its_limits_from_the_settings():
    with override_settings(QUALIFIER_MAX_PROSPECTS=7, SESSION_COOKIE_NAME="q8001"):
        doc = document()
    assert doc["components"]["schemas"]["NewRun"]["properties"]["prospects"]["maxItems"] == 7
    assert doc["components"]["securitySchemes"]["session"]["name"] == "q8001"


@pytest.mark.parametrize("path", ["runs/a%0A/results", "runs/%0A", "x%0Ay"])
def test_an_unknown_api_url_with_a_newline_is_a_json_404(path):
    """Found by Schemathesis: Django's HTML 404 answered such paths."""
    response = Client().get(f"/api/qualify/{path}")
    assert response.status_code == 404
    assert response.json()["code"] == "no_endpoint"


def test_other_methods_on_the_document_are_a_json_405():
    response = Client().post(URL)
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("text", "matches"),
    [("FAILED", True), ("failed", True), ("FaIlEd", True), ("FAILE", False), ("xFAILED", False)],
)
def test_any_case_patterns_match_exactly_the_words_in_any_case(text, matches):
    import re

    assert bool(re.fullmatch(any_case("PENDING", "FAILED"), text)) is matches
    assert re.fullmatch(any_case("-score"), "-SCORE")


# --- the checker itself: it must be able to fail -------------------------------------------------


def _request(method: str, path: str):
    return getattr(RequestFactory(), method)(path)


def test_the_checker_refuses_an_undocumented_field():
    answer = JsonResponse({"count": 0, "results": [], "surprise": 1})
    with pytest.raises(contract.ContractError):
        contract.check(_request("get", "/api/qualify/runs/active"), answer)


def test_the_checker_refuses_an_undocumented_status():
    answer = JsonResponse({"error": "no", "code": "conflict", "fields": {}}, status=409)
    with pytest.raises(contract.ContractError):
        contract.check(_request("get", "/api/qualify/runs/active"), answer)


def test_the_checker_refuses_a_missing_required_header():
    answer = JsonResponse({"error": "who?", "code": "not_authenticated", "fields": {}}, status=401)
    with pytest.raises(contract.ContractError):
        contract.check(_request("get", "/api/qualify/runs"), answer)


def test_the_checker_refuses_an_error_in_another_shape_at_an_unknown_url():
    answer = JsonResponse({"detail": "Not found."}, status=404)
    with pytest.raises(contract.ContractError):
        contract.check(_request("get", "/api/qualify/nowhere"), answer)


def test_the_checker_accepts_a_documented_answer():
    answer = JsonResponse({"count": 0, "results": []})
    contract.check(_request("get", "/api/qualify/runs/active"), answer)


# --- the readable page ------------------------------------------------------------------------


def test_the_docs_page_sends_anonymous_visitors_to_sign_in():
    response = Client().get("/docs/api/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/docs/api/"


def test_the_docs_page_shows_every_operation_and_schema(alice):
    client = Client()
    client.force_login(alice)
    response = client.get("/docs/api/")
    assert response.status_code == 200
    page = response.content.decode()
    doc = document()
    for path, item in doc["paths"].items():
        anchor = path.strip("/").replace("/", "-").replace("{", "").replace("}", "")
        for method in item:
            assert f'id="{method}-{anchor}"' in page, (method, path)
    for name in doc["components"]["schemas"]:
        assert f'id="schema-{name}"' in page
    assert 'href="/api/qualify/openapi.json"' in page
    assert "<script" not in page.split("</main>")[0]  # rendered on the server
    assert 'aria-current="page">API</a>' in page


@override_settings(TASKS=DUMMY)
def test_a_page_of_failed_runs_links_to_continuing_its_first_run(alice, make_run):
    """What Schemathesis's stateful phase follows: listRuns' link resolved on a real answer
    leads to a continue that succeeds."""
    from qualifier.models import Prospect
    from recovery.models import RunStatus

    failed = make_run(RunStatus.FAILED, total=1, user=alice)
    Prospect.objects.create(run=failed, position=2, number=1, name="Ann", company="Acme")
    make_run(RunStatus.COMPLETED, user=alice)
    client = Client()
    client.force_login(alice)
    page = client.get("/api/qualify/runs?status=failed")
    operations = {
        operation["operationId"]: (path, method)
        for path, item in document()["paths"].items()
        for method, operation in item.items()
    }
    links = document()["paths"]["/api/qualify/runs"]["get"]["responses"]["200"]["links"]
    link = next(link for link in links.values() if link["operationId"] == "continueRun")
    pointer = link["parameters"]["id"].removeprefix("$response.body#")
    run_id = page.json()
    for part in pointer.strip("/").split("/"):
        run_id = run_id[int(part) if part.isdigit() else part]
    path, method = operations["continueRun"]
    response = getattr(client, method)(path.replace("{id}", str(run_id)))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "PENDING"
