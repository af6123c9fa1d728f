"""What a training process tells the app, and what the app tells it: small frozen dataclasses, one per kind.

The training process sends reports (each with its run's id, iteration and epoch) down one pipe; the app's
`Trainer` folds them into the run's status, curves and frames, and hands each to its subscribers (the UI's
publisher, D's view). Commands go the other way. Both pickle with the plain pickler: the pipe is read only
by the process that started the training process and by that process itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .config import TrainConfig


@dataclass(frozen=True)
class Report:
    run_id: str
    iteration: int
    epoch: float


@dataclass(frozen=True)
class Pictures(Report):
    """The fixed-noise grid and the sampling generator's weights (CPU) as of this iteration. snapshot: what D's
    view needs (G, D, G's Adam state, the next noise; a dcgan.dview.Snapshot without the data), only when a
    subscriber asked for it."""

    grid: np.ndarray  # uint8 HxWx3
    g_state: dict[str, torch.Tensor]
    snapshot: Any = None


@dataclass(frozen=True)
class Started(Report):
    """The run is built (a new one, or a checkpoint's): what it is, where it saves, its first pictures."""

    cfg: TrainConfig
    device: str
    precision: str
    run_dir: str
    history: tuple[dict, ...]
    pictures: Pictures
    earlier: tuple[dict, ...] = ()  # a resumed run's rows up to its checkpoint (its event files): the whole curve


@dataclass(frozen=True)
class Log(Report):
    """One host sync's row: iteration, epoch, loss_d, loss_g, d_real, d_fake, images_per_s, lr_g, lr_d, time."""

    row: dict


@dataclass(frozen=True)
class Metrics(Report):
    record: dict
    history: tuple[dict, ...]  # every record so far (a NaN roll-back can shorten it)


@dataclass(frozen=True)
class RolledBack(Report):
    """A NaN / inf loss: the run went back to its last good state (this report's iteration)."""

    history: tuple[dict, ...]


@dataclass(frozen=True)
class Checkpoint(Report):
    path: str


@dataclass(frozen=True)
class Event(Report):
    """Something a person should read. problem: the run survives it but the user should fix it (a failed save);
    paused: the run paused itself because of it (NaN / inf that roll-backs did not cure)."""

    message: str
    problem: bool = False
    paused: bool = False


@dataclass(frozen=True)
class End(Report):
    """The last report of a run: 'finished', 'stopped' or 'failed' (error says why and what to do). A run that
    could not be built ends with state 'failed' and the exception that building it raised."""

    state: str
    error: str = ""
    exception: BaseException | None = None


# ---- commands: the app to the training process -------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    pass


@dataclass(frozen=True)
class Resume:
    pass


@dataclass(frozen=True)
class Step:
    k: int = 1
    update: str = "both"  # 'both', 'd' or 'g'


@dataclass(frozen=True)
class Save:
    """Save a checkpoint now; the loop does it between two steps and answers with a Checkpoint report."""


@dataclass(frozen=True)
class Stop:
    """Stop after the current step; the run saves a checkpoint first."""


Command = Pause | Resume | Step | Save | Stop

__all__ = ["Report", "Started", "Log", "Pictures", "Metrics", "RolledBack", "Checkpoint", "Event", "End",
           "Command", "Pause", "Resume", "Step", "Save", "Stop"]
