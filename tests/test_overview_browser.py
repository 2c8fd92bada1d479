"""The recovery overview in a real browser (Playwright and Debian's chromium, like
tests/test_e2e_browser.py): an operator signs in to the admin, follows the link on its index,
and reads the page at desktop (1280 px) and phone (390 px) width. Nothing overflows a phone's
screen, no cell clips its text, and the CSP blocks nothing (no inline style or script).

Screenshots go to $QUALIFIER_SCREENSHOTS when it is set, else to the test's temporary folder.
"""

from __future__ import annotations

import pytest

from tests.processes import manage
from tests.test_e2e_browser import (  # noqa: F401 - fixtures used by name
    PASSWORD,
    PATIENCE_MS,
    USERNAME,
    chromium,
    logs_on_failure,
    photograph,
    shots,
    site,
)

pytestmark = pytest.mark.slow

#: A week of recoveries with every kind of cause (as the events table holds them), and one run
#: found dead by a real sweep below; run before the server's first request.
SEED_WEEK = """
import datetime as dt
from django.utils import timezone
from recovery.models import QualificationRun, RecoveryCause, RecoveryEvent
now = timezone.now()
causes = ["worker_silent"] * 6 + ["worker_gone"] * 3 + ["process_gone", "shutdown", "shutdown",
          "no_progress", "no_task", "crashed", "forced", ""]
events = []
for n in range(140):
    cause = causes[(n * 7) % len(causes)]
    moment = now - dt.timedelta(minutes=70 * n + (n % 5) * 11)
    run = QualificationRun.objects.create(status="FAILED", total=10, completed=3)
    events.append(RecoveryEvent(
        run=run, created_at=moment, from_status="FAILED" if cause == "" else "PROCESSING",
        to_status="PENDING" if cause in ("shutdown", "") else "FAILED", source="sweeper",
        cause=cause, reason="seeded", completed=3, total=10,
        heartbeat_at=moment - dt.timedelta(seconds=[4, 20, 45, 50, 70, 200, 400, 2400][n % 8]),
        host="seed", pid=1))
RecoveryEvent.objects.bulk_create(events)
dead = QualificationRun.objects.create(
    status="PROCESSING", total=10, completed=4, attempts=1,
    created_at=now - dt.timedelta(minutes=12), started_at=now - dt.timedelta(minutes=11),
    heartbeat_at=now - dt.timedelta(minutes=10))
print(dead.pk)
"""


@pytest.fixture
def week(process_database: str) -> int:
    """Seeds the week and recovers the dead run with the command; returns its id."""
    seeded = manage(["shell", "--no-imports", "-c", SEED_WEEK], process_database)
    assert seeded.returncode == 0, seeded.stderr
    run_id = int(seeded.stdout.split()[-1])
    swept = manage(["recover_stuck_runs", "--run", str(run_id)], process_database)
    assert swept.returncode == 0, swept.stderr
    return run_id


@pytest.mark.slow(seconds=30)
def test_an_operator_reads_the_recovery_overview(chromium, week, site, shots, tmp_path):  # noqa: F811
    page = chromium.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(PATIENCE_MS)
    blocked: list[str] = []
    page.on(
        "console", lambda message: blocked.append(message.text) if message.type == "error" else None
    )
    with logs_on_failure(tmp_path, page):
        page.goto(f"{site}/admin/")
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{site}/admin/")
        photograph(page, shots, "admin-index", ours=False)

        page.click("#recovery-overview-link a")
        page.wait_for_url(f"{site}/admin/recovery/qualificationrun/overview/")
        page.set_viewport_size({"width": 1280, "height": 900})
        assert page.inner_text("h1") == "Recovery overview"
        # The site's worker is alive and beating; the queue is empty.
        page.wait_for_function(
            "document.querySelector('[data-figure=live-workers]').innerText.trim() === '1'"
        )
        assert page.inner_text("[data-figure=recovered]") == "141"
        hourly = page.locator("svg#recoveries-per-hour")
        assert hourly.is_visible()
        assert hourly.locator("rect").count() > 100
        assert page.locator("svg#dead-run-active rect").count() == 8
        assert page.locator("#recoveries-per-day tbody tr").count() == 8
        # The charts fill their frame, and their text is drawn (not blocked by the CSP).
        box = hourly.bounding_box()
        assert box is not None and box["width"] > 700
        assert blocked == [], blocked
        photograph(page, shots, "admin-overview")
        # At phone width the hourly chart still spans the screen and its labels are readable.
        box = hourly.bounding_box()
        assert box is not None and 300 < box["width"] <= 390
        hourly.screenshot(path=str(shots / "admin-overview-hourly-phone.png"))
        page.locator("svg#dead-run-active").screenshot(
            path=str(shots / "admin-overview-dead-phone.png")
        )
        tick = hourly.locator("text.tick").first
        size = tick.evaluate("node => node.getBoundingClientRect().height")
        assert size >= 8, f"axis labels are {size}px tall on a phone"

        # The admin's dark theme: the charts' text and axes take the page's colour.
        page.set_viewport_size({"width": 1280, "height": 900})
        page.emulate_media(color_scheme="dark")
        page.locator("#content-main").screenshot(path=str(shots / "admin-overview-dark.png"))
        colour = hourly.locator("text.tick").first.evaluate("node => getComputedStyle(node).fill")
        assert colour == page.evaluate("getComputedStyle(document.body).color")
        page.emulate_media(color_scheme="light")

        # The status links lead to the filtered runs list.
        page.click("#runs-by-status a:text('Failed')")
        page.wait_for_url(f"{site}/admin/recovery/qualificationrun/?status__exact=FAILED")
        assert page.locator("a:text('Recovery overview')").count() == 1
        assert blocked == [], blocked
