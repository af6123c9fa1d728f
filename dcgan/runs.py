"""The runs under a checkpoints folder, for comparing them: what each one was, its curves, its samples.

A run is a folder directly under the root holding checkpoints (step_*.safetensors, best.safetensors)
and/or TensorBoard event files (dcgan/tblog.py). Reading never raises for a damaged or missing file:
the run still lists, with its `problems` saying what is wrong. Curves come from the event files
(TensorBoard's own reader), falling back to the loss log and metric history a checkpoint keeps.
Rename and delete act only on run folders directly inside the root. No UI here: the Runs tab
(ui/runs_tab.py) and `python -m dcgan runs` both use these functions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import BEST_FILE, STEP_FILE, CheckpointError, is_hidden, read_meta
from .metrics import METRIC_KEY
from .tblog import GRID_TAG, GRIDS_SUFFIX, METRIC_PREFIX, SCALARS, event_files

TABLE_SETTINGS = {"loss": "loss", "lr_g": "lr G", "lr_d": "lr D", "batch_size": "batch", "ema_decay": "EMA",
                  "num_classes": "classes", "seed": "seed"}  # config key -> column of the runs table
RECORD_OVERHEAD = 16  # a TFRecord frames its payload with a length, two CRCs: 8 + 4 + 4 bytes
CURVE_POINTS = 10_000  # points kept per curve and file for the plots (they show at most 500)
WRITING_S = 60.0  # an event file modified this recently may end in a record still being written


class RunsError(ValueError):
    """A rename or delete that was refused; the message says why. Nothing was changed."""


@dataclass
class RunInfo:
    name: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    iterations: int = 0
    wall_time_s: float | None = None
    best_metric: float | None = None
    started: float | None = None  # Unix time
    checkpoint: Path | None = None  # the newest readable one
    event_files: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def row(self) -> dict[str, Any]:
        """One line of the runs table (the app's and the terminal's)."""
        c = self.config
        row = {"run": self.name, "data set": c.get("dataset", "?"),
               "size": f"{c['image_size']}px" if "image_size" in c else "?"}
        row.update({column: _short(c.get(key, "")) for key, column in TABLE_SETTINGS.items()})
        row.update({"iterations": self.iterations, "wall time": _duration(self.wall_time_s),
                    f"best {METRIC_KEY}": "" if self.best_metric is None else f"{self.best_metric:.4g}",
                    "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started)) if self.started else "",
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
                        if value.tag == METRIC_PREFIX + METRIC_KEY and value.HasField("simple_value"):
                            v = value.simple_value
                            if math.isfinite(v) and (out.best_metric is None or v < out.best_metric):
                                out.best_metric = v
                        elif value.tag == "_hparams_/session_start_info":
                            data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                            out.hparams = {k: _hparam(v) for k, v in data.session_start_info.hparams.items()}
                # TensorBoard's reader stops quietly at a damaged record; the byte count notices it. A file
                # written to right now may end in half a record: only an older one counts as damaged.
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


def read_run(run_dir: str | Path) -> RunInfo:
    """Everything the runs table shows about one folder; problems are listed, never raised (for anything
    not foreseen, such as odd metadata in a readable file, the row says 'unreadable')."""
    run_dir = Path(run_dir)
    try:
        return _read_run(run_dir)
    except Exception as exc:
        return RunInfo(run_dir.name, run_dir, problems=[f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"])


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
    spans = [s.last_time - s.first_time for s in summaries if s.first_time is not None]
    info.wall_time_s = sum(spans) if spans else None
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


def list_runs(root: str | Path) -> list[RunInfo]:
    """Every run folder directly under root, newest started first."""
    root = Path(root)
    try:
        folders = [p for p in root.iterdir() if is_run_folder(p)] if root.is_dir() else []
    except OSError:
        return []
    runs = [read_run(p) for p in folders]
    return sorted(runs, key=lambda r: (r.started or 0.0, r.name), reverse=True)


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


def settings_diff(runs: list[RunInfo], only_different: bool = False) -> list[dict[str, Any]]:
    """One row per setting: {"setting", "values" (one per run, in order), "differs"}, the differing
    settings first; dicts as JSON."""
    keys = sorted({k for r in runs for k in r.config})
    rows = []
    for key in keys:
        values = [_short(r.config.get(key, "—")) for r in runs]
        differs = len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1
        if differs or not only_different:
            rows.append({"setting": key, "values": values, "differs": differs})
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


def check_new_name(root: Path, name: str) -> str:
    """The stripped new name, or RunsError saying why it cannot be one."""
    name = (name or "").strip()
    if not name:
        raise RunsError("a run name cannot be empty")
    if "/" in name or "\\" in name:
        raise RunsError(f"{name!r}: a run name cannot contain / or \\ (runs live directly in {root})")
    if ".." in name or is_hidden(name):
        raise RunsError(f"{name!r}: a run name cannot contain '..' or start with '.'")
    if len(name) > 100 or not name.isprintable():
        raise RunsError(f"{name!r}: use at most 100 printable characters")
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


def format_table(runs: list[RunInfo]) -> str:
    """The runs table as aligned text columns."""
    if not runs:
        return "no runs"
    rows = [r.row() for r in runs]
    columns = [c for c in rows[0] if c != "problems" or any(r["problems"] for r in rows)]
    cells = [[str(c) for c in columns]] + [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def add_parser(sub) -> argparse.ArgumentParser:
    parser = sub.add_parser("runs", help="list the runs under a checkpoints folder",
                            description="List the runs under a checkpoints folder: data set, size, loss and key "
                                        "settings, iterations, wall time, best metric, start time and problems.")
    parser.add_argument("root", nargs="?", default="checkpoints", help="folder of run folders (default: checkpoints)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    parser.set_defaults(func=cmd_runs)
    return parser


def cmd_runs(args: argparse.Namespace) -> int:
    root = Path(args.root)
    if not root.is_dir():
        print(f"error: {root} is not a folder", file=sys.stderr)
        return 2
    runs = list_runs(root)
    if args.json:
        for r in runs:
            print(json.dumps({**r.row(), "path": str(r.path), "config": r.config}, default=str))
    else:
        print(format_table(runs))
    return 0
