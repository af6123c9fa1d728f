"""dcgan/models.py's one "state dict -> network" rule: what the app and the trainer copy G and D with."""

from __future__ import annotations

import pytest
import torch

from dcgan.models import Discriminator, Generator, build_models, sample
from tests.conftest import tiny_config


def test_from_state_copies_g_and_d_exactly_in_eval_mode():
    cfg = tiny_config(num_classes=10)
    G, D = build_models(cfg)
    G.train(), D.train()
    g_copy, d_copy = Generator.from_state(cfg, G.state_dict()), Discriminator.from_state(cfg, D.state_dict())
    assert not g_copy.training and not d_copy.training and G.training  # the original keeps its mode
    assert g_copy is not G and all(a.data_ptr() != b.data_ptr() for a, b in zip(g_copy.parameters(),
                                                                               G.parameters(), strict=True))
    assert torch.equal(sample(g_copy, 8, seed=3), sample(G, 8, seed=3))
    x, labels = torch.rand(4, 1, 28, 28) * 2 - 1, torch.arange(4)
    with torch.no_grad():
        assert torch.equal(d_copy(x, labels), D.eval()(x, labels))


def test_from_state_refuses_weights_of_another_architecture():
    G = Generator.from_config(tiny_config())
    with pytest.raises(RuntimeError, match="size mismatch"):
        Generator.from_state(tiny_config(ngf=32), G.state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        Discriminator.from_state(tiny_config(), {})
