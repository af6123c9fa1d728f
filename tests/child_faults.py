"""Faults injected in the app's training process, where the run trains.

Each function is a `metric_fn` (module level, so it pickles): the trainer sends it to the training process,
where `fit` calls it with the live run every cfg.metric_every steps, after the step of that iteration. That makes
it a place to break things there as a real fault would: a step that raises, weights that turn NaN, a loss that
turns infinite, a full disk. Mutable arguments (fired) are the training process's own copies.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import torch

from dcgan import losses


def raise_at(run, iteration: int, exc: BaseException | None) -> dict:
    """Raise exc after the step of `iteration`; None: a real CPU allocation failure (1 PiB)."""
    if run.iteration == iteration:
        if exc is None:
            torch.empty(2**50, dtype=torch.uint8)
        raise exc
    return {}


def poison(run, at: tuple[int, ...] = (), every_from: int | None = None, how: str = "nan-weights",
           fired: list[int] | None = None, log: str | None = None) -> dict:
    """Make the next step produce a NaN / inf loss after the steps of `at` (once each) or from `every_from` on:
    NaN in a BatchNorm scale of G ('nan-weights'), or an infinite generator loss for one step ('inf-loss').
    Appends each firing iteration to the file `log`."""
    fired = fired if fired is not None else []
    once = run.iteration in at and run.iteration not in fired
    due = once or (every_from is not None and run.iteration >= every_from)
    if due:
        fired.append(run.iteration)
        if log:
            with open(log, "a") as fh:
                fh.write(f"{run.iteration}\n")
        if how == "nan-weights":
            with torch.no_grad():
                run.G.net[1].weight.fill_(float("nan"))
        else:
            finite = losses.g_loss

            def infinite(*args, **kwargs):
                losses.g_loss = finite  # one step only
                return finite(*args, **kwargs) * float("inf")

            losses.g_loss = infinite
    return {}


def full_disk(run, score: bool = False) -> dict:
    """From now on every fsync in the training process fails with ENOSPC (the checkpoint writer fsyncs)."""

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    os.fsync = no_space
    return {"score": 1.0 / run.iteration} if score else {}


def fired(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []
