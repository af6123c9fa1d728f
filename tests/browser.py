"""End-to-end test helpers: serve the real app on a free port and drive it from headless Chromium.

Use from a test module:

    from tests.browser import browser, launch_app, page, studio_of  # noqa: F401  (fixtures)

    def test_something(page, tmp_path):
        url = launch_app(tmp_path)
        page.goto(url)

`launch_app` serves `app.build_app` in this process (a Gradio server thread), so a test can also
look at the same `Studio` the page drives (`studio_of(url)`). Apps are closed at the end of the
test that served them. Without Playwright or /usr/bin/chromium the browser tests are skipped, except
under CI=true, where that is a failure.
"""

from __future__ import annotations

import atexit
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

_apps: dict[str, tuple] = {}  # url -> (Blocks, Studio)


def _missing(reason: str) -> None:
    """Skip locally; fail under CI, where a browser test that silently skips proves nothing."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"browser tests need it under CI: {reason}")
    pytest.skip(reason)


def launch_app(tmp_path: Path, studio=None) -> str:
    """Serve the full app with checkpoints under tmp_path; returns its URL (http://127.0.0.1:PORT/)."""
    import app
    from ui.state import Studio

    studio = studio or Studio(Path(tmp_path) / "checkpoints")
    demo = app.build_app(studio)
    app.launch(demo, studio, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    url = demo.local_url
    _apps[url] = (demo, studio)
    return url


def studio_of(url: str):
    """The Studio behind a URL from launch_app (to check the one trainer every page shares)."""
    return _apps[url][1]


def close_app(url: str) -> None:
    demo, studio = _apps.pop(url)
    studio.close(timeout=30)
    demo.close()


@atexit.register
def close_apps() -> None:
    """Every app served so far (tests/conftest.py: after each test)."""
    for url in list(_apps):
        close_app(url)


def wait_for(check: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    """Poll check() until it returns something truthy (a readable failure instead of a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def set_number(pg, elem_id: str, value: object) -> None:
    """Type into a gr.Number (by elem_id) and leave the box, as a person would; again if the box did not keep
    it (on a loaded machine a freshly opened accordion can re-render its boxes just after the first fill)."""
    box = pg.locator(f"#{elem_id} input[type=number]")
    for _ in range(5):
        box.fill(str(value))
        box.press("Tab")
        pg.wait_for_timeout(200)
        if box.input_value() == str(value):
            return
    raise AssertionError(f"#{elem_id} did not keep the value {value!r} (it shows {box.input_value()!r})")


def choose(pg, elem_id: str, option: str) -> None:
    """Pick an option of a gr.Dropdown (by elem_id)."""
    pg.click(f"#{elem_id} input")
    pg.get_by_role("option", name=option, exact=True).click()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per test module."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        _missing(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as pw:
        try:
            chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        except Error as exc:
            _missing(f"Chromium did not start: {exc}")
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser) -> Iterator[object]:
    """A fresh page (its own context, so its own Gradio session) at a desktop size."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()
