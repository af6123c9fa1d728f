"""The app as a real process: `python app.py --checkpoints DIR` started from another folder. SIGTERM (a Space or
container stopping) saves the live run under DIR; nothing lands in the working folder; a user's mistake is one
log line, not a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.browser import wait_for as wait_until
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.timeout(300)
def test_sigterm_saves_the_live_run_under_the_checkpoints_folder(tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    work, root = tmp_path / "cwd", tmp_path / "ck"
    work.mkdir()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), "--checkpoints", str(root)],
                            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until(lambda: serving(url) or proc.poll() is not None, 120, "the app to serve")
        assert proc.poll() is None, (tmp_path / "app.log").read_text()
        client = gradio_client.Client(url, verbose=False)
        info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/on_start"]
        settings = {"batch size": 32, "steps (iterations)": 100_000, "nz (noise size)": 32, "device": "cpu",
                    "ngf (g width)": 16, "ndf (d width)": 16, "precision": "fp32"}
        args = [settings.get(p["label"].lower(), p.get("parameter_default")) for p in info["parameters"]]
        assert client.predict(*args, api_name="/on_start").startswith("✓ Started")
        wait_until(lambda: "running" in str(client.predict(0.6, api_name="/train_status")), 60, "the run")
        progress = client.predict(api_name="/train_progress")  # the load test's cheap read of the run
        assert progress["state"] == "running" and progress["batch_size"] == 32 and progress["iteration"] >= 0
        with pytest.raises(Exception, match="Choose a model first"):  # a user's mistake: one log line, no traceback
            client.predict(0, 1.0, api_name="/explore_samples")
        time.sleep(2)  # a few iterations more than the last automatic save (there is none this early)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    output = (tmp_path / "app.log").read_text()
    assert code == 0, output
    saved = list(root.rglob("step_*.safetensors"))
    assert saved, output
    assert "SIGTERM" in output and "Traceback" not in output, output
    assert "user error" in output and "Choose a model first" in output
    assert sorted(p.name for p in work.iterdir()) == [], "the app wrote into its working folder"
