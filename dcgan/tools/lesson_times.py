"""How long each built-in lesson takes to reach its point (issue 26: within 90 s of training on a 2-core CPU).

`python -m dcgan.tools.lesson_times --out docs/lesson_times_cpu.json [--lessons who-wins,collapse]` runs each
lesson's set-up exactly as its Run button does (dcgan.lessons.start on a Studio of its own, the training process
included), polls the lesson's reader once a second with one torch thread (as the app serves a page's poll), and
records the seconds from the click to the reveal, the iterations trained and the outcome, with the machine's load
average before and after each lesson.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from .. import lessons
from ..studio import Studio


def time_lesson(studio: Studio, lesson_id: str, limit_s: float = 300.0, poll_s: float = 1.0) -> dict:
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    lessons.start(studio, lesson_id)
    clicked = time.monotonic() - started
    reading = None
    while time.monotonic() - started < limit_s:
        reading = lessons.reading(studio, lesson_id)
        if reading is not None and reading.reached:
            break
        time.sleep(poll_s)
    revealed = time.monotonic() - started
    st = studio.trainer.status()
    studio.trainer.stop(wait=True)
    return {"lesson": lesson_id, "reached": bool(reading and reading.reached), "seconds_to_reveal": round(revealed, 1),
            "seconds_to_start": round(clicked, 1), "iterations": st.iteration,
            "outcome": None if reading is None else reading.value, "text": None if reading is None else reading.text,
            "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="")
    parser.add_argument("--lessons", default=",".join(lessons.BY_ID))
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the training process (the app's on a 2-core machine: 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the readers here run as the app's serving requests do (ui/queues.py)
    records = []
    with tempfile.TemporaryDirectory() as root:
        studio = Studio(Path(root) / "checkpoints", threads=args.threads)
        studio.trainer.warm_up()
        for lesson_id in args.lessons.split(","):
            record = time_lesson(studio, lesson_id.strip())
            print(json.dumps(record), flush=True)
            records.append(record)
    result = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
              "threads": args.threads, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "lessons": records}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
