"""The fast training path computes the textbook DCGAN step, and its optimisations fall back cleanly."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from dcgan import train as train_module
from dcgan.__main__ import main
from dcgan.config import ConfigError, TrainConfig
from dcgan.data import to_float
from dcgan.tools.bench import count_flops, synthetic_data
from dcgan.train import GANTraining, resolve_precision
from tests.conftest import tiny_config


def record_inputs(run: GANTraining) -> list:
    """Record exactly what the step draws: the real batch (from its indices) and the noise z, which is
    the first draw of the run's generator after the indices (no augmentation in this config)."""
    drawn = []
    next_indices = run.next_indices

    def recording():
        idx = next_indices()
        drawn.append(("real", to_float(run.real[idx])))
        rng = torch.Generator(device=run.device)
        rng.set_state(run.rng.get_state())
        drawn.append(("z", torch.randn(run.cfg.batch_size, run.cfg.nz, device=run.device, generator=rng)))
        return idx

    run.next_indices = recording
    return drawn


def textbook_step(G, D, opt_g, opt_d, real, z):
    """pytorch/examples dcgan: fp32, default layout, BCE with logits, D then G on the same fakes."""
    bce = nn.BCEWithLogitsLoss()
    ones, zeros = torch.ones(real.shape[0]), torch.zeros(real.shape[0])
    opt_d.zero_grad()
    fake = G(z)
    loss_d = bce(D(real), ones) + bce(D(fake.detach()), zeros)
    loss_d.backward()
    opt_d.step()
    opt_g.zero_grad()
    loss_g = bce(D(fake), ones)
    loss_g.backward()
    opt_g.step()
    return loss_d.detach(), loss_g.detach()


def test_fast_step_matches_the_textbook_step_in_fp32(digits_data):
    cfg = tiny_config(batch_size=16, r1_gamma=0.0)  # the textbook step has no R1 penalty
    run = GANTraining(cfg, digits_data)
    G = copy.deepcopy(run.G).to(memory_format=torch.contiguous_format)
    D = copy.deepcopy(run.D).to(memory_format=torch.contiguous_format)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2), foreach=False)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), foreach=False)
    drawn = record_inputs(run)
    for _ in range(3):
        drawn.clear()
        stats = run.train_step()
        (kind_r, real), (kind_z, z) = drawn
        assert (kind_r, kind_z) == ("real", "z")
        ref_d, ref_g = textbook_step(G, D, opt_g, opt_d, real.contiguous(), z)
        torch.testing.assert_close(stats.loss_d, ref_d, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stats.loss_g, ref_g, rtol=1e-4, atol=1e-5)
    for fast, ref in ((run.G, G), (run.D, D)):
        for (name, p), q in zip(fast.named_parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=name)
    assert torch.allclose(run.G.net[1].running_mean, G.net[1].running_mean, atol=1e-5)


def test_bf16_falls_back_to_fp32_where_unsupported(digits_data, monkeypatch):
    monkeypatch.setattr(train_module, "bf16_supported", lambda device: False)
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("bf16", torch.device("cpu"))
    run = GANTraining(tiny_config(precision="auto"), digits_data)
    assert run.dtype == torch.float32
    assert torch.isfinite(run.train_step().as_tensor()).all()


@pytest.mark.skipif(not train_module.bf16_supported(torch.device("cpu")), reason="this CPU has no bf16")
def test_bf16_step_on_the_cpu_stays_close_to_fp32(digits_data):
    fp32 = GANTraining(tiny_config(precision="fp32"), digits_data).train_step()
    bf16 = GANTraining(tiny_config(precision="bf16"), digits_data).train_step()
    assert bf16.loss_d.dtype == torch.float32  # losses are computed in fp32 on the logits
    torch.testing.assert_close(bf16.loss_d, fp32.loss_d, rtol=0.05, atol=0.02)
    torch.testing.assert_close(bf16.loss_g, fp32.loss_g, rtol=0.05, atol=0.02)


def test_flop_count_of_the_classic_64px_step():
    """About 2.3 GFLOP per image for one iteration of the 64x64 DCGAN (counted, not assumed): the textbook
    step's 2.48 less D's weight gradients in the G update, which the step does not compute."""
    flops = count_flops(TrainConfig(image_size=64, channels=3, ngf=64, ndf=64))  # the classic widths
    assert 2.2e9 < flops["train_per_image"] < 2.35e9
    assert 1.5e8 < flops["generate_per_image"] < 2.5e8


def test_bench_command_writes_side_by_side_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--mode", "both", "--device", "cpu", "--image-size", "28", "--channels", "1",
                 "--ngf", "8", "--ndf", "8", "--batch", "16", "--steps", "2", "--warmup", "1", "--images", "64",
                 "--generate-batch", "8", "--generate-repeats", "2", "--trainer", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    row = result["train"][0]
    assert row["batch"] == 16 and row["plain"]["images_per_s"] > 0 and row["fast"]["images_per_s"] > 0
    assert row["fast_over_plain"] == pytest.approx(row["fast"]["images_per_s"] / row["plain"]["images_per_s"],
                                                   rel=0.02, abs=0.01)
    # the app's trainer beside the bare loop it runs (bare, Trainer, bare, Trainer, bare)
    assert row["trainer"]["images_per_s"] > 0 and row["bare"]["images_per_s"] > 0
    assert len(row["trainer"]["runs"]) == 2 and len(row["bare"]["blocks"]) == 3
    assert row["trainer_over_bare"] == pytest.approx(row["trainer"]["images_per_s"] / row["bare"]["images_per_s"],
                                                     rel=0.02, abs=0.01)
    assert row["fast"]["peak_rss_mib"] > 50
    assert result["flops"]["train_per_image"] > 0
    # the CPU's matmul rate, measured in this run in the precision training ran in, and training's share of it
    peak = result["matmul_peak"]
    assert peak["tflop_per_s"] > 0 and peak["precision"] == result["config"]["precision"]
    assert row["fast"]["fraction_of_matmul_peak"] == pytest.approx(row["fast"]["tflop_per_s"] / peak["tflop_per_s"],
                                                                   rel=0.05, abs=1e-4)
    assert result["best_fast"]["fraction_of_matmul_peak"] > 0
    assert [g["batch"] for g in result["generate"]] == [1, 8]
    for g in result["generate"]:  # fast generation picks its way by measurement, plain's way among the choices
        fast = g["fast"]
        assert "nchw+float32" in fast["chosen_from_ms"]
        assert f"{fast['memory_format']}+{fast['precision']}" in fast["chosen_from_ms"]
    assert result["device"]["type"] == "cpu" and result["device"]["peak_bf16_tflops"] is None


def test_bench_measures_the_matmul_peak_in_fp32_where_the_cpu_has_no_bf16(tmp_path, monkeypatch):
    """Never bf16 by assumption: a CPU without bf16 trains in fp32, so its peak is an fp32 matmul."""
    monkeypatch.setattr(train_module, "bf16_supported", lambda device: False)
    out = tmp_path / "bench.json"
    code = main(["bench", "--mode", "fast", "--device", "cpu", "--image-size", "28", "--channels", "1",
                 "--ngf", "8", "--ndf", "8", "--batch", "16", "--steps", "2", "--warmup", "1", "--images", "64",
                 "--generate-batch", "8", "--generate-repeats", "2", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["config"]["precision"] == "float32" and result["matmul_peak"]["precision"] == "float32"
    assert all(g["fast"]["precision"] == "float32" for g in result["generate"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_step_matches_the_eager_step():
    from dcgan.cuda_graph import CudaGraphStep
    from dcgan.train import R1_EVERY

    cfg = tiny_config(device="cuda", precision="fp32", batch_size=32, augment=True, ema_decay=0.999)
    data = synthetic_data(cfg, 100)  # 100 images: the steps cross reshuffles
    assert cfg.r1_gamma > 0  # iterations 0 and R1_EVERY carry lazy R1: eager steps between the replays
    graphed, eager = GANTraining(cfg, data), GANTraining(cfg, data)
    assert CudaGraphStep.supported(graphed)
    step = CudaGraphStep(graphed)
    torch.backends.cudnn.deterministic = True
    try:
        a = torch.stack([step().as_tensor() for _ in range(R1_EVERY + 4)]).cpu()
        b = torch.stack([eager.train_step().as_tensor() for _ in range(R1_EVERY + 4)]).cpu()
    finally:
        torch.backends.cudnn.deterministic = False
    assert step.graph is not None, step.failed  # replayed after the warm-up steps, not eager all along
    assert graphed.iteration == R1_EVERY + 4 and graphed.position == eager.position
    assert torch.equal(graphed.order, eager.order)  # the run's own data order, never a swapped buffer
    torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3)
    # the EMA decay changes every step: the graph must not freeze it at its capture-time value
    for p, q in zip(graphed.G_ema.parameters(), eager.G_ema.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=2e-3, atol=2e-4)
