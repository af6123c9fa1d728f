"""One DCGAN training run: networks, optimisers, data on the device, and the alternating step.

`GANTraining.train_step` is the whole algorithm of Goodfellow et al. / Radford et al.:
update D to tell real from generated images, then update G to fool D. Everything else here
(bf16 autocast, channels_last, EMA, augmentation, penalties) is an option around those lines.
The step returns its statistics as device tensors, so a caller syncs with the host only when it
wants numbers (every few steps), never inside the hot loop.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import distributed, losses
from .augment import augment_real, diff_augment
from .config import ConfigError, TrainConfig
from .data import ImageData, load_dataset, to_float
from .models import Discriminator, Generator, build_models, sample

NUM_FIXED = 64  # fixed-noise samples shown as the evolving grid


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


@dataclass
class StepStats:
    """Device tensors of one step; None for the half (D or G) that did not run."""

    loss_d: torch.Tensor | None
    loss_g: torch.Tensor | None
    d_real: torch.Tensor | None  # mean D(x), as a probability
    d_fake: torch.Tensor | None  # mean D(G(z)), as a probability

    FIELDS = ("loss_d", "loss_g", "d_real", "d_fake")

    def as_tensor(self) -> torch.Tensor:
        """[4] float tensor, NaN where a half did not run; no host sync."""
        present = next(v for v in (self.loss_d, self.loss_g) if v is not None)
        nan = torch.full((), float("nan"), device=present.device)
        return torch.stack([nan if v is None else v.float() for v in
                            (self.loss_d, self.loss_g, self.d_real, self.d_fake)])

    def finite(self) -> bool:
        """False if a loss that was computed is NaN or infinite (one host sync)."""
        present = [v.float() for v in (self.loss_d, self.loss_g) if v is not None]
        return bool(torch.isfinite(torch.stack(present)).all())


class GANTraining:
    """Everything one run is made of; the state a checkpoint saves and restores."""

    def __init__(self, cfg: TrainConfig, data: ImageData | None = None):
        cfg.validate()
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.dtype = resolve_precision(cfg.precision, self.device)
        self.data = data if data is not None else load_dataset(cfg)
        cfg.validate(n_train=self.data.train.shape[0])
        if cfg.num_classes and cfg.num_classes != self.data.num_classes:
            raise ConfigError("num_classes", f"the model has {cfg.num_classes} classes but the data set "
                                             f"'{self.data.name}' has {self.data.num_classes}")
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
        if cfg.compile:
            self.G_step, self.D_step = compile_or_fallback(self.G_step), compile_or_fallback(self.D_step)

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
        # On a GPU the whole step is replayed as one CUDA graph (launch overhead dominates a DCGAN step).
        self.graph: CudaGraphStep | None = CudaGraphStep(self) if CudaGraphStep.supported(self) else None

    # ---- sampling helpers ------------------------------------------------------------------
    @property
    def epoch(self) -> float:
        return self.images_seen / self.real.shape[0]

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)  # graph-safe

    def real_batch(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Next batch of a shuffled pass over the training set, as float [-1, 1] on the device.

        Under torchrun every rank draws the same global batch and keeps its own slice (`shard`)."""
        b = self.cfg.batch_size
        if self.position + b > self.order.shape[0]:
            self.order = torch.randperm(self.real.shape[0], device=self.device, generator=self.rng)
            self.position = 0
        idx = self.order[self.position:self.position + b]
        self.position += b
        self.images_seen += b
        x = to_float(self.real[idx]).contiguous(memory_format=torch.channels_last)
        if self.cfg.augment:
            x = augment_real(x, self.rng)
        labels = self.real_labels[idx] if self.real_labels is not None else None
        return distributed.shard(x), distributed.shard(labels)

    def noise(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = torch.randn(n, self.cfg.nz, device=self.device, generator=self.rng)
        labels = (torch.randint(0, self.cfg.num_classes, (n,), device=self.device, generator=self.rng)
                  if self.cfg.num_classes else None)
        return distributed.shard(z), distributed.shard(labels)

    def for_d(self, x: torch.Tensor) -> torch.Tensor:
        """DiffAugment, identically for real and fake, when configured."""
        ops = self.cfg.diffaug_ops()
        return diff_augment(x, ops, self.rng) if ops else x

    # ---- the training step -------------------------------------------------------------------
    def train_step(self, update: str = "both") -> StepStats:
        """One iteration: update = 'both' (D then G), 'd' (D only) or 'g' (G only)."""
        if update == "both" and self.graph is not None and self.graph.ready():
            return self.graph.replay()  # this same function, captured once as a CUDA graph
        cfg, G, D = self.cfg, self.G_step, self.D_step
        loss_d = loss_g = d_real = d_fake = None
        fake = fake_labels = None

        # (1) Update D: maximise log D(x) + log(1 - D(G(z)))  [or the configured loss]
        if update in ("both", "d"):
            for _ in range(cfg.d_steps):
                real, real_labels = self.real_batch()
                z, fake_labels = self.noise(cfg.batch_size)
                if cfg.r1_gamma > 0:
                    real.requires_grad_(True)
                with self.autocast():
                    fake = G(z, fake_labels)
                    real_logits = D(self.for_d(real), real_labels)
                    fake_logits = D(self.for_d(fake.detach()), fake_labels)
                loss_d = losses.d_loss(cfg.loss, real_logits, fake_logits)
                if cfg.loss == "wgan-gp":
                    loss_d = loss_d + cfg.gp_weight * losses.gradient_penalty(
                        D, real, fake.float(), real_labels if cfg.num_classes else None, self.rng)
                if cfg.r1_gamma > 0:
                    loss_d = loss_d + 0.5 * cfg.r1_gamma * losses.r1_penalty(real_logits, real)
                self.opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                self.opt_d.step()
                d_real = torch.sigmoid(real_logits.detach().float()).mean()
                d_fake = torch.sigmoid(fake_logits.detach().float()).mean()

        # (2) Update G: maximise log D(G(z)) (non-saturating)  [or the configured loss]
        if update in ("both", "g"):
            if fake is None or cfg.d_steps > 1:
                z, fake_labels = self.noise(cfg.batch_size)
                with self.autocast():
                    fake = G(z, fake_labels)
            with self.autocast():
                fake_logits = D(self.for_d(fake), fake_labels)
            loss_g = losses.g_loss(cfg.loss, fake_logits)
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
            self.update_ema()

        self.iteration += 1
        return StepStats(None if loss_d is None else loss_d.detach(),
                         None if loss_g is None else loss_g.detach(), d_real, d_fake)

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- d G_ema + (1 - d) G with d = min(ema_decay, (1 + t) / (10 + t)) at iteration t.

        The warm-up keeps the random initial weights from dominating short runs (with a fixed
        0.999 they would still weigh 0.999^1000 = 37% after 1000 steps)."""
        if self.G_ema is None:
            return
        ema_params, params = list(self.G_ema.parameters()), list(self.G.parameters())
        if self.graph is not None and self.graph.capturing:  # a replay reads the weight from the device
            for ema, p in zip(ema_params, params, strict=True):
                ema.lerp_(p, self.graph.ema_weight)
        else:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.ema_decay_now())
        for ema_buf, buf in zip(self.G_ema.buffers(), self.G.buffers(), strict=False):
            ema_buf.copy_(buf)

    def ema_decay_now(self) -> float:
        return min(self.cfg.ema_decay, (1 + self.iteration) / (10 + self.iteration))

    # ---- sampling ------------------------------------------------------------------------------
    def sampler(self) -> Generator:
        """The generator used for pictures and metrics: the EMA copy when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    def sample(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """float CPU images in [-1, 1] from the sampling generator (dcgan.models.sample)."""
        return sample(self.sampler(), z=z, labels=labels)

    def fixed_samples(self) -> torch.Tensor:
        return self.sample(self.fixed_z, self.fixed_labels)

    def set_lr(self, scale: float) -> None:
        for opt, base in ((self.opt_g, self.cfg.lr_g), (self.opt_d, self.cfg.lr_d)):
            for group in opt.param_groups:
                group["lr"] = base * scale

    @property
    def lr_scale(self) -> float:
        return self.opt_g.param_groups[0]["lr"] / self.cfg.lr_g


def generate(G: Generator, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """TODO(H14): ui/train_tab.py and tests/test_bad_files.py still import this; use dcgan.models.sample."""
    return sample(G, z=z, labels=labels)


class CudaGraphStep:
    """`GANTraining.train_step` captured once as a CUDA graph, then replayed: one launch per step
    instead of several hundred, which is what limits a DCGAN step on a fast GPU.

    The host-side bookkeeping (which images come next, reshuffles, counters) stays in Python and
    passes the batch indices through a static buffer; random draws use the run's generator,
    registered with the graph. A new optimiser state or learning rate (checkpoint restore, NaN
    roll-back) is noticed and the step captured again. Any failure leaves the eager step in use."""

    WARMUP_STEPS = 3  # eager steps first: cuDNN autotuning, Adam state, allocator

    @staticmethod
    def supported(run: GANTraining) -> bool:
        cfg = run.cfg
        return (run.device.type == "cuda" and distributed.world_size() == 1 and not cfg.compile
                and cfg.d_steps == 1 and cfg.r1_gamma == 0 and cfg.loss != "wgan-gp")

    def __init__(self, run: GANTraining):
        self.run = run
        self.graph: torch.cuda.CUDAGraph | None = None
        self.capturing = False
        self.warm = 0
        self.failed = ""

    def _key(self) -> tuple:
        run = self.run
        opts = (run.opt_g, run.opt_d)
        return (tuple(g["lr"] for o in opts for g in o.param_groups),
                tuple(t.data_ptr() for o in opts for st in o.state.values() for t in st.values()
                      if torch.is_tensor(t)))

    def ready(self) -> bool:
        if self.capturing or self.failed:
            return False
        if self.graph is not None and self.key == self._key():
            return True
        self.graph = None
        if self.warm < self.WARMUP_STEPS:
            self.warm += 1
            return False
        rng_state = self.run.rng.get_state()
        try:
            self._capture()
        except Exception as exc:  # a graph is an optimisation: keep training eagerly
            # the generator stays tied to the failed graph: continue with a fresh one in the same state
            self.run.rng = torch.Generator(device=self.run.device)
            self.run.rng.set_state(rng_state)
            self.failed = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"CUDA graph capture failed, training eagerly ({self.failed[:300]})", stacklevel=3)
            return False
        return True

    def _capture(self) -> None:
        run, b = self.run, self.run.cfg.batch_size
        self.indices = run.order[:b].clone()
        self.ema_weight = torch.zeros((), device=run.device)  # 1 - EMA decay, which changes per step
        saved = run.order, run.position, run.images_seen, run.iteration
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(run.rng)
        torch.cuda.synchronize(run.device)
        self.capturing = True
        try:
            run.order, run.position = self.indices, 0  # real_batch reads the static index buffer
            with torch.cuda.graph(graph):
                self.stats = run.train_step("both")
        finally:
            self.capturing = False
            run.order, run.position, run.images_seen, run.iteration = saved
        self.graph, self.key = graph, self._key()

    def replay(self) -> StepStats:
        run, b = self.run, self.run.cfg.batch_size
        if run.position + b > run.order.shape[0]:
            run.order = torch.randperm(run.real.shape[0], device=run.device, generator=run.rng)
            run.position = 0
        self.indices.copy_(run.order[run.position:run.position + b])
        run.position += b
        run.images_seen += b
        if run.G_ema is not None:
            self.ema_weight.fill_(1.0 - run.ema_decay_now())
        self.graph.replay()
        run.iteration += 1
        s = self.stats
        return StepStats(*(None if v is None else v.clone() for v in (s.loss_d, s.loss_g, s.d_real, s.d_fake)))


class CompiledOrEager(nn.Module):
    """A torch.compile'd module that turns back into the eager one if compiling fails.

    torch.compile compiles lazily, so a missing compiler or an unsupported device shows up at the
    first call, not at torch.compile(), and a bad backward graph only at the first backward. The
    first calls therefore also run the compiled backward once (autograd.grad, so no .grad is
    touched); on any failure this call and every later one run eagerly."""

    CHECKED_CALLS = 3  # D is called three ways in the first step (real, detached fake, fake)

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.compiled = torch.compile(module)
        self.calls = 0
        self.failed = ""  # why compiling failed, for the logs

    def forward(self, *args, **kwargs):
        if not self.failed:
            try:
                if self.calls >= self.CHECKED_CALLS:
                    return self.compiled(*args, **kwargs)
                # the trial backward keeps the graph, which buffer donation (torch >= 2.6) forbids
                with _no_buffer_donation():
                    out = self.compiled(*args, **kwargs)
                    if torch.is_grad_enabled() and out.requires_grad:
                        params = [p for p in self.module.parameters() if p.requires_grad]
                        torch.autograd.grad(out.float().sum(), params, retain_graph=True, allow_unused=True)
                self.calls += 1
                return out
            except Exception as exc:  # compile is an optimisation: any failure keeps the eager path
                self.failed = f"{type(exc).__name__}: {exc}"
                warnings.warn(f"torch.compile failed, training eagerly instead ({self.failed[:300]})",
                              stacklevel=2)
        return self.module(*args, **kwargs)


def _no_buffer_donation():
    try:
        from torch._functorch import config
    except ImportError:
        return contextlib.nullcontext()
    return config.patch(donated_buffer=False) if hasattr(config, "donated_buffer") else contextlib.nullcontext()


def compile_or_fallback(module: nn.Module) -> nn.Module:
    """torch.compile where it works; the eager module otherwise (no compiler, unsupported device)."""
    try:
        return CompiledOrEager(module)
    except Exception:  # torch.compile itself refused (e.g. an unsupported Python)
        return module


__all__ = ["GANTraining", "StepStats", "generate", "resolve_device", "Discriminator", "Generator"]
