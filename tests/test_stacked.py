"""Stacked MNIST from the bundled digits: the data set and the mode metrics of the literature
(modes covered of 1000, KL to uniform, all-three-legible share), checked on generators whose
answer is known: real images replayed, and one triplet forever."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dcgan import metrics
from dcgan.config import TrainConfig
from dcgan.data import DatasetError, load_dataset, stack_digits, to_float

N_PROTOCOL = 26_000  # samples, as in VEEGAN's and PacGAN's tables


@pytest.fixture(scope="module")
def stacked():
    return load_dataset(TrainConfig(dataset="stacked-digits", channels=3, image_size=28, device="cpu"))


def test_each_channel_is_a_digit_and_the_mode_id_names_them():
    labels = torch.arange(50) % 10
    images = (labels * 20).to(torch.uint8).view(50, 1, 1, 1).expand(50, 1, 28, 28).contiguous()
    out, modes = stack_digits(images, labels, 400, seed=3)
    assert out.shape == (400, 3, 28, 28) and out.dtype == torch.uint8
    read = out[:, :, 0, 0].long() // 20  # each channel's digit, from its pixel value
    torch.testing.assert_close(modes, read[:, 0] * 100 + read[:, 1] * 10 + read[:, 2])
    assert len(set(modes.tolist())) > 300  # independent channels: many distinct triplets
    again, _ = stack_digits(images, labels, 400, seed=3)
    other, _ = stack_digits(images, labels, 400, seed=4)
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_the_data_set_is_deterministic_with_all_1000_modes(stacked):
    assert stacked.train.shape[1:] == (3, 28, 28) and stacked.num_classes == 1000
    assert torch.bincount(stacked.train_labels, minlength=1000).min() > 0
    again = load_dataset(TrainConfig(dataset="stacked-digits", channels=3, image_size=28, device="cpu"))
    assert torch.equal(again.train[:500], stacked.train[:500])


def test_a_grey_stacked_set_is_refused_with_a_clear_message():
    with pytest.raises(DatasetError, match="--channels 3"):
        load_dataset(TrainConfig(dataset="stacked-digits", channels=1, image_size=28))


def test_triplet_statistics_by_hand():
    probs = torch.zeros(1000, 3, 10)
    probs[:, :, 0] = 1.0  # every sample reads 000
    one = metrics.triplet_statistics(probs)
    assert one["stacked_modes"] == 1 and one["stacked_kl"] == pytest.approx(math.log(1000))
    assert one["stacked_legible"] == 1.0
    ids = torch.arange(1000) % 500  # 500 modes, evenly: KL = log(1000 / 500)
    digits = torch.stack([ids // 100, ids // 10 % 10, ids % 10], dim=1)
    even = torch.nn.functional.one_hot(digits, 10).float() * 0.85 + 0.015  # top prob 0.865: not legible
    half = metrics.triplet_statistics(even)
    assert half["stacked_modes"] == 500 and half["stacked_kl"] == pytest.approx(math.log(2))
    assert half["stacked_legible"] == 0.0


class Replay(nn.Module):
    """A 'generator' that returns real stacked images (the index comes from z): a perfect model."""

    def __init__(self, images: torch.Tensor):
        super().__init__()
        self.nz, self.num_classes = 8, 0
        self.register_buffer("images", to_float(images))

    def forward(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        idx = (z[:, :3].abs() * 1e4).long().sum(dim=1) % self.images.shape[0]
        return self.images[idx]


def test_real_stacked_images_score_about_1000_modes_and_near_zero_kl(stacked):
    cfg = TrainConfig(dataset="stacked-digits", channels=3, image_size=28, nz=8)
    out = metrics.evaluate(Replay(stacked.train), cfg, n=N_PROTOCOL, inception="no")
    assert out["stacked_modes"] >= 990 and out["stacked_modes_real"] >= 990
    assert out["stacked_kl"] < 0.1 and out["stacked_kl_real"] < 0.1
    assert out["stacked_legible"] > 0.6  # about 0.92^3: each channel is a real, mostly clear digit
    assert out["stacked_legible"] == pytest.approx(out["stacked_legible_real"], abs=0.08)
    assert out["score"] == out["digit_fd"] and out["digit_fd"] < 2 * out["digit_fd_real"]


def test_one_triplet_forever_scores_one_mode(stacked):
    cfg = TrainConfig(dataset="stacked-digits", channels=3, image_size=28, nz=8)
    out = metrics.evaluate(Replay(stacked.val[:1]), cfg, n=2000, inception="no")
    assert out["stacked_modes"] == 1
    assert out["stacked_kl"] == pytest.approx(math.log(1000))
    assert out["stacked_modes_real"] > 800  # real images of the same number, for scale


def test_noise_is_never_three_legible_digits():
    noise = torch.rand(2000, 3, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = metrics.stacked_metrics(noise)
    assert out["stacked_legible"] < 0.01 and out["stacked_legible_real"] > 0.6
