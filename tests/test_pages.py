"""The user's pages: sign-in, runs, new run, run detail, CSV download and retry."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from qualifier.models import Outcome, Prospect, ProspectResult
from recovery.models import QualificationRun, RunStatus
from tests.helpers import DUMMY, IMMEDIATE

pytestmark = pytest.mark.django_db

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "prospects.csv"


@pytest.fixture
def signed_in(client, alice) -> Client:
    client.force_login(alice)
    return client


def add_results(run: QualificationRun, outcomes: list[tuple[str, int | None]]) -> None:
    """Prospects at positions 2.. with one result each (outcome, score)."""
    prospects = Prospect.objects.bulk_create(
        Prospect(
            run=run,
            position=index + 2,
            number=index + 1,
            name=f"Person {index}",
            company=f"Co {index}",
        )
        for index in range(len(outcomes))
    )
    ProspectResult.objects.bulk_create(
        ProspectResult(
            run=run,
            prospect=prospect,
            outcome=outcome,
            score=score,
            reasons=[f"reason for {prospect.name}"],
            error="scorer exploded" if outcome == Outcome.ERRORED else "",
        )
        for prospect, (outcome, score) in zip(prospects, outcomes, strict=True)
    )


def upload(content: bytes = b"", name: str = "prospects.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content or SAMPLE.read_bytes(), content_type="text/csv")


# --- sign-in ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["/", "/runs/new/", "/runs/1/", "/runs/1/results.csv", "/runs/1/continue/"]
)
def test_every_page_needs_a_signed_in_user(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


def test_login_page_signs_in_and_logout_is_a_post(client):
    get_user_model().objects.create_user("carol", password="correct horse battery")
    page = client.get("/accounts/login/")
    assert page.status_code == 200
    assert b'name="username"' in page.content
    wrong = client.post("/accounts/login/", {"username": "carol", "password": "nope"})
    assert wrong.status_code == 200
    assert b"Please enter a correct username and password" in wrong.content
    right = client.post(
        "/accounts/login/", {"username": "carol", "password": "correct horse battery"}
    )
    assert right.status_code == 302
    assert right["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.get("/accounts/logout/").status_code == 405
    out = client.post("/accounts/logout/")
    assert out["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_pages_load_nothing_from_other_hosts(signed_in):
    html = signed_in.get("/").content.decode()
    assert "/static/qualifier/style.css" in html
    assert 'name="viewport"' in html
    assert not re.search(r'(src|href)="(https?:)?//', html)


# --- runs page -------------------------------------------------------------------------------


def test_runs_page_shows_active_runs_with_progress(signed_in, alice, make_run):
    run = make_run(RunStatus.PROCESSING, total=25, completed=10, user=alice)
    html = signed_in.get("/").content.decode()
    assert f'data-run-id="{run.pk}"' in html
    assert '<progress max="25" value="10"' in html
    assert 'data-active-url="/api/qualify/runs/active"' in html
    assert "/static/qualifier/live.js" in html


def test_runs_page_history_shows_outcome_counts_duration_and_failure_reason(
    signed_in, alice, make_run
):
    done = make_run(RunStatus.COMPLETED, total=3, completed=3, user=alice, started_minutes_ago=3)
    QualificationRun.objects.filter(pk=done.pk).update(
        completed_at=timezone.now(), worked_seconds=180
    )
    add_results(
        done, [(Outcome.QUALIFIED, 80), (Outcome.QUALIFIED, 70), (Outcome.NOT_QUALIFIED, 20)]
    )
    failed = make_run(
        RunStatus.FAILED,
        total=4,
        completed=1,
        user=alice,
        failure_reason="no sign of life for 9 min; recovered at server start",
    )
    add_results(failed, [(Outcome.ERRORED, None)])
    html = signed_in.get("/").content.decode()
    history = html[html.index("History") :]
    assert f"Run {done.pk}" in history and f"Run {failed.pk}" in history
    assert "no sign of life for 9 min; recovered at server start" in history
    assert "3 min 0 s" in history
    assert re.search(r'data-count="qualified">2<', history)
    assert re.search(r'data-count="not_qualified">1<', history)
    assert re.search(r'data-count="errored">1<', history)


def test_runs_page_query_count_does_not_grow_with_runs(signed_in, alice, make_run):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert signed_in.get("/").status_code == 200
        return len(captured)

    make_run(RunStatus.COMPLETED, user=alice)
    make_run(RunStatus.PROCESSING, user=alice)
    few = queries()
    for _ in range(8):
        run = make_run(RunStatus.COMPLETED, user=alice)
        add_results(run, [(Outcome.QUALIFIED, 90)])
        make_run(RunStatus.PENDING, user=alice)
    assert queries() == few


def test_runs_page_shows_only_the_users_own_runs(signed_in, bob, make_run):
    theirs = make_run(RunStatus.COMPLETED, user=bob)
    their_active = make_run(RunStatus.PROCESSING, user=bob)
    html = signed_in.get("/").content.decode()
    assert f"/runs/{theirs.pk}/" not in html
    assert f"/runs/{their_active.pk}/" not in html


def test_runs_page_history_is_paginated(signed_in, alice, make_run):
    runs = [make_run(RunStatus.COMPLETED, user=alice, created_minutes_ago=i) for i in range(23)]
    first = signed_in.get("/").content.decode()
    second = signed_in.get("/?page=2").content.decode()
    assert "Page 1 of 2" in first
    assert f'href="/runs/{runs[0].pk}/"' in first
    assert f'href="/runs/{runs[22].pk}/"' in second
    assert f'href="/runs/{runs[0].pk}/"' not in second


# --- new run ---------------------------------------------------------------------------------


def test_new_run_form_is_prefilled_with_the_default_criteria(signed_in):
    html = signed_in.get("/runs/new/").content.decode()
    assert 'value="Software, SaaS, Information Technology, Fintech"' in html
    assert 'name="min_score" value="60"' in html
    assert 'enctype="multipart/form-data"' in html


@override_settings(TASKS=DUMMY)
def test_new_run_from_the_sample_csv_redirects_to_the_pending_run(signed_in, alice):
    response = signed_in.post("/runs/new/", {"prospects_file": upload()})
    run = QualificationRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert (run.user, run.status, run.total) == (alice, RunStatus.PENDING, 25)
    assert run.criteria["min_score"] == 60
    assert Prospect.objects.filter(run=run, extra__notes="Met at the fintech summit").exists()
    page = signed_in.get(response["Location"]).content.decode()
    assert f"Run {run.pk} started with 25 prospects." in page


@override_settings(TASKS=DUMMY)
def test_new_run_takes_criteria_overrides(signed_in):
    signed_in.post(
        "/runs/new/",
        {
            "prospects_file": upload(),
            "industries": "Fintech, Biotech",
            "min_employees": "10",
            "max_employees": "",
            "countries": "Germany",
            "title_keywords": "",
            "excluded_domains": "https://www.orbitpay.com/",
            "min_score": "70",
        },
    )
    assert QualificationRun.objects.get().criteria == {
        "industries": ["Fintech", "Biotech"],
        "min_employees": 10,
        "max_employees": None,
        "countries": ["Germany"],
        "title_keywords": [],
        "excluded_domains": ["orbitpay.com"],
        "min_score": 70,
    }


def test_new_run_runs_to_completion_with_the_immediate_backend(
    signed_in, django_capture_on_commit_callbacks
):
    with (
        override_settings(TASKS=IMMEDIATE),
        django_capture_on_commit_callbacks(execute=True),
    ):
        response = signed_in.post("/runs/new/", {"prospects_file": upload()})
    run = QualificationRun.objects.get()
    assert run.status == RunStatus.COMPLETED
    assert run.completed == 25
    html = signed_in.get(response["Location"]).content.decode()
    assert re.search(r'data-count="qualified">16<', html)
    assert re.search(r'data-count="not_qualified">9<', html)
    assert "Katherine Johnson" in html
    assert "data-run-url" not in html  # a finished run's page does not poll


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"name,company,employees\nAda,Engines,250\nGrace,Cobol,lots\n",
            "Line 3, column &#x27;employees&#x27;: &#x27;lots&#x27; is not a whole number.",
        ),
        (b"name,email\nAda,ada@example.com\n", "column &#x27;company&#x27;"),
        (b"name,company\n", "no prospects"),
        (b"\xff\xfe not utf-8", "not UTF-8"),
    ],
    ids=["bad-cell", "missing-column", "no-rows", "not-utf8"],
)
def test_new_run_shows_csv_errors_on_the_form_and_creates_nothing(signed_in, content, message):
    response = signed_in.post("/runs/new/", {"prospects_file": upload(content)})
    assert response.status_code == 200
    html = response.content.decode()
    error = re.search(r'<p class="error" id="id_prospects_file_error">(.*?)</p>', html)
    assert error and message in error.group(1)
    assert not QualificationRun.objects.exists()


def test_new_run_lists_every_bad_line_of_the_csv(signed_in):
    content = b"name,company,employees\nAda,,250\nGrace,Cobol,lots\nAlan,Bletchley,12\n,,x\n"
    response = signed_in.post("/runs/new/", {"prospects_file": upload(content)})
    html = response.content.decode()
    listed = re.search(r'<ul class="error" id="id_prospects_file_error">(.*?)</ul>', html, re.S)
    assert listed
    assert re.findall(r"<li>(.*?)</li>", listed.group(1)) == [
        "Line 2, column &#x27;company&#x27;: a value is required here.",
        "Line 3, column &#x27;employees&#x27;: &#x27;lots&#x27; is not a whole number.",
        "Line 5, column &#x27;name&#x27;: a value is required here.",
        "Line 5, column &#x27;company&#x27;: a value is required here.",
        "Line 5, column &#x27;employees&#x27;: &#x27;x&#x27; is not a whole number.",
    ]
    assert not QualificationRun.objects.exists()


def test_new_run_without_a_file_says_so(signed_in):
    response = signed_in.post("/runs/new/", {"min_score": "50"})
    assert "This field is required." in response.content.decode()
    assert not QualificationRun.objects.exists()


def test_new_run_shows_criteria_errors_on_their_fields(signed_in):
    response = signed_in.post(
        "/runs/new/",
        {
            "prospects_file": upload(),
            "min_score": "300",
            "min_employees": "500",
            "max_employees": "100",
            "excluded_domains": "not a domain",
        },
    )
    html = response.content.decode()
    assert "data-choose-again" in html
    assert re.search(r'id="id_min_score_error">&#x27;300&#x27; is not between 0 and 100\.<', html)
    assert re.search(r'id="id_excluded_domains_error">[^<]*not a domain', html)
    assert not QualificationRun.objects.exists()
    response = signed_in.post(
        "/runs/new/",
        {"prospects_file": upload(), "min_employees": "500", "max_employees": "100"},
    )
    assert re.search(
        r'id="id_max_employees_error">Must not be smaller than min_employees',
        response.content.decode(),
    )
    assert not QualificationRun.objects.exists()


@override_settings(QUALIFIER_MAX_UPLOAD_BYTES=100)
def test_new_run_refuses_a_file_over_the_byte_limit(signed_in):
    response = signed_in.post("/runs/new/", {"prospects_file": upload()})
    assert "The file is larger than the limit of 100 bytes." in response.content.decode()
    assert not QualificationRun.objects.exists()


@override_settings(QUALIFIER_MAX_PROSPECTS=5)
def test_new_run_refuses_more_prospects_than_allowed(signed_in):
    response = signed_in.post("/runs/new/", {"prospects_file": upload()})
    assert "at most 5 are allowed" in response.content.decode()
    assert not QualificationRun.objects.exists()


# --- run detail ------------------------------------------------------------------------------


def test_run_detail_of_another_users_run_is_404(signed_in, bob, make_run):
    theirs = make_run(RunStatus.COMPLETED, user=bob)
    for url in (f"/runs/{theirs.pk}/", f"/runs/{theirs.pk}/results.csv"):
        assert signed_in.get(url).status_code == 404
    assert signed_in.post(f"/runs/{theirs.pk}/continue/").status_code == 404
    assert signed_in.get("/runs/999999/").status_code == 404


def test_results_are_numbered_from_1_with_the_domain_not_the_website(signed_in, alice, make_run):
    run = make_run(RunStatus.COMPLETED, total=3, completed=3, user=alice)
    add_results(run, [(Outcome.QUALIFIED, 80), (Outcome.QUALIFIED, 70), (Outcome.QUALIFIED, 60)])
    # Line numbers with a gap, as after a blank line in the file.
    Prospect.objects.filter(run=run, position=4).update(position=7)
    Prospect.objects.filter(run=run, position=2).update(
        domain="https://www.analyticalengines.io/about"
    )
    Prospect.objects.filter(run=run, position=3).update(email="grace@cobolworks.com")

    html = signed_in.get(f"/runs/{run.pk}/").content.decode()

    numbers = re.findall(r'<td data-label="#" title="Line (\d+) of the file">(\d+)</td>', html)
    assert numbers == [("2", "1"), ("3", "2"), ("7", "3")]
    assert '<span class="domain muted">analyticalengines.io</span>' in html
    assert "https://www.analyticalengines.io" not in html
    assert '<span class="domain muted">cobolworks.com</span>' in html
    assert scores_in(signed_in.get(f"/runs/{run.pk}/?sort=score").content.decode()) == [
        "60",
        "70",
        "80",
    ]
    by_score = signed_in.get(f"/runs/{run.pk}/?sort=score").content.decode()
    assert re.findall(r'<td data-label="#"[^>]*>(\d+)</td>', by_score) == ["3", "2", "1"]


def test_the_results_heading_counts_are_marked_for_live_updates(signed_in, alice, make_run):
    run = make_run(RunStatus.PROCESSING, total=3, completed=1, user=alice)
    add_results(run, [(Outcome.QUALIFIED, 80)])

    html = signed_in.get(f"/runs/{run.pk}/").content.decode()

    assert "(<span data-scored>1</span> of <span data-total>3</span> prospects)" in html


def test_a_recovered_run_lasts_until_its_last_sign_of_life_not_until_it_was_found(
    signed_in, alice, make_run
):
    from recovery.models import RecoverySource
    from recovery.sweep import recover_stuck_runs

    dead = make_run(user=alice, started_minutes_ago=30, heartbeat_minutes_ago=27)
    recover_stuck_runs(source=RecoverySource.COMMAND, log=False)
    failed_itself = make_run(RunStatus.FAILED, user=alice, started_minutes_ago=30)
    QualificationRun.objects.filter(pk=failed_itself.pk).update(
        completed_at=timezone.now(), worked_seconds=1800.5
    )

    html = signed_in.get(f"/runs/{dead.pk}/").content.decode()
    assert re.search(r"<dd data-duration>(2 min 59|3 min \d+) s</dd>", html)
    html = signed_in.get(f"/runs/{failed_itself.pk}/").content.decode()
    assert re.search(r"<dd data-duration>30 min \d+ s</dd>", html)
    body = signed_in.get(f"/api/qualify/runs/{dead.pk}").json()
    assert 179 <= body["duration_seconds"] <= 181


@pytest.mark.parametrize("url", ["/", "/runs/new/", "/runs/{run}/"])
def test_every_page_carries_the_notices_of_finished_runs(signed_in, alice, make_run, url):
    run = make_run(RunStatus.COMPLETED, user=alice)

    html = signed_in.get(url.format(run=run.pk)).content.decode()

    assert re.search(
        r'<div class="notices" data-notices data-active-url="/api/qualify/runs/active"', html
    )
    assert "/static/qualifier/live.js" in html


def test_run_detail_of_an_active_run_polls_its_api(signed_in, alice, make_run):
    run = make_run(RunStatus.PROCESSING, total=8, completed=3, user=alice)
    html = signed_in.get(f"/runs/{run.pk}/").content.decode()
    assert f'data-run-url="/api/qualify/runs/{run.pk}"' in html
    assert '<progress max="8" value="3"' in html
    assert "Retry" not in html


def scores_in(html: str) -> list[str]:
    return re.findall(r'<td data-label="Score" class="num">([^<]*)</td>', html)


def test_run_detail_sorts_results_by_score(signed_in, alice, make_run):
    run = make_run(RunStatus.COMPLETED, total=4, completed=4, user=alice)
    add_results(
        run,
        [
            (Outcome.NOT_QUALIFIED, 40),
            (Outcome.ERRORED, None),
            (Outcome.QUALIFIED, 90),
            (Outcome.QUALIFIED, 65),
        ],
    )
    url = f"/runs/{run.pk}/"
    assert scores_in(signed_in.get(url).content.decode()) == ["40", "—", "90", "65"]
    assert scores_in(signed_in.get(url + "?sort=score").content.decode()) == [
        "40",
        "65",
        "90",
        "—",
    ]
    assert scores_in(signed_in.get(url + "?sort=-score").content.decode()) == [
        "90",
        "65",
        "40",
        "—",
    ]
    assert scores_in(signed_in.get(url + "?sort=bogus").content.decode())[0] == "40"


def test_run_detail_paginates_results_and_keeps_the_sort(signed_in, alice, make_run):
    run = make_run(RunStatus.COMPLETED, total=60, completed=60, user=alice)
    add_results(run, [(Outcome.QUALIFIED, score) for score in range(60)])
    first = signed_in.get(f"/runs/{run.pk}/?sort=-score").content.decode()
    assert len(scores_in(first)) == 50
    assert "Page 1 of 2" in first
    assert 'href="?sort=-score&amp;page=2"' in first
    second = signed_in.get(f"/runs/{run.pk}/?sort=-score&page=2").content.decode()
    assert scores_in(second) == [str(score) for score in range(9, -1, -1)]


def test_run_detail_shows_failure_reason_and_continue_button_on_a_failed_run(
    signed_in, alice, make_run
):
    run = make_run(RunStatus.FAILED, user=alice, failure_reason="worker crashed")
    html = signed_in.get(f"/runs/{run.pk}/").content.decode()
    assert "worker crashed" in html
    assert f'action="/runs/{run.pk}/continue/"' in html
    assert ">Continue</button>" in html
    assert 'name="csrfmiddlewaretoken"' in html


@pytest.mark.parametrize(
    ("status", "completed"),
    [
        (RunStatus.FAILED, 10),  # nothing left
        (RunStatus.PENDING, 0),
        (RunStatus.PROCESSING, 3),
        (RunStatus.COMPLETED, 10),
    ],
)
def test_the_continue_button_hides_when_it_does_not_apply(
    signed_in, alice, make_run, status, completed
):
    run = make_run(status, user=alice, total=10, completed=completed)
    html = signed_in.get(f"/runs/{run.pk}/").content.decode()
    assert f'action="/runs/{run.pk}/continue/"' not in html
    assert ">Continue</button>" not in html


# --- CSV download ----------------------------------------------------------------------------


def download(client: Client, run: QualificationRun) -> list[list[str]]:
    response = client.get(f"/runs/{run.pk}/results.csv")
    assert response.status_code == 200
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))


def test_results_download_is_a_csv_of_every_result(signed_in, alice, make_run):
    run = make_run(RunStatus.COMPLETED, total=3, completed=3, user=alice)
    add_results(run, [(Outcome.QUALIFIED, 80), (Outcome.ERRORED, None), (Outcome.NOT_QUALIFIED, 5)])
    Prospect.objects.filter(run=run, position=2).update(
        name='Ada "the first" Lovelace', company="Engines, Ltd", email="ada@x.io", domain="x.io"
    )
    response = signed_in.get(f"/runs/{run.pk}/results.csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert (
        response["Content-Disposition"]
        == f'attachment; filename="qualifier-run-{run.pk}-results.csv"'
    )
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode("utf-8-sig"))))
    # A run from before runs recorded their input's columns: the known columns.
    assert rows[0] == [
        "name",
        "email",
        "company",
        "domain",
        "title",
        "industry",
        "employees",
        "country",
        "score",
        "outcome",
        "reasons",
        "error",
    ]
    assert rows[1] == [
        'Ada "the first" Lovelace',
        "ada@x.io",
        "Engines, Ltd",
        "x.io",
        "",
        "",
        "",
        "",
        "80",
        "Qualified",
        "reason for Person 0",
        "",
    ]
    assert rows[2][-4:] == ["", "Errored", "reason for Person 1", "scorer exploded"]
    assert len(rows) == 4


UPLOAD = (
    "Notes,Name,company,Website,Title,Industry,Employees,Country,crm id\r\n"
    'met at expo,Ann Lee,Acme,https://www.acme.io/about,VP Sales,Software,"1,200",Germany,A-1\r\n'
    ",Bob Ray,Rival,,CTO,Retail,12,France,A-2\r\n"
)


def run_from(client: Client, content: str, on_commit) -> QualificationRun:
    """A run over `content`, scored by the time it returns."""
    with override_settings(TASKS=IMMEDIATE), on_commit(execute=True):
        response = client.post("/runs/new/", {"prospects_file": upload(content.encode())})
    assert response.status_code == 302, response.content.decode()
    return QualificationRun.objects.get(pk=response["Location"].strip("/").rsplit("/", 1)[1])


def test_results_download_gives_every_input_column_in_its_order_then_the_results(
    signed_in, django_capture_on_commit_callbacks
):
    run = run_from(signed_in, UPLOAD, django_capture_on_commit_callbacks)

    rows = download(signed_in, run)

    assert rows[0] == [
        "Notes",
        "Name",
        "company",
        "Website",
        "Title",
        "Industry",
        "Employees",
        "Country",
        "crm id",
        "domain",
        "score",
        "outcome",
        "reasons",
        "error",
    ]
    assert rows[1][:10] == [
        "met at expo",
        "Ann Lee",
        "Acme",
        "https://www.acme.io/about",
        "VP Sales",
        "Software",
        "1200",
        "Germany",
        "A-1",
        "acme.io",
    ]
    assert rows[1][11] == "Qualified"
    assert rows[2][:10] == ["", "Bob Ray", "Rival", "", "CTO", "Retail", "12", "France", "A-2", ""]
    assert len(rows) == 3


def test_a_downloaded_csv_uploads_again_as_the_same_prospects_and_downloads_the_same(
    signed_in, django_capture_on_commit_callbacks
):
    first = run_from(signed_in, UPLOAD, django_capture_on_commit_callbacks)
    downloaded = download(signed_in, first)
    as_file = io.StringIO()
    csv.writer(as_file).writerows(downloaded)

    again = run_from(signed_in, as_file.getvalue(), django_capture_on_commit_callbacks)

    fields = ("name", "company", "email", "title", "industry", "employees", "country")
    assert [
        (*values, prospect.domain_name)
        for prospect in Prospect.objects.filter(run=again).order_by("position")
        for values in [tuple(getattr(prospect, name) for name in fields)]
    ] == [
        (*values, prospect.domain_name)
        for prospect in Prospect.objects.filter(run=first).order_by("position")
        for values in [tuple(getattr(prospect, name) for name in fields)]
    ]
    # The earlier score, outcome, reasons and error give way to the new ones: no duplicates.
    assert download(signed_in, again) == downloaded


# --- continue --------------------------------------------------------------------------------


@override_settings(TASKS=DUMMY)
def test_continue_sends_the_same_run_back_to_the_queue_and_hides_the_button(
    signed_in, alice, make_run
):
    run = make_run(RunStatus.FAILED, total=5, completed=2, user=alice, criteria={})
    add_results(run, [(Outcome.QUALIFIED, 90), (Outcome.NOT_QUALIFIED, 10)])
    response = signed_in.post(f"/runs/{run.pk}/continue/")
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert QualificationRun.objects.count() == 1
    run.refresh_from_db()
    assert run.status == RunStatus.PENDING
    page = signed_in.get(response["Location"]).content.decode()
    assert f"Run {run.pk} continues with the 3 prospects that had no result" in page
    assert ">Continue</button>" not in page
    again = signed_in.post(f"/runs/{run.pk}/continue/", follow=True).content.decode()
    assert f"Run {run.pk} is already pending: it was continued" in again
    # A second press (a double click without the page's script) is news, not a red failure.
    assert 'class="message info"' in again and 'class="message error"' not in again
    assert ProspectResult.objects.filter(run=run).count() == 2


def test_a_failed_run_says_what_to_do_next(signed_in, alice, make_run):
    run = make_run(
        RunStatus.FAILED, user=alice, total=2000, completed=122, failure_reason="worker crashed"
    )
    expected = (
        "Press Continue to finish the remaining 1,878 prospects; the 122 results so far are kept."
    )
    page = signed_in.get(f"/runs/{run.pk}/").content.decode()
    assert expected in page
    assert "data-submit-once" in page  # the page's script sends the form once
    assert expected in signed_in.get("/").content.decode()
    done = make_run(RunStatus.FAILED, user=alice, total=3, completed=3, failure_reason="x")
    assert (
        "Every prospect has a result: download the CSV"
        in signed_in.get(f"/runs/{done.pk}/").content.decode()
    )
    one = make_run(RunStatus.FAILED, user=alice, total=3, completed=0, failure_reason="x")
    assert (
        "the remaining 3 prospects; nothing was scored yet."
        in signed_in.get(f"/runs/{one.pk}/").content.decode()
    )
    single = make_run(RunStatus.FAILED, user=alice, total=2, completed=1, failure_reason="x")
    assert (
        "the remaining 1 prospect; the result so far is kept."
        in signed_in.get(f"/runs/{single.pk}/").content.decode()
    )


def test_continue_of_a_run_that_is_not_failed_shows_why_and_changes_nothing(
    signed_in, alice, make_run
):
    run = make_run(RunStatus.COMPLETED, user=alice)
    response = signed_in.post(f"/runs/{run.pk}/continue/", follow=True)
    assert "only a failed run can be continued" in response.content.decode()
    assert QualificationRun.objects.get(pk=run.pk).status == RunStatus.COMPLETED


def test_retry_is_post_only_and_needs_the_csrf_token(alice, make_run):
    run = make_run(RunStatus.FAILED, user=alice)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get(f"/runs/{run.pk}/continue/").status_code == 405
    assert client.post(f"/runs/{run.pk}/continue/").status_code == 403
    assert QualificationRun.objects.count() == 1


# --- operators' details ------------------------------------------------------------------------


def test_the_header_links_the_admin_for_staff_only(client, alice):
    client.force_login(alice)
    assert b'href="/admin/"' not in client.get("/").content
    alice.is_staff = True
    alice.save()
    assert b'href="/admin/">Admin</a>' in client.get("/").content


def test_a_count_of_zero_errored_is_not_shown_as_an_alarm(signed_in, alice):
    run = QualificationRun.objects.create(
        user=alice, status=RunStatus.COMPLETED, total=2, completed=2
    )
    add_results(run, [(Outcome.QUALIFIED, 90), (Outcome.NOT_QUALIFIED, 10)])
    page = signed_in.get(f"/runs/{run.pk}/").content.decode()
    assert re.search(r'class="count errored zero"[^>]*><span data-count="errored">0<', page)
    assert re.search(r'class="count qualified"[^>]*><span data-count="qualified">1<', page)


def test_moments_are_written_one_way_with_seconds_on_pages_and_in_the_admin(client, alice):
    moment = timezone.make_aware(timezone.datetime(2026, 12, 7, 14, 5, 9), timezone.UTC)
    run = QualificationRun.objects.create(
        user=alice, status=RunStatus.COMPLETED, total=1, completed=1, created_at=moment
    )
    alice.is_staff = alice.is_superuser = True
    alice.save()
    client.force_login(alice)
    written = "Dec 7, 2026, 14:05:09"
    assert written in client.get(f"/runs/{run.pk}/").content.decode()
    assert written in client.get("/").content.decode()
    admin_page = client.get(f"/admin/recovery/qualificationrun/{run.pk}/change/")
    assert written in admin_page.content.decode()


# --- spreadsheets both ways --------------------------------------------------------------------


@override_settings(TASKS=DUMMY)
def test_an_excel_upload_starts_a_run_and_its_unused_near_miss_columns_are_named(signed_in):
    from tests.test_prospects import xlsx_bytes

    workbook = xlsx_bytes(
        ("Name", "E-Mail", "Company Name", "Titel"), ("Ada", "ada@x.io", "Engines", "CTO")
    )
    response = signed_in.post(
        "/runs/new/",
        {"prospects_file": SimpleUploadedFile("prospects.xlsx", workbook)},
        follow=True,
    )
    run = QualificationRun.objects.get()
    assert response.redirect_chain == [(f"/runs/{run.pk}/", 302)]
    assert Prospect.objects.get(run=run).email == "ada@x.io"
    page = response.content.decode()
    assert f"Run {run.pk} started with 1 prospects." in page
    assert re.search(
        r'class="message warning">The column &#x27;Titel&#x27; is kept as it is but not used', page
    )
    form = signed_in.get("/runs/new/").content.decode()
    assert 'accept=".csv,.xlsx,' in form


def test_a_workbook_saved_as_xls_and_uploaded_gets_a_clear_message(signed_in):
    response = signed_in.post(
        "/runs/new/",
        {"prospects_file": upload(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x80" * 600)},
    )
    html = response.content.decode()
    assert "Excel 97-2003 workbook (.xls)" in html and "not UTF-8" not in html
    assert QualificationRun.objects.count() == 0


@override_settings(TASKS=DUMMY)
def test_the_download_opens_in_any_locale_with_a_bom_and_the_uploads_delimiter(signed_in):
    signed_in.post(
        "/runs/new/",
        {"prospects_file": upload(b"name;company;employees\nAda;Engines, Ltd;1.200\n")},
    )
    run = QualificationRun.objects.get()
    body = b"".join(signed_in.get(f"/runs/{run.pk}/results.csv").streaming_content)
    assert body.startswith(b"\xef\xbb\xbfname;company;employees;domain;score;outcome;reasons;error")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig")), delimiter=";"))
    assert rows[1][:3] == ["Ada", "Engines, Ltd", "1200"]


def test_a_failed_runs_download_lists_every_prospect_with_the_unscored_marked(
    signed_in, alice, make_run
):
    run = make_run(RunStatus.FAILED, total=4, completed=2, user=alice)
    add_results(run, [(Outcome.QUALIFIED, 80), (Outcome.NOT_QUALIFIED, 5)])
    ProspectResult.objects.filter(run=run, prospect__position=3).delete()
    Prospect.objects.bulk_create(
        Prospect(
            run=run, position=position, number=position - 1, name=f"Late {position}", company="Co"
        )
        for position in (4, 5)
    )
    rows = download(signed_in, run)
    assert [(row[0], row[-4], row[-3]) for row in rows[1:]] == [
        ("Person 0", "80", "Qualified"),
        ("Person 1", "", "Not scored"),
        ("Late 4", "", "Not scored"),
        ("Late 5", "", "Not scored"),
    ]
    by_score = signed_in.get(f"/runs/{run.pk}/results.csv?sort=-score")
    lines = b"".join(by_score.streaming_content).decode("utf-8-sig").splitlines()
    assert [line.split(",")[0] for line in lines[1:]] == [
        "Person 0",
        "Person 1",
        "Late 4",
        "Late 5",
    ]
