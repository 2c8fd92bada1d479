"""The user API's schemas: what it answers (a run, a page of runs, results) and the body of a
new run. ninja builds the OpenAPI document from them.

`Run.of` is the one place a run's JSON is built: a new field is one line there and one field
here. The body schemas (`NewRun`, `Prospect`, `CriteriaOverrides`) state the rules the document
can hold; the readers that enforce them (`common.jsonapi.read_json_body`,
`qualifier.prospects.parse_json`, `Criteria.with_overrides`) keep the rest (see
docs/reference/api.md, "Rules the document cannot state").
"""

from __future__ import annotations

from typing import Annotated, Any

from django.urls import reverse
from ninja import Schema
from pydantic import ConfigDict, Field, WithJsonSchema, create_model
from pydantic.json_schema import SkipJsonSchema

from common.inputs import MAX_DIGITS
from common.schemas import Answer, Count, Time, any_case
from recovery.models import QualificationRun, RunStatus
from recovery.outlook import outlook_of
from recovery.schemas import OUTLOOK_EXAMPLE, Outlook

from .conf import conf
from .criteria import (
    LIST_FIELDS,
    MAX_DOMAIN_LENGTH,
    MAX_LIST_ITEMS,
    MAX_PHRASE_LENGTH,
    MAX_PROFILE_LENGTH,
)
from .criteria import MAX_EMPLOYEES as MAX_EMPLOYEE_BOUND
from .listings import RESULT_SORTS, RESULTS_PAGE_SIZE, percent, run_duration
from .models import Outcome, ProspectResult
from .prospects import (
    KNOWN_COLUMNS,
    MAX_COLUMN_NAME_LENGTH,
    MAX_EMPLOYEES,
    MAX_EXTRA_VALUE_LENGTH,
    MAX_LENGTHS,
    REQUIRED_COLUMNS,
)
from .runs import RunCounts

RUNS_PAGE_SIZE = 20

#: A path on this server.
Link = Annotated[str, Field(description="A path on this server.")]
#: Text the database can store: no NUL character anywhere.
STORABLE = "^[^\\u0000]*$"
#: The same, with at least one character that is not a space.
NOT_BLANK = "^[^\\u0000]*[^\\u0000\\s][^\\u0000]*$"
#: A domain (or a URL or email that holds one), or nothing.
DOMAIN = "^([^\\u0000]*[A-Za-z0-9-]\\.[A-Za-z0-9-][^\\u0000]*)?$"

STATUS_PATTERN = any_case(*RunStatus.values)
SORT_PATTERN = any_case(*RESULT_SORTS)
#: The most digits a page number may have (common.inputs.parse_whole_number).
MAX_PAGE = 10**MAX_DIGITS - 1


RUN_EXAMPLE: dict[str, Any] = {
    "id": 42,
    "status": "PROCESSING",
    "status_display": "Processing",
    "total": 25,
    "completed": 20,
    "percent": 80,
    "counts": {"qualified": 12, "not_qualified": 7, "errored": 1},
    "criteria": {
        "industries": ["Software"],
        "countries": ["United States"],
        "title_keywords": ["CTO"],
        "excluded_domains": [],
        "min_employees": 50,
        "max_employees": 5000,
        "min_score": 60,
    },
    "failure_reason": "",
    "created_at": "2026-12-07T09:30:00.000000+00:00",
    "started_at": "2026-12-07T09:30:01.250000+00:00",
    "heartbeat_at": "2026-12-07T09:31:10.500000+00:00",
    "activity": "Scoring prospect 21 of 25",
    "last_activity_seconds": 1.2,
    "queued_seconds": None,
    "worker_responding": True,
    "outlook": OUTLOOK_EXAMPLE,
    "completed_at": None,
    "duration_seconds": None,
    "url": "/api/qualify/runs/42",
    "results_url": "/api/qualify/runs/42/results",
    "results_csv_url": "/api/qualify/runs/42/results.csv",
    "page_url": "/runs/42/",
}
RESULT_EXAMPLE: dict[str, Any] = {
    "position": 2,
    "name": "Ada Lovelace",
    "company": "Analytical Engines",
    "email": "ada@engines.example",
    "domain": "engines.example",
    "title": "CTO",
    "industry": "Software",
    "employees": 120,
    "country": "United Kingdom",
    "extra": {"source": "conference"},
    "outcome": "QUALIFIED",
    "score": 85,
    "reasons": ["industry matches: Software", "title matches: CTO"],
    "error": "",
    "scored_at": "2026-12-07T09:31:02.125000+00:00",
}


# --- answers ------------------------------------------------------------------------------------


class Counts(Answer):
    qualified: Count
    not_qualified: Count
    errored: Count


def _stored_keys_only(schema: dict[str, Any]) -> None:
    # A run shows the criteria it stored, which may predate a field: none is required.
    schema.pop("required", None)


class Criteria(Answer):
    """The ideal-customer profile a run used (stored on the run)."""

    model_config = ConfigDict(json_schema_extra=_stored_keys_only)

    industries: list[str]
    countries: list[str]
    title_keywords: list[str]
    excluded_domains: list[str]
    min_employees: int | None
    max_employees: int | None
    min_score: int = Field(ge=0, le=100)


class Run(Answer):
    """A run, its progress and where to find its results."""

    id: int = Field(ge=1)
    status: RunStatus
    status_display: str
    total: Count
    completed: Count
    percent: int = Field(ge=0, le=100)
    counts: Counts
    criteria: Annotated[dict[str, Any], WithJsonSchema(Criteria.model_json_schema())] = Field(
        description="The profile the run used, as it stored it."
    )
    failure_reason: str
    created_at: Time
    started_at: Time | None
    heartbeat_at: Time | None
    activity: str = Field(
        description="What an active run is doing, in words; empty once it has finished."
    )
    last_activity_seconds: float | None
    queued_seconds: float | None = Field(
        description="How long a PENDING run has waited; null otherwise."
    )
    worker_responding: bool
    outlook: Outlook
    completed_at: Time | None
    duration_seconds: float | None
    url: Link
    results_url: Link
    results_csv_url: Link
    page_url: Link

    model_config = ConfigDict(json_schema_extra={"examples": [RUN_EXAMPLE]})

    @classmethod
    def of(cls, run: QualificationRun, counts: RunCounts) -> Run:
        """The run as the API shows it. `run` comes from `listings.with_recovery` (it carries
        its liveness and activity figures)."""
        duration = run_duration(run)
        return cls(
            id=run.pk,
            status=run.status,
            status_display=run.get_status_display(),
            total=run.total,
            completed=run.completed,
            percent=percent(run),
            counts=Counts(
                qualified=counts.qualified,
                not_qualified=counts.not_qualified,
                errored=counts.errored,
            ),
            criteria=run.criteria,
            failure_reason=run.failure_reason,
            created_at=run.created_at,
            started_at=run.started_at,
            heartbeat_at=run.heartbeat_at,
            activity=run.activity(),
            last_activity_seconds=getattr(run, "activity_seconds", None),
            queued_seconds=getattr(run, "queued_seconds", None)
            if run.status == RunStatus.PENDING
            else None,
            worker_responding=getattr(run, "liveness", "") != "dead"
            and not getattr(run, "slices_dead", 0),  # a run worked as slices: all its workers
            outlook=Outlook(**outlook_of(run).as_json()),
            completed_at=run.completed_at,
            duration_seconds=None if duration is None else round(duration.total_seconds(), 3),
            url=reverse("qualifier-api:run", args=[run.pk]),
            results_url=reverse("qualifier-api:run-results", args=[run.pk]),
            results_csv_url=reverse("qualifier-api:run-results-csv", args=[run.pk]),
            page_url=reverse("qualifier:run-detail", args=[run.pk]),
        )


PageLink = Annotated[str | None, Field(description="The path of that page, or null.")]


class RunPage(Answer):
    model_config = ConfigDict(
        json_schema_extra={
            "description": f"{RUNS_PAGE_SIZE} runs per page, newest first.",
            "examples": [
                {
                    "count": 21,
                    "next": "/api/qualify/runs?status=failed&page=2",
                    "previous": None,
                    "results": [RUN_EXAMPLE],
                }
            ],
        }
    )

    count: Count = Field(description="Items on all pages.")
    next: PageLink
    previous: PageLink
    results: list[Run]


class ActiveRuns(Answer):
    """Active runs with their progress, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"count": 1, "results": [RUN_EXAMPLE]}]}
    )

    count: Count
    results: list[Run]


class Result(Answer):
    """One prospect and its score."""

    model_config = ConfigDict(json_schema_extra={"examples": [RESULT_EXAMPLE]})

    position: int = Field(ge=1)
    name: str
    company: str
    email: str
    domain: str
    title: str
    industry: str
    employees: int | None = Field(ge=0)
    country: str
    extra: dict[str, str]
    outcome: Outcome
    score: int | None = Field(ge=0, le=100)
    reasons: list[str]
    error: str
    scored_at: Time

    @classmethod
    def of(cls, result: ProspectResult) -> Result:
        prospect = result.prospect
        return cls(
            position=prospect.position,
            name=prospect.name,
            company=prospect.company,
            email=prospect.email,
            domain=prospect.domain,
            title=prospect.title,
            industry=prospect.industry,
            employees=prospect.employees,
            country=prospect.country,
            extra=prospect.extra,
            outcome=result.outcome,
            score=result.score,
            reasons=result.reasons,
            error=result.error,
            scored_at=result.created_at,
        )


class ResultPage(Answer):
    model_config = ConfigDict(
        json_schema_extra={
            "description": f"{RESULTS_PAGE_SIZE} results per page.",
            "examples": [
                {
                    "count": 25,
                    "next": None,
                    "previous": None,
                    "run": 42,
                    "results": [RESULT_EXAMPLE],
                }
            ],
        }
    )

    count: Count = Field(description="Items on all pages.")
    next: PageLink
    previous: PageLink
    run: int = Field(description="The run's id.")
    results: list[Result]


# --- the body of a new run ------------------------------------------------------------------------


def _text_list(pattern: str = STORABLE, what: str = "", item_length: int = MAX_PHRASE_LENGTH):
    item = Annotated[str, Field(max_length=item_length, pattern=pattern)]
    whole = Annotated[str, Field(max_length=MAX_PROFILE_LENGTH, pattern=STORABLE)]
    listed = Annotated[list[item], Field(max_length=MAX_LIST_ITEMS)]  # type: ignore[valid-type]
    return Annotated[
        listed | whole | None,  # type: ignore[valid-type]
        Field(
            description=f"A list{what}, or one comma-separated text; at most {item_length} "
            f"characters an item, and {MAX_PROFILE_LENGTH:,} in all the profile's lists "
            "together.",
        ),
    ]


Bound = Annotated[int | None, Field(ge=0, le=MAX_EMPLOYEE_BOUND)]


class CriteriaOverrides(Schema):
    """Any of the profile's fields, each replacing the default for this run. An empty list
    means any. `min_employees` must not be above `max_employees`."""

    model_config = ConfigDict(extra="forbid")

    industries: _text_list() = None  # type: ignore[valid-type]
    countries: _text_list() = None  # type: ignore[valid-type]
    title_keywords: _text_list() = None  # type: ignore[valid-type]
    excluded_domains: _text_list(  # type: ignore[valid-type]
        DOMAIN, " of domains such as example.com", MAX_DOMAIN_LENGTH
    ) = None
    min_employees: Bound = None
    max_employees: Bound = None
    # Not null: leave it out for the default profile's.
    min_score: Annotated[int, Field(ge=0, le=100)] | SkipJsonSchema[None] = Field(
        None, json_schema_extra=lambda schema: schema.pop("default")
    )


assert set(LIST_FIELDS) <= set(CriteriaOverrides.model_fields)


def _prospect_field(column: str) -> tuple[Any, Any]:
    if column == "employees":
        digits = Annotated[str, Field(pattern="^\\s*[0-9]{0,9}\\s*$")]
        number = Annotated[int, Field(ge=0, le=MAX_EMPLOYEES)]
        return (
            number | digits | None,
            Field(
                None,
                description="A whole number, or digits as text (grouped by three with `,` or "
                "spaces also works); empty or null for unknown.",
            ),
        )
    length = MAX_LENGTHS[column]
    if column in REQUIRED_COLUMNS:
        text = Annotated[str, Field(min_length=1, max_length=length, pattern=NOT_BLANK)]
        return text | float, ...
    text = Annotated[str, Field(max_length=length, pattern=STORABLE)]
    # A number is kept as its text, as a CSV cell would be.
    return text | float | None, None


def _prospect_schema(schema: dict[str, Any]) -> None:
    schema["maxProperties"] = len(KNOWN_COLUMNS) + conf.QUALIFIER_MAX_EXTRA_COLUMNS
    schema["propertyNames"] = {"maxLength": MAX_COLUMN_NAME_LENGTH, "pattern": STORABLE}
    schema["additionalProperties"] = {
        "type": "string",
        "maxLength": MAX_EXTRA_VALUE_LENGTH,
        "pattern": STORABLE,
    }


class _ProspectBase(Schema):
    model_config = ConfigDict(extra="allow", json_schema_extra=_prospect_schema)


Prospect = create_model(
    "Prospect",
    __base__=_ProspectBase,
    __doc__="One prospect, with the CSV's column names (in any case, or a common spelling such "
    "as `E-Mail`, `Email Address`, `Company Name`, `Job Title`). "
    f"{' and '.join(REQUIRED_COLUMNS)} are required; any other key is kept as extra data (text, "
    "at most 1,000 characters each and 10,000 per prospect).",
    **{column: _prospect_field(column) for column in KNOWN_COLUMNS},
)


def _max_prospects(schema: dict[str, Any]) -> None:
    schema["maxItems"] = conf.QUALIFIER_MAX_PROSPECTS


class NewRun(Schema):
    """A new run: its prospects, and criteria that replace the default profile's."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "prospects": [
                        {
                            "name": "Ada Lovelace",
                            "company": "Analytical Engines",
                            "email": "ada@engines.example",
                            "title": "CTO",
                            "industry": "Software",
                            "employees": 120,
                            "country": "United Kingdom",
                        }
                    ],
                    "criteria": {"industries": ["Software"], "min_score": 60},
                }
            ]
        },
    )

    prospects: list[Prospect] = Field(  # type: ignore[valid-type]
        min_length=1,
        description="At most QUALIFIER_MAX_PROSPECTS prospects (413 above).",
        json_schema_extra=_max_prospects,
    )
    criteria: CriteriaOverrides | None = None
