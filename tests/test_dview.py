"""D's view (dcgan/dview.py): the axes are what the panel says they are, and the arrows are honest."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan import dview
from dcgan.config import TrainConfig
from dcgan.data import load_dataset
from dcgan.train import GANTraining

N = 64  # points per cloud: small nets, small probes, fast tests


def tiny(**changes) -> TrainConfig:
    base = dict(dataset="digits", image_size=28, channels=1, ngf=16, ndf=16, batch_size=32, steps=1000,
                device="cpu", precision="fp32", seed=3)
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def digits():
    return load_dataset(tiny())


def trained(cfg: TrainConfig, data, steps: int = 6) -> GANTraining:
    torch.set_num_threads(1)
    run = GANTraining(cfg, data)
    for _ in range(steps):
        run.train_step()
    return run


def state(module: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("changes", [{}, {"num_classes": 10}, {"spectral_norm": True}],
                         ids=["batchnorm", "conditional", "spectral-norm"])
def test_horizontal_axis_is_d_logit(digits, changes):
    cfg = tiny(**changes)
    run = trained(cfg, digits)
    probe = dview.make_probe(digits, cfg, n=N)
    G, D = dview.models_of(dview.snapshot(run))
    before_g, before_d = state(G), state(D)
    frame = dview.compute_frame(G, D, cfg, probe)

    # D's logit computed independently: copies of G and D as training calls them (train mode: BatchNorm
    # on the batch's statistics; a spectral-norm D in eval mode, without another power iteration)
    ref = copy.deepcopy(D).train(not cfg.spectral_norm)
    with torch.no_grad():
        real_logit = ref(probe.real, probe.real_labels)
        fakes = copy.deepcopy(G).train()(probe.z, probe.fake_labels)
        fake_logit = ref(fakes, probe.fake_labels)
    assert frame.real_xy.dtype == np.float32
    np.testing.assert_allclose(frame.real_xy[:, 0], real_logit.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(frame.fake_xy[:, 0], fake_logit.numpy(), atol=1e-4, rtol=0)
    assert frame.real_xy[:, 0].std() > 1e-3  # not a constant
    if cfg.num_classes:  # the class projection term is part of each point's logit
        other = (probe.real_labels + 1) % cfg.num_classes
        with torch.no_grad():
            assert (ref(probe.real, other) - real_logit).abs().max() > 1e-3
    # the vertical axis is a unit vector orthogonal to D's head weight
    w, _ = D.head_weight()
    assert abs(float(frame.axis @ w)) < 1e-5 * float(w.norm())
    assert abs(float(frame.axis.norm()) - 1) < 1e-5
    # drawing leaves the networks exactly as they were (BatchNorm running statistics included)
    for k, v in state(G).items():
        assert torch.equal(v, before_g[k]), k
    for k, v in state(D).items():
        assert torch.equal(v, before_d[k]), k


@pytest.mark.parametrize("loss", ["bce", "hinge"])
def test_g_only_step_moves_fakes_along_arrows(digits, loss):
    cfg = tiny(loss=loss)
    run = trained(cfg, digits)
    probe = dview.make_probe(digits, cfg, n=N)
    pusher = dview.Pusher(cfg, digits)
    before = dview.frame_of_run(run, probe, pusher=pusher)
    assert before.push is not None and "Adam state" in before.push_note
    run.train_step("g")  # the training loop's own G-only step
    after = dview.frame_of_run(run, probe, prev_axis=before.axis, pusher=pusher)

    moved = after.fake_xy[:, 0] - before.fake_xy[:, 0]
    arrows = before.push[:, 0]
    assert np.abs(moved).max() > 1e-3  # the step did move the fakes
    assert np.corrcoef(moved, arrows)[0, 1] >= 0.9
    assert arrows.mean() > 0  # G's update pushes its images toward the side D calls real
    # D did not change, so the real points keep their logits
    np.testing.assert_allclose(after.real_xy[:, 0], before.real_xy[:, 0], atol=1e-5, rtol=0)


def test_arrows_from_a_fresh_optimiser_are_labelled_so(digits):
    cfg = tiny()
    run = trained(cfg, digits)
    G, D = dview.models_of(dview.snapshot(run))
    frame = dview.compute_frame(G, D, cfg, dview.make_probe(digits, cfg, n=N), pusher=dview.Pusher(cfg, digits))
    assert frame.push is not None and "fresh Adam state" in frame.push_note


def test_d_only_step_moves_boundary_not_fakes(digits):
    cfg = tiny()
    run = trained(cfg, digits)
    probe = dview.make_probe(digits, cfg, n=N)
    pusher = dview.Pusher(cfg, digits)
    before = dview.frame_of_run(run, probe, pusher=pusher)
    run.train_step("d")
    after = dview.frame_of_run(run, probe, prev_axis=before.axis, pusher=pusher)
    assert torch.equal(after.fake_images, before.fake_images)  # G untouched: the same images
    # D changed: every point's logit relative to the boundary moves, and so does the vertical axis
    assert np.abs(after.real_xy[:, 0] - before.real_xy[:, 0]).max() > 1e-4
    assert np.abs(after.fake_xy[:, 0] - before.fake_xy[:, 0]).max() > 1e-4
    assert float(after.axis @ before.axis) < 1 - 1e-6


def test_vertical_axis_keeps_its_place_between_refreshes():
    g = torch.Generator().manual_seed(0)
    n, dim = 400, 12
    w = torch.zeros(dim)
    w[0] = 1.0

    def features(second_std: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = torch.randn(n, dim, generator=g) * 0.1
        feats[:, 0] += 10 * torch.randn(n, generator=g)  # the biggest spread is along w: must be ignored
        feats[:, 1] += 3 * torch.randn(n, generator=g)
        feats[:, 2] += second_std * torch.randn(n, generator=g)
        p = feats - feats.mean(0)
        p[:, 0] = 0
        _, vecs = torch.linalg.eigh(p.T @ p)  # exact principal directions orthogonal to w, ascending
        return feats, vecs[:, -1], vecs[:, -2]

    feats, top, second = features(2.9)  # a near tie between the top two directions
    first = dview.vertical_axis(feats, w)
    assert abs(float(first @ top)) > 0.999  # the leading direction orthogonal to w
    assert abs(float(first @ w)) < 1e-6
    assert float(dview.vertical_axis(feats, w, prev=second) @ second) > 0.999  # a near tie keeps the old axis
    assert float(dview.vertical_axis(feats, w, prev=-first) @ -first) > 0.999  # and its sign
    feats, top, second = features(1.0)  # no tie: the leading direction wins whatever came before
    assert abs(float(dview.vertical_axis(feats, w, prev=second) @ top)) > 0.999


def test_render_and_click_find_the_point(digits):
    cfg = tiny()
    run = trained(cfg, digits)
    probe = dview.make_probe(digits, cfg, n=N)
    frame = dview.render(dview.frame_of_run(run, probe))
    picture = Image.open(io.BytesIO(frame.picture))
    assert picture.format == "PNG" and picture.size == (760, 470)
    i = 5
    x, y = frame.pixels[N + i]  # the sixth generated point, where it was drawn
    hit = dview.nearest_point(frame, x, y)
    # another point may be drawn on the very same pixel; whichever is found lies there
    assert hit is not None
    kind, j = hit
    assert np.hypot(*(frame.pixels[(N if kind == "generated" else 0) + j] - (x, y))) < 1e-6
    image, text = dview.describe_point(frame, "generated", i)
    assert image.shape == (28, 28) and "logit" in text and "G's next update" in text
    assert dview.nearest_point(frame, -500, -500) is None


def test_hook_draws_frames_in_its_own_thread_and_exports_a_gif(digits, tmp_path):
    cfg = tiny()
    run = trained(cfg, digits, steps=2)
    hook = dview.DViewHook(budget=1.0)  # no rest between frames: a fast test
    try:
        hook.begin()
        for _ in range(3):
            run.train_step()
            hook.take(dview.snapshot(run))
            assert hook.wait_idle()
        assert not hook.errors
        frames = hook.frames()
        assert [f.iteration for f in frames] == [3, 4, 5]
        assert hook.latest() is frames[-1] and frames[-1].push is not None
        # consecutive frames share an aligned vertical axis
        assert float(frames[1].axis @ frames[0].axis) > 0
        gif = dview.save_frames_gif(frames, tmp_path / "dview.gif")
        with Image.open(gif) as im:
            assert im.n_frames == 3
        hook.begin()  # a new run forgets the old frames
        assert hook.frames() == [] and hook.latest() is None
    finally:
        hook.close()


def test_hook_keeps_only_the_latest_picture_while_resting(digits):
    cfg = tiny()
    run = trained(cfg, digits, steps=2)
    hook = dview.DViewHook(budget=0.001)  # after one frame it rests ~1000x its cost
    try:
        hook.take(dview.snapshot(run))
        assert hook.wait_idle()
        for _ in range(3):  # while it rests, newer pictures replace the waiting one; none is drawn yet
            run.train_step()
            hook.take(dview.snapshot(run))
        assert [f.iteration for f in hook.frames()] == [2]
        assert hook._pending is not None and hook._pending.iteration == 5
    finally:
        hook.close()


def test_checkpoint_view(digits, tmp_path):
    from dcgan.checkpoint import save_training

    cfg = tiny()
    run = trained(cfg, digits, steps=4)
    path = save_training(run, tmp_path / "run" / "step_00000004.safetensors")
    frame = dview.frame_of_checkpoint(tmp_path / "run", digits)
    live = dview.frame_of_run(run)
    assert frame.iteration == 4 and frame.source == path.name
    np.testing.assert_allclose(frame.real_xy[:, 0], live.real_xy[:, 0], atol=1e-5)
    assert frame.push is not None and "Adam state" in frame.push_note and frame.picture[:4] == b"\x89PNG"


def test_panel_shows_new_frames_clicks_and_checkpoints(digits, tmp_path, monkeypatch):
    import gradio as gr

    from dcgan.checkpoint import save_training
    from dcgan.trainer import Status
    from ui import dview_panel
    from ui.state import Studio

    studio = Studio(tmp_path / "checkpoints")
    hook = dview.DViewHook(budget=1.0)
    monkeypatch.setattr(studio, "dview_hook", lambda: hook)
    try:
        seen, plot, text, _, _ = dview_panel.refresh(studio, {})
        assert plot.value is None and "appears a few seconds" in text  # nothing trains yet
        monkeypatch.setattr(studio.trainer, "status", lambda: Status(state="running"))
        run = trained(tiny(), digits, steps=2)
        for _ in range(2):
            run.train_step()
            hook.take(dview.snapshot(run))
            assert hook.wait_idle()
        seen, plot, text, _, _ = dview_panel.refresh(studio, seen)
        assert plot.value is not None and "iteration 4" in text and "Adam state" in text
        again = dview_panel.refresh(studio, seen)
        assert all(isinstance(u, type(gr.skip())) for u in again[1:])  # nothing new: nothing sent

        frame = hook.latest()
        _, _, image, caption = dview_panel.click(studio, seen, *frame.pixels[0])
        assert image is not None and caption.startswith(("real", "generated"))
        assert dview_panel.click(studio, seen, -999, -999)[2:] == (None, "No dot there: click on a dot.")
        path, message = dview_panel.export_gif(studio)
        assert path and Path(path).stat().st_size > 0 and "2 frames" in message

        save_training(run, tmp_path / "checkpoints" / "demo" / "step_00000004.safetensors")
        seen2, plot, text, _, _ = dview_panel.show_checkpoint(studio, "demo", seen)
        assert seen2["source"] == "checkpoint" and "demo/step_00000004.safetensors" in text
        assert isinstance(dview_panel.refresh(studio, seen2)[1], type(gr.skip()))  # stays until 'live'
        text = dview_panel.show_checkpoint(studio, "../../etc", seen2)[2]
        assert "not a checkpoint" in text
        seen3, plot, *_ = dview_panel.follow_live(studio, seen2)
        assert seen3["source"] == "live" and plot.value is not None
    finally:
        hook.close()
