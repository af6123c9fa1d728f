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


def test_item2_the_clicked_dot_is_marked_followed_and_forgotten_with_its_run(tmp_path, monkeypatch):
    """D's view: a clicked dot is ringed on the plot and followed through the run's frames; Reset, a new run and
    a checkpoint's view forget it; after Reset the GIF export has no frames of the old run to export."""
    import numpy as np

    from dcgan import dview
    from dcgan.data import load_dataset
    from dcgan.train import GANTraining
    from dcgan.trainer import Status
    from tests.conftest import tiny_config
    from tests.test_dview import trained
    from ui import dview_panel
    from ui.state import Studio

    studio = Studio(tmp_path / "checkpoints")
    hook = dview.DViewHook(budget=1.0)
    monkeypatch.setattr(studio, "dview_hook", lambda: hook)
    status = {"value": Status(state="running", run_dir="runs/a")}
    monkeypatch.setattr(studio.trainer, "status", lambda: status["value"])
    try:
        cfg = tiny_config()
        run: GANTraining = trained(cfg, load_dataset(cfg), steps=2)
        hook.take(dview.snapshot(run))
        assert hook.wait_idle()
        seen, plot, _, _, dot_text = dview_panel.refresh(studio, {})
        assert dot_text == dview_panel.NO_DOT
        frame = hook.latest()
        n_real = len(frame.real_xy)
        seen, marked, image, text = dview_panel.click(studio, seen, *frame.pixels[n_real + 3])
        assert text.startswith("generated #3") and image is not None
        plain = dview.picture_array(frame)
        x, y = (int(v) for v in frame.pixels[n_real + 3])
        assert marked.value is not None  # the plot is sent again, with the dot ringed:
        ring = np.abs(dview.marked(frame, "generated", 3).astype(int) - plain.astype(int)).sum(axis=2) > 0
        assert ring[y - 12:y + 13, x - 12:x + 13].sum() > 40 and ring.sum() == ring[y - 12:y + 13, x - 12:x + 13].sum()

        run.train_step()  # the same run moves on: the dot is followed into the new frame
        hook.take(dview.snapshot(run))
        assert hook.wait_idle()
        seen, plot, _, image, text = dview_panel.refresh(studio, seen)
        assert text.startswith("generated #3") and f"iteration {run.iteration}" not in text
        assert plot.value is not None and image is not None

        status["value"] = Status(state="idle")  # Reset
        seen, plot, _, image, text = dview_panel.refresh(studio, seen)
        assert image is None and text == dview_panel.NO_DOT and plot.value is None
        assert dview_panel.export_gif(studio)[0] is None  # no frames of the old run after Reset

        status["value"] = Status(state="running", run_dir="runs/b")  # a new run: nothing clicked yet
        seen = dview_panel.click(studio, seen, *frame.pixels[n_real + 3])[0]
        assert seen["dot"] is None  # nothing to click before the new run's first frame
    finally:
        hook.close()


def test_item5_single_steps_show_in_every_plot_at_once_marked_as_one_network(tmp_path, digits_data):
    """Steps of one network appear in the loss and the D plots as they happen, each as a series saying which
    network moved ("loss_G (G-only steps)"), with D(G(z)) as D judged G's fakes; no warnings on the way."""
    import warnings

    from dcgan.trainer import Trainer
    from tests.conftest import tiny_config
    from ui import plots
    from ui import train_view as tv
    from ui.state import Studio

    trainer = Trainer()
    trainer.start(tiny_config(steps=1000, out_dir=str(tmp_path), run_name="g"), data=digits_data, paused=True)
    try:
        trainer.step(2, "both")
        trainer.step(3, "g")
        trainer.step(2, "d")
        wait_for(lambda: len(trainer.metrics) == 7, timeout=60, what="seven rows")
        rows = trainer.metrics.since(0)
        assert [r["update"] for r in rows] == ["both"] * 2 + ["g"] * 3 + ["d"] * 2
        assert all(0 < r["d_fake"] < 1 for r in rows[2:5])  # D(G(z)) of a G-only step is measured
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            losses, ds = plots.loss_frame(rows, 0.6), plots.d_frame(rows, 0.6)
            studio = Studio(tmp_path / "studio")
            studio.trainer.metrics = trainer.metrics
            tv.live_view(studio, {})
        by_series = {name: list(group.iteration) for name, group in losses.groupby("series")}
        assert by_series == {"loss_D": [1, 2], "loss_G": [1, 2], "loss_G (G-only steps)": [3, 4, 5],
                             "loss_D (D-only steps)": [6, 7]}
        d_series = {name: list(group.iteration) for name, group in ds.groupby("series")}
        assert d_series["D(G(z)) fake (G-only steps)"] == [3, 4, 5] and d_series["D(x) real (D-only steps)"] == [6, 7]
    finally:
        trainer.stop()


@pytest.mark.browser
@pytest.mark.timeout(900)
def test_items_10_11_12_messages_form_and_resume_after_stop(page, tmp_path):  # noqa: F811
    """Messages where they belong and about the run on screen (10); a form that follows the data set and says
    when the recipe is custom, with the field's label in its messages (11); Resume after Stop (12)."""
    from tests.browser import choose, set_number

    url = launch_app(tmp_path)
    trainer = studio_of(url).trainer
    page.goto(url)
    page.wait_for_selector("#start-btn")

    def message() -> str:
        return page.inner_text("#train-message")

    def recipe() -> str:
        return page.eval_on_selector("#preset", "e => e.querySelector('input:checked')?.value || ''")

    # 11: stacked digits are colour: Channels follows; the recipe says custom once a setting leaves it
    choose(page, "dataset", "stacked-digits")
    wait_for(lambda: page.eval_on_selector("#channels", "e => e.querySelector('input:checked')?.value") == "3",
             what="Channels set to 3 by stacked-digits")
    choose(page, "dataset", "digits")
    wait_for(lambda: page.eval_on_selector("#channels", "e => e.querySelector('input:checked')?.value") == "1",
             what="Channels back to 1 for digits")
    assert recipe() == "default"
    set_number(page, "lr-g", 0.001)
    wait_for(lambda: recipe() == "custom", what="the recipe to say custom")
    set_number(page, "lr-g", 0.0004)
    wait_for(lambda: recipe() == "default", what="the recipe to say default again")

    # 11: a file that is not a zip is refused in the page, and the message stays
    junk = tmp_path / "notes.txt"
    junk.write_text("not images")
    page.set_input_files("#zip-upload input[type=file]", str(junk))
    wait_for(lambda: "is not a .zip" in message(), what="the upload's message")
    page.wait_for_timeout(3000)
    assert "notes.txt" in message()

    # 10: the timeline's GIF message under the GIF button, not under Step k
    page.get_by_role("button", name="Export the evolution as GIF").click()
    wait_for(lambda: "Not enough snapshots" in page.inner_text("#timeline-gif-note"), what="the GIF note")
    assert "Not enough snapshots" not in message()

    # 10: a double click on Start starts one run and says so (no "Busy")
    set_number(page, "steps", 100000)
    set_number(page, "batch-size", 16)
    choose(page, "device", "cpu")
    page.get_by_text("Advanced").click()
    set_number(page, "ngf", 8)
    set_number(page, "ndf", 8)
    page.dblclick("#start-btn")
    wait_for(lambda: "Started" in message(), what="the Started message")
    page.wait_for_timeout(2000)
    assert "Busy" not in message() and "Started" in message()

    # 12: Resume after Stop continues the run from its checkpoint
    wait_for(lambda: trainer.status().iteration > 5, what="some training")
    page.click("#stop-btn")
    wait_for(lambda: "stopped" in page.inner_text("#train-status"), what="stopped")
    stopped_at = trainer.status().iteration
    wait_for(lambda: page.locator("#resume-btn").is_enabled(), what="Resume enabled after Stop")
    page.click("#resume-btn")
    wait_for(lambda: f"Continuing from iteration {stopped_at:,}" in message(), what="the continue message")
    wait_for(lambda: trainer.status().state == "running" and trainer.status().iteration > stopped_at,
             what="the run to go on")

    # 10: another browser's run replaces this one: the message about ours goes
    trainer.stop()
    trainer.reset()
    trainer.start(small_run(tmp_path, 100000, run_name="someone-else"))
    wait_for(lambda: "someone-else" in page.inner_text("#run-notice"), what="the other run on this page")
    wait_for(lambda: message().strip() == "", what="the old message to go")
    trainer.stop()


@pytest.mark.browser
def test_item9_checkpoint_lists_follow_runs_made_after_the_page_opened(page, tmp_path, trained_checkpoint):  # noqa: F811
    """A page opened before any run existed: choosing a tab fills its checkpoint lists (no ↻ needed)."""
    import shutil

    url = launch_app(tmp_path)
    page.goto(url)
    page.wait_for_selector("#start-btn")
    run = tmp_path / "checkpoints" / "later-run"
    run.mkdir(parents=True)
    shutil.copy(trained_checkpoint, run / "step_00000300.safetensors")  # a run made after the page opened

    def chosen(elem_id: str) -> str:
        return page.locator(f"#{elem_id} input").input_value()

    page.get_by_role("tab", name="Hub").click()
    wait_for(lambda: chosen("hub-checkpoint") == "later-run/step_00000300.safetensors", timeout=20,
             what="the Hub's list to show the new run")
    page.get_by_role("tab", name="Train").click()
    for accordion in ("Checkpoints", "D's view"):  # closed: their lists are drawn when opened
        page.get_by_text(accordion, exact=True).first.click()
    wait_for(lambda: chosen("train-checkpoint") == "later-run/step_00000300.safetensors", timeout=20,
             what="the Train tab's list")
    assert chosen("dview-checkpoint") == "later-run/step_00000300.safetensors"


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_item5_a_g_only_burst_is_drawn_in_the_page(page, tmp_path):  # noqa: F811
    """In the browser: the G-only steps appear as their own series in both charts (the charts are rebuilt for
    a new series; a data-only update would not draw it)."""
    url = launch_app(tmp_path)
    trainer = studio_of(url).trainer
    page.goto(url)
    page.wait_for_selector("#start-btn")
    trainer.start(small_run(tmp_path, 100_000))
    try:
        wait_for(lambda: x_ticks(page, "d-plot"), timeout=120, what="the first D plot")
        trainer.step(20, "g")
        wait_for(lambda: "D(G(z)) fake (G-only steps)" in page.inner_text("#d-plot")
                 and "loss_G (G-only steps)" in page.inner_text("#loss-plot"), timeout=60,
                 what="the G-only series in both charts")
    finally:
        trainer.stop()
