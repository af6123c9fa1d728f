"""The second newcomer's walkthrough (issue 29), the Train tab's findings, each as a test named after it.

Browser tests drive the real page in headless Chromium; the rest check the same promise without a browser.
"""

from __future__ import annotations

import re
import time

import pytest

from dcgan.config import TrainConfig
from tests.browser import browser, launch_app, page, studio_of, wait_for  # noqa: F401


def x_ticks(pg, elem_id: str) -> list[float]:
    """The numbers on a line plot's x-axis, as drawn (the SVG's tick labels before the axis title)."""
    text = pg.inner_text(f"#{elem_id}")
    head = text.split("iteration")[0]
    return [float(t.replace(",", "")) for t in re.findall(r"^\s*([\d,]+)\s*$", head, re.M)]


def small_run(tmp_path, steps: int, **changes) -> TrainConfig:
    return TrainConfig(**{**dict(dataset="digits", ngf=8, ndf=8, batch_size=16, steps=steps, device="cpu",
                                 precision="fp32", sample_every_s=1.0, out_dir=str(tmp_path / "checkpoints"),
                                 checkpoint_every=0), **changes})


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_item1_plots_catch_up_when_a_run_ends_while_another_tab_is_shown(page, tmp_path):  # noqa: F811
    url = launch_app(tmp_path)
    trainer = studio_of(url).trainer
    page.set_viewport_size({"width": 1400, "height": 1000})
    page.goto(url)
    page.wait_for_selector("#start-btn")
    trainer.start(small_run(tmp_path, 1200, num_classes=10))
    wait_for(lambda: x_ticks(page, "loss-plot"), timeout=120, what="the first loss plot")
    page.get_by_role("tab", name="Explore").click()  # away while the run is young
    assert trainer.wait(300) == "finished"
    page.get_by_role("tab", name="Train").click()

    def caught_up() -> bool:
        ticks = x_ticks(page, "loss-plot") + [0]
        return max(ticks) >= 0.8 * 1200 and max(x_ticks(page, "d-plot") + [0]) >= 0.8 * 1200

    try:
        wait_for(caught_up, timeout=20, what="the plots to reach the run's end")
    except AssertionError:
        raise AssertionError(f"x-axes stop at {max(x_ticks(page, 'loss-plot') + [0])} and "
                             f"{max(x_ticks(page, 'd-plot') + [0])} of 1,200 iterations") from None
    time.sleep(3)  # and stay there
    assert caught_up()


def test_item1_a_page_back_from_another_tab_gets_the_plots_again(tmp_path):
    """The browser rebuilds a chart that is shown again and drops data landing meanwhile: after a gap in the
    polls (the page showed another tab) the plots are sent again for a few polls, though no row is new."""
    from ui import train_view as tv
    from ui.state import Studio

    studio = Studio(tmp_path / "checkpoints")
    for i in range(1, 51):
        studio.trainer.metrics.append({"iteration": i, "loss_d": 1.0, "loss_g": 2.0, "d_real": 0.7, "d_fake": 0.3})
    seen, out = tv.live_view(studio, {})
    assert out["loss_plot"].value is not None
    seen, out = tv.live_view(studio, seen)
    assert out["loss_plot"] == {"__type__": "update"}  # polled a moment later: nothing new, nothing sent
    seen["polled_at"] -= tv.RETURN_GAP_S + 1  # the page was away
    for _ in range(2):
        seen, out = tv.live_view(studio, seen)
        assert out["loss_plot"].value is not None and out["d_plot"].value is not None
    seen["resend_until"] = 0.0
    seen, out = tv.live_view(studio, seen)
    assert out["loss_plot"] == {"__type__": "update"}
