"""The training step as one CUDA graph: a speed wrapper around `GANTraining.step`, which stays the reference.

A DCGAN step on a fast GPU is limited by kernel launches (several hundred small kernels), not by
arithmetic. Capturing `run.step` once and replaying it makes it one launch. The wrapper owns the
buffers the captured step reads: the batch indices and the EMA weight (1 - decay, which changes every
step). The host-side bookkeeping stays eager: `run.next_indices()` picks and reshuffles, its result
is copied into the index buffer, then the graph replays. Random draws inside the step use the run's
generator, registered with the graph, so the replayed run draws the same numbers as the eager one.

A new optimiser state or learning rate (checkpoint restore, NaN roll-back) is noticed and the step
captured again. The steps that carry the lazy R1 penalty (one in R1_EVERY) run eagerly between replays,
on the same weights, optimiser state and registered generator. Any failure leaves the eager step in use.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch

from . import distributed

if TYPE_CHECKING:
    from .train import GANTraining, StepStats


class CudaGraphStep:
    """Call it instead of `run.train_step('both')`."""

    WARMUP_STEPS = 3  # eager steps first: cuDNN autotuning, Adam state, allocator

    @staticmethod
    def supported(run: GANTraining) -> bool:
        """One CUDA process, a step without Python-side branching on data (one D batch, no gradient penalty)."""
        cfg = run.cfg
        return (run.device.type == "cuda" and distributed.world_size() == 1
                and cfg.d_steps == 1 and cfg.loss != "wgan-gp")

    def __init__(self, run: GANTraining):
        self.run = run
        self.graph: torch.cuda.CUDAGraph | None = None
        self.indices = torch.zeros(run.cfg.batch_size, dtype=torch.long, device=run.device)
        self.ema_weight = torch.zeros((), device=run.device)
        self.stats: StepStats | None = None
        self.key: tuple = ()
        self.warm = 0
        self.failed = ""  # why capturing failed, for the logs

    def __call__(self) -> StepStats:
        run = self.run
        if run.r1_due() or not self._ready():  # the lazy-R1 steps (1 in R1_EVERY) run eagerly
            return run.train_step("both")
        self.indices.copy_(run.next_indices())
        self.ema_weight.fill_(1.0 - run.ema_decay_now())
        self.graph.replay()
        run.iteration += 1
        s = self.stats
        return s.clone()

    def _key(self) -> tuple:
        """Learning rates and the addresses of the optimiser state: a change means capture again."""
        opts = (self.run.opt_g, self.run.opt_d)
        return (tuple(g["lr"] for o in opts for g in o.param_groups),
                tuple(t.data_ptr() for o in opts for st in o.state.values() for t in st.values()
                      if torch.is_tensor(t)))

    def _ready(self) -> bool:
        if self.failed:
            return False
        if self.graph is not None and self.key == self._key():
            return True
        self.graph = None
        if self.warm < self.WARMUP_STEPS:
            self.warm += 1
            return False
        run = self.run
        rng_state = run.rng.get_state()
        try:
            graph = torch.cuda.CUDAGraph()
            graph.register_generator_state(run.rng)
            torch.cuda.synchronize(run.device)
            with torch.cuda.graph(graph):
                self.stats = run.step([self.indices], True, self.ema_weight)
        except Exception as exc:  # a graph is an optimisation: keep training eagerly
            # the generator stays tied to the failed capture: go on with an untied one in the same state
            run.rng = torch.Generator(device=run.device)
            run.rng.set_state(rng_state)
            self.failed = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"CUDA graph capture failed, training eagerly ({self.failed[:300]})", stacklevel=3)
            return False
        self.graph, self.key = graph, self._key()
        return True
