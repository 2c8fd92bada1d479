"""The API's answers against its contract: every answer the test client receives under /api/
is checked against the OpenAPI document (the one ninja generates from the code's schemas,
`qualifier.api_urls.document`) by openapi-core, so an
undocumented status, a missing header or a wrong field fails the test that received it.

conftest.py applies `check` to every request of the Django test client.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from openapi_core import OpenAPI
from openapi_core.contrib.django import DjangoOpenAPIResponse
from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
from openapi_core.testing import MockRequest
from openapi_schema_validator import OAS31Validator

from qualifier.api_urls import document

API_PREFIX = "/api/"
#: The document itself: served beside the operations, not one of them.
DOCUMENT = "/api/qualify/openapi.json"
#: The settings the generated document reads (qualifier.schemas: the prospects' limits;
#: common.apisite: the cookie names of the security schemes). ninja builds the document afresh
#: on every call (about 100 ms), so it is built once per combination of these values.
DOCUMENT_SETTINGS = (
    "QUALIFIER_MAX_PROSPECTS",
    "QUALIFIER_MAX_EXTRA_COLUMNS",
    "SESSION_COOKIE_NAME",
    "CSRF_COOKIE_NAME",
)
#: The document per combination of those settings (override_settings changes its limits).
_SPECS: dict[tuple[Any, ...], tuple[OpenAPI, dict[str, Any]]] = {}


class ContractError(AssertionError):
    """An answer that the document does not describe."""


def spec() -> tuple[OpenAPI, dict[str, Any]]:
    key = tuple(getattr(settings, name, None) for name in DOCUMENT_SETTINGS)
    if key not in _SPECS:
        doc = document()
        _SPECS[key] = (OpenAPI.from_dict(doc), doc)
    return _SPECS[key]


def check(request: HttpRequest, response: HttpResponseBase) -> None:
    """Raises ContractError when `response` to `request` is not what the document says."""
    if not request.path.startswith(API_PREFIX) or request.method == "HEAD":
        return  # HEAD answers are GET's without a body
    if request.path.rstrip("/") == DOCUMENT and response.status_code == 200:
        return
    openapi, doc = spec()
    mock = MockRequest(
        "http://testserver",
        request.method or "GET",
        # `runs/` answers like `runs` (common.apisite.JsonApi): the document has one form.
        request.path.rstrip("/"),
        args=dict(request.GET.lists()),
        headers=dict(request.headers),
        cookies=dict(request.COOKIES),
    )
    if response.status_code == 500:
        # A server error is never part of the contract (the fuzzer hunts for them); it still
        # answers in the one error shape.
        _check_error(doc, response)
        return
    try:
        openapi.validate_response(mock, DjangoOpenAPIResponse(response))
    except (PathNotFound, OperationNotFound):
        # Not an operation of the document (an unknown URL, a method the path does not take):
        # a JSON 404 or 405.
        if response.status_code not in (404, 405):
            raise ContractError(
                f"{request.method} {request.path} is not in the document, yet it answered "
                f"{response.status_code}"
            ) from None
        if response.status_code == 405 and "Allow" not in response.headers:
            raise ContractError(f"{request.method} {request.path}: a 405 without Allow") from None
        _check_error(doc, response)
    except Exception as exc:
        raise ContractError(
            f"{request.method} {request.get_full_path()} answered {response.status_code} "
            f"against the document: {exc!r} {getattr(exc, '__cause__', '')!r}\n"
            f"body: {getattr(response, 'content', b'(streamed)')[:500]!r}"
        ) from exc


def _check_error(doc: dict[str, Any], response: HttpResponseBase) -> None:
    if response["Content-Type"] != "application/json":
        raise ContractError(f"an error answered {response['Content-Type']}, not JSON")
    schema = doc["components"]["schemas"]["Error"]
    errors = list(OAS31Validator(schema).iter_errors(json.loads(response.content)))
    if errors:
        raise ContractError(f"an error answer is not an Error: {errors[0].message}")
