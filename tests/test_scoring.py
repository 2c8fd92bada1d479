"""The rule-based scorer's rules, the pluggable scorer setting, and checking scorer answers."""

from __future__ import annotations

import pytest
from django.test import override_settings

from qualifier import scoring
from qualifier.criteria import Criteria
from qualifier.prospects import ProspectData
from qualifier.scoring import (
    WEIGHTS,
    InvalidScore,
    Score,
    get_scorer,
    rule_based_scorer,
    validate_score,
)

CRITERIA = Criteria(
    industries=("Software", "SaaS"),
    min_employees=50,
    max_employees=5000,
    countries=("Germany", "United States"),
    title_keywords=("VP", "Head", "Chief"),
    excluded_domains=("rival.com",),
    min_score=60,
)


def prospect(**fields) -> ProspectData:
    values = {
        "name": "Ann",
        "company": "Acme",
        "industry": "Software",
        "employees": 120,
        "title": "VP Sales",
        "country": "Germany",
        "domain": "acme.io",
        "position": 2,
    }
    values.update(fields)
    return ProspectData(**values)


def score(criteria: Criteria = CRITERIA, **fields) -> Score:
    return rule_based_scorer(prospect(**fields), criteria)


def test_a_prospect_matching_every_rule_scores_100_and_qualifies():
    result = score()
    assert result == Score(
        score=100,
        qualified=True,
        reasons=(
            "industry matches: Software",
            "company size fits: 120 employees",
            "title matches 'VP': VP Sales",
            "country matches: Germany",
        ),
    )


def test_the_weights_add_up_to_100():
    assert sum(WEIGHTS.values()) == 100


def test_an_untargeted_industry_loses_the_industry_points():
    result = score(industry="Retail")
    assert result.score == 100 - WEIGHTS["industry"]
    assert "industry not targeted: Retail" in result.reasons


def test_industries_match_as_whole_words_ignoring_case():
    assert "industry matches: enterprise SOFTWARE" in score(industry="enterprise SOFTWARE").reasons
    assert score(industry="Softwarehouse").score == 100 - WEIGHTS["industry"]


def test_a_company_below_the_minimum_is_too_small():
    result = score(employees=8)
    assert result.score == 100 - WEIGHTS["size"]
    assert "company too small: 8 < 50" in result.reasons


def test_a_company_above_the_maximum_is_too_large():
    assert "company too large: 12000 > 5000" in score(employees=12000).reasons


def test_the_employee_bounds_are_inclusive():
    assert score(employees=50).score == 100
    assert score(employees=5000).score == 100


def test_unknown_values_score_no_points_and_say_so():
    result = score(industry="", employees=None, title="", country="")
    assert result.score == 0
    assert result.reasons == (
        "industry unknown",
        "company size unknown",
        "title unknown",
        "country unknown",
    )


def test_title_keywords_match_whole_words_only():
    assert score(title="Head of Growth").score == 100
    assert (
        "title matches 'Chief': chief revenue officer"
        in score(title="chief revenue officer").reasons
    )
    assert "title not senior enough: MVP Engineer" in score(title="MVP Engineer").reasons


def test_countries_match_common_aliases():
    assert "country matches: USA" in score(country="USA").reasons
    assert "country not targeted: France" in score(country="France").reasons


def test_an_excluded_domain_never_qualifies_even_with_a_full_score():
    result = score(domain="https://www.rival.com/")
    assert result.score == 100
    assert result.qualified is False
    assert "domain excluded: rival.com" in result.reasons


def test_subdomains_and_email_domains_of_excluded_domains_are_excluded():
    assert not score(domain="eu.rival.com").qualified
    assert not score(domain="", email="bob@rival.com").qualified
    assert score(domain="notrival.com").qualified


def test_qualified_means_score_at_least_the_minimum():
    at_minimum = CRITERIA.with_overrides({"min_score": 100 - WEIGHTS["country"]})
    assert score(at_minimum, country="France").qualified is True
    above = at_minimum.with_overrides({"min_score": 100 - WEIGHTS["country"] + 1})
    assert score(above, country="France").qualified is False


def test_an_empty_criterion_accepts_anything_with_full_points():
    result = score(Criteria(min_score=100), industry="", employees=None, title="", country="")
    assert result == Score(score=100, qualified=True, reasons=())


def test_the_scorer_is_deterministic():
    prospects = [prospect(employees=n, title=t) for n in (5, 60, 9000) for t in ("VP", "Dev")]
    first = [rule_based_scorer(p, CRITERIA) for p in prospects]
    assert first == [rule_based_scorer(p, CRITERIA) for p in prospects]


def test_the_scoring_delay_setting_slows_the_default_scorer(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(scoring.time, "sleep", slept.append)
    score()
    with override_settings(QUALIFIER_SCORING_DELAY_MS=250):
        score()
    assert slept == [0.25]


# --- the pluggable scorer ---------------------------------------------------------------------


def constant_scorer(prospect: ProspectData, criteria: Criteria) -> Score:
    return Score(score=42, qualified=False, reasons=("constant",))


def test_the_default_scorer_is_the_rule_based_one():
    assert get_scorer() is rule_based_scorer


def test_the_scorer_setting_names_any_callable():
    with override_settings(QUALIFIER_SCORER="tests.test_scoring.constant_scorer"):
        assert get_scorer() is constant_scorer


def test_a_score_object_passes_validation_unchanged():
    result = Score(score=10, qualified=False, reasons=("x",))
    assert validate_score(result, CRITERIA) is result


def test_a_mapping_answer_is_accepted_and_qualifies_against_the_minimum():
    assert validate_score({"score": 60, "reasons": ["llm: good fit"]}, CRITERIA) == Score(
        score=60, qualified=True, reasons=("llm: good fit",)
    )
    assert validate_score({"score": 59}, CRITERIA).qualified is False


@pytest.mark.parametrize(
    "answer",
    [
        None,
        "85",
        {"reasons": []},
        {"score": 101},
        {"score": -1},
        {"score": 50.5},
        {"score": True},
        {"score": 50, "qualified": "yes"},
        {"score": 50, "reasons": "good"},
        {"score": 50, "reasons": [1, 2]},
        Score(score=150, qualified=True),
    ],
)
def test_an_answer_that_is_not_a_valid_score_is_rejected(answer):
    with pytest.raises(InvalidScore):
        validate_score(answer, CRITERIA)
