"""The Train tab's plots as data: loss and D curves (downsampled to at most MAX_POINTS and smoothed the way
TensorBoard does), the quality-metric series and table with readable names."""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np
import pandas as pd

from dcgan.metrics import METRIC_KEY

MAX_POINTS = 500  # plotted points per curve, however long the run
METRIC_SERIES = MappingProxyType({METRIC_KEY: f"{METRIC_KEY} (lower is better)",
                                  "digit_fd_real": f"real digits (ideal {METRIC_KEY})"})
METRIC_NAMES = MappingProxyType({  # record keys -> what a person reads in the table
    "iteration": "iteration", METRIC_KEY: METRIC_KEY, "digit_fd": "digit FD (lower is better)",
    "digit_fd_real": "digit FD of real images", "classes_covered": "digits covered (of 10)",
    "class_entropy_bits": "class balance (bits, 3.32 = even)", "fid": "FID", "kid": "KID",
    "classifier_accuracy": "classifier accuracy"})


def downsample(iterations: np.ndarray, values: np.ndarray,
               max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Bucket means over consecutive points (NaN-aware), so a 100k-step run still plots 500 points."""
    n = len(values)
    if n <= max_points:
        return iterations, values
    edges = np.linspace(0, n, max_points + 1).astype(int)
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), edges[:-1])
    counts = np.add.reduceat(finite.astype(np.int64), edges[:-1])
    vals = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)  # an all-NaN bucket is dropped later
    return iterations[edges[1:] - 1], vals


def smooth_ema(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard-style debiased exponential moving average; NaNs are skipped, not spread."""
    if weight <= 0:
        return values
    out = np.empty_like(values)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(values):
        if not math.isfinite(v):
            out[i] = np.nan
            continue
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = avg / norm
    return out


ONE_NETWORK = MappingProxyType({"d": "D-only steps", "g": "G-only steps"})


def curve_frame(rows: list[dict], series: dict[str, str], smooth: float = 0.0,
                max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Long-format (iteration, value, series) table of some metric columns, downsampled and smoothed. Single
    D-only or G-only steps (row["update"]) are series of their own, e.g. "loss_G (G-only steps)", drawn raw:
    a burst of them shows at once, marked as what it is, and never averaged into the curve of full steps."""
    parts = []
    if rows:
        iterations = np.array([r["iteration"] for r in rows], dtype=np.int64)
        update = np.array([r.get("update", "both") for r in rows])
        for key, label in series.items():
            values = np.array([np.nan if r.get(key) is None else r[key] for r in rows], dtype=np.float64)
            its, vals = downsample(iterations, np.where(update == "both", values, np.nan), max_points)
            vals = smooth_ema(vals, smooth)
            keep = np.isfinite(vals)
            parts.append(pd.DataFrame({"iteration": its[keep], "value": vals[keep], "series": label}))
            for mode, name in ONE_NETWORK.items():
                mine = (update == mode) & np.isfinite(values)
                if mine.any():
                    its, vals = downsample(iterations[mine], values[mine], max_points)
                    parts.append(pd.DataFrame({"iteration": its, "value": vals, "series": f"{label} ({name})"}))
    if not parts:
        return pd.DataFrame({"iteration": pd.Series(dtype="int64"), "value": pd.Series(dtype="float64"),
                             "series": pd.Series(dtype="str")})
    return pd.concat(parts, ignore_index=True)


def one_network_note(frame: pd.DataFrame) -> str | None:
    """The chart's caption: which one-network series it has (None while it has none). It changes only when that
    set changes, which is when the browser must rebuild the chart (see ui/train_view.py)."""
    kinds = [name for name in ONE_NETWORK.values() if len(frame) and frame["series"].str.endswith(f"({name})").any()]
    return f"lighter: single {' and '.join(kinds)}" if kinds else None


def with_one_network_colors(colors: dict[str, str]) -> dict[str, str]:
    """A plot's colours plus a lighter shade of each for its one-network series (see curve_frame)."""
    out = dict(colors)
    for label, colour in colors.items():
        r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
        light = "#" + "".join(f"{c + (255 - c) * 5 // 10:02x}" for c in (r, g, b))
        out.update({f"{label} ({name})": light for name in ONE_NETWORK.values()})
    return out


def loss_frame(rows: list[dict], smooth: float = 0.0) -> pd.DataFrame:
    return curve_frame(rows, {"loss_d": "loss_D", "loss_g": "loss_G"}, smooth)


def d_frame(rows: list[dict], smooth: float = 0.0) -> pd.DataFrame:
    """D(x) and D(G(z)) plus the 0.5 reference line across the plotted range."""
    frame = curve_frame(rows, {"d_real": "D(x) real", "d_fake": "D(G(z)) fake"}, smooth)
    if len(frame):
        lo, hi = int(frame["iteration"].min()), int(frame["iteration"].max())
        half = pd.DataFrame({"iteration": [lo, hi], "value": [0.5, 0.5], "series": "0.5 (can't tell)"})
        frame = pd.concat([frame, half], ignore_index=True)
    return frame


def metric_frame(history: list[dict]) -> pd.DataFrame:
    """The run's score over time (plus the score of real images, its ideal) in long format."""
    rows = [{"iteration": h["iteration"], "value": float(h[k]), "series": label} for h in history
            for k, label in METRIC_SERIES.items()
            if isinstance(h.get(k), (int, float)) and math.isfinite(h[k])]
    return pd.DataFrame(rows, columns=["iteration", "value", "series"])


def metric_table(history: list[dict], last: int = 10) -> pd.DataFrame:
    """The latest quality-metric records, newest first, with readable column names."""
    rows = [{METRIC_NAMES.get(k, k.replace("_", " ")): (round(v, 4) if isinstance(v, float) else v)
             for k, v in h.items()} for h in history[-last:]]
    return pd.DataFrame(rows[::-1])


def caption(rows: list[dict], frame: pd.DataFrame, smooth: float) -> str:
    if not rows:
        return "no data yet"
    shown = frame["iteration"].nunique() if len(frame) else 0
    how = f", smoothing {smooth:.2f}" if smooth > 0 else ""
    return f"{len(rows):,} records up to iteration {rows[-1]['iteration']:,}; {shown} points shown{how}"
