"""End to end in a real browser: Playwright drives Debian's chromium against a real server and
a real worker. A newcomer's path: sign in, upload samples/prospects.csv, watch the progress bar
move on the run's page and on the runs page, see the run complete and its results, sign out.

Skips with the reason where playwright or /usr/bin/chromium is missing; in CI (CI=true) a
missing browser is a failure, since .ci/run installs it.
"""

from __future__ import annotations

import os
import re
import time
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
    env = base_env(process_database, QUALIFIER_SCORING_DELAY_MS=SCORING_DELAY_MS)
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
        assert wait_for_http(f"{base}/accounts/login/", timeout=30, process=web) == 200
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


def test_newcomer_uploads_the_sample_and_watches_the_run_complete(chromium, site, tmp_path):
    page = chromium.new_page(viewport={"width": 390, "height": 844})  # a phone
    page.set_default_timeout(15_000)
    with logs_on_failure(tmp_path, page):
        # Sign in through the login page.
        page.goto(f"{site}/")
        assert page.url == f"{site}/accounts/login/?next=/"
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{site}/")

        # Upload the sample with the default criteria.
        page.click("text=New run")
        page.set_input_files("#id_prospects_file", str(SAMPLE))
        page.click("text=Start run")
        page.wait_for_url(re.compile(rf"{re.escape(site)}/runs/\d+/$"))
        run_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
        assert page.is_visible(f"text=Run {run_id} started with 25 prospects.")

        # The run's page: the bar moves without a reload (the marker survives).
        page.evaluate("window.__noReload = true")
        bar = "#run-summary progress"

        def live_value() -> tuple[bool, int]:
            return page.evaluate(
                f"[window.__noReload === true, document.querySelector('{bar}').value]"
            )

        moving = watch(
            live_value,
            until=lambda seen: len({value for live, value in seen if live and 0 < value < 25}) >= 2,
            timeout=20,
        )
        values = [value for live, value in moving if live]
        assert values == sorted(values), f"progress went backwards: {values}"

        # The runs page: the run is active with its bar, then leaves with a notice.
        page.goto(f"{site}/")
        card = f'[data-run-id="{run_id}"]'
        page.wait_for_selector(f"{card} progress")
        page.wait_for_selector(card, state="detached", timeout=30_000)
        notice = page.wait_for_selector("[data-notices] .notice")
        assert notice.inner_text().startswith(
            f"Run {run_id} completed: 16 qualified, 9 not qualified, 0 errored."
        )

        # The finished run: complete, with its results, the best first on request.
        page.click(f"[data-notices] a[href='/runs/{run_id}/']")
        page.wait_for_url(f"{site}/runs/{run_id}/")
        assert page.inner_text("h1 [data-status]") == "Completed"
        assert page.evaluate(f"document.querySelector('{bar}').value") == 25
        assert page.locator("table.results tbody tr").count() == 25
        page.click("text=highest score first")
        page.wait_for_url(f"{site}/runs/{run_id}/?sort=-score")
        assert page.inner_text("table.results tbody tr:first-child td[data-label=Score]") == "100"

        # Signing out is a POST from the header.
        page.click("text=Sign out")
        page.wait_for_url(f"{site}/accounts/login/")
