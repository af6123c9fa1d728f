"""The app's trainer: one run at a time, trained in a process of its own, steered by commands and watched
through the reports it sends (dcgan/reports.py).

Beside thirty visitors a training thread in the serving process waits for Python's GIL after every torch op
and kept about half its solo speed; the same loop in a process of its own kept 81-90 % (docs/ROBUSTNESS.md).
The training process runs `runner.train` (the command line's way to train, with `fit`'s loop) with one more
hook (dcgan/worker.py) that turns what the loop reports into typed reports and sends them down a pipe. Here a reader
thread folds each report into the run's status, curves and frames, then hands it to the subscribers (D's view,
for instance). Commands (pause, resume, steps, save, stop) go the other way; the loop carries each out between
two steps. If the app goes away, the training process stops at the next step and saves a checkpoint.
"""

from __future__ import annotations

import os
import pickle
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch

from . import reports as rp
from . import worker
from .config import TrainConfig
from .data import ImageData
from .metrics import METRIC_KEY
from .models import Generator
from .runner import failure_message
from .train import GANTraining

__all__ = ["Trainer", "TrainerBusy", "State", "Status", "MetricsBuffer"]


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

Subscriber = Callable[[rp.Report], None]


class TrainerBusy(RuntimeError):
    """A second job was asked for while one is active."""


@dataclass
class Status:
    state: State = IDLE
    iteration: int = 0
    total: int = 0
    epoch: float = 0.0
    images_per_s: float = 0.0  # of the latest host sync; dcgan.studio smooths it and derives the ETA
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


class Trainer:
    """One training run at a time; every method is safe to call from any thread, repeatedly.

    metric_fn scores the run in the training process every cfg.metric_every steps, so it must pickle (a
    module-level function or a functools.partial of one). nice: the training process's OS priority offset (a
    branch beside the run shown in full gives way to it and to the page: also SCHED_IDLE on Linux, see
    worker.give_way_to_others). threads: torch threads for training (0:
    torch's choice). Subscribers see every report of every later run, in order, after the trainer has folded it."""

    def __init__(self, metric_fn: Callable[[GANTraining], dict] | None = None, metric_key: str = METRIC_KEY,
                 lower_is_better: bool = True, *, threads: int = 0, nice: int = 0) -> None:
        if metric_fn is not None:
            try:
                pickle.dumps(metric_fn)
            except Exception as exc:
                raise ValueError("the trainer sends metric_fn to its training process: use a module-level "
                                 f"function or a functools.partial of one ({exc})") from exc
        self.metric_fn, self.metric_key, self.lower_is_better, self.threads = (metric_fn, metric_key,
                                                                               lower_is_better, threads)
        self.nice = nice
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()
        self._subscribers: list[tuple[Subscriber, bool]] = []
        self.metrics = MetricsBuffer()
        self._reader: threading.Thread | None = None
        self._reset_state()

    def _reset_state(self) -> None:
        self._state = IDLE
        self._run_id = ""
        self._conn = None
        self._cfg: TrainConfig | None = None
        self._device = self._precision = ""
        self._folder: Path | None = None
        self._error = ""
        self._events: list[str] = []
        self._speed = 0.0
        self._iteration, self._epoch = 0, 0.0
        self._history: list[dict] = []
        self._grid: np.ndarray | None = None
        self._grid_iteration = -1
        self._frames: list[tuple[int, np.ndarray]] = []
        self._g_state: dict[str, torch.Tensor] | None = None
        self._g_cache: tuple[int, Generator] | None = None
        self._last_checkpoint: Path | None = None
        self._save_reply: queue.Queue | None = None
        self._stop_asked = False
        self.metrics.clear()

    def warm_up(self) -> None:
        """Start the training processes' forkserver now (it imports torch and the training code, ~3 s), so the
        first run starts as fast as later ones (0.2 s). The app calls it in a thread at launch."""
        if worker.context().get_start_method() == "forkserver":
            from multiprocessing import forkserver

            forkserver.ensure_running()

    def subscribe(self, subscriber: Subscriber, snapshots: bool = False) -> None:
        """subscriber(report) for every report of every later run. snapshots: this subscriber needs D's view's
        snapshot in each Pictures report (a few MB per picture: asked for only by who draws D's view)."""
        with self._lock:
            self._subscribers.append((subscriber, snapshots))

    # ---- control ------------------------------------------------------------------------------
    def start(self, cfg: TrainConfig | None = None, *, resume_from: str | Path | None = None,
              data: ImageData | None = None, paused: bool = False, branch: bool = False) -> None:
        """Start a new run (or resume a checkpoint) in a training process. Raises TrainerBusy if one is active,
        and what building the run raised there (ConfigError, DatasetError, CheckpointError, out of memory).
        branch: resume_from's state trains under cfg in a folder of its own (dcgan.branch.plan_branch's cfg)."""
        with self._lock:
            if self._state in ACTIVE:
                raise TrainerBusy(f"a training run is already {self._state}; stop it first")
            if cfg is None and resume_from is None:
                raise ValueError("start needs a config or a checkpoint to resume")
            self._reset_state()
            self._state, self._run_id = STARTING, uuid.uuid4().hex[:12]
            subscribers = list(self._subscribers)
            job = worker.Job(self._run_id, cfg, None if resume_from is None else str(resume_from), data, paused,
                       self.metric_fn, self.metric_key, self.lower_is_better, self.threads,
                       any(wants for _, wants in subscribers), dict(os.environ), branch, self.nice)
        try:
            proc, conn, started = worker.launch(job)
        except BaseException:
            with self._lock:
                self._reset_state()
            raise
        with self._lock:
            self._conn = conn
            if self._stop_asked:
                self._tell(rp.Stop())
            self._fold(started)
            self._state = PAUSED if paused else RUNNING
            self._reader = threading.Thread(target=self._read, args=(proc, conn, started, subscribers),
                                            name="dcgan-trainer", daemon=True)
            self._reader.start()

    def pause(self) -> None:
        with self._lock:
            if self._state == RUNNING:
                self._tell(rp.Pause())
                self._state = PAUSED

    def resume(self) -> None:
        with self._lock:
            if self._state == PAUSED:
                self._tell(rp.Resume())
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
            self._tell(rp.Step(k, update))
            self._state = PAUSED

    def stop(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Stop after the current step; the run saves a checkpoint at that iteration first. Call this
        (wait=True) from a SIGTERM handler so a restarted server loses nothing."""
        with self._lock:
            reader = self._reader
            self._stop_asked = self._state == STARTING  # sent once the training process has started
            if self._state in (RUNNING, PAUSED):
                self._tell(rp.Stop())
        if wait and reader is not None and reader is not threading.current_thread():
            reader.join(timeout)

    def reset(self) -> None:
        """Stop any run and forget it: plots, pictures and status go back to empty."""
        self.stop(wait=True)
        with self._lock:
            if self._state in ACTIVE or (self._reader is not None and self._reader.is_alive()):
                raise TrainerBusy("the run is still starting or stopping; try again in a moment")
            self._reset_state()

    def wait(self, timeout: float | None = None) -> State:
        reader = self._reader
        if reader is not None:
            reader.join(timeout)
        return self.status().state

    def raise_if_failed(self) -> None:
        with self._lock:
            if self._state == FAILED:
                raise RuntimeError(self._error)

    def save_checkpoint(self) -> Path:
        """Save now: the training process saves between two steps and answers with the checkpoint's path."""
        with self._save_lock:
            with self._lock:
                if self._state not in (RUNNING, PAUSED):
                    where = f"; its checkpoints are in {self._folder}" if self._folder else ""
                    raise RuntimeError(f"there is no run training to save{where}")
                reply = self._save_reply = queue.Queue()
                self._tell(rp.Save())
            try:
                answer = reply.get(timeout=SAVE_TIMEOUT_S)
            except queue.Empty:
                raise RuntimeError(f"the training process did not save within {SAVE_TIMEOUT_S:g} s") from None
            finally:
                with self._lock:
                    self._save_reply = None
            if isinstance(answer, str):
                raise RuntimeError(answer)
            return answer

    # ---- what callers read -------------------------------------------------------------------
    def status(self) -> Status:
        with self._lock:
            return Status(state=self._state, iteration=self._iteration, total=self._cfg.steps if self._cfg else 0,
                          epoch=self._epoch, images_per_s=self._speed, device=self._device,
                          precision=self._precision, run_dir=str(self._folder or ""), error=self._error,
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
        """A CPU copy of the sampling generator as of the latest grid, in eval mode; safe to use from any thread
        while training continues (one copy per picture, shared by every caller)."""
        with self._lock:
            state, it, cfg = self._g_state, self._grid_iteration, self._cfg
            if state is None or cfg is None:
                return -1, None
            if self._g_cache is None or self._g_cache[0] != it:
                self._g_cache = (it, Generator.from_state(cfg, state))
            return self._g_cache

    def history(self) -> list[dict]:
        """Quality-metric records of the run (metric_fn every cfg.metric_every steps), oldest first."""
        with self._lock:
            return [dict(h) for h in self._history]

    def last_checkpoint(self) -> Path | None:
        with self._lock:
            return self._last_checkpoint

    # ---- the training process ----------------------------------------------------------------------
    def _tell(self, command: rp.Command) -> None:
        """A command for the run's training process (lost once it has ended)."""
        if self._conn is not None:
            try:
                worker.send(self._conn, command)
            except (OSError, ValueError):
                pass

    def _read(self, proc, conn, started: rp.Started, subscribers: list[tuple[Subscriber, bool]]) -> None:
        """The reader: folds each report into this trainer, then hands it to the subscribers. It reads to the end
        whatever happens, so the training process never blocks on a full pipe; the pipe ending is its end."""
        failed = False
        for report in worker.reports(started, conn):
            with self._lock:
                if report.run_id != self._run_id:
                    continue
                if report is not started:  # start() folded it before this reader began
                    self._fold(report)
            for subscriber, _ in () if failed else subscribers:
                try:
                    subscriber(report)
                except Exception as exc:  # a subscriber here failed: the run stops (and saves) and shows why
                    failed = True
                    with self._lock:
                        self._tell(rp.Stop())
                        self._fail(failure_message(exc, started.cfg, started.device))
                    break
        proc.join(120)
        if proc.is_alive():
            proc.kill()
            proc.join()
        conn.close()
        with self._lock:
            if self._run_id == started.run_id and self._state in ACTIVE:
                self._fail(f"The training process ended unexpectedly (exit code {proc.exitcode}); the run's "
                           f"checkpoints are in {self._folder or '?'}. Resume the latest one or start again.")
            if self._run_id == started.run_id:
                self._conn = None
                self._answer_save("the run ended before it saved")

    def _fold(self, report: rp.Report) -> None:
        """This trainer's view of the run, brought up to date by one report (under the lock)."""
        self._iteration, self._epoch = report.iteration, report.epoch
        if isinstance(report, rp.Started):
            self._cfg, self._device, self._precision = report.cfg, report.device, report.precision
            self._folder, self._history = Path(report.run_dir), list(report.history)
            for row in report.earlier:  # a resumed run's curve from its start
                self.metrics.append(row)
            self._show(report.pictures)
        elif isinstance(report, rp.Log):
            self.metrics.append(report.row)
            if self._state == RUNNING:  # a single step's speed means nothing
                self._speed = report.row["images_per_s"]
        elif isinstance(report, rp.Pictures):
            self._show(report)
        elif isinstance(report, (rp.Metrics, rp.RolledBack)):
            self._history = list(report.history)
        elif isinstance(report, rp.Checkpoint):
            self._last_checkpoint = Path(report.path)
            self._answer_save(self._last_checkpoint)
        elif isinstance(report, rp.Event):
            self._events.append(report.message)
            if report.problem:
                self._error = report.message
                self._answer_save(report.message)
            if report.paused and self._state == RUNNING:
                self._state = PAUSED
        elif isinstance(report, rp.End):
            if report.state == FAILED:
                self._fail(report.error)
            elif self._state != FAILED:
                self._state = State(report.state)
            self._answer_save("the run ended before it saved")

    def _answer_save(self, answer: Path | str) -> None:
        if self._save_reply is not None:
            self._save_reply.put(answer)

    def _fail(self, message: str) -> None:
        self._error, self._state = message, FAILED
        self._events.append(message.splitlines()[0])

    def _show(self, pictures: rp.Pictures) -> None:
        self._grid, self._grid_iteration, self._g_state = pictures.grid, pictures.iteration, pictures.g_state
        if not self._frames or self._frames[-1][0] != pictures.iteration:
            self._frames.append((pictures.iteration, pictures.grid))
            if len(self._frames) > MAX_GRID_FRAMES:  # keep the first, thin the rest evenly
                self._frames = self._frames[:1] + self._frames[2::2]
