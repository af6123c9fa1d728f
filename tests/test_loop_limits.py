"""The loop's time limit (cfg.minutes) and lazy R1: what `python -m dcgan train --minutes 2.5` relies on."""

from __future__ import annotations

import pytest

from dcgan import losses, train
from dcgan.checkpoint import RunFolder, list_run_checkpoints, read
from dcgan.train import GANTraining, Hook, fit
from tests.conftest import tiny_config


class Events(Hook):
    def __init__(self):
        self.events: list[str] = []

    def on_event(self, run, message, error=False):
        self.events.append(message)


def test_time_limit_ends_the_run_as_its_last_step_would(tmp_path, digits_data):
    cfg = tiny_config(steps=1_000_000, minutes=0.01, out_dir=str(tmp_path), run_name="timed")
    run = GANTraining(cfg, digits_data)
    hook = Events()
    state = fit(run, [hook], folder=RunFolder.open(cfg))
    assert state == "finished"
    assert 0 < run.iteration < cfg.steps
    assert any("time limit of 0.01 min reached at iteration" in e for e in hook.events)
    saved = list_run_checkpoints(tmp_path / "timed")
    assert saved, "the time-limited run saved no checkpoint"
    _, meta = read(saved[-1])
    assert int(meta["iteration"]) == run.iteration  # the checkpoint is the state the run ended in


def test_no_time_limit_runs_all_steps(digits_data):
    run = GANTraining(tiny_config(steps=7), digits_data)
    assert fit(run) == "finished" and run.iteration == 7


def test_r1_is_applied_every_r1_every_steps_with_the_weight_scaled(digits_data, monkeypatch):
    calls: list[int] = []
    real_penalty = losses.r1_penalty

    def counting(logits, real):
        calls.append(run.iteration)
        return real_penalty(logits, real)

    monkeypatch.setattr(losses, "r1_penalty", counting)
    run = GANTraining(tiny_config(r1_gamma=1.0, steps=3 * train.R1_EVERY), digits_data)
    for _ in range(3 * train.R1_EVERY):
        run.train_step()
    assert calls == [0, train.R1_EVERY, 2 * train.R1_EVERY]
    calls.clear()
    run = GANTraining(tiny_config(steps=10, r1_gamma=0.0), digits_data)  # gamma 0: never
    for _ in range(2 * train.R1_EVERY):
        run.train_step()
    assert calls == []


@pytest.mark.parametrize("every", [1, 4])
def test_lazy_r1_gradient_is_the_full_penalty_times_the_interval(digits_data, monkeypatch, every):
    """The step that carries R1 adds gamma/2 * R1_EVERY * penalty to D's loss."""
    import torch

    monkeypatch.setattr(train, "R1_EVERY", every)
    seen: list[float] = []
    real_d_loss = losses.d_loss

    def spy(kind, real, fake):
        out = real_d_loss(kind, real, fake)
        seen.append(float(out.detach()))
        return out

    monkeypatch.setattr(losses, "d_loss", spy)
    penalties: list[float] = []
    real_penalty = losses.r1_penalty

    def keep(logits, real):
        p = real_penalty(logits, real)
        penalties.append(float(p))
        return p

    monkeypatch.setattr(losses, "r1_penalty", keep)
    run = GANTraining(tiny_config(r1_gamma=2.0), digits_data)
    stats = run.train_step()
    assert len(penalties) == 1
    expected = seen[0] + 0.5 * 2.0 * every * penalties[0]
    assert float(stats.loss_d) == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(stats.loss_d)
