"""Latent-space tools on a generator trained on the bundled digits (dcgan/latent.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dcgan import latent
from dcgan.checkpoint import load_generator
from dcgan.data import to_float
from dcgan.models import Generator, sample


@pytest.fixture(scope="module")
def trained_g(trained_checkpoint):
    G, cfg, _ = load_generator(trained_checkpoint)
    return G


def test_interpolation_end_frames_equal_picked_samples(trained_g):
    grid_z = latent.sample_latents(trained_g.nz, 16, seed=5)
    grid = sample(trained_g, z=grid_z)
    for mode in ("slerp", "lerp"):
        path = latent.interpolate(grid_z[3], grid_z[11], steps=9, mode=mode)
        assert torch.equal(path[0], grid_z[3]) and torch.equal(path[-1], grid_z[11])
        frames = sample(trained_g, z=path)
        torch.testing.assert_close(frames[0], grid[3], atol=1e-5, rtol=0)
        torch.testing.assert_close(frames[-1], grid[11], atol=1e-5, rtol=0)
        middle = frames[4]
        assert (middle - grid[3]).abs().mean() > 0.02 and (middle - grid[11]).abs().mean() > 0.02
    # slerp keeps the norm typical of the prior; lerp's midpoint shrinks towards 0
    mid_slerp = latent.interpolate(grid_z[3], grid_z[11], 9, "slerp")[4].norm()
    mid_lerp = latent.interpolate(grid_z[3], grid_z[11], 9, "lerp")[4].norm()
    assert mid_lerp < mid_slerp
    assert abs(mid_slerp - grid_z[3].norm()) < 0.15 * grid_z[3].norm()


def test_slider_at_zero_is_the_original_and_moves_smoothly(trained_g):
    dirs = latent.principal_directions(trained_g, k=4, n_samples=512)
    assert dirs.vectors.shape == (4, trained_g.nz)
    torch.testing.assert_close(dirs.vectors.norm(dim=1), torch.ones(4))
    assert dirs.explained == sorted(dirs.explained, reverse=True) and sum(dirs.explained) < 1
    z = latent.sample_latents(trained_g.nz, 1, seed=2)
    original = sample(trained_g, z=z)
    assert torch.equal(latent.move(z, dirs, [0.0, 0.0, 0.0, 0.0]), z)
    assert torch.equal(sample(trained_g, z=latent.move(z, dirs, [0.0] * 4)), original)

    others = sample(trained_g, z=latent.sample_latents(trained_g.nz, 32, seed=9))
    typical = float(latent.pairwise_distances(others).mean())  # distance between unrelated samples
    amounts = np.linspace(0, 2.5, 11)
    images = [sample(trained_g, z=latent.move(z, dirs, [a, 0, 0, 0])) for a in amounts]
    from_start = [float((im - original).pow(2).mean().sqrt()) for im in images]
    steps = [float((b - a).pow(2).mean().sqrt()) for a, b in zip(images, images[1:], strict=False)]
    assert from_start[-1] > 0.1 * typical  # the slider does change the picture
    assert max(steps) < 0.35 * typical  # ... in small steps, no jumps
    assert all(b >= a - 1e-3 for a, b in zip(from_start, from_start[1:], strict=False))  # monotone drift

    raw = latent.raw_directions(trained_g.nz, k=3, first=5)
    moved = latent.move(z, raw, [1.0, 0.0, -2.0])
    torch.testing.assert_close(moved - z, torch.tensor([[0.0] * 5 + [1.0, 0.0, -2.0] + [0.0] * (trained_g.nz - 8)]))


def test_arithmetic_uses_averaged_latents():
    z = latent.sample_latents(8, 10, seed=1)
    res = latent.vector_arithmetic(z, [0, 1, 2], [3, 4], [5])
    torch.testing.assert_close(res.terms[0], (z[0] + z[1] + z[2]) / 3)
    torch.testing.assert_close(res.terms[1], (z[3] + z[4]) / 2)
    torch.testing.assert_close(res.terms[2], z[5])
    torch.testing.assert_close(res.result, (z[0] + z[1] + z[2]) / 3 - (z[3] + z[4]) / 2 + z[5])
    assert latent.parse_indices("0, 1 2", 10) == [0, 1, 2]
    for bad in ("", "3, x", "10", "-1"):
        with pytest.raises(ValueError):
            latent.parse_indices(bad, 10)


def test_inverting_a_generated_image_reaches_small_error(trained_g):
    z_true = latent.sample_latents(trained_g.nz, 1, seed=77)
    target = sample(trained_g, z=z_true)[0]
    inv = latent.invert(trained_g, target, restarts=4, steps=150, seed=3)
    unrelated = sample(trained_g, z=latent.sample_latents(trained_g.nz, 16, seed=4))
    baseline = float((unrelated - target).pow(2).flatten(1).mean(1).min())  # best of 16 random draws
    assert inv.mse < 0.02, inv.mse
    assert inv.mse < 0.25 * baseline
    assert inv.losses[-1] < inv.losses[0]
    torch.testing.assert_close(sample(trained_g, z=inv.z[None])[0], inv.image)
    assert not any(p.grad is not None for p in trained_g.parameters())  # G itself untouched


def test_drawing_polarity_follows_the_model(trained_g):
    drawing = np.full((200, 200), 255, np.uint8)  # black stroke on white paper, as drawn in a browser
    drawing[40:160, 90:110] = 0
    target = latent.target_from_array(drawing, trained_g)
    assert target.shape == (1, 28, 28)
    assert latent.background_level(target[None]) < 0  # background turned dark like MNIST
    assert target[0, 14, 14] > 0.5  # stroke turned light


def test_diversity_meter_separates_collapse_from_trained(trained_g, digits_data):
    collapsed = copy.deepcopy(trained_g)
    with torch.no_grad():
        collapsed.net[-2].weight.zero_()  # the last conv outputs 0 for every z: one constant image
    healthy = latent.diversity(trained_g, digits_data.val, n=128)
    broken = latent.diversity(collapsed, digits_data.val, n=128)
    assert broken.generated < 1e-6 and broken.ratio < 0.05
    assert healthy.ratio > 0.3, healthy.ratio  # 0.55 for the fixture model; a collapsed one is ~0
    assert healthy.real == pytest.approx(broken.real)  # same real yardstick
    assert latent.class_histogram(torch.tensor([0, 3, 3, 9])) == [1, 0, 0, 2, 0, 0, 0, 0, 0, 1]


def test_nearest_training_images_include_itself(digits_data):
    train = digits_data.train
    idx = torch.tensor([0, 17, 1234, train.shape[0] - 1])
    d, i = latent.nearest_training(to_float(train[idx]), train, k=3, chunk=1000)
    assert torch.equal(i[:, 0], idx)
    assert torch.all(d[:, 0] == 0) and torch.all(d[:, 1] > 0)
    assert torch.all(d[:, :-1] <= d[:, 1:])
    heldout = latent.heldout_nn_distances(digits_data, n=50)
    assert heldout.shape == (50,) and torch.all(heldout[:-1] <= heldout[1:])
    assert 0.05 < float(heldout.median()) < 1.0


def test_class_control_soft_input_matches_hard_labels():
    torch.manual_seed(0)
    G = Generator(nz=16, ngf=8, channels=1, image_size=28, num_classes=10).eval()
    z = latent.sample_latents(16, 2, seed=0)
    hard = G(z, torch.tensor([3, 7]))
    soft = sample(G, z=z, labels=latent.class_inputs(G, torch.tensor([3, 7]), 2))
    torch.testing.assert_close(soft, hard)
    halfway = sample(G, z=z[:1], labels=0.5 * latent.class_inputs(G, torch.tensor([3, 7]), 2).sum(0, keepdim=True))
    assert not torch.allclose(halfway[0], hard[0]) and not torch.allclose(halfway[0], hard[1])
    inv = latent.invert(G, hard[1].detach(), restarts=1, steps=5)
    assert inv.label in range(10)


def test_top_singular_matches_the_full_svd_and_leaves_the_global_generator_alone():
    """The sliders' PCA by randomised subspace iteration: the same components as the full SVD, the same every time,
    and the process's global random stream untouched (the app computes directions on a background thread)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(300, 12, generator=gen) * torch.linspace(5, 0.5, 12)  # decaying spectrum, as G's features
    x = x @ torch.randn(12, 900, generator=gen) + 0.01 * torch.randn(300, 900, generator=gen)
    before = torch.get_rng_state()
    u, s = latent.top_singular(x, 4)
    assert torch.equal(torch.get_rng_state(), before)
    full_u, full_s, _ = torch.linalg.svd(x.double(), full_matrices=False)
    torch.testing.assert_close(s.double(), full_s[:4], rtol=1e-4, atol=0)
    torch.testing.assert_close((u.double() * full_u[:, :4]).sum(0).abs(), torch.ones(4, dtype=torch.double),
                               rtol=0, atol=1e-4)
    again_u, again_s = latent.top_singular(x, 4)
    assert torch.equal(again_u, u) and torch.equal(again_s, s)

