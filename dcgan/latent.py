"""Tools to look inside a trained generator's latent space (pure torch; the Explore tab calls these).

* sampling with truncation psi, principal latent directions (GANSpace-style) and sliders along them,
* spherical / linear interpolation, vector arithmetic on averaged latents (Radford et al. 2015),
* class control of conditional generators with soft (interpolated) one-hot inputs,
* inversion of an image into z by gradient descent with restarts,
* a memorisation check (nearest training images) and a mode-collapse meter (pairwise distances).

Every image goes through G in eval mode (dcgan.models.sample), so one image never depends on
the others of its batch, and the same z always gives the same picture.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import TrainConfig
from .data import ImageData, load_dataset, to_float
from .models import Generator, eval_mode, sample, seeded_latents

# ---- latents and classes ----------------------------------------------------------------------


def sample_latents(nz: int, n: int, seed: int = 0, psi: float = 1.0) -> torch.Tensor:
    """n latents z ~ N(0, I) scaled by psi (the truncation trick without a mapping network: the
    prior's mean is 0, so pulling z towards it trades diversity for typical, cleaner images)."""
    return seeded_latents(nz, n, seed)[0] * float(psi)


def class_inputs(G: Generator, labels: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """One-hot rows for a conditional G (float [n, num_classes]); None for an unconditional one."""
    if not G.num_classes:
        return None
    if labels is None:
        labels = torch.zeros(n, dtype=torch.long)
    return F.one_hot(labels.long(), G.num_classes).float()


# ---- principal directions ------------------------------------------------------------------------


@dataclass
class Directions:
    """Unit directions in z-space, one per row, with the share of feature variance each explains."""

    vectors: torch.Tensor  # float [K, nz], unit norm
    explained: list[float]  # fraction of the feature-space variance of component k (PCA) or [] (raw)
    kind: str  # "principal" or "raw"


@torch.no_grad()
def principal_directions(G: Generator, k: int = 6, n_samples: int = 1024, seed: int = 0) -> Directions:
    """GANSpace (Härkönen et al. 2020) for a DCGAN: PCA of G's intermediate features over random z,
    then a least-squares map from the PCA coordinates back to z, so that moving z along direction j
    moves the features mostly along their j-th principal axis. Unlike PCA of z itself (meaningless:
    z is isotropic), this ranks directions by how much they change what G draws. The features are
    those of G's first two upsampling blocks: non-linear in z, but still coarse enough that their
    variance is about layout and shape rather than pixel noise."""
    z = sample_latents(G.nz, n_samples, seed)
    gen = torch.Generator().manual_seed(int(seed) + 1)
    labels = torch.randint(0, G.num_classes, (n_samples,), generator=gen) if G.num_classes else None
    with eval_mode(G):
        feats = G.hidden(z, labels, blocks=2).flatten(1)
    feats = feats - feats.mean(0, keepdim=True)
    k = max(1, min(k, G.nz, n_samples - 1))
    u, s = top_singular(feats, k, seed)
    coords = (u * s).double()  # [N, k] PCA coordinates of each sample
    to_z = torch.linalg.lstsq(coords, z.double()).solution  # [k, nz]: coordinate -> z offset
    vectors = to_z / to_z.norm(dim=1, keepdim=True).clamp_min(1e-12)
    total = float(feats.square().sum(dtype=torch.float64))  # accumulated in float64, without a float64 copy
    explained = [float(s[j].double() ** 2 / total) if total > 0 else 0.0 for j in range(k)]
    return Directions(vectors.float(), explained, "principal")


def top_singular(x: torch.Tensor, k: int, seed: int = 0, iters: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """x's k largest singular values and their left singular vectors [N, k], by randomised subspace iteration
    (Halko, Martinsson & Tropp 2011): a few N x D products instead of the N x N Gram matrix and its whole
    eigendecomposition (a refresh of the live run's sliders: 0.81 -> 0.27 s of CPU, the same directions).
    torch.svd_lowrank does the same from the process's global random generator; a seeded one draws the same
    directions every time."""
    gen = torch.Generator().manual_seed(int(seed))
    q = torch.linalg.qr(x @ torch.randn(x.shape[1], min(k + 10, *x.shape), generator=gen, dtype=x.dtype)).Q
    for _ in range(iters):
        q = torch.linalg.qr(x @ torch.linalg.qr(x.T @ q).Q).Q
    u, s, _ = torch.linalg.svd(q.T @ x, full_matrices=False)
    return (q @ u)[:, :k], s[:k]


def raw_directions(nz: int, k: int = 6, first: int = 0) -> Directions:
    """The coordinate axes z_first .. z_first+k-1, for comparison with the principal ones."""
    idx = [(first + j) % nz for j in range(k)]
    return Directions(torch.eye(nz)[idx], [], "raw")


def move(z: torch.Tensor, directions: Directions, amounts: list[float] | torch.Tensor) -> torch.Tensor:
    """z + sum_j amounts[j] * direction_j; amounts are in standard deviations of the prior
    (z ~ N(0, I), so its projection on any unit vector has std 1)."""
    a = torch.as_tensor(amounts, dtype=z.dtype)[: directions.vectors.shape[0]]
    return z + a @ directions.vectors[: a.shape[0]].to(z.dtype)


# ---- interpolation and arithmetic --------------------------------------------------------------


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation (Shoemake; White 2016 for GANs): keeps |z| typical of the Gaussian
    prior along the path, where lerp's midpoints have a smaller norm and look washed out."""
    a_n, b_n = a / a.norm().clamp_min(1e-12), b / b.norm().clamp_min(1e-12)
    omega = torch.arccos((a_n * b_n).sum().clamp(-1.0, 1.0))
    t = t.view(-1, 1)
    if float(omega) < 1e-6:  # (anti)parallel: slerp degenerates to lerp
        return (1 - t) * a + t * b
    so = torch.sin(omega)
    return torch.sin((1 - t) * omega) / so * a + torch.sin(t * omega) / so * b


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int = 8, mode: str = "slerp") -> torch.Tensor:
    """[steps, nz] latents from a to b inclusive; the end rows are exactly a and b."""
    if steps < 2:
        raise ValueError("an interpolation needs at least 2 frames")
    if mode not in ("slerp", "lerp"):
        raise ValueError(f"mode must be slerp or lerp, got {mode!r}")
    t = torch.linspace(0, 1, steps)
    path = slerp(a, b, t) if mode == "slerp" else (1 - t.view(-1, 1)) * a + t.view(-1, 1) * b
    path[0], path[-1] = a, b
    return path


def parse_indices(text: str, n: int) -> list[int]:
    """'3, 7 12' -> [3, 7, 12], each checked to be a grid index in 0..n-1."""
    parts = [p for p in text.replace(",", " ").split() if p]
    if not parts:
        raise ValueError("give at least one sample number")
    out = []
    for p in parts:
        if not p.lstrip("-").isdigit():
            raise ValueError(f"{p!r} is not a sample number")
        i = int(p)
        if not 0 <= i < n:
            raise ValueError(f"sample {i} does not exist: the grid has samples 0..{n - 1}")
        out.append(i)
    return out


@dataclass
class Arithmetic:
    terms: torch.Tensor  # [3, nz]: the averaged latents of A, B and C
    result: torch.Tensor  # [nz]: mean(A) - mean(B) + mean(C)
    term_classes: torch.Tensor | None = None  # [3, num_classes]: each term's mean class vector (conditional G)
    result_class: torch.Tensor | None = None  # [num_classes]: C's, the class the result is drawn as


def vector_arithmetic(latents: torch.Tensor, a: list[int], b: list[int], c: list[int],
                      classes: torch.Tensor | None = None) -> Arithmetic:
    """A - B + C on the *means* of a few latents per concept: averaging (DCGAN paper, Sec. 6.3)
    cancels what the single samples do not share, so the difference isolates the concept.
    classes ([N, num_classes] one-hot or soft rows, conditional G): each term is drawn with the mean class
    of its own samples (A's zeros as zeros), and the result with C's, since z carries style and the label
    content: the arithmetic moves C's style, never its class."""
    terms = torch.stack([latents[idx].mean(0) for idx in (a, b, c)])
    term_classes = None if classes is None else torch.stack([classes[idx].float().mean(0) for idx in (a, b, c)])
    return Arithmetic(terms, terms[0] - terms[1] + terms[2], term_classes,
                      None if term_classes is None else term_classes[2])


# ---- inversion --------------------------------------------------------------------------------------

INVERT_RESTARTS, INVERT_STEPS = 4, 250  # the Inversion tool's defaults (its verdict's calibration is made ahead)
POLARITY_CLEAR = 0.5  # a background this far from mid-grey (on [-1, 1]) is clearly dark or light


@dataclass
class Inversion:
    z: torch.Tensor  # [nz] best latent
    label: int | None  # best class for a conditional G
    image: torch.Tensor  # [C, H, W] G(z) in [-1, 1]
    mse: float  # per-pixel mean squared error on the [-1, 1] scale
    psnr: float  # dB, with the [-1, 1] range (peak-to-peak 2)
    losses: list[float]  # best restart's loss per step


def invert(G: Generator, target: torch.Tensor, restarts: int = 4, steps: int = 200, lr: float = 0.05,
           prior_weight: float = 1e-3, seed: int = 0, label: int | None = None) -> Inversion:
    """Find z with G(z) close to target ([C, H, W] in [-1, 1]) by Adam on z, from several random
    starts at once (the objective is non-convex; restarts avoid bad basins). A small pull of z
    towards the prior keeps it where G was trained, so the sliders still behave on it.
    A conditional G is tried with every class (or only `label`), and the best pair is kept."""
    return invert_many(G, target[None] if target.dim() == 3 else target, restarts, steps, lr, prior_weight, seed,
                       None if label is None else [label])[0]


def invert_many(G: Generator, targets: torch.Tensor, restarts: int = 4, steps: int = 200, lr: float = 0.05,
                prior_weight: float = 1e-3, seed: int = 0,
                labels: list[int | None] | None = None) -> list[Inversion]:
    """`invert` for each of targets [M, C, H, W], all in one batch: the same starts and result per target as
    one call each (every row of z is optimised on its own: G is in eval mode and Adam is per element), but
    one forward pass for all of them, which is several times faster on a CPU than M small passes (the
    verdict's calibration inverts 8 held-out images this way). labels[m]: the one class to try for target m
    (None: every class of a conditional G)."""
    shape = (G.channels, G.image_size, G.image_size)
    if targets.dim() != 4 or tuple(targets.shape[1:]) != shape:
        raise ValueError(f"target must be [{', '.join(map(str, shape))}], got {list(targets.shape[-3:])}")
    restarts, m_count = max(1, int(restarts)), targets.shape[0]
    wanted = labels if labels is not None else [None] * m_count
    if len(wanted) != m_count:
        raise ValueError(f"{len(wanted)} labels for {m_count} targets")
    rows: list[tuple[int, int | None]] = []  # (target, class) of every row of z
    starts = []
    for m, label in enumerate(wanted):
        classes = ([label] if label is not None else list(range(G.num_classes))) if G.num_classes else [None]
        rows += [(m, c) for c in classes for _ in range(restarts)]
        starts.append(sample_latents(G.nz, len(classes) * restarts, seed))
    z = torch.cat(starts).requires_grad_(True)
    row_target = torch.tensor([m for m, _ in rows])
    row_label = torch.tensor([c for _, c in rows]) if G.num_classes else None
    class_vec = class_inputs(G, row_label, len(rows))
    opt = torch.optim.Adam([z], lr=lr)
    goal = targets.float()[row_target]
    history = []
    with eval_mode(G), torch.enable_grad():
        for _ in range(steps):
            out = G(z, class_vec).float()
            mse = (out - goal).pow(2).flatten(1).mean(1)
            loss = mse + prior_weight * z.pow(2).mean(1)
            (grad,) = torch.autograd.grad(loss.sum(), [z])  # only z; G's weights get no .grad
            z.grad = grad
            opt.step()
            history.append(loss.detach())
    z = z.detach()
    images = sample(G, z=z, labels=class_vec)
    mse = (images - goal).pow(2).flatten(1).mean(1)
    found = []
    for m in range(m_count):
        mine = (row_target == m).nonzero().flatten()
        best = int(mine[mse[mine].argmin()])
        err = float(mse[best])
        found.append(Inversion(
            z=z[best].clone(), label=None if row_label is None else int(row_label[best]), image=images[best],
            mse=err, psnr=10 * math.log10(4.0 / max(err, 1e-12)),
            losses=[float(h[best]) for h in history],
        ))
    return found


def target_from_array(arr: np.ndarray, G: Generator) -> torch.Tensor:
    """A picture from the browser (uint8 HxW, HxWx3 or HxWx4) -> [C, H, W] in [-1, 1] at G's size, matched to
    G's polarity and framing (see prepare_target)."""
    return prepare_target(arr, G).image


@dataclass(frozen=True)
class Target:
    image: torch.Tensor  # [C, H, W] in [-1, 1] at G's size: what G is asked to draw
    flipped: bool  # inverted to G's polarity (a black-on-white drawing for a light-on-dark model)
    framed: bool  # the shape rescaled and centred as G's samples are (shape_extent)


def prepare_target(arr: np.ndarray, G: Generator) -> Target:
    """A picture as G would draw it. When the picture and G's samples both have a plain background (clearly dark
    or light: background_level), the picture is
    * inverted if the two backgrounds are on opposite sides of mid-grey (a black-on-white drawing for an MNIST-like
      model). The background is the most common brightness, not the border's mean: a box drawn along the edge
      made the border dark and that drawing stayed black on white (issue 29, item 15);
    * framed like G's samples: its shape (bounding box of the strokes) scaled to G's typical extent
      (shape_extent) and centred by its centre of mass, as MNIST frames its digits. A 7 drawn across the whole
      box, thinner and larger than any training 7, was closer in pixels to what G draws as a 4 (issue 29,
      item 7); framed, it comes back as a 7.
    Any other picture (a photo; a model without a plain background) is only resized."""
    from PIL import Image

    from .data import pil_to_tensor

    if arr is None or np.asarray(arr).size == 0:
        raise ValueError("no image: upload one or draw in the box")
    picture = Image.fromarray(np.asarray(arr).astype(np.uint8))
    # the picture at (up to) 256 px: its background and shape are read before shrinking blurs the strokes
    full = to_float(pil_to_tensor(picture, max(G.image_size, min(256, *picture.size)), G.channels))
    samples = sample(G, 16, seed=123)  # every class of a conditional G
    mine, model = background_level(full[None]), background_level(samples)
    if min(abs(mine), abs(model)) < POLARITY_CLEAR:
        return Target(to_float(pil_to_tensor(picture, G.image_size, G.channels)), False, False)
    flip = (mine > 0) != (model > 0)
    light = model > 0  # G draws dark strokes on a light page
    framed = frame_shape(ink(-full if flip else full, light), G.image_size, shape_extent(ink(samples, light)))
    if framed is None:  # a blank page: nothing to frame
        return Target(F.interpolate((-full if flip else full)[None], size=(G.image_size, G.image_size),
                                    mode="bilinear", antialias=True, align_corners=False)[0], flip, False)
    return Target(framed * (-2) + 1 if light else framed * 2 - 1, flip, True)


def ink(images: torch.Tensor, light: bool) -> torch.Tensor:
    """How much stroke each pixel holds, 0 (page) to 1, for images in [-1, 1] on a dark (or light) page."""
    return ((1 - images) / 2 if light else (images + 1) / 2).clamp(0, 1)


INK = 0.5  # a pixel with at least this much ink is part of the shape (its bounding box)


def shape_extent(inks: torch.Tensor) -> float:
    """The typical size of G's shapes: the median over samples [N, C, H, W] (ink, 0..1) of the longer side of
    the strokes' bounding box, as a share of the image side (MNIST's digits: 20 of 28 pixels, 0.71)."""
    sides = []
    for one in inks.mean(1):
        ys, xs = (one >= INK).nonzero(as_tuple=True)
        if ys.numel():
            sides.append(max(int(ys.max() - ys.min()) + 1, int(xs.max() - xs.min()) + 1) / one.shape[-1])
    return float(np.median(sides)) if sides else 1.0


def frame_shape(picture: torch.Tensor, size: int, extent: float) -> torch.Tensor | None:
    """picture [C, h, w] (ink, 0..1) cropped to its strokes' bounding box, scaled so its longer side is `extent`
    of `size`, and placed on a blank [C, size, size] page with its centre of mass in the middle; None when the
    picture has no strokes."""
    ys, xs = (picture.mean(0) >= INK).nonzero(as_tuple=True)
    if ys.numel() == 0:
        return None
    crop = picture[:, int(ys.min()):int(ys.max()) + 1, int(xs.min()):int(xs.max()) + 1]
    scale = max(1.0, extent * size) / max(crop.shape[1:])
    h, w = (max(1, min(size, round(n * scale))) for n in crop.shape[1:])
    small = F.interpolate(crop[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    mass = small.mean(0)
    total = float(mass.sum()) or 1.0
    cy, cx = float((mass.sum(1) * torch.arange(h)).sum()) / total, float((mass.sum(0) * torch.arange(w)).sum()) / total
    top = min(max(round((size - 1) / 2 - cy), 0), size - h)
    left = min(max(round((size - 1) / 2 - cx), 0), size - w)
    page = torch.zeros(picture.shape[0], size, size)
    page[:, top:top + h, left:left + w] = small.clamp(0, 1)
    return page


def background_level(images: torch.Tensor, bins: int = 16) -> float:
    """The background brightness of a batch [N, C, H, W] ([-1, 1] scale): the centre of the fullest of `bins`
    equal brightness bins. A digit or a sketch covers less of its page than the background does, and its ink
    spreads over many grey levels where the page is one, so the most common level is the page's."""
    counts = torch.histc(images.float().clamp(-1, 1), bins=bins, min=-1.0, max=1.0)
    return -1.0 + (int(counts.argmax()) + 0.5) * 2.0 / bins


# ---- memorisation check -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _cached_dataset(dataset: str, data_path: str, image_size: int, channels: int, val_fraction: float) -> ImageData:
    cfg = TrainConfig(dataset=dataset, data_path=data_path, image_size=image_size, channels=channels,
                      val_fraction=val_fraction)
    return load_dataset(cfg)


def dataset_for(cfg: TrainConfig) -> ImageData:
    """The model's training data at its size, loaded once per process (digits: about a second)."""
    return _cached_dataset(cfg.dataset, cfg.data_path, cfg.image_size, cfg.channels, cfg.val_fraction)


def nearest_training(images: torch.Tensor, train: torch.Tensor, k: int = 5,
                     chunk: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances [N, k], indices [N, k]) of the k nearest training images to each image, by
    root-mean-square pixel difference on the [-1, 1] scale (0 = identical, 2 = opposite).
    train is uint8; it is converted chunk by chunk, so a large set never sits in memory as floats."""
    q = images.float().flatten(1)
    dim = q.shape[1]
    best_d = torch.full((q.shape[0], 0), float("inf"))
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for start in range(0, train.shape[0], chunk):
        ref = to_float(train[start:start + chunk]).flatten(1)
        if ref.shape[1] != dim:
            raise ValueError(f"images have {dim} values but training images {ref.shape[1]}")
        d = torch.cdist(q, ref, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(dim)
        d_all = torch.cat([best_d, d], dim=1)
        i_all = torch.cat([best_i, torch.arange(start, start + ref.shape[0]).expand(q.shape[0], -1)], dim=1)
        kk = min(k, d_all.shape[1])
        best_d, pos = d_all.topk(kk, dim=1, largest=False)
        best_i = i_all.gather(1, pos)
    return best_d, best_i


def heldout_nn_distances(data: ImageData, n: int = 200) -> torch.Tensor:
    """Sorted distances from up to n held-out real images to their nearest training image (empty without a
    held-out split): what 'as close as new real images come' looks like, the yardstick of a sample's
    nearest-neighbour distance (studio.memorisation_verdict reads its percentiles)."""
    held = data.val[:n]
    if held.shape[0] == 0:
        return torch.empty(0)
    d, _ = nearest_training(to_float(held), data.train, k=1)
    return d[:, 0].sort().values


# ---- diversity meter ---------------------------------------------------------------------------------


def pairwise_distances(images: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance of every pair (upper triangle, flattened) of a batch [N, C, H, W]."""
    flat = images.float().flatten(1)
    d = torch.cdist(flat, flat) / math.sqrt(flat.shape[1])
    iu = torch.triu_indices(flat.shape[0], flat.shape[0], offset=1)
    return d[iu[0], iu[1]]


@dataclass
class Diversity:
    generated: float  # mean pairwise distance of generated samples
    real: float  # the same for real images of the data set
    ratio: float  # generated / real: ~1 healthy, -> 0 collapse
    generated_distances: torch.Tensor
    real_distances: torch.Tensor
    class_counts: list[int] | None = None  # digits: samples per predicted class
    real_class_counts: list[int] | None = None


def diversity(G: Generator, real: torch.Tensor, n: int = 256, seed: int = 0,
              psi: float = 1.0) -> Diversity:
    """Mean pairwise distance of n samples versus n real images (uint8 or float [N, C, H, W]).
    A collapsed generator draws (nearly) the same image for every z: its ratio drops towards 0,
    whereas a healthy one varies about as much as the data. Truncation (psi < 1) lowers it by design:
    the meter measures the model at psi = 1 unless asked otherwise."""
    z, labels = seeded_latents(G.nz, n, seed, G.num_classes)
    fake = sample(G, z=z * float(psi), labels=labels)
    g = torch.Generator().manual_seed(int(seed))
    pick = torch.randperm(real.shape[0], generator=g)[:n]
    real_f = to_float(real[pick]) if real.dtype == torch.uint8 else real[pick].float()
    gd, rd = pairwise_distances(fake), pairwise_distances(real_f)
    gm, rm = float(gd.mean()), float(rd.mean())
    return Diversity(gm, rm, gm / rm if rm > 0 else float("nan"), gd, rd)


def class_histogram(predicted: torch.Tensor, num_classes: int = 10) -> list[int]:
    return torch.bincount(predicted.long(), minlength=num_classes)[:num_classes].tolist()


def digit_coverage(G: Generator, real: torch.Tensor, n: int = 256, seed: int = 0) -> tuple[list[int], list[int]]:
    """Predicted-digit counts of n samples and of n real digits, by the project's digit classifier
    (trained once on the bundled digits and cached): a collapsed G piles up on a few digits."""
    from .digit_classifier import get_digit_classifier

    clf = get_digit_classifier(G.image_size)
    fake = sample(G, n, seed)
    g = torch.Generator().manual_seed(int(seed))
    pick = torch.randperm(real.shape[0], generator=g)[:n]
    return class_histogram(clf.predict(fake)), class_histogram(clf.predict(real[pick]))


# ---- latency benchmark -------------------------------------------------------------------------------


def benchmark_latency(image_size: int = 64, ngf: int = 64, nz: int = 100, channels: int = 3,
                      repeats: int = 100, warmup: int = 10, threads: int | None = None) -> dict:
    """Server-side time of one slider update on the CPU: move z along the directions, run G on the
    single latent, convert to the upscaled uint8 picture the browser gets (and, separately, the
    PNG encoding Gradio does). Median of `repeats` after `warmup` runs; random weights (speed does
    not depend on training). Defaults: the classic 64x64 DCGAN generator (3.58 M parameters)."""
    import io

    from PIL import Image

    from .images import image_array, upscale

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        G = Generator(nz, ngf, channels, image_size).eval()
        dirs = principal_directions(G, k=6, n_samples=256)
        z = sample_latents(nz, 1, seed=0)
        amounts = [0.0] * 6
        update_ms, png_ms = [], []
        for i in range(warmup + repeats):
            amounts[i % 6] = (i % 13) / 4 - 1.5
            t0 = time.perf_counter()
            with torch.inference_mode():
                arr = upscale(image_array(sample(G, z=move(z, dirs, amounts))[0]))
            t1 = time.perf_counter()
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="PNG")
            t2 = time.perf_counter()
            if i >= warmup:
                update_ms.append((t1 - t0) * 1e3)
                png_ms.append((t2 - t1) * 1e3)
    finally:
        torch.set_num_threads(previous_threads)
    update_ms.sort()
    return {
        "what": "one latent-slider update on the CPU: z move + G forward (batch 1, eval) + uint8 upscale",
        "image_size": image_size, "ngf": ngf, "nz": nz, "channels": channels,
        "threads": threads or previous_threads, "repeats": repeats,
        "median_ms": round(statistics.median(update_ms), 3),
        "p90_ms": round(update_ms[int(0.9 * (len(update_ms) - 1))], 3),
        "png_encode_median_ms": round(statistics.median(png_ms), 3),
        "target_ms": 30.0,
    }
