"""Browser tests of the editor: a real ``noodlebox serve`` on a free loopback port, driven
by Playwright through Debian's chromium (never a downloaded browser).

Everything here skips, with the reason, when chromium, Playwright or the editor's npm
packages (``make web-deps``) are missing. One server serves the whole session (it starts
in well under a second); each test gets a fresh browser context, so local storage (the
saved workflow) starts empty and the editor opens on its default workflow.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from web_editor import Server, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "tests" / "artifacts"
LITEGRAPH = ROOT / "web" / "node_modules" / "@comfyorg" / "litegraph" / "dist" / "litegraph.es.js"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--metrics-recording-only",
]


def _missing_browser_reason() -> str | None:
    if not CHROMIUM.exists():
        return "chromium is not installed at /usr/bin/chromium (make web-deps installs Debian's package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (pip install -e '.[dev]')"
    if not LITEGRAPH.is_file():
        return "web/node_modules is missing: run `make web-deps` (npm ci in web/)"
    return None


SKIP_REASON = _missing_browser_reason()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every test that needs the browser, with the reason, when the browser stack is not installed."""
    if SKIP_REASON is None:
        return
    marker = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        in_here = Path(str(item.fspath)).is_relative_to(Path(__file__).parent)
        if in_here and {"page", "browser"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the session. Its empty checkpoint folder gets the embedded default model
    (the demo model shipped in ``models/demo/``)."""
    running = start_server(tmp_path_factory.mktemp("noodlebox-web"))
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="session")
def node_types(server: Server) -> set[str]:
    """Node classes the server offers."""
    return set(server.get_json("/api/object_info"))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Headless Debian chromium, per module: Playwright's sync API keeps an asyncio loop
    running in the main thread while it is started, which would break the async tests of
    any folder collected after this one if the browser lived for the whole session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: object, server: Server) -> Iterator[object]:
    """A fresh context (empty local storage) with the editor loaded and ready."""
    context = browser.new_context(viewport={"width": 1600, "height": 900}, accept_downloads=True)  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-ready=true]", timeout=20_000)
    page.page_errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``tests/artifacts/`` (git-ignored): screenshots kept by CI."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
