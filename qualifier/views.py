"""The user's pages: runs, a new run, a run's results; and JSON-aware error pages.

Every page needs a signed-in user and shows only that user's runs: another user's run is a
404, exactly like a run that does not exist.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views import csrf, defaults
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from common.apisite import no_endpoint
from common.jsonapi import json_error
from recovery.models import QualificationRun
from recovery.outlook import Outlook, outlook_of

from .criteria import Criteria
from .export import results_csv_response
from .forms import NewRunForm
from .listings import (
    ACTIVE_LIMIT,
    RESULT_SORTS,
    RESULTS_PAGE_SIZE,
    next_step,
    ordered_results,
    percent,
    run_duration,
    with_recovery,
)
from .prospects import ProspectInputError
from .runs import (
    DailyProspectLimit,
    RetryNotAllowed,
    RunCounts,
    TooManyActiveRuns,
    continue_run,
    counts_for,
    create_run,
)
from .uploads import upload_refusal

API_PREFIX = "/api/"
HISTORY_PAGE_SIZE = 20


def user_runs(request: HttpRequest) -> QuerySet[QualificationRun]:
    return with_recovery(QualificationRun.objects.filter(user=request.user))


def format_duration(duration: dt.timedelta | None) -> str:
    if duration is None:
        return "—"
    seconds = max(0, round(duration.total_seconds()))  # sums of float seconds: 59.99996 is 1 min
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {seconds} s"
    return f"{seconds} s"


@dataclass(frozen=True)
class RunRow:
    """A run with what its row shows (counts come from one query for the whole page)."""

    run: QualificationRun
    counts: RunCounts

    @property
    def duration(self) -> str:
        return format_duration(run_duration(self.run))

    @property
    def percent(self) -> int:
        return percent(self.run)

    @property
    def next_step(self) -> str:
        return next_step(self.run)

    @property
    def outlook(self) -> Outlook:
        return outlook_of(self.run)


# --- pages --------------------------------------------------------------------------------------


@login_required
def run_list(request: HttpRequest) -> HttpResponse:
    """Active runs (kept live by the page's script) and the history of finished runs."""
    runs = user_runs(request)
    active = list(runs.active().order_by("created_at", "pk")[:ACTIVE_LIMIT])
    history = Paginator(runs.finished().order_by("-created_at", "-pk"), HISTORY_PAGE_SIZE)
    page = history.get_page(request.GET.get("page"))
    counts = counts_for([*active, *page.object_list])
    return render(
        request,
        "qualifier/run_list.html",
        {
            "nav": "runs",
            "active": [RunRow(run, counts[run.pk]) for run in active],
            "history": [RunRow(run, counts[run.pk]) for run in page.object_list],
            "page": page,
        },
    )


@login_required
def run_new(request: HttpRequest) -> HttpResponse:
    defaults = Criteria.defaults()
    if request.method == "POST":
        form = NewRunForm(
            request.POST,
            request.FILES,
            defaults=defaults,
            upload_refused=upload_refusal(request),
        )
        if form.is_valid():
            try:
                run = create_run(
                    user=request.user, prospects=form.prospects, criteria=form.criteria
                )
            except ProspectInputError as exc:
                form.add_error("prospects_file", str(exc))
            except (TooManyActiveRuns, DailyProspectLimit) as exc:
                form.add_error(None, str(exc))
            else:
                messages.success(request, f"Run {run.pk} started with {run.total} prospects.")
                for warning in form.prospects.warnings:
                    messages.warning(request, warning)
                return redirect("qualifier:run-detail", pk=run.pk)
    else:
        form = NewRunForm(defaults=defaults)
    return render(request, "qualifier/run_new.html", {"nav": "new", "form": form})


@login_required
def run_detail(request: HttpRequest, pk: int) -> HttpResponse:
    run = get_object_or_404(user_runs(request), pk=pk)
    sort = request.GET.get("sort", "")
    if sort not in RESULT_SORTS:
        sort = ""
    page = Paginator(ordered_results(run, sort), RESULTS_PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "qualifier/run_detail.html",
        {
            "nav": "runs",
            "run": run,
            "row": RunRow(run, counts_for([run])[run.pk]),
            "criteria": Criteria.from_dict(run.criteria),
            "page": page,
            "sort": sort,
            "next_sort": "-score" if sort == "score" else "score",
        },
    )


@login_required
def run_results_csv(request: HttpRequest, pk: int) -> StreamingHttpResponse:
    """The run's results as CSV (scripts use /api/qualify/runs/<id>/results.csv with a token)."""
    return results_csv_response(
        get_object_or_404(user_runs(request), pk=pk), request.GET.get("sort")
    )


@login_required
@require_POST
def run_continue(request: HttpRequest, pk: int) -> HttpResponse:
    """Continue: the same failed run goes back to the queue for the prospects left."""
    run = get_object_or_404(user_runs(request), pk=pk)
    try:
        continue_run(run, user=request.user)
    except (RetryNotAllowed, TooManyActiveRuns) as exc:
        # A second press while the first one's run is already back in the queue is news, not
        # a failure: the run continues either way.
        report = messages.info if run.is_active else messages.error
        report(request, str(exc))
        return redirect("qualifier:run-detail", pk=run.pk)
    messages.success(
        request,
        f"Run {run.pk} continues with the {run.total - run.completed} prospects that had no "
        "result; its results so far are kept.",
    )
    return redirect("qualifier:run-detail", pk=run.pk)


# --- errors -------------------------------------------------------------------------------------


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIX)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: API clients get JSON that says what to send."""
    if _is_api(request):
        return json_error(
            403,
            f"CSRF verification failed ({reason}). Send the csrftoken cookie's value in an "
            "X-CSRFToken header with session-authenticated POST requests.",
            code="csrf_failed",
        )
    return csrf.csrf_failure(request, reason=reason)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: JSON under /api/, Django's page elsewhere."""
    if _is_api(request):
        return json_error(500, "Internal server error; the error has been logged.")
    return defaults.server_error(request)


@csrf_exempt  # it only ever says "not found"
def api_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Every unknown URL under /api/ answers JSON, whatever the method (as the API's own root
    does: one answer, `common.apisite.no_endpoint`)."""
    return no_endpoint(request)
