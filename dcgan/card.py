"""Model card for a pushed generator: YAML metadata the Hub indexes, plus what a reader needs to judge
and reuse the model (samples, loss curves, config, metrics, three-line usage).

Built only from a checkpoint's own contents and the run's loss rows, so it never holds anything
that was not trained (and never a token: nothing secret is ever passed in).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from huggingface_hub import ModelCard, ModelCardData

from .config import TrainConfig, help_text, lineage
from .images import grid_array, upscale
from .models import Generator, count_parameters, sample

LIBRARY_NAME = "dcgan-studio"
TAGS = ["gan", "dcgan", "pytorch", "unconditional-image-generation", "dcgan-studio"]
# Hub data set ids of the data sets the registry can load; "digits" is a 5,000-image MNIST subset.
HUB_DATASETS = {"digits": "ylecun/mnist", "mnist": "ylecun/mnist", "fashion-mnist": "zalando-datasets/fashion_mnist",
                "cifar10": "uoft-cs/cifar10", "celeba": "flwrlabs/celeba"}
SAMPLE_SEED = 0
SAMPLE_COUNT = 64


def sample_grid(G: Generator, cfg: TrainConfig, seed: int = SAMPLE_SEED, n: int = SAMPLE_COUNT) -> np.ndarray:
    """uint8 grid of n samples from fixed noise (classes cycled for a conditional G): reproducible."""
    return grid_array(sample(G, n, seed), nrow=8)


def samples_png(G: Generator, cfg: TrainConfig) -> bytes:
    """The card's sample grid, upscaled so small images are visible on the model page."""
    return png_bytes(upscale(sample_grid(G, cfg), 512))


def png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def loss_curve_png(rows: list[dict[str, Any]]) -> bytes | None:
    """D and G losses against iteration (matplotlib, headless); None when there are no rows."""
    rows = [r for r in rows if "iteration" in r and "loss_d" in r and "loss_g" in r]
    if len(rows) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    it = np.array([r["iteration"] for r in rows], dtype=float)
    fig = Figure(figsize=(7, 3.2), dpi=100)
    ax = fig.add_subplot()
    for key, label in (("loss_d", "D loss"), ("loss_g", "G loss")):
        values = np.array([r[key] for r in rows], dtype=float)
        k = max(1, len(values) // 50)  # moving average so the trend shows through the noise
        ax.plot(it, values, linewidth=0.8 if k > 1 else 1.5, alpha=0.35 if k > 1 else 1.0)
        if k > 1:
            smooth = np.convolve(values, np.ones(k) / k, mode="valid")
            ax.plot(it[k - 1:], smooth, linewidth=1.8, label=f"{label} (mean of {k})", color=ax.lines[-1].get_color())
        else:
            ax.lines[-1].set_label(label)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _metrics_table(history: list[dict[str, Any]]) -> str:
    if not history:
        return ("No quality metrics were computed during this run (train with `--metric-every K` to "
                "record FID / KID / IS; `python -m dcgan eval` scores a checkpoint).")
    keys = [k for k in history[-1] if k != "iteration"]
    rows = history if len(history) <= 10 else history[:1] + history[-9:]
    lines = ["| iteration | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for r in rows:
        cells = [f"{r[k]:.4g}" if isinstance(r.get(k), (int, float)) else str(r.get(k, "")) for k in keys]
        lines.append(f"| {r.get('iteration', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_card(repo_id: str, G: Generator, cfg: TrainConfig, meta: dict[str, Any], *, has_losses: bool,
               has_training_state: bool, license: str = "mit", sampler: str = "G") -> str:
    """README.md text: YAML front matter (library_name, tags, datasets, license) and the body."""
    data = ModelCardData(library_name=LIBRARY_NAME, license=license or None, tags=list(TAGS),
                         pipeline_tag="unconditional-image-generation",
                         datasets=[HUB_DATASETS[cfg.dataset]] if cfg.dataset in HUB_DATASETS else None)
    iteration = meta.get("iteration", 0)
    images_seen = meta.get("images_seen", 0)
    dataset = meta.get("dataset", {}).get("name", cfg.dataset)
    shape = f"{cfg.channels}×{cfg.image_size}×{cfg.image_size}"
    classes = f", {cfg.num_classes} classes" if cfg.num_classes else ""
    call = ("G(z, torch.arange(16) % G.num_classes)" if cfg.num_classes else "G(z)")
    usage = (f'G = Generator.from_pretrained("{repo_id}")\n'
             f"z = torch.randn(16, G.nz)\n"
             f"images = {call}  # 16×{shape} in [-1, 1]")
    resume = ""
    if has_training_state:
        resume = ("\n## Resume training\n\n`training_state.safetensors` holds the full training state (G, D, "
                  "EMA, both Adam states, RNG, data order, iteration), so training continues exactly where "
                  f"it stopped:\n\n```bash\npython -m dcgan pull {repo_id} --resume\n```\n")
    parent = lineage(cfg)
    branched = ""
    if parent is not None:
        changes = ", ".join(f"`{k}` {v[0]} → {v[1]}" for k, v in (parent.get("changes") or {}).items()
                            if isinstance(v, list) and len(v) == 2) or "no settings changed"
        branched = (f"\nBranched from the run `{parent.get('run', '?')}` at iteration {parent.get('step', '?')} "
                    f"(same weights, optimiser states, random state and data order), with {changes}.\n")
    losses = ("![Discriminator and generator losses](losses.png)" if has_losses else
              "The loss curve of this run was not recorded in its checkpoint.")
    settings = {k: getattr(cfg, k) for k in ("dataset", "image_size", "channels", "nz", "ngf", "ndf", "num_classes",
                                            "loss", "batch_size", "lr_g", "lr_d", "beta1", "beta2",
                                            "spectral_norm", "ema_decay", "diffaug", "r1_gamma", "seed")}
    settings_table = "\n".join(f"| `{k}` | `{v}` | {help_text(k)} |" for k, v in settings.items())
    body = f"""
# DCGAN on {dataset} ({cfg.image_size}×{cfg.image_size})

{"A class-conditional" if cfg.num_classes else "An unconditional"} DCGAN generator trained with DCGAN Studio:
{count_parameters(G) / 1e6:.2f} M parameters, latent size {cfg.nz}, output {shape}{classes}.
Trained for {iteration} iterations ({images_seen:,} images seen, batch {cfg.batch_size}, {cfg.loss} loss).
The weights are the {"exponential moving average of the generator" if sampler == "G_ema" else "generator"}.
{branched}
![64 samples from fixed noise (seed {SAMPLE_SEED})](samples.png)

## Use it

```python
import torch
from dcgan.models import Generator  # DCGAN Studio's dcgan package
{usage}
```

`model.safetensors` holds the weights and `config.json` the constructor arguments
(`PyTorchModelHubMixin`), so nothing is unpickled when loading.

## Training

{losses}

| setting | value | meaning |
|---|---|---|
{settings_table}

The full configuration is in `training_config.json`:

```json
{cfg.to_json()}
```

## Metrics

{_metrics_table(meta.get("history") or [])}
{resume}
## Limitations

A DCGAN reproduces the look of its training data at low resolution; samples can show artefacts and
mode collapse (repeated outputs). It is a teaching and research model, not a source of real data.
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}").content


def metrics_json(meta: dict[str, Any]) -> str:
    return json.dumps({"iteration": meta.get("iteration"), "images_seen": meta.get("images_seen"),
                       "history": meta.get("history") or []}, indent=2)
