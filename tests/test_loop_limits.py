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


def test_lazy_r1_weights_the_penalty_by_the_interval_and_logs_only_the_gan_loss(digits_data, monkeypatch):
    """At iteration 0 (an R1 step) gamma with R1_EVERY = k must update D exactly as gamma * k every step;
    the logged loss_D is the GAN loss alone (the penalty would show as a spike every k steps)."""
    import torch

    def first_step(gamma: float, every: int):
        monkeypatch.setattr(train, "R1_EVERY", every)
        logged: list[float] = []
        plain = losses.d_loss

        def spy(kind, real, fake):
            out = plain(kind, real, fake)
            logged.append(float(out.detach()))
            return out

        monkeypatch.setattr(losses, "d_loss", spy)
        run = GANTraining(tiny_config(r1_gamma=gamma), digits_data)
        stats = run.train_step()
        monkeypatch.setattr(losses, "d_loss", plain)
        assert float(stats.loss_d) == pytest.approx(logged[0], rel=1e-6)  # no penalty in the logged loss
        return [p.detach().clone() for p in run.D.parameters()]

    lazy, every_step, unscaled = first_step(2.0, 4), first_step(8.0, 1), first_step(2.0, 1)
    for a, b in zip(lazy, every_step, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert any(not torch.allclose(a, c, rtol=1e-5, atol=1e-7) for a, c in zip(lazy, unscaled, strict=True))
