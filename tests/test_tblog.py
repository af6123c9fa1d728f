"""TensorBoard event files, read back with TensorBoard's own reader: a CLI run, its resume, an app (Trainer)
run with metrics, and the hook's own rules (grids rate-limited, NaN halves skipped, one run per folder)."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams import plugin_data_pb2

from dcgan import runner
from dcgan.config import TrainConfig
from dcgan.tblog import GRID_TAG, SCALARS, TensorBoardHook, event_files
from dcgan.trainer import Trainer
from tests.conftest import tiny_config

LOSS_TAGS = (SCALARS["loss_d"], SCALARS["loss_g"], SCALARS["d_real"], SCALARS["d_fake"])


def accumulate(run_dir) -> EventAccumulator:
    ea = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    ea.Reload()
    return ea


def steps(ea: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in ea.Scalars(tag)]


def session_hparams(ea: EventAccumulator) -> dict:
    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value or v.number_value for k, v in info.hparams.items()}


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcgan", *args], capture_output=True, text=True, timeout=300)


def test_cli_run_and_its_resume_write_one_continuous_curve(tmp_path):
    result = cli("train", "--dataset", "digits", "--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "16",
                 "--steps", "12", "--device", "cpu", "--precision", "fp32", "--checkpoint-every", "0",
                 "--sample-every-s", "0.01", "--out-dir", str(tmp_path), "--run-name", "cli")
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "cli"
    ea = accumulate(run_dir)
    for tag in LOSS_TAGS:
        assert steps(ea, tag) == list(range(1, 13)), tag  # the CPU syncs every step
    assert all(math.isfinite(e.value) for e in ea.Scalars(SCALARS["loss_d"]))
    grids = ea.Images(GRID_TAG)
    assert grids[0].step == 1 and grids[-1].step == 12  # the first at once, the last at the end
    assert (grids[-1].width, grids[-1].height) == (8 * 30 + 2, 8 * 30 + 2)  # 64 samples of 28 px, 8 per row
    assert session_hparams(ea)["loss"] == "bce" and session_hparams(ea)["steps"] == 12
    assert [p for p in run_dir.iterdir() if p.is_dir()] == []  # hparams in the run itself, not a sub-run

    result = cli("resume", str(run_dir), "--steps", "20")
    assert result.returncode == 0, result.stderr
    assert len(event_files(run_dir, grids=False)) == 2  # the resumed session appends files to the same folder
    assert len(event_files(run_dir)) == 4  # each session: scalars and hparams, and the grids in a file of their own
    ea = accumulate(run_dir)
    assert steps(ea, SCALARS["loss_g"]) == list(range(1, 21))
    assert ea.Images(GRID_TAG)[-1].step == 20


def scores_a_hundred_over_the_iteration(run) -> dict:
    """A metric_fn (module level: it runs in the training process)."""
    return {"score": 100.0 / run.iteration, "classes_covered": 3}


def test_app_trainer_run_logs_scalars_metrics_grids_and_hparams(tmp_path):
    trainer = Trainer(metric_fn=scores_a_hundred_over_the_iteration)
    trainer.start(tiny_config(steps=10, metric_every=5, out_dir=str(tmp_path), run_name="app", loss="hinge", lr_g=3e-4,
                              ngf=8, ndf=8, batch_size=16))
    assert trainer.wait(120) == "finished"
    ea = accumulate(tmp_path / "app")
    for tag in LOSS_TAGS:
        assert steps(ea, tag) == list(range(1, 11)), tag
    assert [e.value for e in ea.Scalars("lr/G")] == pytest.approx([3e-4] * 10)
    assert [(e.step, e.value) for e in ea.Scalars("metrics/score")] == [(5, 20.0), (10, 10.0)]
    assert ea.Images(GRID_TAG)[-1].step == 10
    assert ea.Scalars("final/metrics/score")[-1].value == 10.0
    assert session_hparams(ea)["loss"] == "hinge"

    # `tensorboard --logdir` on the root sees the run once, with its hparams
    other = tmp_path / "other"
    hook = TensorBoardHook(other)
    fake = SimpleNamespace(iteration=0, cfg=TrainConfig())
    hook.on_start(fake)
    hook.on_end(fake, "stopped")
    mux = EventMultiplexer().AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    assert sorted(mux.Runs()) == ["app", "other"]
    assert set(mux.PluginRunToTagToContent("hparams")) == {"app", "other"}


def test_hook_rate_limits_grids_skips_nan_and_never_syncs(tmp_path):
    hook = TensorBoardHook(tmp_path / "r", image_every_s=3600)
    run = SimpleNamespace(iteration=0, cfg=TrainConfig())
    hook.on_start(run)
    for i in range(1, 31):
        run.iteration = i
        hook.on_log(run, {"iteration": i, "loss_d": 1.0 / i, "loss_g": float("nan") if i % 2 else 0.5,
                          "d_real": 0.6, "d_fake": 0.4, "images_per_s": 10.0, "time": time.time()})
        hook.on_pictures(run, torch.rand(16, 1, 28, 28) * 2 - 1)
    hook.on_end(run, "finished")
    ea = accumulate(tmp_path / "r")
    assert steps(ea, SCALARS["loss_d"]) == list(range(1, 31))
    assert steps(ea, SCALARS["loss_g"]) == list(range(2, 31, 2))  # a D-only step's NaN loss_G is left out
    assert [g.step for g in ea.Images(GRID_TAG)] == [1, 30]  # the first, then the last at the end
    assert "lr/G" not in ea.Tags()["scalars"]  # absent from the row: nothing invented


def test_hook_writes_nothing_off_the_main_rank(tmp_path, monkeypatch):
    from dcgan import distributed

    monkeypatch.setattr(distributed, "is_main", lambda: False)
    hook = TensorBoardHook(tmp_path / "rank1")
    run = SimpleNamespace(iteration=0, cfg=TrainConfig())
    hook.on_start(run)
    hook.on_log(run, {"iteration": 1, "loss_d": 1.0})
    hook.on_end(run, "finished")
    assert not (tmp_path / "rank1").exists()


def test_a_full_disk_stops_the_logging_not_the_run(tmp_path, monkeypatch):
    import errno
    import os

    from dcgan import tblog

    class FullDisk(tblog.SummaryWriter):
        """Writes fail the way a full disk makes TensorBoard's writer fail: OSError from the next write."""

        def _get_file_writer(self):
            writer = super()._get_file_writer()

            def no_space(*args, **kwargs):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            writer.add_summary = writer.add_event = no_space
            return writer

    monkeypatch.setattr(tblog, "SummaryWriter", FullDisk)
    with pytest.warns(UserWarning, match="No space left on device"):  # the runner attaches TensorBoard
        cfg = tiny_config(steps=6, out_dir=str(tmp_path), run_name="full", ngf=8, ndf=8, batch_size=16)
        assert runner.train(cfg).state == "finished"
    assert (tmp_path / "full" / "step_00000006.safetensors").exists()

    hook = TensorBoardHook(tmp_path / "direct", image_every_s=0)
    run = SimpleNamespace(iteration=1, cfg=TrainConfig())
    with pytest.warns(UserWarning, match="training goes on"):
        hook.on_start(run)
        hook.on_log(run, {"iteration": 1, "loss_d": 1.0})
    assert "No space left" in hook.failed and hook.writer is None
    hook.on_pictures(run, torch.zeros(4, 1, 28, 28))  # no-ops from now on
    hook.on_end(run, "finished")


def test_event_files_come_in_the_order_they_were_written(tmp_path):
    """Two sessions started in one second differ only in the writer number: 10 comes after 9 (a name sort
    put the resumed session first and hid its points in the Runs tab)."""
    names = ["events.out.tfevents.1795685029.my.host.4242.10", "events.out.tfevents.1795685029.my.host.4242.9",
             "events.out.tfevents.1795685028.my.host.4242.11"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in event_files(tmp_path)] == [names[2], names[1], names[0]]
