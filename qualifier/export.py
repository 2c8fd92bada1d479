"""The results download: a run's prospects in the columns they were uploaded with, then their
results, as CSV rows that can be uploaded again as a new run. The page (`/runs/<id>/results.csv`)
and the API (`/api/qualify/runs/<id>/results.csv`) answer the same response."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

from django.http import StreamingHttpResponse

from recovery.models import QualificationRun

from .listings import ordered_results
from .models import Prospect, ProspectResult, RunInput
from .prospects import known_columns, normalize_column
from .spreadsheets import FormulaSafeWriter

#: What a run adds to each prospect's row.
RESULT_COLUMNS = ("score", "outcome", "reasons", "error")
#: The columns of a run created before runs recorded their input's columns.
LEGACY_COLUMNS = ("name", "email", "company", "domain", "title", "industry", "employees", "country")

Cell = Callable[[Prospect], str]


def input_columns(run: QualificationRun) -> list[str]:
    """The run's input columns as given, in their order."""
    stored = RunInput.objects.filter(run=run).values_list("columns", flat=True).first()
    if stored is not None:
        return list(stored)
    first = Prospect.objects.filter(run=run).order_by("position").values_list("extra", flat=True)
    return [*LEGACY_COLUMNS, *(first.first() or {})]


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
    known = known_columns(columns)
    cells = [
        (given, _cell(given, known.get(given)))
        for given in columns
        if normalize_column(given) not in RESULT_COLUMNS
    ]
    if "domain" not in known.values():
        cells.append(("domain", _cell("domain", "domain")))
    return cells


def results_csv_rows(
    run: QualificationRun, results: Iterable[ProspectResult]
) -> Iterator[list[str]]:
    """The header, then one row per result: the prospect's columns, then score, outcome,
    reasons and error. Every cell of the download is produced here."""
    cells = prospect_cells(input_columns(run))
    yield [header for header, _cell in cells] + list(RESULT_COLUMNS)
    for result in results:
        prospect = result.prospect
        yield [cell(prospect) for _header, cell in cells] + [
            "" if result.score is None else str(result.score),
            result.get_outcome_display(),
            "; ".join(result.reasons),
            result.error,
        ]


class _Echo:
    """A file-like object whose write() hands the CSV line back, for streaming."""

    def write(self, value: str) -> str:
        return value


def results_csv_response(run: QualificationRun, sort: str | None) -> StreamingHttpResponse:
    """The run's results as a CSV attachment, streamed row by row (a run may hold thousands)."""
    results = ordered_results(run, sort).iterator(chunk_size=2000)
    writer = FormulaSafeWriter(_Echo())
    lines = (writer.writerow(row) for row in results_csv_rows(run, results))
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="qualifier-run-{run.pk}-results.csv"'
    return response
