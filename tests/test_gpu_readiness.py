"""GPU readiness: neither the app's process nor the forkserver its training processes fork from initialises
CUDA before a run starts (a CUDA context there would be inherited broken by every fork, and on ZeroGPU the
`spaces` package refuses to start). A sentinel records every call into torch.cuda._lazy_init."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys
    import tests.cuda_sentinel as sentinel  # before anything imports torch's users
    import torch
    import app
    from dcgan import worker
    from ui.state import Studio
    from dcgan.trainer import FINISHED, Trainer
    from tests.conftest import tiny_config

    studio = Studio(root=sys.argv[1])
    demo = app.build_app(studio)  # every tab laid out, every cache made
    import multiprocessing.forkserver as forkserver
    ctx = worker.context()  # the app's preload list, then the sentinel first in it
    ctx.set_forkserver_preload(["tests.cuda_sentinel", *forkserver._forkserver._preload_modules])
    trainer = Trainer(metric_fn=sentinel.seen)
    trainer.start(tiny_config(steps=2, metric_every=1, out_dir=sys.argv[1], device="cpu"))
    trainer.wait(60)
    assert trainer.status().state == FINISHED, trainer.status()
    child = trainer.history()[0]
    app_side = {"cuda_calls": len(sentinel.CALLS), "stacks": sentinel.CALLS[:2],
                "initialized": torch.cuda.is_initialized()}
    try:  # the sentinel sees a call that would initialise CUDA (here it fails: no GPU, or it succeeds)
        torch.cuda.current_device()
    except Exception:
        pass
    print(json.dumps({"app": app_side, "child": child, "probe": len(sentinel.CALLS)}))
""")


def test_neither_the_app_nor_the_forkserver_initialises_cuda_before_a_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["app"]["cuda_calls"] == 0, seen["app"]["stacks"]
    assert not seen["app"]["initialized"]
    assert seen["child"]["cuda_calls"] == 0  # the forkserver's preload and the CPU run: no CUDA
    assert not seen["child"]["initialized"]
    assert seen["probe"] >= 1  # the sentinel does see a call that initialises CUDA
