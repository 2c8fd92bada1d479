"""Reading prospects from CSV and JSON: what is accepted, and every way input is rejected."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.test import override_settings

from qualifier.prospects import (
    MAX_REPORTED_PROBLEMS,
    ProspectData,
    ProspectErrors,
    ProspectInputError,
    TooManyProspects,
    parse_csv,
    parse_json,
    parse_upload,
)


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\n".join(lines) + "\n").encode(encoding)


# --- every problem at once ------------------------------------------------------------------


def test_a_csv_reports_every_bad_row_and_value_in_order():
    with pytest.raises(ProspectErrors) as caught:
        parse_csv(csv_bytes("name,company,employees", "Ada,,1", "Grace,Cobol,lots", ",,x"))
    assert [str(problem) for problem in caught.value.problems] == [
        "Line 2, column 'company': a value is required here.",
        "Line 3, column 'employees': 'lots' is not a whole number.",
        "Line 4, column 'name': a value is required here.",
        "Line 4, column 'company': a value is required here.",
        "Line 4, column 'employees': 'x' is not a whole number.",
    ]
    assert str(caught.value) == (
        "Line 2, column 'company': a value is required here. There are 4 more problems."
    )


def test_one_problem_reads_as_before():
    with pytest.raises(ProspectInputError) as caught:
        parse_csv(csv_bytes("name,company", "Ada,"))
    assert str(caught.value) == "Line 2, column 'company': a value is required here."


def test_the_problems_listed_are_bounded_and_say_so():
    rows = ["name,company"] + ["Ada,"] * (MAX_REPORTED_PROBLEMS + 30)
    with pytest.raises(ProspectErrors) as caught:
        parse_csv(csv_bytes(*rows))
    assert len(caught.value.problems) == MAX_REPORTED_PROBLEMS
    assert caught.value.more
    assert caught.value.messages()[-1] == (
        f"There are more problems; only the first {MAX_REPORTED_PROBLEMS} are listed."
    )


def test_too_many_rows_is_still_told_when_rows_are_also_bad():
    with pytest.raises(TooManyProspects):
        parse_csv(csv_bytes("name,company", "Ada,", "Grace,Cobol", "Alan,Bletchley"), max_rows=2)


def test_json_items_report_every_bad_field():
    with pytest.raises(ProspectErrors) as caught:
        parse_json([{"company": "Engines", "employees": [1]}, 7, {"name": "Ada", "company": "E"}])
    assert [str(problem) for problem in caught.value.problems] == [
        "Item 1, field 'employees': expected text or a number, got a list.",
        "Item 1, field 'name': a value is required here.",
        "Item 2: expected an object with the prospect's fields, got a number.",
    ]


# --- CSV: what is accepted --------------------------------------------------------------------


def test_csv_reads_every_known_column():
    data = csv_bytes(
        "name,email,company,website,title,industry,employees,country",
        "Ann Lee,ann@acme.io,Acme,acme.io,VP Sales,Software,120,Germany",
    )
    assert parse_csv(data) == [
        ProspectData(
            name="Ann Lee",
            company="Acme",
            email="ann@acme.io",
            domain="acme.io",
            title="VP Sales",
            industry="Software",
            employees=120,
            country="Germany",
            extra={},
            position=2,
        )
    ]


def test_only_name_and_company_are_required():
    [prospect] = parse_csv(csv_bytes("company,name", "Acme,Ann"))
    assert (prospect.name, prospect.company, prospect.employees, prospect.domain) == (
        "Ann",
        "Acme",
        None,
        "",
    )


def test_csv_with_a_byte_order_mark_reads_like_one_without():
    plain = csv_bytes("name,company", "Ann,Acme")
    assert parse_csv(b"\xef\xbb\xbf" + plain) == parse_csv(plain)


def test_header_names_ignore_case_and_surrounding_spaces():
    [prospect] = parse_csv(csv_bytes(" Name , COMPANY ,Employees", "Ann,Acme,5"))
    assert (prospect.name, prospect.company, prospect.employees) == ("Ann", "Acme", 5)


def test_domain_column_is_read_like_website():
    [prospect] = parse_csv(csv_bytes("name,company,domain", "Ann,Acme,acme.io"))
    assert prospect.domain == "acme.io"


def test_unknown_columns_are_kept_as_extra_data():
    [prospect] = parse_csv(csv_bytes("name,company,LinkedIn,Notes", "Ann,Acme,ann-lee,met at expo"))
    assert prospect.extra == {"LinkedIn": "ann-lee", "Notes": "met at expo"}


def test_values_are_trimmed_and_non_ascii_text_survives():
    [prospect] = parse_csv(csv_bytes("name,company,country", "  Zoë Müller , Café Ωmega ,  "))
    assert (prospect.name, prospect.company, prospect.country) == ("Zoë Müller", "Café Ωmega", "")


def test_position_is_the_data_line_number_and_blank_lines_are_skipped():
    prospects = parse_csv(csv_bytes("name,company", "A,a", "", "B,b", ",", "C,c"))
    assert [(p.name, p.position) for p in prospects] == [("A", 2), ("B", 4), ("C", 6)]


def test_a_quoted_value_may_span_lines_and_later_lines_keep_their_numbers():
    data = csv_bytes("name,company,notes", 'A,a,"first', 'second"', "B,b,x")
    prospects = parse_csv(data)
    assert [(p.name, p.position) for p in prospects] == [("A", 2), ("B", 4)]
    assert prospects[0].extra["notes"] == "first\nsecond"


def test_windows_line_endings_are_read():
    [prospect] = parse_csv(b"name,company\r\nAnn,Acme\r\n")
    assert (prospect.name, prospect.company, prospect.position) == ("Ann", "Acme", 2)


def test_semicolon_separated_files_from_spreadsheets_are_read():
    [prospect] = parse_csv(csv_bytes("name;company;employees", "Ann;Acme;12"))
    assert (prospect.name, prospect.company, prospect.employees) == ("Ann", "Acme", 12)


@pytest.mark.parametrize(
    ("given", "expected"), [("250", 250), ("1,200", 1200), ("12 000", 12000), ("", None)]
)
def test_employee_counts_may_use_thousands_separators(given, expected):
    [prospect] = parse_csv(csv_bytes("name,company,employees", f'Ann,Acme,"{given}"'))
    assert prospect.employees == expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [("1.200", 1200), ("1 200", 1200), ("1\u00a0200", 1200), ("1.200.000", 1200000), ("12", 12)],
)
def test_semicolon_files_group_digits_with_points_as_decimal_comma_spreadsheets_do(given, expected):
    [prospect] = parse_csv(csv_bytes("name;company;employees", f"Ann;Acme;{given}"))
    assert prospect.employees == expected


def test_a_separator_that_appears_twice_can_only_group_digits_in_any_file():
    [prospect] = parse_csv(csv_bytes("name,company,employees", "Ann,Acme,1.200.000"))
    assert prospect.employees == 1_200_000


@pytest.mark.parametrize(
    ("header", "row", "given", "decimal_mark"),
    [
        ("name;company;employees", "Ann;Acme;1,200", "1,200", ","),
        ("name,company,employees", "Ann,Acme,1.200", "1.200", "."),
        ("name\tcompany\temployees", "Ann\tAcme\t1.200", "1.200", "."),
    ],
    ids=["comma-in-semicolon-file", "point-in-comma-file", "point-in-tab-file"],
)
def test_a_decimal_mark_that_could_be_a_fraction_is_rejected_saying_how_to_write_it(
    header, row, given, decimal_mark
):
    error = rejected(csv_bytes(header, row))
    assert (error.line, error.column) == (2, "employees")
    assert str(error) == (
        f"Line 2, column 'employees': '{given}' is not a whole number: in this file "
        f"'{decimal_mark}' is the decimal mark. If the count is 1200, write 1200."
    )


def test_the_input_columns_are_kept_as_given_in_their_order():
    prospects = parse_csv(csv_bytes("Notes,Name,company,Employees", "x,Ann,Acme,3"))
    assert prospects.columns == ("Notes", "Name", "company", "Employees")


def test_with_both_website_and_domain_the_domain_is_used_and_the_website_kept_as_extra():
    [prospect] = parse_csv(
        csv_bytes("name,company,website,domain", "Ann,Acme,https://www.acme.io/about,acme.io")
    )
    assert (prospect.domain, prospect.extra) == (
        "acme.io",
        {"website": "https://www.acme.io/about"},
    )


def test_a_row_with_fewer_values_than_columns_leaves_the_rest_empty():
    [prospect] = parse_csv(csv_bytes("name,company,title,country", "Ann,Acme"))
    assert (prospect.title, prospect.country) == ("", "")


def test_exactly_the_maximum_number_of_rows_is_accepted():
    data = csv_bytes("name,company", *(f"P{i},C" for i in range(5)))
    assert len(parse_csv(data, max_rows=5)) == 5


# --- CSV: every way it is rejected -------------------------------------------------------------


def rejected(data: bytes, **kwargs) -> ProspectInputError:
    with pytest.raises(ProspectInputError) as info:
        parse_csv(data, **kwargs)
    return info.value


def test_a_wrong_encoding_is_rejected_naming_the_line_and_column():
    data = csv_bytes("name,company,country", "Ann,Acme,DE", "René,Café Noir,FR", encoding="latin-1")
    error = rejected(data)
    assert (error.line, error.column) == (3, "name")
    assert str(error).startswith("Line 3, column 'name': the file is not UTF-8 (byte 0xE9")


def test_a_latin1_semicolon_file_is_rejected_naming_the_column_not_the_whole_header():
    data = csv_bytes("name;company;employees", "René;Café Noir;12", encoding="latin-1")
    error = rejected(data)
    assert (error.line, error.column) == (2, "name")
    assert str(error).startswith("Line 2, column 'name': the file is not UTF-8 (byte 0xE9")


def test_a_utf16_file_is_rejected_as_not_utf8():
    error = rejected(csv_bytes("name,company", "Ann,Acme", encoding="utf-16"))
    assert error.line == 1
    assert "not UTF-8" in str(error)


def test_a_missing_required_column_is_rejected_naming_it():
    error = rejected(csv_bytes("name,email", "Ann,ann@acme.io"))
    assert (error.line, error.column) == (1, "company")
    assert str(error) == (
        "Line 1, column 'company': the required column is missing (found: 'name', 'email')."
    )


def test_more_rows_than_allowed_are_rejected_as_too_many():
    data = csv_bytes("name,company", *(f"P{i},C" for i in range(6)))
    error = rejected(data, max_rows=5)
    assert isinstance(error, TooManyProspects)
    assert error.line == 7
    assert "more than 5 prospects" in str(error)


def test_the_row_limit_defaults_to_the_qualifier_max_prospects_setting():
    data = csv_bytes("name,company", *(f"P{i},C" for i in range(4)))
    with override_settings(QUALIFIER_MAX_PROSPECTS=3):
        assert isinstance(rejected(data), TooManyProspects)
    with override_settings(QUALIFIER_MAX_PROSPECTS=4):
        assert len(parse_csv(data)) == 4


@pytest.mark.parametrize(
    "value", ["lots", "12.5", "-3", "1e3", "99999999999", "\u00b2", "\u0661\u0662\u0663"]
)
def test_a_non_numeric_employee_count_is_rejected_naming_line_and_column(value):
    error = rejected(csv_bytes("name,company,employees", "Ann,Acme,10", f"Bob,Beta,{value}"))
    assert (error.line, error.column) == (3, "employees")
    assert str(error).startswith(f"Line 3, column 'employees': '{value}' is ")


def test_the_example_message_for_a_bad_employee_count_is_a_full_sentence():
    lines = ["name,company,employees", *(f"P{i},C,1" for i in range(5)), "Ann,Acme,lots"]
    assert str(rejected(csv_bytes(*lines))) == (
        "Line 7, column 'employees': 'lots' is not a whole number."
    )


@pytest.mark.parametrize(("row", "column"), [(",Acme", "name"), ("Ann,  ", "company")])
def test_a_row_without_a_required_value_is_rejected(row, column):
    error = rejected(csv_bytes("name,company", "Ann,Acme", row))
    assert (error.line, error.column) == (3, column)
    assert str(error) == f"Line 3, column '{column}': a value is required here."


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"  \n\n", b",,\n"])
def test_an_empty_file_is_rejected(data):
    error = rejected(data)
    assert error.line == 1
    assert "empty" in str(error) or "no header" in str(error)


def test_a_file_with_only_a_header_is_rejected():
    error = rejected(csv_bytes("name,company"))
    assert error.line == 2
    assert "no prospects" in str(error)


def test_a_row_with_more_values_than_columns_is_rejected():
    error = rejected(csv_bytes("name,company", "Ann,Acme,extra"))
    assert error.line == 2
    assert "3 values but the header has 2 columns" in str(error)


def test_a_value_longer_than_the_database_allows_is_rejected():
    error = rejected(csv_bytes("name,company,country", f"Ann,Acme,{'x' * 101}"))
    assert (error.line, error.column) == (2, "country")
    assert "at most 100" in str(error)


def test_a_column_given_twice_is_rejected():
    error = rejected(csv_bytes("name,company,Name", "Ann,Acme,Bob"))
    assert (error.line, error.column) == (1, "Name")
    assert "appears twice" in str(error)


def test_a_nul_character_is_rejected_because_databases_cannot_store_it():
    error = rejected(b"name,company\nAnn,Acme\nBob,Be\x00ta\n")
    assert (error.line, error.column) == (3, "company")
    with pytest.raises(ProspectInputError):
        parse_json([{"name": "A", "company": "a", "note": "x\x00"}])


def test_rejection_happens_on_the_first_error_however_long_the_file():
    lines = ["name,company,employees", "Ann,Acme,x", *(f"P{i},C,1" for i in range(100))]
    assert rejected(csv_bytes(*lines)).line == 2


# --- JSON -------------------------------------------------------------------------------------


def test_json_reads_the_same_fields_as_the_csv():
    [prospect] = parse_json(
        [
            {
                "Name": "Ann",
                "company": "Acme",
                "website": "acme.io",
                "employees": 120,
                "country": None,
                "crm_id": 42,
                "tags": ["a", "b"],
            }
        ]
    )
    assert prospect == ProspectData(
        name="Ann",
        company="Acme",
        domain="acme.io",
        employees=120,
        extra={"crm_id": "42", "tags": '["a", "b"]'},
        position=1,
    )


def test_json_columns_are_every_key_in_the_order_first_seen():
    prospects = parse_json(
        [{"name": "A", "company": "a", "crm_id": 1}, {"tier": "gold", "company": "b", "name": "B"}]
    )
    assert prospects.columns == ("name", "company", "crm_id", "tier")


def test_json_positions_are_the_item_numbers():
    prospects = parse_json([{"name": "A", "company": "a"}, {"name": "B", "company": "b"}])
    assert [p.position for p in prospects] == [1, 2]


def test_json_employee_counts_may_be_numbers_or_numeric_text():
    prospects = parse_json(
        [
            {"name": "A", "company": "a", "employees": "1,200"},
            {"name": "B", "company": "b", "employees": 30.0},
        ]
    )
    assert [p.employees for p in prospects] == [1200, 30]


def json_rejected(payload, **kwargs) -> ProspectInputError:
    with pytest.raises(ProspectInputError) as info:
        parse_json(payload, **kwargs)
    return info.value


@pytest.mark.parametrize("payload", [{"name": "Ann"}, "Ann,Acme", None, 3])
def test_json_that_is_not_a_list_is_rejected(payload):
    assert str(json_rejected(payload)).startswith("Expected a list of prospects")


def test_an_empty_json_list_is_rejected():
    assert str(json_rejected([])) == "The list of prospects is empty."


def test_a_json_item_that_is_not_an_object_is_rejected_naming_the_item():
    error = json_rejected([{"name": "A", "company": "a"}, ["B", "b"]])
    assert str(error) == "Item 2: expected an object with the prospect's fields, got a list."


@pytest.mark.parametrize(
    ("item", "column"),
    [
        ({"company": "a"}, "name"),
        ({"name": "A", "company": ""}, "company"),
        ({"name": "A", "company": None}, "company"),
    ],
)
def test_a_json_item_without_a_required_value_is_rejected(item, column):
    error = json_rejected([{"name": "Z", "company": "z"}, item])
    assert (error.line, error.column) == (2, column)
    assert str(error) == f"Item 2, field '{column}': a value is required here."


@pytest.mark.parametrize("value", ["lots", 12.5, True, -4])
def test_a_json_non_numeric_employee_count_is_rejected(value):
    error = json_rejected([{"name": "A", "company": "a", "employees": value}])
    assert (error.line, error.column) == (1, "employees")


def test_a_json_known_field_holding_an_object_is_rejected():
    error = json_rejected([{"name": "A", "company": {"legal": "a"}}])
    assert (error.line, error.column) == (1, "company")
    assert "expected text or a number, got an object" in str(error)


def test_too_many_json_items_are_rejected_as_too_many():
    payload = [{"name": f"P{i}", "company": "c"} for i in range(4)]
    error = json_rejected(payload, max_rows=3)
    assert isinstance(error, TooManyProspects)
    assert error.line == 4


# --- spreadsheets -----------------------------------------------------------------------------


def xlsx_bytes(*rows: tuple[object, ...]) -> bytes:
    """A workbook whose first sheet holds `rows`, as Excel would save it."""
    import io

    from openpyxl import Workbook

    workbook = Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    workbook.create_sheet("Other").append(("not", "read"))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def test_an_excel_workbook_is_read_from_its_first_sheet_whatever_its_name():
    data = xlsx_bytes(
        ("Full Name", "E-Mail", "Company Name", "Job Title", "Employees", "Note"),
        ("Ada Lovelace", "ada@x.io", "Engines", "CTO", 250, None),
        (None, None, None, None, None, None),
        ("Grace Hopper", None, "Cobol", "VP", 1200.0, 3.5),
    )
    for name in ("prospects.xlsx", "prospects.csv", ""):
        prospects = parse_upload(data, name=name)
        assert [
            (p.name, p.email, p.company, p.title, p.employees, p.position) for p in prospects
        ] == [
            ("Ada Lovelace", "ada@x.io", "Engines", "CTO", 250, 2),
            ("Grace Hopper", "", "Cobol", "VP", 1200, 4),
        ]
        assert prospects[1].extra == {"Note": "3.5"}
        assert prospects.columns == (
            "Full Name",
            "E-Mail",
            "Company Name",
            "Job Title",
            "Employees",
            "Note",
        )
        assert prospects.delimiter == ","


def test_a_workbooks_errors_name_its_rows_and_its_limits_are_the_csv_limits():
    with pytest.raises(ProspectErrors) as caught:
        parse_upload(xlsx_bytes(("name", "company"), ("Ada", None)), name="p.xlsx")
    assert str(caught.value) == "Row 2, column 'company': a value is required here."
    with pytest.raises(TooManyProspects) as too_many:
        parse_upload(xlsx_bytes(("name", "company"), *[("A", "B")] * 3), max_rows=2)
    assert str(too_many.value).startswith("Row 4: the file has more than 2 prospects")
    with (
        override_settings(QUALIFIER_MAX_EXTRA_COLUMNS=2),
        pytest.raises(ProspectInputError) as wide,
    ):
        parse_upload(xlsx_bytes(("name", "company", "a", "b", "c"), ("A", "B", 1, 2, 3)))
    assert "there are more than 2 columns besides the known ones" in str(wide.value)
    with (
        override_settings(QUALIFIER_MAX_UPLOAD_BYTES=100),
        pytest.raises(ProspectInputError) as big,
    ):
        parse_upload(xlsx_bytes(("name", "company"), ("A", "B")))
    assert "The workbook unpacks to" in str(big.value)


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(200),
            "old.csv",
            "Excel 97-2003 workbook (.xls)",
        ),
        (b"PK\x03\x04" + bytes(50), "broken.xlsx", "looks like an Excel workbook but is damaged"),
        (
            b"name,company\nAda,Engines\n",
            "renamed.xlsx",
            "named .xlsx but is not an Excel workbook",
        ),
    ],
    ids=["xls-as-csv", "damaged", "csv-named-xlsx"],
)
def test_a_spreadsheet_that_cannot_be_read_says_how_to_save_it(data, name, message):
    with pytest.raises(ProspectInputError) as caught:
        parse_upload(data, name=name)
    assert message in str(caught.value)
    assert "UTF-8 (byte" not in str(caught.value)


def test_a_zip_that_is_not_a_workbook_is_named_so():
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("content.xml", "<x/>")
    with pytest.raises(ProspectInputError) as caught:
        parse_upload(buffer.getvalue(), name="sheet.ods")
    assert "a ZIP archive but not an Excel workbook" in str(caught.value)


def test_common_header_spellings_are_read_and_a_near_miss_is_named_in_a_warning():
    prospects = parse_csv(
        csv_bytes(
            "Name,Email Address,Company,Titel,Website,Domain,Favourite colour",
            "Ada,ada@x.io,Engines,CTO,https://x.io,x.io,blue",
        )
    )
    assert prospects[0].email == "ada@x.io"
    assert prospects[0].title == ""
    assert prospects[0].domain == "x.io"
    assert prospects.warnings == [
        "The column 'Titel' is kept as it is but not used: it looks like 'title', which is "
        "not in the file. Rename it to 'title' if that is what it holds.",
        "The column 'Website' is kept as it is but not used: the column 'Domain' gives the "
        "prospect's domain.",
    ]
    with pytest.raises(ProspectInputError) as twice:
        parse_csv(csv_bytes("name,company,Email,E-Mail", "A,B,a@x.io,b@x.io"))
    assert "the column appears twice (as 'Email' and 'E-Mail')" in str(twice.value)


def test_the_delimiter_of_a_csv_is_kept_for_its_download():
    assert parse_csv(csv_bytes("name;company", "Ada;Engines")).delimiter == ";"
    assert parse_csv(csv_bytes("name\tcompany", "Ada\tEngines")).delimiter == "\t"


def test_columns_that_merely_share_a_word_with_a_known_one_are_not_warned_about():
    prospects = parse_csv(
        csv_bytes("name,company,Company Size,Email Opt-in,Emial", "Ada,Engines,50,yes,a@x.io")
    )
    assert prospects.warnings == [
        "The column 'Emial' is kept as it is but not used: it looks like 'email', which is not "
        "in the file. Rename it to 'email' if that is what it holds."
    ]


def test_json_items_whose_keys_together_break_the_column_rules_are_refused():
    """Each item alone is fine; together their keys would be the download's header, with too
    many extra columns or one field spelled two ways, which the download could not write."""
    with (
        override_settings(QUALIFIER_MAX_EXTRA_COLUMNS=2),
        pytest.raises(ProspectInputError) as wide,
    ):
        parse_json(
            [
                {"name": "A", "company": "a", "x1": 1, "x2": 2},
                {"name": "B", "company": "b", "y1": 1},
            ]
        )
    assert str(wide.value).startswith("There are more than 2 columns besides the known ones")
    assert str(wide.value).endswith("from 'y1' on.")
    with pytest.raises(ProspectInputError) as twice:
        parse_json([{"name": "A", "company": "a"}, {"name": "B", "Company": "b"}])
    assert (
        str(twice.value)
        == "field 'Company': the column appears twice (as 'company' and 'Company')."
    )


def test_a_download_of_a_run_stored_with_columns_the_readers_now_refuse_still_writes_them():
    """A JSON run stored before the items' keys were checked together: 'company' and
    'Company' both, and more extra keys than allowed. Its download is whole, the first
    spelling filling the field (it used to break off mid-response with an error)."""
    from qualifier.export import results_csv_rows

    columns = ["name", "company", "Company", "x1", "x2", "x3"]
    prospect = SimpleNamespace(
        name="A",
        company="Acme",
        domain_name="acme.io",
        extra={"Company": "b", "x1": "1"},
        outcome=None,
        score=None,
        reasons=None,
        error=None,
    )
    with override_settings(QUALIFIER_MAX_EXTRA_COLUMNS=2):
        header, row = results_csv_rows(columns, [prospect])
    assert header[:7] == ["name", "company", "Company", "x1", "x2", "x3", "domain"]
    assert row[:7] == ["A", "Acme", "b", "1", "", "", "acme.io"]
