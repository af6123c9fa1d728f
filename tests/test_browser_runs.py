"""End to end in headless Chromium: two short runs with different losses (bce, hinge), both picked in the Runs
tab, both curves drawn in every plot, their samples side by side and the loss setting marked as different;
a bad rename is refused in the page, a run opens in the Explore tab; the page is saved as docs/runs.png for the
README."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dcgan.config import TrainConfig
from tests.browser import browser, choose, launch_app, page, studio_of, wait_for  # noqa: F401

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parent.parent / "docs"
NAMES = ("bce-run", "hinge-run")


def lines(pg, elem_id: str) -> int:
    return pg.locator(f"#{elem_id} path[aria-roledescription='line mark']").count()


def test_two_runs_compared_side_by_side(page, tmp_path):  # noqa: F811
    url = launch_app(tmp_path)
    studio = studio_of(url)
    # RUNS_SCREENSHOT=docs refreshes the README's picture (longer runs, so the samples look like digits)
    docs = os.environ.get("RUNS_SCREENSHOT") == "docs"
    for name, loss in zip(NAMES, ("bce", "hinge"), strict=True):
        width = 32 if docs else 16
        cfg = TrainConfig(dataset="digits", ngf=width, ndf=width, batch_size=64, steps=400 if docs else 40,
                          device="cpu", precision="fp32", seed=1, loss=loss, run_name=name, checkpoint_every=0,
                          out_dir=str(studio.checkpoints_dir))
        studio.trainer.start(cfg)
        assert studio.trainer.wait(600) == "finished"
        studio.trainer.reset()

    page.goto(url)
    page.get_by_role("tab", name="Runs").click()
    wait_for(lambda: all(n in page.inner_text("#runs-table") for n in NAMES), what="both runs in the table")
    for name in NAMES:
        choose(page, "runs-compare", name)
    page.keyboard.press("Escape")
    for plot in ("runs-plot-loss-d", "runs-plot-loss-g", "runs-plot-d-real", "runs-plot-d-fake"):
        wait_for(lambda plot=plot: lines(page, plot) == 2, what=f"two curves in {plot}")
        legend = page.inner_text(f"#{plot}")
        assert all(n in legend for n in NAMES), legend
    wait_for(lambda: page.locator("#runs-grids img").count() == 2, what="both runs' samples")
    assert all(n in page.inner_text("#runs-grids") for n in NAMES)  # each picture labelled with its run
    settings = page.inner_text("#runs-settings")
    assert "≠ Loss" in settings and "hinge" in settings  # named as the Train tab names it

    # what a person sees: the table, both runs' curves and their samples
    shot = DOCS / "runs.png" if docs else tmp_path / "runs.png"
    top = page.locator("#runs-table").bounding_box()
    bottom = page.locator("#runs-grids").bounding_box()
    page.set_viewport_size({"width": 1400, "height": int(bottom["y"] + bottom["height"] + 40)})
    top = page.locator("#runs-table").bounding_box()
    bottom = page.locator("#runs-grids").bounding_box()
    page.screenshot(path=str(shot), clip={"x": 0, "y": max(top["y"] - 60, 0), "width": 1400,
                                          "height": bottom["y"] + bottom["height"] - top["y"] + 80})
    assert shot.stat().st_size > 30_000

    # a bad rename is refused with a message, and a cancelled delete deletes nothing
    choose(page, "runs-target", "bce-run")
    page.fill("#runs-new-name textarea, #runs-new-name input", "a/b")
    page.click("#runs-rename")
    wait_for(lambda: "a/b" in page.inner_text("#runs-question"), what="the rename question")
    page.click("#runs-confirm")
    wait_for(lambda: "cannot contain /" in page.inner_text("#runs-message"), what="the refusal")
    page.click("#runs-delete")
    wait_for(lambda: "Delete" in page.inner_text("#runs-question"), what="the delete question")
    page.click("#runs-cancel")
    wait_for(lambda: "Nothing changed" in page.inner_text("#runs-message"), what="the cancel message")
    assert all((studio.checkpoints_dir / n).is_dir() for n in NAMES)

    # open the hinge run in Explore: the page shows that tab, with the run's generator (walkthrough 12c)
    choose(page, "runs-target", "hinge-run")
    page.click("#runs-explore")
    wait_for(lambda: page.get_by_role("tab", name="Explore").get_attribute("aria-selected") == "true",
             what="the Explore tab shown")
    wait_for(lambda: "hinge-run/step_" in page.inner_text("#explore-summary"), what="the run in the Explore tab")
