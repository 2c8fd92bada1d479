"""The qualification JSON API under /api/qualify/: a user by session (CSRF on POST) or by
personal API token (`Authorization: Bearer`, no CSRF), see `common.jsonapi.user_caller`.

Every answer is JSON, errors included (see `common.jsonapi.json_endpoint`): 400 with field
errors, 401/403, 404 (also for another user's run), 405, 409 for a continue that is not allowed
(the run is already pending or processing, finished, or has nothing left) and for an
`Idempotency-Key` whose run is no longer the caller's, 422 for an `Idempotency-Key` reused
with another body,
and 413 for too many prospects or too large a body. Lists are paginated with `?page=N` and
answer `{"count", "next", "previous", "results"}`; links are paths on this server.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from django.core.paginator import EmptyPage, Page, Paginator
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone

from common.inputs import parse_whole_number, show
from common.jsonapi import (
    INVALID,
    ApiError,
    Caller,
    ObjectLimit,
    invalid,
    json_endpoint,
    read_json_body,
    require_object,
    unknown_fields,
)
from recovery.models import QualificationRun, RunStatus
from recovery.outlook import outlook_of

from .conf import conf
from .criteria import Criteria, CriteriaError
from .export import results_csv_response
from .forms import sentence
from .listings import (
    ACTIVE_LIMIT,
    RESULT_SORTS,
    RESULTS_PAGE_SIZE,
    ordered_results,
    percent,
    run_duration,
    with_recovery,
)
from .models import IdempotencyKey, ProspectResult
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

RUNS_PAGE_SIZE = 20
#: How long a create's Idempotency-Key is remembered (per user).
IDEMPOTENCY_KEY_LIFETIME = dt.timedelta(days=1)
MAX_IDEMPOTENCY_KEY_LENGTH = 255


# --- representations ------------------------------------------------------------------------


def _time(value: Any) -> str | None:
    return value.isoformat() if value else None


def run_json(run: QualificationRun, counts: RunCounts) -> dict[str, Any]:
    duration = run_duration(run)
    return {
        "id": run.pk,
        "status": run.status,
        "status_display": run.get_status_display(),
        "total": run.total,
        "completed": run.completed,
        "percent": percent(run),
        "counts": {
            "qualified": counts.qualified,
            "not_qualified": counts.not_qualified,
            "errored": counts.errored,
        },
        "criteria": run.criteria,
        "failure_reason": run.failure_reason,
        "created_at": _time(run.created_at),
        "started_at": _time(run.started_at),
        "heartbeat_at": _time(run.heartbeat_at),
        "activity": run.activity(),
        "last_activity_seconds": getattr(run, "activity_seconds", None),
        "queued_seconds": getattr(run, "queued_seconds", None) if run.status == "PENDING" else None,
        "worker_responding": getattr(run, "liveness", "") != "dead",
        "outlook": outlook_of(run).as_json(),
        "completed_at": _time(run.completed_at),
        "duration_seconds": None if duration is None else round(duration.total_seconds(), 3),
        "url": reverse("qualifier-api:run", args=[run.pk]),
        "results_url": reverse("qualifier-api:run-results", args=[run.pk]),
        "results_csv_url": reverse("qualifier-api:run-results-csv", args=[run.pk]),
        "page_url": reverse("qualifier:run-detail", args=[run.pk]),
    }


def runs_json(runs: list[QualificationRun]) -> list[dict[str, Any]]:
    counts = counts_for(runs)
    return [run_json(run, counts[run.pk]) for run in runs]


def result_json(result: ProspectResult) -> dict[str, Any]:
    prospect = result.prospect
    return {
        "position": prospect.position,
        "name": prospect.name,
        "company": prospect.company,
        "email": prospect.email,
        "domain": prospect.domain,
        "title": prospect.title,
        "industry": prospect.industry,
        "employees": prospect.employees,
        "country": prospect.country,
        "extra": prospect.extra,
        "outcome": result.outcome,
        "score": result.score,
        "reasons": result.reasons,
        "error": result.error,
        "scored_at": _time(result.created_at),
    }


def paginate(request: HttpRequest, queryset: QuerySet, per_page: int) -> tuple[Page, dict]:
    """The requested page and its envelope (count, next, previous); 400/404 for a bad page."""
    raw = request.GET.get("page", "1")
    try:
        number = parse_whole_number(raw, minimum=1, maximum=None)
    except ValueError:
        raise ApiError(
            400,
            f"page must be a whole number from 1 up, not {show(raw)}.",
            {"page": "A whole number from 1 up."},
            code=INVALID,
        ) from None
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


# --- endpoints --------------------------------------------------------------------------------


@json_endpoint("GET", "POST")
def runs(request: HttpRequest, caller: Caller) -> JsonResponse:
    """GET: the user's runs, newest first (?status= filters). POST: a new run."""
    if request.method == "POST":
        return _create(request, caller)
    queryset = with_recovery(QualificationRun.objects.filter(user=caller.user)).order_by(
        "-created_at", "-pk"
    )
    raw_status = request.GET.get("status")
    if raw_status is not None:
        # Any case: ?status=failed is FAILED.
        status = raw_status.upper()
        if status not in RunStatus.values:
            raise ApiError(
                400,
                f"status must be one of {', '.join(RunStatus.values)} (in any case), not "
                f"{show(raw_status)}.",
                {"status": f"One of {', '.join(RunStatus.values)}."},
                code=INVALID,
            )
        queryset = queryset.filter(status=status)
    page, envelope = paginate(request, queryset, RUNS_PAGE_SIZE)
    return JsonResponse({**envelope, "results": runs_json(list(page.object_list))})


def _create(request: HttpRequest, caller: Caller) -> JsonResponse:
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
    key = _idempotency_key(request)
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
    body = run_json(run, RunCounts())
    return JsonResponse(body, status=201, headers={"Location": body["url"]})


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


def _idempotency_key(request: HttpRequest) -> str:
    """The `Idempotency-Key` header: 1 to 255 printable ASCII characters, or none."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return ""
    if (
        not key
        or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH
        or not (key.isascii() and key.isprintable())
    ):
        raise ApiError(
            400,
            f"The Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable "
            "ASCII characters, e.g. a UUID.",
            {"Idempotency-Key": "1 to 255 printable ASCII characters."},
            code=INVALID,
        )
    return key


def _replay(caller: Caller, key: str, body_hash: str) -> JsonResponse | None:
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
    body = run_json(run, counts_for([run])[run.pk])
    return JsonResponse(
        body, status=200, headers={"Location": body["url"], "Idempotent-Replayed": "true"}
    )


@json_endpoint("GET")
def active_runs(request: HttpRequest, caller: Caller) -> JsonResponse:
    """The notifier: the user's PENDING and PROCESSING runs, oldest first, with progress."""
    active = with_recovery(QualificationRun.objects.filter(user=caller.user)).active()
    listed = list(active.order_by("created_at", "pk")[:ACTIVE_LIMIT])
    count = len(listed) if len(listed) < ACTIVE_LIMIT else active.count()
    return JsonResponse({"count": count, "results": runs_json(listed)})


@json_endpoint("GET")
def run(request: HttpRequest, caller: Caller, pk: int) -> JsonResponse:
    found = _own_run(caller, pk)
    return JsonResponse(run_json(found, counts_for([found])[found.pk]))


@json_endpoint("GET")
def run_results(request: HttpRequest, caller: Caller, pk: int) -> JsonResponse:
    """The run's results, in input order or by score (?sort=score / -score)."""
    found = _own_run(caller, pk)
    page, envelope = paginate(request, ordered_results(found, _sort(request)), RESULTS_PAGE_SIZE)
    return JsonResponse(
        {
            **envelope,
            "run": found.pk,
            "results": [result_json(result) for result in page.object_list],
        }
    )


@json_endpoint("GET")
def run_results_csv(request: HttpRequest, caller: Caller, pk: int) -> StreamingHttpResponse:
    """The download of the run's page (Download CSV), for scripts with a token; ?sort= too."""
    return results_csv_response(_own_run(caller, pk), _sort(request))


def _sort(request: HttpRequest) -> str | None:
    raw_sort = request.GET.get("sort")
    sort = None if raw_sort is None else raw_sort.lower()
    if sort is not None and sort not in RESULT_SORTS:
        raise ApiError(
            400,
            f"sort must be one of {', '.join(RESULT_SORTS)}, not {show(raw_sort)}.",
            {"sort": f"One of {', '.join(RESULT_SORTS)}."},
            code=INVALID,
        )
    return sort


@json_endpoint("POST")
def run_continue(request: HttpRequest, caller: Caller, pk: int) -> JsonResponse:
    """The same FAILED run goes back to the queue for its prospects without a result: 200
    with the run, now PENDING. 409 while it is pending or processing (it is never executed
    twice), once it has finished, or when nothing is left."""
    found = _own_run(caller, pk)
    try:
        continue_run(found, user=caller.user)
    except RetryNotAllowed as exc:
        raise ApiError(409, sentence(str(exc)), code="run_not_continuable") from None
    except TooManyActiveRuns as exc:
        raise _too_many_active(exc) from None
    found = _own_run(caller, pk)
    body = run_json(found, counts_for([found])[found.pk])
    return JsonResponse(body, status=200, headers={"Location": body["url"]})
