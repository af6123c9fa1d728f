"""End to end in headless Chromium: train on the bundled digits from the page, steer the run, and see
a second browser follow the same run."""

from __future__ import annotations

import re
import threading

import pytest

from tests.browser import browser, choose, launch_app, page, set_number, studio_of, wait_for  # noqa: F401

pytestmark = pytest.mark.browser


def status(pg) -> str:
    return pg.inner_text("#train-status")


def iteration(pg) -> int:
    match = re.search(r"iteration ([\d,]+) /", status(pg))
    return int(match.group(1).replace(",", "")) if match else -1


def records(pg) -> int:
    """Metric records behind the plots, from their caption ('N records up to iteration M; ...')."""
    match = re.search(r"([\d,]+) records", pg.inner_text("#plot-caption"))
    return int(match.group(1).replace(",", "")) if match else 0


def grid_src(pg) -> str:
    img = pg.locator("#live-grid img")
    return img.get_attribute("src") if img.count() else ""


def trainer_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "dcgan-trainer" and t.is_alive())


def test_train_watch_and_steer_from_two_browsers(browser, page, tmp_path):  # noqa: F811
    url = launch_app(tmp_path)
    trainer = studio_of(url).trainer
    page.goto(url)
    page.wait_for_selector("#start-btn")
    assert "idle" in status(page)

    # a bad setting is explained in the page and starts nothing
    set_number(page, "lr-g", 0)
    page.click("#start-btn")
    wait_for(lambda: "lr_g" in page.inner_text("#train-message"), what="the lr_g error in the page")
    assert "learning rate" in page.inner_text("#train-message") and trainer.status().state == "idle"

    # small, fast settings through the real controls
    set_number(page, "lr-g", 0.0002)
    set_number(page, "steps", 100000)
    set_number(page, "batch-size", 32)
    choose(page, "device", "cpu")
    page.get_by_text("Advanced").click()
    set_number(page, "ngf", 16)
    set_number(page, "ndf", 16)
    choose(page, "precision", "fp32")
    page.dblclick("#start-btn")  # a double click still starts one job
    wait_for(lambda: "running" in status(page), what="the run to start")
    assert trainer_threads() == 1
    cfg = trainer.config
    assert (cfg.ngf, cfg.ndf, cfg.batch_size, cfg.device, cfg.precision) == (16, 16, 32, "cpu", "fp32")

    # the live view: loss plot gains points, the fixed-noise grid changes
    first_records = wait_for(lambda: records(page), what="points in the loss plot")
    first_grid = wait_for(lambda: grid_src(page), what="the sample grid")
    wait_for(lambda: records(page) > first_records, what="more points in the loss plot")
    wait_for(lambda: grid_src(page) not in ("", first_grid), what="a new sample grid")
    assert "images/s" in status(page) and "ETA" in status(page) and "cpu · float32" in status(page)

    # a second browser sees the same run, live
    other = browser.new_context().new_page()
    other.goto(url)
    wait_for(lambda: "running" in status(other), what="the second page to see the run")
    run_folder = re.compile(r"Run folder: (\S+)")
    assert run_folder.search(other.inner_text("#run-notice"))[1] == run_folder.search(page.inner_text("#run-notice"))[1]
    seen = iteration(other)
    wait_for(lambda: iteration(other) > seen, what="the second page to follow the run")

    # closing a browser does not stop the run
    other.context.close()
    closed_at = trainer.status().iteration
    wait_for(lambda: trainer.status().iteration > closed_at + 5, what="training after a page closed")
    assert trainer.status().state == "running"

    # pause: nothing moves; step 3 D-only iterations; resume: it moves again
    page.click("#pause-btn")
    wait_for(lambda: "paused" in status(page), what="paused")
    paused_at = trainer.status().iteration
    page.wait_for_timeout(1500)
    assert trainer.status().iteration == paused_at and iteration(page) == paused_at
    set_number(page, "step-k", 3)
    choose(page, "step-mode", "D only")
    page.click("#step-btn")
    wait_for(lambda: iteration(page) == paused_at + 3, what="3 single steps")
    assert "paused" in status(page)
    page.click("#resume-btn")
    wait_for(lambda: "running" in status(page) and iteration(page) > paused_at + 3, what="training after resume")

    # stop: the run ends with a checkpoint, and every page says so
    page.click("#stop-btn")
    wait_for(lambda: "stopped" in status(page), what="stopped")
    assert "Saved step_" in page.inner_text("#train-message")
    assert trainer_threads() == 0
    assert list((tmp_path / "checkpoints").rglob("step_*.safetensors"))
    late = browser.new_context().new_page()  # a browser that arrives later sees the same finished run
    late.goto(url)
    wait_for(lambda: "stopped" in status(late) and iteration(late) == trainer.status().iteration,
             what="a new page to show the stopped run")
    late.context.close()
