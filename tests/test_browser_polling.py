"""End to end in headless Chromium: a page polls the server only for the tab it shows.

Thirty students on the Explore tab must not cost thirty status polls a second (issue 17): the Train tab's
timers stop when another tab is chosen and start again when the Train tab is shown."""

from __future__ import annotations

import json

import pytest

from tests.browser import _apps, browser, launch_app, page, wait_for  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def test_only_the_shown_tabs_timers_poll(page, tmp_path):  # noqa: F811
    url = launch_app(tmp_path)
    demo = _apps[url][0]
    status_fn = next(i for i, fn in demo.fns.items() if fn.api_name == "train_status")
    calls: list[int] = []

    def on_request(request) -> None:
        if request.method == "POST" and "/queue/join" in request.url:
            try:
                body = json.loads(request.post_data or "{}")
            except ValueError:
                return
            if body.get("fn_index") == status_fn:
                calls.append(body["fn_index"])

    def polls_within(seconds: float) -> int:
        """Status polls the page sends in the next `seconds` (Playwright delivers events while it waits)."""
        start = len(calls)
        page.wait_for_timeout(seconds * 1000)
        return len(calls) - start

    page.on("request", on_request)
    page.goto(url)
    wait_for(lambda: polls_within(1.0) + len(calls) >= 3, timeout=30, what="the Train tab's status polls")

    page.get_by_role("tab", name="Explore").click()
    page.wait_for_timeout(1500)  # a tick already in flight may still land
    assert polls_within(4.0) == 0, "status polls while the Explore tab was shown"

    page.get_by_role("tab", name="Train").click()
    assert polls_within(7.0) >= 2, "no status polls after coming back to the Train tab (every 3 s with no run)"
