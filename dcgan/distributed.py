"""Data-parallel training across processes (torchrun): process group, sharding, DDP wrapping.

`torchrun --nproc_per_node N -m dcgan train ...` starts N copies of the CLI; each calls `setup()`,
which joins the process group torchrun described in the environment (RANK, WORLD_SIZE, ...).
`--batch-size` stays the *global* batch: every rank draws the same global batch of indices and
noise from the shared random generator (same seed everywhere) and keeps its own slice, so the
data order, the checkpoint and a resume are the same whatever the number of processes. DDP
averages the gradients; with `--sync-bn` BatchNorm uses the statistics of the global batch, and
a run on N processes computes the same losses as one process with the same global batch.
Logging, checkpoints and Hub pushes happen on rank 0 only (`is_main()`).
"""

from __future__ import annotations

import datetime
import os
import warnings

import torch
import torch.distributed as dist
from torch import nn

from .config import ConfigError


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True in the one process that logs, saves checkpoints and pushes to the Hub."""
    return rank() == 0


def setup(device: str = "auto") -> bool:
    """Join the process group torchrun set up in the environment; False (nothing done) without one.

    NCCL with one CUDA GPU per rank (LOCAL_RANK picks it), gloo on the CPU (device='cpu', tests)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if dist.is_initialized():
        return True
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device in ("auto", "cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=10))
    return True


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(x: torch.Tensor | None) -> torch.Tensor | None:
    """This rank's contiguous slice of a global batch (the whole batch in a single process)."""
    n = world_size()
    if x is None or n == 1:
        return x
    per_rank = x.shape[0] // n
    return x[rank() * per_rank:(rank() + 1) * per_rank]


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """A boolean flag that is true on every rank when it is true on one (NaN roll-backs stay in step)."""
    if world_size() == 1:
        return flag
    value = flag.to(torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return value.bool()


class AllReduceBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm over the global batch for devices that nn.SyncBatchNorm does not support (the CPU).

    Sums and squared sums go through a differentiable all_reduce, so gradients flow across ranks
    exactly as in nn.SyncBatchNorm. Same parameters and buffers as BatchNorm2d (checkpoints match)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = (0, 2, 3)
        xf = x.float()
        count = torch.full((1,), float(x.numel() // x.shape[1]), device=x.device)
        with warnings.catch_warnings():  # deprecated in favour of a private module; still the public API
            warnings.simplefilter("ignore", FutureWarning)
            totals = all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        c = x.shape[1]
        n = totals[-1]
        mean = totals[:c] / n
        var = (totals[c:2 * c] / n - mean * mean).clamp_min(0)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
            unbiased = var.detach() * n / (n - 1).clamp_min(1)
            self.running_var.lerp_(unbiased.to(self.running_var.dtype), m)
        shape = (1, c, 1, 1)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return (y * self.weight.view(shape) + self.bias.view(shape)).to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """BatchNorm2d -> nn.SyncBatchNorm on CUDA, -> AllReduceBatchNorm2d elsewhere, in place."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            new = AllReduceBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                       child.track_running_stats, device=device)
            # the same Parameter and buffer objects, so optimisers built before keep working
            new.weight, new.bias = child.weight, child.bias
            new.running_mean, new.running_var = child.running_mean, child.running_var
            new.num_batches_tracked = child.num_batches_tracked
            setattr(module, name, new.train(child.training))
        else:
            convert_sync_batchnorm(child, device)
    return module


def wrap(G: nn.Module, D: nn.Module, batch_size: int, sync_bn: bool,
         device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(G, D) to call in the training step: DistributedDataParallel copies when several processes
    train, the modules themselves otherwise. With sync_bn, BatchNorm layers are converted in place
    first (so G, D, the checkpoints and the samples all use the converted modules)."""
    n = world_size()
    if n == 1:
        return G, D
    if batch_size % n:
        raise ConfigError("batch_size", f"the global batch {batch_size} must divide evenly among "
                                        f"{n} processes")
    if sync_bn:
        G, D = convert_sync_batchnorm(G, device), convert_sync_batchnorm(D, device)
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return DDP(G, device_ids=ids), DDP(D, device_ids=ids)
