"""The Explore tab's findings of a newcomer's walkthrough (issue 29, items 4, 6, 7, 8 and 15), each checked on
the callbacks and the package without a browser (the ψ-and-Enter check is in tests/test_browser_explore.py).

Most tests use a small class-conditional generator fitted to real digits by regression (GLO: each training
digit gets its own z) in about ten seconds: it draws every class in MNIST's framing, on a dark page, and z varies
the style enough that a thin 7 drawn across the whole box fits other classes better, as the GAN of the
walkthrough did.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from dcgan import digit_classifier, latent
from dcgan.data import to_float
from dcgan.models import Generator, sample
from dcgan.studio import LoadedModel, Studio, memorisation_verdict
from tests.conftest import tiny_config

KIND = "principal directions"


@pytest.fixture(scope="module")
def glo_model(digits_data) -> LoadedModel:
    """A conditional G (nz 16, ngf 16) fitted to 100 training digits per class, 1,500 Adam steps, seeded."""
    cfg = tiny_config(nz=16, ngf=16, num_classes=10)
    torch.manual_seed(0)
    idx = torch.cat([(digits_data.train_labels == c).nonzero().flatten()[:100] for c in range(10)])
    x, y = to_float(digits_data.train[idx]), digits_data.train_labels[idx]
    G = Generator(nz=cfg.nz, ngf=cfg.ngf, channels=1, image_size=28, num_classes=10)
    z = torch.randn(len(idx), cfg.nz, requires_grad=True)
    opt = torch.optim.Adam([*G.parameters(), z], lr=3e-3)
    for _ in range(1500):
        b = torch.randint(0, len(idx), (64,))
        loss = (G(z[b], y[b]) - x[b]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return LoadedModel("glo digits", G.eval(), cfg, "checkpoint", ("glo", "digits"))


@pytest.fixture
def studio(tmp_path):
    return Studio(tmp_path / "checkpoints")


@pytest.fixture
def explored(studio, glo_model, monkeypatch):
    """The Explore tab's view of this browser, the GLO model pinned (no background warm-up: the item 4 tests
    check it, the others would only share the CPU with it)."""
    from ui import explore_tools as tools
    from ui.common import new_view

    monkeypatch.setattr(studio, "prepare_explore", lambda model: None)
    return tools.show_model(studio, glo_model, new_view(), KIND, 0)["session"]


def drawing(shape: str, margin: int = 15, width: int = 18) -> np.ndarray:
    """A black-on-white drawing on the editor's 280 x 280 canvas, as a person draws it with the default brush."""
    img = Image.new("RGB", (280, 280), "white")
    pen = ImageDraw.Draw(img)
    far = 280 - margin
    if shape == "seven":
        pen.line([(margin, margin), (far, margin), (margin + 60, far)], fill="black", width=width, joint="curve")
    elif shape == "box-x":
        pen.rectangle([margin, margin, far, far], outline="black", width=width)
        pen.line([(margin, margin), (far, far)], fill="black", width=width)
        pen.line([(margin, far), (far, margin)], fill="black", width=width)
    return np.asarray(img)


# ---- item 4: the first diversity measurement and the first inversion -------------------------------------


def test_item4_inversion_calibration_is_one_batch_with_the_same_results(studio, glo_model, digits_data, monkeypatch):
    """The first inversion of a model calibrated its verdict with 8 inversions one after another (4-6x the cost
    of the inversion itself); one batch gives each image the same result."""
    G = glo_model.generator
    held, labels = digits_data.val, digits_data.val_labels
    picks = torch.linspace(0, held.shape[0] - 1, 8).long().tolist()
    one_by_one = [latent.invert(G, to_float(held[i]), restarts=2, steps=30, seed=1, label=int(labels[i])).mse
                  for i in picks]
    calls = []
    monkeypatch.setattr(latent, "invert", lambda *a, **k: calls.append(a) or pytest.fail("one inversion per image"))
    batched = studio.inversion_reference(glo_model, restarts=2, steps=30)
    assert not calls
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-3, atol=1e-6)


class FakeJob:
    """A classifier process the test ends: running until `finish()`, which caches a (random) classifier."""

    def __init__(self, image_size: int) -> None:
        self.image_size, self.done = image_size, False

    def poll(self) -> int | None:
        return 0 if self.done else None

    def finish(self) -> None:
        digit_classifier.get_digit_classifier(self.image_size)  # train_digit_classifier is patched: instant
        self.done = True


def test_item4_explore_prepares_the_digit_classifier_in_the_background(studio, glo_model, tmp_path, monkeypatch):
    """Showing a digits model starts the classifier's one-time training in the background at once; a diversity
    measurement meanwhile comes back at once and says what is being prepared; afterwards the chart is there."""
    from ui import explore_tools as tools
    from ui.common import new_view

    monkeypatch.setattr(digit_classifier, "CACHE_DIR", tmp_path / "cache")  # nothing cached yet
    monkeypatch.setattr(digit_classifier, "_loaded", {})
    monkeypatch.setattr(digit_classifier, "train_digit_classifier",
                        lambda image_size, **_: (digit_classifier.DigitNet(), 0.9))
    jobs: list[FakeJob] = []
    monkeypatch.setattr(studio, "_classifier_process", lambda size: jobs.append(FakeJob(size)) or jobs[-1])
    session = tools.show_model(studio, glo_model, new_view(), KIND, 0)["session"]
    thread = studio.prepare_explore(glo_model)
    assert thread.name == "dcgan-explore-prepare" and not thread.daemon
    thread.join(120)
    assert [job.image_size for job in jobs] == [28]  # started by the warm-up, before anyone asked

    early = tools.run_diversity(studio, session, 64)
    assert early["div_text"].startswith("## Diversity")
    assert "digit classifier is being trained" in early["div_text"] and "background" in early["div_text"]
    assert len(early["class_plot"]) == 0 and len(jobs) == 1  # the running job is not started again
    jobs[0].finish()
    later = tools.run_diversity(studio, session, 64)
    assert "being trained" not in later["div_text"] and "Digits present" in later["div_text"]
    assert len(later["class_plot"]) == 20 and len(jobs) == 1
    # the calibration of the Inversion tool at its default settings was made too
    assert studio.calibrations.get(glo_model, (latent.INVERT_RESTARTS, latent.INVERT_STEPS, 8),
                                   lambda: pytest.fail("not calibrated ahead"))


def test_item4_no_warm_up_while_a_run_trains_and_the_next_showing_prepares(studio, glo_model, tmp_path,
                                                                           monkeypatch):
    """While a run trains, showing a model prepares nothing (no classifier job, no data load, no calibration:
    seconds of CPU and GIL taken from a class's first answers); once no run trains, showing it prepares it."""
    monkeypatch.setattr(digit_classifier, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(digit_classifier, "_loaded", {})
    jobs: list[int] = []
    monkeypatch.setattr(studio, "_classifier_process", lambda size: jobs.append(size) or FakeJob(size))
    loaded: list = []
    monkeypatch.setattr(latent, "dataset_for", lambda cfg: loaded.append(cfg))
    monkeypatch.setattr(studio, "_training", lambda: True)
    studio.prepare_explore(glo_model).join(60)
    assert jobs == [] and loaded == []
    assert studio.calibrations.get(glo_model, (latent.INVERT_RESTARTS, latent.INVERT_STEPS, 8),
                                   lambda: "not calibrated") == "not calibrated"

    monkeypatch.setattr(studio, "_training", lambda: False)
    monkeypatch.setattr(studio, "inversion_reference", lambda model, restarts, steps: loaded.append("calibrated"))
    studio.prepare_explore(glo_model).join(60)
    assert jobs == [28] and loaded == [glo_model.config, "calibrated"]


def test_closing_the_app_ends_the_classifier_process_and_prepares_nothing_more(studio, glo_model, monkeypatch):
    """SIGTERM (Studio.close): a digit classifier still training in its process ends with the app (it outlived
    the app by minutes, taking CPU from whatever ran next), and no warm-up starts after it."""
    import subprocess
    import sys

    monkeypatch.setattr(studio, "_classifier_process", lambda size: subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"]))
    process, _ = studio.classifier_job(28)
    assert process.poll() is None
    studio.close(timeout=10)
    assert process.poll() is not None
    from dcgan import studio as studio_module

    started: list[int] = []
    monkeypatch.setattr(studio, "_classifier_process", started.append)
    monkeypatch.setattr(studio_module, "digit_classifier_ready", lambda size: False)  # it would start one
    studio.prepare_explore(glo_model).join(30)
    assert started == []


def test_item4_the_classifier_process_uses_the_apps_cache(studio, tmp_path, monkeypatch):
    """The real child process: with the classifier cached where the app keeps it, it loads it and ends (without
    the cache folder it would train for a minute and more)."""
    monkeypatch.setattr(digit_classifier, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(digit_classifier, "_loaded", {})
    monkeypatch.setattr(digit_classifier, "train_digit_classifier",
                        lambda image_size, **_: (digit_classifier.DigitNet(), 0.9))
    digit_classifier.get_digit_classifier(28)
    cached = digit_classifier.cache_path(28)
    before = cached.stat().st_mtime_ns
    proc, _ = studio.classifier_job(28)
    assert proc.wait(60) == 0 and cached.stat().st_mtime_ns == before


def test_item4_the_warm_up_is_no_daemon_even_from_a_daemon_thread(studio, glo_model, monkeypatch):
    """Gradio serves on daemon threads, whose children are daemons by default: one still inside torch when the
    interpreter exits aborts it (pytest ended with SIGABRT after the browser tests)."""
    monkeypatch.setattr(studio, "_prepare", lambda model: None)
    started = []
    server = threading.Thread(target=lambda: started.append(studio.prepare_explore(glo_model)), daemon=True)
    server.start()
    server.join(10)
    assert started and not started[0].daemon


def test_item4_opening_the_tab_prepares_an_already_drawn_model(studio, glo_model, monkeypatch):
    from ui import explore_tools as tools

    prepared = []
    monkeypatch.setattr(studio, "prepare_explore", prepared.append)
    session = tools.show_model(studio, glo_model, {"seed": 0, "psi": 1.0}, KIND, 0)["session"]
    assert tools.on_open(studio, session, KIND, 0) == {}
    assert prepared == [glo_model, glo_model]


# ---- item 6: new samples, ψ, the diversity meter --------------------------------------------------------------


def test_item6_new_samples_draws_new_images(explored):
    from ui import explore_tools as tools

    first = tools.draw_samples(explored, 0, 1.0)
    pressed = tools.new_samples(first["session"], 0, 1.0)
    assert pressed["seed"] == 1 and pressed["session"]["seed"] == 1
    assert not np.array_equal(first["grid"], pressed["grid"])
    again = tools.new_samples(pressed["session"], pressed["seed"], 1.0)
    assert again["seed"] == 2
    typed = tools.new_samples(again["session"], 42, 1.0)  # a seed typed in and not drawn yet: that one
    assert typed["seed"] == 42
    assert np.array_equal(typed["grid"], tools.draw_samples(explored, 42, 1.0)["grid"])


def test_item6_diversity_is_measured_at_psi_1_and_says_so(studio, explored, monkeypatch):
    from ui import explore_tools as tools

    monkeypatch.setattr(studio, "classifier_status", lambda model: None)
    monkeypatch.setattr(latent, "digit_coverage", lambda G, real, n: ([n // 10] * 10, [n // 10] * 10))
    full = tools.run_diversity(studio, tools.draw_samples(explored, 0, 1.0)["session"], 64)
    truncated = tools.run_diversity(studio, tools.draw_samples(explored, 0, 0.3)["session"], 64)
    assert full["div_text"].splitlines()[0] == truncated["div_text"].splitlines()[0]  # "## Diversity 0.xx"
    assert full["div_plot"].equals(truncated["div_plot"])
    assert "ψ = 1" in truncated["div_text"] and "ψ = 0.3" in truncated["div_text"]


# ---- item 7: arithmetic and inversion on a class-conditional model -----------------------------------------


def test_item7_arithmetic_draws_each_term_with_its_own_class(explored, glo_model):
    from ui import explore_tools as tools

    z, labels = tools.grid_latents(explored)
    assert labels[[0, 10, 1, 11, 7]].tolist() == [0, 0, 1, 1, 7]
    out = tools.run_arithmetic(explored, "0 10", "1 11", "7")
    side = out["equation"].shape[0]  # each picture is enlarged to a multiple of 28 px, the signs 48 px apart
    for k, (rows, cls) in enumerate((([0, 10], 0), ([1, 11], 1), ([7], 7))):
        own = tools.picture(tools.render(glo_model, z[rows].mean(0, keepdim=True), torch.tensor([cls])), 0, 160)
        panel = out["equation"][:, k * (side + 48):k * (side + 48) + side, 0]
        assert np.array_equal(panel, own), f"term {'ABC'[k]} is not drawn as class {cls}"
    result = z[[0, 10]].mean(0) - z[[1, 11]].mean(0) + z[7]
    as_c = tools.picture(tools.render(glo_model, result[None], torch.tensor([7])), 0, 160)
    assert np.array_equal(out["equation"][:, 3 * (side + 48):, 0], as_c)  # the result keeps C's class


def test_item7_a_drawn_seven_inverts_as_class_seven(studio, explored):
    """Thin 7s drawn across the box came back as a 4 (or a 3); framed like G's samples they come back as 7s.
    Eight restarts (the tool's most): with four, the class-7 starts of the last drawing missed their best basin on
    this small regression model (MSE 0.047 as a 7 against 0.042 as a 4); on the GAN of the walkthrough four did."""
    from ui import explore_tools as tools

    shapes = [[(15, 15), (265, 15), (75, 265)], [(40, 40), (240, 40), (100, 240)], [(60, 50), (220, 60), (130, 250)],
              [(30, 60), (250, 40), (150, 260)]]
    for points in shapes:
        img = Image.new("RGB", (280, 280), "white")
        ImageDraw.Draw(img).line(points, fill="black", width=18, joint="curve")
        out = tools.run_inversion(studio, explored, {"composite": np.asarray(img)}, 8, 250, KIND, 0)
        assert "best class 7" in out["invert_text"], (points, out["invert_text"])
        assert "scaled and centred" in out["invert_text"] and "inverted to this model's polarity" in out["invert_text"]
        assert out["session"]["label"] == 7


def test_item7_a_drawing_is_framed_like_the_models_samples(glo_model):
    G = glo_model.generator
    target = latent.prepare_target(drawing("seven", margin=5), G)
    assert target.flipped and target.framed
    extent = latent.shape_extent(latent.ink(sample(G, 16, seed=123), light=False))
    shape = (target.image[0] + 1) / 2 >= latent.INK
    ys, xs = shape.nonzero(as_tuple=True)
    assert abs(max(int(ys.max() - ys.min()), int(xs.max() - xs.min())) + 1 - extent * 28) <= 1.5
    mass = (target.image[0] + 1) / 2
    centre = [float((mass.sum(d) * torch.arange(28)).sum() / mass.sum()) for d in (1, 0)]
    assert all(abs(c - 13.5) <= 1.0 for c in centre), centre


# ---- item 8: the memorisation verdict ------------------------------------------------------------------------


def test_item8_memorisation_verdict_follows_the_heldout_distribution(digits_data):
    held = latent.heldout_nn_distances(digits_data)
    p5, median = float(torch.quantile(held.double(), 0.05)), float(held.median())
    # the walkthrough: nearest 0.271 where held-out images typically lie 0.365 away (ratio 0.74) was called
    # "no closer to the training set than new real images are"
    walkthrough = memorisation_verdict(0.271, torch.normal(0.365, 0.04, (200,), generator=torch.Generator()
                                                           .manual_seed(0)))
    assert walkthrough.word == "suspiciously close" and "no closer" not in walkthrough.text
    assert walkthrough.closer_share < 0.05
    closer = memorisation_verdict((p5 + median) / 2, held)
    assert closer.word == "not a copy" and "closer than typical" in closer.text and "no closer" not in closer.text
    assert memorisation_verdict(0.9 * p5, held).word == "suspiciously close"
    assert memorisation_verdict(0.0, held).word == "copy"
    assert memorisation_verdict(1.1 * median, held).word == "not a copy"
    for verdict in (closer, walkthrough):
        assert "5th percentile" in verdict.text and "Rule:" in verdict.text
    assert memorisation_verdict(0.3, []).word == "unknown"


def test_item8_memorisation_tool_states_its_rule(explored):
    from ui import explore_tools as tools

    out = tools.run_memorisation(explored, 3, False)
    assert "Rule:" in out["memo_text"] and "5th percentile" in out["memo_text"]
    assert "held-out real images lie closer to a training image" in out["memo_text"]


# ---- item 15: polarity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["box-x", "seven"])
@pytest.mark.parametrize("margin", [5, 40])
def test_item15_black_on_white_drawings_are_flipped(glo_model, shape, margin):
    target = latent.prepare_target(drawing(shape, margin), glo_model.generator)
    assert target.flipped
    page = target.image[0]
    assert float(page.median()) < -0.5, "the page should be dark, as G's are"
    assert float(page.max()) > 0.5, "the strokes should be light"
    assert float(latent.target_from_array(drawing(shape, margin), glo_model.generator).median()) < -0.5


def test_item15_pictures_in_the_models_polarity_or_without_a_plain_page_are_not_flipped(glo_model):
    G = glo_model.generator
    white_on_black = 255 - drawing("box-x", 5)
    kept = latent.prepare_target(white_on_black, G)
    assert not kept.flipped and float(kept.image[0].median()) < -0.5
    photo = np.random.default_rng(0).integers(60, 200, (280, 280, 3), dtype=np.uint8)  # no plain background
    as_is = latent.prepare_target(photo, G)
    assert not as_is.flipped and not as_is.framed
    assert latent.background_level(to_float(torch.full((1, 1, 8, 8), 250, dtype=torch.uint8))) > 0.5
