"""A run's page while things happen, in a real browser (Playwright and Debian's chromium, like
tests/test_e2e_browser.py, against a real server and worker): the results table fills as
batches land; when the server cannot be reached the page says so and hides what went stale,
then catches up; a failed run says what to do next, and its Continue button sends the form
once however often it is pressed.

Screenshots at 1280 and 390 px go to $QUALIFIER_SCREENSHOTS when it is set.
"""

from __future__ import annotations

import re

import pytest

from tests.processes import PROJECT_DIR, manage
from tests.test_e2e_browser import (  # noqa: F401 - fixtures used by name
    PASSWORD,
    USERNAME,
    chromium,
    logs_on_failure,
    photograph,
    shots,
    site,
    watch,
)

pytestmark = pytest.mark.slow

SAMPLE = PROJECT_DIR / "samples" / "prospects.csv"

#: A failed run of the newcomer's with 5 prospects, 2 of them scored.
SEED_FAILED_RUN = """
from django.contrib.auth.models import User
from qualifier.models import Prospect, ProspectResult
from recovery.models import QualificationRun
run = QualificationRun.objects.create(
    status="FAILED", total=5, completed=2, user=User.objects.get(username="newcomer"),
    failure_reason="The worker process on host gone-host (pid 4242) has exited (found by test).",
)
prospects = Prospect.objects.bulk_create(
    Prospect(run=run, position=n + 2, number=n + 1, name=f"Person {n}", company=f"Company {n}")
    for n in range(5)
)
for prospect in prospects[:2]:
    ProspectResult.objects.create(run=run, prospect=prospect, outcome="NOT_QUALIFIED", score=10)
print(run.pk)
"""


def sign_in(page, site: str) -> None:  # noqa: F811
    page.goto(f"{site}/accounts/login/")
    page.fill("#id_username", USERNAME)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site}/")


@pytest.mark.slow(seconds=20)
def test_results_fill_while_processing_and_a_lost_connection_is_said_and_caught_up(
    chromium,  # noqa: F811
    site,  # noqa: F811
    shots,  # noqa: F811
    tmp_path,
):
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    with logs_on_failure(tmp_path, page):
        sign_in(page, site)
        page.goto(f"{site}/runs/new/")
        page.set_input_files("#id_prospects_file", str(SAMPLE))
        page.click("text=Start run")
        page.wait_for_url(re.compile(rf"{re.escape(site)}/runs/\d+/$"))
        page.evaluate("window.__noReload = true")

        # The table fills without a reload: rows appear while the run is still processing,
        # and the heading counts the rows the table holds.
        def filling() -> tuple[bool, str, int, str]:
            return page.evaluate(
                "[window.__noReload === true,"
                " document.querySelector('h1 [data-status]').textContent,"
                " document.querySelectorAll('table.results tbody tr').length,"
                " document.querySelector('#results-heading [data-scored]').textContent]"
            )

        seen = watch(
            filling,
            until=lambda samples: any(
                live and status == "Processing" and 0 < rows < 25
                for live, status, rows, _ in samples
            ),
            timeout=60,
        )
        live, _status, rows, scored = seen[-1]
        assert live and int(scored) >= rows > 0
        photograph(page, shots, "run-results-filling")

        # The server cannot be reached: the page says so and hides the stale activity.
        page.route("**/api/**", lambda route: route.abort())
        banner = page.wait_for_selector("[data-connection-lost]", state="visible")
        assert banner.inner_text().startswith("Can't reach the server; retrying…")
        assert (
            page.locator("#run-summary [data-activity]").evaluate(
                "node => getComputedStyle(node).visibility"
            )
            == "hidden"
        )
        photograph(page, shots, "run-connection-lost")

        # Back: the banner goes, and the page catches up with the run, which has ended.
        page.unroute("**/api/**")
        page.wait_for_selector("[data-connection-lost]", state="hidden")
        page.wait_for_selector("h1 [data-status]:text-is('Completed')", timeout=60_000)
        page.wait_for_load_state()
        assert page.locator("table.results tbody tr").count() == 25
        assert page.inner_text("#results-heading") == "Results (25 of 25 prospects)"


@pytest.mark.slow(seconds=20)
def test_a_failed_run_says_what_to_do_next_and_continue_is_sent_once(
    chromium,  # noqa: F811
    site,  # noqa: F811
    shots,  # noqa: F811
    process_database,
    tmp_path,
):
    seeded = manage(["shell", "--no-imports", "-c", SEED_FAILED_RUN], process_database)
    assert seeded.returncode == 0, seeded.stderr
    run_id = int(seeded.stdout.split()[-1])
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(15_000)
    with logs_on_failure(tmp_path, page):
        sign_in(page, site)
        page.goto(f"{site}/runs/{run_id}/")
        assert page.inner_text("[data-outlook]") == (
            "Press Continue to finish the remaining 3 prospects; the 2 results so far are kept."
        )
        photograph(page, shots, "run-failed-next-step")

        posts: list[str] = []
        page.on(
            "request",
            lambda request: posts.append(request.url) if request.method == "POST" else None,
        )
        page.set_viewport_size({"width": 1280, "height": 900})
        # A second press while the first is on its way sends nothing: the page's listener
        # (which runs after the form's own) records whether each submit was let through, and
        # holds the navigation back until the end.
        form = "form[data-submit-once]"
        page.evaluate(
            "window.__submits = []; window.addEventListener('submit', event => {"
            " window.__submits.push(event.defaultPrevented); event.preventDefault(); })"
        )
        page.click("button:has-text('Continue')")
        page.wait_for_selector(f"{form} button:disabled")
        assert page.inner_text(f"{form} button") == "Continuing…"
        page.evaluate(f"document.querySelector('{form}').requestSubmit()")
        assert page.evaluate("window.__submits") == [False, True]
        photograph(page, shots, "run-continue-pressed")
        page.evaluate(f"document.querySelector('{form}').submit()")  # no submit event: sent
        page.wait_for_selector(".message.success")
        # Read at once: the page reloads by itself when the continued run has finished.
        messages = page.evaluate(
            "Array.from(document.querySelectorAll('.messages .message')).map(node => node.className + ': '"
            " + node.textContent)"
        )
        assert posts == [f"{site}/runs/{run_id}/continue/"]
        assert messages == [
            f"message success: Run {run_id} continues with the 3 prospects that had no result; "
            "its results so far are kept."
        ]
        photograph(page, shots, "run-continued")
