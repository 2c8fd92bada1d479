"""A profile's phrases are short and its lists bounded together (issue 15, item 6): matching
costs a prospect's text length times the longest phrase, so a crafted profile must not make
one prospect hundreds of times slower. The form, the API and the settings checks give the
same clear error, and nothing is created."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from qualifier.checks import check_qualifier_settings
from qualifier.criteria import (
    MAX_DOMAIN_LENGTH,
    MAX_PHRASE_LENGTH,
    MAX_PROFILE_LENGTH,
    Criteria,
    CriteriaError,
    WordMatcher,
)
from recovery.models import QualificationRun
from tests.helpers import CSRF_SECRET, DUMMY

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_queued_tasks")]

LONG = "Chief " + "x" * MAX_PHRASE_LENGTH  # one character more than a phrase may have
TOO_LONG = f"{LONG[:20]!r}... is longer than {MAX_PHRASE_LENGTH} characters"
#: 60 phrases of 64 characters in each of three lists: 11,520 characters, within each list's
#: bound but more than a profile holds.
MANY = [f"{i:02}" + "y" * (MAX_PHRASE_LENGTH - 2) for i in range(60)]
TOO_MUCH = (
    f"the lists hold {3 * 60 * MAX_PHRASE_LENGTH:,} characters together; a profile holds at "
    f"most {MAX_PROFILE_LENGTH:,}"
)


@pytest.fixture
def _queued_tasks():
    with override_settings(TASKS=DUMMY):
        yield


@pytest.mark.parametrize("field", ["industries", "title_keywords", "countries"])
def test_a_phrase_longer_than_64_characters_is_refused(field):
    with pytest.raises(CriteriaError) as refused:
        Criteria().with_overrides({field: ["CEO", LONG]})
    assert refused.value.errors == {field: TOO_LONG}
    assert Criteria().with_overrides({field: [LONG[:MAX_PHRASE_LENGTH]]})


def test_an_excluded_domain_may_be_as_long_as_a_domain_name():
    domain = "a" * (MAX_DOMAIN_LENGTH - 4) + ".com"
    assert Criteria().with_overrides({"excluded_domains": [domain]}).excluded_domains == (domain,)


def test_the_lists_of_a_profile_are_bounded_together():
    with pytest.raises(CriteriaError) as refused:
        Criteria().with_overrides({"industries": MANY, "title_keywords": MANY, "countries": MANY})
    assert refused.value.errors == {"criteria": TOO_MUCH}
    # Two such lists fit; a third added later, over defaults that hold two, does not.
    two = Criteria().with_overrides({"industries": MANY, "title_keywords": MANY})
    with pytest.raises(CriteriaError):
        two.with_overrides({"countries": MANY})


def test_the_api_names_the_long_phrase_and_the_whole_profile(client, alice):
    client.force_login(alice)
    prospects = [{"name": "Ada", "company": "Analytical Engines"}]
    for criteria, fields in (
        ({"title_keywords": ["CEO", LONG]}, {"criteria.title_keywords": f"{TOO_LONG[0].upper()}"}),
        (
            {"industries": MANY, "title_keywords": MANY, "countries": MANY},
            {"criteria": f"{TOO_MUCH[0].upper()}"},
        ),
    ):
        response = client.post(
            "/api/qualify/runs",
            json.dumps({"prospects": prospects, "criteria": criteria}),
            content_type="application/json",
            headers={"X-CSRFToken": CSRF_SECRET},
        )
        assert response.status_code == 400
        answer = response.json()["fields"]
        assert answer.keys() == fields.keys()
        assert all(answer[name].startswith(start) for name, start in fields.items())
    assert not QualificationRun.objects.exists()


def test_the_form_shows_the_long_phrase_on_its_field_and_the_profile_above_the_form(client, alice):
    client.force_login(alice)
    csv = b"name,company\nAnn,Acme\n"

    def post(**fields):
        upload = SimpleUploadedFile("p.csv", csv, content_type="text/csv")
        return client.post("/runs/new/", {"prospects_file": upload, **fields})

    response = post(industries=f"Software, {LONG}")
    assert response.status_code == 200
    assert response.context["form"].errors["industries"] == [
        TOO_LONG[0].upper() + TOO_LONG[1:] + "."
    ]
    many = ", ".join(MANY)
    response = post(industries=many, title_keywords=many, countries=many)
    assert response.context["form"].non_field_errors() == [TOO_MUCH[0].upper() + TOO_MUCH[1:] + "."]
    assert not QualificationRun.objects.exists()


def test_the_settings_checks_refuse_a_long_default_phrase_and_too_large_a_profile():
    with override_settings(QUALIFIER_DEFAULT_CRITERIA={"title_keywords": f"CEO,{LONG}"}):
        [error] = check_qualifier_settings()
    assert error.id == "qualifier.E005"
    assert (
        error.msg == f"Setting QUALIFIER_DEFAULT_CRITERIA is invalid: title_keywords: {TOO_LONG}."
    )
    many = ",".join(MANY)
    criteria = {"industries": many, "title_keywords": many, "countries": many}
    with override_settings(QUALIFIER_DEFAULT_CRITERIA=criteria):
        [error] = check_qualifier_settings()
    assert error.id == "qualifier.E005"
    assert error.msg == f"Setting QUALIFIER_DEFAULT_CRITERIA is invalid: {TOO_MUCH}."


def test_the_environments_default_criteria_refuse_a_long_phrase_and_too_large_a_profile(
    monkeypatch,
):
    from qualifier.conf import DEFAULT_CRITERIA
    from qualifier.environment import Env, SettingError

    monkeypatch.setenv("QUALIFIER_TITLE_KEYWORDS", f"CEO,{LONG}")
    with pytest.raises(SettingError) as excinfo:
        Env().criteria("QUALIFIER_", DEFAULT_CRITERIA)
    assert str(excinfo.value) == f"Setting QUALIFIER_TITLE_KEYWORDS is invalid: {TOO_LONG}."
    many = ",".join(MANY)
    for name in ("QUALIFIER_INDUSTRIES", "QUALIFIER_TITLE_KEYWORDS", "QUALIFIER_COUNTRIES"):
        monkeypatch.setenv(name, many)
    with pytest.raises(SettingError) as excinfo:
        Env().criteria("QUALIFIER_", DEFAULT_CRITERIA)
    assert str(excinfo.value) == (
        "Settings QUALIFIER_INDUSTRIES, QUALIFIER_COUNTRIES, QUALIFIER_TITLE_KEYWORDS, "
        f"QUALIFIER_EXCLUDED_DOMAINS are invalid: {TOO_MUCH}."
    )


# --- matching costs the text's length, however the phrases overlap ----------------------------


def reference_search(phrases: tuple[str, ...], text: str) -> str | None:
    """The rule, by brute force: the leftmost whole-word match, then the longest; the first
    configured of phrases equal when casefolded."""
    folded = text.casefold()

    def is_word(char: str) -> bool:
        return char.isalnum() or char == "_"

    for start in range(len(folded)):
        if start and is_word(folded[start - 1]):
            continue
        found = None
        for phrase in phrases:
            key = phrase.casefold()
            end = start + len(key)
            if (
                key
                and folded.startswith(key, start)
                and (end == len(folded) or not is_word(folded[end]))
                and (found is None or len(key) > len(found.casefold()))
            ):
                found = phrase
        if found is not None:
            return found
    return None


PHRASE = st.text(alphabet="ab -.ßS", min_size=1, max_size=6)


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(phrases=st.lists(PHRASE, min_size=1, max_size=6).map(tuple), text=st.text("ab -.ßSx"))
def test_the_matcher_finds_what_the_rule_says(phrases, text):
    assert WordMatcher(phrases).search(text) == reference_search(phrases, text)


def test_crafted_phrases_cost_the_text_once_not_once_per_word_start(monkeypatch):
    """Counted in steps, not seconds: phrases that share a long prefix with a title that has
    a word start every two characters make a walk from every word start; the automaton reads
    each character once and follows at most one failure link per character it read."""
    title = ("a " * 128)[:255]
    phrases = tuple(("a " * 40)[: MAX_PHRASE_LENGTH - 1] + end for end in "bcdefghijk")
    matcher = WordMatcher(phrases)
    steps = []
    children = matcher.children

    class Counting(list):
        def __getitem__(self, index):
            steps.append(index)
            return list.__getitem__(self, index)

    matcher.children = Counting(children)
    assert matcher.search(title) is None
    assert len(steps) <= 3 * len(title)


def test_a_run_stored_before_the_bound_still_shows_its_criteria(client, alice, make_run):
    """Runs keep the criteria they were created with: a phrase of 100 characters, allowed
    then, is read back as stored (by the page, and by the worker that scores the run)."""
    from recovery.models import RunStatus

    old_phrase = "Chief " + "z" * 94
    stored = {**Criteria().as_dict(), "title_keywords": [old_phrase, "VP"]}
    run = make_run(RunStatus.COMPLETED, user=alice, criteria=stored)
    assert Criteria.from_dict(run.criteria).title_keywords == (old_phrase, "VP")
    client.force_login(alice)
    response = client.get(f"/runs/{run.pk}/")
    assert response.status_code == 200
    assert old_phrase in response.content.decode()
