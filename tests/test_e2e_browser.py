"""End to end in a real browser: Playwright drives Debian's chromium against a real server and
a real worker. A newcomer's path: sign in, upload samples/prospects.csv, watch the progress bar
and the Results heading move on the run's page, see the run on the runs page and the notice of
its end on another page, see its results, look at the admin, read the API's documentation,
create an API token, use it and revoke it, sign out.

Every page is photographed at desktop (1280 px) and phone (390 px) width, and checked for
horizontal overflow at phone width. The PNGs go to $QUALIFIER_SCREENSHOTS when it is set (to
look at them), else to the test's temporary folder.

Skips with the reason where playwright or /usr/bin/chromium is missing; in CI (CI=true) a
missing browser is a failure, since .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.processes import PROJECT_DIR, PYTHON, Process, base_env, free_port, manage, wait_for_http

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SAMPLE = PROJECT_DIR / "samples" / "prospects.csv"
#: 25 prospects at this delay take about 12 s: long enough to watch, short enough for CI.
SCORING_DELAY_MS = "500"
USERNAME, PASSWORD = "newcomer", "a-long-test-password-2026"
WIDTHS = {"desktop": (1280, 900), "phone": (390, 844)}
#: How long any wait for the browser or the server may take (Playwright's default timeout for
#: each action, navigation, selector and screenshot). Every wait ends at its event; this bound
#: only stops one that never comes from hanging the suite. A budget near the usual time fails
#: under load: in CI, one full-page screenshot took longer than the 15 s allowed then.
PATIENCE_MS = 300_000
#: Two runs whose worker died 20 and 30 minutes ago: one recovered (an event for the admin),
#: one left stuck (the admin's Stuck column). Periodic and startup sweeps are off.
SEED_DEAD_RUNS = """
import datetime as dt
from django.contrib.auth.models import User
from django.utils import timezone
from recovery.models import QualificationRun
now = timezone.now()
for silent in (30, 20):
    run = QualificationRun.objects.create(
        status="PROCESSING", total=10, completed=4, attempts=1,
        user=User.objects.get(username="newcomer"),
        created_at=now - dt.timedelta(minutes=silent + 2),
        started_at=now - dt.timedelta(minutes=silent + 1),
        heartbeat_at=now - dt.timedelta(minutes=silent),
    )
    print(run.pk)
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: .ci/run installs it, so the browser test must run)")
    pytest.skip(reason)


@pytest.fixture
def chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no browser at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def site(process_database: str, tmp_path: Path) -> Iterator[str]:
    """A server and a worker on a fresh database with one user; yields the base URL."""
    env = base_env(
        process_database,
        QUALIFIER_SCORING_DELAY_MS=SCORING_DELAY_MS,
        RECOVERY_ON_STARTUP="false",
        RECOVERY_SWEEP_INTERVAL_SECONDS="0",
    )
    created = manage(
        ["createsuperuser", "--noinput", "--username", USERNAME, "--email", "n@example.com"],
        process_database,
        DJANGO_SUPERUSER_PASSWORD=PASSWORD,
    )
    assert created.returncode == 0, created.stderr
    port = free_port()
    # --insecure: runserver serves the static files (style and script) with DEBUG off.
    web = Process(
        [PYTHON, "manage.py", "runserver", "--noreload", "--insecure", f"127.0.0.1:{port}"],
        env,
        tmp_path / "web.log",
    )
    worker = Process(
        [PYTHON, "manage.py", "db_worker", "--no-reload", "--no-startup-delay"],
        env,
        tmp_path / "worker.log",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_for_http(f"{base}/accounts/login/", PATIENCE_MS / 1000, web) == 200
        yield base
    except BaseException:
        print(f"--- web log ---\n{web.output[-4000:]}\n--- worker log ---\n{worker.output[-4000:]}")
        raise
    finally:
        web.stop()
        worker.stop()


@contextmanager
def logs_on_failure(tmp_path: Path, page: Any) -> Iterator[None]:
    try:
        yield
    except BaseException:
        page.screenshot(path=str(tmp_path / "failure.png"), full_page=True)
        for name in ("web.log", "worker.log"):
            log = tmp_path / name
            if log.exists():
                print(f"--- {name} ---\n{log.read_text(errors='replace')[-4000:]}")
        raise


@pytest.fixture
def dead_runs(process_database: str) -> tuple[int, int]:
    """(recovered, stuck) run ids, made before the server starts."""
    created = manage(["shell", "--no-imports", "-c", SEED_DEAD_RUNS], process_database)
    assert created.returncode == 0, created.stderr
    recovered, stuck = (int(line) for line in created.stdout.split())
    swept = manage(["recover_stuck_runs", "--run", str(recovered)], process_database)
    assert swept.returncode == 0, swept.stderr
    return recovered, stuck


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("QUALIFIER_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def photograph(page: Any, folder: Path, name: str, *, ours: bool = True) -> None:
    """Screenshots at both widths, ending at phone width. On our own pages, nothing may be
    wider than a phone's screen, and no cell may clip its text."""
    for label, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
        page.screenshot(path=str(folder / f"{name}-{label}-top.png"))
    if ours:
        wider = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert wider <= 0, f"{name}: the page is {wider}px wider than a phone"
        clipped = page.evaluate(
            "Array.from(document.querySelectorAll('td, dd, h1, h2, .notice'))"
            ".filter(node => node.scrollWidth > node.clientWidth + 1)"
            ".map(node => node.outerHTML.slice(0, 120))"
        )
        assert clipped == [], f"{name}: clipped at phone width: {clipped}"


def api_get(url: str, token: str) -> tuple[int, Any]:
    """(status, the run count or the error code) of a GET with only a bearer token."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=PATIENCE_MS / 1000) as response:
            return response.status, json.load(response)["count"]
    except urllib.error.HTTPError as error:
        assert error.headers["WWW-Authenticate"].startswith('Bearer realm="qualifier"')
        return error.code, json.load(error)["code"]


def watch(read: Callable[[], Any], until: Callable[[list[Any]], bool], timeout: float) -> list:
    """Samples `read()` every 100 ms until `until(samples)` holds; returns the samples."""
    samples: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        samples.append(read())
        if until(samples):
            return samples
        time.sleep(0.1)
    raise AssertionError(f"gave up after {timeout}s; saw {samples[-20:]}")


@pytest.mark.slow(seconds=45)
def test_newcomer_uploads_the_sample_and_watches_the_run_complete(
    chromium, site, dead_runs, shots, tmp_path
):
    recovered_id, stuck_id = dead_runs
    page = chromium.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.set_default_timeout(PATIENCE_MS)
    with logs_on_failure(tmp_path, page):
        # Sign in through the login page.
        page.goto(f"{site}/")
        assert page.url == f"{site}/accounts/login/?next=/"
        photograph(page, shots, "login")
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{site}/")
        assert page.request.get(f"{site}/favicon.ico").status == 200

        # Upload the sample with the default criteria.
        page.click("text=New run")
        photograph(page, shots, "new-run")
        page.set_input_files("#id_prospects_file", str(SAMPLE))
        page.click("text=Start run")
        page.wait_for_url(re.compile(rf"{re.escape(site)}/runs/\d+/$"))
        run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
        assert page.is_visible(f"text=Run {run_id} started with 25 prospects.")

        # The run's page: the bar and the Results heading move without a reload (the marker
        # survives), and agree with each other.
        page.evaluate("window.__noReload = true")
        bar = "#run-summary progress"

        def live_value() -> tuple[bool, int, int]:
            return page.evaluate(
                f"[window.__noReload === true, document.querySelector('{bar}').value,"
                " Number(document.querySelector('#results-heading [data-scored]').textContent)]"
            )

        moving = watch(
            live_value,
            until=lambda seen: (
                len({value for live, value, _ in seen if live and 0 < value < 25}) >= 2
            ),
            timeout=PATIENCE_MS / 1000,
        )
        values = [value for live, value, _ in moving if live]
        assert values == sorted(values), f"progress went backwards: {values}"
        headings = {scored for live, value, scored in moving if live and 0 < value < 25}
        assert len(headings) >= 2 and max(headings) > 0, f"the heading stood still: {moving}"
        assert page.inner_text("#results-heading [data-total]") == "25"
        photograph(page, shots, "run-running")

        # The runs page: the run is active with its bar; the recovered run is in the history,
        # lasting until its last sign of life (1 min), not until it was found (31 min).
        page.goto(f"{site}/")
        card = f'[data-run-id="{run_id}"]'
        page.wait_for_selector(f"{card} progress")
        history_row = page.locator("tr", has=page.locator(f"a[href='/runs/{recovered_id}/']"))
        assert history_row.locator("td[data-label=Duration]").inner_text() == "1 min 0 s"
        photograph(page, shots, "runs-running")

        # Another page: the notice of the run's end appears there too.
        page.click("nav >> text=New run")
        notice = page.wait_for_selector(f"[data-notices] .notice:has(a[href='/runs/{run_id}/'])")
        assert notice.inner_text().startswith(
            f"Run {run_id} completed: 16 qualified, 9 not qualified, 0 errored."
        )
        photograph(page, shots, "new-run-notice")

        # The runs page again: the run has left the active list for the history.
        page.goto(f"{site}/")
        assert page.locator(card).count() == 0
        assert page.locator(f"td a[href='/runs/{run_id}/']").count() == 1
        photograph(page, shots, "runs-done")

        # The finished run: complete, numbered from 1, domains not websites, best first on
        # request.
        page.goto(f"{site}/runs/{run_id}/")
        assert page.inner_text("h1 [data-status]") == "Completed"
        assert page.evaluate(f"document.querySelector('{bar}').value") == 25
        assert page.inner_text("#results-heading") == "Results (25 of 25 prospects)"
        rows = page.locator("table.results tbody tr")
        assert rows.count() == 25
        first = rows.first
        assert first.locator("td[data-label='#']").inner_text() == "1"
        assert first.locator("td[data-label=Company] .domain").inner_text() == (
            "analyticalengines.io"
        )
        assert "https://" not in page.inner_text("table.results")
        photograph(page, shots, "run-done")
        page.click("text=highest score first")
        page.wait_for_url(f"{site}/runs/{run_id}/?sort=-score")
        assert page.inner_text("table.results tbody tr:first-child td[data-label=Score]") == "100"

        # The admin: runs (words in the Stuck column), a recovered run, the events.
        page.goto(f"{site}/admin/recovery/qualificationrun/")
        stuck_cell = page.locator(f"tr:has(a[href$='/{stuck_id}/change/']) td.field-stuck")
        assert stuck_cell.inner_text() == "Yes"
        photograph(page, shots, "admin-runs", ours=False)
        page.goto(f"{site}/admin/recovery/qualificationrun/{recovered_id}/change/")
        assert page.locator("text=Last heartbeat").count() == 1
        assert page.locator("a.deletelink").count() == 0
        photograph(page, shots, "admin-run", ours=False)
        page.goto(f"{site}/admin/recovery/recoveryevent/")
        photograph(page, shots, "admin-events", ours=False)
        page.set_viewport_size({"width": 1280, "height": 900})
        reason = page.locator("td.field-short_reason").first
        assert reason.evaluate("cell => cell.getBoundingClientRect().width") > 200

        # The API's reference, from the header: ninja's Swagger UI of the generated OpenAPI
        # document, every operation, from this server's static files only (CSP holds: a
        # refused script or style would leave the page empty), and "Try it out" with the
        # session: listing runs answers 200.
        page.goto(f"{site}/")
        page.click('nav >> text="API"')
        page.wait_for_url(f"{site}/docs/api/")
        operations = page.request.get(f"{site}/api/qualify/openapi.json").json()["paths"]
        page.wait_for_selector(".swagger-ui .opblock")
        assert page.locator(".opblock").count() == sum(map(len, operations.values()))
        assert page.locator(".swagger-ui .models").count() == 1
        list_runs = page.locator("#operations-runs-listRuns")
        list_runs.locator(".opblock-summary").click()
        list_runs.locator("button.try-out__btn").click()
        list_runs.locator("button.execute").click()
        answered = list_runs.locator(".live-responses-table tbody .response-col_status").first
        answered.wait_for()
        assert answered.inner_text() == "200"
        page.goto(f"{site}/docs/api/")  # operations folded, as a reader first sees them
        page.wait_for_selector(".swagger-ui .opblock")
        photograph(page, shots, "api-docs")

        # API tokens: a blank name is refused on the form; a new token is shown once, works
        # on the API as this user, and stops working once revoked (after a confirmation).
        page.goto(f"{site}/")
        page.click("nav >> text=API tokens")
        page.wait_for_url(f"{site}/account/tokens/")
        page.click("text=Create token")
        assert page.inner_text(".field .error") == "Give the token a name."
        page.fill("#id_name", "browser test")
        page.click("text=Create token")
        token = page.inner_text("[data-secret]").strip()
        assert token.startswith("qlf_")
        photograph(page, shots, "tokens-created")
        assert api_get(f"{site}/api/qualify/runs", token) == (200, 3)  # no cookie: the token
        page.goto(f"{site}/account/tokens/")
        assert token not in page.content()
        row = page.locator("tr", has_text="browser test")
        assert row.locator("td[data-label=Token]").inner_text() == token[:12] + "…"
        row.locator("text=Revoke…").click()
        photograph(page, shots, "token-revoke")
        page.click("button:has-text('Revoke token')")
        page.wait_for_url(f"{site}/account/tokens/")
        assert page.locator("tr", has_text="browser test").count() == 0
        assert api_get(f"{site}/api/qualify/runs", token) == (401, "invalid_token")

        # Signing out is a POST from the header.
        page.goto(f"{site}/")
        page.click("text=Sign out")
        page.wait_for_url(f"{site}/accounts/login/")
