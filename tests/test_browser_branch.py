"""What if? in headless Chromium (issue 24): branch the live run from the Train tab, see both grids and the
overlaid curves update, pause the branch while its parent trains on, and find the branch under its parent in the
Runs tab. SIDE_SCREENSHOT=docs saves the side-by-side view as docs/side_by_side.png for the README."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from tests.browser import browser, launch_app, page, wait_for  # noqa: F401  (fixtures)
from tests.conftest import tiny_config

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parent.parent / "docs"


def src(pg, selector: str) -> str:
    img = pg.locator(f"{selector} img")
    return (img.get_attribute("src") or "") if img.count() else ""


def head_iteration(pg, lane: int) -> int:
    match = re.search(r"iteration ([\d,]+)", pg.inner_text(f"#side-head-{lane}"))
    return int(match.group(1).replace(",", "")) if match else -1


def steady(read, quiet_s: float) -> int | None:
    """read()'s value once it has not changed for quiet_s (None if it changed meanwhile)."""
    first = read()
    time.sleep(quiet_s)
    return first if read() == first else None


def test_branch_the_live_run_watch_both_pause_one(page, tmp_path):  # noqa: F811
    from ui.state import Studio

    studio = Studio(tmp_path / "checkpoints", max_runs=2)
    url = launch_app(tmp_path, studio)
    studio.start(tiny_config(steps=100_000, out_dir=str(studio.root), run_name="parent", sample_every_s=0.5))
    try:
        page.goto(url)
        wait_for(lambda: src(page, "#live-grid"), what="the live run's grid")
        assert not page.locator("#side-grid-1").is_visible()
        assert "One run" in page.inner_text("#side-note")

        page.get_by_role("button", name="D learns ×2 faster").click()
        wait_for(lambda: "Branched" in page.inner_text("#side-message"), what="the branch's message")
        branch = studio.trainer_of(1)
        assert branch.config.extra["branched_from"]["run"] == "parent"

        # both grids next to each other, each updating; the curves of both runs overlaid
        wait_for(lambda: src(page, "#side-grid-0") and src(page, "#side-grid-1"), what="both runs' grids")
        first = (src(page, "#side-grid-0"), src(page, "#side-grid-1"))
        wait_for(lambda: src(page, "#side-grid-0") != first[0] and src(page, "#side-grid-1") != first[1],
                 what="both grids updating")
        assert "branch of parent" in page.inner_text("#side-head-1")
        wait_for(lambda: "B loss_D" in page.inner_text("#side-loss-plot")
                 and "A loss_D" in page.inner_text("#side-loss-plot"), what="both runs in the losses' legend")
        wait_for(lambda: "B D(G(z))" in page.inner_text("#side-d-plot"), what="the branch's D(G(z)) curve")

        # pause the branch: its page and its trainer stop at one iteration, the parent goes on
        page.click("#side-pause-1")
        wait_for(lambda: "paused" in page.inner_text("#side-head-1"), what="the branch paused on the page")
        # the page says paused as the pause is sent; the step the training process was in still ends and reports
        held = wait_for(lambda: steady(lambda: branch.status().iteration, 1.5), what="the branch's last iteration")
        parent_at = head_iteration(page, 0)
        wait_for(lambda: head_iteration(page, 0) > parent_at + 5, what="the parent training on, on the page")
        assert branch.status().iteration == held and head_iteration(page, 1) == held
        assert page.locator("#side-resume-1 button, button#side-resume-1").first.is_enabled()

        shot = DOCS / "side_by_side.png" if os.environ.get("SIDE_SCREENSHOT") == "docs" else tmp_path / "side.png"
        page.locator("#side-by-side").screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000

        # the Runs tab shows the branch under its parent
        page.get_by_role("tab", name="Runs").click()
        wait_for(lambda: "└─ parent-lr_d" in page.inner_text("#runs-table"),
                 what=f"the branch under its parent (the table: {page.inner_text('#runs-table')[:400]!r})")
    finally:
        studio.stop_all(wait=True, timeout=60)
