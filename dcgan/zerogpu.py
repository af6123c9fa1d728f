"""Training on a ZeroGPU Space: the run advances in chunks, each one call of a `spaces.GPU` function.

On ZeroGPU a GPU exists only while a function decorated with `spaces.GPU(duration=...)` runs: the `spaces`
package forks the app's process, attaches a GPU to the fork, runs the function there and pickles its result
back (spaces/zero/wrappers.py). The call must come from the app's own process (the one that imported `spaces`
and launched Gradio, whose decorated functions ZeroGPU registered at launch; its quota is that of the visitor
whose request made the call), so the forkserver's training process can never hold a GPU. Hence:

- the chunk loop lives in the app's process: `worker.launch` starts `worker._drive` in a thread that takes the
  training process's place behind the same pipe (reports up, commands down), so dcgan/trainer.py sees no
  difference (the loop is in dcgan/worker.py beside the process it replaces; this module has what is ZeroGPU's);
- each chunk (`worker.run_chunk`, decorated by `gpu_chunk`) rebuilds the run on the GPU from the state
  carried on the CPU (`Carry`: `GANTraining.state_dict` as safetensors bytes, the run folder, training
  time, the Control's pause / step / save / stop state), trains with `runner.train` (the same hooks as
  everywhere) until its time is up or the run is paused with nothing to do (`ChunkControl` ends it with
  `Turn.suspend`), and hands the state back as bytes: nothing of the run stays on the GPU between chunks,
  and a paused run holds none;
- between chunks `worker._drive` reads the commands itself (blocking while the run is paused with nothing queued);
  inside a chunk `ChunkControl` reads them from the pipe before every step;
- the thread runs in the context of the Start click (`contextvars.copy_context`), so each chunk is scheduled
  under that visitor's (the owner's) ZeroGPU quota;
- a chunk that ZeroGPU refuses or aborts (quota, duration) pauses the run at the state carried before it;
  Resume tries again.

Off ZeroGPU the real `spaces` decorator returns the function itself; DCGAN_CHUNK_S=<seconds> forces this path
there (tests, trying it on a CPU): chunked training then runs in this thread and ends bit-exact with the
same run trained in one piece (tests/test_zerogpu.py).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .train import Control, Hook, Turn

CHUNK_S = 40.0  # training seconds per GPU call on ZeroGPU
START_S = 20  # added to the call's duration: forking, CUDA, moving the state and the data, cuDNN's autotuning
CHUNK_ENV = "DCGAN_CHUNK_S"  # seconds per chunk; set, it forces the chunked path off ZeroGPU too


def on_zerogpu() -> bool:
    """The rule of spaces.config (SPACES_ZERO_GPU), read without importing `spaces` (which imports Gradio)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def chunked() -> bool:
    """Whether runs advance in GPU calls from the app's process (ZeroGPU, or forced by DCGAN_CHUNK_S)."""
    return on_zerogpu() or bool(os.environ.get(CHUNK_ENV))


def chunk_seconds() -> float:
    return float(os.environ.get(CHUNK_ENV) or CHUNK_S)


@functools.cache
def gpu_chunk(chunk: Callable[..., Carry]) -> Callable[..., Carry]:
    """The chunk function (worker.run_chunk) as a ZeroGPU function (the real `spaces` package: a no-op off
    ZeroGPU). On ZeroGPU worker.py calls this when it is imported, before Gradio launches."""
    import spaces

    return spaces.GPU(duration=round(chunk_seconds()) + START_S)(chunk)


@dataclass
class Carry:
    """A run between two chunks, on the CPU."""

    state: bytes | None = None  # the run's state_dict as safetensors bytes (checkpoint.encode); None before it
    run_dir: str = ""
    trained_s: float = 0.0  # training time so far, for cfg.minutes
    iteration: int = 0
    epoch: float = 0.0
    control: dict[str, Any] = field(default_factory=dict)  # ChunkControl.saved(): paused, shown, pending, ...
    started: bool = False  # Started went out
    end: Any = None  # reports.End  # the run ended (finished, stopped, failed) in the last chunk
    chunks: int = 0  # GPU calls so far


def idle(control) -> bool:
    """Paused, its pictures shown, nothing queued: a chunk ends and the next one waits for a command."""
    return control.paused and control.shown and not control.pending and not control.saving and not control.stopping


def restore(control, saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        setattr(control, name, type(getattr(control, name))(value))


def saved(control) -> dict[str, Any]:
    """What of a Control outlives a chunk (plain values: they cross the fork in a pickle)."""
    return {"paused": control.paused, "shown": control.shown, "stopping": control.stopping,
            "saving": control.saving, "pending": list(control.pending)}


class ChunkControl(Control, Hook):
    """The run's Control inside one chunk: `read` takes the commands waiting on the pipe before each step; the
    chunk ends (Turn.suspend) when its time is up, right after a host sync so no step goes unchecked for NaN,
    or when the run is paused with nothing to do."""

    def __init__(self, read: Callable[[Control], None], carry: Carry, seconds: float) -> None:
        super().__init__()
        restore(self, carry.control)
        self.read, self.seconds = read, seconds
        self.deadline: float | None = None  # from the first turn: building the run is START_S's, not training time
        self.unsynced = 0  # steps since fit's last host sync (on_log / on_nan)

    def next_turn(self) -> Turn | None:
        self.read(self)
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        if not self.stopping and (idle(self) or time.monotonic() >= self.deadline and not self.unsynced):
            return Turn(suspend=True)
        turn = super().next_turn()
        if turn is not None and not (turn.save or turn.show):
            self.unsynced += 1
        return turn

    def on_log(self, run, row: dict) -> None:
        self.unsynced = 0

    def on_nan(self, run, iteration: int) -> None:
        self.unsynced = 0


__all__ = ["chunked", "on_zerogpu", "chunk_seconds", "gpu_chunk", "ChunkControl", "saved", "idle", "restore",
           "Carry", "CHUNK_S", "START_S", "CHUNK_ENV"]
