"""The API's contract: the OpenAPI 3.1 document ninja generates from the code's schemas, where
it is served, its page (ninja's Swagger UI), and the checker that holds every API test's answers
to it (tests/contract.py)."""

from __future__ import annotations

import json

import pytest
from django.http import JsonResponse
from django.test import Client, RequestFactory, override_settings
from openapi_spec_validator import validate

from common.schemas import any_case
from qualifier.api_urls import document, qualify_api
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
    """Each operation's URL under /api/qualify/ is a path of the document (and nothing else
    is); the same path with a trailing slash answers alike."""
    from django.urls import resolve

    patterns, _, _ = qualify_api.urls
    routes = {
        "/api/qualify/" + str(pattern.pattern).replace("<int:id>", "{id}")
        for pattern in patterns
        if pattern.name not in ("openapi-json", "api-root") and pattern.name
    }
    assert routes == set(document()["paths"])
    for route in routes:
        concrete = route.replace("{id}", "7")
        assert resolve(f"{concrete}/").func is resolve(concrete).func


def test_every_operation_has_an_example_answer_and_each_body_an_example():
    doc = document()
    schemas = doc["components"]["schemas"]

    def named(schema):
        return schemas[schema["$ref"].rsplit("/", 1)[-1]]

    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, answer in operation["responses"].items():
                if status == "414":
                    continue  # the web server's own HTML refusal, before the application
                content = answer.get("content", {})
                media = content.get("application/json") or content.get("text/csv")
                assert media, (method, path, status)
                assert "example" in media or named(media["schema"]).get("examples"), (
                    method,
                    path,
                    status,
                )
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                assert named(body["schema"]).get("examples"), (method, path)


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


# --- the page: ninja's Swagger UI inside the site's page -----------------------------------------


def test_the_docs_page_sends_anonymous_visitors_to_sign_in():
    response = Client().get("/docs/api/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/docs/api/"


def test_the_docs_page_is_swagger_ui_from_this_server_with_the_csrf_token(alice):
    client = Client()
    client.force_login(alice)
    response = client.get("/docs/api/")
    assert response.status_code == 200
    page = response.content.decode()
    settings = json.loads(page.split('id="swagger-settings">')[1].split("</script>")[0])
    assert settings["url"] == "/api/qualify/openapi.json"
    assert settings["validatorUrl"] is None  # no badge fetched from validator.swagger.io
    assert '<script src="/static/ninja/swagger-ui-bundle.js"></script>' in page
    assert 'href="/static/ninja/swagger-ui.css"' in page
    assert "http://" not in page.replace("http://testserver", "")
    assert "https://" not in page  # nothing from another host
    token = page.split('data-csrf-token="')[1].split('"')[0]
    assert len(token) == 64 and 'data-api-csrf="true"' in page  # "Try it out" sends it
    assert 'aria-current="page">API</a>' in page
    assert 'href="/api/qualify/openapi.json"' in page
    assert "Content-Security-Policy" in response.headers


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


def test_every_example_is_valid_by_its_own_schema():
    """The examples Swagger UI shows are answers and bodies the API would give and take."""
    from common.schemas import Error
    from qualifier import schemas
    from recovery import schemas as recovery_schemas

    models = [
        Error,
        schemas.Run,
        schemas.RunPage,
        schemas.ActiveRuns,
        schemas.Result,
        schemas.ResultPage,
        schemas.NewRun,
        recovery_schemas.RecoveryOptions,
        recovery_schemas.RecoveryReport,
    ]
    for model in models:
        mode = (
            "validation"
            if model in (schemas.NewRun, recovery_schemas.RecoveryOptions)
            else "serialization"
        )
        examples = model.model_json_schema(mode=mode)["examples"]
        assert examples, model
        for example in examples:
            model.model_validate(example)
