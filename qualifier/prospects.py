"""Reading prospects from an upload (CSV, or an Excel workbook) or a JSON body.

Every format shares one set of column rules (`_Columns`), and each rejects the input as a whole
on its first error: a run is never created from half a file. Every error is a
`ProspectInputError` whose text names the line (or row, or JSON item) and the column, so a user
can find and fix it in a spreadsheet.
"""

from __future__ import annotations

import csv
import datetime as dt
import difflib
import io
import json
import re
import warnings
import zipfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any

from common.inputs import parse_whole_number, show, unstorable

from .conf import conf

#: The columns we know; every other column is kept in `extra`.
KNOWN_COLUMNS = (
    "name",
    "email",
    "company",
    "website",
    "domain",
    "title",
    "industry",
    "employees",
    "country",
)
#: Other spellings of the known columns, normalized (see normalize_column).
COLUMN_ALIASES = {
    "e_mail": "email",
    "email_address": "email",
    "e_mail_address": "email",
    "full_name": "name",
    "company_name": "company",
    "job_title": "title",
    "website_url": "website",
    "employee_count": "employees",
    "number_of_employees": "employees",
}
REQUIRED_COLUMNS = ("name", "company")
#: The database's column widths (qualifier.models.Prospect).
MAX_LENGTHS = {
    "name": 255,
    "email": 255,
    "company": 255,
    "domain": 255,
    "website": 255,
    "title": 255,
    "industry": 255,
    "country": 100,
}
#: PositiveIntegerField's upper bound on every supported database.
MAX_EMPLOYEES = 2_147_483_647
#: Extra data (the columns we do not know) is bounded per value, per name and per prospect,
#: so one upload cannot make a run that no worker can hold in memory.
MAX_EXTRA_VALUE_LENGTH = 1_000
MAX_COLUMN_NAME_LENGTH = 255
MAX_EXTRA_LENGTH = 10_000
#: Digits in groups of three, one separator throughout: "1,200", "1.200.000", "12 000".
_GROUPED = re.compile(r"[0-9]{1,3}(?P<sep>[,._ \u00a0\u202f])[0-9]{3}(?:(?P=sep)[0-9]{3})*")
_SEPARATORS = re.compile(r"[\s\-]+")


@dataclass(frozen=True)
class ProspectData:
    """One prospect as read from the input, before it is stored."""

    name: str
    company: str
    _: KW_ONLY
    email: str = ""
    domain: str = ""
    title: str = ""
    industry: str = ""
    employees: int | None = None
    country: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    #: The CSV line number (header = line 1) or the JSON item number (index + 1).
    position: int


class ParsedProspects(list[ProspectData]):
    """The prospects in input order, with the input's column names as given, in its order,
    and its CSV delimiter, so a run's results can be downloaded in the shape they were
    uploaded; and warnings about columns that were read but not used."""

    def __init__(
        self,
        prospects: Iterable[ProspectData] = (),
        *,
        columns: Iterable[str] = (),
        delimiter: str = ",",
        warnings: Iterable[str] = (),
    ):
        super().__init__(prospects)
        self.columns: tuple[str, ...] = tuple(columns)
        self.delimiter = delimiter
        self.warnings: list[str] = list(warnings)


#: The most problems one input reports: each bad value of each bad row or item, in order.
MAX_REPORTED_PROBLEMS = 50

#: ProspectData's fields, which are also the stored Prospect's columns.
PROSPECT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(ProspectData))


class ProspectInputError(ValueError):
    """The input cannot be used; nothing was created."""

    #: How `line` is named in the message: CSV lines or JSON items.
    line_label = "Line"
    column_label = "column"

    def __init__(
        self,
        message: str,
        *,
        line: int | None = None,
        column: str | None = None,
        line_label: str | None = None,
    ) -> None:
        self.message = message
        self.line = line
        self.column = column
        if line_label is not None:
            self.line_label = line_label
            self.column_label = "field" if line_label == "Item" else "column"
        super().__init__(str(self))

    def __str__(self) -> str:
        where = []
        if self.line is not None:
            where.append(f"{self.line_label} {self.line}")
        if self.column is not None:
            where.append(f"{self.column_label} '{self.column}'")
        if not where:
            return self.message[:1].upper() + self.message[1:]
        return f"{', '.join(where)}: {self.message}"


class ProspectErrors(ProspectInputError):
    """Every problem found in the input (the first MAX_REPORTED_PROBLEMS of them), so that one
    answer names all there is to fix. Reads as the first problem, with a count of the rest."""

    def __init__(self, problems: Iterable[ProspectInputError]) -> None:
        found = list(problems)
        self.problems = found[:MAX_REPORTED_PROBLEMS]
        #: True when there were more problems than are listed.
        self.more = len(found) > MAX_REPORTED_PROBLEMS
        first = self.problems[0]
        super().__init__(first.message, line=first.line, column=first.column)
        self.line_label = first.line_label
        self.column_label = first.column_label

    def __str__(self) -> str:
        first = str(self.problems[0])
        others = len(self.problems) - 1
        if self.more:
            return f"{first} There are more problems; the first {len(self.problems)} are listed."
        if others:
            return f"{first} There {'are' if others > 1 else 'is'} {others} more problem" + (
                "s." if others > 1 else "."
            )
        return first

    def messages(self) -> list[str]:
        """One line per problem, then one saying the list stops, when it does."""
        lines = [str(problem) for problem in self.problems]
        if self.more:
            lines.append(
                f"There are more problems; only the first {MAX_REPORTED_PROBLEMS} are listed."
            )
        return lines


class _Problems(list[ProspectInputError]):
    """Problems collected while reading, for ProspectErrors; `full` once enough are known."""

    def add(self, error: ProspectInputError) -> None:
        self.extend(error.problems if isinstance(error, ProspectErrors) else [error])

    @property
    def full(self) -> bool:
        return len(self) > MAX_REPORTED_PROBLEMS

    def raise_any(self) -> None:
        if self:
            raise ProspectErrors(self)


class TooManyProspects(ProspectInputError):
    """More prospects than QUALIFIER_MAX_PROSPECTS (the API answers 413)."""


def _max_rows(max_rows: int | None) -> int:
    return conf.QUALIFIER_MAX_PROSPECTS if max_rows is None else max_rows


def known_columns(names: Iterable[str]) -> dict[str, str]:
    """{name as given: the field it fills} for the columns we know, by the readers' rules
    (column names the readers accepted; raises ProspectInputError otherwise)."""
    columns = _Columns.from_names(names, error=_ErrorFactory(None, "Line"))
    return {given: normalized for normalized, given in columns.known.items()}


def normalize_column(name: str) -> str:
    """'  Company Name ' -> 'company_name': headers match whatever their case or spacing."""
    return _SEPARATORS.sub("_", name.strip().lower())


def known_field(name: str) -> str | None:
    """The known field a column fills ('E-Mail' -> 'email'), or None for extra data."""
    normalized = normalize_column(name)
    if normalized in KNOWN_COLUMNS:
        return normalized
    return COLUMN_ALIASES.get(normalized)


def _looks_known(name: str) -> str | None:
    """The known field that an extra column's name is a near miss of ('Emial' -> 'email')."""
    normalized = normalize_column(name)
    spellings = {**{column: column for column in KNOWN_COLUMNS}, **COLUMN_ALIASES}
    close = difflib.get_close_matches(normalized, spellings, n=1, cutoff=0.8)
    return spellings[close[0]] if close else None


def parse_employees(value: str, *, decimal_mark: str = ".") -> int | None:
    """A whole number such as 250, 1,200 or 12 000; empty means unknown. Raises ValueError.

    One separator followed by three digits is ambiguous: "1.200" is 1200 where the decimal
    mark is a comma and 1.2 where it is a point. The file says which (`decimal_mark`); a
    separator that appears twice ("1.200.000") can only group digits.
    """
    text = value.strip()
    if not text:
        return None
    grouped = _GROUPED.fullmatch(text)
    digits = text
    if grouped:
        separator = grouped["sep"]
        digits = text.replace(separator, "")
        if separator == decimal_mark and text.count(separator) == 1:
            raise ValueError(
                f"{show(value)} is not a whole number: in this file '{decimal_mark}' is the "
                f"decimal mark. If the count is {digits}, write {digits}."
            )
    try:
        return parse_whole_number(digits, minimum=0, maximum=MAX_EMPLOYEES)
    except ValueError:
        pass
    if digits.isascii() and digits.isdigit():
        raise ValueError(f"{show(value)} is too large for an employee count.")
    raise ValueError(f"{show(value)} is not a whole number.")


@dataclass(frozen=True)
class _Columns:
    """What the header (CSV) or an item's keys (JSON) mean: known fields and extra data."""

    known: dict[str, str]  # normalized name -> the name as given
    extra: dict[str, str]  # the name as given -> the name as given
    #: The decimal mark of the file's numbers (see parse_employees).
    decimal_mark: str = "."

    @classmethod
    def from_names(
        cls, names: Iterable[str], *, error: _ErrorFactory, decimal_mark: str = "."
    ) -> _Columns:
        known: dict[str, str] = {}
        extra: dict[str, str] = {}
        seen: dict[str, str] = {}
        max_extra = conf.QUALIFIER_MAX_EXTRA_COLUMNS
        for given in names:
            problem = unstorable(given)
            if problem:
                raise error(f"the column name {show(given)} {problem}.")
            normalized = normalize_column(given)
            if not normalized:
                continue
            if len(given) > MAX_COLUMN_NAME_LENGTH:
                raise error(
                    f"the column name {show(given)} is {len(given):,} characters long; at most "
                    f"{MAX_COLUMN_NAME_LENGTH} are allowed."
                )
            field_name = known_field(given)
            key = field_name or normalized
            if key in seen:
                raise error(
                    f"the column appears twice (as '{seen[key]}' and '{given}').",
                    column=given,
                )
            seen[key] = given
            if field_name is not None:
                known[field_name] = given
            elif len(extra) < max_extra:
                extra[given] = given
            else:
                raise error(
                    f"there are more than {max_extra} columns besides the known ones "
                    f"({', '.join(KNOWN_COLUMNS)}); at most {max_extra} are kept as extra "
                    f"data. Remove the columns you do not need, from {show(given)} on."
                )
        if "domain" in known and "website" in known:
            # Only one is used; the website is kept as it was given, with the other columns.
            website = known.pop("website")
            extra[website] = website
        return cls(known=known, extra=extra, decimal_mark=decimal_mark)

    def missing_required(self) -> list[str]:
        return [name for name in REQUIRED_COLUMNS if name not in self.known]

    def warnings(self) -> list[str]:
        """A sentence for each column that looks like a known one but is kept as extra data."""
        found = []
        for given in self.extra:
            field_name = known_field(given) or _looks_known(given)
            if field_name is None:
                continue
            if field_name == "website" and "domain" in self.known:
                field_name = "domain"  # the domain column wins over the website
            if field_name in self.known:
                found.append(
                    f"The column '{given}' is kept as it is but not used: the column "
                    f"'{self.known[field_name]}' gives the prospect's {field_name}."
                )
            else:
                found.append(
                    f"The column '{given}' is kept as it is but not used: it looks like "
                    f"'{field_name}', which is not in the file. Rename it to '{field_name}' "
                    "if that is what it holds."
                )
        return found

    def build(
        self,
        values: Mapping[str, str],
        *,
        position: int,
        error: _ErrorFactory,
        reported: Collection[str] = (),
    ):
        """A ProspectData from one row's values keyed by the names as given; ProspectErrors
        naming every bad value of the row otherwise. Columns in `reported` already have a
        problem reported by the caller, and are not judged again."""
        problems = _Problems()
        for given, value in values.items():
            problem = unstorable(value)
            if problem:
                # PostgreSQL refuses NUL and lone surrogates in text.
                problems.add(error(f"the value {problem}.", column=given))
        bad = {problem.column for problem in problems} | set(reported)
        fields: dict[str, str] = {}
        for normalized, given in self.known.items():
            if given in bad:
                continue
            value = values.get(given, "").strip()
            limit = MAX_LENGTHS.get(normalized)
            if limit is not None and len(value) > limit:
                problems.add(
                    error(
                        f"the value is {len(value)} characters long; at most {limit} are allowed.",
                        column=given,
                    )
                )
                continue
            fields[normalized] = value
        for required in REQUIRED_COLUMNS:
            given = self.known.get(required)
            if given is None:
                problems.add(error("a value is required here.", column=required))
            elif given not in bad and not fields.get(required):
                problems.add(error("a value is required here.", column=given))
        employees = None
        try:
            employees = parse_employees(fields.get("employees", ""), decimal_mark=self.decimal_mark)
        except ValueError as exc:
            problems.add(error(str(exc), column=self.known["employees"]))
        extra = self._extra(values, error, problems, skip=bad)
        problems.raise_any()
        return ProspectData(
            name=fields.get("name", ""),
            company=fields.get("company", ""),
            email=fields.get("email", ""),
            domain=fields.get("domain") or fields.get("website", ""),
            title=fields.get("title", ""),
            industry=fields.get("industry", ""),
            employees=employees,
            country=fields.get("country", ""),
            extra=extra,
            position=position,
        )

    def _extra(
        self,
        values: Mapping[str, str],
        error: _ErrorFactory,
        problems: _Problems,
        *,
        skip: set[str | None],
    ) -> dict[str, str]:
        """The non-empty values of the unknown columns, each and all together bounded."""
        extra: dict[str, str] = {}
        total = 0
        for given in self.extra:
            value = values.get(given, "")
            if given in skip or not value.strip():
                continue
            if len(value) > MAX_EXTRA_VALUE_LENGTH:
                problems.add(
                    error(
                        f"the value is {len(value):,} characters long; at most "
                        f"{MAX_EXTRA_VALUE_LENGTH:,} are kept in a column that is not known.",
                        column=given,
                    )
                )
                continue
            total += len(given) + len(value)
            if total > MAX_EXTRA_LENGTH:
                problems.add(
                    error(
                        f"the columns that are not known hold more than {MAX_EXTRA_LENGTH:,} "
                        "characters in this row, names included; that is the most kept per "
                        "prospect.",
                        column=given,
                    )
                )
                break
            extra[given] = value
        return extra


class _ErrorFactory:
    """Builds errors that name the current line or item."""

    def __init__(self, line: int | None, line_label: str) -> None:
        self.line = line
        self.line_label = line_label

    def __call__(self, message: str, *, column: str | None = None) -> ProspectInputError:
        return ProspectInputError(
            message, line=self.line, column=column, line_label=self.line_label
        )


# --- CSV ----------------------------------------------------------------------------------


#: How every kind of spreadsheet starts: an .xlsx is a ZIP archive, an .xls an OLE2 file.
ZIP_MAGIC = b"PK\x03\x04"
OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
XLSX_SUFFIX = ".xlsx"


def parse_upload(data: bytes, *, name: str = "", max_rows: int | None = None) -> ParsedProspects:
    """Reads an uploaded file by what it holds, whatever its name says: an Excel workbook
    (.xlsx), or else CSV. An old .xls workbook, or another archive, is refused with what to do."""
    if data.startswith(ZIP_MAGIC):
        return parse_xlsx(data, max_rows=max_rows)
    if data.startswith(OLE2_MAGIC):
        raise ProspectInputError(
            "the file is an Excel 97-2003 workbook (.xls), which cannot be read. Save it as "
            "'Excel Workbook (.xlsx)' or 'CSV UTF-8' and upload it again."
        )
    if name.lower().endswith(XLSX_SUFFIX):
        raise ProspectInputError(
            "the file is named .xlsx but is not an Excel workbook. Save it from the "
            "spreadsheet as 'Excel Workbook (.xlsx)' or 'CSV UTF-8' and upload it again."
        )
    return parse_csv(data, max_rows=max_rows)


def parse_csv(data: bytes, *, max_rows: int | None = None) -> ParsedProspects:
    """Reads a UTF-8 CSV file (with or without a byte-order mark) with a header row."""
    text = _decode(data)
    if not text.strip():
        raise ProspectInputError(
            "the file is empty; it needs a header row with at least the columns "
            "'name' and 'company', and one row per prospect.",
            line=1,
        )
    delimiter = detect_delimiter(text)
    return _parse_rows(
        _csv_rows(text, delimiter),
        line_label="Line",
        delimiter=delimiter,
        decimal_mark="," if delimiter == ";" else ".",
        max_rows=max_rows,
    )


def _parse_rows(
    rows: Iterator[tuple[int, list[str]]],
    *,
    line_label: str,
    delimiter: str,
    decimal_mark: str,
    max_rows: int | None,
) -> ParsedProspects:
    """The prospects of a table's rows, (line or row number, cells), the first the header."""
    limit = _max_rows(max_rows)
    first = next(rows, None)
    if first is None:
        raise ProspectInputError(
            "the file has no header row; it needs at least the columns 'name' and 'company'.",
            line=1,
            line_label=line_label,
        )
    header_line, raw_header = first
    header = [name.strip() for name in raw_header]
    columns = _Columns.from_names(
        header, error=_ErrorFactory(header_line, line_label), decimal_mark=decimal_mark
    )
    missing = columns.missing_required()
    if missing:
        found = ", ".join(f"'{name}'" for name in header if name.strip()) or "none"
        raise ProspectInputError(
            f"the required column is missing (found: {found}).",
            line=header_line,
            column=missing[0],
            line_label=line_label,
        )
    prospects = ParsedProspects(
        columns=[name for name in header if normalize_column(name)],
        delimiter=delimiter,
        warnings=columns.warnings(),
    )
    problems = _Problems()
    rows_read = 0
    for line, cells in rows:
        error = _ErrorFactory(line, line_label)
        if rows_read >= limit:
            raise TooManyProspects(
                f"the file has more than {limit:,} prospects; at most {limit:,} are allowed "
                "per run. Split it into smaller files.",
                line=line,
                line_label=line_label,
            )
        rows_read += 1
        if problems.full:
            continue  # enough to report; the rows are still counted against the limit
        if len(cells) > len(header):
            problems.add(
                error(f"the row has {len(cells)} values but the header has {len(header)} columns.")
            )
            continue
        values = dict(zip(header, cells, strict=False))
        try:
            prospects.append(columns.build(values, position=line, error=error))
        except ProspectInputError as exc:
            problems.add(exc)
    problems.raise_any()
    if not prospects:
        raise ProspectInputError(
            "the file has a header but no prospects below it.",
            line=header_line + 1,
            line_label=line_label,
        )
    return prospects


# --- Excel ----------------------------------------------------------------------------------

#: A workbook is a ZIP archive of XML: its parts together may unpack to at most this many
#: times the upload limit, so a small file cannot unpack into gigabytes.
MAX_XLSX_EXPANSION = 10


def parse_xlsx(data: bytes, *, max_rows: int | None = None) -> ParsedProspects:
    """Reads the first sheet of an Excel workbook (.xlsx), read-only, header in its first
    non-blank row; errors name the sheet's row numbers. Limits as for CSV."""
    from openpyxl import load_workbook  # only an upload of a workbook needs it

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(part.file_size for part in archive.infolist())
            is_workbook = "xl/workbook.xml" in archive.namelist()
    except zipfile.BadZipFile:
        raise ProspectInputError(
            "the file looks like an Excel workbook but is damaged. Save it again as "
            "'Excel Workbook (.xlsx)' or 'CSV UTF-8' and upload it again."
        ) from None
    if not is_workbook:
        raise ProspectInputError(
            "the file is a ZIP archive but not an Excel workbook (.xlsx). Save the sheet as "
            "'Excel Workbook (.xlsx)' or 'CSV UTF-8' and upload it again."
        )
    limit = MAX_XLSX_EXPANSION * conf.QUALIFIER_MAX_UPLOAD_BYTES
    if unpacked > limit:
        raise ProspectInputError(
            f"the workbook unpacks to {unpacked:,} bytes; at most {limit:,} are read. Save "
            "the sheet on its own, or as 'CSV UTF-8', and upload it again."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # openpyxl warns about styles it does not read
            workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many kinds on a damaged workbook
        raise ProspectInputError(
            f"the workbook cannot be read ({type(exc).__name__}). Save it again as "
            "'Excel Workbook (.xlsx)' or 'CSV UTF-8' and upload it again."
        ) from None
    try:
        sheet = workbook.worksheets[0]
        return _parse_rows(
            _sheet_rows(sheet),
            line_label="Row",
            delimiter=",",
            decimal_mark=".",
            max_rows=max_rows,
        )
    finally:
        workbook.close()


def _sheet_rows(sheet: Any) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells as text) per non-blank row, trailing empty cells dropped."""
    for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
        cells = [_cell_text(value) for value in values]
        while cells and not cells[-1].strip():
            cells.pop()
        if cells:
            yield number, cells


def _cell_text(value: Any) -> str:
    """A cell's value as the text a CSV export of it would hold."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _encoding_error(data, exc) from None


def _encoding_error(data: bytes, exc: UnicodeDecodeError) -> ProspectInputError:
    """Points at the cell holding the first byte that is not UTF-8."""
    bad = data[exc.start : exc.start + 1].hex().upper()
    message = (
        f"the file is not UTF-8 (byte 0x{bad} cannot be read). Save it as "
        "'CSV UTF-8' and upload it again."
    )
    line = data[: exc.start].count(b"\n") + 1
    column: str | None = None
    text = data.decode("utf-8-sig", errors="surrogateescape")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=detect_delimiter(text)))
    except csv.Error:
        rows = []
    header = rows[0] if rows else []
    for number, row in enumerate(rows):
        for index, cell in enumerate(row):
            if any("\udc80" <= char <= "\udcff" for char in cell):
                if number > 0 and index < len(header):
                    column = header[index].encode("utf-8", "replace").decode()
                break
        else:
            continue
        break
    return ProspectInputError(message, line=line, column=column)


def detect_delimiter(text: str) -> str:
    """Comma, unless the header has none and has semicolons or tabs instead (spreadsheets in
    many European locales export with semicolons)."""
    first_line = text.lstrip().partition("\n")[0]
    if "," in first_line:
        return ","
    return next((d for d in (";", "\t") if d in first_line), ",")


def _csv_rows(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) per non-blank record; quoted cells may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    previous_end = 0
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ProspectInputError(
                f"the CSV cannot be read ({exc}).", line=reader.line_num
            ) from None
        start = previous_end + 1
        previous_end = reader.line_num
        if not any(cell.strip() for cell in cells):
            continue
        yield start, cells


# --- JSON ---------------------------------------------------------------------------------


def parse_json(payload: object, *, max_rows: int | None = None) -> ParsedProspects:
    """Reads a list of objects with the same keys as the CSV columns (item N = index + 1)."""
    limit = _max_rows(max_rows)
    if not isinstance(payload, list):
        raise ProspectInputError(
            f"expected a list of prospects (objects), got {_json_type(payload)}."
        )
    if not payload:
        raise ProspectInputError("the list of prospects is empty.")
    if len(payload) > limit:
        raise TooManyProspects(
            f"{len(payload):,} prospects were sent; at most {limit:,} are allowed per run.",
            line=limit + 1,
            line_label="Item",
        )
    prospects = ParsedProspects()
    columns: dict[str, None] = {}  # every key of every item, in the order first seen
    problems = _Problems()
    for index, item in enumerate(payload):
        if problems.full:
            break
        error = _ErrorFactory(index + 1, "Item")
        try:
            prospect, values = _json_prospect(item, position=index + 1, error=error)
        except ProspectInputError as exc:
            problems.add(exc)
            continue
        prospects.append(prospect)
        columns.update(dict.fromkeys(key for key in values if normalize_column(key)))
    problems.raise_any()
    # The items' keys together are the run's columns (its download's header): they keep the
    # rules each item's keys kept alone, so two items cannot bring 50 extra keys each, or spell
    # one known field two ways ("Company" and "company").
    _Columns.from_names(list(columns), error=_ErrorFactory(None, "Item"))
    prospects.columns = tuple(columns)
    return prospects


def _json_prospect(
    item: object, *, position: int, error: _ErrorFactory
) -> tuple[ProspectData, dict[str, str]]:
    """One item's prospect and its values as text; ProspectErrors naming each bad field."""
    if not isinstance(item, dict):
        raise error(f"expected an object with the prospect's fields, got {_json_type(item)}.")
    item_columns = _Columns.from_names([str(key) for key in item], error=error)
    problems = _Problems()
    values: dict[str, str] = {}
    for key, value in item.items():
        try:
            values[str(key)] = _json_text(value, key, error)
        except ProspectInputError as exc:
            problems.add(exc)
    try:
        # Checked even after a bad value, so that every bad field is named at once.
        prospect = item_columns.build(
            values,
            position=position,
            error=error,
            reported={str(problem.column) for problem in problems},
        )
    except ProspectInputError as exc:
        problems.add(exc)
    problems.raise_any()
    return prospect, values


def _json_text(value: Any, key: str, error: _ErrorFactory) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        if known_field(key) is not None:
            raise error(f"expected text or a number, got {_json_type(value)}.", column=key)
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if known_field(key) == "employees":
            if not value.is_integer():
                raise error(f"{value!r} is not a whole number.", column=key)
            return str(int(value))
        return repr(value)
    if known_field(key) is not None:
        raise error(f"expected text or a number, got {_json_type(value)}.", column=key)
    return json.dumps(value, ensure_ascii=False)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
