"""End to end in headless Chromium: open Explore on a trained checkpoint, move a slider, see the image change."""

from __future__ import annotations

import shutil

import pytest

from tests.browser import browser, launch_app, page, wait_for  # noqa: F401  (fixtures)

pytestmark = pytest.mark.browser


def image_bytes(page, locator) -> bytes:  # noqa: F811
    src = locator.get_attribute("src")
    assert src, "the image has no source yet"
    return page.request.get(src).body()


def test_explore_slider_moves_the_image(page, tmp_path, trained_checkpoint):  # noqa: F811
    run_dir = tmp_path / "checkpoints" / "fixture-run"
    run_dir.mkdir(parents=True)
    shutil.copy(trained_checkpoint, run_dir / "step_00000300.safetensors")
    page.goto(launch_app(tmp_path))
    page.get_by_role("tab", name="Explore").click()

    # the list is filled when the page loads; Load pins the checkpoint in this session
    wait_for(lambda: "step_00000300" in (page.locator("#explore-checkpoint input").input_value() or ""),
             what="the checkpoint in the list")
    page.locator("#explore-load").click()
    wait_for(lambda: "fixture-run/step_00000300.safetensors" in page.locator("#explore-summary").inner_text(),
             timeout=90, what="the model summary")
    start = page.locator("#explore-start img")
    moved = page.locator("#explore-moved img")
    wait_for(lambda: moved.count() and moved.get_attribute("src"), timeout=60, what="the slider image")
    before = image_bytes(page, moved)
    assert before == image_bytes(page, start)  # all sliders at 0: the moved image is the start image

    slider = page.locator("#explore-slider-1 input[type=range]")
    slider.focus()
    for _ in range(15):  # +1.5 standard deviations along the first principal direction
        page.keyboard.press("ArrowRight")
    wait_for(lambda: page.locator("#explore-slider-1 input[type=number]").input_value() == "1.5",
             what="the slider value")
    wait_for(lambda: image_bytes(page, moved) != before, timeout=60, what="the image to change")
    assert image_bytes(page, start) == before  # the start image stays for comparison
    assert len(page.locator("#explore-grid img").all()) == 1  # the 16 samples are one picture

    # a click on sample #6 of that picture (row 1, column 2) picks #6: here as the interpolation's start
    page.get_by_label("interpolation start").check()
    page.get_by_role("tab", name="Interpolation").click()
    x, y = cell_centre(page, 6)
    page.mouse.click(x, y)
    wait_for(lambda: page.locator("#interp-from input").input_value() == "6", what="sample #6 picked")


CELL_JS = """([i, columns, cell, pad]) => {
  const img = document.querySelector("#explore-grid img");
  const box = img.getBoundingClientRect();
  const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);  // object-fit: contain
  const left = box.left + (box.width - img.naturalWidth * scale) / 2;
  const top = box.top + (box.height - img.naturalHeight * scale) / 2;
  const side = (img.naturalWidth - pad) / columns;  // a sample and the padding after it
  const centre = (k) => (pad + k * side + side / 2) * scale;
  return [left + centre(i % columns), top + centre(Math.floor(i / columns))];
}"""


def cell_centre(page, i: int) -> tuple[float, float]:  # noqa: F811
    """Where sample i of the grid picture is on the screen."""
    from ui import explore_tools as tools

    page.locator("#explore-grid img").scroll_into_view_if_needed()
    return tuple(page.evaluate(CELL_JS, [i, tools.GRID_COLUMNS, tools.GRID_CELL, tools.GRID_PAD]))


def grid_bytes(page) -> list[bytes]:  # noqa: F811
    images = page.locator("#explore-grid img").all()
    return [image_bytes(page, img) for img in images]


def test_item6_psi_typed_with_enter_and_new_samples_redraw_the_grid(page, tmp_path, trained_checkpoint):  # noqa: F811
    """Issue 29, item 6: typing ψ = 0.3 and pressing Enter redraws the grid (a slider's number box fires no
    release until it loses focus); *New samples* draws the next seed's grid and shows that seed."""
    run_dir = tmp_path / "checkpoints" / "fixture-run"
    run_dir.mkdir(parents=True)
    shutil.copy(trained_checkpoint, run_dir / "step_00000300.safetensors")
    page.goto(launch_app(tmp_path))
    page.get_by_role("tab", name="Explore").click()
    wait_for(lambda: "step_00000300" in (page.locator("#explore-checkpoint input").input_value() or ""),
             what="the checkpoint in the list")
    page.locator("#explore-load").click()
    wait_for(lambda: len(page.locator("#explore-grid img").all()) == 1, timeout=90, what="the 16 samples")
    seed_box = page.locator("#explore-seed input[type=number]")
    assert seed_box.input_value() == "0"
    at_one = grid_bytes(page)

    psi_box = page.locator("#explore-psi input[type=number]")
    psi_box.fill("0.3")
    psi_box.press("Enter")
    wait_for(lambda: grid_bytes(page) != at_one, timeout=60, what="the grid at ψ = 0.3")
    truncated = grid_bytes(page)
    assert psi_box.input_value() == "0.3" and seed_box.input_value() == "0"

    page.locator("#explore-samples").click()
    wait_for(lambda: seed_box.input_value() == "1", timeout=60, what="the next seed in the seed box")
    wait_for(lambda: grid_bytes(page) not in (truncated, at_one), timeout=60, what="new samples")
