"""End to end in headless Chromium: the D's-view panel appears in the Train tab, changes while a run
trains, shows a dot's image when clicked, and is saved as docs/dview.png for the README."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dcgan.config import TrainConfig
from tests.browser import browser, launch_app, page, studio_of, wait_for  # noqa: F401

pytestmark = pytest.mark.browser
DOCS = Path(__file__).resolve().parent.parent / "docs"


def plot_src(pg) -> str:
    img = pg.locator("#dview-plot img")
    return img.get_attribute("src") or "" if img.count() else ""


def test_dview_panel_follows_the_run(page, tmp_path):  # noqa: F811
    url = launch_app(tmp_path)
    studio = studio_of(url)
    hook = studio.dview_hook()
    hook.budget = 0.5  # a frame at least every other second of its own cost: quick on a busy test machine
    page.goto(url)
    page.wait_for_selector("#start-btn")
    accordion = page.get_by_text("D's view", exact=True).first
    if not page.locator("#dview-plot").is_visible():
        accordion.click()
    wait_for(lambda: page.locator("#dview-caption").is_visible(), what="the D's view panel")
    assert "appears a few seconds after a run starts" in page.inner_text("#dview-caption")

    cfg = TrainConfig(dataset="digits", ngf=16, ndf=16, batch_size=32, steps=100_000, device="cpu",
                      precision="fp32", seed=1, sample_every_s=1.0, out_dir=str(tmp_path / "checkpoints"),
                      checkpoint_every=0)
    studio.trainer.start(cfg)
    try:
        first = wait_for(lambda: plot_src(page), timeout=90, what="the first D's-view picture")
        caption = page.inner_text("#dview-caption")
        assert "live run" in caption and "mean D(x)" in caption and "Adam state" in caption
        wait_for(lambda: plot_src(page) not in ("", first), timeout=120, what="a newer D's-view picture")
        studio.trainer.pause()

        def paused_frame():  # reports sent before the pause may still arrive: wait for the paused state's frame
            at, shown, frame = studio.trainer.status().iteration, studio.trainer.grid()[0], hook.latest()
            return frame if frame is not None and at == shown == frame.iteration else None

        frame = wait_for(paused_frame, what="D's view of the state the run paused in")
        wait_for(lambda: f"iteration {frame.iteration:,}" in page.inner_text("#dview-caption"),
                 what="the paused run's frame in the page")

        # a click on a dot shows that image: aim at a generated point (picture pixel -> page pixel)
        page.locator("#dview-plot img").scroll_into_view_if_needed()
        box = page.locator("#dview-plot img").bounding_box()
        width, height = 760, 470
        scale = min(box["width"] / width, box["height"] / height, 1)  # as Gradio maps a click to a pixel
        left = box["x"] + (box["width"] - width * scale) / 2
        top = box["y"] + (box["height"] - height * scale) / 2
        px, py = frame.pixels[len(frame.real_xy) + 3]
        page.mouse.click(left + px * scale, top + py * scale)
        wait_for(lambda: "logit" in page.inner_text("#dview-point-text"),
                 what=f"the clicked dot's caption (page says: {page.inner_text('#dview-point-text')!r})")
        assert page.locator("#dview-point img").count() == 1
        # DVIEW_SCREENSHOT=docs refreshes the README's picture; otherwise it goes to the test's folder
        shot = DOCS / "dview.png" if os.environ.get("DVIEW_SCREENSHOT") == "docs" else tmp_path / "dview.png"
        page.locator("#dview-panel").screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
    finally:
        studio.trainer.stop(wait=True, timeout=60)
