"""`python -m dcgan bench`: speed and memory of training and sampling, written as JSON.

Two training loops run side by side on the same data and networks:
- `plain`: the usual DCGAN code (pytorch/examples dcgan): fp32, eager, default memory layout,
  a DataLoader over float images on the host, BCE on logits, `.item()` after every step.
- `fast`: `GANTraining.train_step`, the step `train.fit` runs for the CLI and the UI: uint8 data on
  the device, bf16 autocast where the hardware has it, channels_last, fused/foreach Adam, a host
  sync only every `log_interval` steps, and on a GPU the step replayed as a CUDA graph.
Ratios (fast / plain, the app's Trainer / the bare loop) are measured in the same run. FLOPs are
counted with torch's FlopCounterMode on one real step (convolutions and matrix products, the forward
and backward passes), not assumed. Training FLOP/s are reported as a fraction of this machine's
matrix-multiply rate, measured in the same run in the precision training runs in (large square
`torch.matmul`), and on a GPU also of the data-sheet bf16 peak.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..data import ImageData, to_float
from ..models import Generator, build_models

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s; matched
# against torch.cuda.get_device_name() in this order (first match wins).
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM (reported as "NVIDIA H100 80GB HBM3")
    ("GH200", 989.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("A10G", 70.0),
    ("A10", 125.0),
]
MODES = ("plain", "fast", "both", "latent")


# ---- the machine ------------------------------------------------------------------------------


def device_info(device: torch.device) -> dict:
    info = {"type": device.type, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu": _cpu_name(), "cpus": os.cpu_count()}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((p for key, p in PEAK_BF16_TFLOPS if key in name), None)
        info.update(name=name, peak_bf16_tflops=peak)
    else:
        info.update(name=_cpu_name(), peak_bf16_tflops=None,
                    cpu_bf16=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
                    peak_note="no data-sheet peak for CPUs: fractions are of the matmul rate measured in this run")
    return info


def matmul_peak(device: torch.device, dtype: torch.dtype, sizes: tuple[int, ...] = (),
                seconds: float = 0.5) -> dict:
    """This machine's dense matrix-multiply rate in `dtype`, measured: square torch.matmul at a few sizes,
    the best timed block of each within `seconds`. The best size's rate is the peak training is held to:
    what these threads can reach on the simplest dense work, in the precision training computes in."""
    sizes = sizes or ((1024, 2048, 4096) if device.type == "cpu" else (4096, 8192, 16384))
    g = torch.Generator(device=device).manual_seed(0)
    rates = {}
    for n in sizes:
        a, b = (torch.randn(n, n, generator=g, device=device).to(dtype) for _ in range(2))
        out = torch.matmul(a, b)  # the first call picks kernels and allocates
        sync(device)
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        sync(device)
        reps = max(1, math.ceil(0.01 / max(time.perf_counter() - t0, 1e-9)))  # blocks of >= 10 ms
        best, deadline, blocks = 0.0, time.perf_counter() + seconds, 0
        while blocks < 3 or time.perf_counter() < deadline:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.matmul(a, b, out=out)
            sync(device)
            best = max(best, 2 * n**3 * reps / (time.perf_counter() - t0))
            blocks += 1
        rates[str(n)] = round(best / 1e12, 4)
        del a, b, out
    return {"precision": str(dtype).replace("torch.", ""), "tflop_per_s": max(rates.values()),
            "by_size": rates, "threads": torch.get_num_threads()}


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def sync(device: torch.device) -> None:
    """Wait for the device's queued work, so a timer around it times the work (CUDA and MPS are asynchronous)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:  # Linux: writing 5 to clear_refs resets the peak resident size (VmHWM)
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mib(device: torch.device) -> dict:
    """CUDA: the allocator's peak since the last reset. CPU: peak resident set size of the process."""
    if device.type == "cuda":
        # reserved too: a CUDA graph's private memory pool is reserved at capture, before the timing
        return {"cuda_max_allocated_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1),
                "cuda_reserved_mib": round(torch.cuda.memory_reserved(device) / 2**20, 1)}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"peak_rss_mib": round(int(line.split()[1]) / 1024, 1)}
    return {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


# ---- inputs ---------------------------------------------------------------------------------


def synthetic_data(cfg: TrainConfig, n: int) -> ImageData:
    """Random uint8 images of the configured shape: speed does not depend on what they show."""
    g = torch.Generator().manual_seed(0)
    shape = (n, cfg.channels, cfg.image_size, cfg.image_size)
    train = torch.randint(0, 256, shape, dtype=torch.uint8, generator=g)
    return ImageData(name="synthetic", train=train, val=train[:16])


def count_flops(cfg: TrainConfig) -> dict:
    """FLOPs per image of one training iteration and of one generated image (eager, fp32, CPU,
    a batch of 8; convolution FLOPs scale linearly with the batch). The iteration is one without the lazy
    R1 penalty (it rides on one step in R1_EVERY; FlopCounterMode cannot follow its double backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..train import GANTraining

    small = cfg.replace(batch_size=8, device="cpu", precision="fp32", r1_gamma=0.0)
    run = GANTraining(small, synthetic_data(small, 16))
    with FlopCounterMode(display=False) as counter:
        run.train_step()
    train = counter.get_total_flops() / small.batch_size
    G = run.G.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        G(torch.randn(small.batch_size, small.nz), None if not small.num_classes
          else torch.zeros(small.batch_size, dtype=torch.long))
    return {"train_per_image": train, "generate_per_image": counter.get_total_flops() / small.batch_size}


# ---- the two training loops ---------------------------------------------------------------------


def plain_loop(cfg: TrainConfig, data: ImageData, device: torch.device):
    """The straightforward DCGAN loop (as in pytorch/examples dcgan/main.py); returns step()."""
    torch.manual_seed(cfg.seed)
    G, D = (m.to(device) for m in build_models(cfg))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(to_float(data.train)),
                                         batch_size=cfg.batch_size, shuffle=True, drop_last=True)
    criterion = nn.BCEWithLogitsLoss()

    def batches():
        while True:
            for (x,) in loader:
                yield x

    it = batches()

    def step() -> tuple[float, float, float, float]:
        real = next(it).to(device)
        b = real.shape[0]
        ones, zeros = torch.ones(b, device=device), torch.zeros(b, device=device)
        # (1) D: real batch, then fake batch
        D.zero_grad()
        out_real = D(real)
        err_real = criterion(out_real, ones)
        err_real.backward()
        fake = G(torch.randn(b, cfg.nz, device=device))
        out_fake = D(fake.detach())
        err_fake = criterion(out_fake, zeros)
        err_fake.backward()
        opt_d.step()
        # (2) G: make D call the fakes real
        G.zero_grad()
        out = D(fake)
        err_g = criterion(out, ones)
        err_g.backward()
        opt_g.step()
        return (err_real.item() + err_fake.item(), err_g.item(),
                torch.sigmoid(out_real).mean().item(), torch.sigmoid(out_fake).mean().item())

    return step


def fast_loop(cfg: TrainConfig, data: ImageData, graphs: bool = True):
    """The step fit() runs, with its host sync every log_interval steps; returns step()."""
    from ..cuda_graph import CudaGraphStep
    from ..train import GANTraining, log_interval

    run = GANTraining(cfg, data)
    train_step = CudaGraphStep(run) if graphs and CudaGraphStep.supported(run) else run.train_step
    every = log_interval(cfg, run.device)
    window: list[torch.Tensor] = []

    def step() -> None:
        window.append(train_step().as_tensor())
        if len(window) >= every:
            flush()

    def flush() -> None:
        if window:
            torch.stack(window).cpu()
            window.clear()

    step.flush = flush  # type: ignore[attr-defined]
    return step


def time_loops(loops: dict, steps: int, warmup: int, device: torch.device, batch: int,
               flops_per_image: float) -> dict[str, dict]:
    """Time each loop's step().

    CUDA: one loop after the other, each as one block between two syncs (the fast loop's point is
    to not sync in between). CPU: the loops interleaved step by step and the median step taken, so
    that other processes on the same cores slow both alike and the ratio stays fair."""
    results: dict[str, dict] = {}

    def summary(seconds_per_step: float) -> dict:
        return {"steps": steps, "ms_per_iteration": round(1000 * seconds_per_step, 3),
                "images_per_s": round(batch / seconds_per_step, 1),
                "tflop_per_s": round(flops_per_image * batch / seconds_per_step / 1e12, 4)}

    if device.type == "cuda":
        for name, step in loops.items():
            for _ in range(warmup):
                step()
            getattr(step, "flush", lambda: None)()
            sync(device)
            reset_peak_memory(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                step()
            getattr(step, "flush", lambda: None)()
            sync(device)
            results[name] = summary((time.perf_counter() - t0) / steps) | peak_memory_mib(device)
        return results
    times: dict[str, list[float]] = {name: [] for name in loops}
    reset_peak_memory(device)
    for i in range(warmup + steps):
        for name, step in loops.items():
            t0 = time.perf_counter()
            step()
            getattr(step, "flush", lambda: None)()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
    peak = peak_memory_mib(device)  # of the process, all loops together
    return {name: summary(statistics.median(t)) | peak for name, t in times.items()}


def whole_logs(cfg: TrainConfig, steps: int, warmup: int) -> tuple[int, int]:
    """(steps, warmup) rounded up to whole log intervals, so the Trainer's rows bound the timed steps."""
    from ..train import log_interval, resolve_device

    every = log_interval(cfg, resolve_device(cfg.device))
    return every * math.ceil(steps / every), every * math.ceil(warmup / every)


def time_bare(step, steps: int, device: torch.device, batch: int) -> dict:
    """The bare loop (fast_loop's step) as one block of `steps`, timed like the Trainer: the whole block."""
    step.flush()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    step.flush()
    sync(device)
    elapsed = time.perf_counter() - t0
    return {"steps": steps, "ms_per_iteration": round(1000 * elapsed / steps, 3),
            "images_per_s": round(steps * batch / elapsed, 1)}


def time_trainer(cfg: TrainConfig, data: ImageData, steps: int, warmup: int) -> dict:
    """The app's Trainer (a training process with this process's torch thread count, every row and picture
    sent back, plots and grid snapshots every sample_every_s), timed from its own metric rows so that
    start-up and the final checkpoint stay out of the numbers."""
    from ..trainer import Trainer

    steps, warmup = whole_logs(cfg, steps, warmup)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(threads=torch.get_num_threads())
        trainer.start(cfg.replace(steps=warmup + steps, checkpoint_every=0, out_dir=tmp, run_name="bench"),
                      data=data)
        state = trainer.wait()
        if state != "finished":
            raise RuntimeError(f"the trainer ended {state}: {trainer.status().error}")
        rows = trainer.metrics.since(0)
    first = next(r for r in rows if r["iteration"] >= warmup)
    last = rows[-1]
    elapsed = last["time"] - first["time"]
    done = last["iteration"] - first["iteration"]
    return {"steps": done, "ms_per_iteration": round(1000 * elapsed / done, 3),
            "images_per_s": round(done * cfg.batch_size / elapsed, 1)}


TRAINER_ROUNDS = 2


def compare_trainer(cfg: TrainConfig, data: ImageData, steps: int, warmup: int, graphs: bool) -> dict:
    """The app's Trainer against the bare loop it runs, side by side: bare, Trainer, bare, Trainer, bare
    (TRAINER_ROUNDS Trainers); the ratio is of the means, so a load that drifts during the run (on a shared
    VM the same bare block varies by a quarter within minutes) weighs on both sides alike."""
    device = torch.device(cfg.device)
    steps, warmup = whole_logs(cfg, steps, warmup)
    step = fast_loop(cfg, data, graphs=graphs)
    for _ in range(warmup):
        step()
    blocks, runs = [time_bare(step, steps, device, cfg.batch_size)], []
    for _ in range(TRAINER_ROUNDS):
        runs.append(time_trainer(cfg, data, steps, warmup))
        blocks.append(time_bare(step, steps, device, cfg.batch_size))
    bare = statistics.mean(b["images_per_s"] for b in blocks)
    trainer = statistics.mean(r["images_per_s"] for r in runs)
    return {"bare": {"blocks": blocks, "images_per_s": round(bare, 1)},
            "trainer": {"runs": runs, "images_per_s": round(trainer, 1),
                        "ms_per_iteration": round(1000 * cfg.batch_size / trainer, 3)},
            "trainer_over_bare": round(trainer / bare, 3)}


def run_rates(trainers: list, warmup: int, batch: int) -> tuple[float, list[float]]:
    """(combined images/s, each run's) over the window in which every run was past its warm-up and still
    training, from the runs' own metric rows (wall-clock times, comparable between processes)."""
    rows = [t.metrics.since(0) for t in trainers]
    t0 = max(next(r["time"] for r in rs if r["iteration"] >= warmup) for rs in rows)
    t1 = min(rs[-1]["time"] for rs in rows)
    if t1 <= t0:
        raise RuntimeError("the runs did not train at the same time; give more --steps")
    rates = []
    for rs in rows:
        inside = [r for r in rs if t0 <= r["time"] <= t1]
        first, last = inside[0], inside[-1]
        rates.append((last["iteration"] - first["iteration"]) * batch / max(last["time"] - first["time"], 1e-9))
    return sum(rates), rates


def time_lanes(cfg: TrainConfig, data: ImageData, n: int, steps: int, warmup: int, threads: int) -> dict:
    """n runs trained at once, as the app's lanes train them (dcgan.studio.Studio: each a Trainer, a training
    process of its own with `threads` torch threads), each with its own seed; combined and per-run images/s."""
    from ..trainer import Trainer

    steps, warmup = whole_logs(cfg, steps, warmup)
    with tempfile.TemporaryDirectory() as tmp:
        from ..studio import BRANCH_NICE

        # the lanes beside the first give way, as the app's branches do (SCHED_IDLE on Linux)
        trainers = [Trainer(threads=threads, nice=BRANCH_NICE if i else 0) for i in range(n)]
        for i, trainer in enumerate(trainers):
            trainer.start(cfg.replace(steps=warmup + steps, checkpoint_every=0, out_dir=tmp, run_name=f"lane{i}",
                                      seed=i), data=data)
        for trainer in trainers:
            if trainer.wait() != "finished":
                raise RuntimeError(f"a run ended {trainer.status().state}: {trainer.status().error}")
        combined, rates = run_rates(trainers, warmup, cfg.batch_size)
    return {"runs": n, "images_per_s": round(combined, 1), "each": [round(r, 1) for r in rates]}


def compare_lanes(cfg: TrainConfig, data: ImageData, n: int, steps: int, warmup: int) -> dict:
    """One run alone against n at once, each with the torch threads the app gives a run when it allows n at once
    (dcgan.studio.Studio shares the training threads out between its lanes), side by side: one, n, one, n, one;
    lanes_over_one is the ratio of the means (combined images/s of n at once / one run alone)."""
    from ..studio import Studio

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        threads = Studio(tmp, threads=max(1, cores - 1), max_runs=n).threads  # as app.py's ui.state.Studio
    alone, together = [], []
    for _ in range(TRAINER_ROUNDS):
        alone.append(time_lanes(cfg, data, 1, steps, warmup, threads))
        together.append(time_lanes(cfg, data, n, steps, warmup, threads))
    alone.append(time_lanes(cfg, data, 1, steps, warmup, threads))
    one = statistics.mean(r["images_per_s"] for r in alone)
    many = statistics.mean(r["images_per_s"] for r in together)
    return {"lanes": {"runs": n, "threads_per_run": threads, "alone": alone, "together": together,
                      "one_images_per_s": round(one, 1), "together_images_per_s": round(many, 1),
                      "lanes_over_one": round(many / one, 3)}}


LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


def generate_ways(dtype: torch.dtype) -> list[tuple[str, torch.dtype]]:
    """The ways the fast path may run G: both memory layouts, in the run's precision and in fp32.
    ("nchw", fp32) is the plain way, so the fast path's choice is never one the plain path beats."""
    dtypes = [dtype] + ([torch.float32] if dtype != torch.float32 else [])
    return [(layout, d) for d in dtypes for layout in LAYOUTS]


def generate_once(G: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None, device: torch.device,
                  dtype: torch.dtype) -> float:
    """Seconds for one batch through G (eval, inference mode), to float images."""
    cast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), cast:
        G(z, labels).float()
    sync(device)
    return time.perf_counter() - t0


def time_generate(cfg: TrainConfig, device: torch.device, batch: int, repeats: int, calibrate: int = 3) -> dict:
    """G on one batch in eval mode: plain (fp32, NCHW) against fast, whose layout and precision are chosen
    by measurement. channels_last and bf16 are usually faster but not everywhere (fp32 channels_last was
    slower on an AVX2-only CPU; bf16 does not pay at batch 1 on a GPU), so every way in generate_ways is
    timed for `calibrate` rounds and the fastest is kept; then plain and the chosen way are timed
    interleaved for `repeats` rounds (fresh rounds: the choice's own timings are not reused)."""
    from ..train import resolve_precision

    torch.manual_seed(0)
    G = Generator.from_config(cfg).to(device).eval()
    nets = {layout: copy.deepcopy(G).to(memory_format=fmt) for layout, fmt in LAYOUTS.items()}
    z = torch.randn(batch, cfg.nz, device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device) if cfg.num_classes else None
    ways = generate_ways(resolve_precision(cfg.precision, device))
    name = lambda way: f"{way[0]}+{str(way[1]).replace('torch.', '')}"  # noqa: E731
    trial: dict[str, list[float]] = {name(w): [] for w in ways}
    for i in range(2 + calibrate):  # two warm-up rounds, then the choice
        for way in ways:
            seconds = generate_once(nets[way[0]], z, labels, device, way[1])
            if i >= 2:
                trial[name(way)].append(seconds)
    chosen = min(ways, key=lambda w: statistics.median(trial[name(w)]))
    plain_way = ("nchw", torch.float32)
    times: dict[str, list[float]] = {"plain": [], "fast": []}
    for _ in range(repeats):
        for key, way in (("plain", plain_way), ("fast", chosen)):
            times[key].append(generate_once(nets[way[0]], z, labels, device, way[1]))

    def summary(way: tuple[str, torch.dtype], seconds: list[float]) -> dict:
        ms = 1000 * statistics.median(seconds)
        return {"batch": batch, "precision": str(way[1]).replace("torch.", ""), "memory_format": way[0],
                "ms": round(ms, 3), "images_per_s": round(batch * 1000 / ms, 1)}

    plain = summary(plain_way, times["plain"])
    fast = summary(chosen, times["fast"]) | {
        "chosen_from_ms": {k: round(1000 * statistics.median(v), 3) for k, v in trial.items()}}
    return {"batch": batch, "plain": plain, "fast": fast,
            "fast_over_plain": round(fast["images_per_s"] / plain["images_per_s"], 2)}


# ---- the command ------------------------------------------------------------------------------


def bench(args: argparse.Namespace) -> dict:
    from ..train import resolve_device, resolve_precision

    device = resolve_device(args.device)
    base = TrainConfig(dataset="digits", image_size=args.image_size, channels=args.channels,
                       ngf=args.ngf, ndf=args.ndf, nz=args.nz, device=str(device.type),
                       precision=args.precision, seed=0, r1_gamma=0.0)  # the same algorithm as the plain loop
    dtype = resolve_precision(base.precision, device)  # bf16 only where the hardware says it has it
    batches = [int(b) for b in str(args.batch).split(",")]
    out: dict = {"device": device_info(device),
                 "config": {"image_size": base.image_size, "channels": base.channels, "ngf": base.ngf,
                            "ndf": base.ndf, "nz": base.nz,
                            "cuda_graphs": device.type == "cuda" and not args.no_graphs,
                            "precision": str(dtype).replace("torch.", ""),
                            "data": "random uint8 images (speed does not depend on content)"},
                 "mode": args.mode, "loadavg_before": _loadavg(), "train": [], "generate": []}
    if args.mode == "latent":
        from .. import latent

        out["latent"] = latent.benchmark_latency(image_size=args.image_size, ngf=args.ngf, nz=args.nz,
                                                 channels=args.channels)
        return out
    flops = count_flops(base)
    out["flops"] = flops
    # the machine's matmul rate in the training precision, before and after the training loops (the same
    # run, so the same threads and about the same load); the better of the two is the peak
    matmul = {"before": matmul_peak(device, dtype)}
    peak = out["device"].get("peak_bf16_tflops")
    for batch in batches:
        cfg = base.replace(batch_size=batch)
        data = synthetic_data(cfg, max(args.images, 2 * batch))
        row: dict = {"batch": batch}
        loops = {}
        if args.mode in ("plain", "both"):
            loops["plain"] = plain_loop(cfg, data, device)
        if args.mode in ("fast", "both"):
            loops["fast"] = fast_loop(cfg, data, graphs=not args.no_graphs)
        row.update(time_loops(loops, args.steps, args.warmup, device, batch, flops["train_per_image"]))
        loops.clear()
        if peak and "fast" in row:
            row["fast"]["fraction_of_bf16_peak"] = round(row["fast"]["tflop_per_s"] / peak, 4)
        if "plain" in row and "fast" in row:
            row["fast_over_plain"] = round(row["fast"]["images_per_s"] / row["plain"]["images_per_s"], 2)
        if args.trainer:
            row.update(compare_trainer(cfg, data, args.steps, args.warmup, graphs=not args.no_graphs))
        if args.lanes > 1:
            row.update(compare_lanes(cfg, data, args.lanes, args.steps, args.warmup))
        out["train"].append(row)
        _report(row, file=sys.stderr)
        del data
    for batch in (1, args.generate_batch):
        entry = time_generate(base, device, batch, args.generate_repeats)
        out["generate"].append(entry)
        _report(entry, file=sys.stderr)
    matmul["after"] = matmul_peak(device, dtype)
    best = max(matmul.values(), key=lambda m: m["tflop_per_s"])
    out["matmul_peak"] = {"precision": best["precision"], "tflop_per_s": best["tflop_per_s"],
                          "threads": best["threads"], **{k: v["by_size"] for k, v in matmul.items()}}
    for row in out["train"]:
        for key in ("fast", "trainer"):
            if key in row:
                tflops = row[key].get("tflop_per_s") or row[key]["images_per_s"] * flops["train_per_image"] / 1e12
                row[key]["tflop_per_s"] = round(tflops, 4)
                row[key]["fraction_of_matmul_peak"] = round(tflops / best["tflop_per_s"], 4)
    fast_rows = [r for r in out["train"] if "fast" in r]
    if fast_rows:
        top = max(fast_rows, key=lambda r: r["fast"]["tflop_per_s"])
        out["best_fast"] = {"batch": top["batch"], "tflop_per_s": top["fast"]["tflop_per_s"],
                            "fraction_of_matmul_peak": top["fast"]["fraction_of_matmul_peak"]}
        if peak:
            out["best_fast"]["fraction_of_bf16_peak"] = top["fast"]["fraction_of_bf16_peak"]
        print(f"matmul peak {best['tflop_per_s']:.3f} TFLOP/s ({best['precision']}, {best['threads']} threads); "
              f"fast training reaches {top['fast']['tflop_per_s']:.3f} TFLOP/s = "
              f"{100 * top['fast']['fraction_of_matmul_peak']:.1f} % of it (batch {top['batch']})",
              file=sys.stderr, flush=True)
    out["loadavg_after"] = _loadavg()
    return out


def _loadavg() -> list[float] | None:
    with contextlib.suppress(OSError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def _report(row: dict, file) -> None:
    parts = [f"batch {row['batch']}"]
    for key in ("plain", "fast", "trainer"):
        if key in row:
            r = row[key]
            ms = r.get("ms_per_iteration", r.get("ms"))
            parts.append(f"{key}: {r['images_per_s']:.0f} img/s, {ms:.2f} ms")
    if "bare" in row:
        parts.append(f"bare loop beside it: {row['bare']['images_per_s']:.0f} img/s")
    if "memory_format" in row.get("fast", {}):
        parts.append(f"fast chose {row['fast']['memory_format']} {row['fast']['precision']}")
    for key in ("fast_over_plain", "trainer_over_bare"):
        if key in row:
            parts.append(f"{key} {row[key]}")
    if "lanes" in row:
        lanes = row["lanes"]
        parts.append(f"{lanes['runs']} runs at once: {lanes['together_images_per_s']:.0f} img/s against "
                     f"{lanes['one_images_per_s']:.0f} alone ({lanes['threads_per_run']} thread(s) each): "
                     f"lanes_over_one {lanes['lanes_over_one']}")
    print(" | ".join(parts), file=file, flush=True)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bench", help="measure training and sampling speed and memory (JSON)")
    p.add_argument("--mode", choices=MODES, default="fast",
                   help="plain (textbook fp32 loop), fast (the training path), both (side by side, "
                        "with the ratio) or latent (latent-slider latency on the CPU)")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    p.add_argument("--image-size", type=int, default=64, help="image side (default: 64)")
    p.add_argument("--channels", type=int, default=3, help="1 or 3 (default: 3)")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--batch", default="64", help="batch size, or a comma list to sweep (default: 64)")
    p.add_argument("--steps", type=int, default=20, help="timed iterations per loop (default: 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default: 3)")
    p.add_argument("--precision", default="auto", help="fast loop: auto, bf16 or fp32")
    p.add_argument("--no-graphs", action="store_true", help="fast loop: eager steps, no CUDA graph")
    p.add_argument("--trainer", action="store_true",
                   help="also time the app's Trainer (a training process) beside the bare loop it runs: bare, "
                        "Trainer, bare, Trainer, bare; reports trainer_over_bare")
    p.add_argument("--lanes", type=int, default=0,
                   help="also time N runs at once as the app's lanes train them (each a training process with "
                        "the app's threads per run) against one alone: one, N, one, N, one; reports lanes_over_one")
    p.add_argument("--images", type=int, default=2048, help="size of the random data set (default: 2048)")
    p.add_argument("--generate-batch", type=int, default=0,
                   help="large batch for generator inference (default: 1024 on a GPU, 64 on the CPU)")
    p.add_argument("--generate-repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.set_defaults(func=cmd_bench)
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.generate_batch:
        args.generate_batch = 1024 if torch.cuda.is_available() and args.device in ("auto", "cuda") else 64
    result = bench(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


__all__ = ["bench", "add_parser", "count_flops", "plain_loop", "fast_loop", "synthetic_data"]
