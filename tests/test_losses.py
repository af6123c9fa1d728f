"""Losses, penalties, EMA and DiffAugment: hand-computed values and a toy GAN per loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dcgan import losses
from dcgan.augment import diff_augment
from dcgan.train import GANTraining
from tests.conftest import tiny_config

REAL = torch.tensor([2.0, -1.0])
FAKE = torch.tensor([0.5, -1.5])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


# D(real) = [2, -1], D(fake) = [0.5, -1.5], worked out by hand from each loss's formula.
HAND = {
    # -log sigmoid(r) = softplus(-r); -log(1 - sigmoid(f)) = softplus(f)
    "bce": ((softplus(-2) + softplus(1)) / 2 + (softplus(0.5) + softplus(-1.5)) / 2,
            (softplus(-0.5) + softplus(1.5)) / 2),
    # relu(1 - r): [0, 2] -> 1; relu(1 + f): [1.5, 0] -> 0.75; G: -mean(f) = 0.5
    "hinge": (1.0 + 0.75, 0.5),
    # 0.5 mean((r - 1)^2) = 0.5 * (1 + 4) / 2 = 1.25; 0.5 mean(f^2) = 0.5 * (0.25 + 2.25) / 2 = 0.625
    # G: 0.5 mean((f - 1)^2) = 0.5 * (0.25 + 6.25) / 2 = 1.625
    "lsgan": (1.25 + 0.625, 1.625),
    # mean(f) - mean(r) = -0.5 - 0.5; G: -mean(f) = 0.5
    "wgan-gp": (-1.0, 0.5),
}


@pytest.mark.parametrize("kind", sorted(HAND))
def test_loss_matches_hand_computed_value(kind):
    want_d, want_g = HAND[kind]
    assert losses.d_loss(kind, REAL, FAKE).item() == pytest.approx(want_d, abs=1e-6)
    assert losses.g_loss(kind, FAKE).item() == pytest.approx(want_g, abs=1e-6)


def test_losses_are_finite_on_bf16_logits_and_reject_unknown_kinds():
    big = torch.tensor([80.0, -80.0], dtype=torch.bfloat16)
    for kind in HAND:
        assert torch.isfinite(losses.d_loss(kind, big, -big))
        assert torch.isfinite(losses.g_loss(kind, big))
    with pytest.raises(ValueError, match="unknown loss"):
        losses.d_loss("minimax", REAL, FAKE)
    with pytest.raises(ValueError, match="unknown loss"):
        losses.g_loss("minimax", FAKE)


class LinearCritic(nn.Module):
    """D(x) = <w, x>: its input gradient is w everywhere."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) * self.w.flatten()).sum(1)


def test_gradient_penalty_on_a_linear_critic_is_norm_minus_one_squared():
    w = torch.tensor([[[[2.0, 1.0], [2.0, 0.0]]]])  # ||w|| = 3
    critic = LinearCritic(w)
    real, fake = torch.randn(5, 1, 2, 2), torch.randn(5, 1, 2, 2)
    gp = losses.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((3.0 - 1.0) ** 2, rel=1e-6)
    # the penalty trains the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    gp.backward()
    torch.testing.assert_close(critic.w.grad, 2 * (3.0 - 1.0) * w / 3.0)


def test_r1_penalty_on_a_linear_critic_is_squared_norm():
    w = torch.tensor([[[[2.0, 1.0], [2.0, 0.0]]]])
    critic = LinearCritic(w)
    real = torch.randn(4, 1, 2, 2, requires_grad=True)
    assert losses.r1_penalty(critic(real), real).item() == pytest.approx(9.0, rel=1e-6)


class ToyG(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.shift = nn.Parameter(torch.tensor(0.0))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z * self.scale + self.shift).view(-1, 1, 1, 1)


def toy_d() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(1, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1), nn.Flatten(0))


@pytest.mark.parametrize("kind", sorted(HAND))
def test_each_loss_trains_a_toy_gan_toward_the_real_mean(kind):
    """1-D data N(3, 0.5^2); G(z) = a z + b starts at mean 0. Every loss must move G's mean to 3."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    G, D = ToyG(), toy_d()
    # the critic of WGAN-GP gets 5 steps per G step and G half its learning rate (as in Gulrajani et al.)
    opt_g = torch.optim.Adam(G.parameters(), lr=1e-2 if kind == "wgan-gp" else 2e-2, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=2e-2, betas=(0.5, 0.9))
    d_steps = 5 if kind == "wgan-gp" else 1
    for _ in range(300):
        for _ in range(d_steps):
            real = (3.0 + 0.5 * torch.randn(64, generator=g)).view(-1, 1, 1, 1)
            fake = G(torch.randn(64, generator=g))
            loss_d = losses.d_loss(kind, D(real), D(fake.detach()))
            if kind == "wgan-gp":
                # weight 1, not 10: in 1-D a strong penalty can pin a critic that starts with the wrong
                # slope (flipping it passes through slope 0, which the penalty charges more than it gains)
                loss_d = loss_d + 1.0 * losses.gradient_penalty(D, real, fake, generator=g)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
        loss_g = losses.g_loss(kind, D(G(torch.randn(64, generator=g))))
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    with torch.no_grad():
        mean = G(torch.randn(4000, generator=g)).mean().item()
    assert abs(mean - 3.0) < 1.0, f"{kind}: generated mean {mean:.2f}, real mean 3.0 (started at 0)"


def test_ema_update_arithmetic(digits_data):
    run = GANTraining(tiny_config(ema_decay=0.9), digits_data)
    params = lambda m: [p.detach().clone() for p in m.parameters()]  # noqa: E731
    # at iteration 0 the warm-up decay is min(0.9, 1/10) = 0.1
    ema0 = params(run.G_ema)
    for a, b in zip(ema0, params(run.G), strict=True):
        torch.testing.assert_close(a, b)  # starts as a copy of G
    run.train_step()
    for e_old, g_new, e_new in zip(ema0, params(run.G), params(run.G_ema), strict=True):
        torch.testing.assert_close(e_new, 0.1 * e_old + 0.9 * g_new)
    # late in a run the configured decay applies
    run.iteration = 1000
    ema1 = params(run.G_ema)
    run.train_step()
    for e_old, g_new, e_new in zip(ema1, params(run.G), params(run.G_ema), strict=True):
        torch.testing.assert_close(e_new, 0.9 * e_old + 0.1 * g_new)
        assert not torch.equal(e_new, g_new)
    for ema_buf, buf in zip(run.G_ema.buffers(), run.G.buffers(), strict=True):
        torch.testing.assert_close(ema_buf, buf)  # BatchNorm statistics follow G
    assert run.sampler() is run.G_ema


@pytest.mark.parametrize("ops", [["translation"], ["cutout"], ["color"], ["translation", "cutout", "color"]])
@pytest.mark.parametrize("shape", [(6, 1, 28, 28), (4, 3, 32, 32)])
def test_diff_augment_keeps_shapes_is_reproducible_and_differentiable(ops, shape):
    x = torch.rand(*shape) * 2 - 1
    a = diff_augment(x, ops, torch.Generator().manual_seed(7))
    b = diff_augment(x, ops, torch.Generator().manual_seed(7))
    c = diff_augment(x, ops, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # same generator state: same transform
    assert not torch.equal(a, c)  # another state: another transform
    assert not torch.equal(a, x)
    leaf = x.clone().requires_grad_(True)
    diff_augment(leaf, ops, torch.Generator().manual_seed(7)).sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_diff_augment_translation_moves_content_and_cutout_blanks_half_the_side():
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 7:9, 7:9] = 1.0
    moved = diff_augment(x, ["translation"], torch.Generator().manual_seed(0))
    centres = (moved[:, 0] > 0.5).nonzero()[:, 1:].float().view(64, -1, 2).mean(1)
    assert (centres - 7.5).abs().max() <= 2.0  # at most 16 // 8 = 2 pixels
    assert (centres != 7.5).any()
    ones = torch.ones(32, 1, 16, 16)
    cut = diff_augment(ones, ["cutout"], torch.Generator().manual_seed(0))
    blanked = (cut == 0).flatten(1).sum(1)
    assert blanked.max() == 8 * 8 and blanked.min() > 0  # a square of half the side, clipped at borders
    with pytest.raises(ValueError, match="unknown DiffAugment op"):
        diff_augment(ones, ["rotate"])
