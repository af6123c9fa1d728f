"""Turning generated tensors into pictures: grids, PNG files, animated GIFs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid


def grid_array(images: torch.Tensor, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """float [-1, 1] [N, C, H, W] -> uint8 [H', W', 3] grid (grey images are repeated to RGB)."""
    images = images.detach().float().cpu()
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    grid = make_grid(images, nrow=nrow, padding=padding, normalize=True, value_range=(-1, 1), pad_value=1.0)
    return (grid.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def image_array(image: torch.Tensor) -> np.ndarray:
    """float [-1, 1] [C, H, W] -> uint8 [H, W] or [H, W, 3]."""
    arr = image.detach().float().cpu().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)
    arr = arr.permute(1, 2, 0).numpy()
    return arr[:, :, 0] if arr.shape[2] == 1 else arr


def upscale(arr: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Nearest-neighbour upscaling so 28-pixel digits are visible in a browser."""
    factor = max(1, math.ceil(min_side / max(arr.shape[0], arr.shape[1])))
    if factor == 1:
        return arr
    return np.asarray(Image.fromarray(arr).resize((arr.shape[1] * factor, arr.shape[0] * factor),
                                                  Image.Resampling.NEAREST))


def save_png(arr: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def save_gif(frames: list[np.ndarray], path: str | Path, duration_ms: int = 120) -> Path:
    """An animated GIF that loops forever; the last frame is held longer. Grey frames go in as they are (a GIF's
    palette holds all 256 greys: exact, and 4x cheaper than quantising them as colour, which cost a loaded app
    seconds a minute)."""
    if not frames:
        raise ValueError("no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = [Image.fromarray(f) if f.ndim == 2 else Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE)
                for f in frames]
    durations = [duration_ms] * (len(frames) - 1) + [duration_ms * 8]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
    return path
