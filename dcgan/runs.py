"""The runs under a checkpoints folder, for comparing them: what each one was, its curves, its samples.

A run is a folder directly under the root holding checkpoints (step_*.safetensors, best.safetensors)
and/or TensorBoard event files (dcgan/tblog.py). Reading never raises for a damaged or missing file:
the run still lists, with its `problems` saying what is wrong. Curves come from the event files
(TensorBoard's own reader), falling back to the loss log and metric history a checkpoint keeps.
Rename and delete act only on run folders directly inside the root. No UI here: the Runs tab
(ui/runs_tab.py) and `python -m dcgan runs` both use these functions.

Nothing extra is written for the table: a run's status and training time are read from what training leaves.
- Status: each training session writes one scalar event file, and its hparams only when it ends (finished,
  stopped or failed; TensorBoardHook.on_end), together with the last scalars at the run's last iteration. A
  session without them is still being written ("running") or was killed ("interrupted"); one that ended past
  its newest checkpoint ended by an error ("failed", a stop and a finish both save at their last iteration);
  else "finished" at its steps (or its time limit), "stopped" before. The app's own live run is told by its
  trainer (`live`), which also knows "paused".
- Training time: every logged row holds the images/s since the row before, measured without paused time
  (fit restarts that clock after a pause), so interval = iterations x images per iteration / (images/s);
  the wall-clock gap between rows would count the pauses.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import shutil
import sys
import threading
import time
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import BEST_FILE, STEP_FILE, CheckpointError, is_hidden, read_meta
from .config import TrainConfig, label, lineage
from .config import recipe_of as config_recipe
from .metrics import METRIC_KEY
from .tblog import GRID_TAG, GRIDS_SUFFIX, METRIC_PREFIX, SCALARS, event_files

# config key -> column of the runs table (the recipe column stands for the networks and optimiser settings)
TABLE_SETTINGS = {"loss": "loss"}
RECORD_OVERHEAD = 16  # a TFRecord frames its payload with a length, two CRCs: 8 + 4 + 4 bytes
CURVE_POINTS = 10_000  # points kept per curve and file for the plots (they show at most 500)
WRITING_S = 60.0  # an event file modified this recently may end in a record still being written
SPEED_TAG = SCALARS["images_per_s"]
TIME_LIMIT_SLACK = 0.98  # a session that trained this share of cfg.minutes ended by its clock (estimates differ by ms)
LIVE_STATUS = {"starting": "running", "running": "running", "paused": "paused", "finished": "finished",
               "stopped": "stopped", "failed": "failed"}  # the app's trainer state -> the table's status
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
_ORDER = {f.name: i for i, f in enumerate(dataclasses.fields(TrainConfig))}  # the form's order


class RunsError(ValueError):
    """A rename or delete that was refused; the message says why. Nothing was changed."""


@dataclass
class RunInfo:
    name: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    iterations: int = 0
    status: str = ""  # running, paused, finished, stopped, failed or interrupted (see the module's docstring)
    training_s: float | None = None  # training time, paused time not counted
    best_metric: float | None = None
    started: float | None = None  # Unix time
    checkpoint: Path | None = None  # the newest readable one
    event_files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def branched_from(self) -> dict[str, Any] | None:
        """The parent run, step and changes of a branch (dcgan/branch.py), from its config; None otherwise."""
        return lineage(self.config)

    @property
    def ok(self) -> bool:
        return not self.problems

    def row(self) -> dict[str, Any]:
        """One line of the runs table (the app's and the terminal's)."""
        c = self.config
        row = {"run": self.name, "status": self.status, "recipe": recipe_of(c), "data set": c.get("dataset", "?"),
               "size": f"{c['image_size']}px" if "image_size" in c else "?"}
        row.update({column: _short(c.get(key, "")) for key, column in TABLE_SETTINGS.items()})
        row.update({"iterations": self.iterations, "training time": _duration(self.training_s),
                    f"best {METRIC_KEY}": "" if self.best_metric is None else f"{self.best_metric:.4g}",
                    "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started)) if self.started else "",
                    "branched from": lineage_text(self.branched_from),
                    "problems": "; ".join(self.problems)})
        return row


@dataclass
class Curves:
    rows: list[dict]  # per logged iteration: iteration, loss_d, loss_g, d_real, d_fake, ... (the loop's keys)
    history: list[dict]  # quality-metric records: iteration, score, digit_fd, ...
    source: str  # "events", "checkpoint" or "none"


# ---- small caches: a file is read again only when its size or time changes -------------------

_cache: dict[tuple, Any] = {}
_cache_lock = threading.Lock()


def _signature(*paths: Path) -> tuple:
    sig = []
    for p in paths:
        try:
            st = p.stat()
            sig.append((str(p), st.st_size, st.st_mtime_ns))
        except OSError:
            sig.append((str(p), None, None))
    return tuple(sig)


def _cached(kind: str, paths: list[Path], compute):
    key = (kind, _signature(*paths))
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    value = compute()
    with _cache_lock:
        if len(_cache) > 512:
            _cache.clear()
        _cache[key] = value
    return value


# ---- reading one run --------------------------------------------------------------------------


def checkpoint_meta(path: Path) -> dict[str, Any]:
    """A checkpoint's metadata (dcgan.checkpoint.read_meta), read again only when the file changes."""
    return _cached("meta", [path], lambda: read_meta(path))


def _checkpoints(run_dir: Path) -> list[Path]:
    """Step files newest first, then best.safetensors."""
    steps = sorted((p for p in run_dir.iterdir() if STEP_FILE.match(p.name)), reverse=True)
    best = run_dir / BEST_FILE
    return steps + ([best] if best.is_file() else [])


def is_run_folder(path: Path) -> bool:
    """A real folder (not a link out of the root, not hidden like .cache) with a checkpoint or event file."""
    if path.is_symlink() or not path.is_dir() or is_hidden(path.name):
        return False
    try:
        return any(p.suffix == ".safetensors" or p.name.startswith("events.out.tfevents.") for p in path.iterdir())
    except OSError:
        return False


@dataclass
class _EventFile:
    first_time: float | None = None
    last_time: float | None = None
    last_step: int = -1
    hparams: dict[str, Any] = field(default_factory=dict)
    ended: bool = False  # the session's end was written (its hparams): it finished, stopped or failed
    speed_steps: array = field(default_factory=lambda: array("q"))  # the rows' iterations, as written
    speed: array = field(default_factory=lambda: array("d"))  # and their images/s
    modified: float = 0.0  # the file's mtime (Unix time)
    best_metric: float | None = None
    damaged: str = ""


class _EventReader:
    """One event file read incrementally: each call parses only the records added since the last one
    (a live run's file grows every few seconds), so polling the runs table stays cheap."""

    def __init__(self, path: Path) -> None:
        from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader

        self.path = path
        self.loader = RawEventFileLoader(str(path))
        self.consumed = 0
        self.summary = _EventFile()
        self.lock = threading.Lock()

    def update(self) -> _EventFile:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.plugins.hparams import plugin_data_pb2

        out = self.summary
        with self.lock:
            try:
                st = self.path.stat()
                for record in self.loader.Load():
                    self.consumed += len(record) + RECORD_OVERHEAD
                    event = Event.FromString(record)
                    if event.HasField("file_version"):
                        continue
                    out.first_time = event.wall_time if out.first_time is None else out.first_time
                    out.last_time = event.wall_time
                    out.last_step = max(out.last_step, event.step)
                    for value in event.summary.value:
                        if value.tag == SPEED_TAG and value.HasField("simple_value"):
                            out.speed_steps.append(event.step)
                            out.speed.append(value.simple_value)
                        elif value.tag == METRIC_PREFIX + METRIC_KEY and value.HasField("simple_value"):
                            v = value.simple_value
                            if math.isfinite(v) and (out.best_metric is None or v < out.best_metric):
                                out.best_metric = v
                        elif value.tag == "_hparams_/session_start_info":
                            data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                            out.hparams = {k: _hparam(v) for k, v in data.session_start_info.hparams.items()}
                            out.ended = True
                # TensorBoard's reader stops quietly at a damaged record; the byte count notices it. A file
                # written to right now may end in half a record: only an older one counts as damaged.
                out.modified = st.st_mtime
                writing = time.time() - st.st_mtime < WRITING_S
                out.damaged = "" if self.consumed >= st.st_size or writing else (
                    f"event file {self.path.name} is damaged after {self.consumed:,} of {st.st_size:,} bytes")
            except Exception as exc:  # a reader must never break the listing
                out.damaged = f"event file {self.path.name} is unreadable ({type(exc).__name__})"
        return out


_readers: dict[str, _EventReader] = {}


def _event_summary(path: Path) -> _EventFile:
    key = str(path)
    with _cache_lock:
        reader = _readers.get(key)
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        if reader is None or size < reader.consumed:  # new, or replaced by a shorter file
            if len(_readers) > 4096:
                _readers.clear()
            reader = _readers[key] = _EventReader(path)
    return reader.update()


def _hparam(value) -> Any:
    kind = value.WhichOneof("kind")
    v = getattr(value, kind) if kind else None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def read_run(run_dir: str | Path, live: str = "") -> RunInfo:
    """Everything the runs table shows about one folder; problems are listed, never raised (for anything
    not foreseen, such as odd metadata in a readable file, the row says 'unreadable'). live: the app's
    trainer state when this folder is its run (it knows a pause and a failure for sure)."""
    run_dir = Path(run_dir)
    try:
        info = _read_run(run_dir)
    except Exception as exc:
        info = RunInfo(run_dir.name, run_dir, problems=[f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"])
    info.status = LIVE_STATUS.get(str(live), info.status)
    return info


def _read_run(run_dir: Path) -> RunInfo:
    info = RunInfo(run_dir.name, run_dir)
    try:
        checkpoints = _checkpoints(run_dir)
        events = event_files(run_dir, grids=False)
    except OSError as exc:
        info.problems.append(f"folder unreadable ({exc.strerror or exc})")
        return info

    meta: dict[str, Any] = {}
    for path in checkpoints:
        try:
            m = checkpoint_meta(path)
        except CheckpointError as exc:
            info.problems.append(str(exc))
            continue
        if info.checkpoint is None:
            info.checkpoint, meta = path, m
        if path.name == BEST_FILE and isinstance(m.get("best_score"), (int, float)):
            info.best_metric = float(m["best_score"])
    if not checkpoints:
        info.problems.append("no checkpoint")
    elif info.checkpoint is None:
        info.problems.append("no readable checkpoint")

    info.event_files = len(events)
    summaries = [_event_summary(p) for p in events]
    if not events:
        info.problems.append("no TensorBoard event file")
    info.problems.extend(s.damaged for s in summaries if s.damaged)

    info.config = dict(meta.get("config") or {})
    if not info.config:  # no readable checkpoint: the hparams the event files end with
        info.config = next((s.hparams for s in reversed(summaries) if s.hparams), {})
    steps = [s.last_step for s in summaries] + [int(meta.get("iteration", 0))]
    info.iterations = max(0, *steps)
    per_iteration = _images_per_iteration(info.config)
    total_s, last_session_s = training_seconds(summaries, per_iteration) if per_iteration else (None, None)
    info.training_s = total_s
    info.status = _status(info, summaries, meta, last_session_s)
    starts = [s.first_time for s in summaries if s.first_time is not None]
    if not starts:
        with contextlib.suppress(OSError):
            starts = [min(p.stat().st_mtime for p in checkpoints)] if checkpoints else []
    info.started = min(starts) if starts else None
    if info.best_metric is None:
        scores = [s.best_metric for s in summaries if s.best_metric is not None] + [
            float(h[METRIC_KEY]) for h in meta.get("history") or [] if isinstance(h.get(METRIC_KEY), (int, float))]
        scores = [v for v in scores if math.isfinite(v)]
        info.best_metric = min(scores) if scores else None
    return info


def _images_per_iteration(config: Mapping[str, Any]) -> int | None:
    """Real images one iteration reads (d_steps batches; the unit of the rows' images/s)."""
    try:
        return int(config["batch_size"]) * int(config.get("d_steps", 1)) or None
    except (KeyError, TypeError, ValueError):
        return None


def training_seconds(files: list[_EventFile], images_per_iteration: int) -> tuple[float | None, float | None]:
    """(the run's training time, its last session's) in seconds, from the rows' images/s; None without rows.

    Sessions are merged as the curves are: a resumed session replaces what an earlier one logged from its
    first step on. A row's interval is the iterations since the row before it; a session's first row with no
    earlier row counts its next row's interval. A roll-back (iterations going back) counts nothing for that row."""
    kept_steps = np.empty(0, dtype=np.int64)
    kept_s = np.empty(0)
    last = None
    for f in files:
        steps, speed = np.array(f.speed_steps, dtype=np.int64), np.array(f.speed, dtype=np.float64)  # copies: a
        n = min(len(steps), len(speed))  # live run's reader may append meanwhile
        if not n:
            continue
        steps, speed = steps[:n], speed[:n]
        keep = kept_steps < steps[0]
        kept_steps, kept_s = kept_steps[keep], kept_s[keep]
        # the row before this session's first: an earlier session's, else as far back as its second row's
        first_gap = steps[1] - steps[0] if len(steps) > 1 else steps[0]
        before = int(kept_steps.max()) if len(kept_steps) else steps[0] - first_gap
        delta = np.diff(steps, prepend=before).astype(np.float64)
        ok = (delta > 0) & (speed > 0) & np.isfinite(speed)
        seconds = np.where(ok, delta * images_per_iteration / np.where(ok, speed, 1.0), 0.0)
        kept_steps, kept_s = np.concatenate([kept_steps, steps]), np.concatenate([kept_s, seconds])
        last = float(seconds.sum())
    if last is None:
        return None, None
    return float(kept_s.sum()), last


def _status(info: RunInfo, files: list[_EventFile], meta: dict[str, Any], last_session_s: float | None) -> str:
    """How the run's last session ended, from its files (the rule is in the module's docstring)."""
    steps = info.config.get("steps")
    reached = isinstance(steps, (int, float)) and info.iterations >= steps
    minutes = info.config.get("minutes") or 0
    timed_out = bool(minutes) and last_session_s is not None and last_session_s >= TIME_LIMIT_SLACK * minutes * 60
    if not files:  # no record of the session (a Hub download, a folder of checkpoints): what the checkpoint says
        return "" if info.checkpoint is None else "finished" if reached else "stopped"
    last = files[-1]
    if not last.ended:
        return "running" if time.time() - last.modified < WRITING_S else "interrupted"
    saved = int(meta.get("iteration", -1)) if info.checkpoint is not None else -1
    if saved < last.last_step:  # it ended after its newest checkpoint: an error, not a stop or the end
        return "failed"
    return "finished" if reached or timed_out else "stopped"


def recipe_of(config: Mapping[str, Any]) -> str:
    """The preset (dcgan.config.PRESETS) a run's settings match, else "custom"; "" for no settings at all.
    Settings a config lacks (an older run's) take TrainConfig's defaults, as they do when it loads."""
    return config_recipe({**_DEFAULTS, **config}) if config else ""


def list_runs(root: str | Path, live: Mapping[str, str] | None = None) -> list[RunInfo]:
    """Every run folder directly under root, newest started first. live: {run folder: the app's trainer
    state} for the run the app trains (dcgan.studio.Studio.run_states)."""
    root = Path(root)
    try:
        folders = [p for p in root.iterdir() if is_run_folder(p)] if root.is_dir() else []
    except OSError:
        return []
    states = {_same_path(k): v for k, v in (live or {}).items() if k}
    runs = [read_run(p, states.get(_same_path(p), "")) for p in folders]
    return sorted(runs, key=lambda r: (r.started or 0.0, r.name), reverse=True)


def _same_path(path: str | Path) -> str:
    try:
        return str(Path(path).resolve())
    except OSError:
        return str(path)


def curves(run_dir: str | Path) -> Curves:
    """A run's loop rows and metric records: from its event files (a resumed run's curve continues
    where its checkpoint was), else from its newest checkpoint's loss log and history."""
    run_dir = Path(run_dir)
    try:
        events = event_files(run_dir, grids=False)
        checkpoints = _checkpoints(run_dir) if run_dir.is_dir() else []
    except OSError:
        return Curves([], [], "none")
    if events:
        found = _cached("curves", events, lambda: _curves_from_events(events))
        if found.rows or found.history:
            return found
    for path in checkpoints:
        try:
            meta = checkpoint_meta(path)
        except CheckpointError:
            continue
        rows = [{"iteration": int(r[0]), "loss_d": r[1], "loss_g": r[2]} for r in meta.get("losses") or []
                if isinstance(r, list) and len(r) >= 3]
        history = [dict(h) for h in meta.get("history") or [] if isinstance(h, dict)]
        return Curves(rows, history, "checkpoint")
    return Curves([], [], "none")


def _accumulator(path: Path, **size_guidance: int):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, **size_guidance})
    ea.Reload()
    return ea


_accumulators: dict[str, tuple[Any, int]] = {}  # scalar file -> (its EventAccumulator, size when last read)


def _scalar_accumulator(path: Path):
    """TensorBoard's reader for one scalar file, kept between calls: a Reload reads only what was appended
    (a live run), and at most CURVE_POINTS points per curve are kept (TensorBoard's reservoir: the same
    steps for every tag, always the newest), so a 100k-step run costs a few MB."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    key, size = str(path), path.stat().st_size
    with _cache_lock:
        ea, seen = _accumulators.get(key, (None, 0))
        if ea is None or size < seen:  # new, or replaced by a shorter file
            if len(_accumulators) > 1024:
                _accumulators.clear()
            ea = EventAccumulator(key, size_guidance={"scalars": CURVE_POINTS, "images": 1, "tensors": 1})
        _accumulators[key] = (ea, size)
    ea.Reload()
    return ea


def _curves_from_events(files: list[Path]) -> Curves:
    """Scalar files oldest first, each with TensorBoard's reader; a later session (a resume) replaces
    what the earlier ones logged from its first step on, as TensorBoard's purge does."""
    rows: dict[int, dict] = {}
    records: dict[int, dict] = {}
    for path in files:
        try:
            ea = _scalar_accumulator(path)
            tags = set(ea.Tags().get("scalars", []))
            new_rows: dict[int, dict] = {}
            for key, tag in SCALARS.items():
                for e in ea.Scalars(tag) if tag in tags else []:
                    new_rows.setdefault(e.step, {"iteration": e.step, "time": e.wall_time})[key] = e.value
            new_records: dict[int, dict] = {}
            for tag in sorted(t for t in tags if t.startswith(METRIC_PREFIX)):
                for e in ea.Scalars(tag):
                    new_records.setdefault(e.step, {"iteration": e.step})[tag[len(METRIC_PREFIX):]] = e.value
        except Exception:  # damaged beyond what the reader skips: the other files still count
            continue
        if new_rows or new_records:
            first = min([*new_rows, *new_records])
            rows = {s: r for s, r in rows.items() if s < first} | new_rows
            records = {s: r for s, r in records.items() if s < first} | new_records
    return Curves([rows[s] for s in sorted(rows)], [records[s] for s in sorted(records)], "events")


# ---- comparing runs ---------------------------------------------------------------------------


def setting_label(key: str) -> str:
    """What the Train tab's form calls a setting (its label in TrainConfig's field metadata); an unknown key
    (an older run's) as it is."""
    try:
        return label(key)
    except KeyError:
        return key


def settings_diff(runs: list[RunInfo], only_different: bool = False) -> list[dict[str, Any]]:
    """One row per setting: {"setting" (its form label), "key", "values" (one per run, in order), "differs"},
    the differing settings first, each group in the form's order; dicts as JSON."""
    keys = sorted({k for r in runs for k in r.config}, key=lambda k: (_ORDER.get(k, len(_ORDER)), k))
    rows = []
    for key in keys:
        values = [_short(r.config.get(key, "—")) for r in runs]
        differs = len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1
        if differs or not only_different:
            rows.append({"setting": setting_label(key), "key": key, "values": values, "differs": differs})
    return sorted(rows, key=lambda row: not row["differs"])


def latest_grid(run_dir: str | Path) -> tuple[np.ndarray | None, str]:
    """(uint8 HxWx3 picture, where it came from) of a run's newest samples: samples.png when it is at
    least as new as the newest checkpoint, else 64 samples drawn from that checkpoint (seed 0), else the
    last fixed-noise grid in the event files. (None, reason) when there is nothing to show."""
    run = read_run(run_dir)
    ckpt_time = 0.0
    if run.checkpoint is not None:
        with contextlib.suppress(OSError):
            ckpt_time = run.checkpoint.stat().st_mtime
    png = run.path / "samples.png"
    with contextlib.suppress(OSError):
        if png.is_file() and png.stat().st_mtime >= ckpt_time:
            return _decode_png(png.read_bytes()), "samples.png"
    failed = ""
    if run.checkpoint is not None:
        try:
            grid = _cached("render", [run.checkpoint], lambda: _render(run.checkpoint))
            return grid, f"64 samples from {run.checkpoint.name}"
        except Exception as exc:  # a checkpoint that reads as a header but not as weights
            failed = f"{run.checkpoint.name} could not be loaded ({str(exc)[:120]})"
    for path in reversed([p for p in event_files(run.path) if p.name.endswith(GRIDS_SUFFIX)]):
        picture = _cached("grid", [path], lambda path=path: _event_grid(path))
        if picture is not None:
            return picture[1], f"fixed-noise grid at iteration {picture[0]:,}"
    return None, f"no samples: {failed}" if failed else "no samples yet"


def _event_grid(path: Path) -> tuple[int, np.ndarray] | None:
    try:
        ea = _accumulator(path, images=1)  # the reservoir keeps the newest
        if GRID_TAG not in ea.Tags().get("images", []):
            return None
        last = ea.Images(GRID_TAG)[-1]
        return last.step, _decode_png(last.encoded_image_string)
    except Exception:
        return None


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _render(checkpoint: Path) -> np.ndarray:
    from .checkpoint import load_generator
    from .images import grid_array
    from .models import sample

    G, _, _ = load_generator(checkpoint)
    return grid_array(sample(G, 64, seed=0), nrow=8)


# ---- rename and delete ------------------------------------------------------------------------


NAME_LIMIT = 100  # characters of a run name (the Runs tab's rename, a branch's default name)


def check_new_name(root: Path, name: str) -> str:
    """The stripped new name, or RunsError saying why it cannot be one."""
    name = (name or "").strip()
    if not name:
        raise RunsError("a run name cannot be empty")
    if "/" in name or "\\" in name:
        raise RunsError(f"{name!r}: a run name cannot contain / or \\ (runs live directly in {root})")
    if ".." in name or is_hidden(name):
        raise RunsError(f"{name!r}: a run name cannot contain '..' or start with '.'")
    if len(name) > NAME_LIMIT or not name.isprintable():
        raise RunsError(f"{name!r}: use at most {NAME_LIMIT} printable characters")
    if (root / name).exists():
        raise RunsError(f"a run named {name!r} already exists; choose another name")
    return name


def run_path(root: str | Path, name: str, active: str | Path | None = None) -> Path:
    """The run folder `name` directly inside root, resolved; RunsError for anything else (a path
    outside the root, a link, a folder that is not a run, the run being trained right now)."""
    root_resolved = Path(root).resolve()
    name = (name or "").strip()
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise RunsError(f"{name!r} is not a run in {root}")
    candidate = Path(root) / name
    path = candidate.resolve()
    if candidate.is_symlink() or path.parent != root_resolved:
        raise RunsError(f"{name!r} is not a folder inside {root}; nothing was changed")
    if active and Path(active).resolve() == path:  # before its first file is written, too
        raise RunsError(f"{name!r} is being trained right now; stop it first")
    if not is_run_folder(path):
        raise RunsError(f"{name!r} is not a run folder in {root}")
    return path


def rename_run(root: str | Path, name: str, new_name: str, active: str | Path | None = None) -> Path:
    """Rename a run folder; the checkpoints and event files inside keep working (they hold no paths)."""
    path = run_path(root, name, active)
    new = check_new_name(path.parent, new_name)
    target = path.parent / new
    try:
        os.rename(path, target)
    except OSError as exc:
        raise RunsError(f"could not rename {name!r}: {exc.strerror or exc}") from exc
    return target


def delete_run(root: str | Path, name: str, active: str | Path | None = None) -> None:
    """Delete a run folder and everything in it (checkpoints, event files, samples)."""
    path = run_path(root, name, active)
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise RunsError(f"could not delete {name!r} completely: {exc.strerror or exc}") from exc


# ---- formatting and the command line ----------------------------------------------------------


def lineage_text(record: Mapping[str, Any] | None) -> str:
    """A branch's parent in one cell: `parent @ step (key=value, ...)`; "" for a run that is not a branch."""
    if not record:
        return ""
    changes = record.get("changes") or {}
    what = ", ".join(f"{k}={_short(v[-1] if isinstance(v, list) and v else v)}" for k, v in changes.items())
    return f"{record.get('run', '?')} @ {record.get('step', '?')}" + (f" ({what})" if what else "")


def _short(value: Any) -> Any:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True) if value else ""
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def as_tree(runs: list[RunInfo]) -> list[tuple[int, RunInfo]]:
    """(depth, run) with each branch right under its parent (siblings in the listing's order) and its depth in the
    lineage: the Runs tab and `dcgan runs` show runs as a tree. A branch whose parent is gone (deleted, renamed)
    stands at the top."""
    names = {r.name for r in runs}
    children: dict[str, list[RunInfo]] = {}
    for r in runs:
        parent = (r.branched_from or {}).get("run")
        if parent in names and parent != r.name:
            children.setdefault(parent, []).append(r)
    out: list[tuple[int, RunInfo]] = []
    placed: set[str] = set()

    def place(run: RunInfo, depth: int) -> None:
        if run.name not in placed:
            placed.add(run.name)
            out.append((depth, run))
            for child in children.get(run.name, []):
                place(child, depth + 1)

    branches = {c.name for kids in children.values() for c in kids}
    for r in runs:  # tops first; then anything a loop of renames left out
        if r.name not in branches:
            place(r, 0)
    for r in runs:
        place(r, 0)
    return out


def tree_rows(runs: list[RunInfo]) -> list[dict[str, Any]]:
    """The table's rows in tree order, a branch's name indented under its parent's."""
    return [{**r.row(), "run": ("   " * (depth - 1) + "└─ " if depth else "") + r.name} for depth, r in as_tree(runs)]


def format_table(runs: list[RunInfo]) -> str:
    """The runs table as aligned text columns, branches under their parents."""
    if not runs:
        return "no runs"
    rows = tree_rows(runs)
    optional = ("problems", "branched from")  # shown when a run has one
    columns = [c for c in rows[0] if c not in optional or any(r[c] for r in rows)]
    cells = [[str(c) for c in columns]] + [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("runs", help="list the runs under a checkpoints folder",
                            description="List the runs under a checkpoints folder: status (finished, stopped, "
                                        "failed, running, interrupted), recipe, data set, size and key settings, "
                                        "iterations, training time, best metric, start time, the run a branch "
                                        "was branched from (at which step, what changed) and problems.")
    parser.add_argument("root", nargs="?", default="checkpoints",
                        help="folder of run folders (default: checkpoints, in the current folder: where `train` "
                             "writes them unless given --out-dir)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.set_defaults(func=cmd_runs)
    return parser


def where_to_look(root: Path, prog: str = "dcgan") -> str:
    """The folder that was looked in, and how to look elsewhere (for a listing that found nothing)."""
    return (f"{root.absolute()} (runs live where `{prog} train` wrote them: --out-dir, default ./checkpoints "
            f"of the folder it ran in); list another folder with: {prog} runs PATH")


def cmd_runs(args: argparse.Namespace) -> int:
    root = Path(args.root)
    prog = getattr(args, "prog", "dcgan")
    if not root.is_dir():
        print(f"error: no folder {where_to_look(root, prog)}", file=sys.stderr)
        return 2
    runs = list_runs(root)
    if not runs and not args.json:
        print(f"no runs in {where_to_look(root, prog)}")
        return 0
    if args.json:
        for r in runs:  # one run per line, as listed; "branched from" holds the lineage
            print(json.dumps({**r.row(), "path": str(r.path), "config": r.config}, default=str))
    else:
        print(format_table(runs))
    return 0
