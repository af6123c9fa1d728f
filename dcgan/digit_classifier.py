"""A small digit classifier trained on the bundled digits: the offline judge of generated digits.

Inception-based FID needs weights from the internet; this CNN needs nothing. It is trained once
on the training split of the bundled digits (about a minute on one CPU core), cached as safetensors
once per user (`default_cache_dir`: the platform's cache folder, or DCGAN_CACHE; the app keeps its own
under its checkpoints folder) keyed by image size, and tested on the held-out split (its accuracy is
stored beside the weights). Its class predictions give class coverage of a generator; its
penultimate features give a Fréchet distance against held-out real digits.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .augment import random_translate
from .config import TrainConfig
from .data import load_dataset, to_float

APP_NAME = "dcgan-studio"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the metric caches go unless the app says (metrics.use_cache_dir): $DCGAN_CACHE, else this user's
    cache folder ($XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on Windows)
    /dcgan-studio. Not the working directory: `dcgan eval` in a new folder must not train the judge again."""
    env = os.environ if environ is None else environ
    if env.get("DCGAN_CACHE"):
        return Path(env["DCGAN_CACHE"])
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if sys.platform == "darwin":
        base = home / "Library" / "Caches"
    elif os.name == "nt":
        base = Path(env.get("LOCALAPPDATA") or home / "AppData" / "Local")
    else:  # XDG: a relative path is to be ignored
        xdg = env.get("XDG_CACHE_HOME") or ""
        base = Path(xdg) if os.path.isabs(xdg) else home / ".cache"
    return base / APP_NAME


CACHE_DIR = default_cache_dir()
FEATURE_DIM = 128
NUM_CLASSES = 10
EPOCHS = 30
VERSION = "3"  # bump when the network or its training changes: old cache files are retrained
JUNK_FRACTION = 0.25  # non-digits per training batch (noise, blobs, two digits overlaid), taught as "no digit"

_lock = threading.Lock()
_loaded: dict[tuple[int, str], DigitClassifier] = {}


class DigitNet(nn.Module):
    """Three conv blocks and a 128-d feature layer; any input side >= 28 (global pooling)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(64, FEATURE_DIM), nn.ReLU(True),
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.body(x)
        return feats, self.head(feats)


class DigitClassifier:
    """Eval-mode DigitNet plus input handling: uint8 or [-1, 1] floats, grey or RGB, any size."""

    def __init__(self, net: DigitNet, image_size: int, accuracy: float, device: torch.device):
        self.net = net.to(device).eval()
        self.image_size = image_size
        self.accuracy = accuracy  # on the held-out split of the bundled digits
        self.device = device

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = to_float(images) if images.dtype == torch.uint8 else images.float()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        if x.shape[1] == 3:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              antialias=True, align_corners=False)
        return x.to(self.device)

    @torch.no_grad()
    def _run(self, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
        feats, logits = [], []
        for chunk in images.split(batch):
            f, lg = self.net(self.prepare(chunk))
            feats.append(f.float().cpu())
            logits.append(lg.float().cpu())
        if not feats:
            return torch.empty(0, FEATURE_DIM), torch.empty(0, NUM_CLASSES)
        return torch.cat(feats), torch.cat(logits)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """float [N, 128] penultimate activations (CPU)."""
        return self._run(images)[0]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._run(images)[1]

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images).softmax(dim=1)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """int64 [N] predicted digit 0..9 (CPU)."""
        return self.logits(images).argmax(dim=1)


def digits_config(image_size: int) -> TrainConfig:
    """The bundled digits at this size, with the project's standard held-out split."""
    return TrainConfig(dataset="digits", image_size=image_size, channels=1)


def train_digit_classifier(image_size: int = 28, epochs: int = EPOCHS, seed: int = 0,
                           verbose: bool = False) -> tuple[DigitNet, float]:
    """Train on the training split on the CPU; returns (net, held-out accuracy)."""
    data = load_dataset(digits_config(image_size))
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = DigitNet()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x_all, y_all = to_float(data.train), data.train_labels
    steps_per_epoch = (x_all.shape[0] + 127) // 128
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * steps_per_epoch)
    t0 = time.perf_counter()
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(x_all.shape[0], generator=g)
        for i in range(0, order.shape[0], 128):
            idx = order[i:i + 128]
            x = random_translate(x_all[idx], max(1, image_size // 14), g, pad_mode="constant")
            target = F.one_hot(y_all[idx], NUM_CLASSES).float()
            bad, bad_target = junk(x, y_all[idx], int(len(idx) * JUNK_FRACTION), g)
            x, target = degrade(torch.cat([x, bad]), g), torch.cat([target, bad_target])
            _, logits = net(x)
            loss = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if verbose:
            print(f"digit classifier epoch {epoch + 1}/{epochs}: loss {loss.item():.3f} "
                  f"({time.perf_counter() - t0:.1f}s)")
    net.eval()
    accuracy = held_out_accuracy(net, data.val, data.val_labels, image_size)
    return net, accuracy


def junk(x: torch.Tensor, labels: torch.Tensor, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n images that are not one digit, with a uniform target (outlier exposure, Hendrycks et al. 2019):
    pixel noise, smooth blobs, two different digits overlaid and blank pages. Without them the classifier reads
    noise as some digit with probability ~1, and 'read with p >= 0.9' would not mean legible."""
    size = x.shape[-1]
    noise = torch.rand((n, 1, size, size), generator=g) * 2 - 1
    coarse = torch.randn((n, 1, 7, 7), generator=g)
    blobs = torch.tanh(3 * F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) - 1.5)
    a = torch.randint(0, x.shape[0], (n,), generator=g)
    b = torch.randint(0, x.shape[0], (n,), generator=g)
    overlay = torch.maximum(x[a], x[b])
    blank = torch.rand((n, 1, 1, 1), generator=g).expand(n, 1, size, size) * 2 - 1
    kind = torch.randint(0, 4, (n, 1, 1, 1), generator=g)
    images = torch.where(kind == 0, noise, torch.where(kind == 1, blobs, torch.where(kind == 2, overlay, blank)))
    target = torch.full((n, NUM_CLASSES), 1.0 / NUM_CLASSES)
    same = (kind.flatten() == 2) & (labels[a] == labels[b])  # two of the same digit is still that digit
    target[same] = F.one_hot(labels[a][same], NUM_CLASSES).float()
    return images, target


def degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Grey backgrounds, noise and blur, as in early generator samples: the judge should read the
    shape of a digit, not the cleanliness of the page (else every smudge reads as one class)."""
    n = x.shape[0]
    pick = torch.rand(n, 1, 1, 1, generator=g) < 0.5
    lift = torch.rand(n, 1, 1, 1, generator=g) * 0.6  # background from -1 up to -0.4
    noise = torch.randn(x.shape, generator=g) * torch.rand(n, 1, 1, 1, generator=g) * 0.3
    blurred = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    blur = torch.rand(n, 1, 1, 1, generator=g) < 0.3
    out = torch.where(blur, blurred, x) * (1 - lift / 2) + lift / 2 + noise
    return torch.where(pick, out.clamp(-1, 1), x)


@torch.no_grad()
def held_out_accuracy(net: DigitNet, images: torch.Tensor, labels: torch.Tensor, image_size: int) -> float:
    clf = DigitClassifier(net, image_size, float("nan"), torch.device("cpu"))
    return float((clf.predict(images) == labels).float().mean())


def cache_path(image_size: int, cache_dir: str | Path | None = None) -> Path:
    return Path(cache_dir or CACHE_DIR) / f"digit_classifier_{image_size}px_v{VERSION}.safetensors"


def get_digit_classifier(image_size: int = 28, device: str | torch.device = "cpu",
                         cache_dir: str | Path | None = None, verbose: bool = False) -> DigitClassifier:
    """The cached classifier for this image size, training (and caching) it on first use.

    Thread-safe and memoised per process; a damaged cache file is retrained, never trusted.
    """
    device = torch.device(device)
    key = (image_size, str(device))
    with _lock:
        if key in _loaded and cache_dir is None:
            return _loaded[key]
        path = cache_path(image_size, cache_dir)
        net, accuracy = DigitNet(), None
        if path.exists():
            try:
                tensors = load_file(str(path))
                net.load_state_dict({k: v for k, v in tensors.items() if k != "accuracy"})
                accuracy = float(tensors["accuracy"])
            except Exception:  # unreadable or stale cache: train again below
                net, accuracy = DigitNet(), None
        if accuracy is None:
            net, accuracy = train_digit_classifier(image_size, verbose=verbose)
            path.parent.mkdir(parents=True, exist_ok=True)
            tensors = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
            tensors["accuracy"] = torch.tensor(accuracy)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: the cache is the user's,
            save_file(tensors, str(tmp))  # shared by every folder and program that evaluates at the same time
            os.replace(tmp, path)
        clf = DigitClassifier(net, image_size, accuracy, device)
        if cache_dir is None:
            _loaded[key] = clf
        return clf


__all__ = ["DigitClassifier", "DigitNet", "get_digit_classifier", "train_digit_classifier", "FEATURE_DIM",
           "default_cache_dir", "cache_path"]
