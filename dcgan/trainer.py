"""The app's background trainer: `train.fit` steered by start / pause / step / stop, in a thread or in a
process of its own.

It runs the same loop as the command line; what differs is around it: a `Control` for the pause /
single-step gate and stop, and hooks that publish numbers (`MetricsBuffer`), pictures and events
for the UI under one lock. Callers never touch the networks while training runs; they read CPU
copies (`generator()`, `snapshot()`). An error in training is stored and shown to the caller
(`status().error`, `raise_if_failed`).

process=True (the app) trains in a child process. Beside thirty visitors a training thread in the
serving process waits for Python's GIL after every torch op and kept about half its solo speed; the
same loop in a process of its own kept 81-90 % (docs/ROBUSTNESS.md). The child runs the same `fit`;
one more hook there (`_Relay`) sends what the loop reports down a pipe, and this process's reader
thread hands it to the same hooks here, with a `RemoteRun` in place of the run. Commands go the
other way. If the app goes away, the child stops at the next step and saves a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import os
import pickle
import queue
import signal
import threading
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from .checkpoint import CheckpointError, RunFolder, load_training
from .config import TrainConfig
from .data import ImageData
from .images import grid_array
from .models import Discriminator, Generator
from .train import MIN_LR_SCALE, Control, GANTraining, Hook, NanRollback, fit, log_interval, out_of_memory_message

__all__ = ["Trainer", "TrainerBusy", "State", "Status", "MetricsBuffer", "RemoteRun", "Pictures", "MIN_LR_SCALE",
           "log_interval"]


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
SAVE_TIMEOUT_S = 300.0  # a save by hand waits this long for the training process


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


class Pictures(NamedTuple):
    """What the UI shows of a run as of its latest pictures; taken on the training side."""

    grid: np.ndarray  # uint8 HxWx3, the fixed-noise grid
    g_state: dict[str, torch.Tensor]  # the sampling generator's weights (the EMA copy when kept), CPU
    d_state: dict[str, torch.Tensor]  # D's weights, CPU


@dataclass
class RemoteRun:
    """A run training in the child process as this process sees it: what hooks here read of a run, and
    what the child sent with its latest pictures (D's view's snapshot when a hook asked for it)."""

    cfg: TrainConfig
    device: torch.device
    dtype: torch.dtype
    data: ImageData | None
    iteration: int = 0
    epoch: float = 0.0
    history: list[dict] = field(default_factory=list)
    pictures: Pictures | None = None
    snapshot: Any = None  # dcgan.dview.Snapshot


def pictures_of(run: GANTraining | RemoteRun, images: torch.Tensor | None = None) -> Pictures:
    """Taken where the run trains (a run in the child process sent them with its pictures)."""
    if isinstance(run, RemoteRun):
        assert run.pictures is not None
        return run.pictures
    grid = grid_array(run.fixed_samples() if images is None else images, nrow=8)
    return Pictures(grid, _cpu(run.sampler().state_dict()), _cpu(run.D.state_dict()))


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def open_run(cfg: TrainConfig | None, resume_from: str | Path | None,
             data: ImageData | None) -> tuple[GANTraining, RunFolder, Pictures]:
    """A new run (or a checkpoint's, with cfg's steps and device), its folder and its first pictures."""
    if resume_from is not None:
        changes = {"steps": cfg.steps, "device": cfg.device} if cfg is not None else {}
        run = load_training(resume_from, data, **changes)
    else:
        assert cfg is not None
        run = GANTraining(cfg, data)
    first = pictures_of(run)  # an out-of-memory here must not leave the trainer 'starting'
    return run, RunFolder.open(run.cfg, resume_from), first


def failure_message(exc: BaseException, run: GANTraining | RemoteRun) -> str:
    return (out_of_memory_message(exc, run.cfg, run.device) or
            f"Training stopped by an error: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")


class Trainer:
    """One training job at a time; every method is safe to call from any thread, repeatedly.

    hooks (and add_hook) live as long as the trainer and see every run it trains; with process=True they
    run in this process and get a `RemoteRun`, and metric_fn must pickle (a module-level function or a
    functools.partial of one). threads: torch threads for training (0: torch's choice)."""

    def __init__(self, metric_fn: Callable[[GANTraining], dict] | None = None, metric_key: str = "score",
                 lower_is_better: bool = True, hooks: Iterable[Hook] = (), *, process: bool = False,
                 threads: int = 0) -> None:
        if process and metric_fn is not None:
            try:
                pickle.dumps(metric_fn)
            except Exception as exc:
                raise ValueError("a Trainer with process=True sends metric_fn to its training process: use a "
                                 f"module-level function or a functools.partial of one ({exc})") from exc
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._save_lock = threading.Lock()
        self.metrics = MetricsBuffer()
        self.metric_fn, self.metric_key, self.lower_is_better = metric_fn, metric_key, lower_is_better
        self.process, self.threads = process, threads
        self._hooks: list[Hook] = list(hooks)
        self._reset_state()

    def warm_up(self) -> None:
        """Start the training processes' forkserver now (it imports torch and the training code, ~3 s), so the
        first run starts as fast as later ones (0.2 s). The app calls it in a thread at launch."""
        if self.process and _context().get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def add_hook(self, hook: Hook) -> None:
        """A hook for every later run (one already training picks it up at its next start)."""
        with self._lock:
            self._hooks.append(hook)

    def _reset_state(self) -> None:
        self._state = IDLE
        self._run: GANTraining | RemoteRun | None = None
        self._cfg: TrainConfig | None = None
        self._control: Control | _RemoteControl = Control()
        self._replies: queue.Queue = queue.Queue()  # answers of the training process to a save
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
        active and ConfigError / DatasetError / CheckpointError before anything starts (with process=True,
        what building the run raised in the child)."""
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
            hooks = list(self._hooks)
        try:
            if self.process:
                run, folder, first, child = self._launch(cfg, resume_from, data, paused, hooks)
            else:
                (run, folder, first), child = open_run(cfg, resume_from, data), None
            self._show(run.iteration, first)
        except BaseException:
            with self._lock:
                self._reset_state()
            raise
        with self._lock:
            self._run, self._cfg, self._folder = run, run.cfg, folder
            self._iteration, self._epoch = run.iteration, run.epoch
            if child is None:
                self._thread = threading.Thread(target=self._main, args=(hooks,), name="dcgan-trainer", daemon=True)
            else:
                stopping, self._control = self._control.stopping, _RemoteControl(child[1])
                if stopping:  # asked for while the child was starting
                    self._control.stop()
                self._thread = threading.Thread(target=self._follow, args=(*child, run, hooks), name="dcgan-trainer",
                                                daemon=True)
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
        """Save now, from the training side (waits for the current step)."""
        with self._save_lock:
            with self._lock:
                run, folder, control = self._run, self._folder, self._control
                if run is None or folder is None:
                    raise RuntimeError("there is no run to save")
                if self._state == RUNNING:
                    raise RuntimeError("pause the run before saving by hand (it saves on its own every "
                                       f"{run.cfg.checkpoint_every} steps and when stopped)")
                if isinstance(control, Control):
                    path = folder.save(run)
                    self._last_checkpoint = path
                    return path
                replies = self._replies
            control.save()  # the training process saves; its reader thread needs the lock meanwhile
            try:
                reply = replies.get(timeout=SAVE_TIMEOUT_S)
            except queue.Empty:
                raise RuntimeError(f"the training process did not save within {SAVE_TIMEOUT_S:g} s") from None
            if isinstance(reply, BaseException):
                raise reply
            with self._lock:
                self._last_checkpoint = reply
            return reply

    # ---- training, in a thread of this process ---------------------------------------------------
    def _main(self, hooks: list[Hook]) -> None:
        run, folder = self._run, self._folder
        assert isinstance(run, GANTraining) and folder is not None
        if self.threads:
            torch.get_num_threads()  # a thread's first torch call takes the count last set anywhere: first
            torch.set_num_threads(self.threads)
        hooks = [NanRollback(say=self._event, pause=self._pause_with_error), _Publisher(self),
                 *tensorboard_hook(folder.path), *hooks]
        try:
            state = fit(run, hooks, self._control, folder=folder, metric_fn=self.metric_fn,
                        metric_key=self.metric_key, lower_is_better=self.lower_is_better)
        except Exception as exc:
            self._fail(failure_message(exc, run))
        else:
            self._finish(state, run.iteration, run.epoch)
        finally:
            if run.device.type == "cuda":
                torch.cuda.empty_cache()

    # ---- training, in a child process ----------------------------------------------------------------
    def _launch(self, cfg: TrainConfig | None, resume_from: str | Path | None, data: ImageData | None,
                paused: bool, hooks: list[Hook]) -> tuple[RemoteRun, RunFolder, Pictures, tuple]:
        """Starts the child and waits until it has built the run (or raises what building it raised)."""
        snapshots = any(getattr(h, "wants_snapshots", False) for h in hooks)
        job = pickle.dumps(_Job(cfg, None if resume_from is None else str(resume_from), data, paused, self.metric_fn,
                                self.metric_key, self.lower_is_better, self.threads, snapshots, dict(os.environ)),
                           protocol=pickle.HIGHEST_PROTOCOL)  # here, so that what does not pickle starts nothing
        ctx = _context()
        conn, child_end = ctx.Pipe()
        proc = ctx.Process(target=_child, args=(child_end,), name="dcgan-train", daemon=True)
        proc.start()
        child_end.close()
        try:
            conn.send_bytes(job)
            while not conn.poll(0.5):
                if not proc.is_alive() and not conn.poll(0):
                    raise EOFError
            name, *args = _recv(conn)
        except (EOFError, OSError):
            proc.join(5)
            conn.close()
            raise RuntimeError(f"the training process ended before the run started (exit code {proc.exitcode})"
                               ) from None
        except BaseException:
            conn.close()
            proc.kill()
            proc.join()
            raise
        if name == "failed_start":
            proc.join(30)
            conn.close()
            raise args[0]
        run_cfg, device, dtype, run_dir, iteration, epoch, history, first, sent_data = args
        run = RemoteRun(run_cfg, torch.device(device), dtype, data if data is not None else sent_data,
                        iteration, epoch, history, first)
        return run, RunFolder(Path(run_dir), run_cfg.keep_last), first, (proc, conn)

    def _follow(self, proc, conn, run: RemoteRun, hooks: list[Hook]) -> None:
        """The reader: hands the child's reports to the hooks here (with `run` brought up to date) and to this
        trainer; an ended pipe is the child gone. It reads to the end whatever happens, so the child never
        blocks on a full pipe."""
        hooks = [_Publisher(self), *hooks]
        failed = False
        while True:
            try:
                name, *args = _recv(conn)
            except (EOFError, OSError):
                break
            try:
                if name.startswith("on_"):
                    run.iteration, run.epoch, *args = args
                    if name == "on_pictures":
                        images, run.pictures, snap = args
                        run.snapshot = snap if snap is None else dataclasses.replace(snap, data=run.data)
                        args = [images]
                    elif name in ("on_metrics", "on_nan"):
                        *args, run.history = args
                    for hook in hooks:
                        method = getattr(hook, name, None)
                        if method is not None:
                            method(run, *args)
                elif name == "saved":
                    self._replies.put(args[0])
                elif name in ("_event", "_pause_with_error", "_fail", "_finish") and not failed:
                    getattr(self, name)(*args)
            except Exception as exc:  # a hook here failed: the run stops (and saves) and shows the error
                failed, hooks = True, []
                self._control.stop()
                self._fail(failure_message(exc, run))
        proc.join(120)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
        with self._lock:
            if self._run is run and self._state in ACTIVE:  # not a newer run started meanwhile
                self._fail(f"The training process ended unexpectedly (exit code {proc.exitcode}); the run's "
                           f"checkpoints are in {self._folder.path if self._folder else '?'}. Resume the latest "
                           "one or start again.")

    # ---- what the training side reports ------------------------------------------------------------
    def _finish(self, state: str, iteration: int, epoch: float) -> None:
        with self._lock:
            self._iteration, self._epoch = iteration, epoch
            self._state = State(state)

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

    def _show(self, iteration: int, pictures: Pictures) -> None:
        with self._lock:
            self._grid, self._grid_iteration = pictures.grid, iteration
            self._g_state, self._d_state = pictures.g_state, pictures.d_state
            if not self._frames or self._frames[-1][0] != iteration:
                self._frames.append((iteration, pictures.grid))
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
        self.trainer._show(run.iteration, pictures_of(run, images))

    def on_checkpoint(self, run: GANTraining, path: Path) -> None:
        with self.trainer._lock:
            self.trainer._last_checkpoint = path

    def on_event(self, run: GANTraining, message: str, problem: bool = False) -> None:
        self.trainer._event(message, problem)


# ---- the child process -----------------------------------------------------------------------------------


@dataclass
class _Job:
    cfg: TrainConfig | None
    resume_from: str | None
    data: ImageData | None
    paused: bool
    metric_fn: Callable | None
    metric_key: str
    lower_is_better: bool
    threads: int
    snapshots: bool  # a hook here wants D's view's snapshot with each picture
    env: dict[str, str]  # this process's environment now (a forkserver child has the server's)


@functools.cache
def _context():
    """A forkserver that has imported torch and the training code once: a run starts in a fraction of a second
    and without CUDA state inherited from this process (spawn where there is no forkserver)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["dcgan.trainer", "dcgan.metrics", "dcgan.dview", "dcgan.tblog", "dcgan.cuda_graph"])
    return ctx


def _send(conn, obj: Any) -> None:
    """Plain pickle through the pipe: torch's multiprocessing pickler would move tensors into /dev/shm (64 MB in
    many containers). Only this process and its own child read these bytes."""
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _recv(conn):
    return pickle.loads(conn.recv_bytes())


class _RemoteControl:
    """The parent's side of the child's `Control`: the same calls, sent down the pipe (lost once it is gone)."""

    def __init__(self, conn) -> None:
        self._conn, self._lock = conn, threading.Lock()

    def _tell(self, *message) -> None:
        with self._lock:
            try:
                _send(self._conn, message)
            except (OSError, ValueError):  # the child has ended (or the pipe was closed)
                pass

    def pause(self) -> None:
        self._tell("pause")

    def resume(self) -> None:
        self._tell("resume")

    def step(self, k: int = 1, update: str = "both") -> None:
        self._tell("step", k, update)

    def stop(self) -> None:
        self._tell("stop")

    def save(self) -> None:
        self._tell("save")


class _Relay(Hook):
    """In the child: sends each report, with the run's iteration and epoch, to the parent's reader."""

    def __init__(self, send: Callable[..., None], snapshots: bool) -> None:
        self.send, self.snapshots = send, snapshots

    def on_start(self, run: GANTraining) -> None:
        self.send("on_start", run.iteration, run.epoch)

    def on_log(self, run: GANTraining, row: dict) -> None:
        self.send("on_log", run.iteration, run.epoch, row)

    def on_pictures(self, run: GANTraining, images: torch.Tensor) -> None:
        snap = None
        if self.snapshots:
            from .dview import snapshot

            snap = dataclasses.replace(snapshot(run), data=None)  # the parent has the data
        self.send("on_pictures", run.iteration, run.epoch, images, pictures_of(run, images), snap)

    def on_metrics(self, run: GANTraining, record: dict) -> None:
        self.send("on_metrics", run.iteration, run.epoch, record, list(run.history))

    def on_checkpoint(self, run: GANTraining, path: Path) -> None:
        self.send("on_checkpoint", run.iteration, run.epoch, path)

    def on_event(self, run: GANTraining, message: str, problem: bool = False) -> None:
        self.send("on_event", run.iteration, run.epoch, message, problem)

    def on_nan(self, run: GANTraining, iteration: int) -> None:
        self.send("on_nan", run.iteration, run.epoch, iteration, list(run.history))  # a roll-back restores history

    def on_end(self, run: GANTraining, state: str) -> None:
        self.send("on_end", run.iteration, run.epoch, state)


def _portable(exc: BaseException) -> BaseException:
    """exc if it survives a round trip through pickle, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _child(conn) -> None:
    """The training process: builds the run, sends its first pictures, trains it with `fit`."""
    job: _Job = _recv(conn)
    os.environ.clear()
    os.environ.update(job.env)
    if "DCGAN_CACHE" in os.environ:  # the forkserver imported the metrics before the app chose its cache
        from .metrics import use_cache_dir

        use_cache_dir(os.environ["DCGAN_CACHE"])
    control = Control(paused=job.paused)
    signal.signal(signal.SIGTERM, lambda *_: control.stop())  # the app is exiting: stop, save, end
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the app stops us
    if job.threads:
        torch.set_num_threads(job.threads)
    lock = threading.Lock()

    def send(*message) -> None:
        with lock:
            try:
                _send(conn, message)
            except (OSError, ValueError):  # the app is gone: stop, which saves the run
                control.stop()

    try:
        run, folder, first = open_run(job.cfg, job.resume_from, job.data)
    except BaseException as exc:
        send("failed_start", _portable(exc))
        return
    send("started", run.cfg, str(run.device), run.dtype, str(folder.path), run.iteration, run.epoch,
         list(run.history), first, run.data if job.snapshots and job.data is None else None)
    threading.Thread(target=_obey, args=(conn, control, run, folder, send), name="dcgan-commands",
                     daemon=True).start()

    def pause(message: str) -> None:
        control.pause()
        send("_pause_with_error", message)

    hooks = [NanRollback(say=lambda message: send("_event", message), pause=pause), _Relay(send, job.snapshots),
             *tensorboard_hook(folder.path)]
    try:
        state = fit(run, hooks, control, folder=folder, metric_fn=job.metric_fn, metric_key=job.metric_key,
                    lower_is_better=job.lower_is_better)
    except Exception as exc:
        send("_fail", failure_message(exc, run))
    else:
        send("_finish", state, run.iteration, run.epoch)


def _obey(conn, control: Control, run: GANTraining, folder: RunFolder, send: Callable[..., None]) -> None:
    """The child's command thread. The pipe ending means the app is gone: stop (which saves)."""
    while True:
        try:
            name, *args = _recv(conn)
        except (EOFError, OSError):
            control.stop()
            return
        if name == "save":
            try:
                send("saved", folder.save(run))
            except CheckpointError as exc:
                send("saved", exc)
        elif name in ("pause", "resume", "step", "stop"):
            getattr(control, name)(*args)
