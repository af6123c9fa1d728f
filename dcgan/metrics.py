"""How good are the samples? Offline digit metrics everywhere, Inception metrics where weights exist.

Two judges:
- the project's own digit classifier (dcgan/digit_classifier.py), for digits and MNIST, needs no
  download: class coverage (which digits appear, entropy of the class histogram) and a Fréchet
  distance in its 128-d feature space against held-out real digits. Printed beside it is the same
  distance for real training digits against the same held-out digits (what a perfect generator
  would score with the same number of samples), so the number has a scale.
- InceptionV3 through torch-fidelity: FID, KID and IS. Its weights download on first use; offline
  that fails with `InceptionUnavailable`, whose message says how to get them. Real-image
  statistics are cached per data set and size as safetensors beside the digit judge (once per user:
  digit_classifier.default_cache_dir; the app's under its checkpoints folder, use_cache_dir).

`evaluate` takes a generator or a checkpoint path; `make_metric_fn` gives the Trainer's metric_fn.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .config import TrainConfig
from .data import load_dataset, to_uint8
from .digit_classifier import CACHE_DIR, digits_config, get_digit_classifier
from .models import Generator, sample

DIGIT_SETS = ("digits", "mnist")  # data sets the digit classifier can judge
STACKED_SETS = ("stacked-digits",)  # judged channel by channel: Stacked MNIST modes
METRIC_KEY = "score"  # what the Trainer keeps best.safetensors by: digit_fd or fid, lower is better
COVERAGE_MIN_SHARE = 0.01  # a class counts as covered when it gets at least 1% of the samples
CONFIDENT_PROB = 0.9  # a sample is legible when the classifier gives its top class at least this
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
KID_REAL_MAX = 10_000  # real Inception features kept in the cache for KID
# what a training-time record holds (run.history, checkpoints, the CLI log and the UI plot)
TRAINING_KEYS = (METRIC_KEY, "digit_fd", "digit_fd_real", "classes_covered", "class_entropy_bits",
                 "confident_share", "min_class_share", "stacked_modes", "stacked_kl", "stacked_legible",
                 "fid", "kid", "is")

_lock = threading.Lock()
_real_digit_stats: dict[tuple[int, int], dict[str, Any]] = {}


class InceptionUnavailable(RuntimeError):
    """The Inception weights are not on this machine and could not be downloaded."""


# ---- Fréchet distance and class statistics ------------------------------------------------------


def gaussian_stats(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of [N, D] features."""
    f = features.double().numpy()
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(stats_a: tuple[np.ndarray, np.ndarray], stats_b: tuple[np.ndarray, np.ndarray]) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2), the FID formula on any features.

    Tr((S_a S_b)^1/2) is the sum of square roots of the eigenvalues of S_a S_b (real, >= 0 in exact
    arithmetic: tiny negative round-off is clipped).
    """
    (mu_a, s_a), (mu_b, s_b) = stats_a, stats_b
    diff = mu_a - mu_b
    eig = np.linalg.eigvals(s_a @ s_b)
    tr_covmean = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2 * tr_covmean)


def class_coverage(predictions: torch.Tensor, num_classes: int = 10) -> dict[str, Any]:
    """Classes present among the samples and the entropy of the class histogram (bits; uniform over
    10 classes = log2 10 = 3.32). A collapsed generator shows 1 class and entropy near 0."""
    counts = torch.bincount(predictions.long().flatten(), minlength=num_classes)[:num_classes].double()
    n = max(float(counts.sum()), 1.0)
    share = counts / n
    nz = share[share > 0]
    entropy = float(-(nz * nz.log2()).sum()) + 0.0  # + 0.0: no "-0.0"
    return {
        "classes_covered": int((share >= COVERAGE_MIN_SHARE).sum()),
        "class_entropy_bits": entropy,
        "class_entropy_max_bits": math.log2(num_classes),
        "class_histogram": [int(c) for c in counts.tolist()],
    }


# ---- digit metrics -----------------------------------------------------------------------------------


def real_digit_reference(image_size: int, n: int) -> dict[str, Any]:
    """Held-out real digit statistics, and the real-vs-real distance for n training digits."""
    key = (image_size, n)
    with _lock:
        if key in _real_digit_stats:
            return _real_digit_stats[key]
    clf = get_digit_classifier(image_size)
    data = load_dataset(digits_config(image_size))
    held_feats, held_logits = clf._run(data.val)
    held_out = gaussian_stats(held_feats)
    g = torch.Generator().manual_seed(1)
    pick = torch.randperm(data.train.shape[0], generator=g)[:n]
    real_fd = frechet_distance(gaussian_stats(clf.features(data.train[pick])), held_out)
    ref = {"held_out": held_out, "real_fd": real_fd, "n_real": int(pick.shape[0]),
           "n_held_out": int(data.val.shape[0]), "accuracy": clf.accuracy, **legibility(held_logits.softmax(dim=1))}
    with _lock:
        _real_digit_stats[key] = ref
    return ref


def legibility(probabilities: torch.Tensor) -> dict[str, float]:
    """How many samples read clearly as one digit, and how rare the rarest digit is.

    confident_share: share of samples whose top class probability is >= CONFIDENT_PROB (a blob
    that merely happens to be classified does not count); min_class_share: share of the rarest
    predicted class (10 % for a balanced generator, 0 when a digit is missing)."""
    top, predicted = probabilities.max(dim=1)
    counts = torch.bincount(predicted, minlength=probabilities.shape[1]).double()
    n = max(int(probabilities.shape[0]), 1)
    return {"confident_share": float((top >= CONFIDENT_PROB).double().mean()) if probabilities.shape[0] else 0.0,
            "min_class_share": float(counts.min() / n)}


def digit_metrics(images: torch.Tensor) -> dict[str, Any]:
    """Coverage, legibility and Fréchet distance of generated digits [N, C, H, W] in [-1, 1] (or uint8),
    with the held-out real digits' values beside them (`*_real`)."""
    size = images.shape[-1]
    clf = get_digit_classifier(size)
    feats, logits = clf._run(images)
    ref = real_digit_reference(size, images.shape[0])
    out = {
        "digit_fd": frechet_distance(gaussian_stats(feats), ref["held_out"]),
        "digit_fd_real": ref["real_fd"],  # real training digits vs the same held-out digits
        **legibility(logits.softmax(dim=1)),
        "confident_share_real": ref["confident_share"],  # the 500 held-out real digits
        "min_class_share_real": ref["min_class_share"],
        **class_coverage(logits.argmax(dim=1)),
        "classifier_accuracy": ref["accuracy"],
        "n_samples": int(images.shape[0]),
        "n_real": ref["n_real"],  # training digits behind digit_fd_real (all of them when fewer than n)
        "n_held_out": ref["n_held_out"],
    }
    return out


# ---- Stacked MNIST: modes of digit triplets ----------------------------------------------------------


def triplet_statistics(probabilities: torch.Tensor) -> dict[str, Any]:
    """Modes covered, KL to uniform and legibility from per-channel digit probabilities [N, 3, 10].

    A mode (of 1000) is covered when at least one sample is read as it, as in VEEGAN and PacGAN;
    stacked_kl = KL(generated triplets || uniform over 1000) in nats; stacked_legible is the share of
    samples whose three channels are all read with probability >= CONFIDENT_PROB."""
    top, digit = probabilities.max(dim=2)
    mode = digit[:, 0] * 100 + digit[:, 1] * 10 + digit[:, 2]
    counts = torch.bincount(mode, minlength=1000).double()
    p = counts[counts > 0] / max(int(mode.shape[0]), 1)
    return {"stacked_modes": int((counts > 0).sum()),
            "stacked_kl": float((p * (p * 1000).log()).sum()) + 0.0,
            "stacked_legible": float((top >= CONFIDENT_PROB).all(dim=1).double().mean()) if mode.numel() else 0.0}


def read_channels(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each channel of [N, 3, H, W] read as a digit: (features [3N, 128], probabilities [N, 3, 10])."""
    n, c, h, w = images.shape
    if c != 3:
        raise ValueError(f"stacked images have 3 channels, got {c}")
    feats, logits = get_digit_classifier(w)._run(images.reshape(n * 3, 1, h, w))
    return feats, logits.softmax(dim=1).view(n, 3, -1)


def real_stacked_reference(image_size: int, n: int) -> dict[str, Any]:
    """The stacked metrics of n real stacked images built from the held-out digits."""
    key = (image_size, -n)
    with _lock:
        if key in _real_digit_stats:
            return _real_digit_stats[key]
    from .data import fit_tensor, load_digits_raw, split, stack_digits

    images, labels = load_digits_raw()
    digits = split(fit_tensor(images, image_size, 1), labels, digits_config(image_size).val_fraction, "digits", [])
    real, _ = stack_digits(digits.val, digits.val_labels, n, seed=2)
    ref = triplet_statistics(read_channels(real)[1])
    with _lock:
        _real_digit_stats[key] = ref
    return ref


def stacked_metrics(images: torch.Tensor) -> dict[str, Any]:
    """Stacked MNIST metrics of generated [N, 3, H, W] images, the same for N real stacked images
    (`*_real`), and the digit_fd of all 3N channels against held-out digits."""
    feats, probs = read_channels(images)
    ref = real_digit_reference(images.shape[-1], 3 * images.shape[0])
    real = real_stacked_reference(images.shape[-1], images.shape[0])
    return {**triplet_statistics(probs), **{f"{k}_real": v for k, v in real.items()},
            "digit_fd": frechet_distance(gaussian_stats(feats), ref["held_out"]), "digit_fd_real": ref["real_fd"],
            "confident_share": float((probs.max(dim=2).values >= CONFIDENT_PROB).double().mean()),
            "confident_share_real": ref["confident_share"], "n_samples": int(images.shape[0])}


# ---- Inception metrics (torch-fidelity) ---------------------------------------------------------


def inception_weights_path() -> Path:
    """Where torch.hub (and so torch-fidelity) keeps the downloaded Inception weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_available() -> bool:
    return inception_weights_path().is_file()


def inception_extractor(device: torch.device):
    """torch-fidelity's InceptionV3 (FID/KID '2048' features and IS 'logits_unbiased')."""
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3, FeatureExtractorInceptionV3

    try:
        extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"], verbose=False)
    except Exception as exc:  # URLError, HTTPError, OSError, ConnectionError: no network
        raise InceptionUnavailable(
            f"FID/KID/IS need the InceptionV3 weights, which are not on this machine and could not be "
            f"downloaded ({type(exc).__name__}: {exc}). Run once with internet access (they are saved to "
            f"{inception_weights_path()}), or download {URL_INCEPTION_V3} on another machine and copy it "
            f"to that path (set TORCH_HOME to use another folder). The offline digit metrics "
            f"(digit_fd, classes_covered) need no download."
        ) from exc
    return extractor.to(device).eval()


@torch.no_grad()
def inception_features(extractor, images_uint8: torch.Tensor, device: torch.device,
                       batch: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    feats, logits = [], []
    for chunk in images_uint8.split(batch):
        if chunk.shape[1] == 1:
            chunk = chunk.expand(-1, 3, -1, -1)
        f, lg = extractor(chunk.to(device))
        feats.append(f.cpu())
        logits.append(lg.cpu())
    return torch.cat(feats), torch.cat(logits)


def dataset_cache_key(cfg: TrainConfig) -> str:
    name = cfg.dataset
    if cfg.dataset == "folder":
        name += "-" + hashlib.sha1(os.path.abspath(cfg.data_path).encode()).hexdigest()[:10]
    return f"{name}_{cfg.image_size}px_{cfg.channels}c"


def real_inception_stats(cfg: TrainConfig, extractor, device: torch.device,
                         cache_dir: Path | None = None) -> dict[str, torch.Tensor]:
    """mu, sigma and up to KID_REAL_MAX features of the training images, cached as safetensors."""
    path = Path(cache_dir or CACHE_DIR) / f"inception_{dataset_cache_key(cfg)}.safetensors"
    if path.exists():
        try:
            return load_file(str(path))
        except Exception:  # damaged cache: compute again
            pass
    data = load_dataset(cfg)
    feats, _ = inception_features(extractor, data.train, device)
    mu, sigma = gaussian_stats(feats)
    g = torch.Generator().manual_seed(0)
    keep = feats[torch.randperm(feats.shape[0], generator=g)[:KID_REAL_MAX]]
    stats = {"mu": torch.from_numpy(mu), "sigma": torch.from_numpy(sigma), "features": keep.contiguous()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # the user's cache: other processes may write too
    save_file(stats, str(tmp))
    os.replace(tmp, path)
    return stats


def inception_metrics(images: torch.Tensor, cfg: TrainConfig, device: str | torch.device = "cpu",
                      cache_dir: Path | None = None) -> dict[str, float]:
    """FID, KID (x1000 is how papers print it; here raw) and IS of generated images vs the training set."""
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    device = torch.device(device)
    extractor = inception_extractor(device)
    real = real_inception_stats(cfg, extractor, device, cache_dir)
    feats, logits = inception_features(extractor, to_uint8(images), device)
    fid = frechet_distance(gaussian_stats(feats), (real["mu"].numpy(), real["sigma"].numpy()))
    subset = min(1000, feats.shape[0], real["features"].shape[0])
    kid = kid_features_to_metric(feats, real["features"], kid_subset_size=subset, verbose=False)
    isc = isc_features_to_metric(logits, splits=10)
    return {"fid": fid, "kid": kid["kernel_inception_distance_mean"],
            "kid_std": kid["kernel_inception_distance_std"],
            "is": isc["inception_score_mean"], "is_std": isc["inception_score_std"]}


# ---- entry points -----------------------------------------------------------------------------------


def evaluate(model: Generator | str | Path, cfg: TrainConfig | None = None, n: int = 2000,
             inception: str = "auto", device: str | torch.device = "cpu", seed: int = 0) -> dict[str, Any]:
    """Metrics of a generator (or a checkpoint file, EMA weights when saved) on its data set.

    inception: "auto" computes FID/KID/IS only when the weights are already on this machine,
    "yes" downloads them if needed (raising InceptionUnavailable offline), "no" skips them.
    The result holds `score` (digit_fd or fid, lower is better) when a judge was available.
    """
    if inception not in ("auto", "yes", "no"):
        raise ValueError("inception must be 'auto', 'yes' or 'no'")
    meta: dict[str, Any] = {}
    if not isinstance(model, torch.nn.Module):
        from .checkpoint import load_generator

        model, cfg, meta = load_generator(model, device=device)
    if cfg is None:
        raise ValueError("evaluate needs the TrainConfig of a bare generator")
    images = sample(model, n, seed)  # seeded noise, classes cycled, eval-mode BatchNorm
    out: dict[str, Any] = {"dataset": cfg.dataset, "image_size": cfg.image_size}
    if "iteration" in meta:
        out["iteration"] = int(meta["iteration"])
    if cfg.dataset in DIGIT_SETS:
        out.update(digit_metrics(images))
        out[METRIC_KEY] = out["digit_fd"]
    elif cfg.dataset in STACKED_SETS:
        out.update(stacked_metrics(images))
        out[METRIC_KEY] = out["digit_fd"]
    if inception == "yes" or (inception == "auto" and inception_available()):
        out.update(inception_metrics(images, cfg, device))
        if METRIC_KEY not in out:
            out[METRIC_KEY] = out["fid"]
    elif inception == "auto":
        out["inception"] = "skipped: no InceptionV3 weights on this machine (python -m dcgan eval --inception yes)"
    return out


def use_cache_dir(path: str | Path) -> None:
    """Point the metric caches (digit classifier, Inception statistics) at path, for this process and the
    training processes it starts (through DCGAN_CACHE): the app calls this once with root/.cache so nothing
    lands in the working directory."""
    from . import digit_classifier

    global CACHE_DIR
    os.environ["DCGAN_CACHE"] = str(path)
    digit_classifier.CACHE_DIR = CACHE_DIR = Path(path)


def make_metric_fn(n: int = 1000, inception: str = "auto") -> Callable[[Any], dict[str, Any]]:
    """A Trainer metric_fn: metrics of the run's sampling generator (the EMA copy when kept).

    Use as Trainer(metric_fn=make_metric_fn(), metric_key=METRIC_KEY, lower_is_better=True).
    Only numbers go into the record (it lands in run.history and the checkpoints). A partial, so it
    pickles: the app sends it to its training process.
    """
    return functools.partial(training_metrics, n=n, inception=inception)


def training_metrics(run, n: int = 1000, inception: str = "auto") -> dict[str, Any]:
    result = evaluate(run.sampler(), run.cfg, n=n, inception=inception, device=run.device)
    return {k: result[k] for k in TRAINING_KEYS if k in result}


__all__ = ["evaluate", "make_metric_fn", "use_cache_dir", "METRIC_KEY", "InceptionUnavailable", "frechet_distance",
           "class_coverage", "digit_metrics", "inception_metrics", "gaussian_stats", "legibility",
           "stacked_metrics", "triplet_statistics"]
