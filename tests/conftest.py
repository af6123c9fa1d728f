"""Shared fixtures: a small model trained on the bundled digits once per test session."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from dcgan.checkpoint import save_training
from dcgan.config import TrainConfig
from dcgan.data import load_dataset
from dcgan.train import GANTraining

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def tiny_config(**changes) -> TrainConfig:
    """A fast CPU config on the bundled digits (small nets, fp32 so results are exact)."""
    base = dict(dataset="digits", image_size=28, channels=1, ngf=16, ndf=16, nz=32, batch_size=32,
                steps=50, device="cpu", precision="fp32", sample_every_s=0.2, checkpoint_every=0)
    base.update(changes)
    return TrainConfig(**base)


@pytest.fixture(autouse=True)
def _metric_caches_restored(monkeypatch):
    """Where the metric caches are (use_cache_dir: app.main sets it for the app) is put back after each test. A test
    of app.main once left it in its temporary folder for the rest of the session; every later studio that showed a
    model then found no digit classifier there and trained one in a process of its own (1-2 minutes each, several
    at once), slowing the suite and its browser tests."""
    from dcgan import digit_classifier, metrics

    monkeypatch.setattr(digit_classifier, "CACHE_DIR", digit_classifier.CACHE_DIR)
    monkeypatch.setattr(metrics, "CACHE_DIR", metrics.CACHE_DIR)
    monkeypatch.setenv("DCGAN_CACHE", os.environ.get("DCGAN_CACHE", ""))
    if not os.environ["DCGAN_CACHE"]:
        monkeypatch.delenv("DCGAN_CACHE")  # unset before the test: unset after it


@pytest.fixture(autouse=True)
def _apps_closed():
    """The apps a test served (tests.browser.launch_app) end with it. Kept until the end of the session they
    trained on and polled Gradio's queue (every millisecond: ~8 % of a core each, idle): twenty browser tests' apps
    took more than a core from the tests after them (test_browser_inside: 131 s in the suite, 34 s alone)."""
    yield
    browser = sys.modules.get("tests.browser")
    if browser is not None:
        browser.close_apps()


def busy_leftovers(window_s: float = 1.0, floor: float = 0.2) -> list[str]:
    """This process's threads and its descendant processes that used more than `floor` of a core over window_s
    (Linux /proc; elsewhere nothing)."""
    if not Path("/proc/self/task").is_dir():
        return []
    from dcgan.tools.pagecost import descendants, proc_stat

    me = os.getpid()
    names = {(me, t.native_id): f"thread {t.name}" for t in threading.enumerate()}
    ids = [(me, int(t.name)) for t in Path("/proc/self/task").iterdir() if int(t.name) != threading.get_native_id()]
    for pid in descendants(me):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100]
        except OSError:
            continue
        names[(pid, None)] = f"process {pid} {command}"
        ids.append((pid, None))

    def cpu(pid: int, thread: int | None) -> float:
        info = proc_stat(pid, thread)
        return info[1] if info else 0.0

    before = [cpu(*i) for i in ids]
    time.sleep(window_s)
    return [f"{names.get(i, f'thread {i[1]}')}: {used / window_s:.2f} of a core"
            for i, start in zip(ids, before, strict=True) if (used := cpu(*i) - start) > floor * window_s]


@pytest.fixture(autouse=True, scope="module")
def _nothing_left_busy(request):
    """With DCGAN_TEST_LEFTOVERS=FILE, what each module leaves working (threads, processes) is written there: how
    test_app_callbacks' leftover warm-ups were found. Not a check: on a clean machine a studio may rightly start the
    digit classifier's first training (1-2 minutes, a process of its own) and leave it running."""
    yield
    out = os.environ.get("DCGAN_TEST_LEFTOVERS")
    if out:
        time.sleep(2.0)
        busy = busy_leftovers()
        with open(out, "a") as fh:
            fh.write(f"{request.node.nodeid}: {busy}\n")


@pytest.fixture(scope="session")
def digits_data():
    """The bundled digits at 28x28, grey, loaded once."""
    return load_dataset(tiny_config())


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, digits_data):
    """A checkpoint after 300 CPU steps on digits (ngf=ndf=32): digits-like, quick to make."""
    cfg = tiny_config(ngf=32, ndf=32, nz=100, batch_size=64, steps=300, seed=1)
    run = GANTraining(cfg, digits_data)
    for _ in range(cfg.steps):
        run.train_step()
    path = tmp_path_factory.mktemp("trained") / "digits.safetensors"
    save_training(run, path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
