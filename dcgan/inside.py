"""Inside G: the generator's layers and units, for the "Inside G" panel and `dcgan dissect`.

G (dcgan.models.Generator) is a stack of conv-BN-ReLU blocks and a conv-Tanh head. *Layer k* (1-based) is the
output of block k: a [C, H, W] map (4x4 or 7x7 for layer 1, doubling each layer); a *unit* is one of its C
channels. Everything here runs G's Sequential piece by piece on a model in eval mode and never changes it (models
handed to visitors are shared read-only), under no_grad.

- `features`: every layer's maps for a latent, and the image; `layers_picture` draws them left to right.
- `rank_units`: a layer's units ranked by how much they matter: mean activation over ~1,000 samples times the
  mean absolute change of the image when the unit is switched off (measured exactly on a subset of those samples,
  as many as a fixed budget of re-renders allows); also each unit's 9 strongest samples.
- `render`: the image with units switched (`Switch`): GAN Dissection's rule (Bau et al., ICLR 2019)
  x' = x (1 - a) + r a, with a = 1 over a region (the whole map to switch a unit off) and r the unit's mean, zero,
  or (switching it on) its strongest activation seen.
- digits models: `class_shift` (how the digit classifier's reading moves when units are switched) and
  `digit_shares` / `real_digit_shares` (the share of each digit among generated samples vs the training data).
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from .images import grid_array, image_array, upscale
from .models import Generator, num_stages, seeded_latents

RANK_SAMPLES = 1000  # samples behind a unit's mean activation and strongest samples
EFFECT_BUDGET = 4096  # unit x sample re-renders spent measuring the effect of switching units off
EFFECT_MAX_SAMPLES = 64  # ... on at most this many of the samples
STRONGEST = 9  # strongest samples shown for a unit
SHIFT_SAMPLES = 256  # samples read by the digit classifier with and without the switched units
RANK_SEED = 7  # the ranking's latents: the same for every model, so rankings of snapshots compare
DIGITS = 10
REGIONS = {  # where a unit is forced on: (top, bottom, left, right) as fractions of the map
    "everywhere": (0.0, 1.0, 0.0, 1.0), "top half": (0.0, 0.5, 0.0, 1.0), "bottom half": (0.5, 1.0, 0.0, 1.0),
    "left half": (0.0, 1.0, 0.0, 0.5), "right half": (0.0, 1.0, 0.5, 1.0), "centre": (0.25, 0.75, 0.25, 0.75),
}
OFF_VALUES = ("mean", "zero")


@dataclass(frozen=True)
class Switch:
    """One unit switched: off (to its mean or to zero, everywhere) or on (to its strongest value, in a region)."""

    layer: int  # 1-based
    unit: int
    mode: str = "off"  # "off" | "on"
    value: str = "mean"  # off: "mean" | "zero"
    region: str = "everywhere"  # on: a key of REGIONS


@dataclass(frozen=True)
class Ranking:
    """A layer's units measured over `n` samples (seeded latents, RANK_SEED)."""

    layer: int
    mean: torch.Tensor  # [C] mean activation over samples and positions (the "off" value)
    high: torch.Tensor  # [C] strongest activation seen (the "on" value)
    effect: torch.Tensor  # [C] mean |image change| when the unit is set to its mean, over effect_n samples
    score: torch.Tensor  # [C] mean x effect: how much the unit matters to the output
    order: list[int]  # units by score, highest first
    strongest: torch.Tensor  # [C, STRONGEST] sample indices with the unit's largest peak activation
    n: int
    effect_n: int
    seed: int


# ---- running G piece by piece ------------------------------------------------------------------


def num_layers(G: Generator) -> int:
    return num_stages(G.image_size)


def block(G: Generator, layer: int) -> nn.Sequential:
    """Block `layer` (1-based: conv-BN-ReLU); layer num_layers + 1 is the head (conv-Tanh)."""
    if not 1 <= layer <= num_layers(G) + 1:
        raise ValueError(f"layer must be in 1..{num_layers(G)}, got {layer}")
    return G.net[3 * (layer - 1):3 * layer] if layer <= num_layers(G) else G.net[3 * num_layers(G):]


def layer_shapes(G: Generator) -> list[tuple[int, int]]:
    """(units, side) of each layer."""
    side = 7 if G.image_size == 28 else 4
    return [(block(G, k)[0].out_channels, side * 2 ** (k - 1)) for k in range(1, num_layers(G) + 1)]


def _check(G: Generator) -> None:
    if G.training:  # BatchNorm in train mode would mix samples and update running statistics: a shared model
        raise ValueError("Inside G reads a generator in eval mode (models.eval_mode); it never changes its mode")


def latents(G: Generator, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The seeded latents (and cycled classes) used for rankings and digit readings."""
    return seeded_latents(G.nz, n, seed, G.num_classes)


def _device(G: Generator) -> torch.device:
    weight = next(iter(G.parameters()), None)
    return weight.device if weight is not None else torch.device("cpu")


def _input(G: Generator, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    if G.num_classes and labels is None:
        labels = torch.zeros(z.shape[0], dtype=torch.long)
    dev = _device(G)
    return G._input(z.to(dev), None if labels is None else labels.to(dev))


@torch.no_grad()
def features(G: Generator, z: torch.Tensor, labels: torch.Tensor | None = None) -> list[torch.Tensor]:
    """[layer 1, ..., layer L, image]: every layer's maps [N, C, H, W] for the latents, and G's image (CPU)."""
    _check(G)
    x, out = _input(G, z, labels), []
    for k in range(1, num_layers(G) + 2):
        x = block(G, k)(x)
        out.append(x.float().cpu())
    return out


def region_mask(region: str, side: int) -> torch.Tensor:
    """[side, side] 1 inside the region, 0 outside."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {', '.join(REGIONS)}, got {region!r}")
    top, bottom, left, right = REGIONS[region]
    mask = torch.zeros(side, side)
    mask[math.floor(top * side):math.ceil(bottom * side), math.floor(left * side):math.ceil(right * side)] = 1
    return mask


def switch_value(switch: Switch, ranking: Ranking | None) -> float:
    """r of the rule: 0, the unit's mean or its strongest activation (the last two from the layer's ranking)."""
    if switch.mode == "off" and switch.value == "zero":
        return 0.0
    if switch.mode not in ("off", "on") or switch.value not in OFF_VALUES:
        raise ValueError(f"a switch is off (mean or zero) or on, got {switch.mode} ({switch.value})")
    if ranking is None:
        raise ValueError(f"switching layer {switch.layer} unit {switch.unit} {switch.mode} needs the layer's ranking")
    return float((ranking.mean if switch.mode == "off" else ranking.high)[switch.unit])


def apply_switches(h: torch.Tensor, switches: Sequence[Switch], rankings: dict[int, Ranking]) -> torch.Tensor:
    """h [N, C, H, W] of one layer with its switches applied (a new tensor): x (1 - a) + r a per unit."""
    out = h.clone()
    for s in switches:
        if not 0 <= s.unit < h.shape[1]:
            raise ValueError(f"layer {s.layer} has units 0..{h.shape[1] - 1}, got {s.unit}")
        a = (torch.ones(h.shape[-2:]) if s.mode == "off" else region_mask(s.region, h.shape[-1])).to(h)
        r = switch_value(s, rankings.get(s.layer))
        out[:, s.unit] = out[:, s.unit] * (1 - a) + r * a
    return out


@torch.no_grad()
def render(G: Generator, z: torch.Tensor, labels: torch.Tensor | None = None, switches: Sequence[Switch] = (),
           rankings: dict[int, Ranking] | None = None) -> list[torch.Tensor]:
    """features(), with the switched units changed where they are (later layers see the change)."""
    _check(G)
    rankings = rankings or {}
    by_layer: dict[int, list[Switch]] = {}
    for s in switches:
        by_layer.setdefault(s.layer, []).append(s)
    x, out = _input(G, z, labels), []
    for k in range(1, num_layers(G) + 2):
        x = block(G, k)(x)
        if k in by_layer:
            x = apply_switches(x, by_layer[k], rankings)
        out.append(x.float().cpu())
    return out


@torch.no_grad()
def rest(G: Generator, layer: int, h: torch.Tensor) -> torch.Tensor:
    """The image G makes from layer `layer`'s maps h (the blocks after it and the head)."""
    x = h.to(_device(G))
    for k in range(layer + 1, num_layers(G) + 2):
        x = block(G, k)(x)
    return x.float().cpu()


# ---- ranking units -------------------------------------------------------------------------------


@torch.no_grad()
def rank_units(G: Generator, layer: int, n: int = RANK_SAMPLES, seed: int = RANK_SEED,
               budget: int = EFFECT_BUDGET, batch: int = 250) -> Ranking:
    """A layer's units by mean activation x effect of switching them off (to their mean). The effect is the mean
    absolute change of the image, measured exactly on the first effect_n samples, effect_n = budget / units (8 to
    EFFECT_MAX_SAMPLES): switching 512 units off one by one on 1,000 samples would be 512,000 renders."""
    _check(G)
    z, labels = latents(G, n, seed)
    peaks, sums, kept = [], None, None
    units = layer_shapes(G)[layer - 1][0]
    effect_n = max(8, min(EFFECT_MAX_SAMPLES, budget // units, n))
    for i in range(0, n, batch):
        h = features(G, z[i:i + batch], None if labels is None else labels[i:i + batch])[layer - 1]
        sums = h.sum(dim=(0, 2, 3)) if sums is None else sums + h.sum(dim=(0, 2, 3))
        peaks.append(h.amax(dim=(2, 3)))
        if kept is None:
            kept = h[:effect_n]
    peak = torch.cat(peaks)  # [n, C]
    side = kept.shape[-1]
    mean = sums / (n * side * side)
    base = rest(G, layer, kept)
    effect = torch.zeros(units)
    chunk = max(1, 4_000_000 // max(kept[0].numel() * effect_n, 1))  # units per batch: ~16 MB of maps
    for u0 in range(0, units, chunk):
        us = list(range(u0, min(u0 + chunk, units)))
        h = kept.repeat(len(us), 1, 1, 1)  # [len(us) * m, C, H, W]
        for j, u in enumerate(us):
            h[j * effect_n:(j + 1) * effect_n, u] = mean[u]
        changed = rest(G, layer, h).view(len(us), effect_n, *base.shape[1:])
        effect[u0:u0 + len(us)] = (changed - base).abs().mean(dim=(1, 2, 3, 4))
    score = mean.clamp(min=0) * effect
    order = torch.argsort(score, descending=True).tolist()
    strongest = peak.topk(min(STRONGEST, n), dim=0).indices.T.contiguous()  # [C, 9]
    return Ranking(layer, mean, peak.amax(dim=0), effect, score, order, strongest, n, effect_n, seed)


# ---- pictures ------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def maps_grid(h: torch.Tensor, units: Sequence[int] | None = None) -> np.ndarray:
    """One sample's maps [C, H, W] as a uint8 grid (images.grid_array: torchvision's make_grid), on one scale
    for the whole layer (0 to the layer's largest value): bright units are strong units."""
    h = h if units is None else h[list(units)]
    top = max(float(h.max()), 1e-6)
    return grid_array(h[:, None] / top * 2 - 1, padding=1)


def layers_picture(maps: list[torch.Tensor], height: int = 220, marked: dict[int, Sequence[int]] | None = None,
                   titles: Sequence[str] | None = None) -> np.ndarray:
    """Every layer of one sample left to right ([C, H, W] each, the image last), each grid scaled to `height`
    pixels, titled with its size; `marked` outlines units (layer -> units) in red."""
    panels, gap, head = [], 16, 22
    marked = marked or {}
    for k, h in enumerate(maps):
        last = k == len(maps) - 1
        arr = image_array(h) if last else maps_grid(h)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        scale = height / arr.shape[0]
        pic = Image.fromarray(arr).resize((max(1, round(arr.shape[1] * scale)), height), Image.Resampling.NEAREST)
        if not last and marked.get(k + 1):
            _outline(pic, h.shape[0], h.shape[-1], marked[k + 1], scale)
        panels.append((pic, titles[k] if titles else
                       (f"image {h.shape[-1]}x{h.shape[-1]}" if last else
                        f"layer {k + 1}: {h.shape[0]} x {h.shape[-1]}x{h.shape[-1]}")))
    width = sum(p.width for p, _ in panels) + gap * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height + head), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for pic, title in panels:
        canvas.paste(pic, (x, head))
        draw.text((x, 3), title, fill="black", font=_font(13))
        x += pic.width + gap
    return np.asarray(canvas)


def _outline(pic: Image.Image, units: int, side: int, chosen: Sequence[int], scale: float) -> None:
    """Red boxes around the chosen units' cells in a maps_grid picture (make_grid's layout, padding 1)."""
    nrow = max(1, int(math.ceil(math.sqrt(units))))
    draw = ImageDraw.Draw(pic)
    for u in chosen:
        row, col = divmod(int(u), nrow)
        x0, y0 = (col * (side + 1) + 1) * scale, (row * (side + 1) + 1) * scale
        draw.rectangle([x0 - 1, y0 - 1, x0 + side * scale, y0 + side * scale], outline=(230, 30, 30), width=2)


def overlay(image: torch.Tensor, activation: torch.Tensor, side: int = 96) -> np.ndarray:
    """An image [C, H, W] in [-1, 1] in grey with a unit's activation map [h, w] over it in red (upsampled)."""
    grey = image.float().mean(0, keepdim=True).add(1).div(2)
    act = nn.functional.interpolate(activation[None, None].float(), size=image.shape[-2:], mode="bilinear",
                                    align_corners=False)[0]
    act = act.clamp(min=0) / max(float(act.max()), 1e-6)
    rgb = torch.cat([grey * (1 - act) + act, grey * (1 - act), grey * (1 - act)]) * 2 - 1
    return upscale(image_array(rgb), side)


def strongest_samples(G: Generator, ranking: Ranking, unit: int) -> list[np.ndarray]:
    """The unit's STRONGEST samples (of the ranking's latents), each with the unit's map over it."""
    z, labels = latents(G, ranking.n, ranking.seed)
    idx = ranking.strongest[unit]
    maps = features(G, z[idx], None if labels is None else labels[idx])
    return [overlay(maps[-1][i], maps[ranking.layer - 1][i, unit]) for i in range(idx.shape[0])]


def unit_gallery(h: torch.Tensor, ranking: Ranking, k: int, side: int = 64) -> list[tuple[np.ndarray, str]]:
    """The k highest-ranked units' maps of one sample [C, H, W] (captioned), on the layer's scale."""
    top = max(float(h.max()), 1e-6)
    out = []
    for u in ranking.order[:k]:
        out.append((upscale(image_array(h[u:u + 1] / top * 2 - 1), side), f"unit {u}"))
    return out


def dissect_picture(G: Generator, layer: int, z: torch.Tensor, labels: torch.Tensor | None = None,
                    units: int = 4, ranking: Ranking | None = None) -> np.ndarray:
    """`dcgan dissect`'s picture: the layers of one sample, then for the layer's `units` highest-ranked units a
    row each: the unit's strongest samples with its map over them, the sample, the sample with the unit switched
    off, and with it switched on in the centre."""
    ranking = ranking or rank_units(G, layer)
    top = ranking.order[:units]
    maps = features(G, z, labels)
    parts = [layers_picture([m[0] for m in maps], marked={layer: top})]
    rows = []
    for u in top:
        strong = strongest_samples(G, ranking, u)
        off = render(G, z, labels, [Switch(layer, u)], {layer: ranking})[-1][0]
        on = render(G, z, labels, [Switch(layer, u, "on", region="centre")], {layer: ranking})[-1][0]
        cells = strong + [upscale(image_array(x), 96) for x in (maps[-1][0], off, on)]
        cells = [np.stack([c] * 3, -1) if c.ndim == 2 else c for c in cells]
        row = np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0)), constant_values=255) for c in cells], axis=1)
        label = Image.new("RGB", (190, row.shape[0]), "white")
        ImageDraw.Draw(label).text((4, row.shape[0] // 2 - 16), f"layer {layer} unit {u}\nscore {ranking.score[u]:.3g}"
                                   f"\nstrongest 9 | sample |\noff | on (centre)", fill="black", font=_font(13))
        rows.append(np.concatenate([np.asarray(label), row], axis=1))
    width = max(p.shape[1] for p in parts + rows)
    pad = [np.pad(p, ((0, 8), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in parts + rows]
    return np.concatenate(pad, axis=0)


# ---- digits: what the classifier reads ----------------------------------------------------------


def reads_digits(dataset: str) -> bool:
    """Models the project's digit classifier can read: digits and MNIST (one digit), stacked digits (three)."""
    from .metrics import DIGIT_SETS, STACKED_SETS

    return dataset in DIGIT_SETS + STACKED_SETS


def digit_probabilities(images: torch.Tensor) -> torch.Tensor:
    """[N, 10] class probabilities of images [N, C, H, W] in [-1, 1]; a 3-channel image of stacked digits is read
    channel by channel ([3N, 10], the channels of one image together)."""
    from .digit_classifier import get_digit_classifier

    clf = get_digit_classifier(images.shape[-1])
    n, c, h, w = images.shape
    return clf.probabilities(images.reshape(n * c, 1, h, w) if c == 3 else images)


def digit_shares(predicted: torch.Tensor) -> list[float]:
    """Share of each digit 0..9 among predictions (any shape): the bars of the histogram."""
    counts = torch.bincount(predicted.long().flatten(), minlength=DIGITS)[:DIGITS].double()
    return (counts / max(float(counts.sum()), 1.0)).tolist()


def real_digit_shares(labels: torch.Tensor, stacked: bool = False) -> list[float]:
    """The training data's share of each digit from its labels (stacked: mode ids 100r + 10g + b, every digit)."""
    if stacked:
        labels = torch.stack([labels // 100, labels // 10 % 10, labels % 10], dim=1)
    return digit_shares(labels)


@dataclass(frozen=True)
class DigitReading:
    """What the classifier reads in n samples of G (seeded): the histogram and which sample reads as what."""

    shares: list[float]
    predicted: torch.Tensor  # [n] (stacked: [3n]) digit per sample (per channel)
    n: int
    seed: int


@torch.no_grad()
def read_samples(G: Generator, n: int = SHIFT_SAMPLES, seed: int = 0, switches: Sequence[Switch] = (),
                 rankings: dict[int, Ranking] | None = None) -> tuple[DigitReading, torch.Tensor]:
    """(reading, probabilities [N, 10]) of n seeded samples, with units switched if given."""
    z, labels = latents(G, n, seed)
    images = render(G, z, labels, switches, rankings)[-1]
    probs = digit_probabilities(images)
    predicted = probs.argmax(dim=1)
    return DigitReading(digit_shares(predicted), predicted, n, seed), probs


@dataclass(frozen=True)
class ClassShift:
    before: list[float]  # mean probability of each digit over the samples
    after: list[float]
    moved: torch.Tensor  # [10, 10] samples read as digit i before and j after
    text: str


def class_shift(G: Generator, switches: Sequence[Switch], rankings: dict[int, Ranking],
                n: int = SHIFT_SAMPLES, seed: int = 0) -> ClassShift:
    """How the digit classifier's reading of n samples moves when the units are switched, in words: the largest
    change from one digit to another, as a share of the samples read as the first."""
    read0, p0 = read_samples(G, n, seed)
    read1, p1 = read_samples(G, n, seed, switches, rankings)
    moved = torch.zeros(DIGITS, DIGITS, dtype=torch.long)
    moved.index_put_((read0.predicted, read1.predicted), torch.ones_like(read0.predicted), accumulate=True)
    what = describe(switches)
    changed = moved.clone()
    changed.fill_diagonal_(0)
    total = int(changed.sum())
    if total == 0:
        text = f"Switching {what} changes no sample's digit (of {n})."
    else:
        i, j = divmod(int(changed.argmax()), DIGITS)
        share = float(changed[i, j]) / max(int(moved[i].sum()), 1)
        text = (f"Switching {what} turns {i}s into {j}s in {share:.0%} of the samples read as {i} "
                f"({int(changed[i, j])} of {int(moved[i].sum())}); {total} of {p0.shape[0]} "
                f"{'digits' if p0.shape[0] != n else 'samples'} change digit in all.")
    return ClassShift(p0.mean(0).tolist(), p1.mean(0).tolist(), moved, text)


def describe(switches: Sequence[Switch]) -> str:
    parts = []
    for s in switches:
        how = f"off ({s.value})" if s.mode == "off" else f"on ({s.region})"
        parts.append(f"layer {s.layer} unit {s.unit} {how}")
    return ", ".join(parts) or "nothing"


# ---- what every page shares (one of each per Studio: Studio.inside) ------------------------------

HISTORY_BYTES = 96 << 20  # the live run's generator snapshots kept for scrubbing back, at most this much
HISTORY_MAX = 40  # ... and at most this many (the first kept, the rest thinned evenly)
READ_EVERY_S = 10.0  # the live histogram is read again at most this often (a new snapshot comes every few seconds)


def family(source: str, key: tuple) -> tuple:
    """What a value of a model is shared across: a live run's snapshots (one family per run), else the model."""
    return ("live", *key[1:2]) if source == "live" and key else tuple(key)


class Latest:
    """The newest value per family (a model, or a live run's snapshots), with the version it was computed for.
    `get` computes when there is none, when `fresh` says the stored one is too old, or when asked for this version;
    computations of one family at the same time wait for one another (a crowd costs one)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._values: OrderedDict[tuple, tuple[Any, float, Any]] = OrderedDict()  # family -> (version, when, value)
        self._gates: dict[tuple, threading.Lock] = {}
        self.computed = 0  # how many computations ran (tests read it)

    def peek(self, fam: tuple) -> tuple[Any, Any] | None:
        """(version, value) kept for the family, or None; computes nothing."""
        with self._lock:
            hit = self._values.get(fam)
            return None if hit is None else (hit[0], hit[2])

    def get(self, fam: tuple, version: Any, compute: Callable[[], Any],
            fresh: Callable[[Any, float], bool] = lambda version, age: True) -> tuple[Any, Any]:
        """(version, value): the kept value while fresh(its version, its age in s), else compute(version)."""
        with self._lock:
            gate = self._gates.setdefault(fam, threading.Lock())
        with gate:
            with self._lock:
                hit = self._values.get(fam)
                if hit is not None and (hit[0] == version or fresh(hit[0], time.monotonic() - hit[1])):
                    self._values.move_to_end(fam)
                    return hit[0], hit[2]
            value = compute()
            with self._lock:
                self.computed += 1
                self._values[fam] = (version, time.monotonic(), value)
                self._values.move_to_end(fam)
                while len(self._values) > self.size:
                    old, _ = self._values.popitem(last=False)
                    self._gates.pop(old, None)
            return version, value


class History:
    """The live run's generator snapshots (a Trainer subscriber: the state each Pictures report carries anyway,
    kept by reference, nothing computed), so the panel can scrub back to when structure appeared. A few runs are
    kept apart by run folder; each keeps at most HISTORY_MAX snapshots and HISTORY_BYTES."""

    def __init__(self, runs: int = 2) -> None:
        self.runs = runs
        self._lock = threading.Lock()
        self._folders: dict[str, str] = {}  # run id -> run folder
        self._configs: dict[str, Any] = {}  # run folder -> config
        self._states: OrderedDict[str, list[tuple[int, dict]]] = OrderedDict()  # run folder -> [(iteration, state)]

    def __call__(self, report: Any) -> None:
        from . import reports as rp

        with self._lock:
            if isinstance(report, rp.Started):
                self._folders[report.run_id] = report.run_dir
                self._configs[report.run_dir] = report.cfg
                self._states[report.run_dir] = []
                self._states.move_to_end(report.run_dir)
                while len(self._states) > self.runs:
                    gone, _ = self._states.popitem(last=False)
                    self._configs.pop(gone, None)
                report = report.pictures
            if not isinstance(report, rp.Pictures) or report.run_id not in self._folders:
                return
            states = self._states.get(self._folders[report.run_id])
            if states is None:
                return
            if states and states[-1][0] == report.iteration:
                states[-1] = (report.iteration, report.g_state)
                return
            states.append((report.iteration, report.g_state))
            size = sum(t.numel() * t.element_size() for t in report.g_state.values())
            limit = max(4, min(HISTORY_MAX, HISTORY_BYTES // max(size, 1)))
            if len(states) > limit:  # the first and the newest stay, every other one between goes
                states[:] = states[:1] + states[2:-1:2] + states[-1:]

    def iterations(self, run_dir: str) -> list[int]:
        with self._lock:
            return [it for it, _ in self._states.get(run_dir, [])]

    def generator(self, run_dir: str, iteration: int) -> Generator | None:
        """A CPU copy in eval mode of the run's snapshot at that iteration (None when it is not kept)."""
        with self._lock:
            cfg = self._configs.get(run_dir)
            state = next((s for it, s in self._states.get(run_dir, []) if it == iteration), None)
        return None if cfg is None or state is None else Generator.from_state(cfg, state)


class Inside:
    """What every Inside G panel shares: rankings per model and layer (a live run's newest ranking stands for its
    later snapshots until someone asks to rank again), the live digit histogram (read at most every READ_EVERY_S),
    generators of past snapshots, and the snapshot history (subscribed by the Studio)."""

    def __init__(self) -> None:
        self.rankings = Latest(32)
        self.readings = Latest(8)
        self.history = History()
        self._lock = threading.Lock()
        self._past: OrderedDict[tuple, Generator] = OrderedDict()

    def ranking(self, fam: tuple, version: Any, G: Generator, layer: int, again: bool = False) -> tuple[Any, Ranking]:
        """(version it was computed for, ranking): the family's kept one, unless `again` (then this version's)."""
        return self.rankings.get((*fam, layer), version, lambda: rank_units(G, layer), lambda v, age: not again)

    def reading(self, fam: tuple, version: Any, G: Generator, n: int = SHIFT_SAMPLES) -> tuple[Any, DigitReading]:
        """(version, histogram of n samples): a live run's is read again for a newer snapshot every READ_EVERY_S."""
        return self.readings.get((*fam, n), version, lambda: read_samples(G, n)[0],
                                 lambda v, age: age < READ_EVERY_S)

    def past(self, run_dir: str, iteration: int) -> Generator | None:
        key = (run_dir, iteration)
        with self._lock:
            if key in self._past:
                self._past.move_to_end(key)
                return self._past[key]
        G = self.history.generator(run_dir, iteration)
        if G is not None:
            with self._lock:
                self._past[key] = G
                while len(self._past) > 4:
                    self._past.popitem(last=False)
        return G


__all__ = ["Inside", "History", "Latest", "family",
           "Switch", "Ranking", "features", "render", "rest", "rank_units", "apply_switches", "layers_picture",
           "maps_grid", "overlay", "strongest_samples", "unit_gallery", "dissect_picture", "reads_digits",
           "digit_probabilities", "digit_shares", "real_digit_shares", "read_samples", "class_shift", "DigitReading",
           "ClassShift", "layer_shapes", "num_layers", "REGIONS", "OFF_VALUES", "region_mask", "latents", "describe"]
