"""A class on one app, in one command (issue 27): start the app with the default digits run training on the CPU,
let N visitors (pictures fetched, as a browser does) and a real Chromium page explore it, R times in a row, and
write every crowd's result and the targets met into one JSON file.

    python scripts/crowd_class.py --out docs/crowd_cpu_class.json            # 3 x (30 visitors, 60 s, 1 page)
    python scripts/crowd_class.py --runs 1 --users 10 --seconds 30 --out /tmp/c.json   # a short one

The app runs in a process of its own (`python scripts/crowd_class.py --serve ...`, the same `app.build_app` and
`app.launch` as `python app.py`), so the crowd's clients never share its GIL; it is stopped with SIGTERM at the end
(which saves the run). Exit code 0 when every run met the targets, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the targets (2-core CPU, 30 visitors, 60 s, the default digits run training, pictures fetched)
TARGETS = {"failed": 0, "page_sliders_p95_s": 0.5, "page_samples_p95_s": 1.5, "use_live_p95_s": 2.0,
           "training_over_solo": 0.70}


def serve(port: int, checkpoints: str, branches: int = 0) -> None:
    """The app with the default digits recipe training on the CPU (what a class would watch); branches: that many
    What-if branches of it (D learns ×½) training beside it from its 50th iteration (issue 24's two runs at once)."""
    import threading

    import app
    from dcgan.config import TrainConfig
    from dcgan.studio import use_cache_dir
    from ui.state import Studio

    studio = Studio(checkpoints, max_runs=max(2, branches + 1))
    use_cache_dir(studio.cache_dir)
    studio.start(TrainConfig.from_preset("default", dataset="digits", device="cpu", steps=10**6, out_dir=checkpoints))

    def branch() -> None:
        while studio.trainer.status().iteration < 50:
            time.sleep(0.5)
        for _ in range(branches):
            studio.what_if(0, "D learns ×½")

    threading.Thread(target=branch, daemon=True).start()
    app.save_on_sigterm(studio)
    app.launch(app.build_app(studio), studio, "127.0.0.1", port)


def wait_for_run(url: str, timeout: float) -> dict:
    """Until the app answers and its run has drawn its first pictures (a visitor can use the live run)."""
    from dcgan.tools.crowd import TrainingWatch, describe

    deadline = time.time() + timeout
    while True:
        try:
            endpoints = describe(url, 30)
            reading = TrainingWatch(url, endpoints, None, 30).read()
            if reading.get("iteration", 0) >= 100:
                return reading
        except Exception as exc:  # not up yet
            if time.time() > deadline:
                raise TimeoutError(f"the app at {url} did not come up with a training run: {exc}") from exc
        if time.time() > deadline:
            raise TimeoutError(f"the app at {url} did not start training within {timeout:.0f} s")
        time.sleep(1)


def verdict(result: dict) -> dict:
    """Each target of the issue: the measured value and whether it is met."""
    actions = result["actions"]
    p95 = lambda name: (actions.get(name) or {}).get("p95_s")  # noqa: E731
    measured = {"failed": result["failed"], "page_sliders_p95_s": p95("page_sliders"),
                "page_samples_p95_s": p95("page_samples"), "use_live_p95_s": p95("use_live"),
                "training_over_solo": result["training"]["during_over_before"]}
    met = {k: v is not None and (v <= TARGETS[k] if k != "training_over_solo" else v >= TARGETS[k])
           for k, v in measured.items()}
    return {"measured": measured, "met": met, "all_met": all(met.values())}


def commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the app's own process
    p.add_argument("--port", type=int, default=7891)
    p.add_argument("--checkpoints", default=None, help="the app's folder (default: a new temporary one)")
    p.add_argument("--runs", type=int, default=3, help="crowds in a row against the same app (default: 3)")
    p.add_argument("--users", type=int, default=30)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--pages", type=int, default=1, help="real Chromium pages among the visitors (default: 1)")
    p.add_argument("--processes", type=int, default=2, help="processes for the scripted visitors (default: 2)")
    p.add_argument("--baseline", type=float, default=20, help="seconds of solo training before each crowd")
    p.add_argument("--branches", type=int, default=0,
                   help="What-if branches training beside the run (several runs at once; default: 0)")
    p.add_argument("--seed", type=int, default=0,
                   help="the first crowd's seed; the next ones take seed+1, ... (default: 0)")
    p.add_argument("--no-retry", dest="retry", action="store_false", help="see `dcgan crowd --help`")
    p.add_argument("--out", default="crowd_class.json")
    args = p.parse_args(argv)
    checkpoints = args.checkpoints or tempfile.mkdtemp(prefix="dcgan_class_")
    if args.serve:
        serve(args.port, checkpoints, args.branches)
        return 0

    from dcgan.tools.crowd import crowd, table

    url = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADIO_ANALYTICS_ENABLED": "False"}
    Path(checkpoints).mkdir(parents=True, exist_ok=True)
    log = open(Path(checkpoints) / "app.log", "w")  # noqa: SIM115  (open for the app's whole life)
    server = subprocess.Popen([sys.executable, __file__, "--serve", "--port", str(args.port), "--checkpoints",
                               checkpoints, "--branches", str(args.branches)], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    runs = []
    try:
        wait_for_run(url, 300)
        for i in range(args.runs):
            result = crowd(url, users=args.users, seconds=args.seconds, baseline_s=args.baseline,
                           processes=args.processes, pages=args.pages, retry=args.retry, seed=args.seed + i)
            result["verdict"] = verdict(result)
            runs.append(result)
            print(f"--- run {i + 1} of {args.runs}\n{table(result)}\ntargets: {result['verdict']}", flush=True)
    finally:
        server.send_signal(signal.SIGTERM)  # the app saves its run and ends
        try:
            server.wait(150)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit(), "cpus": os.cpu_count(),
              "targets": TARGETS, "all_met": bool(runs) and all(r["verdict"]["all_met"] for r in runs),
              "app_log": str(Path(checkpoints) / "app.log"), "runs": runs}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}; every target met in every run: {report['all_met']}")
    return 0 if report["all_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
