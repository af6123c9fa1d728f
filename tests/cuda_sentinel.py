"""Imported first (by the app's process, and preloaded by the forkserver): records every call that would
initialise CUDA (torch.cuda._lazy_init, the one door to a CUDA context) with the stack that made it."""

from __future__ import annotations

import traceback

import torch.cuda

CALLS: list[str] = []
_real = torch.cuda._lazy_init


def _recording() -> None:
    CALLS.append("".join(traceback.format_stack(limit=8)))
    _real()


torch.cuda._lazy_init = _recording


def seen(run) -> dict:
    """A metric_fn (module level, so it pickles): what the training process recorded before its run's metrics."""
    return {"score": 0.0, "cuda_calls": len(CALLS), "initialized": float(torch.cuda.is_initialized())}
