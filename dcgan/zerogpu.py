"""Training on a ZeroGPU Space: the run advances in chunks, each one call of a `spaces.GPU` function.

On ZeroGPU a GPU exists only while a function decorated with `spaces.GPU(duration=...)` runs: the `spaces`
package forks the app's process, attaches a GPU to the fork, runs the function there and pickles its result
back (spaces/zero/wrappers.py). The call must come from the app's own process (the one that imported `spaces`
and launched Gradio, whose decorated functions ZeroGPU registered at launch; its quota is that of the visitor
whose request made the call), so the forkserver's training process can never hold a GPU. Hence:

- the chunk loop lives here, in the app's process: `start` runs `_drive` in a thread that takes the training
  process's place behind the same pipe (reports up, commands down), so dcgan/trainer.py sees no difference;
- each chunk (`run_chunk`, decorated) rebuilds the run on the GPU from the state carried on the CPU
  (`Carry`: `GANTraining.state_dict` as safetensors bytes, the run folder, training time, the Control's
  pause / step / save / stop state), trains with `runner.train` (the same hooks as everywhere) until its
  time is up or the run is paused with nothing to do (`ChunkControl` ends it with `Turn.suspend`), and hands
  the state back as bytes: nothing of the run stays on the GPU between chunks, and a paused run holds none;
- between chunks `_drive` reads the commands itself (blocking while the run is paused with nothing queued);
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

import contextvars
import functools
import os
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import reports as rp

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
def gpu_chunk() -> Callable[..., Carry]:
    """run_chunk as a ZeroGPU function (the real `spaces` package: a no-op off ZeroGPU)."""
    import spaces

    return spaces.GPU(duration=round(chunk_seconds()) + START_S)(run_chunk)


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
    end: rp.End | None = None  # the run ended (finished, stopped, failed) in the last chunk
    chunks: int = 0  # GPU calls so far


def _idle(control) -> bool:
    """Paused, its pictures shown, nothing queued: a chunk ends and the next one waits for a command."""
    return control.paused and control.shown and not control.pending and not control.saving and not control.stopping


def _restore(control, saved: dict[str, Any]) -> None:
    for name, value in saved.items():
        setattr(control, name, type(getattr(control, name))(value))


def saved(control) -> dict[str, Any]:
    """What of a Control outlives a chunk (plain values: they cross the fork in a pickle)."""
    return {"paused": control.paused, "shown": control.shown, "stopping": control.stopping,
            "saving": control.saving, "pending": list(control.pending)}


def take_commands(conn, control, wait: float = 0.0) -> None:
    """Every command waiting on the pipe, as Control calls (waiting up to `wait` s for the first); the pipe
    ending means the app is gone: stop (which saves)."""
    from .worker import obey, recv

    try:
        if not conn.poll(wait):
            return
        while True:
            obey(recv(conn), control)
            if not conn.poll(0):
                return
    except (EOFError, OSError):
        control.stop()


def _control_class():
    from .train import Control, Hook, Turn

    class ChunkControl(Control, Hook):
        """The run's Control inside one chunk: commands are read from the pipe before each step; the chunk ends
        (Turn.suspend) when its time is up, right after a host sync so no step goes unchecked for NaN, or when
        the run is paused with nothing to do."""

        def __init__(self, conn, carry: Carry, seconds: float) -> None:
            super().__init__()
            _restore(self, carry.control)
            self.conn, self.deadline = conn, time.monotonic() + seconds
            self.unsynced = 0  # steps since fit's last host sync (on_log / on_nan)

        def next_turn(self) -> Turn | None:
            take_commands(self.conn, self)
            if not self.stopping and (_idle(self) or time.monotonic() >= self.deadline and not self.unsynced):
                return Turn(suspend=True)
            turn = super().next_turn()
            if turn is not None and not (turn.save or turn.show):
                self.unsynced += 1
            return turn

        def on_log(self, run, row: dict) -> None:
            self.unsynced = 0

        def on_nan(self, run, iteration: int) -> None:
            self.unsynced = 0

    return ChunkControl


def run_chunk(payload: bytes, carry: Carry, conn, seconds: float) -> Carry:
    """One GPU call: the run (built, or rebuilt from carry.state) trains for `seconds` or until it is paused,
    stopped or done; what it reports goes down `conn`. Returns the new carry (carry.end set when the run ended).
    Errors come back in carry.end, not raised: ZeroGPU would pass on only their class name."""
    from . import runner
    from .checkpoint import RunFolder, config_of, decode, encode
    from .train import GANTraining
    from .worker import Relay, _portable, send

    job = pickle.loads(payload)  # our own bytes, pickled by worker.launch from the app's Job
    control = _control_class()(conn, carry, seconds)
    lock = threading.Lock()

    def say(report: rp.Report) -> None:
        with lock:
            try:
                send(conn, report)
            except (OSError, ValueError):  # the app is gone: stop, which saves the run
                control.stop()

    relay = Relay(say, job, control)
    relay.started = carry.started
    carry.chunks += 1
    try:
        if carry.state is None:
            run, folder = runner.open_run(job.cfg, job.resume_from, job.data, job.branch)
        else:
            tensors, meta = decode(carry.state, "the run's state")
            run = GANTraining(config_of(meta), job.data)
            run.load_state_dict(tensors, meta, "the run's state")
            run.loss_log = [list(r) for r in meta["losses"]]
            folder = RunFolder(carry.run_dir, run.cfg.keep_last)
    except BaseException as exc:  # building the run failed (first chunk: nothing started)
        carry.end = rp.End(job.run_id, 0, 0.0, "failed", f"{type(exc).__name__}: {exc}", _portable(exc))
        return carry
    relay.run, relay.run_dir = run, str(folder.path)
    run.trained_s = carry.trained_s
    try:
        outcome = runner.train(run.cfg, data=job.data, hooks=[control, relay], control=control,
                               metric_fn=job.metric_fn, metric_key=job.metric_key,
                               lower_is_better=job.lower_is_better, pause_on_nan=True, run_in=(run, folder))
    except runner.RunFailed as exc:
        cause = None if relay.started else _portable(exc.__cause__ or exc)
        carry.end = rp.End(job.run_id, run.iteration, run.epoch, "failed", str(exc), cause)
        return carry
    carry.started, carry.run_dir, carry.trained_s = relay.started, str(folder.path), run.trained_s
    carry.iteration, carry.epoch = run.iteration, run.epoch
    carry.control = saved(control)
    if outcome.state == "suspended":
        tensors, meta = run.state_dict()
        meta["losses"] = run.loss_log  # all of it: the state_dict thins a long log for checkpoint files
        carry.state = encode(tensors, meta)
    else:
        carry.end = rp.End(job.run_id, run.iteration, run.epoch, outcome.state)
    return carry


class Driver(threading.Thread):
    """The chunk loop, in the app's process; stands where dcgan/trainer.py keeps its training process."""

    def __init__(self, conn) -> None:
        super().__init__(name="dcgan-zerogpu", daemon=True)
        self.conn = conn
        self.exitcode: int | None = None
        self._context = contextvars.copy_context()  # the Start click's request: its visitor's ZeroGPU quota

    def run(self) -> None:
        try:
            self._context.run(_drive, self.conn)
            self.exitcode = 0
        except BaseException:
            self.exitcode = 1
            raise
        finally:
            self.conn.close()

    def kill(self) -> None:
        """No thread can be killed: closing its pipe makes the run stop (and save) at its next turn."""
        self.conn.close()


def start() -> tuple[Driver, Any]:
    """The chunk loop's thread and the app's end of its pipe (worker.launch sends the Job down it)."""
    import multiprocessing

    conn, driver_end = multiprocessing.Pipe()
    driver = Driver(driver_end)
    driver.start()
    return driver, conn


def _drive(conn) -> None:
    """Chunk after chunk until the run ends; between chunks the commands arrive here."""
    from .train import Control
    from .worker import send

    payload = conn.recv_bytes()
    job = pickle.loads(payload)
    carry = Carry(control=saved(Control(paused=job.paused)))
    call = gpu_chunk()
    while carry.end is None:
        control = Control()
        _restore(control, carry.control)
        while carry.chunks and _idle(control):  # a paused run holds no GPU: wait here for Resume, Step, Save, Stop
            take_commands(conn, control, wait=0.5)
        take_commands(conn, control)
        carry.control = saved(control)
        before = carry
        try:
            carry = call(payload, before, conn, chunk_seconds())
        except Exception as exc:  # refused or aborted by ZeroGPU (quota, duration): paused at the state before
            if not before.started:
                carry = before
                carry.end = rp.End(job.run_id, 0, 0.0, "failed", f"the GPU call failed: {exc}")
                break
            control.pause()
            control.shown = True
            carry = before
            carry.control = saved(control)
            why = f"The GPU call failed ({exc}): the run is paused at its last chunk's state; resume to try again."
            try:
                send(conn, rp.Event(job.run_id, carry.iteration, carry.epoch, message=why, problem=True, paused=True))
            except (OSError, ValueError):
                return
    try:
        send(conn, carry.end)
    except (OSError, ValueError):
        pass


__all__ = ["chunked", "on_zerogpu", "chunk_seconds", "gpu_chunk", "run_chunk", "Carry", "start", "CHUNK_S",
           "START_S", "CHUNK_ENV"]

if on_zerogpu():  # ZeroGPU registers the app's GPU functions when Gradio launches: decorate before that
    gpu_chunk()
