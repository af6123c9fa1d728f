"""What the app knows and decides, without any UI: the one shared training run, the checkpoints a
browser may pick, uploads and how long they stay, the models visitors explore, resume arithmetic
and the verdicts shown beside numbers. ui/ only lays these out; tests call them without Gradio.

Everything the app writes lives under one root folder (``--checkpoints``):

    root/<run>/step_XXXXXXXX.safetensors, best.safetensors   run checkpoints (the only ones listed)
    root/.cache/     metric caches (digit classifier, Inception statistics)
    root/.uploads/   uploaded zips kept so a run can be resumed (the last few)

Each browser session holds the model it explores (a `LoadedModel`, kept in its gr.State); loaded
models come from one small LRU cache, so thirty visitors on the same checkpoint share one copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, latent
from .checkpoint import CheckpointError
from .config import PRESETS, ConfigError, TrainConfig
from .data import DatasetError, ImageData, check_fits, load_dataset, to_float
from .metrics import METRIC_KEY, make_metric_fn, use_cache_dir
from .models import Generator
from .trainer import ACTIVE, Trainer, TrainerBusy

MAX_STEPS = 1_000_000  # a form value above this is a typo, not a plan (1M steps is days on a GPU)
MAX_KEPT_UPLOADS = 5
SPEED_WINDOW_S = 20.0  # images/s and ETA are averaged over this much training time
MAX_MODELS = 6  # loaded models kept in memory for every visitor (LRU)
CALIBRATION_IMAGES = 8  # held-out real images inverted to calibrate the inversion verdict
LIVE_SHARE_S = 30.0  # the live run's snapshots share a ModelMemo value (directions, calibration) this long

# form fields (what a person sets) -> TrainConfig; everything else keeps its config default
FORM_FIELDS = ("dataset", "image_size", "channels", "num_classes", "batch_size", "steps", "lr_g", "lr_d", "loss",
               "nz", "seed", "device", "ngf", "ndf", "precision", "metric_every", "run_name")
TEXT_FIELDS = ("dataset", "loss", "device", "precision", "run_name")


def preset_of(cfg: TrainConfig) -> str:
    """The preset a run's recipe matches ("custom" when it matches none), for forms that show a run."""
    return next((name for name, recipe in PRESETS.items()
                 if all(getattr(cfg, k) == v for k, v in recipe.items())), "custom")


USER_ERRORS = (TrainerBusy, ConfigError, DatasetError, CheckpointError, PermissionError, ValueError)


@dataclass(frozen=True)
class LoadedModel:
    """A generator someone explores; shared read-only between every session that picked it."""

    label: str  # shown to the user: run/step file, Hub repo@revision, or the live run's iteration
    generator: Generator  # CPU, eval mode: never train it or change its mode for good
    config: TrainConfig
    source: str  # "live" | "checkpoint" | "hub"
    key: tuple = ()  # cache key: where it came from and which version


class ModelMemo:
    """Something computed from a model (GANSpace directions, the inversion calibration), once per model and
    arguments and shared by every visitor on it; a pinned model keeps its value. The live run's snapshots (a
    new one every few seconds) share one value for live_s seconds: thirty visitors pinning snapshots seconds
    apart cost one computation, not thirty."""

    def __init__(self, size: int, live_s: float = LIVE_SHARE_S) -> None:
        self.size, self.live_s = size, live_s
        self._lock = threading.Lock()
        self._values: OrderedDict[tuple, Any] = OrderedDict()
        self._live: dict[tuple, tuple[float, Any]] = {}

    def get(self, model: LoadedModel, args: tuple, compute: Callable[[], Any]) -> Any:
        key = (model.key or ("object", id(model.generator), model.generator), *args)  # G kept: its id stays its own
        live = (model.key[:2], *args) if model.source == "live" and model.key else None
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            recent = self._live.get(live) if live else None
        fresh = recent is None or time.monotonic() - recent[0] >= self.live_s
        value = compute() if fresh else recent[1]
        with self._lock:
            if live and fresh:
                self._live[live] = (time.monotonic(), value)
            self._values[key] = value
            while len(self._values) > self.size:
                self._values.popitem(last=False)
        return value


class ModelCache:
    """An LRU of loaded models by key (checkpoint path + mtime, Hub repo + commit). Loads of the same key
    at the same time wait for one another, so a crowd pressing Load costs one read."""

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        self.max_models = max_models
        self._lock = threading.Lock()
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}
        self.loads = 0  # how many times a loader actually ran (tests and the load test read it)

    def get(self, key: tuple, load: Callable[[], LoadedModel]) -> LoadedModel:
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._models:
                    return self._models[key]
            model = dataclasses.replace(load(), key=key)
            with self._lock:
                self.loads += 1
                self._models[key] = model
                self._models.move_to_end(key)
                while len(self._models) > self.max_models:
                    self._models.popitem(last=False)
                self._loading.pop(key, None)
            return model

    def put(self, model: LoadedModel) -> LoadedModel:
        return self.get(model.key, lambda: model)

    def latest(self) -> LoadedModel | None:
        with self._lock:
            return next(reversed(self._models.values()), None)

    def labels(self) -> list[str]:
        with self._lock:
            return [m.label for m in self._models.values()]


# ---- training speed ---------------------------------------------------------------------------


def smoothed_speed(rows: list[dict], batch_size: int, window_s: float = SPEED_WINDOW_S) -> float:
    """Images/s over the last window_s seconds of *training* time: each logged row covers some
    iterations at its own speed, so summing images and the time they took gives a steady figure
    (pauses are not counted, and one slow or fast sync cannot swing it)."""
    valid = [r for r in rows if isinstance(r.get("images_per_s"), (int, float)) and r.get("iteration") is not None
             and math.isfinite(r["images_per_s"]) and r["images_per_s"] > 0]
    images = seconds = 0.0
    for k in range(len(valid) - 1, -1, -1):  # newest first; a row covers the iterations since the one before
        span = valid[k]["iteration"] - valid[k - 1]["iteration"] if k else 1
        n = max(span, 1) * batch_size
        images += n
        seconds += n / valid[k]["images_per_s"]
        if seconds >= window_s:
            break
    return images / seconds if seconds > 0 else 0.0


def eta_seconds(iteration: int, total: int, batch_size: int, speed: float) -> float | None:
    return (total - iteration) * batch_size / speed if speed > 0 and total > iteration else None


# ---- verdicts ---------------------------------------------------------------------------------


@dataclass
class InversionVerdict:
    word: str  # "close" | "rough" | "outside"
    text: str


def inversion_verdict(mse: float, reference: list[float], target_variance: float | None = None) -> InversionVerdict:
    """How good a reconstruction is, next to real held-out images inverted by the same G: a model that draws
    blurry digits reconstructs even real digits with a sizeable error, so fixed MSE thresholds call good
    inversions poor on one model and poor ones fine on another. target_variance (the error of drawing the
    picture's mean grey everywhere) marks reconstructions that explain almost nothing of the picture."""
    ref = sorted(x for x in reference if math.isfinite(x))
    if not ref:
        return InversionVerdict("unknown", f"MSE {mse:.4f} (no held-out images to compare with)")
    median, worst = ref[len(ref) // 2], ref[-1]
    yardstick = (f"real held-out images inverted by this G come back with MSE {ref[0]:.3f}–{worst:.3f} "
                 f"(median {median:.3f}, {len(ref)} images)")
    explains_little = target_variance is not None and mse >= 0.8 * target_variance
    if mse <= worst * 1.3 and not explains_little:
        word, what = "close", "as close as real images come back: G can draw this"
    elif mse <= 2 * worst and not explains_little:
        word, what = "rough", "rougher than real images: G draws the nearest thing it can"
    else:
        word, what = "outside", "far from anything G draws: this is outside what it learned"
    return InversionVerdict(word, f"{what}; {yardstick}")


def diversity_verdict(ratio: float) -> str:
    if ratio > 0.8:
        return "healthy: samples vary about as much as real images"
    if ratio > 0.5:
        return "somewhat less varied than the data"
    return "low diversity: signs of mode collapse"


def memorisation_verdict(ratio: float) -> str:
    if not math.isfinite(ratio):
        return "no held-out images to compare with"
    if ratio < 0.3:
        return "looks like a copy of a training image"
    if ratio < 0.7:
        return "closer than usual to a training image: look at the pictures"
    return "no closer to the training set than new real images are: not a copy"


# ---- the studio -------------------------------------------------------------------------------


class Studio:
    """One per app process: the shared trainer plus everything under the root folder."""

    def __init__(self, root: str | Path = "checkpoints", trainer: Trainer | None = None, threads: int = 0) -> None:
        """trainer: the default trains in a process of its own (see dcgan/trainer.py) with `threads` torch threads."""
        self.root = Path(root)
        self.cache_dir = self.root / ".cache"
        self.uploads_dir = self.root / ".uploads"
        self.trainer = trainer or Trainer(metric_fn=make_metric_fn(), metric_key=METRIC_KEY,
                                          threads=threads)
        self.models = ModelCache()
        self.default_model: LoadedModel | None = None  # DCGAN_STUDIO_MODEL, what a new browser starts on
        self.calibrations = ModelMemo(32)

    @property
    def checkpoints_dir(self) -> Path:  # the name the UI and older code use
        return self.root

    # ---- checkpoints ----
    def list_checkpoints(self) -> list[str]:
        """Real run checkpoints under the root, newest first, as names relative to it (never the caches)."""
        root = self.root.resolve()
        return [p.resolve().relative_to(root).as_posix() for p in checkpoint.list_run_checkpoints(self.root)
                if p.resolve().is_relative_to(root)]

    def resolve_checkpoint(self, name: str) -> Path:
        """A checkpoint (file, or run folder -> its newest) inside the root only: anything pointing outside,
        a symlink out, a hidden folder or another file type is refused."""
        root = self.root.resolve()
        name = str(name or "").strip()
        refused = ValueError(f"{name!r} is not a checkpoint inside {self.root}/")
        path = (root / name).resolve()
        if not name or root not in path.parents or any(p.startswith(".") for p in path.relative_to(root).parts):
            raise refused
        if path.is_dir():
            try:
                path = checkpoint.resolve_checkpoint(path).resolve()
            except CheckpointError:
                raise refused from None
        if path.suffix != ".safetensors" or root not in path.parents:
            raise refused
        if not path.is_file():
            raise CheckpointError(f"{name} is no longer there (deleted?): refresh the list")
        return path

    def load_checkpoint(self, name: str) -> LoadedModel:
        """The generator of a checkpoint, from the shared cache (keyed by path and modification time)."""
        path = self.resolve_checkpoint(name)
        label = path.relative_to(self.root.resolve()).as_posix()

        def load() -> LoadedModel:
            G, cfg, _ = checkpoint.load_generator(path)
            return LoadedModel(label, G, cfg, "checkpoint")

        return self.models.get(("file", str(path), path.stat().st_mtime_ns), load)

    def add_pulled(self, pulled: Any) -> LoadedModel:
        """A model pulled from the Hub (dcgan.hub.Pulled), shared by repo and commit."""
        model = LoadedModel(pulled.label, pulled.generator, pulled.config, "hub",
                            ("hub", pulled.repo_id, pulled.commit))
        return self.models.put(model)

    def live_model(self) -> LoadedModel | None:
        """The live run's generator as of its latest pictures (a CPU copy, shared by every viewer)."""
        iteration, G = self.trainer.generator()
        cfg = self.trainer.config
        if G is None or cfg is None:
            return None
        return LoadedModel(f"live run, iteration {iteration:,}", G, cfg, "live",
                           ("live", self.trainer.status().run_dir, iteration))

    def loaded_model(self) -> LoadedModel | None:
        """The start-up model, else the model loaded most recently by anyone (for logs and tests: a
        browser explores only what it picked itself)."""
        return self.default_model or self.models.latest()

    # ---- uploads ----
    def keep_upload(self, zip_path: str | Path) -> str:
        """Copy an uploaded zip under root/.uploads/ with a content-hash name, so a resumed run still
        finds it after Gradio's temporary file is gone; the least recently used beyond a few go."""
        src = Path(zip_path)
        if src.suffix.lower() != ".zip":
            raise DatasetError(f"{src.name} is not a .zip file; upload a zip of PNG/JPEG images "
                               f"(optionally one sub-folder per class)")
        digest = hashlib.sha256()
        with src.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        dest = self.uploads_dir / f"{src.stem[:40]}-{digest.hexdigest()[:12]}.zip"
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        os.utime(dest)  # newest use first when pruning
        self.prune_uploads(keep=dest)
        return str(dest)

    def prune_uploads(self, keep: Path, max_files: int = MAX_KEPT_UPLOADS) -> list[Path]:
        kept = sorted(self.uploads_dir.glob("*.zip"), key=lambda p: p.stat().st_mtime, reverse=True)
        doomed = [p for p in kept if p != keep][max_files - 1:]
        for path in doomed:
            path.unlink(missing_ok=True)
        return doomed

    # ---- the form and the run ----
    def build_config(self, values: dict[str, Any], zip_path: str | None = None) -> TrainConfig:
        """A validated TrainConfig from form values; ConfigError names the field to fix."""
        settings: dict[str, Any] = {}
        for name in FORM_FIELDS:
            if name not in values:
                continue
            value = values[name]
            if value is None or (isinstance(value, str) and name != "run_name" and not value.strip()):
                raise ConfigError(name, "is empty; fill it in")
            if name not in TEXT_FIELDS and isinstance(value, str):
                try:
                    value = float(value) if "." in value or "e" in value.lower() else int(value)
                except ValueError:
                    raise ConfigError(name, f"must be a number, got {value!r}") from None
            settings[name] = value
        settings["run_name"] = str(settings.get("run_name") or "").strip()
        if isinstance(settings.get("steps"), (int, float)) and settings["steps"] > MAX_STEPS:
            raise ConfigError("steps", f"{settings['steps']:,.0f} is more than the {MAX_STEPS:,} this app trains "
                                       f"in one run; choose fewer (resume later to go further)")
        if settings.get("dataset") == "folder":
            if not zip_path:
                raise ConfigError("data_path", "the 'folder' data set needs images: upload a .zip of images first")
            settings["data_path"] = self.keep_upload(zip_path)
        settings["out_dir"] = str(self.root)
        # the recipe's settings the form does not show (EMA, betas, ...) come from the chosen preset
        preset = values.get("preset")
        return TrainConfig.from_preset(preset if preset in PRESETS else "default", **settings)

    def _load_data(self, cfg: TrainConfig) -> ImageData:
        """The run's data, loaded before the trainer is touched: a zip with no images fails here and the
        previous run's plots, pictures and status stay on every page."""
        if self.trainer.status().state in ACTIVE:
            raise TrainerBusy(f"a training run is already {self.trainer.status().state}; stop it first")
        data = load_dataset(cfg)
        check_fits(cfg, data)
        return data

    def start(self, cfg: TrainConfig) -> None:
        self.trainer.start(cfg, data=self._load_data(cfg))

    def resume_plan(self, name: str | None, steps: Any) -> tuple[Path, int, int]:
        """(checkpoint, its iteration, iterations to train to) for 'Resume training': Steps above the
        checkpoint's iteration extends the run; an empty Steps keeps the run's own target."""
        if not name:
            raise CheckpointError("choose a checkpoint from the list first (press Refresh to update it)")
        path = self.resolve_checkpoint(name)
        _, meta = checkpoint.read(path)
        done = int(meta.get("iteration", 0))
        try:
            total = int(steps) if steps not in (None, "") else int(meta["config"]["steps"])
        except (TypeError, ValueError):
            raise ConfigError("steps", f"must be a whole number, got {steps!r}") from None
        if total <= done:
            raise ConfigError("steps", f"the checkpoint is already at iteration {done:,}; set Steps above it "
                                       f"to train further")
        if total > MAX_STEPS:
            raise ConfigError("steps", f"{total:,} is more than the {MAX_STEPS:,} this app trains in one run")
        return path, done, total

    def resume(self, name: str | None, steps: Any, device: str = "auto") -> tuple[int, int]:
        path, done, total = self.resume_plan(name, steps)
        cfg = checkpoint.config_of(checkpoint.read(path)[1]).replace(steps=total, device=device or "auto")
        data = self._load_data(cfg)
        self.trainer.start(TrainConfig(steps=total, device=device or "auto"), resume_from=path, data=data)
        return done, total

    def speed(self) -> tuple[float, float | None]:
        """(images/s averaged over the last SPEED_WINDOW_S s, ETA in seconds) of the live run."""
        cfg, st = self.trainer.config, self.trainer.status()
        if cfg is None:
            return 0.0, None
        rows = self.trainer.metrics.since(max(len(self.trainer.metrics) - 2000, 0))
        speed = smoothed_speed(rows, cfg.batch_size)
        return speed, eta_seconds(st.iteration, st.total, cfg.batch_size, speed)

    # ---- verdict calibration ----
    def inversion_reference(self, model: LoadedModel, restarts: int, steps: int,
                            n: int = CALIBRATION_IMAGES) -> list[float]:
        """MSEs of n held-out real images inverted by the same G with the same settings (computed once
        per model and settings; the first call costs n inversions). A conditional G is given each image's
        true class instead of trying all of them (10x cheaper; its error is at most a little higher)."""

        def calibrate() -> list[float]:
            data = latent.dataset_for(model.config)
            held = data.val if data.val.shape[0] else data.train
            picks = torch.linspace(0, held.shape[0] - 1, min(n, held.shape[0])).long()
            labels = data.val_labels if data.val.shape[0] else data.train_labels
            conditional = bool(model.config.num_classes) and labels is not None
            return [latent.invert(model.generator, to_float(held[i]), restarts=restarts, steps=steps, seed=1,
                                  label=int(labels[i]) if conditional else None).mse for i in picks.tolist()]

        return self.calibrations.get(model, (int(restarts), int(steps), n), calibrate)


__all__ = ["Studio", "LoadedModel", "ModelCache", "ModelMemo", "smoothed_speed", "inversion_verdict",
           "diversity_verdict", "memorisation_verdict", "use_cache_dir", "USER_ERRORS", "FORM_FIELDS", "MAX_STEPS"]
