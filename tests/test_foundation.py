"""Foundation: config, networks, data, the training step, checkpoints, the background trainer."""

from __future__ import annotations

import functools
import json
import socket
import threading
import time
from pathlib import Path

import pytest
import torch

from dcgan import reports
from dcgan.checkpoint import CheckpointError, RunFolder, load_generator, read, save_training
from dcgan.config import ConfigError, TrainConfig
from dcgan.data import DatasetError, load_dataset, load_digits_raw, to_float
from dcgan.models import Discriminator, Generator, build_models, count_parameters, eval_mode, sample, seeded_latents
from dcgan.train import Control, GANTraining, fit, load_training
from dcgan.trainer import FAILED, FINISHED, PAUSED, RUNNING, Trainer, TrainerBusy
from tests import child_faults
from tests.conftest import tiny_config

# ---- config ---------------------------------------------------------------------------------


def test_config_round_trips_through_json():
    cfg = TrainConfig(image_size=64, channels=3, loss="hinge", ema_decay=0.999, diffaug="translation,color")
    again = TrainConfig.from_json(cfg.to_json())
    assert again == cfg
    assert json.loads(cfg.to_json())["loss"] == "hinge"


@pytest.mark.parametrize("changes, field", [
    ({"lr_g": -1e-4}, "lr_g"),
    ({"lr_d": 0.0}, "lr_d"),
    ({"image_size": 48}, "image_size"),
    ({"channels": 2}, "channels"),
    ({"batch_size": 1}, "batch_size"),
    ({"loss": "wasserstein"}, "loss"),
    ({"beta1": 1.0}, "beta1"),
    ({"device": "tpu"}, "device"),
    ({"steps": 0}, "steps"),
    ({"nz": "100"}, "nz"),
    ({"diffaug": "translation,blur"}, "diffaug"),
    ({"dataset": "folder", "data_path": ""}, "data_path"),
])
def test_impossible_values_name_the_field(changes, field):
    with pytest.raises(ConfigError) as err:
        TrainConfig(**changes)
    assert err.value.field == field and field in str(err.value)


def test_batch_larger_than_the_data_set_is_refused():
    with pytest.raises(ConfigError, match="batch_size.*larger than the training set"):
        TrainConfig(batch_size=512).validate(n_train=300)


def test_unknown_json_key_is_refused():
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_json('{"learning_rate": 0.1}')


# ---- networks -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("classes", [0, 10])
def test_shapes_for_every_size_channels_and_conditioning(size, channels, classes):
    cfg = TrainConfig(image_size=size, channels=channels, num_classes=classes, ngf=8, ndf=8)
    G, D = build_models(cfg)
    z = torch.randn(3, cfg.nz)
    labels = torch.tensor([0, 4, 9]) if classes else None
    x = G(z, labels)
    assert x.shape == (3, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # Tanh output
    logits = D(x, labels)
    assert logits.shape == (3,)
    assert not isinstance(list(D.modules())[-1], torch.nn.Sigmoid)


def test_classic_dcgan_parameter_counts_at_64px():
    G, D = Generator(100, 64, 3, 64), Discriminator(64, 3, 64)
    assert count_parameters(G) == 3_576_704  # ~3.58 M
    assert count_parameters(D) == 2_765_568  # ~2.77 M


def test_architecture_follows_the_paper():
    G, D = Generator(100, 64, 3, 64), Discriminator(64, 3, 64)
    kinds = [type(m).__name__ for m in G.net]
    assert kinds[-1] == "Tanh" and "ReLU" in kinds and "BatchNorm2d" in kinds and "Linear" not in kinds
    first = list(D.features)
    assert type(first[0]).__name__ == "Conv2d" and type(first[1]).__name__ == "LeakyReLU"  # no BN on input
    assert all(m.negative_slope == 0.2 for m in D.modules() if isinstance(m, torch.nn.LeakyReLU))
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.001


def test_conditional_generator_uses_the_class():
    G = Generator(16, 8, 1, 28, num_classes=10).eval()
    z = torch.randn(1, 16).repeat(2, 1)
    out = G(z, torch.tensor([1, 7]))
    assert not torch.allclose(out[0], out[1])


def test_soft_class_vector_equals_int_labels_and_mixes_between_them():
    G = Generator(16, 8, 1, 28, num_classes=10).eval()
    z = torch.randn(3, 16)
    labels = torch.tensor([2, 5, 9])
    onehot = torch.nn.functional.one_hot(labels, 10).float()
    assert torch.equal(G(z, labels), G(z, onehot))
    half = 0.5 * onehot[:1] + 0.5 * torch.nn.functional.one_hot(torch.tensor([7]), 10).float()
    mixed = G(z[:1], half)
    assert not torch.allclose(mixed, G(z[:1], labels[:1])) and not torch.allclose(mixed, G(z[:1], torch.tensor([7])))


@pytest.mark.parametrize("classes, sn", [(0, False), (10, False), (10, True)])
def test_features_and_logit_is_forward_and_a_linear_head(classes, sn):
    D = Discriminator(8, 1, 28, num_classes=classes, spectral_norm=sn).eval()
    x = torch.randn(4, 1, 28, 28)
    labels = torch.tensor([0, 3, 3, 9]) if classes else None
    f, logit = D.features_and_logit(x, labels)
    assert torch.equal(logit, D(x, labels)) and f.shape == (4, 8 * 2 * 7 * 7)
    w, b = D.head_weight()
    linear = f @ w + b
    if classes:
        linear = linear + (D.embed(labels) * f.view(4, 16, 7, 7).sum(dim=(2, 3))).sum(dim=1)
    assert torch.allclose(linear, logit, atol=1e-5)


def test_eval_mode_restores_each_modules_own_mode():
    G, D = Generator(16, 8, 1, 28), Discriminator(8, 1, 28).eval()
    with eval_mode(G, D):
        assert not G.training and not D.training
    assert G.training and not D.training
    with pytest.raises(RuntimeError), eval_mode(G):
        raise RuntimeError("boom")
    assert G.training


def test_the_sampler_is_seeded_cycles_classes_and_ignores_batch_neighbours():
    G = Generator(16, 8, 1, 28, num_classes=10)
    z, labels = seeded_latents(16, 12, seed=3, num_classes=10)
    assert labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    a = sample(G, 12, seed=3)
    assert G.training and a.device.type == "cpu" and a.dtype == torch.float32
    assert torch.equal(a, sample(G, z=z, labels=labels))
    assert torch.equal(a[:5], sample(G, z=z[:5], labels=labels[:5]))  # eval-mode BatchNorm: per image
    assert torch.equal(a, sample(G, z=z, labels=labels, batch=5))
    assert not torch.equal(a, sample(G, 12, seed=4))


# ---- data -----------------------------------------------------------------------------------


def test_bundled_digits_are_real_labelled_mnist(digits_data):
    images, labels = load_digits_raw()
    assert images.shape == (5000, 1, 28, 28) and images.dtype == torch.uint8
    assert sorted(labels.unique().tolist()) == list(range(10))
    assert digits_data.train.shape[0] == 4500 and digits_data.val.shape[0] == 500
    assert digits_data.train_labels.bincount().min() > 300  # shuffled before the split


def test_digits_resized_and_coloured_for_any_size():
    data = load_dataset(TrainConfig(image_size=64, channels=3, val_fraction=0.2))
    assert data.train.shape[1:] == (3, 64, 64) and data.val.shape[0] == 1000


def test_offline_download_gives_an_actionable_message(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(DatasetError) as err:
        load_dataset(TrainConfig(dataset="mnist"), root=tmp_path)
    msg = str(err.value)
    assert "mnist" in msg and "offline" in msg and "--dataset digits" in msg


def test_folder_with_class_subfolders(tmp_path):
    from PIL import Image

    for cls, value in (("cats", 30), ("dogs", 220)):
        (tmp_path / cls / "deep").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 50), (value, value, value)).save(tmp_path / cls / "deep" / f"{i}.png")
    (tmp_path / "cats" / "notes.txt").write_text("not an image")
    data = load_dataset(TrainConfig(dataset="folder", data_path=str(tmp_path), image_size=32, channels=3,
                                    val_fraction=0.25))
    assert data.class_names == ["cats", "dogs"]
    assert data.train.shape == (6, 3, 32, 32)
    assert len(data.skipped) == 1
    both = torch.cat([data.train, data.val]).float().mean(dim=(1, 2, 3))
    labels = torch.cat([data.train_labels, data.val_labels])
    assert torch.all((both > 100) == (labels == 1))


# ---- training ------------------------------------------------------------------------------


def test_a_few_steps_move_weights_and_separate_real_from_fake(digits_data):
    run = GANTraining(tiny_config(seed=3), digits_data)
    before = [p.detach().clone() for p in run.G.parameters()]
    for _ in range(40):
        stats = run.train_step()
    assert any(not torch.equal(a, b) for a, b in zip(before, run.G.parameters(), strict=True))
    assert stats.d_real.item() > stats.d_fake.item()
    real = to_float(run.real[run.next_indices()])
    fake = run.fixed_samples()[: real.shape[0]]
    with torch.no_grad():
        run.D.eval()
        assert run.D(real).mean() > run.D(fake).mean()


def test_d_only_and_g_only_steps_update_only_their_network(digits_data):
    run = GANTraining(tiny_config(), digits_data)
    g0 = [p.detach().clone() for p in run.G.parameters()]
    d0 = [p.detach().clone() for p in run.D.parameters()]
    stats = run.train_step("d")
    assert stats.loss_g is None and stats.loss_d is not None
    assert all(torch.equal(a, b) for a, b in zip(g0, run.G.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(d0, run.D.parameters(), strict=True))
    d1 = [p.detach().clone() for p in run.D.parameters()]
    run.train_step("g")
    assert all(torch.equal(a, b) for a, b in zip(d1, run.D.parameters(), strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(g0, run.G.parameters(), strict=True))


@pytest.mark.parametrize("changes", [
    {"loss": "hinge", "spectral_norm": True, "ema_decay": 0.9},
    {"loss": "wgan-gp", "d_steps": 2},
    {"loss": "lsgan", "augment": True, "diffaug": "translation,cutout,color", "r1_gamma": 1.0},
    {"num_classes": 10},
])
def test_every_option_trains(digits_data, changes):
    run = GANTraining(tiny_config(**changes), digits_data)
    for _ in range(3):
        stats = run.train_step()
    assert stats.finite()


# ---- checkpoints ---------------------------------------------------------------------------


def test_save_then_load_gives_identical_samples(tmp_path, digits_data):
    run = GANTraining(tiny_config(ema_decay=0.5), digits_data)
    for _ in range(5):
        run.train_step()
    path = save_training(run, tmp_path / "a.safetensors")
    G, cfg, meta = load_generator(path)
    assert cfg == run.cfg and meta["iteration"] == 5
    z = torch.randn(8, cfg.nz)
    assert torch.equal(sample(G, z=z), run.sample(z))


def test_resume_is_exact(tmp_path, digits_data):
    cfg = tiny_config(seed=11, augment=True, ema_decay=0.9)
    straight = GANTraining(cfg, digits_data)
    for _ in range(2 * 7):
        straight.train_step()

    first = GANTraining(cfg, digits_data)
    for _ in range(7):
        first.train_step()
    save_training(first, tmp_path / "half.safetensors")
    del first
    resumed = load_training(tmp_path / "half.safetensors", digits_data)
    for _ in range(7):
        resumed.train_step()

    for name in ("G", "D", "G_ema"):
        a, b = getattr(straight, name).state_dict(), getattr(resumed, name).state_dict()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key} differs after resume"
    assert resumed.iteration == straight.iteration == 14


def test_run_folder_or_file_resolves_to_one_checkpoint_and_listing_skips_the_cache(tmp_path, digits_data):
    from safetensors.torch import save_file

    from dcgan.checkpoint import list_run_checkpoints, resolve_checkpoint

    run = GANTraining(tiny_config(), digits_data)
    folder = tmp_path / "runs" / "a"
    for it in (10, 20):
        run.iteration = it
        save_training(run, folder / f"step_{it:08d}.safetensors")
    save_training(run, folder / "best.safetensors")
    assert resolve_checkpoint(folder) == folder / "step_00000020.safetensors"
    assert resolve_checkpoint(folder, best=True) == folder / "best.safetensors"
    assert resolve_checkpoint(folder / "step_00000010.safetensors") == folder / "step_00000010.safetensors"
    only_best = tmp_path / "runs" / "b"
    save_training(run, only_best / "best.safetensors")
    assert resolve_checkpoint(only_best) == only_best / "best.safetensors"
    for missing in (tmp_path / "nothing", tmp_path / "nothing.safetensors"):
        if missing.suffix == "":
            missing.mkdir()
        with pytest.raises(CheckpointError, match="no readable checkpoint|does not exist"):
            resolve_checkpoint(missing)

    cache = tmp_path / "runs" / ".cache"
    save_training(run, cache / "hidden.safetensors")  # even a real checkpoint in a hidden folder stays out
    save_file({"mu": torch.zeros(3)}, str(tmp_path / "runs" / "stats.safetensors"))  # not a checkpoint
    (tmp_path / "runs" / "broken.safetensors").write_bytes(b"not a file")
    listed = list_run_checkpoints(tmp_path / "runs")
    assert sorted(p.relative_to(tmp_path / "runs").as_posix() for p in listed) == [
        "a/best.safetensors", "a/step_00000010.safetensors", "a/step_00000020.safetensors", "b/best.safetensors"]
    assert list_run_checkpoints(tmp_path / "absent") == []


def test_corrupt_truncated_and_mismatched_checkpoints(tmp_path, digits_data):
    run = GANTraining(tiny_config(), digits_data)
    good = save_training(run, tmp_path / "good.safetensors")
    data = good.read_bytes()

    (tmp_path / "trunc.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        read(tmp_path / "trunc.safetensors")
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read(tmp_path / "empty.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x07" * 4000)
    with pytest.raises(CheckpointError, match="corrupt"):
        read(tmp_path / "junk.safetensors")

    other = GANTraining(tiny_config(ngf=24), digits_data)
    tensors, meta = read(good)
    with pytest.raises(CheckpointError, match=r"G\..*shape"):
        other.load_state_dict(tensors, meta)


# ---- background trainer ---------------------------------------------------------------------


def wait_for(predicate, timeout=30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_trainer_start_pause_step_resume_stop(tmp_path, digits_data):
    trainer = Trainer()
    trainer.start(tiny_config(steps=100_000, out_dir=str(tmp_path), run_name="t", sample_every_s=3600),
                  data=digits_data)
    with pytest.raises(TrainerBusy):
        trainer.start(tiny_config(), data=digits_data)
    assert wait_for(lambda: len(trainer.metrics) >= 3)
    trainer.pause()
    assert trainer.status().state == PAUSED
    # the step in progress ends and the pictures of the state it paused in follow (none were due for an hour)
    assert wait_for(lambda: trainer.grid()[0] == trainer.status().iteration > 2)
    at = trainer.status().iteration
    time.sleep(0.5)
    assert trainer.status().iteration == at and trainer.grid()[0] == at  # paused means paused
    trainer.step(3, "d")
    assert wait_for(lambda: trainer.status().iteration == at + 3)
    rows = trainer.metrics.since(0)
    assert rows[-1]["iteration"] == at + 3 and rows[-1]["loss_g"] != rows[-1]["loss_g"]  # NaN: D only
    trainer.resume()
    assert trainer.status().state == RUNNING
    assert wait_for(lambda: trainer.status().iteration > at + 10)
    iteration, grid = trainer.grid()
    assert grid is not None and grid.ndim == 3 and iteration > 0
    trainer.stop()
    status = trainer.status()
    assert status.state == "stopped"
    assert trainer.last_checkpoint() is not None and trainer.last_checkpoint().exists()
    keys = set(rows[0])
    assert {"iteration", "epoch", "loss_d", "loss_g", "d_real", "d_fake", "images_per_s"} <= keys


def test_trainer_finishes_and_reports_exceptions(tmp_path, digits_data):
    trainer = Trainer()
    trainer.start(tiny_config(steps=5, out_dir=str(tmp_path)), data=digits_data)
    assert trainer.wait(60) == FINISHED and trainer.status().iteration == 5

    trainer.metric_fn = functools.partial(child_faults.raise_at, iteration=2,
                                          exc=RuntimeError("exploded on purpose"))  # in the training process
    trainer.start(tiny_config(steps=5, metric_every=1, out_dir=str(tmp_path)), data=digits_data)
    assert trainer.wait(60) == FAILED
    assert "exploded on purpose" in trainer.status().error
    with pytest.raises(RuntimeError, match="exploded on purpose"):
        trainer.raise_if_failed()


class Recorder:
    """Every report of the run, in order (a subscriber)."""

    def __init__(self):
        self.calls = []

    def __call__(self, report):
        kind = type(report).__name__
        if isinstance(report, reports.Log):
            self.calls.append((kind, report.row["iteration"]))
        elif isinstance(report, reports.Pictures):
            self.calls.append((kind, report.iteration, report.grid.shape))
        elif isinstance(report, reports.Checkpoint):
            self.calls.append((kind, Path(report.path).name))
        elif isinstance(report, reports.End):
            self.calls.append((kind, report.state))
        else:
            self.calls.append((kind, report.iteration))


def test_trainer_subscribers_see_the_same_loop_and_the_generator_copy_is_the_runs(tmp_path, digits_data):
    first, second = Recorder(), Recorder()
    trainer = Trainer()
    trainer.subscribe(first)
    trainer.subscribe(second)
    assert trainer.generator() == (-1, None)
    trainer.start(tiny_config(steps=6, checkpoint_every=4, out_dir=str(tmp_path), run_name="h"), data=digits_data)
    assert trainer.wait(60) == FINISHED
    assert first.calls == second.calls
    calls = first.calls
    assert calls[0] == ("Started", 0) and calls[-1] == ("End", "finished")
    assert [c[1] for c in calls if c[0] == "Log"] == [1, 2, 3, 4, 5, 6]  # a host sync per CPU step
    assert [c[1] for c in calls if c[0] == "Checkpoint"] == ["step_00000004.safetensors", "step_00000006.safetensors"]
    pictures = [c for c in calls if c[0] == "Pictures"]
    assert pictures[-1] == ("Pictures", 6, (8 * 30 + 2, 8 * 30 + 2, 3))  # the end always shows the last state
    iteration, G = trainer.generator()
    assert iteration == 6 and not G.training
    saved, _, _ = load_generator(tmp_path / "h" / "step_00000006.safetensors")  # the sampler (EMA) of step 6
    for (name, a), b in zip(G.state_dict().items(), saved.state_dict().values(), strict=True):
        assert a.device.type == "cpu" and torch.equal(a, b), name
    assert trainer.generator()[1] is G  # one copy until the next pictures


def test_a_paused_trainer_stops_with_a_checkpoint_of_its_iteration(tmp_path, digits_data):
    trainer = Trainer()
    trainer.start(tiny_config(steps=100_000, checkpoint_every=0, out_dir=str(tmp_path), run_name="p"),
                  data=digits_data, paused=True)
    trainer.step(2)
    assert wait_for(lambda: trainer.status().iteration == 2)
    trainer.stop(wait=True)  # what app.py's SIGTERM handler calls
    assert trainer.status().state == "stopped"
    assert trainer.last_checkpoint() == tmp_path / "p" / "step_00000002.safetensors"
    assert read(trainer.last_checkpoint())[1]["iteration"] == 2


def test_a_save_by_hand_happens_between_two_steps_never_beside_one(tmp_path, digits_data):
    """Save-now is a command the loop carries out between two steps: with steps queued, running or paused, no
    save ever overlaps a step, and each file holds the state of the iteration it names."""
    run = GANTraining(tiny_config(steps=10**6, checkpoint_every=0, out_dir=str(tmp_path)), digits_data)
    folder = RunFolder(tmp_path / "race")
    stepping = threading.Event()
    overlapped, saved = [], []
    real_step, real_save = run.train_step, folder.save

    def step(update="both"):
        stepping.set()
        try:
            return real_step(update)
        finally:
            stepping.clear()

    def save(r):
        overlapped.append(stepping.is_set())
        path = real_save(r)
        saved.append((path, r.iteration))
        return path

    run.train_step, folder.save = step, save
    control = Control(paused=True)
    loop = threading.Thread(target=fit, args=(run, [], control), kwargs={"folder": folder})
    loop.start()
    for _ in range(10):
        control.step(5)
        control.save()
    control.resume()
    for _ in range(10):
        time.sleep(0.01)
        control.save()
    control.stop()
    loop.join(60)
    assert len(saved) >= 3 and not any(overlapped)  # saves asked for at once are one save
    for path, iteration in saved[:-1]:
        assert path.name == f"step_{iteration:08d}.safetensors"
    assert read(saved[-1][0])[1]["iteration"] == saved[-1][1]
