"""A newcomer's walkthrough in Chromium, as a list of promises the app keeps (issue 14). Read top to bottom:
each `promise(...)` line says what a person sees; the steps below it check it on the real page.

One app, one small run (digits, ngf = ndf = 16, a few hundred iterations), two browsers.
"""

from __future__ import annotations

import re
import shutil
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from tests.browser import browser, choose, launch_app, page, set_number, studio_of, wait_for  # noqa: F401

pytestmark = pytest.mark.browser


def promise(text: str) -> None:
    """Marks the promise the next lines check (shown by pytest -s, and named in a failure's traceback)."""
    print(f"promise: {text}")


def status(pg) -> str:
    return pg.inner_text("#train-status")


def message(pg) -> str:
    return pg.inner_text("#train-message")


def number(pg, elem_id: str) -> str:
    return pg.locator(f"#{elem_id} input[type=number]").input_value()


def dropdown_options(pg, elem_id: str) -> list[str]:
    pg.click(f"#{elem_id} input")
    wait_for(lambda: pg.get_by_role("option").count(), timeout=10, what=f"the options of {elem_id}")
    options = [o.inner_text().replace("✓", "").strip() for o in pg.get_by_role("option").all()]  # ✓ marks the value
    pg.keyboard.press("Escape")
    return options


def pick(pg, elem_id: str, option: str) -> None:
    """Choose an option of a dropdown whose list is refreshed when it is opened (the refresh may land while the
    list is open, so a second try is allowed)."""
    box = pg.locator(f"#{elem_id} input")
    for _ in range(3):
        box.click()
        pg.wait_for_timeout(700)  # the list refresh on focus
        wait_for(lambda: pg.get_by_role("option", name=option).count(), timeout=10, what=option)
        pg.get_by_role("option", name=option).click()
        pg.wait_for_timeout(300)
        if box.input_value() == option:
            return
    raise AssertionError(f"could not choose {option} in {elem_id}")


def opacity(pg, elem_id: str) -> float:
    return float(pg.eval_on_selector(f"#{elem_id}", "e => getComputedStyle(e).opacity"))


@pytest.mark.timeout(600)
def test_walkthrough(browser, page, tmp_path, trained_checkpoint):  # noqa: F811
    root = tmp_path / "checkpoints"
    cache = root / ".cache" / "digit_classifier_28px_v2.safetensors"  # what the quality metrics leave behind
    cache.parent.mkdir(parents=True)
    save_file({"conv.weight": torch.zeros(2, 2)}, str(cache))
    (root / "fixture-run").mkdir()
    shutil.copy(trained_checkpoint, root / "fixture-run" / "step_00000300.safetensors")
    url = launch_app(tmp_path)
    trainer = studio_of(url).trainer
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("#start-btn")

    promise("The page opens on an idle Train tab; Stop and Pause look disabled, Start does not")
    assert "idle" in status(page)
    assert opacity(page, "stop-btn") < 0.6 and opacity(page, "pause-btn") < 0.6 and opacity(page, "start-btn") == 1

    promise("Only real run checkpoints are offered: never the metric cache (Train, Explore, Hub)")
    page.get_by_text("Checkpoints", exact=True).click()
    assert dropdown_options(page, "train-checkpoint") == ["fixture-run/step_00000300.safetensors"]

    promise("A bad value gets a lasting message naming the field; nothing starts")
    set_number(page, "batch-size", 0)
    page.click("#start-btn")
    wait_for(lambda: "Batch size (batch_size): must be" in message(page), what="the batch size message")
    page.wait_for_timeout(3000)  # it stays: not a toast that vanishes
    assert "Batch size (batch_size): must be" in message(page) and "press Start again" in message(page)
    assert "batch_size: batch_size" not in message(page)  # issue 29, item 11: the label, said once
    assert trainer.status().state == "idle"

    promise("Absurd step counts are refused with a clear cap")
    set_number(page, "batch-size", 32)
    set_number(page, "steps", 10**12)
    page.click("#start-btn")
    wait_for(lambda: "Steps (iterations) (steps)" in message(page) and "1,000,000" in message(page),
             what="the steps cap")

    promise("The form has a number of classes; a conditional run starts from it without console errors")
    set_number(page, "steps", 5000)
    set_number(page, "num-classes", 10)
    choose(page, "device", "cpu")
    page.get_by_text("Advanced").click()
    set_number(page, "ngf", 16)
    set_number(page, "ndf", 16)
    choose(page, "precision", "fp32")
    page.click("#start-btn")
    wait_for(lambda: "running" in status(page), what="the run to start")
    assert trainer.config.num_classes == 10 and trainer.config.steps == 5000
    wait_for(lambda: re.search(r"[\d,]+ images/s", status(page)), what="the speed readout")
    wait_for(lambda: opacity(page, "start-btn") < 0.6, timeout=10, what="Start to look disabled")
    assert not console_errors, console_errors

    promise("A second browser sees the run, and its form shows the run's settings, not the defaults")
    other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    other.goto(url)
    wait_for(lambda: "running" in status(other), what="the second page to see the run")
    wait_for(lambda: number(other, "steps") == "5000" and number(other, "num-classes") == "10",
             what="the second page's form to show the run")

    promise("Stop saves a checkpoint")
    page.click("#stop-btn")
    wait_for(lambda: "stopped" in status(page), what="stopped")
    assert "Saved step_" in message(page)
    stopped_at = trainer.status().iteration

    promise("A failed Start (a zip without images) leaves the previous run on every page")
    junk = tmp_path / "notes.zip"
    with zipfile.ZipFile(junk, "w") as zf:
        zf.writestr("readme.txt", "no images here")
    page.set_input_files("#zip-upload input[type=file]", str(junk))
    wait_for(lambda: page.locator("#dataset input").input_value() == "folder", what="the data set to switch")
    page.click("#start-btn")
    wait_for(lambda: "Data set" in message(page), what="the data set message")
    page.wait_for_timeout(2500)  # a few polls
    assert "stopped" in status(page) and f"iteration {stopped_at:,}" in status(page)
    assert page.locator("#live-grid img").count() and "stopped" in status(other)

    promise("Load for samples: New samples draws from that checkpoint, not from the stopped run")
    pick(page, "train-checkpoint", "fixture-run/step_00000300.safetensors")
    page.click("#load-ckpt-btn")
    wait_for(lambda: "Loaded" in message(page), what="the load message")
    page.click("#sample-btn")
    wait_for(lambda: "64 samples from fixture-run/step_00000300.safetensors" in page.inner_text("#sample-note"),
             what="samples from the checkpoint")
    assert page.locator("#samples img").count()

    promise("Explore opens on the model this browser loaded and says plainly where it comes from")
    page.get_by_role("tab", name="Explore").click()
    summary = page.locator("#explore-summary")
    wait_for(lambda: "checkpoint fixture-run/step_00000300.safetensors" in summary.inner_text(), timeout=90,
             what="the Explore summary")
    assert "live run" not in summary.inner_text()
    assert ".cache" not in " ".join(dropdown_options(page, "explore-checkpoint"))

    promise("Going back and forth between tabs keeps the model and shows no error")
    page.get_by_role("tab", name="Train").click()
    page.get_by_role("tab", name="Explore").click()
    page.wait_for_timeout(1500)
    assert page.locator(".toast-body").count() == 0 and "checkpoint fixture-run" in summary.inner_text()

    promise("On an unconditional model the Classes tool is disabled, with a note saying why")
    page.get_by_role("tab", name="Classes").click()
    assert page.locator("#explore-class-btn").is_disabled()
    assert "unconditional" in page.inner_text("#explore-cond-note")

    promise("The interpolation strip has no toolbar covering its last frame")
    page.get_by_role("tab", name="Interpolation").click()
    page.click("#explore-interpolate")
    strip = page.locator("#explore-strip img")
    wait_for(lambda: strip.count() and strip.get_attribute("src"), timeout=60, what="the strip")
    def toolbar(elem_id: str) -> int:
        return page.locator(f"#{elem_id} button[aria-label], #{elem_id} button[title]").count()

    assert toolbar("explore-moved") > 0  # an image with its toolbar, for contrast
    assert toolbar("explore-strip") == 0

    promise("What one browser explores is its own: the other browser's pick does not change it")
    other.get_by_role("tab", name="Explore").click()
    other.click("#explore-use")  # the live run (conditional, 10 classes)
    wait_for(lambda: "live run" in other.inner_text("#explore-summary"), timeout=90, what="the other's live model")
    page.wait_for_timeout(1000)
    assert "checkpoint fixture-run" in summary.inner_text()

    promise("The Hub tab's push list holds only run checkpoints too")
    page.get_by_role("tab", name="Hub").click()
    options = dropdown_options(page, "hub-checkpoint")
    assert options and all(".cache" not in o for o in options), options
    assert not console_errors, console_errors
    other.context.close()
