"""The ideal-customer profile a run scores its prospects against.

The project's defaults come from the QUALIFIER_DEFAULT_CRITERIA setting (which reads
environment variables), each run may override any field, and the criteria a run used are
stored on the run (`QualificationRun.criteria`) so its results can always be explained.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from typing import Any

from common.inputs import MAX_LISTED, parse_whole_number, show, shown_name, unstorable

from .conf import DEFAULT_CRITERIA, conf

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

#: Bounds on every list: how many items, how long each, and how long all of them together.
MAX_LIST_ITEMS = 500
#: An industry, a title keyword or a country: matching a prospect's text costs up to its
#: length times the longest phrase, so a phrase is short.
MAX_PHRASE_LENGTH = 64
#: An excluded domain (DNS names are at most 253 characters).
MAX_DOMAIN_LENGTH = 255
#: The characters of every list of a profile together (each run stores and shows its own).
MAX_PROFILE_LENGTH = 10_000
#: PositiveIntegerField's upper bound (a prospect's employee count).
MAX_EMPLOYEES = 2_147_483_647


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
    #: The one default there is (qualifier/conf.py); every other field starts neutral.
    min_score: int = DEFAULT_CRITERIA["min_score"]

    @classmethod
    def defaults(cls) -> Criteria:
        """The project's profile: QUALIFIER_DEFAULT_CRITERIA over neutral values."""
        return cls().with_overrides(conf.QUALIFIER_DEFAULT_CRITERIA)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Criteria:
        """Criteria as stored on a run by `as_dict()`. Read by the same rules as input, but
        a phrase may have up to MAX_DOMAIN_LENGTH characters and the lists need not fit
        MAX_PROFILE_LENGTH together: a run created before those bounds must still show and
        run (CriteriaError for anything else)."""
        return cls().with_overrides(data, stored=True)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in LIST_FIELDS:
            data[name] = list(data[name])
        return data

    def with_overrides(self, overrides: Mapping[str, object], *, stored: bool = False) -> Criteria:
        """A copy with the given fields replaced; validates every value it is given.

        Lists may be lists or comma-separated strings (a web form); an empty employee bound
        means no bound. Raises CriteriaError naming every bad field, changing nothing; far
        more fields than there are (MAX_LISTED more) are one error that counts them.
        `stored` criteria (see from_dict) keep the bounds they were created under.
        """
        if not isinstance(overrides, Mapping):
            raise CriteriaError({"criteria": "expected an object of criteria fields"})
        if len(overrides) > len(FIELD_NAMES) + MAX_LISTED:
            raise CriteriaError(
                {
                    "criteria": f"{len(overrides):,} fields were given; the criteria are "
                    f"{', '.join(FIELD_NAMES)}"
                }
            )
        errors: dict[str, str] = {}
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            try:
                if name in LIST_FIELDS:
                    changes[name] = _parse_list(name, value, stored=stored)
                elif name in BOUND_FIELDS:
                    changes[name] = _parse_bound(value)
                elif name == "min_score":
                    changes[name] = _parse_score(value)
                else:
                    known = ", ".join(FIELD_NAMES)
                    raise ValueError(f"unknown criterion (known: {known})")
            except ValueError as exc:
                errors[shown_name(name)] = str(exc)
        if not errors:
            length = sum(
                len(item) for name in LIST_FIELDS for item in changes.get(name, getattr(self, name))
            )
            if length > MAX_PROFILE_LENGTH and not stored:
                errors["criteria"] = (
                    f"the lists hold {length:,} characters together; a profile holds at most "
                    f"{MAX_PROFILE_LENGTH:,}"
                )
        if not errors:
            low = changes.get("min_employees", self.min_employees)
            high = changes.get("max_employees", self.max_employees)
            if low is not None and high is not None and low > high:
                errors["max_employees"] = f"must not be smaller than min_employees ({high} < {low})"
        if errors:
            raise CriteriaError(errors)
        return replace(self, **changes)

    # --- matching helpers, built once per criteria ---------------------------------------------

    @cached_property
    def industry_matcher(self) -> WordMatcher | None:
        return WordMatcher(self.industries) if self.industries else None

    @cached_property
    def title_matcher(self) -> WordMatcher | None:
        return WordMatcher(self.title_keywords) if self.title_keywords else None

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


def _is_word(char: str) -> bool:
    """What the regular expression \\w matches."""
    return char.isalnum() or char == "_"


class WordMatcher:
    """Finds which of a set of phrases occurs in a text as whole words, ignoring case ("VP" in
    "VP Sales", not in "MVP"): the leftmost, then the longest.

    An Aho-Corasick automaton of the casefolded phrases reads the text once, so a text costs
    its length plus the phrases that end at its word ends, however many phrases there are and
    however they overlap (a trie walked from every word start costs the text's length times
    the longest phrase, which crafted phrases make hundreds of times a usual prospect's cost).
    """

    def __init__(self, phrases: tuple[str, ...]) -> None:
        #: Node 0 is the root. Per node: its children, the node of its longest proper suffix
        #: in the automaton (`fail`), the phrase ending there, if any, as configured (the first
        #: of phrases equal when casefolded), its depth (the casefolded phrase's length), and
        #: the nearest node along `fail` where a phrase ends (`output`, 0 for none).
        self.children: list[dict[str, int]] = [{}]
        self.phrase: list[str | None] = [None]
        self.depth: list[int] = [0]
        for phrase in phrases:
            node = 0
            for char in phrase.casefold():
                child = self.children[node].get(char)
                if child is None:
                    child = len(self.children)
                    self.children[node][char] = child
                    self.children.append({})
                    self.phrase.append(None)
                    self.depth.append(self.depth[node] + 1)
                node = child
            if node and self.phrase[node] is None:
                self.phrase[node] = phrase
        self.longest = max(self.depth)
        self.fail = [0] * len(self.children)
        self.output = [0] * len(self.children)
        queue = deque(self.children[0].values())
        while queue:
            node = queue.popleft()
            suffix = self.fail[node]
            self.output[node] = suffix if self.phrase[suffix] is not None else self.output[suffix]
            for char, child in self.children[node].items():
                state = suffix
                while state and char not in self.children[state]:
                    state = self.fail[state]
                found = self.children[state].get(char, 0)
                self.fail[child] = found if found != child else 0
                queue.append(child)

    def search(self, text: str) -> str | None:
        """The phrase (as configured) found first in `text`: leftmost, then longest."""
        text = text.casefold()
        size = len(text)
        children, fail, output, phrase, depth = (
            self.children,
            self.fail,
            self.output,
            self.phrase,
            self.depth,
        )
        best_start, best = size, None
        state = 0
        for index, char in enumerate(text):
            if best is not None and index - self.longest >= best_start:
                break  # every later match starts after the one found
            while state and char not in children[state]:
                state = fail[state]
            state = children[state].get(char, 0)
            node = state if phrase[state] is not None else output[state]
            end = index + 1
            if not node or (end < size and _is_word(text[end])):
                continue  # no phrase ends here, or not at a word end
            while node:
                start = end - depth[node]
                # Ends come in order, so a later match from the same start is longer; at one
                # end, the chain goes from the longest phrase (leftmost start) down.
                if start <= best_start and (start == 0 or not _is_word(text[start - 1])):
                    best_start, best = start, phrase[node]
                node = output[node]
        return best


def _parse_list(name: str, value: object, *, stored: bool = False) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        if len(value) > MAX_PROFILE_LENGTH:
            raise ValueError(
                f"the list is {len(value):,} characters long; at most {MAX_PROFILE_LENGTH:,} "
                "are allowed"
            )
        items: list[object] = value.replace("\n", ",").split(",")
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise ValueError("expected a list of text values or a comma-separated text")
    if len(items) > MAX_LIST_ITEMS:
        raise ValueError(f"{len(items):,} items were given; at most {MAX_LIST_ITEMS:,} are allowed")
    limit = MAX_DOMAIN_LENGTH if stored or name == "excluded_domains" else MAX_PHRASE_LENGTH
    result: list[str] = []
    seen: set[str] = set()
    total = 0
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"{show(item)} is not a text value")
        problem = unstorable(item)
        if problem:
            raise ValueError(f"{show(item)} {problem}")
        text = " ".join(item.split())
        if len(text) > limit:
            raise ValueError(f"{text[:20]!r}... is longer than {limit} characters")
        if name == "excluded_domains":
            text = normalize_domain(text)
            if text and "." not in text:
                raise ValueError(f"{show(item)} is not a domain such as example.com")
        total += len(text)
        if total > MAX_PROFILE_LENGTH:
            raise ValueError(
                f"the items are more than {MAX_PROFILE_LENGTH:,} characters long together"
            )
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            result.append(text)
    return tuple(result)


def _parse_bound(value: object) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = _parse_int(value)
    if number < 0:
        raise ValueError(f"{show(value)} is negative; use 0 or more, or leave it empty")
    if number > MAX_EMPLOYEES:
        raise ValueError(f"{show(value)} is more than {MAX_EMPLOYEES:,}")
    return number


def _parse_score(value: object) -> int:
    number = _parse_int(value)
    if not 0 <= number <= 100:
        raise ValueError(f"{show(value)} is not between 0 and 100")
    return number


def _parse_int(value: object) -> int:
    return parse_whole_number(value, maximum=None, floats=True)
