"""What the app knows and decides, without any UI: the one shared training run, the checkpoints a
browser may pick, uploads and how long they stay, the models visitors explore, resume arithmetic
and the verdicts shown beside numbers. ui/ only lays these out; tests call them without Gradio.

Everything the app writes lives under one root folder (``--checkpoints``):

    root/<run>/step_XXXXXXXX.safetensors, best.safetensors   run checkpoints (the only ones listed)
    root/.cache/     metric caches (digit classifier, Inception statistics)
    root/.uploads/   uploaded zips kept so a run can be resumed (the last few)

Each browser session holds the model it explores (a `LoadedModel`, kept in its gr.State); loaded
models come from one small LRU cache, so thirty visitors on the same checkpoint share one copy. What every
page shares (D's-view hook and frames, picture files, curves, slider directions, exports) is an attribute of
the Studio too: ui/ keeps no state of its own (tests/test_structure.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from . import checkpoint, dview, hub, inside, latent, lessons, runs
from . import reports as rp
from .branch import WHAT_IF, BranchPlan, plan_branch
from .checkpoint import CheckpointError, is_hidden
from .config import PRESETS, ConfigError, TrainConfig, recipe_of
from .data import DatasetError, ImageData, check_fits, load_dataset, to_float
from .images import upscale
from .metrics import METRIC_KEY, make_metric_fn, use_cache_dir
from .models import Generator
from .trainer import ACTIVE, IDLE, PAUSED, RUNNING, STARTING, Trainer, TrainerBusy

MAX_RUNS = 4  # runs trained at once, at most (the side-by-side view shows up to four)
BRANCH_NICE = 10  # the lanes beside the first give way (SCHED_IDLE on Linux: worker.give_way_to_others)

MAX_STEPS = 1_000_000  # a form value above this is a typo, not a plan (1M steps is days on a GPU)
MAX_KEPT_UPLOADS = 5
DOUBLE_CLICK_S = 3.0
SPEED_WINDOW_S = 20.0  # images/s and ETA are averaged over this much training time
MAX_MODELS = 6  # loaded models kept in memory for every visitor (LRU)
CALIBRATION_IMAGES = 8  # held-out real images inverted to calibrate the inversion verdict
LIVE_SHARE_S = 30.0  # the live run's snapshots share a ModelMemo value (its sliders' directions) this long
# ... and the inversion verdict's calibration (32 inversions: seconds of CPU) this long: it sets the verdict's scale,
# which moves slowly as G trains, and recomputing it every 30 s took ~10 % of a core from a class (docs/ROBUSTNESS.md)
CALIBRATION_SHARE_S = 120.0
SHARED_S = 1.0  # pages polling within this long of one another share one computation (the Train tab's curves)
MAX_CHECKPOINT_FRAMES = 4  # D's-view frames of saved runs kept for every visitor
EXPORT_KEEP_S = 3600.0  # Gradio copies a handed-out file into its own cache at once; ours may go after this
CHILD_NICE = 10  # the Explore tab's warm-ups give way to training and requests
NUM_DIRECTIONS = 6  # Explore's latent sliders: a model's GANSpace directions
PRESENT_SHARE = 0.02  # a digit counts as present in the Explore tab's samples with at least this share of them

# The Train tab's form: the settings a person sets (-> TrainConfig; everything else keeps its preset or config
# default; the form adds the preset itself) and those it shows as text: choices and the run's name. A number
# shown as text ("28") is read back as the number the config wants.
FORM_FIELDS = ("dataset", "image_size", "channels", "num_classes", "batch_size", "steps", "lr_g", "lr_d", "loss",
               "nz", "seed", "device", "ngf", "ndf", "ema_decay", "r1_gamma", "d_steps", "spectral_norm", "diffaug",
               "precision", "metric_every", "run_name")
TEXT_FIELDS = ("dataset", "image_size", "channels", "loss", "device", "precision", "diffaug", "run_name")
MAY_BE_EMPTY = ("run_name", "diffaug")
_TEXT_SETTINGS = frozenset(f.name for f in dataclasses.fields(TrainConfig) if f.type == "str")


def preset_of(cfg: TrainConfig) -> str:
    """The preset a run's recipe matches ("custom" when it matches none), for forms that show a run: the same
    rule as the form's Recipe and the runs table (dcgan.config.recipe_of)."""
    return recipe_of(cfg.to_dict())


USER_ERRORS = (TrainerBusy, ConfigError, DatasetError, CheckpointError, PermissionError, ValueError)


@dataclass(frozen=True)
class LoadedModel:
    """A generator someone explores; shared read-only between every session that picked it."""

    label: str  # shown to the user: run/step file, Hub repo@revision, or the live run's iteration
    generator: Generator  # CPU, eval mode: never train it or change its mode for good
    config: TrainConfig
    source: str  # "live" | "checkpoint" | "hub"
    key: tuple = ()  # cache key: where it came from and which version


def give_way() -> None:
    """A background thread of the app (Explore's warm-ups, a live value refreshed): one torch thread, as a serving
    thread (ui.queues), and a lower OS priority: the cores belong to training and requests."""
    from .train import lower_thread_priority

    torch.set_num_threads(1)
    lower_thread_priority(CHILD_NICE)


class ModelMemo:
    """Something computed from a model (GANSpace directions, the inversion calibration), once per model and
    arguments and shared by every visitor on it; a pinned model keeps its value. The live run's snapshots (a
    new one every few seconds) share the run's latest value: thirty visitors pinning snapshots seconds apart cost
    one computation, not thirty. Once that value is live_s old, the next snapshot asked for still gets it at once
    while a fresh one is computed behind (a thread at low priority): the class's requests never queue behind a
    second of GANSpace for the live run again (docs/ROBUSTNESS.md), nor behind its very first: the studio asks for
    that one `ahead`, when the run draws its first pictures."""

    def __init__(self, size: int, live_s: float = LIVE_SHARE_S) -> None:
        self.size, self.live_s = size, live_s
        self._lock = threading.Lock()
        self._values: OrderedDict[tuple, Any] = OrderedDict()
        self._live: dict[tuple, tuple[float, Any]] = {}
        self._gates: dict[tuple, threading.Lock] = {}  # a computation under way, per key
        self._refreshing: dict[tuple, threading.Thread] = {}  # a live value being computed again, per run

    def get(self, model: LoadedModel, args: tuple, compute: Callable[[], Any]) -> Any:
        key = (model.key or ("object", id(model.generator), model.generator), *args)  # G kept: its id stays its own
        live = (model.key[:2], *args) if model.source == "live" and model.key else None
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            recent = self._live.get(live) if live else None
            if recent is not None:  # the run's latest value, refreshed behind when it is old
                if time.monotonic() - recent[0] >= self.live_s:
                    self._behind(live, compute)
                self._keep(key, recent[1])
                return recent[1]
            gate = self._gates.setdefault(live or key, threading.Lock())
        with gate:  # asked for at once by many visitors: one computes, the others wait and take its value
            with self._lock:
                if key in self._values:
                    return self._values[key]
                recent = self._live.get(live) if live else None
            value = compute() if recent is None else recent[1]
            with self._lock:
                if live and recent is None:
                    self._live[live] = (time.monotonic(), value)
                self._keep(key, value)
                self._gates.pop(live or key, None)
        return value

    def ahead(self, live: tuple, compute: Callable[[], Any]) -> None:
        """The live run's value (live: (("live", run folder), *args)) computed behind now if it has none yet nor is
        being computed: before any visitor asks. A visitor asking meanwhile computes it too (rare: it only wastes)."""
        with self._lock:
            if live not in self._live:
                self._behind(live, compute)

    def _behind(self, live: tuple, compute: Callable[[], Any]) -> None:
        """(Under the lock.) The live run's value computed in a thread of its own, unless one is already."""
        if live not in self._refreshing:
            thread = threading.Thread(target=self._refresh, args=(live, compute), daemon=False,
                                      name="dcgan-memo-behind")
            self._refreshing[live] = thread
            thread.start()

    def _keep(self, key: tuple, value: Any) -> None:
        self._values[key] = value
        while len(self._values) > self.size:
            self._values.popitem(last=False)

    def _refresh(self, live: tuple, compute: Callable[[], Any]) -> None:
        give_way()
        try:
            value = compute()
            with self._lock:
                self._live[live] = (time.monotonic(), value)
        except Exception as exc:  # the old value stays; the next snapshot asked for tries again
            logging.getLogger("dcgan.app").info("refreshing %s for the live run: %s", live, exc)
        finally:
            with self._lock:
                self._refreshing.pop(live, None)

    def settle(self, timeout: float | None = None) -> None:
        """Wait for the values being refreshed behind (tests)."""
        with self._lock:
            threads = list(self._refreshing.values())
        for thread in threads:
            thread.join(timeout)


class SharedCache:
    """An LRU of values computed once per key for every visitor. Computations of the same key at the same time
    wait for one another, so a crowd pressing one button costs one computation."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._values: OrderedDict[tuple, Any] = OrderedDict()
        self._loading: dict[tuple, threading.Lock] = {}
        self.loads = 0  # how many times a computation actually ran (tests and the load test read it)

    def get(self, key: tuple, load: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if key in self._values:
                    return self._values[key]
            value = load()
            with self._lock:
                self.loads += 1
                self._values[key] = value
                self._values.move_to_end(key)
                while len(self._values) > self.size:
                    self._values.popitem(last=False)
                self._loading.pop(key, None)
            return value

    def peek(self, key: tuple) -> Any:
        """The value of key if it is kept (None otherwise); computes nothing."""
        with self._lock:
            return self._values.get(key)

    def latest(self) -> Any:
        with self._lock:
            return next(reversed(self._values.values()), None)


class ModelCache(SharedCache):
    """Loaded models by key (checkpoint path + mtime, Hub repo + commit): a crowd pressing Load costs one read."""

    def __init__(self, max_models: int = MAX_MODELS) -> None:
        super().__init__(max_models)

    def get(self, key: tuple, load: Callable[[], LoadedModel]) -> LoadedModel:
        return super().get(key, lambda: dataclasses.replace(load(), key=key))

    def put(self, model: LoadedModel) -> LoadedModel:
        return self.get(model.key, lambda: model)

    def labels(self) -> list[str]:
        with self._lock:
            return [m.label for m in self._values.values()]


class Shared:
    """A value per key computed at most once every max_age_s for every page: thirty Train-tab pages polling every
    second rebuild the curves from every record once, not thirty times. `keep(value)` False drops a value at once
    (curves computed from more records than the run now has: it was reset)."""

    def __init__(self, max_age_s: float = SHARED_S) -> None:
        self.max_age_s = max_age_s
        self._lock = threading.Lock()
        self._values: dict[tuple, tuple[float, Any]] = {}

    def get(self, key: tuple, compute: Callable[[], Any], keep: Callable[[Any], bool] = lambda value: True) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and now - hit[0] < self.max_age_s and keep(hit[1]):
                return hit[1]
        value = compute()
        with self._lock:
            for old in [k for k, (t, _) in self._values.items() if now - t >= self.max_age_s]:
                del self._values[old]
            self._values[key] = (now, value)
        return value


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


def memorisation_ratio(nearest: float, yardstick: float) -> float:
    """A sample's distance to its nearest training image over the distance held-out real images typically have
    to theirs (the median of latent.heldout_nn_distances): NaN without a yardstick."""
    return nearest / yardstick if math.isfinite(yardstick) and yardstick > 0 else float("nan")


SUSPICIOUS_PERCENTILE = 5.0  # closer to the training set than this percentile of held-out real images: suspicious


@dataclass(frozen=True)
class MemorisationVerdict:
    word: str  # "copy" | "suspiciously close" | "not a copy" | "unknown"
    closer_share: float  # share of held-out real images nearer to a training image than the sample (NaN: none)
    text: str  # the verdict with the numbers and the rule behind it


def memorisation_verdict(nearest: float, heldout: torch.Tensor | list[float]) -> MemorisationVerdict:
    """Whether a sample's distance to its nearest training image is unusually small, judged against the same
    distance for held-out real images (latent.heldout_nn_distances), which no training image copies. A ratio to
    their median called 0.74 'no closer than new real images' (issue 29, item 8); the distribution decides:
    below its SUSPICIOUS_PERCENTILE-th percentile is suspiciously close, below its smallest value a likely copy,
    anything else is within what new real images show."""
    held = torch.as_tensor(heldout, dtype=torch.float64).flatten()
    held = held[torch.isfinite(held)]
    if held.numel() == 0:
        return MemorisationVerdict("unknown", float("nan"), "no held-out images to compare with")
    low = float(torch.quantile(held, SUSPICIOUS_PERCENTILE / 100))
    median, smallest = float(held.median()), float(held.min())
    share = float((held < nearest).double().mean())
    rule = (f"Rule: closer than the {SUSPICIOUS_PERCENTILE:.0f}th percentile of held-out real images "
            f"({low:.3f}) is suspiciously close; closer than all {held.numel()} of them ({smallest:.3f}), "
            f"a likely copy.")
    seen = (f"{share:.0%} of {held.numel()} held-out real images lie closer to a training image than this "
            f"sample (their median is {median:.3f})")
    if nearest < smallest:
        word, what = "copy", "likely a copy of a training image: closer than any held-out real image comes"
    elif nearest < low:
        word, what = "suspiciously close", "suspiciously close to a training image: look at the pictures"
    elif nearest < median:
        word, what = "not a copy", "closer than typical, but new real images come this close too: not a copy"
    else:
        word, what = "not a copy", "as far from the training set as new real images are: not a copy"
    return MemorisationVerdict(word, share, f"**{what}**. {seen}. {rule}")


def digit_classifier_applies(cfg: TrainConfig) -> bool:
    """The project's digit classifier judges models of the bundled digits only (it knows nothing else)."""
    return cfg.dataset == "digits"


def digit_classifier_ready(image_size: int) -> bool:
    """Whether the digit classifier for this size is cached (loading it then takes well under a second)."""
    from .digit_classifier import cache_path

    return cache_path(image_size).exists()


@dataclass(frozen=True)
class DigitCoverage:
    generated: list[int]  # samples per predicted digit
    real: list[int]  # real images per digit, as the same classifier sees them
    present: int  # digits with at least PRESENT_SHARE of the samples


def digit_coverage(model: LoadedModel, real: torch.Tensor, n: int) -> DigitCoverage | None:
    """Which digits the project's classifier sees in n samples and in n real images; None for a model not
    trained on the bundled digits (the classifier knows nothing else)."""
    if not digit_classifier_applies(model.config):
        return None
    generated, seen = latent.digit_coverage(model.generator, real, n=n)
    return DigitCoverage(generated, seen, sum(1 for c in generated if c >= PRESENT_SHARE * n))


def health_hint(rows: list[dict], window: int = 50) -> str:
    """A plain-language warning when the recent numbers look like a known failure."""
    recent = [(r["d_real"], r["d_fake"]) for r in rows[-window:]  # a G-only step has no D(x): NaN
              if all(isinstance(r.get(k), (int, float)) and math.isfinite(r[k]) for k in ("d_real", "d_fake"))]
    if len(recent) < window // 2:
        return ""
    d_real, d_fake = (float(v) for v in np.mean(recent, axis=0))
    if d_real > 0.97 and d_fake < 0.03:
        return ("Hint: D wins every time (D(x) ≈ 1, D(G(z)) ≈ 0): G learns little from it. If this lasts, "
                "lower `lr D` or try the hinge / wgan-gp loss.")
    if abs(d_real - 0.5) < 0.02 and abs(d_fake - 0.5) < 0.02:
        return ("Hint: D answers 0.5 for everything: either G is excellent or D stopped learning. Look at the "
                "samples: if they are poor, D has died; raise `lr D` or restart.")
    return ""


# ---- the studio -------------------------------------------------------------------------------


def default_max_runs() -> int:
    """Runs the app trains at once unless told (DCGAN_MAX_RUNS, --max-runs): one per core, 2 to MAX_RUNS."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return int(os.environ.get("DCGAN_MAX_RUNS") or min(MAX_RUNS, max(2, cores)))


class Studio:
    """One per app process: the runs it trains (lanes; `trainer`, the first, is the run the Train tab shows in
    full) plus everything under the root folder."""

    # the digit classifier's training process, per (cache folder, image size): shared by every studio of a process
    _classifier_jobs: ClassVar[dict[tuple[str, int], tuple[Any, float]]] = {}
    _classifier_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, root: str | Path = "checkpoints", trainer: Trainer | None = None, threads: int = 0,
                 max_runs: int | None = None) -> None:
        """trainer: the first lane's (the default trains in a process of its own, see dcgan/trainer.py). threads:
        torch threads for all runs together (0: torch's choice), shared out between max_runs lanes: several runs on
        the cores of one never ask for more threads than there are (2 OpenMP threads of a run on a 2-core machine
        beside anything else collapse: ui/queues.train_threads)."""
        self.root = Path(root)
        self.cache_dir = self.root / ".cache"
        self.uploads_dir = self.root / ".uploads"
        self.max_runs = max(1, min(MAX_RUNS, int(max_runs or default_max_runs())))
        self.threads = max(1, threads // self.max_runs) if threads and self.max_runs > 1 else threads
        self.trainer = trainer or self._new_trainer()
        self._lanes = [self.trainer]
        self._lanes_lock = threading.Lock()
        self.models = ModelCache()
        self._start_lock = threading.Lock()
        self._last_start: tuple[str, float] | None = None  # (settings, when) of the last Start
        self.default_model: LoadedModel | None = None  # DCGAN_STUDIO_MODEL, what a new browser starts on
        self.calibrations = ModelMemo(32, live_s=CALIBRATION_SHARE_S)
        self.directions = ModelMemo(64)
        self.shared = Shared()  # the Train tab's curves, computed once for the pages polling together
        self.dview_frames = SharedCache(MAX_CHECKPOINT_FRAMES)  # D's view of saved runs
        self.first_views = SharedCache(16)  # Explore's first pictures of a model, per model and settings (issue 27)
        self._dview: dview.DViewHook | None = None
        self._pictures: PictureFiles | None = None
        self._exports: Path | None = None
        self._lock = threading.Lock()  # creates the hook and the picture files once
        self._exports_lock = threading.Lock()  # one export folder, swept one caller at a time
        self._preparing: OrderedDict[tuple, threading.Thread] = OrderedDict()  # Explore's warm-ups, by model
        self._classifier_started: list[Any] = []  # the classifier processes this studio started (close ends them)
        self._closing = False  # close() was called: nothing new starts in the background
        self._prepare_lock = threading.Lock()  # one warm-up computes at a time
        self._inside: inside.Inside | None = None  # Inside G (issue 25): created by inside_g()
        self.lesson_answers = lessons.ClassAnswers()  # the class's predictions, per lesson (in memory only)
        self.trainer.subscribe(self._directions_ahead)

    @property
    def checkpoints_dir(self) -> Path:  # the name the UI and older code use
        return self.root

    def run_states(self) -> dict[str, str]:
        """{run folder: its trainer's state} for the runs this app trains or last trained: the runs table takes
        their status from here (a pause or a failure is known for sure only to the trainer)."""
        return {str(st.run_dir): str(st.state) for st in (t.status() for t in self.lanes)
                if st.run_dir and st.state != IDLE}

    def list_runs(self) -> list[runs.RunInfo]:
        """The runs under the root, with the app's word on its own: their state, and the settings of a run that
        has saved nothing yet (a new branch stands under its parent at once)."""
        listed = runs.list_runs(self.root, self.run_states())
        live = {str(Path(st.run_dir).resolve()): t.config for t in self.lanes
                if t.config is not None and (st := t.status()).run_dir}
        for info in listed:
            cfg = live.get(str(info.path.resolve()))
            if not info.config and cfg is not None:
                info.config = cfg.to_dict()
        return listed

    # ---- several runs at once ----
    def _new_trainer(self, nice: int = 0) -> Trainer:
        return Trainer(metric_fn=make_metric_fn(), metric_key=METRIC_KEY, threads=self.threads, nice=nice)

    @property
    def lanes(self) -> list[Trainer]:
        """Every trainer so far; lane 0 is `trainer`, the run the Train tab shows in full."""
        with self._lanes_lock:
            return list(self._lanes)

    def trainer_of(self, index: int) -> Trainer:
        lanes = self.lanes
        if not 0 <= index < len(lanes):
            raise ValueError(f"there is no run {index + 1}; the page is out of date: wait for the next refresh")
        return lanes[index]

    def runs_now(self) -> list[tuple[int, Trainer]]:
        """(lane, trainer) of every lane holding a run (training, paused or ended), in lane order."""
        return [(i, t) for i, t in enumerate(self.lanes) if t.status().state != IDLE]

    def _free_lane(self, take: bool = True) -> Trainer | None:
        """A lane with no active run for a branch: another lane than the first (the Start button's, whose ended run
        may still be watched), a new one while fewer than max_runs exist (take=False: None, nothing created), the
        first last. TrainerBusy when max_runs runs are active."""
        with self._lanes_lock:
            for trainer in self._lanes[1:]:
                if trainer.status().state not in ACTIVE:
                    return trainer
            if len(self._lanes) < self.max_runs:
                if take:  # a branch's lane gives way to the run shown in full and to the page's answers
                    self._lanes.append(self._new_trainer(nice=BRANCH_NICE))
                return self._lanes[-1] if take else None
            if self._lanes[0].status().state not in ACTIVE:
                return self._lanes[0]
        raise TrainerBusy(f"{self.max_runs} runs already train at once, this app's limit (--max-runs or "
                          f"DCGAN_MAX_RUNS); stop or let one end first")

    def branch(self, source: int | str, changes: dict[str, Any], step: int | None = None) -> tuple[int, BranchPlan]:
        """Start a branch in a lane of its own and return (its lane, its plan). source: a lane whose run trains or
        is paused (it saves now and the branch starts at this very step), or a saved run (a run folder or
        checkpoint name under the root) at one of its saved steps (default its newest). changes: {setting: value}
        (dcgan.branch). The branch trains to its parent's steps."""
        self._free_lane(take=False)  # no room: say so before the parent saves
        if isinstance(source, int):
            trainer = self.trainer_of(source)
            if trainer.status().state not in (RUNNING, PAUSED):
                raise TrainerBusy(f"that run is {trainer.status().state}, not training: branch one of its saved steps "
                                  f"from the Runs tab instead")
            path = trainer.save_checkpoint()
        else:
            path = self.resolve_checkpoint(source)
        plan = plan_branch(path.parent if step is not None else path, step=step, changes=changes)
        data = load_dataset(plan.cfg)
        check_fits(plan.cfg, data)
        with self._start_lock:
            lane = self._free_lane()
            lane.start(plan.cfg, resume_from=plan.checkpoint, data=data, branch=True)
        return self.lanes.index(lane), plan

    def what_if(self, source: int, question: str) -> tuple[int, BranchPlan]:
        """One of the common questions (dcgan.branch.WHAT_IF), asked of a live run at its current step."""
        if question not in WHAT_IF:
            raise ValueError(f"unknown question {question!r}; one of {', '.join(WHAT_IF)}")
        cfg = self.trainer_of(source).config
        if cfg is None:
            raise TrainerBusy("there is no run to ask about: start one first")
        return self.branch(source, WHAT_IF[question](cfg))

    def stop_all(self, wait: bool = True, timeout: float = 60.0) -> None:
        """Stop every run (each saves a checkpoint first): SIGTERM on a Space."""
        for trainer in self.lanes:
            trainer.stop(wait=False)
        if wait:
            for trainer in self.lanes:
                trainer.stop(wait=True, timeout=timeout)

    def close(self, timeout: float = 120.0) -> None:
        """The app is ending (SIGTERM): every run stops and saves, nothing new is prepared, and the digit
        classifier's process, if one trains, ends with the app (left alone it outlived it by minutes)."""
        self._closing = True
        self.stop_all(wait=True, timeout=timeout)
        with self._lock:
            jobs = list(self._classifier_started)
        for process in jobs:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()

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
        if not name or root not in path.parents or is_hidden(path.relative_to(root)):
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

    def sampling_model(self, pinned: LoadedModel | None) -> LoadedModel | None:
        """What a browser samples from: its pinned checkpoint or Hub model; else the live run's newest snapshot
        (a pinned live snapshot only while there is no run)."""
        if pinned is not None and pinned.source != "live":
            return pinned
        return self.live_model() or pinned

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
            if value is None or (isinstance(value, str) and name not in MAY_BE_EMPTY and not value.strip()):
                raise ConfigError(name, "is empty; fill it in")
            if isinstance(value, str) and name not in _TEXT_SETTINGS:
                try:
                    value = float(value) if "." in value or "e" in value.lower() else int(value)
                except ValueError:
                    raise ConfigError(name, f"must be a number, got {value!r}") from None
            settings[name] = value
        for name in MAY_BE_EMPTY:
            settings[name] = str(settings.get(name) or "").strip()
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
        """Start a run; the same settings again within DOUBLE_CLICK_S of its start (a double click on Start, the
        second click waiting here while the first loads the data) start nothing and raise nothing: the run they
        asked for is running."""
        with self._start_lock:
            last = self._last_start
            if last is not None and last[0] == cfg.to_json() and time.monotonic() - last[1] < DOUBLE_CLICK_S \
                    and self.trainer.status().state in ACTIVE:
                return
            self._last_start = None
            self.trainer.start(cfg, data=self._load_data(cfg))
            self._last_start = (cfg.to_json(), time.monotonic())

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

    def continue_run(self, steps: Any, device: str = "auto") -> tuple[int, int]:
        """Resume the stopped or finished live run from its newest checkpoint (Steps above its iteration extends
        a finished one): Resume works after Stop or the end as it does after Pause."""
        path = self.trainer.last_checkpoint()
        if path is None or not path.is_file():
            raise CheckpointError("this run saved no checkpoint to continue from")
        return self.resume(path.resolve().relative_to(self.root.resolve()).as_posix(), steps, device)

    def resume_pulled(self, state: str | Path | None, repo_id: str) -> int:
        """Continue a training state pulled from the Hub (copied into a run folder under the root). Its data is
        loaded first, as for any resume: data that cannot be loaded leaves the previous run on every page.
        Returns the iteration it goes on from."""
        local = hub.save_training_state(state, repo_id, self.root)
        data = self._load_data(checkpoint.config_of(checkpoint.read(local)[1]))
        self.trainer.start(resume_from=local, data=data)
        return self.trainer.status().iteration

    def require_owner(self, request: Any = None) -> None:
        """Off a Space everyone who opens the page may steer the run (ui.state.Studio checks a Space's owner)."""

    def checkpoint_to_download(self, request: Any = None) -> Path | None:
        """The run's newest checkpoint. A paused run saves one first (the download is the run as it stands), and
        so does an ended run that has none; saving is the owner's to do."""
        state, path = self.trainer.status().state, self.trainer.last_checkpoint()
        if state == PAUSED or (path is None and state not in (RUNNING, STARTING, IDLE)):
            self.require_owner(request)
            path = self.trainer.save_checkpoint()
        return path

    def speed(self) -> tuple[float, float | None]:
        """(images/s averaged over the last SPEED_WINDOW_S s, ETA in seconds) of the live run."""
        cfg, st = self.trainer.config, self.trainer.status()
        if cfg is None:
            return 0.0, None
        rows = self.trainer.metrics.since(max(len(self.trainer.metrics) - 2000, 0))
        speed = smoothed_speed(rows, cfg.batch_size)
        return speed, eta_seconds(st.iteration, st.total, cfg.batch_size, speed)

    # ---- what every page shares ----
    def dview_hook(self) -> dview.DViewHook:
        """D's view of the live run: one hook on the trainer, added on first use."""
        with self._lock:
            if self._dview is None:
                self._dview = dview.DViewHook()
                self.trainer.subscribe(self._dview, snapshots=True)
            return self._dview

    def dview_of_checkpoint(self, name: str) -> tuple[tuple, dview.Frame]:
        """(key, frame): D's view of a saved run (its G, D and Adam state), drawn once per file version and shared;
        `dview_frames.peek(key)` finds it again."""
        path = self.resolve_checkpoint(name)
        key = (str(path), path.stat().st_mtime_ns)
        label = path.relative_to(self.root.resolve()).as_posix()
        return key, self.dview_frames.get(key, lambda: dview.frame_of_checkpoint(path, label=label))

    def inside_g(self) -> inside.Inside:
        """What every Inside G panel shares (issue 25): rankings, the live digit histogram and the live run's
        snapshot history, subscribed to the trainer on first use (as D's view is); the panel calls it when built."""
        with self._lock:
            if self._inside is None:
                self._inside = inside.Inside()
                self.trainer.subscribe(self._inside.history)
            return self._inside

    @property
    def pictures(self) -> PictureFiles:
        """The run's pictures as PNG files, created on first use (a studio writes nothing until a page asks)."""
        with self._lock:
            if self._pictures is None:
                self._pictures = PictureFiles()
            return self._pictures

    def export_path(self, name: str) -> Path:
        """A new path named `name` for a file the page hands out (GIF exports): one folder per studio with a
        subfolder per file, and subfolders older than EXPORT_KEEP_S removed on the way, so a class exporting all
        day leaves one folder of recent files instead of a temporary folder per click."""
        with self._exports_lock:
            if self._exports is None or not self._exports.is_dir():
                self._exports = Path(tempfile.mkdtemp(prefix="dcgan-exports-"))
            cutoff = time.time() - EXPORT_KEEP_S
            for old in self._exports.iterdir():
                try:
                    if old.stat().st_mtime < cutoff:
                        shutil.rmtree(old)
                except OSError:  # gone already
                    pass
            folder = self._exports / uuid.uuid4().hex[:12]
            folder.mkdir()
        return folder / name

    def principal_directions(self, model: LoadedModel, k: int = NUM_DIRECTIONS) -> latent.Directions:
        """GANSpace directions of a model, shared by every visitor on it: a pinned model keeps the same sliders,
        and thirty visitors pinning live snapshots seconds apart cost one computation."""
        return self.directions.get(model, (k,), lambda: latent.principal_directions(model.generator, k=k))

    def _directions_ahead(self, report: rp.Report) -> None:
        """The live run's pictures (the trainer's subscriber): its first ones start its GANSpace directions behind,
        so that a class's first *Use the live run* finds them instead of queueing behind a second of them."""
        if not isinstance(report, (rp.Started, rp.Pictures)) or self._closing:
            return

        def compute() -> latent.Directions:
            model = self.live_model()
            if model is None:
                raise RuntimeError("the run has no pictures any more")
            return latent.principal_directions(model.generator, k=NUM_DIRECTIONS)

        self.directions.ahead((("live", self.trainer.status().run_dir), NUM_DIRECTIONS), compute)

    # ---- preparing the Explore tab ----
    def _training(self) -> bool:
        return any(t.status().state in ACTIVE for _, t in self.runs_now())

    def prepare_explore(self, model: LoadedModel) -> threading.Thread:
        """Prepare ahead what the Explore tab's heavy tools need on first use (issue 29, item 4): in a thread (one
        torch thread, low OS priority; seconds) the model's training data and the inversion verdict's calibration
        at the tool's default settings; for a digits model, the digit classifier in a process of its own
        (classifier_job). None of it while a run trains (see _prepare; asked again once no run trains). The tab
        calls this when it shows a model; once per model. Returns
        the thread (started; never a daemon, even when a server's daemon thread starts it: a daemon thread still
        inside torch when the interpreter exits aborts the process)."""
        key = model.key or ("object", id(model.generator))
        with self._lock:
            if key in self._preparing:
                return self._preparing[key]
            thread = threading.Thread(target=self._prepare, args=(model,), name="dcgan-explore-prepare", daemon=False)
            if not self._training():
                self._preparing[key] = thread
            while len(self._preparing) > 4 * MAX_MODELS:  # forget old ones (preparing again is cheap: all cached)
                self._preparing.popitem(last=False)
        thread.start()
        return thread

    def _prepare(self, model: LoadedModel) -> None:
        give_way()
        with self._prepare_lock:
            # Nothing while a run trains: the digit classifier is a minute or two of a core taken from training and
            # from every visitor's answers (Measure diversity starts it on first use and says so); the data set's
            # first load (2 s of text parsing) and the inversion's calibration (32 inversions, for every newer live
            # snapshot a visitor pins) took seconds of CPU and of the GIL from a class's first answers, for tools
            # few visitors open (docs/ROBUSTNESS.md). Those tools load and calibrate on first use instead.
            if self._training() or self._closing:
                return
            try:
                if digit_classifier_applies(model.config) and not digit_classifier_ready(model.config.image_size):
                    self.classifier_job(model.config.image_size)
                latent.dataset_for(model.config)
                self.inversion_reference(model, latent.INVERT_RESTARTS, latent.INVERT_STEPS)
            except Exception as exc:  # offline data, say: each tool says so when it is used
                logging.getLogger("dcgan.app").info("preparing Explore for %s: %s", model.label, exc)

    def classifier_job(self, image_size: int) -> tuple[Any, float]:
        """(process, when it started) training and caching the digit classifier for this size, started when none
        runs. It trains once per installation: 1-2 minutes on the 2-core machine (57-150 s measured), the whole
        first-use cost of *Measure diversity*. In a process of its own, niced, with one torch thread: a thread here
        would hold the GIL against the requests being served, and one still inside torch when the app exits
        aborts it. One per cache folder and size in this process, whichever studio asked (tests make many)."""
        from . import digit_classifier

        key = (str(digit_classifier.CACHE_DIR), image_size)
        with Studio._classifier_lock:
            job = Studio._classifier_jobs.get(key)
            if job is None or job[0].poll() is not None:  # none yet, or it ended (and the cache is still missing)
                job = (self._classifier_process(image_size), time.monotonic())
                Studio._classifier_jobs[key] = job
                with self._lock:
                    self._classifier_started.append(job[0])
            return job

    def _classifier_process(self, image_size: int) -> Any:
        import sys

        from . import digit_classifier

        code = ("import sys, torch; torch.set_num_threads(1); from dcgan.digit_classifier import "
                "get_digit_classifier; get_digit_classifier(int(sys.argv[1]))")
        package_root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, DCGAN_CACHE=str(digit_classifier.CACHE_DIR),
                   PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        proc = subprocess.Popen([sys.executable, "-c", code, str(image_size)], env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with contextlib.suppress(OSError):  # not allowed here: it keeps the app's priority
            os.setpriority(os.PRIO_PROCESS, proc.pid, CHILD_NICE)
        return proc

    def classifier_status(self, model: LoadedModel) -> str | None:
        """None when the digit classifier is ready for `model` (or does not apply); otherwise what is being
        prepared and for how long, for the page (starting the job if none runs)."""
        if not digit_classifier_applies(model.config) or digit_classifier_ready(model.config.image_size):
            return None
        from .digit_classifier import cache_path

        _, started = self.classifier_job(model.config.image_size)
        return (f"the digit classifier is being trained once for this installation, in the background "
                f"({time.monotonic() - started:.0f} s so far; it takes 1-2 minutes on a 2-core CPU; then it is "
                f"cached in {cache_path(model.config.image_size).parent}/)")

    # ---- verdict calibration ----
    def inversion_reference(self, model: LoadedModel, restarts: int, steps: int,
                            n: int = CALIBRATION_IMAGES) -> list[float]:
        """MSEs of n held-out real images inverted by the same G with the same settings (computed once
        per model and settings). A conditional G is given each image's true class instead of trying all of them
        (10x cheaper; its error is at most a little higher). The n images go through G in one batch
        (latent.invert_many): n separate inversions made the first inversion of a model 4-6x slower than the
        next (issue 29, item 4)."""

        def calibrate() -> list[float]:
            data = latent.dataset_for(model.config)
            held = data.val if data.val.shape[0] else data.train
            picks = torch.linspace(0, held.shape[0] - 1, min(n, held.shape[0])).long()
            labels = data.val_labels if data.val.shape[0] else data.train_labels
            conditional = bool(model.config.num_classes) and labels is not None
            found = latent.invert_many(model.generator, to_float(held[picks]), restarts=restarts, steps=steps,
                                       seed=1, labels=[int(labels[i]) for i in picks] if conditional else None)
            return [inv.mse for inv in found]

        return self.calibrations.get(model, (int(restarts), int(steps), n), calibrate)


__all__ = ["Studio", "LoadedModel", "ModelCache", "ModelMemo", "SharedCache", "Shared", "PictureFiles",
           "smoothed_speed", "inversion_verdict", "diversity_verdict", "memorisation_ratio", "memorisation_verdict",
           "MemorisationVerdict", "digit_coverage", "health_hint", "use_cache_dir", "USER_ERRORS", "FORM_FIELDS",
           "TEXT_FIELDS", "MAX_STEPS"]
