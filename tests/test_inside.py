"""Inside G (dcgan/inside.py): switching units off and on is GAN Dissection's rule done right, the ranking finds
a unit that cannot matter, and the digit histogram of real digits through the same code is the real one."""

from __future__ import annotations

import torch

from dcgan import inside
from dcgan.data import to_float
from dcgan.models import Generator


def small_g(seed: int = 0, size: int = 28) -> Generator:
    """A random G whose BatchNorm running statistics are not the identity, in eval mode."""
    torch.manual_seed(seed)
    G = Generator(nz=16, ngf=8, channels=1, image_size=size)
    for m in G.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return G.eval()


def test_switching_off_every_unit_of_a_layer_is_a_constant_input_to_the_next():
    G = small_g()
    z = torch.randn(3, G.nz, generator=torch.Generator().manual_seed(1))
    for layer in (1, 2):
        ranking = inside.rank_units(G, layer, n=64)
        units = inside.layer_shapes(G)[layer - 1][0]
        side = inside.layer_shapes(G)[layer - 1][1]
        for value, r in (("mean", ranking.mean), ("zero", torch.zeros(units))):
            off = [inside.Switch(layer, u, "off", value) for u in range(units)]
            got = inside.render(G, z, None, off, {layer: ranking})[-1]
            constant = r.view(1, units, 1, 1).expand(3, units, side, side).contiguous()
            with torch.no_grad():
                by_hand = G.net[3 * layer:](constant)
            torch.testing.assert_close(got, by_hand)
            assert torch.allclose(got, got[:1].expand_as(got))  # every latent: the same image
            assert not torch.allclose(got, inside.features(G, z)[-1], atol=1e-3)  # it did change the image


def test_one_units_switch_equals_the_rule_done_by_hand():
    G = small_g(seed=2)
    z = torch.randn(2, G.nz, generator=torch.Generator().manual_seed(3))
    layer, unit = 1, 5
    ranking = inside.rank_units(G, layer, n=64)
    with torch.no_grad():
        h = G.net[:3 * layer](z.view(2, -1, 1, 1))
        side = h.shape[-1]
        # off: a = 1 everywhere, r = the unit's mean activation
        off = h.clone()
        off[:, unit] = h[:, unit] * 0 + ranking.mean[unit]
        # on in the top half: a = 1 on the top rows, r = the unit's strongest activation seen
        a = torch.zeros(side, side)
        a[:(side + 1) // 2] = 1
        on = h.clone()
        on[:, unit] = h[:, unit] * (1 - a) + ranking.high[unit] * a
        expected_off, expected_on = G.net[3 * layer:](off), G.net[3 * layer:](on)
    got_off = inside.render(G, z, None, [inside.Switch(layer, unit)], {layer: ranking})
    got_on = inside.render(G, z, None, [inside.Switch(layer, unit, "on", region="top half")], {layer: ranking})
    torch.testing.assert_close(got_off[-1], expected_off)
    torch.testing.assert_close(got_on[-1], expected_on)
    torch.testing.assert_close(got_on[layer - 1][:, unit], on[:, unit])  # the layer's maps show the switch too
    assert float(ranking.high[unit]) >= float(ranking.mean[unit]) >= 0
    assert not torch.allclose(got_on[-1], got_off[-1])
    # G itself is untouched: still eval mode, same image as before
    assert not G.training
    torch.testing.assert_close(inside.features(G, z)[-1], G(z))


def test_a_unit_that_feeds_nothing_ranks_last_with_no_effect():
    G = small_g(seed=4)
    with torch.no_grad():
        G.net[3].weight[6] = 0  # layer 1 unit 6 no longer reaches layer 2 (ConvTranspose weight: [in, out, k, k])
    ranking = inside.rank_units(G, 1, n=128)
    assert float(ranking.effect[6]) == 0.0 and float(ranking.score[6]) == 0.0
    assert ranking.order[0] != 6 and float(ranking.score[ranking.order[0]]) > 0
    assert ranking.strongest.shape == (8 * 2, inside.STRONGEST)  # 16 units of layer 1, 9 samples each


def test_real_digits_through_the_histogram_code_give_the_real_histogram(digits_data):
    """The generated-digit histogram's code (classifier reading -> shares), fed real held-out digits, gives
    their label histogram, up to the classifier's own mistakes on them."""
    real = to_float(digits_data.val)
    probs = inside.digit_probabilities(real)
    shares = torch.tensor(inside.digit_shares(probs.argmax(dim=1)))
    truth = torch.tensor(inside.real_digit_shares(digits_data.val_labels))
    wrong = float((probs.argmax(dim=1) != digits_data.val_labels).double().mean())
    assert truth.sum().item() == torch.tensor(1.0, dtype=torch.float64).item()
    assert (shares - truth).abs().sum() <= 2 * wrong + 1e-9  # each mistake moves two bars by 1/n
    assert (shares - truth).abs().max() < 0.03
    # stacked digits: a mode id 100r + 10g + b counts each of its three digits
    assert inside.real_digit_shares(torch.tensor([123, 999]), stacked=True) == [0, 1 / 6, 1 / 6, 1 / 6, 0, 0, 0, 0,
                                                                               0, 0.5]


def test_the_snapshot_history_keeps_a_thinned_run_and_rebuilds_its_generators():
    from dcgan import reports as rp
    from dcgan.config import TrainConfig

    cfg = TrainConfig(dataset="digits", image_size=28, channels=1, nz=16, ngf=8)
    states = {it: {k: v.clone() for k, v in small_g(seed=it).state_dict().items()} for it in range(0, 60, 10)}
    grid = torch.zeros(2, 2, 3, dtype=torch.uint8).numpy()
    history = inside.History()
    first = rp.Pictures("run-a", 0, 0.0, grid, states[0])
    history(rp.Started("run-a", 0, 0.0, cfg, "cpu", "fp32", "/runs/a", (), first))
    for it in range(10, 60, 10):
        history(rp.Pictures("run-a", it, 0.0, grid, states[it]))
    history(rp.Pictures("other-run", 70, 0.0, grid, states[0]))  # a run it never saw start: ignored
    assert history.iterations("/runs/a") == [0, 10, 20, 30, 40, 50]
    G = history.generator("/runs/a", 30)
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(inside.features(G, z)[-1], inside.features(small_g(seed=30), z)[-1])
    assert history.generator("/runs/a", 35) is None

    inside.HISTORY_MAX, kept = 4, inside.HISTORY_MAX
    try:
        for it in (60, 70):
            history(rp.Pictures("run-a", it, 0.0, grid, states[0]))
            kept_now = history.iterations("/runs/a")
            assert kept_now[0] == 0 and kept_now[-1] == it and len(kept_now) <= 4  # first and newest stay
    finally:
        inside.HISTORY_MAX = kept


def test_dissect_writes_the_picture_and_refuses_a_layer_g_lacks(tmp_path, digits_data, capsys):
    from PIL import Image

    from dcgan.__main__ import main
    from dcgan.checkpoint import save_training
    from dcgan.train import GANTraining
    from tests.conftest import tiny_config

    path = tmp_path / "run" / "step.safetensors"
    save_training(GANTraining(tiny_config(ngf=8, ndf=8, nz=16), digits_data), path)
    assert main(["dissect", str(path), "--layer", "3"]) == 2
    assert "--layer must be in 1..2" in capsys.readouterr().err
    out = tmp_path / "inside.png"
    assert main(["dissect", str(path), "--layer", "1", "--units", "2", "--out", str(out)]) == 0
    assert "layer 1 of 2; highest-ranked unit" in capsys.readouterr().out
    width, height = Image.open(out).size
    assert width > 12 * 96 and height > 220 + 2 * 96  # the layers, then two unit rows of 12 pictures
