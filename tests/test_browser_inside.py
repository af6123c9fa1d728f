"""End to end in headless Chromium: open Inside G (Explore tab) on a live run, click a unit, switch it off, see the
image change; the digit histogram follows the run while it trains."""

from __future__ import annotations

import re

import pytest

from dcgan.config import TrainConfig
from dcgan.digit_classifier import get_digit_classifier
from tests.browser import browser, launch_app, page, studio_of, wait_for  # noqa: F401

pytestmark = pytest.mark.browser


def src(pg, elem_id: str) -> str:
    img = pg.locator(f"#{elem_id} img")
    return (img.first.get_attribute("src") or "") if img.count() else ""


def histogram_iteration(pg) -> int | None:
    found = re.search(r"samples of iteration ([\d,]+)", pg.inner_text("#inside-hist-text"))
    return int(found.group(1).replace(",", "")) if found else None


def test_inside_g_on_a_live_run(page, tmp_path):  # noqa: F811
    get_digit_classifier(28)  # the histogram's judge, cached once per user (trained here when missing)
    url = launch_app(tmp_path)
    studio = studio_of(url)
    cfg = TrainConfig(dataset="digits", ngf=16, ndf=16, batch_size=32, steps=100_000, device="cpu", precision="fp32",
                      seed=1, sample_every_s=1.0, out_dir=str(tmp_path / "checkpoints"), checkpoint_every=0)
    studio.trainer.start(cfg)
    try:
        wait_for(lambda: studio.live_model() is not None, timeout=90, what="the run's first snapshot")
        page.goto(url)
        page.get_by_role("tab", name="Explore").click()
        wait_for(lambda: "live run" in page.inner_text("#explore-summary"), timeout=60, what="Explore on the live run")
        page.get_by_text("Inside G: the generator's layers and units").click()
        wait_for(lambda: src(page, "inside-layers"), timeout=90, what="the layers of G")
        assert "live run" in page.inner_text("#inside-status")
        wait_for(lambda: page.locator("#inside-units img").count() >= 8, what="the ranked units")
        # nothing switched yet: the same picture (read together: the panel redraws both for each new snapshot)
        wait_for(lambda: src(page, "inside-before") and src(page, "inside-after") == src(page, "inside-before"),
                 what="G(z) and the not-yet-switched image alike")

        page.locator("#inside-units img").first.click()  # the highest-ranked unit: selected, switched off
        wait_for(lambda: "off (mean)" in page.inner_text("#inside-panel"), what="the switch's caption")
        wait_for(lambda: src(page, "inside-after") not in ("", src(page, "inside-before")),
                 what="the image with the unit switched off")
        assert page.locator("#inside-strongest img").count() == 9  # the unit's strongest samples

        first = wait_for(lambda: histogram_iteration(page), timeout=90, what="the digit histogram")
        assert page.locator("#inside-hist").is_visible()
        later = wait_for(lambda: (histogram_iteration(page) or 0) > first and histogram_iteration(page),
                         timeout=90, what="the histogram of a newer snapshot")
        assert later > first
        page.locator("#inside-panel").screenshot(path=str(tmp_path / "inside.png"))
    finally:
        studio.trainer.stop(wait=True, timeout=60)
