"""The app's background trainer: `train.fit` in its own thread, steered by start / pause / step / stop.

It runs the same loop as the command line; what differs is around it: a `Control` for the pause /
single-step gate and stop, and hooks that publish numbers (`MetricsBuffer`), pictures and events
for the UI under one lock. Callers never touch the networks while the thread trains them; they read
CPU copies (`generator()`, `snapshot()`). An exception in the thread is stored and shown to the
caller (`status().error`, `raise_if_failed`).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, RunFolder, load_training
from .config import TrainConfig
from .data import ImageData
from .images import grid_array
from .models import Discriminator, Generator
from .train import MIN_LR_SCALE, Control, GANTraining, Hook, NanRollback, fit, log_interval, out_of_memory_message

__all__ = ["Trainer", "TrainerBusy", "State", "Status", "MetricsBuffer", "MIN_LR_SCALE", "log_interval"]


class State(StrEnum):
    """A str, so `status.state == "running"` holds and it prints as its value."""

    IDLE = "idle"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"
    FAILED = "failed"


IDLE, STARTING, RUNNING, PAUSED, FINISHED, STOPPED, FAILED = State
ACTIVE = (STARTING, RUNNING, PAUSED)
MAX_GRID_FRAMES = 120


class TrainerBusy(RuntimeError):
    """A second job was asked for while one is active."""


@dataclass
class Status:
    state: State = IDLE
    iteration: int = 0
    total: int = 0
    epoch: float = 0.0
    images_per_s: float = 0.0
    eta_s: float | None = None
    device: str = ""
    precision: str = ""
    run_dir: str = ""
    error: str = ""  # what went wrong and what to do
    events: list[str] = field(default_factory=list)  # NaN roll-backs, checkpoint saves, ...


class MetricsBuffer:
    """Append-only, thread-safe list of per-sync records with a cheap 'since index' read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[dict] = []

    def append(self, row: dict) -> None:
        with self._lock:
            self._rows.append(row)

    def since(self, index: int = 0) -> list[dict]:
        with self._lock:
            return list(self._rows[index:])

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


def tensorboard_hook(run_dir: Path) -> list[Hook]:
    """TensorBoard event files in the run folder (dcgan/tblog.py); none where TensorBoard is missing."""
    try:
        from .tblog import TensorBoardHook
    except ImportError:
        return []
    return [TensorBoardHook(run_dir)]


class Trainer:
    """One training job at a time; every method is safe to call from any thread, repeatedly.

    hooks (and add_hook) live as long as the trainer and see every run it trains."""

    def __init__(self, metric_fn: Callable[[GANTraining], dict] | None = None, metric_key: str = "score",
                 lower_is_better: bool = True, hooks: Iterable[Hook] = ()) -> None:
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self.metrics = MetricsBuffer()
        self.metric_fn, self.metric_key, self.lower_is_better = metric_fn, metric_key, lower_is_better
        self._hooks: list[Hook] = list(hooks)
        self._reset_state()

    def add_hook(self, hook: Hook) -> None:
        """A hook for every later run (one already training picks it up at its next start)."""
        with self._lock:
            self._hooks.append(hook)

    def _reset_state(self) -> None:
        self._state = IDLE
        self._run: GANTraining | None = None
        self._cfg: TrainConfig | None = None
        self._control = Control()
        self._error = ""
        self._events: list[str] = []
        self._speed = 0.0
        self._iteration = 0
        self._epoch = 0.0
        self._grid: np.ndarray | None = None
        self._grid_iteration = -1
        self._frames: list[tuple[int, np.ndarray]] = []
        self._g_state: dict[str, torch.Tensor] | None = None
        self._d_state: dict[str, torch.Tensor] | None = None
        self._g_cache: tuple[int, Generator] | None = None
        self._snapshot_cache: tuple[int, Generator, Discriminator] | None = None
        self._folder: RunFolder | None = None
        self._last_checkpoint: Path | None = None
        self.metrics.clear()

    # ---- control ------------------------------------------------------------------------------
    def start(self, cfg: TrainConfig | None = None, *, resume_from: str | Path | None = None,
              data: ImageData | None = None, paused: bool = False) -> None:
        """Start a new run (or resume a checkpoint) in the background. Raises TrainerBusy if one is
        active and ConfigError / DatasetError / CheckpointError before anything starts."""
        with self._lock:
            if self._state in ACTIVE:
                raise TrainerBusy(f"a training run is already {self._state}; stop it first")
            if cfg is None and resume_from is None:
                raise ValueError("start needs a config or a checkpoint to resume")
            if cfg is not None:
                cfg.validate()
            self._reset_state()
            self._state = STARTING
            self._control = Control(paused=paused)
        try:
            if resume_from is not None:
                changes = {"steps": cfg.steps, "device": cfg.device} if cfg is not None else {}
                run = load_training(resume_from, data, **changes)
            else:
                run = GANTraining(cfg, data)
            self._publish_pictures(run)  # the first grid; an OOM here must not leave us 'starting'
        except BaseException:
            with self._lock:
                self._reset_state()
            raise
        with self._lock:
            self._run, self._cfg = run, run.cfg
            try:
                self._folder = RunFolder.open(run.cfg, resume_from)
            except CheckpointError:
                self._reset_state()
                raise
            self._iteration, self._epoch = run.iteration, run.epoch
            self._thread = threading.Thread(target=self._main, name="dcgan-trainer", daemon=True)
            self._state = PAUSED if paused else RUNNING
            self._thread.start()

    def pause(self) -> None:
        with self._lock:
            if self._state == RUNNING:
                self._control.pause()
                self._state = PAUSED

    def resume(self) -> None:
        with self._lock:
            if self._state == PAUSED:
                self._control.resume()
                self._state = RUNNING

    def step(self, k: int = 1, update: str = "both") -> None:
        """Queue k single iterations for a paused run (pauses a running one first)."""
        if update not in ("both", "d", "g"):
            raise ValueError("update must be 'both', 'd' or 'g'")
        k = int(k)
        if not 1 <= k <= 10_000:
            raise ValueError("k: number of steps must be in 1..10000")
        with self._lock:
            if self._state not in (RUNNING, PAUSED):
                raise RuntimeError("there is no run to step; start one first")
            self._control.step(k, update)
            self._state = PAUSED

    def stop(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Stop after the current step; the run saves a checkpoint at that iteration first. Call this
        (wait=True) from a SIGTERM handler so a restarted server loses nothing."""
        with self._lock:
            thread = self._thread
            if self._state in ACTIVE:
                self._control.stop()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def reset(self) -> None:
        """Stop any run and forget it: plots, pictures and status go back to empty."""
        self.stop(wait=True)
        with self._lock:
            if self._state in ACTIVE or (self._thread is not None and self._thread.is_alive()):
                raise TrainerBusy("the run is still starting or stopping; try again in a moment")
            self._reset_state()

    def wait(self, timeout: float | None = None) -> State:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status().state

    def raise_if_failed(self) -> None:
        with self._lock:
            if self._state == FAILED:
                raise RuntimeError(self._error)

    # ---- what callers read -------------------------------------------------------------------
    def status(self) -> Status:
        with self._lock:
            cfg, run = self._cfg, self._run
            total = cfg.steps if cfg else 0
            eta = None
            if self._state == RUNNING and self._speed > 0 and cfg:
                eta = (total - self._iteration) * cfg.batch_size / self._speed
            return Status(
                state=self._state, iteration=self._iteration, total=total, epoch=self._epoch,
                images_per_s=self._speed, eta_s=eta,
                device=str(run.device) if run else "", precision=str(run.dtype).replace("torch.", "") if run else "",
                run_dir=str(self._folder.path) if self._folder else "", error=self._error,
                events=list(self._events[-20:]))

    @property
    def config(self) -> TrainConfig | None:
        return self._cfg

    def grid(self) -> tuple[int, np.ndarray | None]:
        """(iteration, uint8 HxWx3) of the latest fixed-noise grid."""
        with self._lock:
            return self._grid_iteration, self._grid

    def frames(self) -> list[tuple[int, np.ndarray]]:
        """Past grids (thinned to at most MAX_GRID_FRAMES), oldest first."""
        with self._lock:
            return list(self._frames)

    def generator(self) -> tuple[int, Generator | None]:
        """A CPU copy of the sampling generator as of the latest grid, in eval mode; safe to use
        from any thread while training continues."""
        with self._lock:
            state, it, cfg = self._g_state, self._grid_iteration, self._cfg
            if state is None or cfg is None:
                return -1, None
            if self._g_cache is None or self._g_cache[0] != it:
                G = Generator.from_config(cfg)
                G.load_state_dict(state)
                self._g_cache = (it, G.eval())
            return self._g_cache

    def snapshot(self) -> tuple[int, Generator, Discriminator] | None:
        """(iteration, G, D): CPU copies in eval mode of the sampling generator and of D as of the
        latest pictures (for D's view and per-visitor exploring); None before the first pictures."""
        with self._lock:
            it, g_state, d_state, cfg = self._grid_iteration, self._g_state, self._d_state, self._cfg
            if g_state is None or d_state is None or cfg is None:
                return None
            if self._snapshot_cache is None or self._snapshot_cache[0] != it:
                _, G = self.generator()
                D = Discriminator.from_config(cfg)
                D.load_state_dict(d_state)
                self._snapshot_cache = (it, G, D.eval())
            return self._snapshot_cache

    def history(self) -> list[dict]:
        """Quality-metric records of the run (metric_fn every cfg.metric_every steps), oldest first."""
        with self._lock:
            run = self._run
        return [dict(h) for h in list(run.history)] if run is not None else []

    def last_checkpoint(self) -> Path | None:
        with self._lock:
            return self._last_checkpoint

    def save_checkpoint(self) -> Path:
        """Save now, from the training thread's side (waits for the current step)."""
        with self._lock:
            run, folder = self._run, self._folder
            if run is None or folder is None:
                raise RuntimeError("there is no run to save")
            if self._state == RUNNING:
                raise RuntimeError("pause the run before saving by hand (it saves on its own every "
                                   f"{run.cfg.checkpoint_every} steps and when stopped)")
            path = folder.save(run)
            self._last_checkpoint = path
            return path

    # ---- the thread ------------------------------------------------------------------------
    def _main(self) -> None:
        run, folder = self._run, self._folder
        assert run is not None and folder is not None
        with self._lock:
            hooks = [NanRollback(say=self._event, pause=self._pause_with_error), _Publisher(self),
                     *tensorboard_hook(folder.path), *self._hooks]
        try:
            state = fit(run, hooks, self._control, folder=folder, metric_fn=self.metric_fn,
                        metric_key=self.metric_key, lower_is_better=self.lower_is_better)
            with self._lock:
                self._iteration, self._epoch = run.iteration, run.epoch
                self._state = State(state)
        except Exception as exc:
            self._fail(out_of_memory_message(exc, run.cfg, run.device) or
                       f"Training stopped by an error: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")
        finally:
            if run.device.type == "cuda":
                torch.cuda.empty_cache()

    def _fail(self, message: str) -> None:
        with self._lock:
            self._error = message
            self._state = FAILED
            self._events.append(message.splitlines()[0])

    def _event(self, message: str, problem: bool = False) -> None:
        with self._lock:
            self._events.append(message)
            if problem:
                self._error = message

    def _pause_with_error(self, message: str) -> None:
        with self._lock:
            self._events.append(message)
            self._error = message
            self._control.pause()
            self._state = PAUSED

    def _publish_pictures(self, run: GANTraining, images: torch.Tensor | None = None) -> None:
        grid = grid_array(run.fixed_samples() if images is None else images, nrow=8)
        g_state = {k: v.detach().to("cpu", copy=True) for k, v in run.sampler().state_dict().items()}
        d_state = {k: v.detach().to("cpu", copy=True) for k, v in run.D.state_dict().items()}
        with self._lock:
            self._grid, self._grid_iteration = grid, run.iteration
            self._g_state, self._d_state = g_state, d_state
            if not self._frames or self._frames[-1][0] != run.iteration:
                self._frames.append((run.iteration, grid))
                if len(self._frames) > MAX_GRID_FRAMES:  # keep the first, thin the rest evenly
                    self._frames = self._frames[:1] + self._frames[2::2]


class _Publisher(Hook):
    """Hands what the loop reports to the Trainer's readers (status, plots, pictures, events)."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer

    def on_log(self, run: GANTraining, row: dict) -> None:
        t = self.trainer
        t.metrics.append(row)
        with t._lock:
            t._iteration, t._epoch = run.iteration, run.epoch
            if t._state == RUNNING:  # a single step's speed means nothing
                t._speed = row["images_per_s"]

    def on_nan(self, run: GANTraining, iteration: int) -> None:
        with self.trainer._lock:
            self.trainer._iteration, self.trainer._epoch = run.iteration, run.epoch

    def on_pictures(self, run: GANTraining, images: torch.Tensor) -> None:
        self.trainer._publish_pictures(run, images)

    def on_checkpoint(self, run: GANTraining, path: Path) -> None:
        with self.trainer._lock:
            self.trainer._last_checkpoint = path

    def on_event(self, run: GANTraining, message: str, problem: bool = False) -> None:
        self.trainer._event(message, problem)
