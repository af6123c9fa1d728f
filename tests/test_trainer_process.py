"""The app's trainer trains in a process of its own (dcgan/trainer.py, dcgan/worker.py): the same run as the command
line's, steered by commands and watched through its typed reports."""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from dcgan import reports
from dcgan.checkpoint import CheckpointError, save_training
from dcgan.config import ConfigError
from dcgan.dview import DViewHook
from dcgan.train import GANTraining
from dcgan.trainer import FAILED, FINISHED, IDLE, PAUSED, STOPPED, Trainer
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parents[1]


def where_it_trains(run, offset: float = 0.0) -> dict:
    """A metric_fn (module level, so it pickles) that tells which process and how many torch threads train."""
    return {"score": offset + run.iteration, "pid": os.getpid(), "threads": torch.get_num_threads()}


def caches_where_told(run) -> dict:
    """A metric_fn: 1.0 where the training process's metric caches are where the app pointed them."""
    from dcgan import digit_classifier, metrics

    told = Path(os.environ["DCGAN_CACHE"])
    return {"score": float(told == digit_classifier.CACHE_DIR and told == metrics.CACHE_DIR)}


class Recorder:
    """A subscriber: every report, as (kind, iteration, detail)."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, report: reports.Report) -> None:
        detail = {reports.Log: lambda r: r.row["iteration"], reports.Pictures: lambda r: r.grid.shape,
                  reports.End: lambda r: r.state, reports.Started: lambda r: r.run_dir}.get(type(report),
                                                                                           lambda r: None)
        self.calls.append((type(report).__name__, report.iteration, detail(report), report.run_id))


def wait_for(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def child_pid() -> int:
    (child,) = [p for p in multiprocessing.active_children() if p.name == "dcgan-train"]
    return child.pid


def test_the_run_trains_in_another_process_with_its_own_threads_and_hooks_here_see_it(tmp_path, digits_data):
    recorder = Recorder()
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # what serving threads here set must not decide the training process's count
    try:
        trainer = Trainer(metric_fn=functools.partial(where_it_trains, offset=0.5), threads=1)
        trainer.subscribe(recorder)
        trainer.start(tiny_config(steps=12, metric_every=6, out_dir=str(tmp_path), run_name="p"), data=digits_data)
        assert trainer.wait(120) == FINISHED, trainer.status().error
    finally:
        torch.set_num_threads(previous)
    history = trainer.history()
    assert [h["iteration"] for h in history] == [6, 12] and history[0]["score"] == 6.5
    assert {h["pid"] for h in history} != {os.getpid()} and len({h["pid"] for h in history}) == 1
    assert {h["threads"] for h in history} == {1}
    status = trainer.status()
    assert (status.iteration, status.run_dir, status.device) == (12, str(tmp_path / "p"), "cpu")
    assert [row["iteration"] for row in trainer.metrics.since(0)] == list(range(1, 13))  # the CPU logs every step
    assert trainer.last_checkpoint() == tmp_path / "p" / "step_00000012.safetensors"
    assert trainer.last_checkpoint().is_file()
    iteration, G = trainer.generator()
    assert iteration == 12 and G(torch.randn(2, 32)).shape == (2, 1, 28, 28)
    assert trainer.grid()[0] == 12 and trainer.frames()[0][0] == 0
    calls = recorder.calls
    assert calls[0][:3] == ("Started", 0, str(tmp_path / "p")) and calls[-1][:3] == ("End", 12, "finished")
    assert [c[1:3] for c in calls if c[0] == "Log"] == [(i, i) for i in range(1, 13)]
    assert ("Pictures", 12, (8 * 30 + 2, 8 * 30 + 2, 3)) in [c[:3] for c in calls]  # 8x8 tiles of 28 + padding
    assert len({c[3] for c in calls}) == 1  # one run id on every report


def test_what_building_the_run_raises_there_is_raised_here_and_the_trainer_stays_usable(tmp_path, digits_data):
    trainer = Trainer()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        trainer.start(resume_from=bad, data=digits_data)
    assert trainer.status().state == IDLE
    with pytest.raises(ConfigError) as info:  # 3 classes asked for, the digits have 10: found while building
        trainer.start(tiny_config(num_classes=3, out_dir=str(tmp_path)), data=digits_data)
    assert info.value.field == "num_classes" and trainer.status().state == IDLE
    trainer.start(tiny_config(steps=3, out_dir=str(tmp_path), run_name="ok"), data=digits_data)
    assert trainer.wait(60) == FINISHED
    with pytest.raises(ValueError, match="pickle"):
        Trainer(metric_fn=lambda run: {})


def test_the_training_process_keeps_the_metric_caches_where_the_app_put_them(tmp_path, digits_data, monkeypatch):
    from dcgan import digit_classifier, metrics

    for module in (digit_classifier, metrics):
        monkeypatch.setattr(module, "CACHE_DIR", module.CACHE_DIR)
    monkeypatch.setenv("DCGAN_CACHE", "restored after the test")
    trainer = Trainer(metric_fn=caches_where_told)
    trainer.start(tiny_config(steps=1, out_dir=str(tmp_path)), data=digits_data)  # the forkserver imports metrics
    assert trainer.wait(60) == FINISHED
    metrics.use_cache_dir(tmp_path / "cache")  # later, as the app does
    trainer.start(tiny_config(steps=2, metric_every=2, out_dir=str(tmp_path)), data=digits_data)
    assert trainer.wait(60) == FINISHED
    assert [h["score"] for h in trainer.history()] == [1.0]


def test_what_does_not_pickle_starts_no_process(tmp_path, digits_data):
    trainer = Trainer()
    trainer.metric_fn = lambda run: {}  # set after the constructor's check
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        trainer.start(tiny_config(out_dir=str(tmp_path)), data=digits_data)
    assert trainer.status().state == IDLE
    assert not [p for p in multiprocessing.active_children() if p.name == "dcgan-train"]


def exploding(report: reports.Report) -> None:
    if isinstance(report, reports.Log) and report.row["iteration"] == 3:
        raise ValueError("this subscriber broke")


def test_a_failing_subscriber_here_fails_the_run_which_stops_and_saves_there(tmp_path, digits_data):
    trainer = Trainer()
    trainer.subscribe(exploding)
    trainer.start(tiny_config(steps=100_000, out_dir=str(tmp_path), run_name="h"), data=digits_data)
    assert trainer.wait(60) == FAILED
    assert "ValueError: this subscriber broke" in trainer.status().error
    assert len(list((tmp_path / "h").glob("step_*.safetensors"))) == 1  # the stopped run saved
    assert not [p for p in multiprocessing.active_children() if p.name == "dcgan-train"]


def test_pause_step_save_resume_and_stop_reach_the_training_process(tmp_path, digits_data):
    trainer = Trainer()
    trainer.start(tiny_config(steps=100_000, out_dir=str(tmp_path), run_name="s"), data=digits_data, paused=True)
    trainer.step(4)
    wait_for(lambda: trainer.status().iteration == 4)
    assert trainer.save_checkpoint() == tmp_path / "s" / "step_00000004.safetensors"
    assert (tmp_path / "s" / "step_00000004.safetensors").is_file()
    trainer.resume()
    wait_for(lambda: trainer.status().iteration > 10)
    trainer.stop()
    status = trainer.status()
    assert status.state == STOPPED
    assert trainer.last_checkpoint() == tmp_path / "s" / f"step_{status.iteration:08d}.safetensors"
    assert trainer.last_checkpoint().is_file()


def test_a_resumed_run_shows_its_whole_curve_from_iteration_one(tmp_path, digits_data):
    """Resume (Runs tab, or after Stop) draws the curves from the run's start, not from the checkpoint on."""
    trainer = Trainer()
    trainer.start(tiny_config(steps=6, out_dir=str(tmp_path), run_name="r"), data=digits_data)
    assert trainer.wait(60) == FINISHED
    first = [r["loss_d"] for r in trainer.metrics.since(0)]
    trainer.start(tiny_config(steps=10), resume_from=tmp_path / "r" / "step_00000006.safetensors", data=digits_data)
    assert trainer.wait(60) == FINISHED
    rows = trainer.metrics.since(0)
    assert [r["iteration"] for r in rows] == list(range(1, 11))
    assert [r["loss_d"] for r in rows[:6]] == pytest.approx(first)  # read back from its event files


def test_a_nan_in_the_training_process_rolls_back_then_pauses_the_run_here(tmp_path, digits_data):
    """A checkpoint whose D holds NaN: every step is NaN, so the roll-backs (each halving the rates) reach the last
    good state again and again until the run pauses; both messages come from NanRollback in the child."""
    run = GANTraining(tiny_config(steps=1_000, nan_policy="rollback", out_dir=str(tmp_path), run_name="nan"),
                      digits_data)
    run.train_step()
    with torch.no_grad():
        next(run.D.parameters()).fill_(float("nan"))
    save_training(run, tmp_path / "nan.safetensors")
    trainer = Trainer()
    trainer.start(resume_from=tmp_path / "nan.safetensors", data=digits_data)
    wait_for(lambda: trainer.status().state == PAUSED)
    status = trainer.status()
    assert status.error.startswith("NaN/inf loss") and "paused at the last good state (iteration 1)" in status.error
    assert sum("halved the learning rates" in e for e in status.events) == 6  # x1/2 ... x1/64, then the pause
    trainer.stop()
    assert trainer.status().state == STOPPED


def test_a_killed_training_process_is_reported_and_the_trainer_stays_usable(tmp_path, digits_data):
    trainer = Trainer()
    trainer.start(tiny_config(steps=100_000, out_dir=str(tmp_path), run_name="k"), data=digits_data)
    wait_for(lambda: trainer.status().iteration > 2)
    os.kill(child_pid(), signal.SIGKILL)
    assert trainer.wait(60) == FAILED
    assert "training process ended unexpectedly" in trainer.status().error
    trainer.reset()
    trainer.start(tiny_config(steps=3, out_dir=str(tmp_path), run_name="again"), data=digits_data)
    assert trainer.wait(60) == FINISHED


def test_d_view_draws_the_run_of_the_training_process(tmp_path, digits_data):
    hook = DViewHook()
    try:
        trainer = Trainer()
        trainer.subscribe(hook, snapshots=True)
        trainer.start(tiny_config(steps=8, out_dir=str(tmp_path)), data=digits_data)
        assert trainer.wait(60) == FINISHED
        assert hook.wait_idle(120)
        frame = hook.latest()
        assert frame is not None and frame.iteration == 8 and not hook.errors
        assert frame.push is not None  # the arrows need G's Adam state, sent by the training process
    finally:
        hook.close()


@pytest.mark.timeout(180)
def test_when_the_app_is_killed_its_training_process_saves_and_ends(tmp_path):
    """A SIGKILLed app cannot stop its run: the run notices its pipe end, stops and saves on its own."""
    app = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from tests.conftest import tiny_config
        from dcgan.trainer import Trainer

        if __name__ == "__main__":
            trainer = Trainer()
            trainer.start(tiny_config(steps=10**6, out_dir={str(tmp_path)!r}, run_name="orphan"))
            import multiprocessing
            while trainer.status().iteration < 5:
                time.sleep(0.05)
            print([p.pid for p in multiprocessing.active_children() if p.name == "dcgan-train"][0], flush=True)
            time.sleep(600)
    """)
    script = tmp_path / "app.py"
    script.write_text(app)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(proc.stdout.readline())
        assert not list((tmp_path / "orphan").glob("step_*.safetensors"))
        proc.kill()
        proc.wait(30)

        def gone() -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            try:
                return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # ended, not yet reaped
            except FileNotFoundError:
                return True

        wait_for(gone, 120)
    finally:
        proc.kill()
    saved = list((tmp_path / "orphan").glob("step_*.safetensors"))
    assert len(saved) == 1 and int(saved[0].name[5:13]) >= 5
