"""Quality metrics: Fréchet distance arithmetic, digit judge sanity, Inception plumbing offline,
the `eval` command, and the trainer keeping the best checkpoint by metric."""

from __future__ import annotations

import functools
import json
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dcgan import metrics
from dcgan.checkpoint import BEST_FILE, RunFolder, read
from dcgan.data import to_float
from dcgan.digit_classifier import get_digit_classifier
from dcgan.train import GANTraining
from dcgan.trainer import Trainer
from tests.conftest import tiny_config


def test_frechet_distance_hand_computed():
    mu_a, mu_b = np.array([0.0, 0.0]), np.array([3.0, 4.0])
    cov_a, cov_b = np.diag([1.0, 4.0]), np.diag([9.0, 1.0])
    assert metrics.frechet_distance((mu_a, cov_a), (mu_a, cov_a)) == pytest.approx(0.0, abs=1e-9)
    # diagonal covariances: ||mu_a - mu_b||^2 + sum (sigma_a - sigma_b)^2 = 25 + (1-3)^2 + (2-1)^2
    assert metrics.frechet_distance((mu_a, cov_a), (mu_b, cov_b)) == pytest.approx(30.0, rel=1e-9)


def test_class_coverage_of_one_class_and_of_all():
    one = metrics.class_coverage(torch.full((200,), 3))
    assert one["classes_covered"] == 1 and one["class_entropy_bits"] == 0.0
    assert one["class_histogram"][3] == 200
    every = metrics.class_coverage(torch.arange(1000) % 10)
    assert every["classes_covered"] == 10
    assert every["class_entropy_bits"] == pytest.approx(math.log2(10))


def test_digit_classifier_is_accurate_on_held_out_digits(digits_data):
    clf = get_digit_classifier(28)
    assert clf.accuracy >= 0.9
    accuracy = (clf.predict(digits_data.val) == digits_data.val_labels).float().mean().item()
    assert accuracy == pytest.approx(clf.accuracy, abs=1e-6)  # the held-out split it reports
    assert clf.features(digits_data.val[:7]).shape == (7, 128)
    rgb = to_float(digits_data.val[:7]).expand(-1, 3, -1, -1)
    torch.testing.assert_close(clf.predict(rgb), clf.predict(digits_data.val[:7]))  # colour input is greyed


def test_real_digits_score_far_better_than_noise(digits_data):
    real = metrics.digit_metrics(to_float(digits_data.train[:1000]))
    noise = metrics.digit_metrics(torch.rand(1000, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    assert real["classes_covered"] == 10
    assert real["digit_fd"] < 0.05 * noise["digit_fd"]
    # real training digits vs held-out digits: the reference printed beside a generator's number
    assert real["digit_fd"] == pytest.approx(real["digit_fd_real"], rel=0.5)


class ConstantGenerator(nn.Module):
    """Ignores z: every sample is the same real digit (total mode collapse)."""

    def __init__(self, image: torch.Tensor):
        super().__init__()
        self.nz, self.num_classes = 16, 0
        self.register_buffer("image", image)

    def forward(self, z: torch.Tensor, labels=None) -> torch.Tensor:
        return self.image.expand(z.shape[0], -1, -1, -1)


def test_constant_generator_covers_one_class(digits_data):
    G = ConstantGenerator(to_float(digits_data.val[:1]))
    out = metrics.evaluate(G, tiny_config(), n=500, inception="no")
    assert out["classes_covered"] == 1 and out["class_entropy_bits"] == 0.0
    assert out["digit_fd"] > 20 * out["digit_fd_real"]
    assert out["score"] == out["digit_fd"]


def test_inception_metrics_offline_raise_a_clear_message(monkeypatch, tmp_path, digits_data):
    """No network: simulate it; the download must fail with a message saying what to do."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(fe, "load_state_dict_from_url", offline)
    assert not metrics.inception_available()
    G = ConstantGenerator(to_float(digits_data.val[:1]))
    with pytest.raises(metrics.InceptionUnavailable) as info:
        metrics.evaluate(G, tiny_config(), n=50, inception="yes")
    message = str(info.value)
    assert "URLError" in message and str(tmp_path) in message and "TORCH_HOME" in message
    assert fe.URL_INCEPTION_V3 in message
    auto = metrics.evaluate(G, tiny_config(), n=50, inception="auto")  # skips, keeps the digit metrics
    assert "skipped" in auto["inception"] and "fid" not in auto and "digit_fd" in auto


class PixelExtractor(nn.Module):
    """Stands in for InceptionV3 (same call: uint8 RGB in, (features, logits) out)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(49, 10)
        torch.manual_seed(0)

    def forward(self, x: torch.Tensor):
        assert x.dtype == torch.uint8 and x.shape[1] == 3
        f = nn.functional.avg_pool2d(x.float().mean(1, keepdim=True) / 255, 4).flatten(1)
        return f, self.head(f) * 5


def test_fid_kid_is_plumbing_and_real_statistics_cache(monkeypatch, tmp_path, digits_data):
    monkeypatch.setattr(metrics, "inception_extractor", lambda device: PixelExtractor())
    monkeypatch.setattr(metrics, "CACHE_DIR", tmp_path)
    cfg = tiny_config()
    real = metrics.inception_metrics(to_float(digits_data.train[:300]), cfg)
    cache = list(tmp_path.glob("inception_digits_28px_1c.safetensors"))
    assert len(cache) == 1
    noise = metrics.inception_metrics(torch.rand(300, 1, 28, 28) * 2 - 1, cfg)
    assert real["fid"] < 0.1 * noise["fid"] and real["kid"] < noise["kid"]
    assert 1.0 <= real["is"] <= 10.0
    mtime = cache[0].stat().st_mtime_ns
    again = metrics.inception_metrics(to_float(digits_data.train[:300]), cfg)
    assert cache[0].stat().st_mtime_ns == mtime  # statistics read from the cache, not recomputed
    assert again["fid"] == pytest.approx(real["fid"])


def test_offer_best_keeps_the_best_score(tmp_path, digits_data):
    run = GANTraining(tiny_config(), digits_data)
    folder = RunFolder(tmp_path / "run")
    assert folder.offer_best(run, 5.0)
    run.iteration = 7
    assert not folder.offer_best(run, 6.0)  # worse: the file keeps iteration 0
    _, meta = read(tmp_path / "run" / BEST_FILE)
    assert meta["best_score"] == 5.0 and meta["iteration"] == 0
    assert folder.offer_best(run, 0.5, lower_is_better=True)
    assert not RunFolder(tmp_path / "run").offer_best(run, 0.1, lower_is_better=False)


def scores_and_keeps_g(run, scores: dict, folder: str) -> dict:
    """A metric_fn (module level: it runs in the training process): the given score of this iteration, and G's
    weights as scored, written to folder/g_<iteration>.safetensors."""
    save_file({k: v.detach().clone().contiguous() for k, v in run.G.state_dict().items()},
              str(Path(folder) / f"g_{run.iteration}.safetensors"))
    return {"score": scores[run.iteration]}


def iteration_as_score(run) -> dict:
    return {"score": float(run.iteration)}


def test_trainer_keeps_the_checkpoint_of_the_best_metric(tmp_path, digits_data):
    """Scores go 5, 1, 3, 2 at iterations 2, 4, 6, 8: best.safetensors must hold iteration 4's G."""
    trainer = Trainer(metric_fn=functools.partial(scores_and_keeps_g, scores={2: 5.0, 4: 1.0, 6: 3.0, 8: 2.0},
                                                  folder=str(tmp_path)), metric_key="score", lower_is_better=True)
    cfg = tiny_config(steps=8, metric_every=2, out_dir=str(tmp_path), run_name="best")
    trainer.start(cfg, data=digits_data)
    assert trainer.wait(120) == "finished"
    g_at = {i: load_file(str(tmp_path / f"g_{i}.safetensors")) for i in (4, 8)}
    tensors, meta = read(tmp_path / "best" / BEST_FILE)
    assert meta["best_score"] == 1.0 and meta["iteration"] == 4
    for key, value in g_at[4].items():
        torch.testing.assert_close(tensors[f"G.{key}"], value)
    assert not torch.equal(tensors["G.net.0.weight"], g_at[8]["net.0.weight"])
    history = read(RunFolder(tmp_path / "best").latest())[1]["history"]
    assert [h["iteration"] for h in history] == [2, 4, 6, 8]
    assert any("new best score = 1" in e for e in trainer.status().events)


def test_the_last_state_is_scored_when_off_the_metric_grid(tmp_path, digits_data):
    trainer = Trainer(metric_fn=iteration_as_score, metric_key="score")
    trainer.start(tiny_config(steps=7, metric_every=3, out_dir=str(tmp_path), run_name="s"), data=digits_data)
    assert trainer.wait(120) == "finished"
    assert [h["iteration"] for h in trainer.history()] == [3, 6, 7]


def test_metric_fn_records_digit_metrics_during_training(tmp_path, digits_data):
    trainer = Trainer(metric_fn=metrics.make_metric_fn(n=300), metric_key=metrics.METRIC_KEY)
    cfg = tiny_config(steps=4, metric_every=2, out_dir=str(tmp_path), run_name="m", ema_decay=0.99)
    trainer.start(cfg, data=digits_data)
    assert trainer.wait(120) == "finished"
    history = read(RunFolder(tmp_path / "m").latest())[1]["history"]
    assert [h["iteration"] for h in history] == [2, 4]
    assert trainer.history() == history  # what the UI plots
    assert set(history[0]) >= {"score", "digit_fd", "digit_fd_real", "classes_covered", "class_entropy_bits"}
    assert (tmp_path / "m" / BEST_FILE).exists()
    assert any(e.startswith("metrics at iteration 2: digit_fd") for e in trainer.status().events)


def test_eval_command_prints_and_writes_json(trained_checkpoint, tmp_path, capsys):
    from dcgan.__main__ import main

    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(trained_checkpoint), "--n", "500", "--out", str(out),
                 "--inception", "no"]) == 0
    printed = json.loads(capsys.readouterr().out)
    written = json.loads(out.read_text())
    assert printed == written
    assert written["iteration"] == 300 and written["n_samples"] == 500
    assert 1 <= written["classes_covered"] <= 10 and written["digit_fd"] > written["digit_fd_real"] > 0


def test_legibility_of_real_digits_is_high_and_of_noise_near_zero(digits_data):
    real = metrics.digit_metrics(to_float(digits_data.val))
    assert real["confident_share"] >= 0.85 and real["confident_share"] == real["confident_share_real"]
    assert 0.05 <= real["min_class_share"] == real["min_class_share_real"] <= 0.1
    g = torch.Generator().manual_seed(0)
    for junk in (torch.rand(1000, 1, 28, 28, generator=g) * 2 - 1,  # pixel noise
                 torch.full((200, 1, 28, 28), -0.6)):  # a blank grey page
        out = metrics.digit_metrics(junk)
        assert out["confident_share"] <= 0.02
        assert out["confident_share_real"] >= 0.85  # printed beside it
    one = metrics.legibility(torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9]]))
    assert one["confident_share"] == pytest.approx(2 / 3) and one["min_class_share"] == pytest.approx(1 / 3)


def test_presets_default_is_the_dataclass_and_classic_is_the_paper():
    from dcgan.config import PRESETS, ConfigError, TrainConfig

    default = TrainConfig()
    assert {k: getattr(default, k) for k in PRESETS["default"]} == PRESETS["default"]
    classic = TrainConfig.from_preset("classic", dataset="digits", ngf=32)
    assert (classic.ngf, classic.ndf, classic.loss, classic.ema_decay, classic.lr_d) == (32, 64, "bce", 0.0, 2e-4)
    assert not classic.spectral_norm and classic.diffaug == "" and classic.batch_size == 64
    with pytest.raises(ConfigError, match="preset"):
        TrainConfig.from_preset("fancy")


def test_sweep_trains_a_packed_config_and_scores_it(tmp_path):
    from dcgan.tools import sweep

    tiny = dict(ngf=8, ndf=8, nz=16, batch_size=16, precision="fp32", pack=2)
    record = sweep.train_and_score("tiny", 0, 3, n_eval=200, out_dir=tmp_path, changes=tiny)
    assert record["iterations"] == 3 and record["pack"] == 2 and record["dataset"] == "digits"
    assert 0.0 <= record["metrics"]["confident_share"] <= 1.0 and "loadavg_before" in record
    assert (tmp_path / "tiny_s0_3.safetensors").is_file()
    cfg, pack = sweep.split_config("tiny", tiny)
    run = sweep.build_run(cfg, pack)
    assert run.D(torch.zeros(16, 1, 28, 28)).shape == (8,)  # one logit per pack of two images
    with pytest.raises(ValueError, match="multiple of pack"):
        sweep.split_config("tiny", {**tiny, "batch_size": 15})


def test_the_sweep_is_a_dcgan_command_and_a_module(capsys):
    """`dcgan sweep ...` and `python -m dcgan.tools.sweep ...` are one program."""
    from dcgan.__main__ import main
    from dcgan.tools import sweep

    assert main(["sweep", "list"]) == 0
    listed = capsys.readouterr().out
    assert sweep.main(["list"]) == 0
    assert capsys.readouterr().out == listed and listed.split()[0] == "classic"
    threads = torch.get_num_threads()
    with pytest.raises(SystemExit):
        main(["sweep", "speed", "--configs", "no-such-recipe", "--out", "unused.json"])
    assert torch.get_num_threads() == threads  # refused before it set anything
    assert "unknown configuration 'no-such-recipe'" in capsys.readouterr().err
