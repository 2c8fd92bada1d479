"""Every command the docs tell a reader to paste works when pasted: the shell blocks marked
`<!-- test: run -->` in the README's tour, the tutorial and the API session run, page by page,
against a service
started as `scripts/start` starts it (honcho and the Procfile) on a fresh database of its own,
and they run twice, since readers paste them again."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests import processes

pytestmark = pytest.mark.slow

PROJECT = processes.PROJECT_DIR
#: Pages whose marked blocks run, in this order: the tour creates the user the API session
#: works as.
PAGES = ["README.md", "docs/tutorial.md", "docs/howto/script-the-api.md"]
MARK = re.compile(r"^<!-- test: run -->$", re.MULTILINE)
BLOCK = re.compile(r"^<!-- test: run -->\n```(?:bash|sh)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def marked_blocks(page: str) -> list[str]:
    return BLOCK.findall((PROJECT / page).read_text())


def test_every_marked_block_is_on_a_page_this_test_runs():
    pages = [PROJECT / "README.md", *(PROJECT / "docs").rglob("*.md")]
    marked = {str(path.relative_to(PROJECT)) for path in pages if MARK.search(path.read_text())}
    assert marked == set(PAGES)
    for page in PAGES:
        text = (PROJECT / page).read_text()
        assert len(marked_blocks(page)) == len(MARK.findall(text)), (
            f"a mark in {page} is not on a block"
        )


@pytest.fixture(scope="module")
def tools() -> None:
    missing = [tool for tool in ("bash", "curl", "jq", "python3") if shutil.which(tool) is None]
    if missing:
        message = f"the docs' shell blocks need {', '.join(missing)} (apt-get install them)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def service(tools: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """scripts/start's stack: honcho running the Procfile (runserver and db_worker) with the
    settings of .env.example, on a free port and a fresh database; yields (url, database)."""
    tmp_path = tmp_path_factory.mktemp("docs-service")
    with processes.fresh_database(tmp_path) as database_url:
        port = processes.free_port()
        env = processes.base_env(
            database_url,
            DEBUG="true",
            # .env.example's 300 ms makes a run slow enough to watch; the blocks only wait.
            QUALIFIER_SCORING_DELAY_MS="20",
            RECOVERY_SHUTDOWN_GRACE_SECONDS="3",
            PATH=f"{processes.BIN_DIR}:{os.environ['PATH']}",
        )
        honcho = processes.Process(
            [processes.bin_path("honcho"), "start", "--env", "/dev/null", "--port", str(port)],
            env,
            tmp_path / "honcho.log",
        )
        url = f"http://127.0.0.1:{port}"
        try:
            assert processes.wait_for_http(f"{url}/healthz", 60, honcho) == 200
            assert honcho.wait_for_output("Executor started", 60), honcho.output
            yield url, database_url
        finally:
            honcho.stop(timeout=15)


def run_page(page: str, url: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """The page's marked blocks in one shell, as a reader pasting them into one terminal."""
    script = "\n".join(marked_blocks(page))
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=processes.PROJECT_DIR,
        env=processes.base_env(database_url, DEBUG="true", QUALIFIER_URL=url),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow(seconds=30)
def test_the_tutorial_and_the_api_session_work_when_pasted_and_pasted_again(service):
    url, database_url = service
    outputs: dict[tuple[str, int], str] = {}
    for attempt in (1, 2):
        for page in PAGES:
            result = run_page(page, url, database_url)
            output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
            assert result.returncode == 0, f"{page}, attempt {attempt}:\n{output}"
            outputs[(page, attempt)] = output
    assert "Created alice" in outputs[("README.md", 1)]
    for key in [("docs/tutorial.md", 1), ("README.md", 2), ("docs/tutorial.md", 2)]:
        assert "alice exists already" in outputs[key]
    for attempt in (1, 2):
        session = outputs[("docs/howto/script-the-api.md", attempt)]
        assert "COMPLETED 25/25" in session
        assert '"counts":{"qualified":16,"not_qualified":9,"errored":0}' in session
        assert "name,email,company,website,title,industry,employees,country,notes,domain" in session
    assert (
        "Revoked the earlier API token 'api session'"
        in outputs[("docs/howto/script-the-api.md", 2)]
    )
