"""One reader per kind of user input: whole numbers, booleans, id lists and storable text.

Query strings, JSON bodies, forms, command options and settings all go through these, so each
rule (ASCII digits only, a bounded range, text the database can store) is written once. They
raise `ValueError` with a clause that names the value; callers say where it came from.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import islice
from typing import Any

#: PostgreSQL's bigint, the widest integer column: no whole number from input goes above it.
MAX_BIGINT = 2**63 - 1
#: A text made of more digits than this is refused before int() sees it (int() refuses 4,300+
#: digits with Python's own wording, and is slow long before that).
MAX_DIGITS = 30
#: How much of a bad value an error message repeats.
SHOWN_CHARS = 40
#: How many things (fields, keys, ids, problems) one error answer lists; it says how many more.
MAX_LISTED = 50

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

_WHOLE = re.compile(r"-?[0-9]+")
#: What PostgreSQL cannot store in text: NUL, and surrogates that are not part of a pair
#: (a Python str holds them only when they are alone, e.g. from a JSON "\ud800" escape).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def show(value: Any) -> str:
    """The value as an error message repeats it: repr, cut short, never a huge number."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1:,} digits"
    if isinstance(value, (list, dict)):
        kind = "a list" if isinstance(value, list) else "an object"
        return f"{kind} of {len(value):,} item(s)"
    text = repr(value)
    if len(text) > SHOWN_CHARS:
        return text[: SHOWN_CHARS - 4] + "...'" if text[0] in "'\"" else text[:SHOWN_CHARS] + "..."
    return text


def shown_name(name: Any) -> str:
    """A key or field name as an error answer names it: whole when short, else cut short (an
    answer must not repeat a megabyte-long key)."""
    text = str(name)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "..."


def listing(items: Iterable[Any], count: int, *, limit: int = MAX_LISTED) -> str:
    """'a, b, c', or the first `limit` of `count` items and 'and N more': no error message
    lists more than `limit` things."""
    shown = [str(item) for item in islice(items, limit)]
    more = count - len(shown)
    return ", ".join(shown) + (f" and {more:,} more" if more > 0 else "")


def parse_whole_number(
    value: Any,
    *,
    minimum: int | None = None,
    maximum: int | None = MAX_BIGINT,
    floats: bool = False,
) -> int:
    """A whole number from an int, ASCII digits (an optional minus, spaces around), or, with
    `floats`, a float without a fraction (JSON's 120.0). Unicode digits ("٣", "²"), "1_000",
    "+5" and booleans are not whole numbers here."""
    if isinstance(value, bool):
        raise ValueError(f"{show(value)} is not a whole number")
    if isinstance(value, int):
        number = value
    elif floats and isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _WHOLE.fullmatch(text := value.strip()):
        if len(text.lstrip("-")) > MAX_DIGITS:
            raise ValueError(f"{show(value)} has too many digits (at most {MAX_DIGITS})")
        number = int(text)
    else:
        raise ValueError(f"{show(value)} is not a whole number")
    if minimum is not None and number < minimum:
        raise ValueError(f"{show(value)} is less than {minimum:,}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{show(value)} is more than {maximum:,}")
    return number


def parse_bool(value: Any) -> bool:
    """true/false, yes/no, on/off, 1/0 in any case, or a bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
    raise ValueError(f"{show(value)} is not a boolean (use true or false)")


def json_whole_number(value: Any, **bounds: Any) -> int:
    """A whole number from a JSON body: a number without a fraction, 5 or 5.0 alike (JSON and
    JSON Schema's `integer` do not tell them apart); text ("5") and booleans are mistakes."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{show(value)} is not a whole number")
    return parse_whole_number(value, floats=True, **bounds)


def parse_ids(value: Any, *, max_items: int) -> list[int]:
    """A non-empty list of ids (whole numbers from 1 to MAX_BIGINT), at most `max_items`."""
    if not isinstance(value, list) or not value:
        raise ValueError("expected a non-empty list of ids")
    if len(value) > max_items:
        raise ValueError(f"{len(value):,} ids were given; at most {max_items:,} are allowed")
    ids = []
    for item in value:
        ids.append(json_whole_number(item, minimum=1))
    return ids


def unstorable(text: str) -> str | None:
    """Why the database cannot store `text` (NUL, a lone surrogate), or None."""
    if text.isascii() and "\x00" not in text:
        return None
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains a NUL character (\\x00), which cannot be stored"
    return f"contains a lone surrogate (\\u{ord(char):04x}), which is not valid Unicode"
