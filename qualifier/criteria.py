"""The ideal-customer profile a run scores its prospects against.

The project's defaults come from the QUALIFIER_DEFAULT_CRITERIA setting (which reads
environment variables), each run may override any field, and the criteria a run used are
stored on the run (`QualificationRun.criteria`) so its results can always be explained.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from typing import Any

from .conf import conf

LIST_FIELDS = ("industries", "countries", "title_keywords", "excluded_domains")
BOUND_FIELDS = ("min_employees", "max_employees")

#: Common spellings of the same country, so "USA" matches a target of "United States".
COUNTRY_ALIASES = {
    "us": "united states",
    "usa": "united states",
    "u.s.": "united states",
    "u.s.a.": "united states",
    "united states of america": "united states",
    "uk": "united kingdom",
    "u.k.": "united kingdom",
    "gb": "united kingdom",
    "great britain": "united kingdom",
    "england": "united kingdom",
    "deutschland": "germany",
    "de": "germany",
    "fr": "france",
    "nl": "netherlands",
    "the netherlands": "netherlands",
    "holland": "netherlands",
}

_SCHEME = re.compile(r"^[a-z][a-z0-9+.\-]*://")


class CriteriaError(ValueError):
    """Bad criteria: `errors` maps each bad field to a message."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__(
            "Invalid criteria: " + "; ".join(f"{name}: {text}" for name, text in errors.items())
        )


def normalize_country(country: str) -> str:
    key = " ".join(country.casefold().split())
    return COUNTRY_ALIASES.get(key, key)


def normalize_domain(value: str) -> str:
    """'https://www.Example.com/about' -> 'example.com'; an email gives its domain."""
    text = value.strip().casefold()
    if "@" in text and "/" not in text:
        text = text.rsplit("@", 1)[1]
    text = _SCHEME.sub("", text)
    text = text.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    text = text.rsplit("@", 1)[-1].split(":", 1)[0].strip(".")
    return text.removeprefix("www.")


@dataclass(frozen=True)
class Criteria:
    industries: tuple[str, ...] = ()
    min_employees: int | None = None
    max_employees: int | None = None
    countries: tuple[str, ...] = ()
    title_keywords: tuple[str, ...] = ()
    excluded_domains: tuple[str, ...] = ()
    min_score: int = 50

    @classmethod
    def defaults(cls) -> Criteria:
        """The project's profile: QUALIFIER_DEFAULT_CRITERIA over neutral values."""
        return cls().with_overrides(conf.QUALIFIER_DEFAULT_CRITERIA)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Criteria:
        """Criteria as stored on a run by `as_dict()`."""
        return cls().with_overrides(data)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in LIST_FIELDS:
            data[name] = list(data[name])
        return data

    def with_overrides(self, overrides: Mapping[str, object]) -> Criteria:
        """A copy with the given fields replaced; validates every value it is given.

        Lists may be lists or comma-separated strings (a web form); an empty employee bound
        means no bound. Raises CriteriaError naming every bad field, changing nothing.
        """
        if not isinstance(overrides, Mapping):
            raise CriteriaError({"criteria": "expected an object of criteria fields"})
        errors: dict[str, str] = {}
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            try:
                if name in LIST_FIELDS:
                    changes[name] = _parse_list(name, value)
                elif name in BOUND_FIELDS:
                    changes[name] = _parse_bound(value)
                elif name == "min_score":
                    changes[name] = _parse_score(value)
                else:
                    known = ", ".join(FIELD_NAMES)
                    raise ValueError(f"unknown criterion (known: {known})")
            except ValueError as exc:
                errors[str(name)] = str(exc)
        if not errors:
            low = changes.get("min_employees", self.min_employees)
            high = changes.get("max_employees", self.max_employees)
            if low is not None and high is not None and low > high:
                errors["max_employees"] = f"must not be smaller than min_employees ({high} < {low})"
        if errors:
            raise CriteriaError(errors)
        return replace(self, **changes)

    # --- matching helpers, compiled once per criteria ------------------------------------------

    @cached_property
    def industry_pattern(self) -> re.Pattern[str] | None:
        return _words_pattern(self.industries)

    @cached_property
    def title_pattern(self) -> re.Pattern[str] | None:
        return _words_pattern(self.title_keywords)

    @cached_property
    def title_keyword_names(self) -> dict[str, str]:
        """Casefolded keyword -> the keyword as configured, for readable reasons."""
        return {keyword.casefold(): keyword for keyword in self.title_keywords}

    @cached_property
    def country_set(self) -> frozenset[str]:
        return frozenset(normalize_country(country) for country in self.countries)

    @cached_property
    def excluded_domain_set(self) -> frozenset[str]:
        return frozenset(self.excluded_domains)

    def excluded_domain(self, domain: str) -> str | None:
        """The excluded entry that covers `domain` (itself or a parent domain), if any."""
        if not domain or not self.excluded_domains:
            return None
        labels = domain.split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:])
            if candidate in self.excluded_domain_set:
                return candidate
        return None


FIELD_NAMES = tuple(field.name for field in fields(Criteria))


def _words_pattern(words: tuple[str, ...]) -> re.Pattern[str] | None:
    """Matches any of `words` as whole words, ignoring case ("VP" in "VP Sales", not "MVP")."""
    if not words:
        return None
    alternatives = "|".join(re.escape(word.casefold()) for word in sorted(words, key=len)[::-1])
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def _parse_list(name: str, value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items: list[object] = value.replace("\n", ",").split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError("expected a list of text values or a comma-separated text")
    result: list[str] = []
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a text value")
        text = " ".join(item.split())
        if name == "excluded_domains":
            text = normalize_domain(text)
            if text and "." not in text:
                raise ValueError(f"{item!r} is not a domain such as example.com")
        if len(text) > 255:
            raise ValueError(f"{text[:20]!r}... is longer than 255 characters")
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            result.append(text)
    return tuple(result)


def _parse_bound(value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = _parse_int(value)
    if number < 0:
        raise ValueError(f"{value!r} is negative; use 0 or more, or leave it empty")
    return number


def _parse_score(value: object) -> int:
    number = _parse_int(value)
    if not 0 <= number <= 100:
        raise ValueError(f"{value!r} is not between 0 and 100")
    return number


def _parse_int(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.lstrip("-").isdigit():
            return int(text)
    raise ValueError(f"{value!r} is not a whole number")
