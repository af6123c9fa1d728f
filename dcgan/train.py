"""DCGAN training, top to bottom: the run's state, the step (the algorithm), and the loop `fit`.

`GANTraining.step` is the whole algorithm of Goodfellow et al. / Radford et al.: update D to tell
real from generated images, then update G to fool D. Every option (bf16 autocast, augmentation,
DiffAugment, R1 / gradient penalty, several D steps, EMA, DDP under torchrun) is a visible branch
inside it. `fit` is the loop around the step, shared by the command line and the app's background
trainer: host syncs for logs and NaN checks, pictures, metrics, checkpoints; what a caller wants to
see or do arrives through `Hook` objects, and pause / single steps / stop through a `Control`.
The step returns device tensors, so the loop syncs with the host only every few steps on a GPU.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from . import distributed, losses
from .augment import augment_real, diff_augment
from .checkpoint import CheckpointError, config_of, load_module, read, resolve_checkpoint
from .config import ConfigError, TrainConfig
from .data import ImageData, check_fits, load_dataset, to_float
from .models import Discriminator, Generator, build_models, frozen, sample

NUM_FIXED = 64  # fixed-noise samples shown as the evolving grid
GOOD_STATE_EVERY = 100  # steps between the in-memory snapshots a NaN rolls back to
MIN_LR_SCALE = 1 / 64  # after this many halvings a NaN stops / pauses the run instead
LOSS_ROWS_KEPT = 2000  # loss-log rows a checkpoint keeps (every k-th): a long run's stay a few tens of kB
R1_EVERY = 16  # lazy R1 (Karras et al. 2020): the penalty on every 16th step, 16x weighted: 1/16 of the cost


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "CUDA was asked for but no CUDA GPU is visible; use auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device", "MPS was asked for but is not available; use auto or cpu")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    if precision == "bf16" and not bf16_supported(device):
        raise ConfigError("precision", f"bf16 is not supported on this {device.type}; use auto or fp32")
    if precision == "bf16" or (precision == "auto" and bf16_supported(device)):
        return torch.bfloat16
    return torch.float32


def log_interval(cfg: TrainConfig, device: torch.device) -> int:
    """Host syncs every step on the CPU (free there), every 20 on a GPU (each one stalls it)."""
    if cfg.log_every:
        return cfg.log_every
    return 20 if device.type == "cuda" else 1


@dataclass
class StepStats:
    """Device tensors of one step; None for the half (D or G) that did not run."""

    loss_d: torch.Tensor | None
    loss_g: torch.Tensor | None
    d_real: torch.Tensor | None  # mean D(x), as a probability
    d_fake: torch.Tensor | None  # mean D(G(z)), as a probability

    def as_tensor(self) -> torch.Tensor:
        """[4] float tensor, NaN where a half did not run; no host sync."""
        present = next(v for v in (self.loss_d, self.loss_g) if v is not None)
        nan = torch.full((), float("nan"), device=present.device)
        return torch.stack([nan if v is None else v.float() for v in
                            (self.loss_d, self.loss_g, self.d_real, self.d_fake)])

    def nonfinite(self) -> torch.Tensor:
        """Device bool: a loss that was computed is NaN or infinite (no host sync)."""
        return ~torch.isfinite(torch.stack([v.float() for v in (self.loss_d, self.loss_g) if v is not None])).all()

    def finite(self) -> bool:
        return not bool(self.nonfinite())

    def clone(self) -> StepStats:
        """Copies that outlive the buffers they were read from (a replayed CUDA graph overwrites its outputs)."""
        return StepStats(*(None if v is None else v.clone() for v in (self.loss_d, self.loss_g, self.d_real,
                                                                       self.d_fake)))


class GANTraining:
    """Everything one run is made of; the state a checkpoint saves and restores."""

    def __init__(self, cfg: TrainConfig, data: ImageData | None = None):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_precision(cfg.precision, self.device)
        self.data = data if data is not None else load_dataset(cfg)
        check_fits(cfg, self.data)
        torch.manual_seed(cfg.seed)
        self.G, self.D = (m.to(self.device, memory_format=torch.channels_last) for m in build_models(cfg))
        self.G_ema: Generator | None = copy.deepcopy(self.G).eval() if cfg.ema_decay > 0 else None
        adam = {"betas": (cfg.beta1, cfg.beta2)}
        if self.device.type == "cuda":
            adam.update(fused=True, capturable=True)  # capturable: the step can be a CUDA graph
        else:
            adam["foreach"] = True
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, **adam)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest conv algorithms once
        # Under torchrun: DDP copies for the step (and SyncBatchNorm); the modules themselves otherwise.
        self.G_step, self.D_step = distributed.wrap(self.G, self.D, cfg.batch_size, cfg.sync_bn, self.device)

        # One generator for every random draw of the run (batches, noise, augmentation), so a
        # checkpoint that stores its state resumes the exact same sequence.
        self.rng = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.real = self.data.train.to(self.device)  # uint8; converted per batch
        self.real_labels = (self.data.train_labels.to(self.device)
                            if cfg.num_classes and self.data.train_labels is not None else None)
        self.order = torch.randperm(self.real.shape[0], device=self.device, generator=self.rng)
        self.position = 0  # index into self.order
        cpu_rng = torch.Generator().manual_seed(cfg.seed)
        self.fixed_z = torch.randn(NUM_FIXED, cfg.nz, generator=cpu_rng).to(self.device)
        self.fixed_labels = (torch.arange(NUM_FIXED, device=self.device) % cfg.num_classes
                             if cfg.num_classes else None)
        self.iteration = 0
        self.images_seen = 0
        self.history: list[dict] = []  # quality-metric records, kept in checkpoints
        self.loss_log: list[list[float]] = []  # [iteration, loss_d, loss_g] per host sync, for loss curves
        self.trained_s = 0.0  # training time of this session (for cfg.minutes); a ZeroGPU chunk carries it on

    # ---- the training step ---------------------------------------------------------------------
    def train_step(self, update: str = "both") -> StepStats:
        """One iteration: update = 'both' (D then G), 'd' (D only) or 'g' (G only).

        The host-side bookkeeping (which images come next) happens here; `step` is the algorithm."""
        n_batches = self.cfg.d_steps if update in ("both", "d") else 0
        batches = [self.next_indices() for _ in range(n_batches)]
        stats = self.step(batches, update in ("both", "g"), 1.0 - self.ema_decay_now(), self.r1_due())
        self.iteration += 1
        return stats

    def step(self, batches: Sequence[torch.Tensor], update_g: bool = True,
             ema_weight: float | torch.Tensor = 0.0, r1: bool = False) -> StepStats:
        """The algorithm: one D update per batch of real-image indices, then (update_g) one G update.

        Only device work, no host sync and no Python state changes, so dcgan/cuda_graph.py can capture
        it as one CUDA graph. ema_weight = 1 - EMA decay (a device tensor inside a graph); r1: this
        step's D updates carry the R1 penalty (every R1_EVERY-th step, see there)."""
        cfg, G, D, rng, dev = self.cfg, self.G_step, self.D_step, self.rng, self.device
        b = cfg.batch_size
        ops = cfg.diffaug_ops()
        loss_d = loss_g = d_real = d_fake = fake = fake_labels = None

        def noise():  # z ~ N(0, I) and random classes; under torchrun each rank keeps its slice of the batch
            z = torch.randn(b, cfg.nz, device=dev, generator=rng)
            y = torch.randint(0, cfg.num_classes, (b,), device=dev, generator=rng) if cfg.num_classes else None
            return distributed.shard(z), distributed.shard(y)

        # (1) Update D: maximise log D(x) + log(1 - D(G(z)))  [or the configured loss]
        for idx in batches:
            real = to_float(self.real[idx]).contiguous(memory_format=torch.channels_last)
            if cfg.augment:  # classic augmentation of the real images: flips and padded crops
                real = augment_real(real, rng)
            real_labels = self.real_labels[idx] if self.real_labels is not None else None
            real, real_labels = distributed.shard(real), distributed.shard(real_labels)
            z, fake_labels = noise()
            if r1:
                real.requires_grad_(True)
            with self.autocast():
                fake = G(z, fake_labels)
                real_in, fake_in = real, fake.detach()
                if ops:  # DiffAugment: the same kind of random transforms for real and fake, differentiable
                    real_in, fake_in = diff_augment(real_in, ops, rng), diff_augment(fake_in, ops, rng)
                real_logits = D(real_in, real_labels)
                fake_logits = D(fake_in, fake_labels)
            loss_d = losses.d_loss(cfg.loss, real_logits, fake_logits)
            if cfg.loss == "wgan-gp":
                loss_d = loss_d + cfg.gp_weight * losses.gradient_penalty(
                    D, real, fake.float(), real_labels if cfg.num_classes else None, rng)
            self.opt_d.zero_grad(set_to_none=True)
            if r1:  # lazy R1 (StyleGAN2): every R1_EVERY steps, R1_EVERY times the weight; left out of the logged loss
                (loss_d + 0.5 * cfg.r1_gamma * R1_EVERY * losses.r1_penalty(real_logits, real)).backward()
            else:
                loss_d.backward()
            self.opt_d.step()
            d_real = torch.sigmoid(real_logits.detach().float()).mean()
            d_fake = torch.sigmoid(fake_logits.detach().float()).mean()

        # (2) Update G: maximise log D(G(z)) (non-saturating)  [or the configured loss]
        if update_g:
            if fake is None or len(batches) > 1:  # fresh noise unless D saw exactly this fake batch
                z, fake_labels = noise()
                with self.autocast():
                    fake = G(z, fake_labels)
            with frozen(self.D):  # D only judges here: no gradient for its weights (nor a DDP all-reduce)
                with self.autocast():
                    fake_logits = self.D(diff_augment(fake, ops, rng) if ops else fake, fake_labels)
                loss_g = losses.g_loss(cfg.loss, fake_logits)
                if d_fake is None:  # a G-only step: D(G(z)) as D judged the fakes G learned from
                    d_fake = torch.sigmoid(fake_logits.detach().float()).mean()
                self.opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
            self.opt_g.step()
            if self.G_ema is not None:  # EMA of G's weights: smoother samples for pictures and metrics
                with torch.no_grad():
                    torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), ema_weight)
                    for ema_buf, buf in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                        ema_buf.copy_(buf)

        return StepStats(None if loss_d is None else loss_d.detach(),
                         None if loss_g is None else loss_g.detach(), d_real, d_fake)

    def next_indices(self) -> torch.Tensor:
        """Indices of the next batch of a shuffled pass over the training set (reshuffled each epoch)."""
        b = self.cfg.batch_size
        if self.position + b > self.order.shape[0]:
            self.order = torch.randperm(self.real.shape[0], device=self.device, generator=self.rng)
            self.position = 0
        idx = self.order[self.position:self.position + b]
        self.position += b
        self.images_seen += b
        return idx

    def r1_due(self) -> bool:
        """Whether this iteration's D update carries the (lazy) R1 penalty."""
        return self.cfg.r1_gamma > 0 and self.iteration % R1_EVERY == 0

    def ema_decay_now(self) -> float:
        """d = min(ema_decay, (1 + t) / (10 + t)) at iteration t: the warm-up keeps the random initial
        weights from dominating short runs (with a fixed 0.999 they would still weigh 37% after 1000 steps)."""
        return min(self.cfg.ema_decay, (1 + self.iteration) / (10 + self.iteration))

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)  # graph-safe

    # ---- what the loop reads -----------------------------------------------------------------
    @property
    def epoch(self) -> float:
        return self.images_seen / self.real.shape[0]

    def sampler(self) -> Generator:
        """The generator used for pictures and metrics: the EMA copy when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """float CPU images in [-1, 1] from the sampling generator (dcgan.models.sample)."""
        return sample(self.sampler(), z=z, labels=labels)

    def fixed_samples(self) -> torch.Tensor:
        """The evolving grid, drawn in the run's precision: bf16 halves its cost where training uses it."""
        with self.autocast():
            return self.sample(self.fixed_z, self.fixed_labels)

    def set_lr(self, scale: float) -> None:
        for opt, base in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale

    @property
    def lr_scale(self) -> float:
        return self.opt_g.param_groups[0]["lr"] / self.cfg.lr_g

    # ---- the run's whole state: what a checkpoint holds and a NaN roll-back restores ----------------
    def state_dict(self, on_device: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-able metadata): CPU copies for a file (dcgan/checkpoint.py), or copies on the run's
        device (on_device: the NaN roll-back's snapshot, no transfer to the host on a GPU)."""
        device = self.device if on_device else "cpu"
        tensors = {f"{prefix}.{k}": v for prefix, module in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema))
                   if module is not None for k, v in module.state_dict().items()}
        groups = {}
        for prefix, opt in (("opt_g", self.opt_g), ("opt_d", self.opt_d)):
            state = opt.state_dict()
            tensors.update({f"{prefix}.{idx}.{key}": torch.as_tensor(value)
                            for idx, values in state["state"].items() for key, value in values.items()})
            groups[prefix] = state["param_groups"]
        tensors.update({"data_order": self.order, "fixed_z": self.fixed_z})
        # contiguous copies that never alias the live tensors (on the CPU .cpu() would, and the roll-back's
        # snapshot would then be overwritten by later steps)
        tensors = {k: v.detach().to(device, memory_format=torch.contiguous_format, copy=True)
                   for k, v in tensors.items()}
        tensors["rng_state"] = self.rng.get_state().cpu()
        meta = {"config": self.cfg.to_dict(), "iteration": self.iteration, "images_seen": self.images_seen,
                "position": self.position, "param_groups_g": groups["opt_g"], "param_groups_d": groups["opt_d"],
                "history": self.history,
                "losses": self.loss_log[::max(1, -(-len(self.loss_log) // LOSS_ROWS_KEPT))],  # model-card curves
                "dataset": {"name": self.data.name, "class_names": self.data.class_names}}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any], name: str = "checkpoint") -> None:
        """Put a state_dict (of a run with the same config) back; CheckpointError names what does not fit."""
        load_module(self.G, "G", tensors, name)
        load_module(self.D, "D", tensors, name)
        if self.G_ema is not None:
            if any(k.startswith("G_ema.") for k in tensors):
                load_module(self.G_ema, "G_ema", tensors, name)
            else:
                self.G_ema.load_state_dict(self.G.state_dict())
        for prefix, opt, groups in (("opt_g", self.opt_g, meta["param_groups_g"]),
                                    ("opt_d", self.opt_d, meta["param_groups_d"])):
            state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in tensors.items():
                if key.startswith(prefix + "."):
                    _, idx, field = key.split(".", 2)
                    state.setdefault(int(idx), {})[field] = value
            opt.load_state_dict({"state": state, "param_groups": groups})
        order = tensors["data_order"]
        if order.shape[0] != self.real.shape[0]:
            raise CheckpointError(f"{name} was trained on {order.shape[0]} images but the data set now has "
                                  f"{self.real.shape[0]}; resume with the same data")
        self.order = order.to(self.device)
        self.position = int(meta["position"])
        self.fixed_z = tensors["fixed_z"].to(self.device)
        self.rng.set_state(tensors["rng_state"])
        self.iteration = int(meta["iteration"])
        self.images_seen = int(meta["images_seen"])
        self.history = list(meta.get("history", []))
        self.loss_log = [list(r) for r in meta.get("losses", [])]


def load_training(path: str | Path, data: ImageData | None = None, **overrides: Any) -> GANTraining:
    """A run resumed from a checkpoint file or run folder; overrides (e.g. steps, device) change its config."""
    path = resolve_checkpoint(path)
    tensors, meta = read(path)
    cfg = config_of(meta)
    run = GANTraining(cfg.replace(**overrides) if overrides else cfg, data)
    run.load_state_dict(tensors, meta, path.name)
    return run


def out_of_memory_message(exc: BaseException, cfg: TrainConfig, device: torch.device | str) -> str | None:
    """What to change when training ran out of memory; None for any other error."""
    text = str(exc).lower()  # the CPU allocator raises a plain RuntimeError
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in text or "allocate memory" in text:
        return (f"Out of memory ({type(exc).__name__}) at batch size {cfg.batch_size}, {cfg.image_size}x"
                f"{cfg.image_size} on {device}: lower the batch size or the image size and start again.")
    return None


# ---- hooks and control ---------------------------------------------------------------------------


def lower_thread_priority(nice: int) -> None:
    """Make the calling helper thread (D's view, the app's heavy jobs) give way to the training thread. Linux
    gives each thread its own nice value; elsewhere setpriority would lower the whole process, so there the
    thread keeps the process's priority."""
    if nice > 0 and sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):  # not allowed here: the thread keeps its priority
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


class Hook:
    """What a caller of `fit` sees of a run. Methods run in the training thread: keep them cheap
    (hand heavy work to a thread of your own). Every method is optional."""

    def on_start(self, run: GANTraining) -> None: ...

    def on_log(self, run: GANTraining, row: dict) -> None:
        """After each host sync: iteration, epoch, loss_d, loss_g, d_real, d_fake, images_per_s, lr_g,
        lr_d, time (NaN for the half of a single D- or G-step that did not run)."""

    def on_pictures(self, run: GANTraining, images: torch.Tensor) -> None:
        """Fixed-noise samples, float CPU [N, C, H, W] in [-1, 1]: every cfg.sample_every_s seconds of
        training, after single steps, and at the end."""

    def on_metrics(self, run: GANTraining, record: dict) -> None: ...

    def on_checkpoint(self, run: GANTraining, path: Path) -> None: ...

    def on_event(self, run: GANTraining, message: str, problem: bool = False) -> None:
        """Something a person should read: new metrics, a new best; problem=True for what the run
        survives but the user should fix (a failed save)."""

    def on_nan(self, run: GANTraining, iteration: int) -> None:
        """A NaN / inf loss showed up at the last host sync (the loop skips that sync's row)."""

    def on_end(self, run: GANTraining, state: str) -> None:
        """'finished', 'stopped' or 'failed' (then the exception propagates from fit); 'suspended' at the end of
        a ZeroGPU chunk (the run goes on in the next chunk, with hooks of its own)."""


class Turn(NamedTuple):
    update: str = "both"  # 'both', 'd' or 'g'
    single: bool = False  # a queued single step of a paused run
    waited: bool = False  # the run was paused before this turn (paused time is not training time)
    save: bool = False  # no step: save a checkpoint now (asked for by hand)
    show: bool = False  # no step: the run has just paused; send the pictures of the state it paused in
    suspend: bool = False  # no step: a ZeroGPU chunk ends here (dcgan/zerogpu.py); the next chunk's fit goes on


class Control:
    """Steers a running `fit` from other threads: pause / resume, queued single steps, save now, stop.
    Every request is carried out by the loop between two steps, never beside one."""

    def __init__(self, paused: bool = False) -> None:
        self._cond = threading.Condition()
        self.paused = paused
        self.stopping = False
        self.saving = False  # a save by hand was asked for
        self.pending: deque[str] = deque()  # single steps queued while paused: 'both' | 'd' | 'g'
        self.shown = paused  # the pictures of the paused state went out

    def pause(self) -> None:
        with self._cond:
            self.paused, self.shown = True, False

    def resume(self) -> None:
        with self._cond:
            self.paused = False
            self._cond.notify_all()

    def step(self, k: int = 1, update: str = "both") -> None:
        with self._cond:
            self.paused = True
            self.pending.extend([update] * k)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopping = True
            self._cond.notify_all()

    def save(self) -> None:
        with self._cond:
            self.saving = True
            self._cond.notify_all()

    def next_turn(self) -> Turn | None:
        """Blocks while paused with nothing queued; None when a stop was asked for."""
        with self._cond:
            waited = False
            while self.paused and self.shown and not self.pending and not self.stopping and not self.saving:
                waited = True
                self._cond.wait(0.5)
            if self.stopping:
                return None
            if self.saving:
                self.saving = False
                return Turn(save=True, waited=waited)
            if self.paused and self.pending:
                return Turn(self.pending.popleft(), single=True, waited=waited)
            if self.paused:  # the first turn after a pause: what the run paused at is what the page shows
                self.shown = True
                return Turn(show=True, waited=waited)
            return Turn(waited=waited)


# ---- the loop ----------------------------------------------------------------------------------------


def fit(run: GANTraining, hooks: Sequence[Hook] = (), control: Control | None = None, *,
        folder=None, metric_fn: Callable[[GANTraining], dict] | None = None, metric_key: str = "score",
        lower_is_better: bool = True) -> str:
    """Train until cfg.steps or cfg.minutes (or a stop); returns 'finished' or 'stopped' ('suspended' when the
    control ends a ZeroGPU chunk: Turn.suspend).

    folder (a checkpoint.RunFolder) gets a checkpoint every cfg.checkpoint_every steps and at the
    end; metric_fn scores the run every cfg.metric_every steps and keeps the best checkpoint by
    record[metric_key]. Under torchrun every rank runs this loop; rank 0 alone saves and scores."""
    from .cuda_graph import CudaGraphStep  # imported here: it imports torch.cuda.graphs machinery

    cfg = run.cfg
    main = distributed.is_main()
    sync_every = log_interval(cfg, run.device)
    graph = CudaGraphStep(run) if CudaGraphStep.supported(run) else None  # a GPU replays the step as one graph
    window: list[torch.Tensor] = []  # per-step stats since the last host sync
    bad = torch.zeros((), dtype=torch.bool, device=run.device)

    def tell(method: str, *args) -> None:
        for hook in hooks:
            call = getattr(hook, method, None)  # a duck-typed hook may leave methods out
            if call is not None:
                call(run, *args)

    def pictures() -> None:
        nonlocal pictures_at, last_pictures
        if main:
            tell("on_pictures", run.fixed_samples())
        pictures_at, last_pictures = run.iteration, time.monotonic()

    def evaluate() -> None:
        record = {"iteration": run.iteration, **metric_fn(run)}
        run.history.append(record)
        tell("on_metrics", record)
        summary = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k not in ("iteration", metric_key))
        if summary:
            tell("on_event", f"metrics at iteration {run.iteration}: {summary}")
        score = record.get(metric_key)
        try:
            if score is not None and folder is not None and folder.offer_best(run, float(score), lower_is_better):
                tell("on_event", f"new best {metric_key} = {score:.4g} at iteration {run.iteration}")
        except CheckpointError as exc:  # a full disk must not end the run
            tell("on_event", str(exc), True)

    def checkpoint() -> None:
        nonlocal saved_at
        saved_at = run.iteration
        try:
            tell("on_checkpoint", folder.save(run))
        except CheckpointError as exc:  # shown to the user; training goes on, older checkpoints stay
            tell("on_event", str(exc), True)

    scoring = bool(cfg.metric_every and metric_fn and main)
    saving = folder is not None and main
    pictures_at = saved_at = -1
    timed_out = False
    try:
        tell("on_start")
        last_pictures = time.monotonic()
        t0, seen0 = time.perf_counter(), run.images_seen
        clock = time.monotonic()  # run.trained_s is the training time for cfg.minutes: paused time does not count
        while run.iteration < cfg.steps and not timed_out:
            turn = control.next_turn() if control is not None else Turn()
            if turn is None:  # stop asked for (under torchrun: all ranks stop together at the next host sync)
                if distributed.world_size() == 1:
                    break
                turn = Turn()
            if turn.waited:
                t0, seen0, clock = time.perf_counter(), run.images_seen, time.monotonic()
            if turn.save:  # a save by hand, here between two steps
                if saving:
                    checkpoint()
                else:
                    tell("on_event", "this run has no folder to save into", True)
                continue
            if turn.show:
                if pictures_at != run.iteration:
                    pictures()
                continue
            if turn.suspend:  # the end of a ZeroGPU chunk, not of the run: none of the end's pictures, score or save
                if bool(bad):  # steps not yet synced went bad (a paused GPU run): roll back, then end the chunk
                    window.clear()
                    bad.zero_()
                    tell("on_nan", run.iteration)
                tell("on_end", "suspended")
                return "suspended"
            stats = graph() if graph is not None and turn.update == "both" else run.train_step(turn.update)
            window.append(stats.as_tensor())
            bad |= stats.nonfinite()
            tick = time.monotonic()
            run.trained_s, clock = run.trained_s + tick - clock, tick
            out_of_time = bool(cfg.minutes) and run.trained_s >= cfg.minutes * 60
            timed_out = out_of_time and distributed.world_size() == 1  # several ranks: agreed at the host sync
            done = run.iteration >= cfg.steps or timed_out

            if len(window) >= sync_every or turn.single or done:  # the host sync
                if distributed.world_size() > 1:  # every rank sees a NaN, a stop or the time limit: all act together
                    flags = torch.tensor([control is not None and control.stopping, out_of_time], device=run.device)
                    bad, stop, timed_out = distributed.any_rank(torch.cat([bad.view(1), flags]))
                    timed_out = bool(timed_out) and not bool(stop)
                    if bool(stop) or timed_out:
                        break
                if bool(bad):
                    window.clear()
                    bad.zero_()
                    tell("on_nan", run.iteration)
                    continue
                means = [float(v) for v in torch.nanmean(torch.stack(window).cpu(), dim=0)]
                update = turn.update if turn.single and len(window) == 1 else "both"  # a single D- or G-only step
                window.clear()
                now = time.perf_counter()
                row = {"iteration": run.iteration, "epoch": round(run.epoch, 4),
                       "loss_d": means[0], "loss_g": means[1], "d_real": means[2], "d_fake": means[3],
                       "images_per_s": (run.images_seen - seen0) / max(now - t0, 1e-9),
                       "lr_g": run.opt_g.param_groups[0]["lr"], "lr_d": run.opt_d.param_groups[0]["lr"],
                       "time": time.time(), "update": update}
                t0, seen0 = now, run.images_seen
                run.loss_log.append([run.iteration, means[0], means[1]])
                tell("on_log", row)

            if turn.single or done or clock - last_pictures >= cfg.sample_every_s:
                pictures()
            if scoring and run.iteration % cfg.metric_every == 0:
                evaluate()
            if saving and cfg.checkpoint_every and run.iteration % cfg.checkpoint_every == 0:
                checkpoint()

        # the end (finished, out of time or stopped): last pictures, last score, last checkpoint
        if timed_out:
            tell("on_event", f"time limit of {cfg.minutes:g} min reached at iteration {run.iteration}")
        if pictures_at != run.iteration:
            pictures()
        if scoring and run.iteration and run.iteration % cfg.metric_every:
            evaluate()  # a stopped run's last state competes for best.safetensors too
        if saving and saved_at != run.iteration:
            checkpoint()
        state = "finished" if run.iteration >= cfg.steps or timed_out else "stopped"
    except Exception:
        tell("on_end", "failed")
        raise
    tell("on_end", state)
    return state


class NanRollback(Hook):
    """On a NaN / inf loss: back to the last good state (a copy kept on the device, taken every
    GOOD_STATE_EVERY steps) with half the learning rates, and `say` so. With nan_policy 'pause', or
    once the rates are down to MIN_LR_SCALE, back to it and `pause(why)`: the app pauses the run,
    the command line stops it (saving the good state)."""

    def __init__(self, say: Callable[[str], None], pause: Callable[[str], None]) -> None:
        self.say, self.pause = say, pause

    def on_start(self, run: GANTraining) -> None:
        self.good = run.state_dict(on_device=True)
        self.taken = run.iteration
        # a GPU step takes ~3 ms: copying the whole state every 100 steps would be a visible cost there
        self.every = max(GOOD_STATE_EVERY, 25 * log_interval(run.cfg, run.device))

    def on_log(self, run: GANTraining, row: dict) -> None:
        if run.iteration - self.taken >= self.every:
            self.good, self.taken = run.state_dict(on_device=True), run.iteration

    def on_nan(self, run: GANTraining, iteration: int) -> None:
        scale = run.lr_scale / 2  # of the rates that just failed (the snapshot holds older ones)
        tensors, meta = self.good
        # copies: a restored optimiser state would otherwise share (and then overwrite) the snapshot's tensors
        run.load_state_dict({k: v.clone() for k, v in tensors.items()}, meta, "in-memory state")
        self.taken = run.iteration
        if run.cfg.nan_policy == "rollback" and scale >= MIN_LR_SCALE:
            run.set_lr(scale)
            self.say(f"NaN/inf loss at iteration {iteration}: rolled back to iteration {run.iteration} and "
                     f"halved the learning rates (now x{scale:g}).")
        else:
            self.pause(f"NaN/inf loss at iteration {iteration}: the run is paused at the last good state "
                       f"(iteration {run.iteration}). Lower the learning rates, try another loss (hinge, "
                       f"wgan-gp) or spectral norm, then resume or start again.")


__all__ = ["GANTraining", "StepStats", "Hook", "Control", "Turn", "fit", "NanRollback", "resolve_device",
           "log_interval", "load_training", "Discriminator", "Generator"]
