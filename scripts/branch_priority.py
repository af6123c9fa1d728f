"""How long a slider-sized answer (one G forward, one 112-px PNG) takes while training runs beside it: one run, then
one run plus a second (a branch) at nice 10, then plus a second under Linux's SCHED_IDLE (issue 24; the app's
branches use SCHED_IDLE: dcgan.worker.give_way_to_others). Each answer wakes from a short sleep, as a request does.

    python scripts/branch_priority.py --rounds 2 --out docs/branch_priority_cpu.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SECOND = {"one run": None, "+ a run at nice 10": ["nice", "-n", "10"], "+ a run at SCHED_IDLE": ["chrt", "--idle", "0"]}


def answers(G, nz: int, n: int) -> list[float]:
    import torch
    from PIL import Image

    from dcgan.models import sample

    seconds = []
    for _ in range(n):
        time.sleep(0.08)
        t0 = time.perf_counter()
        x = sample(G, z=torch.randn(1, nz), labels=torch.zeros(1, dtype=torch.long) if G.num_classes else None)
        pixels = ((x[0, 0].clamp(-1, 1) + 1) * 127.5).byte().numpy()
        Image.fromarray(pixels).resize((112, 112)).save(io.BytesIO(), "PNG")
        seconds.append(time.perf_counter() - t0)
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--answers", type=int, default=150)
    p.add_argument("--settle", type=float, default=12.0, help="seconds of training before the answers are timed")
    p.add_argument("--out", default="branch_priority.json")
    args = p.parse_args(argv)
    import torch

    from dcgan.config import TrainConfig
    from dcgan.models import Generator
    from dcgan.tools.crowd import percentile

    torch.set_num_threads(1)
    cfg = TrainConfig.from_preset("default", dataset="digits", device="cpu")
    G = Generator.from_config(cfg).eval()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    train = [sys.executable, "-m", "dcgan", "train", "--device", "cpu", "--steps", "1000000", "--checkpoint-every",
             "1000000", "--metric-every", "0", "--log-every", "1000"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, prefix in SECOND.items():
                procs = [subprocess.Popen(train + ["--out-dir", f"{tmp}/a"], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)]
                if prefix:
                    procs.append(subprocess.Popen(prefix + train + ["--out-dir", f"{tmp}/b"], env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                time.sleep(args.settle)
                seconds = answers(G, cfg.nz, args.answers)
                for proc in procs:
                    proc.kill()
                    proc.wait()
                row = {"round": r + 1, "beside": name, "answers": len(seconds),
                       "p50_ms": round(1000 * statistics.median(seconds), 2),
                       "p95_ms": round(1000 * percentile(seconds, 95), 2)}
                rows.append(row)
                print(row, flush=True)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpus": os.cpu_count(), "rows": rows}
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
