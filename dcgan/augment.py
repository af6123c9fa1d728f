"""Augmentations that run on the device, batched: no DataLoader workers needed.

`augment_real` is classic data augmentation of the training images (flip, padded crop).
`diff_augment` is differentiable augmentation (Zhao et al. 2020, "DiffAugment"): the same random
transforms applied to real and fake images before D, so D cannot memorise a small data set
while G still gets gradients through them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator) < 0.5
    return torch.where(flip, x.flip(3), x)


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator | None = None,
                     pad_mode: str = "reflect") -> torch.Tensor:
    """Shift each image by up to max_shift pixels (padding, then a random crop of the original size)."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, mode=pad_mode)
    dy = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * max_shift + 1, (n, 1, 1), device=x.device, generator=generator)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
    flat = rows * padded.shape[3] + cols  # [n, h, w] index into each padded image
    out = padded.flatten(2).gather(2, flat.flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1))
    return out.view_as(x)


def augment_real(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip and a random crop with padding of 1/8 of the side."""
    return random_translate(random_flip(x, generator), x.shape[-1] // 8, generator)


def cutout(x: torch.Tensor, ratio: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a random square of ratio x the side in each image (its centre may sit near a border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=x.device, generator=generator)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=x.device, generator=generator)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    top, left = cy - ch // 2, cx - cw // 2  # a ch x cw square (clipped at the borders), as in DiffAugment
    inside = (ys >= top) & (ys < top + ch) & (xs >= left) & (xs < left + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def colour(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random brightness, saturation and contrast, as in DiffAugment."""
    n = x.shape[0]

    def r(*shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, device=x.device, generator=generator, dtype=x.dtype)

    x = x + (r(1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (r(1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (r(1, 1, 1) + 0.5) + mean


def diff_augment(x: torch.Tensor, ops: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
    for op in ops:
        if op == "color":
            x = colour(x, generator)
        elif op == "translation":
            x = random_translate(x, max(1, x.shape[-1] // 8), generator, pad_mode="constant")
        elif op == "cutout":
            x = cutout(x, 0.5, generator)
        else:
            raise ValueError(f"unknown DiffAugment op {op!r}")
    return x
