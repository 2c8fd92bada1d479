"""Scoring one prospect against the criteria, and the pluggable scorer.

A scorer is any callable `scorer(prospect: ProspectData, criteria: Criteria) -> Score` named by
the QUALIFIER_SCORER setting (a dotted path), so a team can plug in, say, an LLM-backed scorer.
The default, `rule_based_scorer`, is deterministic: the same prospect and criteria always give
the same score and reasons. Whatever a scorer returns is checked by `validate_score` before it
is stored, and a scorer that raises only errors the prospect it was scoring.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.module_loading import import_string

from .conf import conf
from .criteria import Criteria, normalize_country, normalize_domain
from .prospects import ProspectData

#: Points per rule; together 100. A rule whose criterion is empty ("any") gives full points.
WEIGHTS = {"industry": 30, "size": 30, "title": 25, "country": 15}


@dataclass(frozen=True)
class Score:
    score: int
    qualified: bool
    reasons: tuple[str, ...] = ()


Scorer = Callable[[ProspectData, Criteria], Any]


class InvalidScore(ValueError):
    """A scorer returned something that is not a score."""


def rule_based_scorer(prospect: ProspectData, criteria: Criteria) -> Score:
    """The default scorer: industry, company size, title seniority and country, weighted."""
    delay_ms = conf.QUALIFIER_SCORING_DELAY_MS
    if delay_ms:
        time.sleep(delay_ms / 1000)  # demos: makes a run slow enough to watch
    reasons: list[str] = []
    score = 0

    industry_matcher = criteria.industry_matcher
    if industry_matcher is None:
        score += WEIGHTS["industry"]
    elif not prospect.industry:
        reasons.append("industry unknown")
    elif industry_matcher.search(prospect.industry):
        score += WEIGHTS["industry"]
        reasons.append(f"industry matches: {prospect.industry}")
    else:
        reasons.append(f"industry not targeted: {prospect.industry}")

    low, high, employees = criteria.min_employees, criteria.max_employees, prospect.employees
    if low is None and high is None:
        score += WEIGHTS["size"]
    elif employees is None:
        reasons.append("company size unknown")
    elif low is not None and employees < low:
        reasons.append(f"company too small: {employees} < {low}")
    elif high is not None and employees > high:
        reasons.append(f"company too large: {employees} > {high}")
    else:
        score += WEIGHTS["size"]
        reasons.append(f"company size fits: {employees} employees")

    title_matcher = criteria.title_matcher
    if title_matcher is None:
        score += WEIGHTS["title"]
    elif not prospect.title:
        reasons.append("title unknown")
    elif keyword := title_matcher.search(prospect.title):
        score += WEIGHTS["title"]
        reasons.append(f"title matches '{keyword}': {prospect.title}")
    else:
        reasons.append(f"title not senior enough: {prospect.title}")

    countries = criteria.country_set
    if not countries:
        score += WEIGHTS["country"]
    elif not prospect.country:
        reasons.append("country unknown")
    elif normalize_country(prospect.country) in countries:
        score += WEIGHTS["country"]
        reasons.append(f"country matches: {prospect.country}")
    else:
        reasons.append(f"country not targeted: {prospect.country}")

    excluded = criteria.excluded_domain(normalize_domain(prospect.domain or prospect.email))
    if excluded:
        reasons.append(f"domain excluded: {excluded}")
    return Score(
        score=score,
        qualified=not excluded and score >= criteria.min_score,
        reasons=tuple(reasons),
    )


def get_scorer(path: str | None = None) -> Scorer:
    """The scorer named by QUALIFIER_SCORER (checked at startup by qualifier.E002/E003)."""
    scorer = import_string(path or conf.QUALIFIER_SCORER)
    if not callable(scorer):
        raise TypeError(f"{path or conf.QUALIFIER_SCORER} is not callable")
    return scorer


def validate_score(value: Any, criteria: Criteria) -> Score:
    """A scorer's answer as a Score: a Score, or a mapping with `score`, `reasons` and
    optionally `qualified` (else score >= min_score). Raises InvalidScore."""
    if isinstance(value, Score):
        score, qualified, reasons = value.score, value.qualified, value.reasons
    elif isinstance(value, Mapping):
        if "score" not in value:
            raise InvalidScore(f"the scorer returned {value!r} without a 'score'")
        score = value["score"]
        reasons = value.get("reasons", ())
        qualified = value.get("qualified")
        if qualified is None and isinstance(score, int):
            qualified = score >= criteria.min_score
    else:
        raise InvalidScore(
            f"the scorer returned {type(value).__name__}, expected a Score or a mapping"
        )
    if isinstance(score, bool) or not isinstance(score, int) or not 0 <= score <= 100:
        raise InvalidScore(f"the scorer returned the score {score!r}, expected 0 to 100")
    if not isinstance(qualified, bool):
        raise InvalidScore(f"the scorer returned qualified={qualified!r}, expected true/false")
    if isinstance(reasons, str) or not isinstance(reasons, Sequence):
        raise InvalidScore(f"the scorer returned reasons={reasons!r}, expected a list of text")
    if not all(isinstance(reason, str) for reason in reasons):
        raise InvalidScore(f"the scorer returned reasons={reasons!r}, expected a list of text")
    if isinstance(value, Score) and isinstance(reasons, tuple):
        return value
    return Score(score=score, qualified=qualified, reasons=tuple(reasons))
