"""The background trainer: one GANTraining in its own thread, steered by start / pause / step / stop.

The UI and the CLI both drive training through this class, so they run the same loop. The
thread publishes numbers through `MetricsBuffer` and pictures through a few attributes guarded
by one lock; callers never touch the networks while the thread trains them. An exception in
the thread is stored and shown to the caller (`status().error`, `raise_if_failed`).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .checkpoint import CheckpointError, RunFolder, load_training, restore_training, training_state
from .config import TrainConfig
from .data import ImageData
from .images import grid_array
from .models import Generator
from .train import GANTraining

IDLE, STARTING, RUNNING, PAUSED, FINISHED, STOPPED, FAILED = (
    "idle", "starting", "running", "paused", "finished", "stopped", "failed")
ACTIVE = (STARTING, RUNNING, PAUSED)
MAX_GRID_FRAMES = 120
GOOD_STATE_EVERY = 100  # steps between in-memory snapshots used to roll back after a NaN
MIN_LR_SCALE = 1 / 64  # after this many halvings a NaN pauses the run instead


class TrainerBusy(RuntimeError):
    """A second job was asked for while one is active."""


@dataclass
class Status:
    state: str = IDLE
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


def log_interval(cfg: TrainConfig, device: torch.device) -> int:
    """Host syncs every step on the CPU (free there), every 20 on a GPU (each one stalls it)."""
    if cfg.log_every:
        return cfg.log_every
    return 20 if device.type == "cuda" else 1


class Trainer:
    """One training job at a time; every method is safe to call from any thread, repeatedly."""

    def __init__(self, metric_fn: Callable[[GANTraining], dict] | None = None,
                 metric_key: str = "", lower_is_better: bool = True) -> None:
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self.metrics = MetricsBuffer()
        self.metric_fn, self.metric_key, self.lower_is_better = metric_fn, metric_key, lower_is_better
        self._reset_state()

    def _reset_state(self) -> None:
        self._state = IDLE
        self._run: GANTraining | None = None
        self._cfg: TrainConfig | None = None
        self._stop = False
        self._paused = False
        self._pending: list[str] = []  # queued single steps while paused: 'both' | 'd' | 'g'
        self._error = ""
        self._events: list[str] = []
        self._speed = 0.0
        self._iteration = 0
        self._epoch = 0.0
        self._grid: np.ndarray | None = None
        self._grid_iteration = -1
        self._frames: list[tuple[int, np.ndarray]] = []
        self._g_state: dict[str, torch.Tensor] | None = None
        self._g_cache: tuple[int, Generator] | None = None
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
            self._paused = paused
        try:
            if resume_from is not None:
                changes = {}
                if cfg is not None:
                    changes = {"steps": cfg.steps, "device": cfg.device}
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
            name = run.cfg.run_name or time.strftime(f"{run.cfg.dataset}-{run.cfg.image_size}px-%Y%m%d-%H%M%S")
            if resume_from is not None and not run.cfg.run_name:
                name = Path(resume_from).parent.name
            folder = RunFolder(Path(run.cfg.out_dir) / name, run.cfg.keep_last)
            try:  # an unwritable out_dir fails now, not at the first checkpoint
                folder.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                self._reset_state()
                raise CheckpointError(f"cannot create the run folder {folder.path}: {exc.strerror or exc}; "
                                      f"choose a writable out_dir") from exc
            self._folder = folder
            self._iteration, self._epoch = run.iteration, run.epoch
            self._thread = threading.Thread(target=self._main, name="dcgan-trainer", daemon=True)
            self._state = PAUSED if paused else RUNNING
            self._thread.start()

    def pause(self) -> None:
        with self._lock:
            if self._state == RUNNING:
                self._paused, self._state = True, PAUSED

    def resume(self) -> None:
        with self._lock:
            if self._state == PAUSED:
                self._paused, self._state = False, RUNNING
                self._wake.notify_all()

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
            self._paused, self._state = True, PAUSED
            self._pending.extend([update] * k)
            self._wake.notify_all()

    def stop(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Ask the thread to stop after its current step (it saves a final checkpoint)."""
        with self._lock:
            thread = self._thread
            if self._state in ACTIVE:
                self._stop = True
                self._wake.notify_all()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def reset(self) -> None:
        """Stop any run and forget it: plots, pictures and status go back to empty."""
        self.stop(wait=True)
        with self._lock:
            if self._state in ACTIVE or (self._thread is not None and self._thread.is_alive()):
                raise TrainerBusy("the run is still starting or stopping; try again in a moment")
            self._reset_state()

    def wait(self, timeout: float | None = None) -> str:
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
            if self._g_cache is not None and self._g_cache[0] == it:
                return self._g_cache
            G = Generator.from_config(cfg)
            G.load_state_dict(state)
            self._g_cache = (it, G.eval())
            return self._g_cache

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
        run = self._run
        assert run is not None
        try:
            self._loop(run)
        except (torch.OutOfMemoryError, MemoryError) as exc:
            self._fail(f"Out of memory ({type(exc).__name__}) at batch size {run.cfg.batch_size}, "
                       f"{run.cfg.image_size}x{run.cfg.image_size} on {run.device}: lower the batch size "
                       f"or the image size and start again.")
        except Exception as exc:
            message = str(exc).lower()  # the CPU allocator raises a plain RuntimeError
            if "out of memory" in message or "allocate memory" in message:
                self._fail(f"Out of memory at batch size {run.cfg.batch_size} on {run.device}: lower the "
                           f"batch size or the image size and start again.")
            else:
                self._fail(f"Training stopped by an error: {type(exc).__name__}: {exc}\n"
                           f"{traceback.format_exc(limit=6)}")
        finally:
            if run.device.type == "cuda":
                torch.cuda.empty_cache()

    def _fail(self, message: str) -> None:
        with self._lock:
            self._error = message
            self._state = FAILED
            self._events.append(message.splitlines()[0])

    def _loop(self, run: GANTraining) -> None:
        cfg = run.cfg
        sync_every = log_interval(cfg, run.device)
        # the snapshot copies every weight and Adam state to the host: on a GPU (a step of ~3 ms)
        # every 100 steps would cost ~10% of the speed, so it is taken every 25 syncs there
        good_every = max(GOOD_STATE_EVERY, 25 * sync_every)
        window: list[torch.Tensor] = []
        bad = torch.zeros((), dtype=torch.bool, device=run.device)
        good_state = training_state(run)
        last_grid = time.monotonic()
        t0, seen0 = time.perf_counter(), run.images_seen
        while True:
            with self._lock:
                while self._paused and not self._pending and not self._stop:
                    self._wake.wait(0.5)
                    t0, seen0 = time.perf_counter(), run.images_seen
                if self._stop:
                    break
                single = self._pending.pop(0) if self._paused and self._pending else None
            stats = run.train_step(single or "both")
            window.append(stats.as_tensor())
            for loss in (stats.loss_d, stats.loss_g):
                if loss is not None:
                    bad |= ~torch.isfinite(loss)

            done = run.iteration >= cfg.steps
            if len(window) >= sync_every or single or done:
                if bool(distributed.any_rank(bad)):  # every rank rolls back together
                    window.clear()
                    bad.zero_()
                    self._handle_nan(run, good_state)
                    continue
                values = torch.stack(window).cpu()
                window.clear()
                now = time.perf_counter()
                speed = (run.images_seen - seen0) / max(now - t0, 1e-9)
                t0, seen0 = now, run.images_seen
                means = [float(v) for v in torch.nanmean(values, dim=0)]
                row = {"iteration": run.iteration, "epoch": round(run.epoch, 4),
                       "loss_d": means[0], "loss_g": means[1], "d_real": means[2], "d_fake": means[3],
                       "images_per_s": speed, "time": time.time()}
                self.metrics.append(row)
                run.loss_log.append([run.iteration, means[0], means[1]])
                with self._lock:
                    self._iteration, self._epoch = run.iteration, run.epoch
                    if not single:
                        self._speed = speed
                if run.iteration % good_every < sync_every:
                    good_state = training_state(run)

            if single or done or time.monotonic() - last_grid >= cfg.sample_every_s:
                self._publish_pictures(run)
                last_grid = time.monotonic()
            if cfg.checkpoint_every and run.iteration % cfg.checkpoint_every == 0:
                self._checkpoint(run)
            if cfg.metric_every and self.metric_fn and distributed.is_main() and run.iteration % cfg.metric_every == 0:
                self._evaluate(run)
            if done:
                break

        self._publish_pictures(run)
        if (cfg.metric_every and self.metric_fn and distributed.is_main() and run.iteration
                and run.iteration % cfg.metric_every):
            self._evaluate(run)  # a stopped run's last state competes for best.safetensors too
        self._checkpoint(run)
        with self._lock:
            self._iteration, self._epoch = run.iteration, run.epoch
            self._state = FINISHED if run.iteration >= cfg.steps else STOPPED

    def _handle_nan(self, run: GANTraining, good_state) -> None:
        """Roll back to the last good state with half the learning rate, or pause (policy)."""
        it = run.iteration
        if run.cfg.nan_policy == "rollback" and run.lr_scale / 2 >= MIN_LR_SCALE:
            scale = run.lr_scale / 2
            tensors, meta = good_state
            restore_training(run, tensors, meta, "in-memory state")
            run.set_lr(scale)
            msg = (f"NaN/inf loss at iteration {it}: rolled back to iteration {run.iteration} and "
                   f"halved the learning rates (now x{scale:g}).")
            with self._lock:
                self._events.append(msg)
                self._iteration = run.iteration
            return
        tensors, meta = good_state
        restore_training(run, tensors, meta, "in-memory state")
        msg = (f"NaN/inf loss at iteration {it}: the run is paused at the last good state "
               f"(iteration {run.iteration}). Lower the learning rates, try another loss (hinge, "
               f"wgan-gp) or spectral norm, then resume or start again.")
        with self._lock:
            self._events.append(msg)
            self._error = msg
            self._iteration = run.iteration
            self._paused, self._state = True, PAUSED

    def _publish_pictures(self, run: GANTraining) -> None:
        grid = grid_array(run.fixed_samples(), nrow=8)
        g_state = {k: v.detach().to("cpu", copy=True) for k, v in run.sampler().state_dict().items()}
        with self._lock:
            self._grid, self._grid_iteration = grid, run.iteration
            self._g_state = g_state
            if not self._frames or self._frames[-1][0] != run.iteration:
                self._frames.append((run.iteration, grid))
                if len(self._frames) > MAX_GRID_FRAMES:  # keep the first, thin the rest evenly
                    self._frames = self._frames[:1] + self._frames[2::2]

    def _checkpoint(self, run: GANTraining) -> None:
        folder = self._folder
        if not distributed.is_main():  # under torchrun rank 0 alone writes (the state is the same on all)
            return
        assert folder is not None
        try:
            path = folder.save(run)
        except CheckpointError as exc:
            with self._lock:
                self._events.append(str(exc))
                self._error = str(exc)  # shown to the user; training goes on, older checkpoints stay
            return
        with self._lock:
            self._last_checkpoint = path

    def _evaluate(self, run: GANTraining) -> None:
        record = {"iteration": run.iteration, **self.metric_fn(run)}
        run.history.append(record)
        score = record.get(self.metric_key)
        summary = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("iteration", self.metric_key))
        with self._lock:
            self._events.append(f"metrics at iteration {run.iteration}: {summary}")
        folder = self._folder
        try:
            better = score is not None and folder is not None and folder.offer_best(run, float(score),
                                                                                    self.lower_is_better)
        except CheckpointError as exc:  # a full disk must not end the run
            with self._lock:
                self._events.append(str(exc))
                self._error = str(exc)
            return
        if better:
            with self._lock:
                self._events.append(f"new best {self.metric_key} = {score:.4g} at iteration {run.iteration}")

