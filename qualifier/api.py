"""The qualification API under /api/qualify/, on django-ninja: a user by session (CSRF on
POST) or by personal API token (`Authorization: Bearer`, no CSRF), see
`common.jsonapi.user_caller`.

Every answer is JSON, errors included (see `common.apisite`): 400 with field errors, 401/403,
404 (also for another user's run), 405, 409 for a continue that is not allowed (the run is
already pending or processing, finished, or has nothing left) and for an `Idempotency-Key`
whose run is no longer the caller's, 422 for an `Idempotency-Key` reused with another body,
and 413 for too many prospects or too large a body. Lists are paginated with `?page=N` and
answer `{"count", "next", "previous", "results"}`; links are paths on this server.

The answers' schemas are in `qualifier.schemas`; a new run's body is read by
`common.jsonapi.read_json_body` and `qualifier.prospects.parse_json` (its rules go beyond what
JSON Schema states), and described by `schemas.NewRun`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Annotated, Any

from django.core.paginator import EmptyPage, Page, Paginator
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone
from ninja import Header, Path, Query, Router, Status
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from common.apisite import READ, WRITE
from common.inputs import parse_whole_number, show
from common.jsonapi import (
    ApiError,
    Caller,
    CallerAuth,
    ObjectLimit,
    invalid,
    read_json_body,
    require_object,
    unknown_fields,
    user_caller,
)
from common.schemas import error_answers, error_docs, header, read_with
from recovery.models import QualificationRun, RunStatus

from .conf import conf
from .criteria import Criteria, CriteriaError
from .export import results_csv_response
from .forms import sentence
from .listings import (
    ACTIVE_LIMIT,
    RESULT_SORTS,
    RESULTS_PAGE_SIZE,
    ordered_results,
    with_recovery,
)
from .models import IdempotencyKey
from .prospects import (
    ProspectErrors,
    ProspectInputError,
    TooManyProspects,
    parse_json,
)
from .runs import (
    DailyProspectLimit,
    RetryNotAllowed,
    RunCounts,
    TooManyActiveRuns,
    continue_run,
    counts_for,
    create_run,
)
from .schemas import (
    MAX_PAGE,
    RUNS_PAGE_SIZE,
    SORT_PATTERN,
    STATUS_PATTERN,
    ActiveRuns,
    Result,
    ResultPage,
    Run,
    RunPage,
)

#: How long a create's Idempotency-Key is remembered (per user).
IDEMPOTENCY_KEY_LIFETIME = dt.timedelta(days=1)
MAX_IDEMPOTENCY_KEY_LENGTH = 255

router = Router(auth=CallerAuth(user_caller), tags=["runs"])


# --- parameters: each read by one reader, stated in the document by its schema ---------------


def _page_number(value: Any) -> int:
    try:
        return parse_whole_number(value, minimum=1, maximum=None)
    except ValueError:
        raise ValueError(f"page must be a whole number from 1 up, not {show(value)}.") from None


def _status(value: Any) -> str:
    # Any case: ?status=failed is FAILED.
    status = str(value).upper()
    if status not in RunStatus.values:
        raise ValueError(
            f"status must be one of {', '.join(RunStatus.values)} (in any case), not {show(value)}."
        )
    return status


def _sort(value: Any) -> str:
    sort = str(value).lower()
    if sort not in RESULT_SORTS:
        raise ValueError(f"sort must be one of {', '.join(RESULT_SORTS)}, not {show(value)}.")
    return sort


def _idempotency_key(key: Any) -> str:
    """1 to 255 printable ASCII characters."""
    if (
        not isinstance(key, str)
        or not key
        or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH
        or not (key.isascii() and key.isprintable())
    ):
        raise ValueError(
            f"The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable "
            "ASCII characters, e.g. a UUID."
        )
    return key


PageNumber = Annotated[
    Annotated[int, Field(ge=1, le=MAX_PAGE)],
    read_with(_page_number, "A whole number from 1 up."),
]
StatusFilter = Annotated[
    Annotated[str, Field(pattern=STATUS_PATTERN)] | SkipJsonSchema[None],
    read_with(_status, f"One of {', '.join(RunStatus.values)}."),
]
Sort = Annotated[
    Annotated[str, Field(pattern=SORT_PATTERN)] | SkipJsonSchema[None],
    read_with(_sort, f"One of {', '.join(RESULT_SORTS)}."),
]
IdempotencyKeyHeader = Annotated[
    Annotated[
        str,
        Field(
            max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
            pattern="^[\\x20-\\x7e]*[\\x21-\\x7e][\\x20-\\x7e]*$",
        ),
    ]
    | SkipJsonSchema[None],
    read_with(_idempotency_key, "1 to 255 printable ASCII characters."),
]
PAGE = Query(1, description="Page number, from 1; a page past the last is a 404.")
STATUS = Query(
    None,
    description=f"Only runs in this status: {', '.join(RunStatus.values)} (any case).",
    example="failed",
)
SORT = Query(
    None,
    description="`score` lowest first, `-score` highest first (any case); errored results last.",
    example="-score",
)
# No example: Swagger UI's "Try it out" would send it, and a second try with another body
# would be refused as the key's reuse.
IDEMPOTENCY_KEY = Header(
    None,
    alias="Idempotency-Key",
    description=f"1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters, e.g. a UUID; "
    "per user, remembered for a day.",
)
RunId = Annotated[int, Field(ge=0)]
RUN_ID = Path(..., description="The run's id. Another user's run is a 404, like a missing one.")


def paginate(
    request: HttpRequest, queryset: QuerySet, per_page: int, number: int
) -> tuple[Page, dict]:
    """The requested page and its envelope (count, next, previous); 404 past the last."""
    paginator = Paginator(queryset, per_page)
    try:
        page = paginator.page(number)
    except EmptyPage:
        raise ApiError(
            404,
            f"Page {number} does not exist; there are {paginator.num_pages} page(s).",
            code="page_not_found",
        ) from None

    def link(number: int | None) -> str | None:
        if number is None:
            return None
        query = request.GET.copy()
        query["page"] = str(number)
        return f"{request.path}?{query.urlencode()}"

    envelope = {
        "count": paginator.count,
        "next": link(page.next_page_number() if page.has_next() else None),
        "previous": link(page.previous_page_number() if page.has_previous() else None),
    }
    return page, envelope


def _own_run(caller: Caller, pk: int) -> QualificationRun:
    try:
        return with_recovery(QualificationRun.objects.all()).get(pk=pk, user=caller.user)
    except QualificationRun.DoesNotExist:
        raise ApiError(
            404, f"Run {pk} does not exist or is not yours.", code="run_not_found"
        ) from None


def runs_json(runs: list[QualificationRun]) -> list[Run]:
    counts = counts_for(runs)
    return [Run.of(run, counts[run.pk]) for run in runs]


def _run_now(caller: Caller, pk: int) -> Run:
    found = _own_run(caller, pk)
    return Run.of(found, counts_for([found])[found.pk])


def _links(run_id: str, which: str = "the run") -> dict[str, Any]:
    """What a client can do next with a run it was given: a page of FAILED runs
    (`?status=failed`) leads to continuing one (Schemathesis's stateful phase follows these)."""
    return {
        f"{name}{'' if which == 'the run' else 'FirstOnPage'}": {
            "operationId": operation,
            "parameters": {"id": run_id},
            "description": f"{verb} {which}.",
        }
        for name, operation, verb in (
            ("GetRun", "getRun", "Read"),
            ("ListRunResults", "listRunResults", "The results of"),
            ("ContinueRun", "continueRun", "Continue"),
        )
    }


RUN_LINKS = _links("$response.body#/id")


# --- endpoints --------------------------------------------------------------------------------


@router.get(
    "runs",
    url_name="runs",
    operation_id="listRuns",
    summary="Your runs, newest first",
    response={200: RunPage, **error_answers(400, 401, 403, 404, 429)},
    openapi_extra={
        "security": READ,
        "responses": {
            200: {
                "description": "A page of runs.",
                "links": _links("$response.body#/results/0/id", "the page's first run"),
            },
            **error_docs(400, 401, 403, 404, 429),
        },
    },
)
def list_runs(
    request: HttpRequest,
    page: PageNumber = PAGE,
    status: StatusFilter = STATUS,
) -> dict[str, Any]:
    """The user's runs, newest first; `?status=` filters."""
    queryset = with_recovery(QualificationRun.objects.filter(user=request.auth.user)).order_by(
        "-created_at", "-pk"
    )
    if status is not None:
        queryset = queryset.filter(status=status)
    found, envelope = paginate(request, queryset, RUNS_PAGE_SIZE, page)
    return {**envelope, "results": runs_json(list(found.object_list))}


@router.post(
    "runs",
    url_name="runs",
    operation_id="createRun",
    summary="Create a run",
    response={200: Run, 201: Run, **error_answers(400, 401, 403, 409, 413, 415, 422, 429)},
    openapi_extra={
        "security": WRITE,
        "requestBody": {
            "required": True,
            "description": "At most QUALIFIER_MAX_UPLOAD_BYTES; objects and arrays nest at "
            "most 20 levels.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewRun"}}},
        },
        "responses": {
            201: {
                "description": "The new run, PENDING.",
                "headers": {"Location": header("Location")},
                "links": RUN_LINKS,
            },
            200: {
                "description": "The run an earlier request with this Idempotency-Key created.",
                "headers": {
                    "Location": header("Location"),
                    "Idempotent-Replayed": header("Idempotent-Replayed"),
                },
                "links": RUN_LINKS,
            },
            **error_docs(400, 401, 403, 409, 413, 415, 422, 429),
        },
    },
)
def create_run_view(
    request: HttpRequest,
    response: HttpResponse,
    idempotency_key: IdempotencyKeyHeader = IDEMPOTENCY_KEY,
) -> Status:
    """Stores the run and its prospects and queues it, in one transaction. With an
    `Idempotency-Key`, repeating the request within a day answers 200 with the run the first
    one created, as long as that run is still yours: once an administrator has given it to
    another user, the repeat answers 409 (`idempotency_key_run_not_yours`) and creates
    nothing."""
    status, run = _create(request, request.auth, idempotency_key or "")
    response["Location"] = run.url
    if status == 200:
        response["Idempotent-Replayed"] = "true"
    return Status(status, run)


def _create(request: HttpRequest, caller: Caller, key: str) -> tuple[int, Run]:
    limit = conf.QUALIFIER_MAX_PROSPECTS
    payload = read_json_body(
        request,
        max_bytes=conf.QUALIFIER_MAX_UPLOAD_BYTES,
        # The body, its criteria and one per prospect.
        objects=ObjectLimit(
            limit + 2,
            f"a run takes at most {limit:,} prospects, each one object",
            code="too_many_prospects",
        ),
    )
    body = require_object(payload)
    errors = unknown_fields(body, ("prospects", "criteria"))
    prospects = []
    if "prospects" not in body:
        errors["prospects"] = "This field is required: a list of prospect objects."
    else:
        try:
            prospects = parse_json(body["prospects"])
        except TooManyProspects as exc:
            raise _too_many_prospects(exc) from None
        except ProspectInputError as exc:
            errors.update(prospect_field_errors(exc))
    criteria = Criteria.defaults()
    overrides = body.get("criteria")
    if overrides is not None:
        if not isinstance(overrides, dict):
            errors["criteria"] = "Must be an object of criteria fields."
        else:
            try:
                criteria = criteria.with_overrides(overrides)
            except CriteriaError as exc:
                errors.update(
                    {
                        "criteria" if name == "criteria" else f"criteria.{name}": sentence(text)
                        for name, text in exc.errors.items()
                    }
                )
    if errors:
        raise invalid(errors, "The run was not created.")
    # The parsed body, so the same JSON written with other spacing or key order is the same
    # request.
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    body_hash = hashlib.sha256(canonical.encode()).hexdigest() if key else ""
    if key:
        replay = _replay(caller, key, body_hash)
        if replay is not None:
            return replay
    try:
        with transaction.atomic():
            run = create_run(user=caller.user, prospects=prospects, criteria=criteria)
            if key:
                IdempotencyKey.objects.filter(
                    created_at__lt=timezone.now() - IDEMPOTENCY_KEY_LIFETIME
                ).delete()
                IdempotencyKey.objects.create(
                    user=caller.user, key=key, body_hash=body_hash, run=run
                )
    except IntegrityError:
        # Another request with this key created its run first: this one created nothing.
        replay = _replay(caller, key, body_hash) if key else None
        if replay is None:
            raise
        return replay
    except TooManyProspects as exc:
        raise _too_many_prospects(exc) from None
    except ProspectInputError as exc:
        raise invalid(prospect_field_errors(exc), "The run was not created.") from None
    except TooManyActiveRuns as exc:
        raise _too_many_active(exc) from None
    except DailyProspectLimit as exc:
        raise ApiError(429, str(exc), code="daily_prospect_limit") from None
    return 201, Run.of(run, RunCounts())


def prospect_field_errors(exc: ProspectInputError) -> dict[str, str]:
    """Field errors keyed by where they are in the body: `prospects[2].email` is the third
    item's (0-based, as in the array) `email`; `prospects[2]` the item as a whole. Each says
    what is wrong in the words the upload page uses ("Item 3, field 'email': ...")."""
    problems = exc.problems if isinstance(exc, ProspectErrors) else [exc]
    errors: dict[str, str] = {}
    if isinstance(exc, ProspectErrors) and exc.more:
        # First, so that it is kept when the answer's fields are cut at MAX_LISTED.
        errors["prospects"] = "There are more problems than the answer lists."
    for problem in problems:
        if problem.line is None:
            key = "prospects"
        else:
            key = f"prospects[{problem.line - 1}]"
            if problem.column is not None:
                key += f".{problem.column}"
        text = sentence(str(problem))
        errors[key] = f"{errors[key]} {text}" if key in errors else text
    return errors


def _too_many_prospects(exc: TooManyProspects) -> ApiError:
    return ApiError(
        413, sentence(str(exc)), {"prospects": sentence(str(exc))}, code="too_many_prospects"
    )


def _too_many_active(exc: TooManyActiveRuns) -> ApiError:
    return ApiError(429, str(exc), code="too_many_active_runs")


def _replay(caller: Caller, key: str, body_hash: str) -> tuple[int, Run] | None:
    """The run a request with this key created within the last day, or None. The same key
    with another body is a client's mistake: 422, and nothing is created. A run that is no
    longer the caller's (an administrator gave it to another user) is not shown: 409, and
    nothing is created either (the request was done once; its run is just not yours now)."""
    found = (
        IdempotencyKey.objects.filter(
            user=caller.user,
            key=key,
            created_at__gte=timezone.now() - IDEMPOTENCY_KEY_LIFETIME,
        )
        .select_related("run")
        .first()
    )
    if found is None:
        return None
    if found.body_hash != body_hash:
        raise ApiError(
            422,
            f"The Idempotency-Key {show(key)} was used within the last day for another request "
            f"(run {found.run_id}); use a new key for a new run.",
            code="idempotency_key_reused",
        )
    run = with_recovery(QualificationRun.objects.filter(pk=found.run_id, user=caller.user)).first()
    if run is None:
        raise ApiError(
            409,
            f"The Idempotency-Key {show(key)} created run {found.run_id} within the last day, "
            "and that run is no longer yours; nothing was created. Use a new key for a new run.",
            code="idempotency_key_run_not_yours",
        )
    return 200, Run.of(run, counts_for([run])[run.pk])


@router.get(
    "runs/active",
    url_name="active-runs",
    operation_id="listActiveRuns",
    summary="Your pending and processing runs, oldest first",
    response={200: ActiveRuns, **error_answers(401, 403, 429)},
    openapi_extra={
        "security": READ,
        "responses": {
            200: {"description": "Active runs with their progress."},
            **error_docs(401, 403, 429),
        },
    },
)
def active_runs(request: HttpRequest) -> dict[str, Any]:
    """The notifier's source: the user's PENDING and PROCESSING runs, oldest first."""
    active = with_recovery(QualificationRun.objects.filter(user=request.auth.user)).active()
    listed = list(active.order_by("created_at", "pk")[:ACTIVE_LIMIT])
    count = len(listed) if len(listed) < ACTIVE_LIMIT else active.count()
    return {"count": count, "results": runs_json(listed)}


@router.get(
    "runs/{int:id}",
    url_name="run",
    operation_id="getRun",
    summary="One run, with progress and counts",
    response={200: Run, **error_answers(401, 403, 404, 429)},
    openapi_extra={
        "security": READ,
        "responses": {
            200: {"description": "The run.", "links": RUN_LINKS},
            **error_docs(401, 403, 404, 429),
        },
    },
)
def get_run(request: HttpRequest, id: RunId = RUN_ID) -> Run:
    return _run_now(request.auth, id)


@router.get(
    "runs/{int:id}/results",
    url_name="run-results",
    operation_id="listRunResults",
    summary="A run's results",
    response={200: ResultPage, **error_answers(400, 401, 403, 404, 429)},
    openapi_extra={
        "security": READ,
        "responses": {
            200: {"description": "A page of results."},
            **error_docs(400, 401, 403, 404, 429),
        },
    },
)
def run_results(
    request: HttpRequest, id: RunId = RUN_ID, page: PageNumber = PAGE, sort: Sort = SORT
) -> dict[str, Any]:
    """In input order, or by score; errored results come last."""
    found = _own_run(request.auth, id)
    results, envelope = paginate(request, ordered_results(found, sort), RESULTS_PAGE_SIZE, page)
    return {
        **envelope,
        "run": found.pk,
        "results": [Result.of(result) for result in results.object_list],
    }


@router.get(
    "runs/{int:id}/results.csv",
    url_name="run-results-csv",
    operation_id="downloadRunResults",
    summary="A run's results as CSV",
    response={200: None, **error_answers(400, 401, 403, 404, 429)},
    openapi_extra={
        "security": READ,
        "responses": {
            200: {
                "description": "The CSV file, as an attachment.",
                "headers": {"Content-Disposition": header("Content-Disposition")},
                "content": {
                    "text/csv": {
                        "example": "name,company,domain,score,outcome,reasons,error\r\n"
                        "Ada Lovelace,Analytical Engines,engines.example,85,Qualified,"
                        "industry matches: Software,\r\n",
                    }
                },
            },
            **error_docs(400, 401, 403, 404, 429),
        },
    },
)
def run_results_csv(
    request: HttpRequest, id: RunId = RUN_ID, sort: Sort = SORT
) -> StreamingHttpResponse:
    """The run page's Download CSV: one row per prospect of the run, every column of the
    upload, then `domain`, `score`, `outcome`, `reasons`, `error` (a prospect without a
    result, as in a failed run, has the outcome `Not scored`). UTF-8 with a byte-order mark,
    in the upload's delimiter (comma for JSON and Excel uploads); cells a spreadsheet would
    run as formulas start with `'`."""
    return results_csv_response(_own_run(request.auth, id), sort)


@router.post(
    "runs/{int:id}/continue",
    url_name="run-continue",
    operation_id="continueRun",
    summary="Continue a failed run in place",
    response={200: Run, **error_answers(400, 401, 403, 404, 409, 413, 429)},
    openapi_extra={
        "security": WRITE,
        "responses": {
            200: {
                "description": "The same run, PENDING again.",
                "headers": {"Location": header("Location")},
                "links": RUN_LINKS,
            },
            **error_docs(400, 401, 403, 404, 409, 413, 429),
        },
    },
)
def run_continue(request: HttpRequest, response: HttpResponse, id: RunId = RUN_ID) -> Run:
    """The same FAILED run goes back to the queue and finishes the prospects without a
    result; it is never executed twice. 409 while it is pending or processing, once it has
    finished, or when nothing is left."""
    found = _own_run(request.auth, id)
    try:
        continue_run(found, user=request.auth.user)
    except RetryNotAllowed as exc:
        raise ApiError(409, sentence(str(exc)), code="run_not_continuable") from None
    except TooManyActiveRuns as exc:
        raise _too_many_active(exc) from None
    run = _run_now(request.auth, id)
    response["Location"] = run.url
    return run
