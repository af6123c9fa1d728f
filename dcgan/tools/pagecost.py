"""What an open page costs the machine: CPU seconds of a real Chromium page per 10 s on one tab, idle, with a
finished run on screen and while a run trains, with the run's images/s in each window.

A student runs `make run` and watches the page on the same cores that train. This serves the app in this
process (the code on PYTHONPATH, so two versions can be compared by running this file twice), opens headless
Chromium on it and reads the CPU time of the browser's processes (this process's descendants only) from /proc.

    python -m dcgan.tools.pagecost --out docs/pagecost.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TICK = os.sysconf("SC_CLK_TCK")


def proc_stat(pid: int, thread: int | None = None) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, or of one of its threads, from /proc (None once it is gone).
    (/proc/TID/stat would give the whole process's time: a thread's own is under /proc/PID/task/TID.)"""
    try:
        text = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def descendants(root: int) -> list[int]:
    """Every live process below root (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := proc_stat(int(entry))) is not None:
            children.setdefault(info[0], []).append(int(entry))
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += children.get(pid, [])
    return found


def descendants_cpu(root: int) -> float:
    """CPU seconds used so far by root's descendant processes (Chromium's, under Playwright's driver)."""
    return sum(info[1] for pid in descendants(root) if (info := proc_stat(pid)) is not None)


def children_of(pid: int) -> set[int]:
    return {int(e) for e in os.listdir("/proc") if e.isdigit() and (info := proc_stat(int(e))) is not None
            and info[0] == pid}


def window(studio, driver: int, seconds: float) -> dict:
    """CPU of the page and of the server over `seconds`, and how fast the run trained meanwhile."""
    trainer = studio.trainer
    page0, server0, it0, t0 = descendants_cpu(driver), sum(os.times()[:2]), trainer.status().iteration, \
        time.monotonic()
    time.sleep(seconds)
    page1, server1, it1, t1 = descendants_cpu(driver), sum(os.times()[:2]), trainer.status().iteration, \
        time.monotonic()
    cfg, per_10s = trainer.config, 10.0 / (t1 - t0)
    return {"page_cpu_s_per_10s": round((page1 - page0) * per_10s, 2),
            "server_cpu_s_per_10s": round((server1 - server0) * per_10s, 2),  # this process: the app's threads
            "iterations": it1 - it0,
            "images_per_s": round((it1 - it0) * (cfg.batch_size if cfg else 0) / (t1 - t0), 1)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(seconds: float, steps: int, repeats: int) -> dict:
    from playwright.sync_api import sync_playwright

    import app
    from dcgan.config import TrainConfig
    from ui.state import Studio

    tmp = Path(tempfile.mkdtemp(prefix="dcgan-pagecost-"))
    studio = Studio(tmp / "checkpoints")
    demo = app.build_app(studio)
    app.launch(demo, studio, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    cfg = TrainConfig(dataset="digits", steps=steps, device="cpu", out_dir=str(tmp / "checkpoints"),
                      checkpoint_every=0)
    me = os.getpid()
    before = children_of(me)
    results: dict[str, list[dict]] = {}

    def add(name: str, value: dict) -> None:
        results.setdefault(name, []).append(value)
        print(f"{name}: {value}", flush=True)

    with sync_playwright() as pw:
        drivers = children_of(me) - before  # Playwright's driver; Chromium runs under it
        if len(drivers) != 1:
            raise RuntimeError(f"cannot tell Playwright's driver among this process's children: {sorted(drivers)}")
        driver = drivers.pop()
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(demo.local_url)
        page.wait_for_selector("#start-btn")
        try:
            for _ in range(repeats):
                for tab in ("Train", "Hub"):
                    page.get_by_role("tab", name=tab).click()
                    time.sleep(3)
                    add(f"{tab} tab, no run", window(studio, driver, seconds))
                studio.trainer.start(cfg.replace(steps=10**7))
                time.sleep(8)  # past the start-up
                for tab in ("Train", "Hub", "Train", "Hub"):
                    page.get_by_role("tab", name=tab).click()
                    time.sleep(3)
                    add(f"{tab} tab, run training", window(studio, driver, seconds))
                studio.trainer.stop(wait=True)
                studio.trainer.reset()
                studio.trainer.start(cfg)
                studio.trainer.wait(600)
                for tab in ("Train", "Hub"):
                    page.get_by_role("tab", name=tab).click()
                    time.sleep(3)
                    add(f"{tab} tab, finished run on screen", window(studio, driver, seconds))
                studio.trainer.reset()
        finally:
            studio.trainer.stop(wait=True)
            chromium.close()
            demo.close()
    summary = {name: {k: round(statistics.median(v[k] for v in values), 2) for k in values[0]}
               for name, values in results.items()}
    return {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
            "seconds_per_window": seconds, "steps_of_finished_run": steps, "repeats": repeats,
            "median": summary, "windows": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dcgan.tools.pagecost", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured window")
    parser.add_argument("--steps", type=int, default=300, help="iterations of the finished run on screen")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--label", default="", help="a name for this version of the code, kept in the JSON")
    parser.add_argument("--out", help="write the JSON here")
    args = parser.parse_args(argv)
    result = {"label": args.label, **measure(args.seconds, args.steps, args.repeats)}
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(json.dumps(result["median"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
