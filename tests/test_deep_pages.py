"""Listing pages and API lists cost the same at any offset: a deep page of a big run is as
cheap as the first (issue 15, item 1), and every page parameter is answered cleanly."""

from __future__ import annotations

import re
from urllib.parse import quote_from_bytes

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qualifier.listings import RESULTS_PAGE_SIZE
from qualifier.models import Outcome, Prospect, ProspectResult
from recovery.models import QualificationRun, RunStatus
from tests.tally import tried

pytestmark = pytest.mark.django_db

BIG = 10_000
DEEPEST = BIG // RESULTS_PAGE_SIZE


def big_run(user, make_run, size: int = BIG) -> QualificationRun:
    """A finished run of `size` prospects, each with a result (positions start at 2, the CSV
    line after the header)."""
    run = make_run(RunStatus.COMPLETED, total=size, completed=size, user=user)
    prospects = Prospect.objects.bulk_create(
        (
            Prospect(
                run=run,
                position=index + 2,
                number=index + 1,
                name=f"Person {index}",
                company="Co",
            )
            for index in range(size)
        ),
        batch_size=1_000,
    )
    ProspectResult.objects.bulk_create(
        (
            ProspectResult(run=run, prospect=prospect, outcome=Outcome.QUALIFIED, score=index % 101)
            for index, prospect in enumerate(prospects)
        ),
        batch_size=1_000,
    )
    return run


def page_queries(client: Client, url: str) -> tuple[list[str], str]:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200, url
    return [query["sql"] for query in queries.captured_queries], response.content.decode()


def _shape(sql: str) -> str:
    """The statement without its page's numbers and the clock's literals."""
    return re.sub(r" (LIMIT|OFFSET) \d+", "", re.sub(r"'[^']*'", "?", sql))


@pytest.mark.parametrize("sort", ["", "score", "-score"])
def test_the_deepest_results_page_runs_the_same_queries_as_the_first(client, alice, make_run, sort):
    run = big_run(alice, make_run)
    client.force_login(alice)
    url = f"/runs/{run.pk}/?sort={sort}&page="
    first, _ = page_queries(client, url + "1")
    deepest, html = page_queries(client, url + str(DEEPEST))

    assert [_shape(sql) for sql in deepest] == [_shape(sql) for sql in first]
    rows = [sql for sql in deepest if "qualifier_prospectresult" in sql and "OFFSET" in sql]
    assert len(rows) == 1
    # A number per row read by a correlated COUNT is paid for every row skipped, too.
    assert "COUNT(" not in rows[0].upper()
    numbers = re.findall(r'<td data-label="#"[^>]*>(\d+)</td>', html)
    assert len(numbers) == RESULTS_PAGE_SIZE
    if not sort:
        assert numbers == [str(n) for n in range(BIG - RESULTS_PAGE_SIZE + 1, BIG + 1)]


@pytest.mark.django_db(transaction=True)
def test_the_migration_numbers_existing_prospects_by_position_within_each_run():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    # Every other app at its latest, so the runs are created as they are now.
    leaves = [node for node in executor.loader.graph.leaf_nodes() if node[0] != "qualifier"]
    before = [*leaves, ("qualifier", "0005_run_input_delimiter")]
    after = [*leaves, ("qualifier", "0006_prospect_number")]
    executor.migrate(before)
    apps = executor.loader.project_state(before).apps
    Run = apps.get_model("recovery", "QualificationRun")
    OldProspect = apps.get_model("qualifier", "Prospect")
    runs = [Run.objects.create(status="COMPLETED", total=3, criteria={}) for _ in range(2)]
    for run, positions in zip(runs, [(9, 2, 5), (3, 4, 7)], strict=True):
        for position in positions:
            OldProspect.objects.create(run=run, position=position, name="P", company="Co")

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)

    numbered = Prospect.objects.order_by("run_id", "position").values_list("position", "number")
    assert list(numbered) == [(2, 1), (5, 2), (9, 3), (3, 1), (4, 2), (7, 3)]


# --- every page parameter of the HTML pages ----------------------------------------------------

#: Query string values as raw bytes, percent-encoded (invalid UTF-8 and NULs included), and
#: the page numbers near both ends.
RAW = st.binary(max_size=24).map(quote_from_bytes)
PAGES = RAW | st.integers(min_value=-2, max_value=DEEPEST + 2).map(str) | st.just(str(10**30))
SORTS = RAW | st.sampled_from(["", "score", "-score", "SCORE", "prospect__position", "-pk"])
#: What the pager says: "Page N of M".
PAGER = re.compile(r"<span>Page (\d+) of (\d+)</span>")


def examples(n: int):
    return settings(
        max_examples=n,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@pytest.fixture
def big(client, alice, make_run) -> tuple[Client, QualificationRun]:
    """alice, signed in, and her 10,000-result run."""
    run = big_run(alice, make_run)
    client.force_login(alice)
    return client, run


@examples(60)
@given(page=PAGES, sort=SORTS)
def test_any_page_and_sort_of_a_big_run_answers_a_full_page_at_the_first_pages_cost(
    big, page, sort
):
    """A page that is not a number shows the first page, one past the end the last; a sort we
    do not know is the input's order. Whatever was asked, the queries are those of page 1
    in the same order."""
    client, run = big
    first, _ = page_queries(client, f"/runs/{run.pk}/?sort={sort}")
    shape = [_shape(sql) for sql in first]
    queries, html = page_queries(client, f"/runs/{run.pk}/?sort={sort}&page={page}")
    shown, pages = map(int, PAGER.search(html).groups())
    numbers = [int(n) for n in re.findall(r'<td data-label="#"[^>]*>(\d+)</td>', html)]
    ok = pages == DEEPEST and len(numbers) == RESULTS_PAGE_SIZE
    ok = ok and [_shape(sql) for sql in queries] == shape
    tried("HTML: `page` and `sort` (a 10,000-result run)", refused=ok)
    assert pages == DEEPEST
    assert [_shape(sql) for sql in queries] == shape
    assert len(numbers) == RESULTS_PAGE_SIZE
    if "score" not in sort.lower():
        first = (shown - 1) * RESULTS_PAGE_SIZE + 1
        assert numbers == list(range(first, first + RESULTS_PAGE_SIZE))


@pytest.mark.parametrize(
    ("page", "shown"),
    [("1", 1), ("3", 3), ("4", 3), ("0", 3), ("-1", 3), ("x", 1), ("%00", 1), (str(10**30), 3)],
)
def test_the_runs_page_history_answers_any_page(client, alice, make_run, page, shown):
    QualificationRun.objects.bulk_create(
        QualificationRun(user=alice, status=RunStatus.COMPLETED, total=1, completed=1, criteria={})
        for _ in range(45)
    )
    client.force_login(alice)
    response = client.get(f"/?page={page}")
    assert response.status_code == 200
    assert PAGER.search(response.content.decode()).groups() == (str(shown), "3")
