"""D's view: GAN Lab's picture of the game, on real images.

A DCGAN discriminator ends in a linear map: logit = w·f(x) + b (+ <embed(y), pooled f> for a
class-conditional D), where f(x) is the flat feature vector feeding that map. So a plot whose
horizontal axis *is* the logit shows D's decision boundary exactly, as the vertical line logit = 0
(D(x) = 0.5). The vertical axis is the leading principal direction of the features orthogonal to w:
the biggest spread among the images that D's decision ignores.

Definitions (the tests hold the code to them):
- D is scored as in training: BatchNorm uses the statistics of the batch being scored (the fixed
  real images form one batch, the generated images another, as D(x) and D(G(z)) in a training
  step), and its running statistics are left untouched. So the points' mean D(x) is the D(x) the
  loss chart plots, and a G-only step leaves the real points exactly where they were. A D with
  spectral norm has no BatchNorm and is scored in eval mode (no power iteration).
- Generated points are the *trained* G (not its EMA copy: that is the player D faces) on fixed
  noise, also as training runs it: BatchNorm on the statistics of the fixed-noise batch. (In eval
  mode a D-only step would move them: the D step's forward pass through G updates G's BatchNorm
  running statistics, though not one weight of G.)
- Arrows: the training code's own G update (`GANTraining.train_step('g')`) applied to a CPU clone
  with the run's Adam state and the noise batch the run draws next, then the same fixed noise is
  regenerated and re-scored by the clone's D in this frame's axes. After a real G-only step the
  fakes land on the arrows' tips.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from .config import TrainConfig
from .data import ImageData, load_dataset, to_float
from .images import image_array
from .models import Discriminator, Generator, seeded_latents
from .reports import Pictures, Report, Started
from .train import lower_thread_priority

N_POINTS = 256  # real images and generated images drawn
PROBE_SEED = 1234  # which real images and which noise: fixed, so the points are the same all run
MAX_FRAMES = 120  # kept for the GIF; thinned evenly like the sample timeline
KEEP_IMAGES = 8  # frames that keep their generated images (for clicks); older ones keep only the picture
BUDGET = 0.05  # the worker's share of the time: it rests ≥ (1/BUDGET - 1) x its last frame's cost
AXIS_TIE = 0.8  # components with ≥ this fraction of the top variance may take over the vertical axis
REAL_COLOR, FAKE_COLOR = "#2ca02c", "#ff7f0e"  # the Train tab's D(x) / D(G(z)) colours

NOTE = """**How to read D's view.** Each dot is one image: {n_real} fixed real images (green) and {n_fake} images
G makes from fixed noise (orange). **Across** is D's own score, the logit w·f(x)+b{cls}: right of the dashed line
D says *real* (D(x) > 0.5), left of it *fake*. **Up** is the direction in which D's last-layer features vary most
among directions D's decision ignores (orthogonal to w), kept aligned between refreshes. **Arrows** show where G's
next update moves each fake: the training step itself run on a copy of G (the run's Adam state, its next noise
batch), then the fakes re-scored{mag}. Click a dot to see its image.
*What to watch*: **D winning**: the clouds separate, fakes far left. **Collapse**: the orange dots bunch into one
spot. **Equilibrium**: the clouds overlap around the line. G and D run as in training (BatchNorm on each cloud's own
statistics), so the dots' mean D(x) and D(G(z)) are the ones plotted above."""


# ---- the fixed inputs --------------------------------------------------------------------------


@dataclass
class Probe:
    """The fixed real images and noise every frame is drawn for."""

    real: torch.Tensor  # float [-1, 1] [N, C, H, W]
    real_labels: torch.Tensor | None
    z: torch.Tensor  # [M, nz]
    fake_labels: torch.Tensor | None


def make_probe(data: ImageData, cfg: TrainConfig, n: int = N_POINTS, seed: int = PROBE_SEED) -> Probe:
    """n real training images (a seeded choice) and n seeded noise vectors (labels cycle 0..C-1)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.train.shape[0], generator=g)[:n]
    real = to_float(data.train[idx].cpu())
    labels = None
    if cfg.num_classes:
        if data.train_labels is None:
            raise ValueError("a class-conditional D needs labelled real images")
        labels = data.train_labels[idx].cpu()
    z, fake_labels = seeded_latents(cfg.nz, n, seed=seed, num_classes=cfg.num_classes)
    return Probe(real, labels, z, fake_labels)


# ---- scoring -----------------------------------------------------------------------------------


@contextlib.contextmanager
def batch_statistics(net: nn.Module):
    """A network as training runs it on a batch: BatchNorm on the batch's statistics, running statistics
    untouched (momentum 0, counters restored); everything else (spectral norm) in eval mode. Restores modes."""
    modes = [(m, m.training) for m in net.modules()]
    bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in bns]
    net.eval()
    for m in bns:
        m.train()
        m.momentum = 0.0
    try:
        yield net
    finally:
        for m, (momentum, tracked) in zip(bns, saved, strict=True):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def score(D: Discriminator, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(features [N, F], logits [N]) of one batch, fp32, BatchNorm on the batch (`batch_statistics`)."""
    with batch_statistics(D):
        f, logit = D.features_and_logit(x.float(), labels)
    return f.float().flatten(1), logit.float().flatten()


def vertical_axis(features: torch.Tensor, w: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
    """Unit vector: the leading principal direction of the features with w projected out.

    Between refreshes the axis stays put: among the components whose variance is within AXIS_TIE of
    the top one, the one closest to the previous axis is kept, with its sign aligned to it."""
    u = w.float() / w.float().norm().clamp_min(1e-12)
    p = features.float() - features.float().mean(0)
    p = p - (p @ u)[:, None] * u[None]
    q = min(6, *p.shape)
    with torch.random.fork_rng(devices=[]):  # svd_lowrank draws a random start: keep it seeded and private
        torch.manual_seed(0)
        _, s, v = torch.svd_lowrank(p, q=q, niter=2)
    candidates = [i for i in range(q) if s[i] ** 2 >= AXIS_TIE * s[0] ** 2]
    if prev is not None and prev.shape == u.shape:
        best = max(candidates, key=lambda i: abs(float(v[:, i] @ prev)))
    else:
        best = 0
    axis = v[:, best] - (v[:, best] @ u) * u
    axis = axis / axis.norm().clamp_min(1e-12)
    if prev is not None and prev.shape == axis.shape:
        if float(axis @ prev) < 0:
            axis = -axis
    elif float(axis[axis.abs().argmax()]) < 0:
        axis = -axis
    return axis


def decision_boundary(loss: str) -> float:
    """The logit at which D can't tell: D(x) = 0.5 for bce, hinge and wgan-gp; 0.5 for lsgan's targets 0/1."""
    return 0.5 if loss == "lsgan" else 0.0


# ---- one frame ---------------------------------------------------------------------------------


@dataclass
class Frame:
    iteration: int
    real_xy: np.ndarray  # [N, 2]: (logit, vertical)
    fake_xy: np.ndarray  # [M, 2]
    push: np.ndarray | None  # [M, 2]: where one G update moves each fake, in this frame's axes
    push_note: str
    axis: torch.Tensor  # the vertical direction in D's feature space
    real_images: torch.Tensor  # float [N, C, H, W]
    fake_images: torch.Tensor | None  # float [M, C, H, W]; None once the frame is old (memory)
    boundary: float = 0.0
    source: str = "live run"
    picture: bytes = b""  # the rendered PNG
    pixels: np.ndarray | None = None  # [N + M, 2] picture coordinates of the points (x right, y down)
    d_real: float = 0.0  # mean sigmoid of the real logits
    d_fake: float = 0.0
    conditional: bool = False


@dataclass
class Snapshot:
    """CPU copies of what a frame needs, taken in the training thread (a few MB of memcpy)."""

    iteration: int
    cfg: TrainConfig
    data: ImageData
    g_state: dict
    d_state: dict
    opt_g_state: dict | None
    rng_state: torch.Tensor | None
    lr_g: float


def _cpu_tree(obj):
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_tree(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_cpu_tree(v) for v in obj]
    return copy.copy(obj)


def snapshot(run) -> Snapshot:
    """The state of a GANTraining as of now: G, D, G's Adam state and the run's random generator (CPU copies)."""
    rng = run.rng.get_state().clone() if run.rng.device.type == "cpu" else None
    return Snapshot(run.iteration, run.cfg, run.data, _cpu_tree(run.G.state_dict()), _cpu_tree(run.D.state_dict()),
                    _cpu_tree(run.opt_g.state_dict()), rng, float(run.opt_g.param_groups[0]["lr"]))


class Pusher:
    """A CPU clone of the training run that performs G's next update, to draw the arrows."""

    def __init__(self, cfg: TrainConfig, data: ImageData):
        from .train import GANTraining  # the training code's own step, not a copy of it

        device_cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        clone_cfg = cfg.replace(device="cpu", compile=False, sync_bn=False, ema_decay=0.0,
                                precision=cfg.precision if device_cpu else "fp32")
        with torch.random.fork_rng(devices=[]):  # GANTraining seeds the global generator
            self.run = GANTraining(clone_cfg, data)
        self.same_rng = device_cpu

    def step(self, G: Generator, D: Discriminator, opt_g_state: dict | None = None,
             rng_state: torch.Tensor | None = None, lr_g: float | None = None,
             iteration: int = 0) -> tuple[Generator, Discriminator, str]:
        """(G, D) after one G update from (G, D); the how, in words. G and D are not modified."""
        run = self.run
        run.G.load_state_dict(G.state_dict())
        run.D.load_state_dict(D.state_dict())
        run.G.train()
        run.D.train()
        if opt_g_state is not None:
            run.opt_g.load_state_dict(copy.deepcopy(opt_g_state))
            how = "with the run's Adam state"
        else:
            run.opt_g.state.clear()
            how = "with a fresh Adam state (none saved), so its first step ~ lr·sign(gradient)"
        for group in run.opt_g.param_groups:
            group["lr"] = run.cfg.lr_g if lr_g is None else lr_g
        if rng_state is not None and self.same_rng:
            run.rng.set_state(rng_state)
            how += " and the noise batch the run draws next"
        else:
            run.rng.manual_seed(iteration)
            how += " and a fresh noise batch"
        run.iteration = iteration
        run.train_step("g")
        return run.G, run.D, how


@torch.no_grad()
def generated(G: Generator, probe: Probe) -> torch.Tensor:
    """The probe's generated images as training makes them (BatchNorm on the batch); G unchanged."""
    with batch_statistics(G):
        return G(probe.z, probe.fake_labels).float()


def _scored(G: Generator, D: Discriminator, probe: Probe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    fakes = generated(G, probe)
    f, logit = score(D, fakes, probe.fake_labels)
    return fakes, f, logit


def compute_frame(G: Generator, D: Discriminator, cfg: TrainConfig, probe: Probe, *,
                  pusher: Pusher | None = None, snap: Snapshot | None = None,
                  prev_axis: torch.Tensor | None = None, iteration: int = 0, source: str = "live run") -> Frame:
    """The points (and, with a pusher, G's arrows) for CPU copies of G and D. Leaves G and D unchanged."""
    f_real, x_real = score(D, probe.real, probe.real_labels)
    fakes, f_fake, x_fake = _scored(G, D, probe)
    w, _ = D.head_weight()
    w = w.detach().float().flatten()
    axis = vertical_axis(torch.cat([f_real, f_fake]), w, prev_axis)
    center = f_real.mean(0)
    y_real, y_fake = (f_real - center) @ axis, (f_fake - center) @ axis
    push, note = None, "no arrows"
    if pusher is not None:
        G1, D1, how = (pusher.step(G, D, snap.opt_g_state, snap.rng_state, snap.lr_g, snap.iteration) if snap
                       else pusher.step(G, D, iteration=iteration))
        _, f1, x1 = _scored(G1, D1, probe)
        push = torch.stack([x1 - x_fake, (f1 - center) @ axis - y_fake], 1).numpy()
        note = f"one G update (the training step on a copy, {how})"
    return Frame(iteration, torch.stack([x_real, y_real], 1).numpy(), torch.stack([x_fake, y_fake], 1).numpy(),
                 push, note, axis, probe.real, fakes, decision_boundary(cfg.loss),
                 source, d_real=float(torch.sigmoid(x_real).mean()), d_fake=float(torch.sigmoid(x_fake).mean()),
                 conditional=bool(cfg.num_classes))


def models_of(snap: Snapshot) -> tuple[Generator, Discriminator]:
    return Generator.from_state(snap.cfg, snap.g_state), Discriminator.from_state(snap.cfg, snap.d_state)


def frame_of_run(run, probe: Probe | None = None, prev_axis: torch.Tensor | None = None,
                 pusher: Pusher | None = None) -> Frame:
    """A frame for a GANTraining (a live run or `checkpoint.load_training`), with arrows."""
    snap = snapshot(run)
    probe = probe or make_probe(run.data, run.cfg)
    pusher = pusher or Pusher(run.cfg, run.data)
    G, D = models_of(snap)
    return compute_frame(G, D, run.cfg, probe, pusher=pusher, snap=snap, prev_axis=prev_axis,
                         iteration=snap.iteration)


def frame_of_checkpoint(path: str | Path, data: ImageData | None = None, label: str = "") -> Frame:
    """D's view of a saved run (its G, D and Adam state), on the CPU, rendered."""
    from .checkpoint import resolve_checkpoint
    from .train import load_training

    path = resolve_checkpoint(path)
    run = load_training(path, data, device="cpu", compile=False)
    frame = frame_of_run(run)
    frame.source = label or path.name
    return render(frame)


# ---- drawing -----------------------------------------------------------------------------------


def arrow_scale(frame: Frame, xlim: tuple[float, float]) -> float:
    """Magnification that makes the median arrow ~4% of the plot's width (1 if they are already visible)."""
    if frame.push is None:
        return 1.0
    lengths = np.hypot(frame.push[:, 0], frame.push[:, 1])
    med = float(np.median(lengths))
    width = xlim[1] - xlim[0]
    if med <= 0 or not np.isfinite(med):
        return 1.0
    return float(max(1.0, 0.04 * width / med))


def render(frame: Frame, size: tuple[int, int] = (760, 470)) -> Frame:
    """Draw the frame into frame.picture (PNG) and frame.pixels (where each point landed)."""
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    ax = fig.add_axes((0.08, 0.2, 0.9, 0.72))  # room below for the legend: over the axes it hid dots
    pts = np.concatenate([frame.real_xy, frame.fake_xy])
    lo, hi = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    lo[0], hi[0] = min(lo[0], frame.boundary), max(hi[0], frame.boundary)
    pad = (hi - lo) * 0.08 + 1e-3
    xlim, ylim = (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])
    ax.axvspan(xlim[0], frame.boundary, color="#ff7f0e", alpha=0.08, lw=0)
    ax.axvspan(frame.boundary, xlim[1], color="#2ca02c", alpha=0.08, lw=0)
    ax.axvline(frame.boundary, color="#555555", ls="--", lw=1.2)
    ax.text(0.01, 0.98, "judged fake", transform=ax.transAxes, va="top", ha="left", color="#b35900", fontsize=10)
    ax.text(0.99, 0.98, "judged real", transform=ax.transAxes, va="top", ha="right", color="#1e7a1e", fontsize=10)
    ax.scatter(*frame.real_xy.T, s=14, c=REAL_COLOR, alpha=0.75, lw=0, label=f"real (mean D(x) {frame.d_real:.2f})")
    ax.scatter(*frame.fake_xy.T, s=14, c=FAKE_COLOR, alpha=0.85, lw=0,
               label=f"generated (mean D(G(z)) {frame.d_fake:.2f})")
    if frame.push is not None:
        k = arrow_scale(frame, xlim)
        ax.quiver(*frame.fake_xy.T, *(frame.push * k).T, angles="xy", scale_units="xy", scale=1, color="#a04000",
                  width=0.0022, headwidth=4, alpha=0.7, label=f"G's next update (x{k:.0f})" if k > 1 else
                  "G's next update")
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_xlabel("D's logit  w·f(x) + b   (dashed: D(x) = 0.5)", fontsize=9)
    ax.set_ylabel("top feature direction orthogonal to w", fontsize=9)
    ax.set_title(f"D's view · {frame.source} · iteration {frame.iteration:,}", fontsize=10)
    ax.tick_params(labelsize=8)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8, frameon=False)
    fig.canvas.draw()
    disp = ax.transData.transform(pts)
    height = fig.bbox.height
    frame.pixels = np.stack([disp[:, 0], height - disp[:, 1]], 1)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    frame.picture = buf.getvalue()
    return frame


def picture_array(frame: Frame) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(frame.picture)).convert("RGB"))


def marked(frame: Frame, kind: str, i: int) -> np.ndarray:
    """The frame's picture with a ring around one point (the dot a person clicked), so the plot says which."""
    picture = Image.open(io.BytesIO(frame.picture)).convert("RGB")
    if frame.pixels is not None:
        x, y = frame.pixels[i if kind == "real" else frame.real_xy.shape[0] + i]
        ImageDraw.Draw(picture).ellipse((x - 10, y - 10, x + 10, y + 10), outline=(0, 0, 0), width=3)
    return np.asarray(picture)


def nearest_point(frame: Frame, x: float, y: float, radius: float = 15.0) -> tuple[str, int] | None:
    """('real' | 'generated', index) of the point drawn nearest to picture pixel (x, y), within radius."""
    if frame.pixels is None:
        return None
    d = np.hypot(frame.pixels[:, 0] - x, frame.pixels[:, 1] - y)
    i = int(d.argmin())
    if d[i] > radius:
        return None
    n = frame.real_xy.shape[0]
    return ("real", i) if i < n else ("generated", i - n)


def describe_point(frame: Frame, kind: str, i: int) -> tuple[np.ndarray | None, str]:
    """(uint8 image, caption) of one point."""
    images, xy = (frame.real_images, frame.real_xy) if kind == "real" else (frame.fake_images, frame.fake_xy)
    logit = float(xy[i, 0])
    text = f"{kind} #{i}: logit {logit:+.3f}, D(x) = {1 / (1 + np.exp(-logit)):.3f}"
    if images is None:
        return None, text + " (an old frame: its images are no longer kept)"
    if kind == "generated" and frame.push is not None:
        text += f"; G's next update moves its logit by {frame.push[i, 0]:+.2e}"
    return image_array(images[i]), text


def save_frames_gif(frames: list[Frame], path: str | Path) -> Path:
    from .images import save_gif

    return save_gif([picture_array(f) for f in frames], path, duration_ms=300)


# ---- the live hook -----------------------------------------------------------------------------


class DViewHook:
    """A subscriber of the trainer's reports (`trainer.subscribe(hook, snapshots=True)`): each picture of the run
    comes with a snapshot (CPU copies of G, D and G's Adam state, taken in the training process), which this hook
    hands to its own low-priority thread to compute and render a frame. It never waits: a newer snapshot replaces
    one not yet taken, and the worker rests after each frame (cost x (1/budget - 1)) so it takes at most `budget`
    of the time; the latest picture is always drawn in the end (after a single step too)."""

    def __init__(self, budget: float = BUDGET):
        self.budget = budget
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: Snapshot | None = None
        self._busy = False
        self._next_at = 0.0
        self._frames: list[Frame] = []
        self._latest: Frame | None = None
        self._probe_key: str | None = None
        self._data: ImageData | None = None  # the run's data, loaded here when a snapshot comes without it
        self._probe: Probe | None = None
        self._pusher: Pusher | None = None
        self._stop = False
        self._generation = 0  # bumped by begin: a frame of an earlier run is dropped
        self.errors: list[str] = []
        self.work_s = 0.0  # total time spent computing frames, for the bench
        self._worker = threading.Thread(target=self._work, name="dcgan-dview", daemon=True)
        self._worker.start()

    def __call__(self, report: Report) -> None:
        if isinstance(report, Started):
            self.begin()
            report = report.pictures
        if isinstance(report, Pictures) and report.snapshot is not None:
            self.take(report.snapshot)

    def begin(self) -> None:
        """A new run: the frames of the last one go."""
        with self._lock:
            self._frames, self._latest, self._pending = [], None, None
            self._generation += 1

    def take(self, snap: Snapshot) -> None:
        with self._lock:
            self._pending = snap
            self._wake.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker and wait for its frame in progress (a thread left inside torch at interpreter exit
        aborts the process)."""
        with self._lock:
            self._stop = True
            self._wake.notify()
        if self._worker is not threading.current_thread():
            self._worker.join(timeout)

    # reader side
    def latest(self) -> Frame | None:
        with self._lock:
            return self._latest

    def frames(self) -> list[Frame]:
        with self._lock:
            return list(self._frames)

    def drawing(self) -> bool:
        """True while the worker computes a frame."""
        with self._lock:
            return self._busy

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """True once every picture handed over has been drawn (for tests and the bench)."""
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._busy and self._pending is None:
                    return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.01)

    # worker side
    def _work(self) -> None:
        lower_thread_priority(10)  # this thread yields to training
        while True:
            with self._lock:
                while not self._stop and (self._pending is None or time.monotonic() < self._next_at):
                    self._wake.wait(None if self._pending is None else max(0.0, self._next_at - time.monotonic()))
                if self._stop:
                    return
                snap, self._pending = self._pending, None
                prev, generation = self._latest, self._generation
                self._busy = True
            t0 = time.monotonic()
            try:
                frame = self._compute(snap, prev)
            except Exception as exc:  # a failed picture must never touch training
                frame = None
                self.errors.append(f"{type(exc).__name__}: {exc}")
            cost = time.monotonic() - t0
            with self._lock:
                self.work_s += cost
                self._busy = False
                self._next_at = time.monotonic() + cost * (1 / self.budget - 1)
                if frame is not None and generation == self._generation:
                    self._latest = frame
                    if not self._frames or self._frames[-1].iteration != frame.iteration:
                        self._frames.append(frame)
                        if len(self._frames) > KEEP_IMAGES:
                            self._frames[-KEEP_IMAGES - 1].fake_images = None
                        if len(self._frames) > MAX_FRAMES:  # keep the first, thin the rest evenly
                            self._frames = self._frames[:1] + self._frames[2::2]

    def _compute(self, snap: Snapshot, prev: Frame | None) -> Frame:
        key = snap.cfg.to_json()
        if key != self._probe_key:
            self._data = snap.data if snap.data is not None else load_dataset(snap.cfg)
            self._probe = make_probe(self._data, snap.cfg)
            self._pusher = Pusher(snap.cfg, self._data)
            self._probe_key, prev = key, None
        G, D = models_of(snap)
        frame = compute_frame(G, D, snap.cfg, self._probe, pusher=self._pusher, snap=snap,
                              prev_axis=None if prev is None else prev.axis, iteration=snap.iteration)
        return render(frame)


# ---- bench: the cost of the live panel ---------------------------------------------------------


def bench(steps: int = 500, rounds: int = 6, seed: int = 0, threads: int = 0, batch: int = 64,
          sample_every_s: float = 3.0) -> dict:
    """Training throughput with and without the hook, side by side in one run: blocks of `steps`
    iterations alternate off / on (order flipped every round, so a drift in a shared machine's load
    cancels), and each round gives a ratio. The hook is fed as the Trainer feeds it (a snapshot every
    sample_every_s); an "on" block also ends only once the worker is idle, so every frame it started is
    charged to it (a picture still waiting is dropped), and "off" blocks leave the worker's rest clock
    running, so frames come at least as often as in a long run (a conservative measure)."""
    from .train import GANTraining

    if threads:
        torch.set_num_threads(threads)
    cfg = TrainConfig(dataset="digits", image_size=28, channels=1, batch_size=batch, seed=seed, steps=10**6,
                      device="cpu", sample_every_s=sample_every_s)
    data = load_dataset(cfg)
    run = GANTraining(cfg, data)
    hook = DViewHook()
    for _ in range(3):
        run.train_step()
    hook.begin()
    hook.take(snapshot(run))  # the one-off set-up (probe, training clone) and a first frame, untimed
    hook.wait_idle(600)

    def block(on: bool) -> dict:
        frames0, work0 = len(hook.frames()), hook.work_s
        last, n = time.monotonic(), 0
        t0 = time.perf_counter()
        while n < steps or (on and hook.drawing()):
            run.train_step()
            n += 1
            if on and time.monotonic() - last >= cfg.sample_every_s:
                hook.take(snapshot(run))
                last = time.monotonic()
        wall = time.perf_counter() - t0
        with hook._lock:
            hook._pending = None  # a picture not yet drawn is dropped, not drawn during the next block
        out = {"hook": on, "steps": n, "wall_s": round(wall, 3), "images_per_s": round(n * batch / wall, 2)}
        if on:
            out.update(frames=len(hook.frames()) - frames0, worker_s=round(hook.work_s - work0, 3))
        return out

    load = [os.getloadavg()]
    blocks, ratios = [], []
    try:
        for r in range(rounds):
            pair = {}
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                pair[on] = block(on)
                blocks.append(pair[on])
                print(json.dumps(pair[on]), file=sys.stderr, flush=True)
            ratios.append(pair[True]["images_per_s"] / pair[False]["images_per_s"])
            load.append(os.getloadavg())
    finally:
        hook.close()
    on_blocks = [b for b in blocks if b["hook"]]
    on_wall = sum(b["wall_s"] for b in on_blocks)
    ratio = float(np.median(ratios))
    return {"what": "training throughput with / without the D's-view hook: alternating blocks of one run",
            "image_size": 28, "batch": batch, "steps_per_block": steps, "rounds": rounds, "seed": seed,
            "threads": torch.get_num_threads(), "sample_every_s": sample_every_s, "budget": BUDGET,
            "cpu": _cpu_name(), "cores": os.cpu_count(), "loadavg": [list(x) for x in load], "blocks": blocks,
            "ratios": [round(x, 4) for x in ratios], "throughput_ratio_median": round(ratio, 4),
            "cost_fraction_median": round(1 - ratio, 4),
            "frames_in_on_blocks": sum(b["frames"] for b in on_blocks),
            "worker_share_of_on_time": round(sum(b["worker_s"] for b in on_blocks) / on_wall, 4),
            "errors": hook.errors[:3]}


def frame_cost(repeats: int = 5, steps: int = 10, seed: int = 0, batch: int = 64) -> dict:
    """CPU seconds (all threads, getrusage) of one frame against one training step, measured back to back
    in one process: CPU time, unlike wall time, hardly depends on what else a shared machine runs."""
    import resource

    from .train import GANTraining

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    cfg = TrainConfig(dataset="digits", image_size=28, channels=1, batch_size=batch, seed=seed, steps=10**6,
                      device="cpu")
    data = load_dataset(cfg)
    run = GANTraining(cfg, data)
    probe, pusher = make_probe(data, cfg), Pusher(cfg, data)
    for _ in range(3):
        run.train_step()
    render(frame_of_run(run, probe, pusher=pusher))  # warm-up (matplotlib, allocations)
    step_s, frame_s = [], []
    prev = None
    for _ in range(repeats):
        c0 = cpu()
        for _ in range(steps):
            run.train_step()
        step_s.append((cpu() - c0) / steps)
        c0 = cpu()
        prev = render(frame_of_run(run, probe, prev_axis=None if prev is None else prev.axis, pusher=pusher))
        frame_s.append(cpu() - c0)
    step, frame = float(np.median(step_s)), float(np.median(frame_s))
    return {"what": "CPU seconds (all threads) of one D's-view frame (compute + render) vs one training step",
            "image_size": 28, "batch": batch, "points": N_POINTS, "threads": torch.get_num_threads(),
            "precision": str(run.dtype), "cpu": _cpu_name(), "loadavg": list(os.getloadavg()),
            "step_cpu_s": [round(x, 4) for x in step_s], "frame_cpu_s": [round(x, 4) for x in frame_s],
            "frame_in_steps": round(frame / step, 2),
            "note": f"at budget {BUDGET} the worker rests {1 / BUDGET - 1:.0f}x a frame's wall time after each frame"}


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dcgan.dview", description=__doc__.splitlines()[0])
    p.add_argument("--bench", action="store_true", help="measure the live panel's cost on training throughput")
    p.add_argument("--steps", type=int, default=500,
                   help="bench: iterations per block (long enough for frames to be drawn inside the 'on' blocks)")
    p.add_argument("--rounds", type=int, default=6, help="bench: off/on block pairs")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--frame-cost", action="store_true", help="CPU time of one frame against one training step")
    p.add_argument("--checkpoint", help="render D's view of a checkpoint (file or run folder) to --out PNG")
    p.add_argument("--out", help="JSON file (bench) or PNG file (checkpoint)")
    args = p.parse_args(argv)
    if args.bench:
        result = bench(args.steps, args.rounds, threads=args.threads)
        text = json.dumps(result, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0
    if args.frame_cost:
        text = json.dumps(frame_cost(), indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
        return 0
    if args.checkpoint:
        frame = frame_of_checkpoint(args.checkpoint)
        out = Path(args.out or "dview.png")
        out.write_bytes(frame.picture)
        print(f"wrote {out} (iteration {frame.iteration}, mean D(x) {frame.d_real:.3f}, D(G(z)) {frame.d_fake:.3f})")
        return 0
    p.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
