"""ZeroGPU (dcgan/zerogpu.py): a run that advances in chunks, each one call of the real `spaces.GPU` function
(a no-op off ZeroGPU), with its state on the CPU between chunks, trains exactly as the run in one piece and
obeys pause / step / save / stop as the training process does."""

from __future__ import annotations

import multiprocessing
import time

import pytest
import torch

from dcgan import runner, worker, zerogpu
from dcgan.checkpoint import read
from dcgan.trainer import FINISHED, PAUSED, STOPPED, Trainer
from tests.conftest import tiny_config

spaces = pytest.importorskip("spaces")


@pytest.fixture
def chunks(monkeypatch):
    """Chunks of 0.3 s through the real decorator; counts the GPU calls."""
    monkeypatch.setenv(zerogpu.CHUNK_ENV, "0.3")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    real = zerogpu.gpu_chunk(worker.run_chunk)  # spaces.GPU(duration=...)
    assert real is worker.run_chunk  # off ZeroGPU the real decorator hands the function back
    calls: list[int] = []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(zerogpu, "gpu_chunk", lambda chunk: counted)
    return calls


def wait_for(condition, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def quiet_for(calls: list, seconds: float) -> bool:
    """No new call for `seconds` (the check itself waits that long)."""
    before = len(calls)
    time.sleep(seconds)
    return len(calls) == before


def test_chunked_training_ends_bit_exact_with_the_run_in_one_piece(tmp_path, digits_data, chunks):
    cfg = tiny_config(steps=60, r1_gamma=1.0, ema_decay=0.99, diffaug="translation", out_dir=str(tmp_path))
    trainer = Trainer(threads=1)  # the same thread count on both sides: a CPU's sums depend on how work is split
    trainer.start(cfg.replace(run_name="chunked"), data=digits_data)
    wait_for(lambda: trainer.status().state == FINISHED, 120)
    assert len(chunks) >= 3  # really in pieces
    assert not [p for p in multiprocessing.active_children() if p.name == "dcgan-train"]  # the chunks ran here
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        whole = runner.train(cfg.replace(run_name="whole"), data=digits_data)
    finally:
        torch.set_num_threads(before)
    assert whole.state == "finished"
    a, meta_a = read(tmp_path / "chunked" / "step_00000060.safetensors")
    b, meta_b = read(tmp_path / "whole" / "step_00000060.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different
    assert meta_a["losses"] == meta_b["losses"] and meta_a["images_seen"] == meta_b["images_seen"]
    assert [r["iteration"] for r in trainer.metrics.since(0)] == list(range(1, 61))


def test_pause_step_save_resume_and_stop_work_between_and_inside_chunks(tmp_path, digits_data, chunks):
    trainer = Trainer()
    trainer.start(tiny_config(steps=100_000, out_dir=str(tmp_path), run_name="s"), data=digits_data, paused=True)
    assert trainer.status().state == PAUSED
    idle = len(chunks)
    time.sleep(1.0)
    assert len(chunks) == idle  # a paused run makes no GPU call
    trainer.step(4)
    wait_for(lambda: trainer.status().iteration == 4)
    assert trainer.save_checkpoint() == tmp_path / "s" / "step_00000004.safetensors"
    trainer.resume()
    wait_for(lambda: len(chunks) >= idle + 4 and trainer.status().iteration > 20)  # across chunk boundaries
    trainer.pause()
    wait_for(lambda: trainer.status().state == PAUSED)
    # the chunk ends once the pause is shown; a chunk that ran out of time before showing it leaves the showing to
    # one more (which took over 0.8 s to start on CI's loaded machine); then no call until a command. A paused run
    # that kept calling (chunks of 0.3 s) would never go 1.5 s without one.
    wait_for(lambda: quiet_for(chunks, 1.5), 30)
    paused_at, calls = trainer.status().iteration, len(chunks)
    time.sleep(1.0)
    assert (trainer.status().iteration, len(chunks)) == (paused_at, calls)
    trainer.stop()
    status = trainer.status()
    assert status.state == STOPPED
    assert trainer.last_checkpoint() == tmp_path / "s" / f"step_{status.iteration:08d}.safetensors"
    assert read(trainer.last_checkpoint())[1]["iteration"] == status.iteration


def test_the_time_limit_counts_the_training_time_of_every_chunk(tmp_path, digits_data, chunks):
    trainer = Trainer()
    trainer.start(tiny_config(steps=10**6, minutes=1.2 / 60, out_dir=str(tmp_path), run_name="t"), data=digits_data)
    wait_for(lambda: trainer.status().state == FINISHED, 60)
    assert len(chunks) >= 3  # 1.2 s of training in chunks of 0.3 s: not 1.2 s per chunk


def test_a_chunk_trains_even_when_rebuilding_the_run_takes_longer_than_its_time(tmp_path, digits_data, chunks,
                                                                             monkeypatch):
    """A chunk's seconds are training time (the GPU call's START_S covers building the run): on a loaded machine
    rebuilding took longer than CI's 0.3-s chunks, and a deadline counted from the call's start ended every chunk
    before its first step, for good."""
    from dcgan import checkpoint

    real = checkpoint.decode

    def slow(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "decode", slow)  # each chunk after the first rebuilds the run from its state
    trainer = Trainer()
    trainer.start(tiny_config(steps=30, out_dir=str(tmp_path), run_name="slow"), data=digits_data)
    wait_for(lambda: trainer.status().state == FINISHED, 60)
    assert len(chunks) >= 2 and trainer.status().iteration == 30
