"""The results download: every prospect of a run in the columns it was uploaded with, then its
result (or "Not scored" where it has none yet), as CSV rows that can be uploaded again as a new
run. The file starts with a UTF-8 byte-order mark and uses the upload's delimiter, so a
spreadsheet opens it right in every locale. The page (`/runs/<id>/results.csv`) and the API
(`/api/qualify/runs/<id>/results.csv`) answer the same response."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from django.db.models import F, QuerySet
from django.http import StreamingHttpResponse

from recovery.models import QualificationRun

from .listings import RESULT_SORTS
from .models import Outcome, Prospect, RunInput
from .prospects import ProspectInputError, known_columns, known_field, normalize_column
from .spreadsheets import FormulaSafeWriter

#: What a run adds to each prospect's row.
RESULT_COLUMNS = ("score", "outcome", "reasons", "error")
#: The outcome cell of a prospect without a result (the run failed, or is still working).
NOT_SCORED = "Not scored"
#: Spreadsheets read a file that starts with it as UTF-8 rather than the locale's code page.
BYTE_ORDER_MARK = "\ufeff"
OUTCOME_LABELS = dict(Outcome.choices)
#: The columns of a run created before runs recorded their input's columns.
LEGACY_COLUMNS = ("name", "email", "company", "domain", "title", "industry", "employees", "country")

Cell = Callable[[Prospect], str]


def input_shape(run: QualificationRun) -> tuple[list[str], str]:
    """The run's input columns as given, in their order, and its CSV delimiter."""
    stored = RunInput.objects.filter(run=run).values_list("columns", "delimiter").first()
    if stored is not None:
        return list(stored[0]), stored[1]
    first = Prospect.objects.filter(run=run).order_by("position").values_list("extra", flat=True)
    return [*LEGACY_COLUMNS, *(first.first() or {})], ","


def prospects_with_results(run: QualificationRun, sort: str | None) -> QuerySet[Prospect]:
    """Every prospect of the run with its result's fields (None without one: a prospect has at
    most one result), by score when `sort` asks, else in input order."""
    order = RESULT_SORTS.get(sort or "", ("prospect__position",))
    return (
        Prospect.objects.filter(run=run)
        .annotate(
            score=F("results__score"),
            outcome=F("results__outcome"),
            reasons=F("results__reasons"),
            error=F("results__error"),
        )
        .order_by(*(_on_prospect(term) for term in order))
    )


def _on_prospect(term: object) -> object:
    """A result ordering term (listings.RESULT_SORTS) as seen from the prospect."""
    if isinstance(term, str):
        return term.removeprefix("prospect__")
    return term  # F("score") names the annotation of the same name


def _cell(given: str, field: str | None) -> Cell:
    """How one input column's value is read back from a stored prospect."""
    if field is None:
        return lambda prospect: prospect.extra.get(given, "")
    if field == "domain":
        return lambda prospect: prospect.domain_name
    if field == "website":  # only stored as the domain when the input had no domain column
        return lambda prospect: prospect.domain
    if field == "employees":
        return lambda prospect: "" if prospect.employees is None else str(prospect.employees)
    return lambda prospect: getattr(prospect, field)


def prospect_cells(columns: Sequence[str]) -> list[tuple[str, Cell]]:
    """(header, cell) for each prospect column of the download: the input's columns in its
    order, and a `domain` column when the input had none (the domain the scorer judged).
    Input columns named like the result columns (a download uploaded again) give way to this
    run's results."""
    try:
        known = known_columns(columns)
    except ProspectInputError:
        # Columns stored before the JSON reader checked the items' keys together (too many
        # extra keys, or one field spelled two ways): the first spelling of each field fills
        # it, and every other column is written as the extra data it was kept as.
        known = {}
        for given in columns:
            field = known_field(given)
            if field is not None and field not in known.values():
                known[given] = field
    cells = [
        (given, _cell(given, known.get(given)))
        for given in columns
        if normalize_column(given) not in RESULT_COLUMNS
    ]
    if "domain" not in known.values():
        cells.append(("domain", _cell("domain", "domain")))
    return cells


def results_csv_rows(columns: Sequence[str], prospects: Iterable[Prospect]) -> Iterator[list[str]]:
    """The header, then one row per prospect (from prospects_with_results): its columns, then
    score, outcome, reasons and error. Every cell of the download is produced here."""
    cells = prospect_cells(columns)
    yield [header for header, _cell in cells] + list(RESULT_COLUMNS)
    for prospect in prospects:
        scored = prospect.outcome is not None
        yield [cell(prospect) for _header, cell in cells] + [
            "" if prospect.score is None else str(prospect.score),
            OUTCOME_LABELS[prospect.outcome] if scored else NOT_SCORED,
            "; ".join(prospect.reasons or ()),
            prospect.error or "",
        ]


class _Echo:
    """A file-like object whose write() hands the CSV line back, for streaming."""

    def write(self, value: str) -> str:
        return value


def results_csv_lines(run: QualificationRun, sort: str | None) -> Iterator[str]:
    """The download's text, line by line, the byte-order mark first."""
    columns, delimiter = input_shape(run)
    prospects = prospects_with_results(run, sort).iterator(chunk_size=2000)
    writer = FormulaSafeWriter(_Echo(), delimiter=delimiter)
    yield BYTE_ORDER_MARK
    for row in results_csv_rows(columns, prospects):
        yield writer.writerow(row)


def results_csv_response(run: QualificationRun, sort: str | None) -> StreamingHttpResponse:
    """The run's results as a CSV attachment, streamed row by row (a run may hold thousands)."""
    response = StreamingHttpResponse(
        results_csv_lines(run, sort), content_type="text/csv; charset=utf-8"
    )
    response["Content-Disposition"] = f'attachment; filename="qualifier-run-{run.pk}-results.csv"'
    return response
