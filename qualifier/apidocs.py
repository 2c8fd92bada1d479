"""The API's contract, served: the OpenAPI document as JSON (public: it holds no secrets, and
clients and fuzzers must be able to fetch it) and a readable page made from the same document
on the server (for signed-in users; no script, nothing from other hosts)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from django.views.decorators.csrf import csrf_exempt

from common.jsonapi import json_error

from .openapi import document

METHODS = ("get", "post", "put", "patch", "delete")
_CODE = re.compile(r"`([^`]+)`")


def prose(text: str) -> SafeString:
    """The document's descriptions as HTML: escaped, with `code` marked up."""
    return mark_safe(_CODE.sub(r"<code>\1</code>", escape(text)))  # noqa: S308 (escaped above)


@csrf_exempt  # it only ever reads; any other method is a JSON 405
def openapi_json(request: HttpRequest) -> HttpResponse:
    if request.method not in ("GET", "HEAD"):
        return json_error(
            405,
            f"Method {request.method} is not allowed here; use GET or HEAD.",
            headers={"Allow": "GET, HEAD"},
        )
    return JsonResponse(document(), json_dumps_params={"indent": 1})


# --- the readable page ------------------------------------------------------------------------


@dataclass
class Field:
    name: str
    type: str
    required: bool = False
    description: str = ""
    where: str = ""


@dataclass
class Answer:
    status: str
    description: str
    schema: str
    headers: list[str]
    #: The component schema the body is, to link to (empty for an inline schema).
    link: str = ""


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    description: str
    deprecated: bool
    auth: str
    parameters: list[Field]
    body: str = ""
    body_note: str = ""
    body_required: bool = False
    answers: list[Answer] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        path = self.path.strip("/").replace("/", "-").replace("{", "").replace("}", "")
        return f"{self.method.lower()}-{path}"


@dataclass
class Schema:
    name: str
    description: str
    fields: list[Field]


def _ref_name(schema: dict[str, Any]) -> str:
    return schema.get("$ref", "").rsplit("/", 1)[-1]


def describe_type(schema: dict[str, Any]) -> str:
    """A schema in a few words: `integer or null, 1 to 100`, `array of Run`, `Error`."""
    if "$ref" in schema:
        return _ref_name(schema)
    types = schema.get("type", "any")
    types = types if isinstance(types, list) else [types]
    words = []
    for kind in types:
        if kind == "array":
            items = describe_type(schema.get("items", {}))
            words.append(f"array of ({items})" if "," in items else f"array of {items}")
        elif kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            words.append(f"object of {describe_type(schema['additionalProperties'])}")
        else:
            words.append(kind)
    text = " or ".join(words)
    if "enum" in schema:
        text += ": " + ", ".join(str(value) for value in schema["enum"])
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        text += f", {low:,} to {high:,}"
    elif low is not None:
        text += f", from {low:,}"
    elif high is not None:
        text += f", at most {high:,}"
    if "maxLength" in schema:
        text += f", at most {schema['maxLength']:,} characters"
    if "maxItems" in schema:
        text += f", {schema.get('minItems', 0)} to {schema['maxItems']:,} items"
    if schema.get("format") == "date-time":
        text += " (ISO 8601 date-time)"
    return text


def _auth(security: list[dict[str, list]]) -> str:
    if not security:
        return "none (public)"
    names = {
        "session": "session",
        "csrfCookie": "CSRF cookie",
        "csrfHeader": "X-CSRFToken",
        "bearer": "bearer token",
    }
    return " or ".join(" + ".join(names.get(name, name) for name in option) for option in security)


def operations(doc: dict[str, Any]) -> list[Operation]:
    components = doc["components"]
    found = []
    for path, item in doc["paths"].items():
        for method in METHODS:
            spec = item.get(method)
            if spec is None:
                continue
            body = spec.get("requestBody", {})
            body_schema = body.get("content", {}).get("application/json", {}).get("schema", {})
            answers = []
            for status, answer in spec["responses"].items():
                if "$ref" in answer:
                    answer = components["responses"][_ref_name(answer)]
                content = answer.get("content", {}).get("application/json", {})
                answers.append(
                    Answer(
                        status=status,
                        description=prose(answer["description"]),
                        schema=describe_type(content.get("schema", {})) if content else "",
                        headers=list(answer.get("headers", {})),
                        link=_ref_name(content.get("schema", {})),
                    )
                )
            found.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    summary=spec.get("summary", ""),
                    description=prose(spec.get("description", "")),
                    deprecated=spec.get("deprecated", False),
                    auth=_auth(spec.get("security", doc.get("security", []))),
                    parameters=[
                        Field(
                            name=parameter["name"],
                            type=describe_type(parameter["schema"]),
                            required=parameter.get("required", False),
                            description=prose(parameter.get("description", "")),
                            where=parameter["in"],
                        )
                        for parameter in spec.get("parameters", [])
                    ],
                    body=describe_type(body_schema) if body_schema else "",
                    body_note=prose(body.get("description", "")),
                    body_required=body.get("required", False),
                    answers=sorted(answers, key=lambda answer: answer.status),
                )
            )
    return found


def schemas(doc: dict[str, Any]) -> list[Schema]:
    found = []
    for name, schema in doc["components"]["schemas"].items():
        required = set(schema.get("required", ()))
        found.append(
            Schema(
                name=name,
                description=prose(schema.get("description", "")),
                fields=[
                    Field(
                        name=prop,
                        type=describe_type(spec),
                        required=prop in required,
                        description=prose(spec.get("description", "")),
                    )
                    for prop, spec in schema.get("properties", {}).items()
                ],
            )
        )
    return found


@login_required
def api_docs(request: HttpRequest) -> HttpResponse:
    """The document as a page, made on the server from the same dict as openapi.json."""
    doc = document()
    return render(
        request,
        "qualifier/api_docs.html",
        {
            "nav": "api",
            "title": doc["info"]["title"],
            "intro": [prose(part) for part in doc["info"]["description"].split("\n\n")],
            "operations": operations(doc),
            "schemas": schemas(doc),
        },
    )
