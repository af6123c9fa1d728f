"""Recipe sweep: which settings give the best digits for a fixed amount of training?

Quality at a fixed number of iterations does not depend on how busy the machine is, wall-clock
time does. So the sweep has two parts that are run separately:

* `speed`: every configuration's iterations/s, measured side by side in one process (the
  configurations take turns, a few steps each, and the median turn counts), so that other load
  on the cores slows all of them alike. With the reference configuration's known idle speed this
  says how many iterations a wall-clock budget buys each configuration.
* `train`: each configuration for a fixed number of iterations (or for what a budget buys, from a
  `speed` file), then the offline digit metrics of its sampling generator (EMA copy when kept).

    dcgan sweep speed --configs classic,narrow,sn-hinge --threads 2 --out speed.json
    dcgan sweep train --configs classic,narrow --seeds 0,1,2 --budget-s 150 \\
        --speed speed.json --out sweep.json
    dcgan sweep list

(`python -m dcgan.tools.sweep ...` is the same program.)

Results are JSON: one record per (configuration, seed) with its settings, iterations, seconds,
/proc/loadavg before and after, and the metrics.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import PRESETS, TrainConfig
from ..models import Discriminator
from ..train import GANTraining

DESCRIPTION = __doc__.split("\n\n")[0]
# every configuration starts from the paper's recipe (not from the dataclass defaults, which the sweep chose)
BASE = dict(dataset="digits", image_size=28, channels=1, device="cpu", precision="auto", checkpoint_every=0,
            **PRESETS["classic"])
# name -> changes to the paper's recipe; "pack" (not a TrainConfig field) packs that many images per D input
DEFAULT_CHANGES = {k: v for k, v in PRESETS["default"].items() if PRESETS["classic"].get(k) != v}
CONFIGS: dict[str, dict[str, Any]] = {
    "classic": {},  # the paper's recipe: ngf = ndf = 64, batch 64, bce, lr 2e-4, beta1 0.5, no EMA
    "default": DEFAULT_CHANGES,
    "classic-ema": dict(ema_decay=0.999),
    "narrow": dict(ngf=32, ndf=32),
    "narrow-ema": dict(ngf=32, ndf=32, ema_decay=0.999),
    "narrow-ema-b128": dict(ngf=32, ndf=32, ema_decay=0.999, batch_size=128),
    "narrow-ema-lr1e-4": dict(ngf=32, ndf=32, ema_decay=0.999, lr_g=1e-4, lr_d=1e-4),
    "narrow-ema-ttur": dict(ngf=32, ndf=32, ema_decay=0.999, lr_g=1e-4, lr_d=4e-4),
    "narrow-ema-lr4e-4": dict(ngf=32, ndf=32, ema_decay=0.999, lr_g=4e-4, lr_d=4e-4),
    "narrow-ema-lrg4e-4": dict(ngf=32, ndf=32, ema_decay=0.999, lr_g=4e-4),
    "narrow-ema-lr8e-4": dict(ngf=32, ndf=32, ema_decay=0.999, lr_g=8e-4, lr_d=8e-4),
    "narrow-ema-lr4e-4-b128": dict(ngf=32, ndf=32, ema_decay=0.999, lr_g=4e-4, lr_d=4e-4, batch_size=128),
    "narrow-ema-pack2": dict(ngf=32, ndf=32, ema_decay=0.999, pack=2),
    "narrow-ema-pack4": dict(ngf=32, ndf=32, ema_decay=0.999, pack=4),
    "narrow-ema-dsteps2": dict(ngf=32, ndf=32, ema_decay=0.999, d_steps=2),
    "narrow-ema-diffaug": dict(ngf=32, ndf=32, ema_decay=0.999, diffaug="translation"),
    "narrow-ema-ema9999": dict(ngf=32, ndf=32, ema_decay=0.9999),
    "narrow-ema-ema99": dict(ngf=32, ndf=32, ema_decay=0.99),
    "narrow-sn-hinge-ema": dict(ngf=32, ndf=32, ema_decay=0.999, loss="hinge", spectral_norm=True),
    "narrow-sn-hinge-ema-diffaug": dict(ngf=32, ndf=32, ema_decay=0.999, loss="hinge", spectral_norm=True,
                                        diffaug="translation,cutout"),
    "narrow-hinge-ema": dict(ngf=32, ndf=32, ema_decay=0.999, loss="hinge"),
    "mid-ema": dict(ngf=48, ndf=48, ema_decay=0.999),
    "g64d32-ema": dict(ngf=64, ndf=32, ema_decay=0.999),
    "g32d64-ema": dict(ngf=32, ndf=64, ema_decay=0.999),
    "slim-ema": dict(ngf=24, ndf=24, ema_decay=0.999),
    "default-r1": {**DEFAULT_CHANGES, "r1_gamma": 1.0},
    "default-r1-b128": {**DEFAULT_CHANGES, "r1_gamma": 1.0, "batch_size": 128},
    "default-r1-mid48": {**DEFAULT_CHANGES, "r1_gamma": 1.0, "ngf": 48, "ndf": 48},
}


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().strip()
    except OSError:
        return "n/a"


class Packed(nn.Module):
    """PacGAN (Lin et al. 2018): D judges `pack` images at once, stacked along channels, so a
    generator whose samples look alike is easier to catch. Real and fake are packed separately."""

    def __init__(self, D: Discriminator, pack: int, channels: int):
        super().__init__()
        self.D, self.pack, self.channels = D, pack, channels

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        return self.D(x.reshape(n // self.pack, c * self.pack, h, w))


def split_config(name: str, changes: dict[str, Any] | None = None, **extra: Any) -> tuple[TrainConfig, int]:
    """(TrainConfig, pack) for a named configuration plus overrides."""
    settings = {**BASE, **(CONFIGS[name] if changes is None else changes), **extra}
    pack = int(settings.pop("pack", 1))
    cfg = TrainConfig(**settings)
    if cfg.batch_size % pack:
        raise ValueError(f"batch_size {cfg.batch_size} is not a multiple of pack {pack}")
    return cfg, pack


def build_run(cfg: TrainConfig, pack: int = 1, data=None) -> GANTraining:
    """A GANTraining; with pack > 1 its D is replaced by a packed one (fresh optimiser)."""
    run = GANTraining(cfg, data)
    if pack > 1:
        torch.manual_seed(cfg.seed + 1)
        D = Discriminator(cfg.ndf, cfg.channels * pack, cfg.image_size, 0, cfg.spectral_norm)
        run.D = run.D_step = Packed(D, pack, cfg.channels).to(run.device, memory_format=torch.channels_last)
        run.opt_d = torch.optim.Adam(run.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2), foreach=True)
    return run


def measure_speed(names: list[str], rounds: int = 7, steps_per_turn: int = 10, warmup: int = 5) -> dict[str, Any]:
    """Iterations/s of each configuration, measured in turns within one process."""
    from ..data import load_dataset

    data = None
    runs = {}
    for name in names:
        cfg, pack = split_config(name)
        data = data if data is not None and data.name == cfg.dataset else load_dataset(cfg)
        runs[name] = build_run(cfg, pack, data)
        for _ in range(warmup):
            runs[name].train_step()
    times: dict[str, list[float]] = {name: [] for name in names}
    load_before = loadavg()
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            for _ in range(steps_per_turn):
                run.train_step().as_tensor().tolist()  # the CPU trainer syncs every step
            times[name].append((time.perf_counter() - t0) / steps_per_turn)
    # the fastest turn: other processes only ever slow a turn down (with 2 threads on 2 shared cores a
    # turn can take 10x longer), so the minimum is the least disturbed estimate; the median is kept too
    out = {name: {"it_per_s": 1.0 / min(t), "it_per_s_median": 1.0 / statistics.median(t),
                  "img_per_s": runs[name].cfg.batch_size / min(t),
                  "turn_s": [round(x * steps_per_turn, 4) for x in t]} for name, t in times.items()}
    return {"threads": torch.get_num_threads(), "loadavg_before": load_before, "loadavg_after": loadavg(),
            "rounds": rounds, "steps_per_turn": steps_per_turn, "configs": out}


def train_and_score(name: str, seed: int, iterations: int, n_eval: int = 5000, out_dir: Path | None = None,
                    changes: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Train one configuration (extra: other settings, e.g. the data set) for `iterations` steps and
    score its sampling generator."""
    from ..metrics import evaluate

    cfg, pack = split_config(name, changes, seed=seed, steps=iterations, **extra)
    load_before, t0 = loadavg(), time.perf_counter()
    cpu0 = time.process_time()
    run = build_run(cfg, pack)
    for _ in range(iterations):
        run.train_step()
    train_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    load_after = loadavg()
    metrics = evaluate(run.sampler(), cfg, n=n_eval, inception="no", seed=1000 + seed)
    record = {"config": name, "dataset": cfg.dataset, "seed": seed, "iterations": iterations, "pack": pack,
              "settings": {k: v for k, v in (CONFIGS.get(name, {}) if changes is None else changes).items()},
              "train_s": round(train_s, 1), "cpu_s": round(cpu_s, 1), "threads": torch.get_num_threads(),
              "loadavg_before": load_before, "loadavg_after": load_after,
              "metrics": {k: v for k, v in metrics.items() if not isinstance(v, (dict,))}}
    if out_dir is not None:
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in run.sampler().state_dict().items()}
        save_file(state, str(out_dir / f"{name}_s{seed}_{iterations}.safetensors"),
                  metadata={"config": cfg.to_json()})
    return record


def iterations_for_budget(name: str, budget_s: float, speed: dict[str, Any], reference: str,
                          reference_idle_it_s: float | None, overhead_s: float) -> int:
    """Iterations that budget_s buys: (budget - start-up) x this config's idle it/s, where the idle
    speed is the measured ratio to the reference times the reference's idle it/s (or the measured
    speed itself when the speed file was taken on an idle machine: reference_idle_it_s = None)."""
    it_s = speed["configs"][name]["it_per_s"]
    if reference_idle_it_s is not None:
        it_s = it_s / speed["configs"][reference]["it_per_s"] * reference_idle_it_s
    return int((budget_s - overhead_s) * it_s)


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The sweep's sub-commands (list, speed, train) on p: `dcgan sweep` and `python -m dcgan.tools.sweep`."""
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the named configurations")
    sp = sub.add_parser("speed", help="iterations/s of configurations, side by side")
    tp = sub.add_parser("train", help="train configurations for fixed iterations and score them")
    for q in (sp, tp):
        q.add_argument("--configs", required=True, help="comma list of names (see list)")
        q.add_argument("--threads", type=int, default=1)
        q.add_argument("--out", required=True, help="JSON file (train: appended record by record)")
    sp.add_argument("--rounds", type=int, default=7)
    tp.add_argument("--seeds", default="0")
    tp.add_argument("--iterations", type=int, default=0, help="fixed iterations for every configuration")
    tp.add_argument("--budget-s", type=float, default=0.0, help="or: the iterations this wall time buys ...")
    tp.add_argument("--speed", help="... according to this `speed` JSON")
    tp.add_argument("--reference", default="classic", help="configuration whose idle speed is known")
    tp.add_argument("--reference-idle-it-s", type=float, default=None,
                    help="its idle it/s; leave out when the speed file was measured on an idle machine")
    tp.add_argument("--overhead-s", type=float, default=10.0, help="start-up and data loading within the budget")
    tp.add_argument("--n-eval", type=int, default=5000, help="samples scored (Stacked MNIST protocol: 26000)")
    tp.add_argument("--dataset", default="digits", help="digits or stacked-digits (colour, 3 channels)")
    tp.add_argument("--save", help="folder for the trained sampling generators (safetensors)")
    p.set_defaults(func=lambda args: run(args, p))
    return p


def add_parser(sub) -> argparse.ArgumentParser:
    """`dcgan sweep ...`: the same sub-commands as `python -m dcgan.tools.sweep`."""
    return add_arguments(sub.add_parser("sweep", description=DESCRIPTION,
                                        help="recipe sweep: speed of named configurations side by side, quality "
                                             "at fixed iterations (docs/QUALITY.md)"))


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m dcgan.tools.sweep", description=DESCRIPTION))
    args = parser.parse_args(argv)
    return args.func(args)


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """One sub-command; p reports bad arguments (argparse's error and exit code)."""
    if args.cmd == "list":
        for name, changes in CONFIGS.items():
            print(f"{name:32s} {json.dumps(changes)}")
        return 0
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration {unknown[0]!r}; see `dcgan sweep list`")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.cmd == "speed":
        result = measure_speed(names, rounds=args.rounds)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        return 0
    if not args.iterations and not (args.budget_s and args.speed):
        p.error("give --iterations, or --budget-s with --speed")
    speed = json.loads(Path(args.speed).read_text()) if args.speed else None
    records = json.loads(out.read_text()) if out.exists() else []
    for seed in [int(s) for s in args.seeds.split(",")]:
        for name in names:
            iterations = args.iterations or iterations_for_budget(
                name, args.budget_s, speed, args.reference, args.reference_idle_it_s, args.overhead_s)
            record = train_and_score(name, seed, iterations, args.n_eval, Path(args.save) if args.save else None,
                                     dataset=args.dataset, channels=3 if args.dataset == "stacked-digits" else 1)
            if args.budget_s:
                record["budget_s"] = args.budget_s
            records.append(record)
            out.write_text(json.dumps(records, indent=2) + "\n")
            m = record["metrics"]
            print(f"{name} seed {seed} it {iterations}: "
                  + " ".join(f"{k}={m[k]:.3f}" for k in ("digit_fd", "confident_share", "min_class_share",
                                                           "stacked_modes", "stacked_kl", "stacked_legible") if k in m)
                  + f" ({record['train_s']} s, load {record['loadavg_after']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
