"""TensorBoard event files in every run folder, written by a training-loop hook.

`tensorboard --logdir checkpoints` then shows each run once: its scalars, the fixed-noise grid
over time, and its config as hparams next to its final numbers (written into the run's own folder,
not the sub-run `SummaryWriter.add_hparams` would create). The Hugging Face Hub shows the same
files as a model repo's "Training metrics" tab once `push` uploads them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from torchvision.utils import make_grid

from .config import LINEAGE_KEY, lineage
from .train import Hook

# loop row key -> scalar tag; runs.py reads the same tags back
SCALARS = {
    "loss_d": "loss/D",
    "loss_g": "loss/G",
    "d_real": "D/D(x)",
    "d_fake": "D/D(G(z))",
    "images_per_s": "speed/images_per_s",
    "lr_g": "lr/G",
    "lr_d": "lr/D",
}
METRIC_PREFIX = "metrics/"
GRID_TAG = "samples/fixed_noise"
FINAL_PREFIX = "final/"  # hparams metrics: the last value of each curve, written at the end
EVENT_GLOB = "events.out.tfevents.*"
# Grids go to their own event file in the same folder (the same TensorBoard run): they are most of the bytes,
# and without TensorFlow TensorBoard's Python reader checks every byte in pure Python, so the runs table
# and curves read the small scalar files only.
GRIDS_SUFFIX = ".grids"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """The config as TensorBoard hparams (numbers, text, booleans; anything else as JSON text); a branch
    (dcgan/branch.py) also gets its parent run, step and changes as columns of their own."""
    out = {}
    for key, value in sorted(config.items()):
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        else:
            out[key] = json.dumps(value, sort_keys=True)
    parent = lineage(config)
    if parent is not None:
        out[f"{LINEAGE_KEY}/run"] = str(parent.get("run", ""))
        out[f"{LINEAGE_KEY}/step"] = int(parent.get("step", 0))
        out[f"{LINEAGE_KEY}/changes"] = json.dumps(parent.get("changes") or {}, sort_keys=True)
    return out


def _quiet(method):
    """A logging failure (a full disk, a vanished folder) stops the logging, never the training run."""

    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            return method(self, *args)
        except Exception as exc:
            self._give_up(exc)

    return wrapper


class TensorBoardHook(Hook):
    """Writes a run's curves, grids and hparams into run_dir; cheap in the training thread.

    Rows arrive already synced to the host, so no tensor is read here. Grids go out at most every
    `image_every_s` seconds, PNG-encoded in a helper thread; the latest one is always written at
    the end. A resumed run appends new files to the same folder. No purge_step: TensorBoard's purge
    (a SessionLog.START) is global across a folder's files, so it would wipe the grids of its own
    session whenever the grids file sorts first; a run killed between checkpoints can therefore show
    its last few points twice in TensorBoard (dcgan/runs.py keeps the resumed session's). Under
    torchrun only rank 0 writes.
    """

    def __init__(self, run_dir: str | Path, image_every_s: float = 10.0, flush_secs: int = 10):
        self.run_dir = Path(run_dir)
        self.image_every_s = image_every_s
        self.flush_secs = flush_secs
        self.writer: SummaryWriter | None = None
        self.grid_writer: SummaryWriter | None = None
        self._last_image = -math.inf
        self._pending: tuple[int, torch.Tensor] | None = None  # newest grid not yet written
        self._image_thread: threading.Thread | None = None
        self._last: dict[str, float] = {}  # tag -> latest value, for the hparams at the end
        self._grid_error: Exception | None = None  # from the helper thread, raised in the training thread
        self.failed = ""  # why logging stopped, if it did

    # ---- hook methods ---------------------------------------------------------------------
    @_quiet
    def on_start(self, run) -> None:
        from .distributed import is_main

        if not is_main():
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(self.run_dir), flush_secs=self.flush_secs)

    @_quiet
    def on_log(self, run, row: dict) -> None:
        if self.writer is None:
            return
        # one event for the whole row: 5-6x cheaper than an add_scalar per value (~0.1 ms against ~0.5 ms)
        values = []
        for key, tag in SCALARS.items():
            value = row.get(key)
            if _finite(value):  # a D-only or G-only single step leaves the other half NaN
                values.append(Summary.Value(tag=tag, simple_value=float(value)))
                self._last[tag] = float(value)
        if values:
            self.writer.file_writer.add_summary(Summary(value=values), int(row["iteration"]), row.get("time"))

    @_quiet
    def on_pictures(self, run, images: torch.Tensor) -> None:
        if self.writer is None:
            return
        self._pending = (int(run.iteration), images)
        now = time.monotonic()
        if now - self._last_image >= self.image_every_s:
            self._last_image = now
            self._write_pending(background=True)

    @_quiet
    def on_metrics(self, run, record: dict) -> None:
        if self.writer is None:
            return
        step = int(record.get("iteration", run.iteration))
        for key, value in record.items():
            if key != "iteration" and _finite(value):
                self.writer.add_scalar(METRIC_PREFIX + key, value, step)
                self._last[METRIC_PREFIX + key] = float(value)

    @_quiet
    def on_checkpoint(self, run, path) -> None:
        if self.writer is not None:
            self.writer.flush()  # a checkpoint on disk comes with its curves (Runs tab, push)
        if self.grid_writer is not None:
            self.grid_writer.flush()

    @_quiet
    def on_end(self, run, state: str) -> None:
        writer = self.writer
        if writer is None:
            return
        self._write_pending(background=False)
        if state != "suspended":  # a ZeroGPU chunk's end is not the run's: no hparams, the session goes on
            step = int(run.iteration)
            final = {FINAL_PREFIX + tag: value for tag, value in self._last.items()}
            for tag, value in final.items():
                writer.add_scalar(tag, value, step)
            config = run.cfg.to_dict() if hasattr(run.cfg, "to_dict") else dict(run.cfg)
            # the hparams summaries in the run's own folder: one row per run in TensorBoard's HPARAMS tab
            for summary in hparams(hparam_values(config), final):
                writer.file_writer.add_summary(summary)
        writer.close()
        self.writer = None
        if self.grid_writer is not None:
            self.grid_writer.close()
            self.grid_writer = None

    def _give_up(self, exc: Exception) -> None:
        self.failed = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"TensorBoard logging into {self.run_dir} stopped ({self.failed}); training goes on",
                      stacklevel=3)
        for writer in (self.writer, self.grid_writer):
            with contextlib.suppress(Exception):
                if writer is not None:
                    writer.close()
        self.writer = self.grid_writer = None
        self._pending = None

    # ---- grids ------------------------------------------------------------------------------
    def _write_pending(self, background: bool) -> None:
        if self._image_thread is not None:
            self._image_thread.join()  # at most one encode in flight; grids stay in order
            self._image_thread = None
        if self._grid_error is not None:
            raise self._grid_error
        if self._pending is None or self.writer is None:
            return
        (step, images), self._pending = self._pending, None
        if self.grid_writer is None:
            self.grid_writer = SummaryWriter(str(self.run_dir), flush_secs=self.flush_secs,
                                             filename_suffix=GRIDS_SUFFIX)
        if background:
            self._image_thread = threading.Thread(target=self._add_grid, args=(self.grid_writer, step, images, True),
                                                  name="tensorboard-grid", daemon=True)
            self._image_thread.start()
        else:
            self._add_grid(self.grid_writer, step, images)

    def _add_grid(self, writer: SummaryWriter, step: int, images: torch.Tensor, keep_error: bool = False) -> None:
        try:
            grid = make_grid(images.detach().float().cpu(), nrow=8, padding=2, normalize=True,
                             value_range=(-1, 1), pad_value=1.0)
            writer.add_image(GRID_TAG, grid, step, dataformats="CHW")
        except Exception as exc:
            if not keep_error:
                raise
            self._grid_error = exc


def event_files(run_dir: str | Path, grids: bool = True) -> list[Path]:
    """A run folder's TensorBoard event files, oldest first (all of them: what push uploads); grids=False
    leaves out the files that hold only grids."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted((p for p in run_dir.glob(EVENT_GLOB) if p.is_file() and (grids or not p.name.endswith(GRIDS_SUFFIX))),
                  key=_written_order)


def _written_order(path: Path) -> tuple:
    """TensorBoard names a file events.out.tfevents.<unix seconds>.<host>.<pid>.<writer number>: two sessions
    started within one second differ only in the writer number, which must compare as a number (10 > 9)."""
    name = path.name.removesuffix(GRIDS_SUFFIX)
    parts = name.split(".")
    numbers = [int(p) if p.isdigit() else 0 for p in (parts[3:4] + parts[-1:])] if len(parts) > 4 else [0, 0]
    return (*numbers, name)
