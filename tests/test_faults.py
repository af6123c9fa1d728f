"""Faults: kill -9 mid-save, a full or unwritable disk, NaN/inf losses, out of memory, crashes in the thread.

Each test fails if its protection is removed: the kill loop also runs once with an unsafe
in-place writer to show that it notices torn files.
"""

from __future__ import annotations

import errno
import functools
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dcgan import checkpoint, runner
from dcgan.checkpoint import CheckpointError, RunFolder, read, save_training
from dcgan.train import MIN_LR_SCALE, GANTraining, load_training
from dcgan.trainer import FAILED, FINISHED, IDLE, PAUSED, Trainer
from tests import child_faults
from tests.conftest import tiny_config

HELPER = Path(__file__).with_name("kill_writer.py")
KILLS = int(os.environ.get("DCGAN_KILLS", "20"))  # `make soak` raises this


# ---- SIGKILL while writing checkpoints --------------------------------------------------------


def step_number(path: Path) -> int:
    return int(path.name[5:13])


@pytest.fixture(scope="module")
def writer_helper(tmp_path_factory):
    """tests/kill_writer.py, started once (it imports torch) for the kill loops of this module."""
    errors = (tmp_path_factory.mktemp("helper") / "stderr.txt").open("w+")
    helper = subprocess.Popen([sys.executable, str(HELPER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=errors, text=True)
    if helper.stdout.readline().strip() != "ready":
        helper.wait(timeout=30)
        errors.seek(0)
        raise AssertionError(f"kill_writer.py did not start:\n{errors.read()[-3000:]}")
    yield helper
    helper.stdin.close()
    helper.wait(timeout=30)
    errors.close()


def kill_loop(helper, run_dir: Path, kills: int, unsafe: bool = False, seed: int = 0) -> dict:
    """Start writers, kill -9 each at a random moment, and inspect the folder after every kill."""
    from tests import kill_writer

    data = kill_writer.synthetic_data()
    rng = random.Random(seed)
    report = {"kills": 0, "mid_write": 0, "torn": [], "unresumable": [], "resumed": 0}
    run_dir.mkdir(parents=True, exist_ok=True)
    iteration = 0
    # keep going past `kills` until at least one kill landed mid-write (a temp file was left; for the in-place
    # writer, a torn file): where writes are short beside the kill's random delay, 30 kills can all miss them
    landed = lambda: report["torn"] if unsafe else report["mid_write"]  # noqa: E731
    while report["kills"] < kills or (not landed() and report["kills"] < 4 * kills):
        if unsafe and report["torn"]:
            break
        helper.stdin.write(f"go {run_dir} {iteration} {'UNSAFE' if unsafe else 'SAFE'}\n")
        helper.stdin.flush()
        pid = int(helper.stdout.readline())
        # wait until this writer is saving (it has written a checkpoint), then kill it at random
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                step_number(f) > iteration for f in RunFolder(run_dir).step_files()):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.1))
        os.kill(pid, signal.SIGKILL)
        assert helper.stdout.readline().startswith("dead")
        report["kills"] += 1
        report["mid_write"] += any(run_dir.glob(".step_*.tmp"))
        folder = RunFolder(run_dir, keep_last=kill_writer.KEEP_LAST)
        files = folder.step_files()
        for f in files:
            try:
                read(f)
            except CheckpointError:
                report["torn"].append(f.name)
        latest = folder.latest()
        if files:
            iteration = step_number(files[-1])
        if latest is None:
            continue
        try:
            run = load_training(latest, data)
            assert run.iteration == step_number(latest)
            if report["kills"] % 5 == 0:  # a training step too, now and then (it costs time)
                assert run.train_step().finite()
            report["resumed"] += 1
        except (CheckpointError, AssertionError) as exc:
            report["unresumable"].append(f"{latest.name}: {exc}")
    return report


@pytest.mark.timeout(240)
def test_sigkill_mid_save_always_leaves_a_loadable_resumable_checkpoint(writer_helper, tmp_path):
    report = kill_loop(writer_helper, tmp_path / "run", KILLS)
    assert report["kills"] >= KILLS
    assert report["mid_write"] >= 1, report  # some kills really did land inside a write
    assert report["torn"] == [], report  # no half-written file ever carries a checkpoint name
    assert report["unresumable"] == [], report
    assert report["resumed"] == report["kills"], report
    # the next save sweeps the temp files the killed writers left behind
    from tests import kill_writer

    run = load_training(RunFolder(tmp_path / "run").latest(), kill_writer.synthetic_data())
    run.iteration += 10**6
    RunFolder(tmp_path / "run", keep_last=2).save(run)
    assert not list((tmp_path / "run").glob(".step_*.tmp"))
    print(f"\nkill loop: {report['kills']} kills, {report['mid_write']} mid-write, {report['resumed']} resumed")


@pytest.mark.timeout(240)
def test_kill_loop_notices_a_writer_that_is_not_atomic(writer_helper, tmp_path):
    """The same loop against an in-place writer finds torn checkpoints: the test above can fail."""
    report = kill_loop(writer_helper, tmp_path / "run", 30, unsafe=True, seed=1)  # stops at the first torn file
    assert report["torn"], report


# ---- full disk, unwritable folder --------------------------------------------------------------


@pytest.fixture
def small_run(digits_data):
    run = GANTraining(tiny_config(), digits_data)
    run.train_step()
    return run


def test_full_disk_gives_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, small_run, monkeypatch):
    folder = RunFolder(tmp_path / "run", keep_last=1)
    first = folder.save(small_run)
    before = first.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    small_run.train_step()
    with pytest.raises(CheckpointError) as info:
        folder.save(small_run)
    message = str(info.value)
    assert "No space left on device" in message and "previous checkpoint is untouched" in message
    monkeypatch.undo()
    assert first.read_bytes() == before  # untouched, still the newest, still loads
    assert folder.latest() == first
    assert load_training(first, small_run.data).iteration == 1
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [first.name]  # no temp file left


def test_unwritable_folder_gives_a_clear_error(tmp_path, small_run):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # a path below a regular file cannot be created, even by root (chmod would not stop root)
    with pytest.raises(CheckpointError, match="could not write checkpoint .*writable folder"):
        save_training(small_run, blocker / "run" / "step_00000001.safetensors")
    assert blocker.read_text() == "not a folder"


def test_trainer_shows_a_failed_save_and_keeps_training(tmp_path, digits_data):
    trainer = Trainer(metric_fn=child_faults.full_disk)  # every fsync there fails from the first step on
    trainer.start(tiny_config(steps=12, checkpoint_every=5, metric_every=1, out_dir=str(tmp_path)), data=digits_data)
    assert trainer.wait(60) == FINISHED
    status = trainer.status()
    assert status.iteration == 12
    assert "could not write" in status.error and "No space left on device" in status.error  # the latest failure
    assert sum("could not write checkpoint" in e for e in status.events) == 3  # at 5, 10 and the end
    assert sum("could not write samples.png" in e for e in status.events) == 1  # then the run's last samples
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_best_checkpoint_save_does_not_end_the_run(tmp_path, digits_data):
    trainer = Trainer(metric_fn=functools.partial(child_faults.full_disk, score=True), metric_key="score")
    trainer.start(tiny_config(steps=10, metric_every=5, out_dir=str(tmp_path)), data=digits_data)
    assert trainer.wait(60) == FINISHED
    assert any("could not write best.safetensors: No space left on device" in e for e in trainer.status().events)


def test_an_unwritable_out_dir_is_refused_before_training_starts(tmp_path, digits_data):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    trainer = Trainer()
    with pytest.raises(CheckpointError, match="cannot create the run folder .*writable out_dir"):
        trainer.start(tiny_config(out_dir=str(blocker / "runs")), data=digits_data)
    assert trainer.status().state == IDLE and trainer._reader is None


# ---- NaN / inf ---------------------------------------------------------------------------------


def poisoned(trainer_dir: Path, **how) -> tuple[Trainer, Path]:
    """A trainer whose runs get NaN / inf losses in the training process (tests/child_faults.py); the file
    lists the iterations after which the poison fired."""
    log = trainer_dir / "fired.txt"
    return Trainer(metric_fn=functools.partial(child_faults.poison, log=str(log), fired=[], **how)), log


def wait_until_paused(trainer: Trainer, timeout: float = 60.0):
    """The trainer's status once it has paused itself (or after the timeout, for the assertion to fail)."""
    deadline = time.monotonic() + timeout
    while trainer.status().state != PAUSED and time.monotonic() < deadline:
        time.sleep(0.05)
    return trainer.status()


def weights_finite(trainer: Trainer) -> bool:
    """G as the trainer last showed it, and G and D in the run's newest checkpoint, hold finite numbers only."""
    tensors = [*trainer.generator()[1].state_dict().values()]
    if trainer.last_checkpoint() is not None:
        tensors += [t for k, t in read(trainer.last_checkpoint())[0].items() if k.startswith(("G.", "D."))]
    return all(bool(torch.isfinite(t.float()).all()) for t in tensors)


@pytest.mark.parametrize("how", ["nan-weights", "inf-loss"])
def test_nan_rolls_back_to_the_last_good_state_with_half_the_learning_rate(digits_data, how, tmp_path):
    trainer, log = poisoned(tmp_path, at=(20,), how=how)
    cfg = tiny_config(steps=40, nan_policy="rollback", metric_every=20, out_dir=str(tmp_path))
    trainer.start(cfg, data=digits_data)
    assert trainer.wait(60) == FINISHED, trainer.status().error
    status = trainer.status()
    rollbacks = [e for e in status.events if "rolled back" in e]
    # detected within the very step that went bad (iteration 21), rolled back once, lr halved
    assert rollbacks == ["NaN/inf loss at iteration 21: rolled back to iteration 0 and halved the "
                         "learning rates (now x0.5)."], status.events
    assert child_faults.fired(log) == [20]
    assert status.iteration == 40 and status.error == ""
    assert weights_finite(trainer)  # the restored state was really the good one
    rows = trainer.metrics.since(0)
    assert rows[-1]["lr_g"] == pytest.approx(cfg.lr_g * 0.5) and rows[-1]["lr_d"] == pytest.approx(cfg.lr_d * 0.5)
    assert all(math.isfinite(r["loss_d"]) and math.isfinite(r["loss_g"]) for r in rows)


def test_nan_pause_policy_pauses_with_an_explanation_and_can_resume(digits_data, tmp_path):
    trainer, _ = poisoned(tmp_path, at=(7,))
    trainer.start(tiny_config(steps=15, nan_policy="pause", metric_every=7, out_dir=str(tmp_path)), data=digits_data)
    status = wait_until_paused(trainer)
    assert status.state == PAUSED
    assert "NaN/inf loss at iteration 8" in status.error and "Lower the learning rates" in status.error
    assert status.iteration == 0  # back at the last good state
    assert weights_finite(trainer)
    trainer.resume()
    assert trainer.wait(60) == FINISHED
    assert weights_finite(trainer) and trainer.status().iteration == 15


def test_nan_that_keeps_coming_back_pauses_after_the_lr_has_been_halved_enough(digits_data, tmp_path):
    trainer, _ = poisoned(tmp_path, every_from=3)
    trainer.start(tiny_config(steps=30, nan_policy="rollback", metric_every=1, out_dir=str(tmp_path)),
                  data=digits_data)
    status = wait_until_paused(trainer)
    halvings = round(math.log2(1 / MIN_LR_SCALE))
    assert status.state == PAUSED
    assert sum("rolled back" in e for e in status.events) == halvings
    assert "paused at the last good state" in status.error
    trainer.stop()


# ---- out of memory and other crashes in the thread ---------------------------------------------


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                                 MemoryError(), None], ids=["cuda", "python", "cpu-allocator"])
def test_out_of_memory_says_lower_the_batch_size_and_the_trainer_stays_usable(digits_data, exc, tmp_path):
    trainer = Trainer(metric_fn=functools.partial(child_faults.raise_at, iteration=3, exc=exc))
    trainer.start(tiny_config(steps=10, metric_every=1, out_dir=str(tmp_path)), data=digits_data)
    assert trainer.wait(60) == FAILED
    assert "lower the batch size" in trainer.status().error
    with pytest.raises(RuntimeError, match="lower the batch size"):
        trainer.raise_if_failed()
    trainer.metric_fn = None
    trainer.start(tiny_config(steps=5, out_dir=str(tmp_path)), data=digits_data)  # usable again
    assert trainer.wait(60) == FINISHED and trainer.status().error == ""


def test_out_of_memory_while_opening_a_run_propagates_as_it_is(monkeypatch, digits_data, tmp_path):
    """What building the run raises leaves runner.train unchanged (the training process sends it to the app, whose
    start() raises it: tests/test_trainer_process.py); a failure once training runs is one clear message."""

    def no_memory(self, cfg, data=None):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(GANTraining, "__init__", no_memory)
    with pytest.raises(torch.OutOfMemoryError):
        runner.train(tiny_config(out_dir=str(tmp_path)), data=digits_data)
    monkeypatch.undo()

    def grid_fails(self):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(GANTraining, "fixed_samples", grid_fails)
    with pytest.raises(runner.RunFailed, match="Out of memory .* lower the batch size") as info:
        runner.train(tiny_config(steps=3, out_dir=str(tmp_path)), data=digits_data)
    assert isinstance(info.value.__cause__, torch.OutOfMemoryError)
    monkeypatch.undo()
    assert runner.train(tiny_config(steps=3, out_dir=str(tmp_path)), data=digits_data).state == "finished"


def test_any_exception_in_the_training_process_reaches_status(digits_data, tmp_path):
    trainer = Trainer(metric_fn=functools.partial(child_faults.raise_at, iteration=4,
                                                  exc=KeyError("a-very-particular-bug")))
    trainer.start(tiny_config(steps=10, metric_every=1, out_dir=str(tmp_path)), data=digits_data)
    assert trainer.wait(60) == FAILED
    status = trainer.status()
    assert "KeyError" in status.error and "a-very-particular-bug" in status.error
    assert status.events and "a-very-particular-bug" in status.events[-1]
