"""Inside G's costs (issue 25), for docs/PERFORMANCE.md:

    python tools/inside_bench.py OUT.json [--window 20] [--rounds 3] [--switches 200]

1. A unit switch at 64x64 (the classic G, ngf 64, random weights: speed does not depend on training), server side,
   one torch thread as a serving thread has: `inside.render` with one unit of layer 2 off plus the picture the page
   gets (median of --switches), and the panel's whole callback for a switch (`ui.inside_g.set_option`: layers
   picture, unit maps, both images), median of a quarter as many. The layer's ranking (computed once per model) is
   timed apart.
2. Training throughput with the open panel's refresh vs without: one digits run (28x28, default recipe) trains in
   the app's training process; this process plays an open Inside G panel (its timer's `draw` every POLL_S s,
   histogram included) in alternating windows of --window seconds, --rounds pairs; images/s of each window from
   the run's iterations.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcgan import inside  # noqa: E402
from dcgan.config import TrainConfig  # noqa: E402
from dcgan.images import image_array, upscale  # noqa: E402
from dcgan.models import Generator  # noqa: E402


def median_ms(fn, repeats: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))], "n": repeats}


def switch_cost(repeats: int, rank_samples: int) -> dict:
    from ui import inside_g
    from ui.state import LoadedModel, Studio

    torch.set_num_threads(1)
    cfg = TrainConfig(dataset="cifar10", image_size=64, channels=3, ngf=64, nz=100)
    torch.manual_seed(0)
    G = Generator.from_config(cfg).eval()
    z = torch.randn(1, 100, generator=torch.Generator().manual_seed(0))
    t = time.perf_counter()
    ranking = inside.rank_units(G, 2, n=rank_samples)
    rank_s = time.perf_counter() - t
    unit = ranking.order[0]

    def one_switch():
        maps = inside.render(G, z, None, [inside.Switch(2, unit)], {2: ranking})
        upscale(image_array(maps[-1][0]), 224)

    studio = Studio(tempfile.mkdtemp(prefix="inside-bench-"))
    model = LoadedModel("bench", G, cfg, "checkpoint", ("bench", 0))
    studio.inside_g().rankings.get(("bench", 0, 2), model.key, lambda: ranking)
    session = {"model": model, "z": z, "label": 0}
    seen = inside_g.draw(studio, session, {"open": True, "layer": 2})["seen"]
    units = iter(ranking.order * 10)

    def panel_switch():
        inside_g.set_option(studio, session, seen, "selected", [next(units)])

    return {"image": "64x64x3, classic G (ngf 64, 3.58 M parameters), layer 2 (256 units, 8x8)",
            "threads": 1, "rank_layer2_s": rank_s, "rank_samples": ranking.n, "effect_samples": ranking.effect_n,
            "render_one_switch": median_ms(one_switch, repeats),
            "panel_callback_switch": median_ms(panel_switch, max(10, repeats // 4))}


def throughput(window: float, rounds: int) -> dict:
    from dcgan.trainer import RUNNING
    from ui import inside_g
    from ui.state import Studio

    root = Path(tempfile.mkdtemp(prefix="inside-bench-"))
    studio = Studio(root)
    studio.inside_g()
    cfg = TrainConfig.from_preset("default", dataset="digits", image_size=28, channels=1, steps=10_000_000,
                                  device="cpu", seed=0, out_dir=str(root), checkpoint_every=0, metric_every=0)
    studio.start(cfg)
    panel_on = threading.Event()
    stop = threading.Event()
    draws: list[float] = []

    def panel() -> None:  # an open panel: the timer's draw every POLL_S, as a serving thread (one torch thread)
        torch.set_num_threads(1)
        seen: dict = {"open": True}
        while not stop.is_set():
            if panel_on.is_set():
                t = time.perf_counter()
                seen = inside_g.draw(studio, {"model": None}, seen)["seen"]
                draws.append(time.perf_counter() - t)
            stop.wait(inside_g.POLL_S)

    try:
        while studio.live_model() is None or studio.trainer.status().state != RUNNING:
            time.sleep(0.5)
        torch.set_num_threads(1)
        inside_g.draw(studio, {"model": None}, {"open": True})  # the layer's ranking and the judge: once per run
        thread = threading.Thread(target=panel, daemon=True)
        thread.start()
        windows = []
        for r in range(rounds):
            for on in ((False, True) if r % 2 == 0 else (True, False)):
                panel_on.set() if on else panel_on.clear()
                n0, it0, t0 = len(draws), studio.trainer.status().iteration, time.monotonic()
                time.sleep(window)
                it1, t1 = studio.trainer.status().iteration, time.monotonic()
                windows.append({"panel": on, "images_per_s": (it1 - it0) * cfg.batch_size / (t1 - t0),
                                "iterations": it1 - it0, "draws": len(draws) - n0,
                                "draw_s": sum(draws[n0:]), "load": os.getloadavg()[0]})
        stop.set()
    finally:
        studio.trainer.stop(wait=True, timeout=60)
    on = [w["images_per_s"] for w in windows if w["panel"]]
    off = [w["images_per_s"] for w in windows if not w["panel"]]
    pairs = [windows[i + 1]["images_per_s"] / windows[i]["images_per_s"] if windows[i + 1]["panel"] else
             windows[i]["images_per_s"] / windows[i + 1]["images_per_s"] for i in range(0, len(windows), 2)]
    return {"run": "digits 28x28, default recipe (ngf 32, batch 64), training process with the app's threads",
            "window_s": window, "rounds": rounds, "windows": windows,
            "images_per_s_on_median": statistics.median(on), "images_per_s_off_median": statistics.median(off),
            "ratio_per_pair": pairs, "ratio_median": statistics.median(pairs),
            "draw_median_ms": 1000 * statistics.median(draws) if draws else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--window", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--switches", type=int, default=200)
    parser.add_argument("--skip", choices=("switch", "throughput"))
    parser.add_argument("--rank-samples", type=int, default=inside.RANK_SAMPLES,
                        help="samples behind the ranking timed before the switches (their speed does not depend on it)")
    args = parser.parse_args()
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other "
                         f"jobs)", "torch": torch.__version__, "when": time.strftime("%Y-%m-%d %H:%M"),
              "load_before": os.getloadavg()}
    if args.skip != "switch":
        result["switch"] = switch_cost(args.switches, args.rank_samples)
        print(json.dumps(result["switch"], indent=1))
    if args.skip != "throughput":
        result["throughput"] = throughput(args.window, args.rounds)
        print(json.dumps({k: v for k, v in result["throughput"].items() if k != "windows"}, indent=1))
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
