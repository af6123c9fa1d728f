"""The five lessons (dcgan/lessons.py): questions, the class's answers, and each reader on runs whose outcome is
known (synthetic metric rows and frames built from real digits). The strong-D lesson is also driven end to end
through the Python API on a real training process (the browser test completes the who-wins lesson)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from dcgan import lessons
from dcgan.config import TrainConfig
from dcgan.images import grid_array
from dcgan.trainer import ACTIVE, FINISHED, PAUSED, RUNNING, Status, TrainerBusy
from tests.conftest import tiny_config

DIGITS = TrainConfig(dataset="digits", steps=400)


def view(rows=(), frames=(), state=FINISHED, iteration=400, cfg=DIGITS, generator=None) -> lessons.RunView:
    return lessons.RunView(Status(state=state, iteration=iteration, total=cfg.steps), cfg, list(rows), list(frames),
                           lambda: generator)


def test_questions_check_answers_and_bin_them():
    slider = lessons.Question("where?", low=0, high=1)
    assert slider.check("0.25") == 0.25 and slider.bin_of(0.25) == 2 and slider.bin_of(1.0) == 9
    for bad in ("x", 1.5, float("nan"), None):
        with pytest.raises(ValueError, match="from 0 to 1"):
            slider.check(bad)
    choice = lessons.Question("which?", choices=("a", "b"))
    assert choice.check("b") == "b" and choice.bins() == ["a", "b"] and choice.bin_of("b") == 1
    with pytest.raises(ValueError, match="choose one of"):
        choice.check("c")
    assert len(lessons.LESSONS) == 5 and len(lessons.BY_ID) == 5


def test_the_class_answers_are_anonymous_one_per_browser_and_cleared():
    store = lessons.ClassAnswers(limit=3)
    store.answer("who-wins", "tok-a", 0.2)
    store.answer("who-wins", "tok-b", 0.35)
    store.answer("who-wins", "tok-a", 0.9)  # a changed answer replaces the old one
    assert sorted(store.answers("who-wins")) == [0.35, 0.9]
    hist = dict(store.histogram("who-wins"))
    assert sum(hist.values()) == 2 and hist["0.3–0.4"] == 1 and hist["0.9–1.0"] == 1
    assert list(hist) == sorted(hist)  # the bars sort as text in their own order
    looks = lessons.BY_ID["collapse"].question.bins()
    assert looks == sorted(looks) and looks[0].startswith("01") and looks[-1].endswith("64")
    assert "tok-a" not in repr(store.histogram("who-wins")) + repr(store.answers("who-wins"))
    for k in range(5):
        store.answer("learns-first", f"t{k}", lessons.LEARN_CHOICES[k % 2])
    assert len(store.answers("learns-first")) == 3  # bounded: the oldest go
    with pytest.raises(ValueError):
        store.answer("learns-first", "t9", "something else")
    store.clear("who-wins")
    assert store.answers("who-wins") == [] and len(store.answers("learns-first")) == 3


def test_who_wins_reads_d_of_g_z_at_the_end():
    rows = [{"iteration": i, "d_real": 0.7, "d_fake": 0.5 if i < 300 else 0.28} for i in range(1, 401)]
    reading = lessons.read_who_wins(view(rows))
    assert reading.reached and reading.value == pytest.approx(0.28) and "D is winning" in reading.text
    assert {c["series"] for c in reading.curves} == {"D(x) real", "D(G(z)) fake", "0.5 (can't tell)"}
    assert not lessons.read_who_wins(view(rows[:100], state=RUNNING, iteration=100)).reached


def test_strong_d_reads_only_the_d_only_steps():
    rows = [{"iteration": 1, "d_real": 0.5, "d_fake": 0.9, "loss_d": 1.0, "update": "both"}]
    rows += [{"iteration": 1 + k, "d_real": 0.99, "d_fake": 0.5 * 0.97 ** k, "loss_d": 0.01, "update": "d"}
             for k in range(1, 201)]
    reading = lessons.read_strong_d(view(rows, state=PAUSED, iteration=201))
    assert reading.reached and reading.value == pytest.approx(np.mean([0.5 * 0.97 ** k for k in range(191, 201)]),
                                                              abs=1e-3)
    assert "started at 0.48" in reading.text and "D tells every fake apart" in reading.text
    assert not lessons.read_strong_d(view(rows[:150], state=PAUSED, iteration=150)).reached


@pytest.fixture(scope="module")
def real():
    return lessons.real_reference(DIGITS)


def test_grid_images_gives_back_the_images_of_a_grid(real):
    back = lessons.grid_images(grid_array(real, nrow=8), 28, 1)
    assert back.shape == real.shape and (back - real).abs().max() < 2 / 255 + 1e-6


def test_distinct_looks_counts_real_digits_as_many_and_copies_as_few(real):
    threshold = lessons.look_threshold(real)
    assert lessons.distinct_looks(real, threshold) >= 60
    three = real[torch.arange(64) % 3]
    assert lessons.distinct_looks(three, threshold) == 3


def test_collapse_finds_the_worst_frame(real):
    frames = [(it, grid_array(real, nrow=8)) for it in (50, 100, 200, 300, 400)]
    frames.insert(2, (150, grid_array(real[torch.arange(64) % 2], nrow=8)))  # two shapes at iteration 150
    reading = lessons.read_collapse(view(frames=frames))
    assert reading.reached and reading.value == 2 and "iteration 150" in reading.text
    assert reading.picture is frames[2][1]


def test_learns_first_tells_blobs_before_strokes(real):
    blur = torch.nn.functional.avg_pool2d(real, 3, stride=1, padding=1)  # soft shapes with about the same ink
    blobs = torch.where(blur > 0, blur.clamp(min=0.05), -1.0)
    soft = 1 - lessons.sharpness(blobs) / lessons.sharpness(real)
    assert abs(lessons.ink(blobs) / lessons.ink(real) - 1) < 0.15 < soft
    frames = [(it, grid_array(blobs, nrow=8)) for it in (0, 100, 200, 300)]
    frames += [(it, grid_array(real, nrow=8)) for it in (400, 500)]
    reading = lessons.read_learns_first(view(frames=frames, iteration=500))
    assert reading.reached and reading.value == lessons.LEARN_CHOICES[0], reading.text
    sharp_first = [(it, grid_array(real, nrow=8)) for it in (0, 100)]
    assert lessons.read_learns_first(view(frames=sharp_first, iteration=500)).value == lessons.LEARN_CHOICES[2]


class Painter(torch.nn.Module):
    """A stand-in generator whose pictures are crisp (±1 pixels) or soft, to check the walk's verdict."""

    nz, num_classes, channels, image_size = 100, 0, 1, 28

    def __init__(self, crisp: bool) -> None:
        super().__init__()
        self.crisp = crisp
        self.proj = torch.nn.Linear(100, 28 * 28, bias=False)
        torch.nn.init.normal_(self.proj.weight, std=1.0)

    def forward(self, z, labels=None):
        x = self.proj(z).view(-1, 1, 28, 28)
        return torch.sign(x) if self.crisp else torch.tanh(x / 10)


def test_latent_walk_tells_a_crisp_midpoint_from_a_blend():
    crisp = lessons.read_latent_walk(view(generator=Painter(crisp=True)))
    assert crisp.reached and crisp.value == lessons.WALK_CHOICES[0]
    assert crisp.picture.shape == (32, 9 * 30 + 2, 3)  # the walk of 8 and the pixel blend
    assert lessons.read_latent_walk(view(generator=None)).reached is False


def test_strong_d_lesson_end_to_end_through_the_python_api(tmp_path):
    """Start the lesson as its Run button does, on a real training process, and read the reveal."""
    from dcgan.studio import Studio

    studio = Studio(tmp_path / "checkpoints", threads=1)
    try:
        lessons.class_answers(studio).answer("strong-d", "tok", 0.3)
        run_dir = lessons.start(studio, "strong-d")
        assert lessons.class_answers(studio).run_of("strong-d") == run_dir
        end = time.monotonic() + 120
        reading = None
        while time.monotonic() < end:
            reading = lessons.reading(studio, "strong-d")
            if reading is not None and reading.reached:
                break
            time.sleep(0.5)
        assert reading is not None and reading.reached, lessons.progress_text(studio, "strong-d")
        assert reading.value < 0.1  # D alone tells every fake apart
        assert studio.trainer.status().state == PAUSED  # the run waits: Resume shows G recovering
        assert "paused" in lessons.progress_text(studio, "strong-d")
        # the next lesson's run replaces the paused lesson run (saved, as every stop); a run of the user's own is
        # never stopped by a lesson: its start is refused
        collapse_dir = lessons.start(studio, "collapse")
        assert collapse_dir != run_dir and studio.trainer.status().state in ACTIVE
        assert "Another run has replaced" in lessons.progress_text(studio, "strong-d")
        studio.trainer.stop(wait=True)
        studio.start(tiny_config(steps=100_000, out_dir=str(studio.root), run_name="mine"))
        with pytest.raises(TrainerBusy):
            lessons.start(studio, "collapse")
        assert studio.trainer.status().run_dir.rstrip("/").endswith("mine")
    finally:
        studio.trainer.stop(wait=True)
    assert lessons.reading(studio, "collapse") is None  # no run for that lesson
