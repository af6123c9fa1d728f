"""Every path that trains saves on the way out and scores itself: SIGTERM / SIGINT on a CLI run, and
`pull --resume` with its quality metrics (the path that once built its trainer without them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcgan.checkpoint import read, save_training
from dcgan.train import GANTraining
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_TESTtokenSTOP0123456789abcdefgh"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    # the metric caches where the rest of the suite has them (the user's cache folder): the digit classifier is
    # trained once per machine, not once more for these (1-2 minutes on a 2-core CPU)
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", **extra)
    return env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_the_cli_run_at_its_iteration_and_exits_0(tmp_path, sig):
    """Checkpoints only at the end (--checkpoint-every 0) and a run far from its end: the signal must
    leave a checkpoint of the iteration it stopped at, within 10 s, and exit code 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dcgan", "train", "--steps", "100000", "--checkpoint-every", "0", "--ngf", "8",
         "--ndf", "8", "--nz", "16", "--batch-size", "16", "--device", "cpu", "--out-dir", str(tmp_path),
         "--run-name", "stopped"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)
    try:
        assert proc.stdout.readline().startswith("training on"), proc.stderr.read()
        time.sleep(3)  # a few dozen steps into the loop
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert took < 10, f"took {took:.1f} s to save and exit"
    files = sorted((tmp_path / "stopped").glob("step_*.safetensors"))
    assert len(files) == 1, files
    _, meta = read(files[0])
    assert 0 < meta["iteration"] < 100000
    assert files[0].name == f"step_{meta['iteration']:08d}.safetensors"
    assert f"stopped at iteration {meta['iteration']}" in out
    assert f"{signal.Signals(sig).name}: stopping after this step" in out + err


def test_pull_resume_records_quality_metrics(tmp_path):
    from dcgan import hub
    from tests.hub_server import HubServer

    runs = tmp_path / "runs"
    cfg = tiny_config(steps=4, metric_every=4, out_dir=str(runs))
    run = GANTraining(cfg)
    for _ in range(cfg.steps):
        run.train_step()
    start = save_training(run, tmp_path / "start.safetensors")
    assert read(start)[1]["history"] == []
    with HubServer(tokens={TOKEN: "alice"}) as server:
        hub.push(start, "alice/resumable", token=TOKEN, endpoint=server.url, include_training_state=True)
        proc = subprocess.run(
            [sys.executable, "-m", "dcgan", "pull", "alice/resumable", "--resume", "--steps", "8",
             "--out-dir", str(runs)],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
            env=cli_env(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1"))
    assert proc.returncode == 0, proc.stderr
    _, meta = read(runs / "hub-alice--resumable" / "step_00000008.safetensors")
    assert [h["iteration"] for h in meta["history"]] == [8]
    record = meta["history"][0]
    assert record["score"] == record["digit_fd"] > 0 and 1 <= record["classes_covered"] <= 10
    assert "metrics at iteration 8" in proc.stdout + proc.stderr
