"""The GPU recipe sweep of docs/QUALITY.md ("Second sweep"): many configurations as parallel processes on
one GPU, quality at fixed iterations.

    OUT=results/ python tools/gpu_sweep.py tools/gpu_sweep_call1.json WORKERS DEADLINE_S

Each spec names changes to the paper's recipe (as `dcgan.tools.sweep` does) and optional experimental `hacks`
that are not in the package (label smoothing, minibatch std, up-sampling + conv in G, a deeper G), to see
whether they would be worth building. At each checkpoint iteration it scores EMA copies of G with several
decays and the live G with `dcgan.metrics.evaluate` and appends JSON lines to $OUT/sweep.jsonl, so what
finished before the deadline is kept. DEV=cpu runs it without a GPU (slowly; for a smoke test).
"""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import os
import sys
import time
import traceback
from typing import Any

CHECKS = [3000, 6000, 9000, 12000, 16000, 20000]
DECAYS = [0.99, 0.999, 0.9995, 0.9999]
KEEP = ("confident_share", "min_class_share", "digit_fd", "classes_covered", "stacked_modes", "stacked_kl",
        "stacked_legible")


def adam(params, lr: float, cfg, device) -> Any:
    import torch

    extra = {"fused": True, "capturable": True} if device.type == "cuda" else {}
    return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), **extra)


def apply_hacks(run, hacks: list[str]) -> None:
    """Experimental changes to a built GANTraining (fresh optimisers for replaced networks)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import dcgan.losses as losses
    from dcgan.models import init_dcgan_weights

    cfg = run.cfg
    if "smooth" in hacks:  # one-sided label smoothing: real target 0.9
        plain = losses.d_loss

        def smoothed(kind, real, fake):
            if kind != "bce":
                return plain(kind, real, fake)
            real, fake = real.float(), fake.float()
            return (0.9 * F.softplus(-real) + 0.1 * F.softplus(real)).mean() + F.softplus(fake).mean()

        losses.d_loss = smoothed
    if "mbstd" in hacks:  # minibatch standard deviation channel before D's head (groups of 4)
        class MinibatchStd(nn.Module):
            def __init__(self, D):
                super().__init__()
                self.features = D.features
                width, k = D.head.weight.shape[1], D.head.weight.shape[-1]
                self.head = nn.Conv2d(width + 1, 1, k, 1, 0, bias=False)
                nn.init.normal_(self.head.weight, 0.0, 0.02)

            def forward(self, x, labels=None):
                h = self.features(x)
                n, c, hh, ww = h.shape
                g = min(4, n)
                y = h.float().view(g, n // g, c, hh, ww)
                s = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))
                s = s.repeat(g).view(n, 1, 1, 1).expand(n, 1, hh, ww).to(h.dtype)
                return self.head(torch.cat([h, s], 1)).flatten()

        run.D = run.D_step = MinibatchStd(run.D).to(run.device, memory_format=torch.channels_last)
        run.opt_d = adam(run.D.parameters(), cfg.lr_d, cfg, run.device)
    if "upconv" in hacks or "deepg" in hacks:  # 28x28 G: nearest up-sampling + 3x3 conv, or an extra 3x3 conv
        torch.manual_seed(cfg.seed)
        w = cfg.ngf * 2

        def up(cin, cout):
            if "upconv" in hacks:
                return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cin, cout, 3, 1, 1, bias=False)]
            return [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)]

        def extra(c):
            return [nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)] if "deepg" in hacks else []

        net = nn.Sequential(nn.ConvTranspose2d(cfg.nz, w, 7, 1, 0, bias=False), nn.BatchNorm2d(w), nn.ReLU(True),
                            *extra(w), *up(w, w // 2), nn.BatchNorm2d(w // 2), nn.ReLU(True), *extra(w // 2),
                            *up(w // 2, cfg.channels), nn.Tanh())
        net.apply(init_dcgan_weights)
        run.G.net = net.to(run.device, memory_format=torch.channels_last)
        run.G_step = run.G
        run.opt_g = adam(run.G.parameters(), cfg.lr_g, cfg, run.device)
        if run.G_ema is not None:
            run.G_ema = copy.deepcopy(run.G).eval()


def job(spec: dict[str, Any]) -> str:
    import torch

    from dcgan.cuda_graph import CudaGraphStep
    from dcgan.metrics import evaluate
    from dcgan.tools.sweep import build_run, split_config

    torch.set_num_threads(1)
    name, seed, dataset = spec["name"], spec["seed"], spec.get("dataset", "digits")
    label = spec.get("label", name)
    checks = spec.get("checks", CHECKS)
    cfg, pack = split_config(name, spec["changes"], seed=seed, steps=max(checks),
                             device=os.environ.get("DEV", "cuda"), dataset=dataset,
                             channels=3 if dataset == "stacked-digits" else 1)
    run = build_run(cfg, pack)
    apply_hacks(run, spec.get("hacks", []))
    graph = CudaGraphStep(run) if CudaGraphStep.supported(run) else None
    emas = {d: copy.deepcopy(run.G).eval() for d in DECAYS}
    t0 = time.time()
    for it in range(1, max(checks) + 1):
        graph() if graph is not None else run.train_step()
        with torch.no_grad():
            for d, E in emas.items():
                torch._foreach_lerp_(list(E.parameters()), list(run.G.parameters()), 1.0 - min(d, it / (9 + it)))
                for eb, b in zip(E.buffers(), run.G.buffers(), strict=True):
                    eb.copy_(b)
        if it not in checks:
            continue
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = round(time.time() - t0, 1)
        records = []
        for variant, G in [*((f"ema{d}", E) for d, E in emas.items()), ("live", run.G)]:
            m = evaluate(G, cfg, n=spec.get("n_eval", 5000), inception="no", seed=1000 + seed)
            records.append({"name": label, "hacks": spec.get("hacks", []), "changes": spec["changes"], "seed": seed,
                            "dataset": dataset, "it": it, "variant": variant, "train_s": seconds,
                            **{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items() if k in KEEP}})
        with open(os.path.join(os.environ["OUT"], "sweep.jsonl"), "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        print(label, seed, it, seconds, [(r["variant"], r.get("confident_share"), r.get("min_class_share"),
                                          r.get("digit_fd")) for r in records[1:2]], flush=True)
    return label


def safe(spec: dict[str, Any]) -> str:
    try:
        return job(spec)
    except Exception:
        traceback.print_exc()
        return "FAILED " + spec["name"]


def main() -> None:
    with open(sys.argv[1]) as fh:
        specs = json.load(fh)
    workers, deadline = int(sys.argv[2]), time.time() + float(sys.argv[3])
    with mp.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        result = pool.map_async(safe, specs, chunksize=1)
        result.wait(max(1.0, deadline - time.time()))
        print("done" if result.ready() else "deadline reached", flush=True)
        pool.terminate()


if __name__ == "__main__":
    main()
