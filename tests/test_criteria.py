"""The ideal-customer profile: defaults from settings, per-run overrides, storage, and the
system checks that validate the QUALIFIER_* settings."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from qualifier.checks import check_qualifier_settings
from qualifier.criteria import Criteria, CriteriaError, normalize_domain

FULL = {
    "industries": ["Software", "SaaS"],
    "min_employees": 50,
    "max_employees": 5000,
    "countries": ["Germany"],
    "title_keywords": ["VP", "Head"],
    "excluded_domains": ["rival.com"],
    "min_score": 70,
}


def test_defaults_come_from_the_qualifier_default_criteria_setting():
    with override_settings(QUALIFIER_DEFAULT_CRITERIA=FULL):
        assert Criteria.defaults().as_dict() == FULL


def test_defaults_accept_the_environment_strings_of_the_settings_file():
    raw = {
        "industries": "Software, SaaS",
        "min_employees": "50",
        "max_employees": "",
        "countries": "",
        "title_keywords": "VP,Head",
        "excluded_domains": "https://www.Rival.com/",
        "min_score": "60",
    }
    with override_settings(QUALIFIER_DEFAULT_CRITERIA=raw):
        criteria = Criteria.defaults()
    assert criteria == Criteria(
        industries=("Software", "SaaS"),
        min_employees=50,
        max_employees=None,
        countries=(),
        title_keywords=("VP", "Head"),
        excluded_domains=("rival.com",),
        min_score=60,
    )


def test_fields_missing_from_the_setting_fall_back_to_neutral_values():
    with override_settings(QUALIFIER_DEFAULT_CRITERIA={"min_score": "80"}):
        criteria = Criteria.defaults()
    assert criteria == Criteria(min_score=80)
    assert criteria.industries == () and criteria.min_employees is None


def test_the_project_settings_hold_a_valid_default_profile():
    criteria = Criteria.defaults()
    assert "Software" in criteria.industries
    assert criteria.min_employees == 50
    assert 0 <= criteria.min_score <= 100


def test_a_run_overrides_only_the_fields_it_names():
    base = Criteria.from_dict(FULL)
    changed = base.with_overrides({"min_score": 40, "countries": "France, Spain"})
    assert changed.min_score == 40
    assert changed.countries == ("France", "Spain")
    assert changed.industries == base.industries
    assert base.min_score == 70  # the original is unchanged


def test_lists_may_be_comma_separated_text_and_are_trimmed_and_deduplicated():
    criteria = Criteria().with_overrides({"industries": " Software ,, saas,SaaS , software"})
    assert criteria.industries == ("Software", "saas")


def test_an_empty_employee_bound_means_no_bound():
    criteria = Criteria.from_dict(FULL).with_overrides({"min_employees": "", "max_employees": None})
    assert (criteria.min_employees, criteria.max_employees) == (None, None)


def test_excluded_domains_are_stored_as_bare_domains():
    criteria = Criteria().with_overrides(
        {"excluded_domains": ["https://www.Rival.com/pricing", "sales@partner.io"]}
    )
    assert criteria.excluded_domains == ("rival.com", "partner.io")


def test_bad_overrides_are_rejected_naming_every_bad_field():
    with pytest.raises(CriteriaError) as info:
        Criteria().with_overrides(
            {
                "min_score": 101,
                "min_employees": "many",
                "industries": 7,
                "colour": "blue",
                "excluded_domains": "localhost",
            }
        )
    errors = info.value.errors
    assert set(errors) == {"min_score", "min_employees", "industries", "colour", "excluded_domains"}
    assert errors["min_score"] == "101 is not between 0 and 100"
    assert errors["min_employees"] == "'many' is not a whole number"
    assert errors["colour"].startswith("unknown criterion (known: industries, ")
    assert "is not a domain" in errors["excluded_domains"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"min_employees": -1}, "min_employees"),
        ({"min_score": True}, "min_score"),
        ({"min_score": "-5"}, "min_score"),
        ({"min_score": "\u0665\u0660"}, "min_score"),
        ({"countries": ["Germany", 3]}, "countries"),
        ({"min_employees": 500, "max_employees": 10}, "max_employees"),
    ],
)
def test_invalid_values_are_rejected(overrides, field):
    with pytest.raises(CriteriaError) as info:
        Criteria().with_overrides(overrides)
    assert field in info.value.errors


def test_a_smaller_maximum_than_the_current_minimum_is_rejected():
    with pytest.raises(CriteriaError) as info:
        Criteria.from_dict(FULL).with_overrides({"max_employees": 10})
    assert info.value.errors == {
        "max_employees": "must not be smaller than min_employees (10 < 50)"
    }


def test_overrides_must_be_a_mapping():
    with pytest.raises(CriteriaError):
        Criteria().with_overrides(["min_score", 3])  # type: ignore[arg-type]


def test_stored_criteria_are_json_and_read_back_unchanged():
    criteria = Criteria.from_dict(FULL)
    stored = json.loads(json.dumps(criteria.as_dict()))
    assert Criteria.from_dict(stored) == criteria


@pytest.mark.parametrize(
    ("given", "domain"),
    [
        ("https://www.Acme.io/about?x=1", "acme.io"),
        ("ann@Sales.Acme.io", "sales.acme.io"),
        ("acme.io:8080", "acme.io"),
        ("  ", ""),
    ],
)
def test_domains_are_normalized_from_urls_and_emails(given, domain):
    assert normalize_domain(given) == domain


# --- system checks ----------------------------------------------------------------------------


def ids(**settings) -> list[str]:
    with override_settings(**settings):
        return [error.id for error in check_qualifier_settings()]


def test_the_project_settings_pass_the_checks():
    assert check_qualifier_settings() == []


@pytest.mark.parametrize("value", ["0", "many", -5, True, "\u0661\u0660\u0660", "\u00b2"])
def test_a_bad_max_prospects_setting_is_reported(value):
    assert ids(QUALIFIER_MAX_PROSPECTS=value) == ["qualifier.E001"]


def test_a_scorer_that_cannot_be_imported_is_reported():
    assert ids(QUALIFIER_SCORER="qualifier.scoring.no_such_scorer") == ["qualifier.E002"]
    assert ids(QUALIFIER_SCORER="no_such_package.scorer") == ["qualifier.E002"]
    assert ids(QUALIFIER_SCORER="not a path") == ["qualifier.E002"]


def test_a_scorer_that_is_not_callable_is_reported():
    assert ids(QUALIFIER_SCORER="qualifier.scoring.WEIGHTS") == ["qualifier.E003"]


def test_a_bad_scoring_delay_is_reported():
    assert ids(QUALIFIER_SCORING_DELAY_MS="slow") == ["qualifier.E004"]
    assert ids(QUALIFIER_SCORING_DELAY_MS=0) == []


def test_bad_default_criteria_are_reported_naming_the_field():
    with override_settings(QUALIFIER_DEFAULT_CRITERIA={**FULL, "min_score": "200"}):
        [error] = check_qualifier_settings()
    assert error.id == "qualifier.E005"
    assert error.msg.startswith("Setting QUALIFIER_DEFAULT_CRITERIA is invalid: min_score: ")


def test_default_criteria_that_are_not_a_mapping_are_reported():
    assert ids(QUALIFIER_DEFAULT_CRITERIA="Software") == ["qualifier.E005"]


def test_a_bad_setting_stops_management_commands():
    with (
        override_settings(QUALIFIER_SCORER="qualifier.scoring.missing"),
        pytest.raises(SystemCheckError, match=r"qualifier\.E002"),
    ):
        call_command("check", tags=["compatibility"])
