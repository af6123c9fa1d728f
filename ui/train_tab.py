"""The Train tab: set up a run, start / pause / step / stop it, and watch it learn live.

Every browser shares the one `studio.trainer`; this module only turns its status, metrics and
pictures into components, polled by a `gr.Timer`. The callbacks are plain functions of their
inputs (plus the studio) so tests can call them without a browser. Errors come back as text in
the page, never as an exception that would leave the controls in a strange state.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image

from dcgan.checkpoint import CheckpointError, read
from dcgan.config import DEVICES, IMAGE_SIZES, LOSSES, PRECISIONS, ConfigError, TrainConfig
from dcgan.data import DATA_ROOT, DATASETS, DatasetError
from dcgan.images import grid_array, save_gif, upscale
from dcgan.train import generate
from dcgan.trainer import ACTIVE, FAILED, IDLE, PAUSED, RUNNING, STARTING, Status, TrainerBusy
from ui.state import Studio

POLL_S = 1.0  # seconds between live-view refreshes in each browser
MAX_POINTS = 500  # plotted points per curve, however long the run
TIMELINE_FRAMES = 24  # past grids shown in the gallery (the GIF gets them all)
STEP_MODES = {"both (D then G)": "both", "D only": "d", "G only": "g"}
# UI field -> TrainConfig field, in the order the Start button passes them
CONFIG_FIELDS = ("dataset", "image_size", "channels", "batch_size", "steps", "lr_g", "lr_d", "loss", "nz",
                 "seed", "device", "ngf", "ndf", "precision", "metric_every", "run_name")
METRIC_SERIES = {"score": "score (lower is better)", "digit_fd_real": "real digits (ideal score)"}
NO_METRICS = ("No quality metrics in this run. Set *Quality metrics every* (Advanced) before starting to score the "
              "generator during training: a Fréchet distance in a digit classifier's features for digits/MNIST "
              "(FID with InceptionV3 where its weights exist); the best checkpoint is kept as best.safetensors.")
LOSS_COLORS = {"loss_D": "#d62728", "loss_G": "#1f77b4"}
D_COLORS = {"D(x) real": "#2ca02c", "D(G(z)) fake": "#ff7f0e", "0.5 (can't tell)": "#7f7f7f"}

EXPLAIN_D = """
**How to read D(x) and D(G(z))**: the discriminator D outputs the probability that an image is real.
*D(x)* is its average answer on real images, *D(G(z))* on the generator's fakes. Early on D wins easily
(D(x) near 1, D(G(z)) near 0). As G improves the two lines move toward **0.5**: D can no longer tell
real from fake. A healthy GAN hovers around there with both losses wobbling, not converging to zero.
"""
EXPLAIN_FAILURES = """
**What going wrong looks like**
- **Dying discriminator / D wins for good**: loss_D falls to about 0, D(x) stays at 1 and D(G(z)) at 0
  for hundreds of iterations, and the samples stop improving: G gets no useful gradient. Lower `lr D`,
  try the `hinge` or `wgan-gp` loss, or a smaller D (`ndf`).
- **Mode collapse**: the 64 fixed-noise samples turn into a few identical images (the same digit
  everywhere) although each square gets different noise; loss_G often swings wildly. Restart with
  another seed, a lower `lr G`, or the `wgan-gp` loss.
- **Divergence**: NaN losses. The trainer rolls back to its last good state and halves the learning
  rates; the message appears above the plots.
"""


# ---- small helpers -------------------------------------------------------------------------------


def require_owner(studio: Studio, request: Any) -> None:
    """Training controls go through the studio's access hook when it has one (public Spaces)."""
    hook = getattr(studio, "require_owner", None)
    if hook is not None:
        hook(request)


def problem(exc: BaseException) -> str:
    """A short page message for an error a user can fix, saying what to do."""
    if isinstance(exc, TrainerBusy):
        return f"⚠ **Busy**: {exc}. This app runs one training job at a time, shared by every viewer."
    if isinstance(exc, ConfigError):
        return f"⚠ **Setting `{exc.field}`**: {exc}. Fix it and press *Start* again."
    if isinstance(exc, DatasetError):
        return f"⚠ **Data set**: {exc}"
    if isinstance(exc, CheckpointError):
        return f"⚠ **Checkpoint**: {exc}"
    if isinstance(exc, PermissionError):
        return f"⚠ **Not allowed**: {exc}"
    return f"⚠ {exc}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def status_line(st: Status) -> str:
    """One line: state, progress, speed, ETA, device and precision."""
    if st.state == IDLE:
        return "**idle**: no run yet. Choose settings and press **Start** (the bundled digits train offline)."
    if st.state == STARTING:
        return "**starting**: loading the data and building the networks…"
    pct = 100.0 * st.iteration / st.total if st.total else 0.0
    parts = [f"**{st.state}**", f"iteration {st.iteration:,} / {st.total:,} ({pct:.0f}%)", f"epoch {st.epoch:.2f}"]
    if st.state == RUNNING:
        parts += [f"{st.images_per_s:,.0f} images/s", f"ETA {format_seconds(st.eta_s)}"]
    if st.device:
        parts.append(f"{st.device} · {st.precision}")
    return " · ".join(parts)


def run_notice(st: Status) -> str:
    """The trainer's error (with what to do) and its latest events, for every viewer."""
    lines = []
    if st.error:
        head = {FAILED: "✗ **Training failed**", PAUSED: "⚠ **Training paused**"}.get(st.state, "⚠ **Warning**")
        lines.append(f"{head}: {st.error.splitlines()[0]}")
        if st.state == FAILED:
            lines.append("The app keeps serving: change the settings and press **Start**, or **Reset**.")
    events = [e for e in st.events if not st.error or e != st.error.splitlines()[0]]
    lines += [f"- {e}" for e in events[-3:]]
    if st.run_dir and st.state != IDLE:
        lines.append(f"Run folder: `{st.run_dir}`")
    return "\n".join(lines)


def controls(state: str) -> dict[str, bool]:
    """Which buttons make sense in each trainer state."""
    active = state in ACTIVE
    return {"start": not active, "pause": state == RUNNING, "resume": state == PAUSED,
            "step": state in (RUNNING, PAUSED), "stop": active, "reset": state != IDLE and state != STARTING}


def health_hint(rows: list[dict], window: int = 50) -> str:
    """A plain-language warning when the recent numbers look like a known failure."""
    recent = [r for r in rows[-window:] if r.get("d_real") is not None and r.get("d_fake") is not None]
    if len(recent) < window // 2:
        return ""
    d_real = float(np.nanmean([r["d_real"] for r in recent]))
    d_fake = float(np.nanmean([r["d_fake"] for r in recent]))
    if d_real > 0.97 and d_fake < 0.03:
        return ("Hint: D wins every time (D(x) ≈ 1, D(G(z)) ≈ 0): G learns little from it. If this lasts, "
                "lower `lr D` or try the hinge / wgan-gp loss.")
    if abs(d_real - 0.5) < 0.02 and abs(d_fake - 0.5) < 0.02:
        return ("Hint: D answers 0.5 for everything: either G is excellent or D stopped learning. Look at the "
                "samples: if they are poor, D has died; raise `lr D` or restart.")
    return ""


# ---- plots -------------------------------------------------------------------------------------


def downsample(iterations: np.ndarray, values: np.ndarray,
               max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Bucket means over consecutive points (NaN-aware), so a 100k-step run still plots 500 points."""
    n = len(values)
    if n <= max_points:
        return iterations, values
    edges = np.linspace(0, n, max_points + 1).astype(int)
    its = np.array([iterations[b - 1] for b in edges[1:]])
    with warnings.catch_warnings():  # an all-NaN bucket (only G-only steps) warns; it is dropped later
        warnings.simplefilter("ignore", RuntimeWarning)
        vals = np.array([np.nanmean(values[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    return its, vals


def smooth_ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style debiased exponential moving average; NaNs are skipped, not spread."""
    if weight <= 0:
        return values
    out = np.empty_like(values)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            out[i] = np.nan
            continue
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = avg / norm
    return out


def curve_frame(rows: list[dict], series: dict[str, str], smooth: float = 0.0,
                max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Long-format (iteration, value, series) table of some metric columns, downsampled and smoothed."""
    parts = []
    if rows:
        iterations = np.array([r["iteration"] for r in rows], dtype=np.int64)
        for key, label in series.items():
            values = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=np.float64)
            its, vals = downsample(iterations, values, max_points)
            vals = smooth_ema(vals, smooth)
            keep = np.isfinite(vals)
            parts.append(pd.DataFrame({"iteration": its[keep], "value": vals[keep], "series": label}))
    if not parts:
        return pd.DataFrame({"iteration": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                             "series": pd.Series(dtype="str")})
    return pd.concat(parts, ignore_index=True)


def loss_frame(rows: list[dict], smooth: float = 0.0) -> pd.DataFrame:
    return curve_frame(rows, {"loss_d": "loss_D", "loss_g": "loss_G"}, smooth)


def d_frame(rows: list[dict], smooth: float = 0.0) -> pd.DataFrame:
    """D(x) and D(G(z)) plus the 0.5 reference line across the plotted range."""
    frame = curve_frame(rows, {"d_real": "D(x) real", "d_fake": "D(G(z)) fake"}, smooth)
    if len(frame):
        lo, hi = int(frame["iteration"].min()), int(frame["iteration"].max())
        half = pd.DataFrame({"iteration": [lo, hi], "value": [0.5, 0.5], "series": "0.5 (can't tell)"})
        frame = pd.concat([frame, half], ignore_index=True)
    return frame


def metric_frame(history: list[dict]) -> pd.DataFrame:
    """The run's score over time (plus the score of real images, its ideal) in long format."""
    rows = [{"iteration": h["iteration"], "value": float(h[k]), "series": label} for h in history
            for k, label in METRIC_SERIES.items()
            if isinstance(h.get(k), (int, float)) and math.isfinite(h[k])]
    return pd.DataFrame(rows, columns=["iteration", "value", "series"])


def metric_table(history: list[dict], last: int = 10) -> pd.DataFrame:
    """The latest quality-metric records, newest first, every number they hold."""
    rows = [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in history[-last:]]
    return pd.DataFrame(rows[::-1])


def caption(rows: list[dict], frame: pd.DataFrame, smooth: float) -> str:
    if not rows:
        return "no data yet"
    shown = frame["iteration"].nunique() if len(frame) else 0
    how = f", smoothing {smooth:.2f}" if smooth > 0 else ""
    return f"{len(rows):,} records up to iteration {rows[-1]['iteration']:,}; {shown} points shown{how}"


def run_history(studio: Studio) -> list[dict]:
    """The run's quality-metric records if the trainer exposes them."""
    history = getattr(studio.trainer, "history", None)
    return list(history()) if callable(history) else []


# ---- run setup ---------------------------------------------------------------------------------


MAX_KEPT_UPLOADS = 5  # uploaded zips kept under data/uploads/ for resuming; older ones are deleted


def uploads_dir() -> Path:
    return Path(DATA_ROOT) / "uploads"


def keep_upload(zip_path: str) -> str:
    """Copy an uploaded zip to data/uploads/ under a content-hash name, so a resumed run still finds
    it after the upload's temporary file is gone."""
    src = Path(zip_path)
    if src.suffix.lower() != ".zip":
        raise DatasetError(f"{src.name} is not a .zip file; upload a zip of PNG/JPEG images "
                           f"(optionally one sub-folder per class)")
    digest = hashlib.sha256()
    with src.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    dest = uploads_dir() / f"{src.stem[:40]}-{digest.hexdigest()[:12]}.zip"
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    os.utime(dest)  # newest use first when pruning
    prune_uploads(keep=dest)
    return str(dest)


def prune_uploads(keep: Path, max_files: int = MAX_KEPT_UPLOADS) -> list[Path]:
    """Delete the least recently used kept zips beyond max_files, so a public app's disk cannot fill
    up with uploads; the one in use stays. Returns what was deleted."""
    kept = sorted(uploads_dir().glob("*.zip"), key=lambda p: p.stat().st_mtime, reverse=True)
    doomed = [p for p in kept if p != keep][max_files - 1:]
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def build_config(studio: Studio, values: dict[str, Any], zip_path: str | None = None) -> TrainConfig:
    """A validated TrainConfig from the form; ConfigError names the field to fix."""
    settings: dict[str, Any] = {}
    for name in CONFIG_FIELDS:
        value = values.get(name)
        if value is None or (isinstance(value, str) and name != "run_name" and not value.strip()):
            raise ConfigError(name, "is empty; fill it in")
        settings[name] = value
    settings["image_size"] = int(settings["image_size"])
    settings["channels"] = int(settings["channels"])
    settings["run_name"] = str(settings["run_name"] or "").strip()
    if settings["dataset"] == "folder":
        if not zip_path:
            raise ConfigError("data_path", "the 'folder' data set needs images: upload a .zip of images first")
        settings["data_path"] = keep_upload(zip_path)
    settings["out_dir"] = str(studio.checkpoints_dir)
    return TrainConfig(**settings).validate()


# ---- control callbacks -------------------------------------------------------------------------


def start(studio: Studio, values: dict[str, Any], zip_path: str | None = None, request: Any = None) -> str:
    """Start a run from the form; returns the message for the page."""
    try:
        require_owner(studio, request)
        cfg = build_config(studio, values, zip_path)
        studio.trainer.start(cfg)
    except (TrainerBusy, ConfigError, DatasetError, CheckpointError, PermissionError, ValueError) as exc:
        return problem(exc)
    except MemoryError:
        return "⚠ **Out of memory** while loading the data: pick a smaller image size or data set."
    st = studio.trainer.status()
    return f"✓ Started: {cfg.dataset}, {cfg.image_size}px, {cfg.steps:,} iterations on {st.device} ({st.precision})."


def _control(studio: Studio, request: Any, needed: str, action: str, done: str) -> str:
    """Pause / resume: owner check, then act only in the state where the action makes sense."""
    try:
        require_owner(studio, request)
    except PermissionError as exc:
        return problem(exc)
    st = studio.trainer.status()
    if st.state != needed:
        return f"Nothing to {action}: the run is {st.state}."
    getattr(studio.trainer, action)()
    return done


def pause(studio: Studio, request: Any = None) -> str:
    return _control(studio, request, RUNNING, "pause",
                    "Paused. *Resume* continues; *Step* runs single iterations so you can watch each update.")


def resume(studio: Studio, request: Any = None) -> str:
    return _control(studio, request, PAUSED, "resume", "Resumed.")


def step(studio: Studio, k: Any, mode: str, request: Any = None) -> str:
    """Queue k single iterations (both, D only or G only); pauses a running run first."""
    try:
        require_owner(studio, request)
        if k is None:
            raise ValueError("k: enter how many iterations to step")
        update = STEP_MODES.get(mode, mode)
        studio.trainer.step(int(k), update)
    except (ValueError, PermissionError) as exc:
        return problem(exc)
    except RuntimeError as exc:
        return f"⚠ {exc}."
    what = {"both": "D and G", "d": "only D", "g": "only G"}[update]
    return f"Stepping {int(k)} iteration(s) updating {what}; the run stays paused afterwards."


def stop(studio: Studio, request: Any = None) -> str:
    try:
        require_owner(studio, request)
    except PermissionError as exc:
        return problem(exc)
    st = studio.trainer.status()
    if st.state not in ACTIVE:
        return f"Nothing to stop: the run is {st.state}."
    studio.trainer.stop(wait=True)
    path = studio.trainer.last_checkpoint()
    saved = f" Saved `{path.name}`." if path else ""
    return f"Stopped at iteration {studio.trainer.status().iteration:,}.{saved}"


def reset(studio: Studio, request: Any = None) -> str:
    try:
        require_owner(studio, request)
        studio.trainer.reset()
    except (PermissionError, TrainerBusy) as exc:
        return problem(exc)
    return "Reset: plots and pictures cleared (checkpoints on disk are kept)."


def checkpoint_choices(studio: Studio) -> list[str]:
    root = studio.checkpoints_dir.resolve()
    return [p.resolve().relative_to(root).as_posix() for p in studio.list_checkpoints()]


def resume_checkpoint(studio: Studio, name: str | None, steps: Any, device: str, request: Any = None) -> str:
    """Continue a saved run exactly where it stopped; Steps above its iteration extends it."""
    try:
        require_owner(studio, request)
        if not name:
            raise CheckpointError("choose a checkpoint from the list first (press ↻ to refresh it)")
        path = studio.resolve_checkpoint(name)
        _, meta = read(path)
        done = int(meta.get("iteration", 0))
        total = int(steps) if steps else int(meta["config"]["steps"])
        if total <= done:
            raise ConfigError("steps", f"the checkpoint is already at iteration {done:,}; set Steps above it "
                                       f"to train further")
        studio.trainer.start(TrainConfig(steps=total, device=device or "auto"), resume_from=path)
    except (TrainerBusy, ConfigError, DatasetError, CheckpointError, PermissionError, ValueError) as exc:
        return problem(exc)
    return f"✓ Resumed `{name}` at iteration {done:,}; training to {total:,}."


def load_for_samples(studio: Studio, name: str | None) -> str:
    """Load a checkpoint's generator for the sample panel (and the Explore tab); training is untouched."""
    try:
        if not name:
            raise CheckpointError("choose a checkpoint from the list first")
        model = studio.load_checkpoint(name)
    except (CheckpointError, ValueError) as exc:
        return problem(exc)
    return f"✓ Loaded `{model.label}` for sampling (used when no run is live)."


def download_checkpoint(studio: Studio, request: Any = None) -> tuple[str | None, str]:
    """(file, message): the newest checkpoint of the run, saving one first when the run is paused."""
    trainer = studio.trainer
    st = trainer.status()
    path = trainer.last_checkpoint()
    try:
        if st.state in (PAUSED,) or (path is None and st.state not in (RUNNING, STARTING, IDLE)):
            require_owner(studio, request)
            path = trainer.save_checkpoint()
    except (RuntimeError, CheckpointError, PermissionError) as exc:
        return None, problem(exc)
    if path is None:
        if st.state == IDLE:
            return None, "No run yet: start training first."
        every = trainer.config.checkpoint_every if trainer.config else 0
        when = f"every {every:,} iterations" if every else "when it stops"
        return None, f"No checkpoint yet: the run saves {when}; pause it to save one now."
    iteration = int(read(path)[1]["iteration"])
    return str(path), f"Checkpoint `{path.name}` (iteration {iteration:,}); continue it later with *Resume training*."


def export_gif(studio: Studio) -> tuple[str | None, str]:
    """The evolution of the fixed-noise grid as an animated GIF."""
    frames = studio.trainer.frames()
    if len(frames) < 2:
        return None, "Not enough snapshots yet: let the run train a few seconds first."
    out = Path(tempfile.mkdtemp(prefix="dcgan-gif-")) / f"evolution-{time.strftime('%Y%m%d-%H%M%S')}.gif"
    save_gif([upscale(f, 256) for _, f in frames], out)
    return str(out), f"GIF of {len(frames)} snapshots, iterations {frames[0][0]:,} to {frames[-1][0]:,}."


def new_samples(studio: Studio, seed: Any) -> tuple[np.ndarray | None, str]:
    """64 fresh samples from the current generator (live run first, else the loaded checkpoint)."""
    model = studio.current_model()
    if model is None:
        return None, "No generator yet: start a run or load a checkpoint."
    seed = int(seed or 0) % 2**63
    cfg = model.config
    z = torch.randn(64, cfg.nz, generator=torch.Generator().manual_seed(seed))
    labels = torch.arange(64) % cfg.num_classes if cfg.num_classes else None
    images = generate(model.generator, z, labels)
    return upscale(grid_array(images, nrow=8), 384), f"64 samples from **{model.label}**, seed {seed}."


# ---- the live view -----------------------------------------------------------------------------


def timeline_frames(frames: list[tuple[int, np.ndarray]], n: int = TIMELINE_FRAMES) -> list[tuple[int, np.ndarray]]:
    """At most n snapshots spread evenly over iterations (snapshots are taken by the clock, and a run's speed
    changes, so evenly by index would crowd the fast or the slow part)."""
    if len(frames) <= n:
        return frames
    its = np.array([it for it, _ in frames])
    picked = sorted({int(np.abs(its - target).argmin()) for target in np.linspace(its[0], its[-1], n)})
    return [frames[i] for i in picked]


class PictureFiles:
    """PNG files of the run's pictures, each encoded once and shared by every browser.

    Handing Gradio the same finished file from every poll costs a copy, not a PNG encode per viewer per
    second, and a file is renamed into place whole, so a browser never downloads half of one.
    """

    def __init__(self, keep: int = 400) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dcgan-pictures-"))
        self.keep = keep
        self._lock = threading.Lock()
        self._files: OrderedDict[str, str] = OrderedDict()

    def png(self, picture: np.ndarray, min_side: int = 0) -> str:
        """The file of `picture` (upscaled to min_side), keyed by its content: a new run never gets stale files."""
        key = f"{min_side}:{hashlib.sha1(np.ascontiguousarray(picture).tobytes()).hexdigest()}"
        with self._lock:
            if key in self._files:
                self._files.move_to_end(key)
                return self._files[key]
        path = self.dir / f"{key.replace(':', '-')}.png"
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".png")
        with os.fdopen(fd, "wb") as fh:
            Image.fromarray(upscale(picture, min_side) if min_side else picture).save(fh, format="PNG")
        os.replace(tmp, path)
        with self._lock:
            self._files[key] = str(path)
            while len(self._files) > self.keep:
                Path(self._files.popitem(last=False)[1]).unlink(missing_ok=True)
        return str(path)


_pictures: PictureFiles | None = None
_pictures_lock = threading.Lock()


def pictures() -> PictureFiles:
    """The process's picture files, created on first use (importing this module writes nothing)."""
    global _pictures
    with _pictures_lock:
        if _pictures is None:
            _pictures = PictureFiles()
        return _pictures


def live_view(studio: Studio, seen: dict | None, smooth: float = 0.6) -> tuple[dict, dict[str, Any]]:
    """Everything the page shows about the run, computing only what changed since `seen` (per browser).

    Returns the new `seen` and a dict of component name -> new value or gr.skip().
    """
    seen = dict(seen or {})
    trainer = studio.trainer
    st = trainer.status()
    out: dict[str, Any] = {}
    run_key = (st.run_dir, st.state == IDLE)
    new_run = seen.get("run") != run_key
    if new_run:
        seen = {"run": run_key}

    text = status_line(st)
    out["status"] = text if seen.get("status") != text else gr.skip()
    seen["status"] = text
    notice = run_notice(st)
    out["notice"] = notice if seen.get("notice") != notice else gr.skip()
    seen["notice"] = notice
    if seen.get("state") != st.state:
        out["buttons"] = controls(st.state)
        seen["state"] = st.state

    n_rows = len(trainer.metrics)
    if seen.get("rows") != n_rows or seen.get("smooth") != smooth:
        rows = trainer.metrics.since(0)
        losses, ds = loss_frame(rows, smooth), d_frame(rows, smooth)
        # None, not an empty table: the browser builds a plot's legend from the first data it gets
        out["loss_plot"] = gr.LinePlot(value=losses if len(losses) else None, caption=caption(rows, losses, smooth))
        out["d_plot"] = gr.LinePlot(value=ds if len(ds) else None, caption=caption(rows, ds, smooth))
        out["hint"] = health_hint(rows)
        seen["rows"], seen["smooth"] = n_rows, smooth
    else:
        out["loss_plot"] = out["d_plot"] = out["hint"] = gr.skip()

    iteration, grid = trainer.grid()
    if grid is not None and seen.get("grid") != iteration:
        out["grid"] = gr.Image(value=pictures().png(grid, 480), label=f"Fixed-noise samples at iteration {iteration:,}")
        seen["grid"] = iteration
    elif grid is None and seen.get("grid") is not None or new_run and grid is None:
        out["grid"] = gr.Image(value=None, label="Fixed-noise samples")
        seen["grid"] = None
    else:
        out["grid"] = gr.skip()

    frames = trainer.frames()
    frame_key = (len(frames), frames[-1][0] if frames else -1)
    if seen.get("frames") != frame_key:
        pick = timeline_frames(frames)
        out["timeline"] = [(pictures().png(f), f"it {it:,}") for it, f in pick]
        seen["frames"] = frame_key
    else:
        out["timeline"] = gr.skip()

    history = run_history(studio)
    if seen.get("history") != len(history):
        frame = metric_frame(history)
        out["metrics"] = gr.LinePlot(value=frame if len(frame) else None, visible=bool(len(frame)))
        out["metrics_table"] = gr.Dataframe(value=metric_table(history), visible=bool(history))
        out["metrics_note"] = "" if history else NO_METRICS
        seen["history"] = len(history)
    else:
        out["metrics"] = out["metrics_table"] = out["metrics_note"] = gr.skip()
    return seen, out


# ---- layout ------------------------------------------------------------------------------------


def build(studio: Studio) -> None:
    """The Train tab's components and events (called inside `with gr.Tab("Train")`)."""
    defaults = TrainConfig()
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=330):
            gr.Markdown("### Set up a run")
            form: dict[str, gr.components.Component] = {}
            form["dataset"] = gr.Dropdown(list(DATASETS), value="digits", label="Data set",
                                          info="digits: 5,000 real MNIST digits, bundled (offline). "
                                               "folder: your own zip below.", elem_id="dataset")
            zip_file = gr.File(label="Your images (.zip, optional class sub-folders)", file_types=[".zip"],
                               type="filepath", height=120, elem_id="zip-upload")
            with gr.Row():
                form["image_size"] = gr.Dropdown([str(s) for s in IMAGE_SIZES], value="28", label="Image size",
                                                 min_width=90)
                form["channels"] = gr.Radio(["1", "3"], value="1", label="Channels", info="1 grey · 3 colour",
                                            min_width=90)
            with gr.Row():
                form["batch_size"] = gr.Number(64, label="Batch size", precision=0, minimum=2, min_width=90,
                                               elem_id="batch-size")
                form["steps"] = gr.Number(2000, label="Steps (iterations)", precision=0, minimum=1,
                                          min_width=90, elem_id="steps")
            with gr.Row():
                form["lr_g"] = gr.Number(defaults.lr_g, label="lr G", min_width=90, elem_id="lr-g")
                form["lr_d"] = gr.Number(defaults.lr_d, label="lr D", min_width=90)
            with gr.Row():
                form["loss"] = gr.Dropdown(list(LOSSES), value=defaults.loss, label="Loss", min_width=90)
                form["nz"] = gr.Number(defaults.nz, label="nz (noise size)", precision=0, min_width=90)
            with gr.Row():
                form["seed"] = gr.Number(defaults.seed, label="Seed", precision=0, min_width=90)
                form["device"] = gr.Dropdown(list(DEVICES), value="auto", label="Device", min_width=90,
                                             elem_id="device")
            with gr.Accordion("Advanced", open=False):
                with gr.Row():
                    form["ngf"] = gr.Number(defaults.ngf, label="ngf (G width)", precision=0, min_width=90,
                                            elem_id="ngf")
                    form["ndf"] = gr.Number(defaults.ndf, label="ndf (D width)", precision=0, min_width=90,
                                            elem_id="ndf")
                with gr.Row():
                    form["precision"] = gr.Dropdown(list(PRECISIONS), value="auto", label="Precision",
                                                    elem_id="precision", min_width=90)
                    form["metric_every"] = gr.Number(0, label="Quality metrics every", precision=0, minimum=0,
                                                     info="steps; 0 = off", min_width=90, elem_id="metric-every")
                form["run_name"] = gr.Textbox("", label="Run name", placeholder="auto: dataset-size-time")
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", elem_id="start-btn")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-btn")
            with gr.Row():
                pause_btn = gr.Button("Pause", interactive=False, elem_id="pause-btn")
                resume_btn = gr.Button("Resume", interactive=False, elem_id="resume-btn")
                reset_btn = gr.Button("Reset", interactive=False, elem_id="reset-btn")
            with gr.Row(equal_height=True):
                step_k = gr.Number(1, label="k", elem_id="step-k", precision=0, minimum=1, maximum=10_000,
                                   min_width=60, scale=1)
                step_mode = gr.Dropdown(list(STEP_MODES), value="both (D then G)", label="Update", elem_id="step-mode",
                                        min_width=120, scale=2)
                step_btn = gr.Button("Step k", interactive=False, size="md", min_width=80, scale=1, elem_id="step-btn")
            message = gr.Markdown("", elem_id="train-message")
            with gr.Accordion("Checkpoints", open=False):
                with gr.Row(equal_height=True):
                    ckpt = gr.Dropdown([], label="Saved in checkpoints/", allow_custom_value=False, scale=4)
                    refresh_btn = gr.Button("↻", min_width=40, scale=1)
                with gr.Row():
                    resume_ckpt_btn = gr.Button("Resume training", size="sm")
                    load_ckpt_btn = gr.Button("Load for samples", size="sm")
                download_btn = gr.Button("Download the run's checkpoint", size="sm", elem_id="download-btn")
                ckpt_file = gr.File(label="Checkpoint file", interactive=False, visible=False)

        with gr.Column(scale=2, min_width=480):
            status = gr.Markdown(status_line(studio.trainer.status()), elem_id="train-status")
            notice = gr.Markdown("", elem_id="run-notice")
            with gr.Row(equal_height=False):
                with gr.Column(scale=5, min_width=260):
                    grid = gr.Image(label="Fixed-noise samples", interactive=False, format="png", height=560,
                                    buttons=["download", "fullscreen"], elem_id="live-grid")
                with gr.Column(scale=4, min_width=260):
                    loss_plot = gr.LinePlot(None, x="iteration", y="value", color="series",
                                            color_map=LOSS_COLORS, label="Losses", y_title="loss",
                                            elem_id="loss-plot")
                    d_plot = gr.LinePlot(None, x="iteration", y="value", color="series",
                                         color_map=D_COLORS, label="D(x) and D(G(z))", y_title="probability",
                                         y_lim=[0, 1], elem_id="d-plot")
            smooth = gr.Slider(0, 0.99, value=0.6, step=0.01, label="Curve smoothing",
                               info="moving average; 0 = raw (long runs are also averaged into ≤500 points)")
            hint = gr.Markdown("")
            with gr.Accordion("How to read the plots", open=True), gr.Row():
                gr.Markdown(EXPLAIN_D)
                gr.Markdown(EXPLAIN_FAILURES)
            with gr.Accordion("Quality metrics", open=False):
                metrics_note = gr.Markdown(NO_METRICS)
                metrics_plot = gr.LinePlot(None, x="iteration", y="value", color="series",
                                           label="Sample quality over training", visible=False)
                metrics_table = gr.Dataframe(label="Latest records", interactive=False, visible=False)
            with gr.Accordion("Timeline", open=True):
                timeline = gr.Gallery(label="Past fixed-noise grids", columns=6, format="png",
                                      object_fit="contain", allow_preview=True, elem_id="timeline")
                with gr.Row(equal_height=False):
                    gif_btn = gr.Button("Export the evolution as GIF", size="md", scale=1)
                    gif_file = gr.File(label="GIF", interactive=False, visible=False, scale=2)
            with gr.Accordion("Fresh samples", open=True):
                with gr.Row(equal_height=True):
                    sample_seed = gr.Number(0, label="Seed", precision=0, min_width=80, scale=1)
                    sample_btn = gr.Button("New samples", scale=1, elem_id="sample-btn")
                sample_note = gr.Markdown("")
                samples = gr.Image(label="Samples", interactive=False, format="png", height=300, elem_id="samples")

    seen = gr.State({})
    timer = gr.Timer(POLL_S)
    buttons = {"start": start_btn, "pause": pause_btn, "resume": resume_btn, "step": step_btn,
               "stop": stop_btn, "reset": reset_btn}
    view_outputs = [status, notice, loss_plot, d_plot, hint, grid, timeline, metrics_plot, metrics_table,
                    metrics_note]
    view_names = ["status", "notice", "loss_plot", "d_plot", "hint", "grid", "timeline", "metrics",
                  "metrics_table", "metrics_note"]

    def refresh(seen_value: dict, smooth_value: float):
        new_seen, out = live_view(studio, seen_value, float(smooth_value or 0))
        flags = out.get("buttons")
        button_updates = [gr.Button(interactive=flags[k]) if flags else gr.skip() for k in buttons]
        return [new_seen, *[out[n] for n in view_names], *button_updates]

    refresh_outputs = [seen, *view_outputs, *buttons.values()]
    # Polls only read the trainer, so they never wait behind each other or behind a control click.
    timer.tick(refresh, [seen, smooth], refresh_outputs, show_progress="hidden", concurrency_limit=None)
    smooth.change(refresh, [seen, smooth], refresh_outputs, show_progress="hidden", concurrency_limit=None)

    # gr.Request is injected by its annotation, so the control callbacks are named functions.
    def on_start(data: dict, request: gr.Request) -> str:  # inputs given as a set arrive as one dict
        values = {name: data[component] for name, component in form.items()}
        return start(studio, values, data[zip_file], request)

    def on_pause(request: gr.Request) -> str:
        return pause(studio, request)

    def on_resume(request: gr.Request) -> str:
        return resume(studio, request)

    def on_step(k: Any, mode: str, request: gr.Request) -> str:
        return step(studio, k, mode, request)

    def on_stop(request: gr.Request) -> str:
        return stop(studio, request)

    def on_reset(request: gr.Request) -> str:
        return reset(studio, request)

    def on_resume_checkpoint(name: str, steps: Any, device: str, request: gr.Request) -> str:
        return resume_checkpoint(studio, name, steps, device, request)

    def on_download(request: gr.Request) -> tuple[str | None, str]:
        return download_checkpoint(studio, request)

    def show_file(path: str | None) -> gr.File:
        return gr.File(visible=bool(path))

    def list_choices() -> gr.Dropdown:
        return gr.Dropdown(choices=checkpoint_choices(studio))

    # One queue slot for every control: clicks run one after another, never interleaved.
    control = {"concurrency_limit": 1, "concurrency_id": "train-control"}
    after = {"fn": refresh, "inputs": [seen, smooth], "outputs": refresh_outputs, "show_progress": "hidden"}
    start_btn.click(on_start, {*form.values(), zip_file}, message, **control).then(**after)
    pause_btn.click(on_pause, None, message, **control).then(**after)
    resume_btn.click(on_resume, None, message, **control).then(**after)
    step_btn.click(on_step, [step_k, step_mode], message, **control).then(**after)
    stop_btn.click(on_stop, None, message, **control).then(**after)
    reset_btn.click(on_reset, None, message, **control).then(**after)
    resume_ckpt_btn.click(on_resume_checkpoint, [ckpt, form["steps"], form["device"]], message,
                          **control).then(**after)

    zip_file.upload(lambda: gr.Dropdown(value="folder"), None, form["dataset"])
    refresh_btn.click(list_choices, None, ckpt)
    ckpt.focus(list_choices, None, ckpt)
    load_ckpt_btn.click(lambda name: load_for_samples(studio, name), ckpt, message)
    download_btn.click(on_download, None, [ckpt_file, message]).then(show_file, ckpt_file, ckpt_file)
    gif_btn.click(lambda: export_gif(studio), None, [gif_file, message]).then(show_file, gif_file, gif_file)
    sample_btn.click(lambda seed: new_samples(studio, seed), sample_seed, [samples, sample_note])
