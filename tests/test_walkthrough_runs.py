"""Issue 29, a newcomer's walkthrough of the Runs tab and the command line (items 13, 14 and 9 in part).

13: the runs table says how each run ended and which recipe it used, counts training time without the pauses,
names settings as the form does, fits the page, and every run (the app's too) writes samples.png.
14: `dcgan eval RUN` like `dcgan sample RUN`; the digit judge cached once per user, not per folder; `dcgan runs`
says where it looked; --help names the program as it was invoked.
9: the Runs tab shows the runs of the moment it is opened, and a run that ends changes the table.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcgan import runner, runs
from dcgan.config import TrainConfig
from dcgan.runner import RunFailed
from dcgan.tblog import TensorBoardHook, event_files
from dcgan.train import Control, Hook
from tests.browser import browser, launch_app, page, wait_for  # noqa: F401  (fixtures)
from tests.conftest import tiny_config

REPO = Path(__file__).resolve().parent.parent
QUICK = dict(dataset="digits", image_size=28, device="cpu", precision="fp32", checkpoint_every=0,
             sample_every_s=0.05)


class At(Hook):
    """Calls act(run) once, at the logged row of iteration `at`."""

    def __init__(self, at: int, act) -> None:
        self.at, self.act, self.done = at, act, False

    def on_log(self, run, row: dict) -> None:
        if row["iteration"] == self.at and not self.done:
            self.done = True
            self.act(run)


def killed_session(run_dir: Path, last: int) -> None:
    """A session that logged iterations 1..last and then died: its event file never got its end."""
    from types import SimpleNamespace

    run = SimpleNamespace(iteration=0, cfg=tiny_config())
    hook = TensorBoardHook(run_dir)
    hook.on_start(run)
    for i in range(1, last + 1):
        hook.on_log(run, {"iteration": i, "loss_d": 1.0, "loss_g": 1.0, "images_per_s": 1000.0, "time": time.time()})
    hook.writer.close()


def age(run_dir: Path, seconds: float) -> None:
    then = time.time() - seconds
    for path in event_files(run_dir):
        os.utime(path, (then, then))


@pytest.fixture(scope="module")
def made_runs(tmp_path_factory) -> Path:
    """checkpoints/ with runs that ended every way: finished (default recipe, and by its time limit), stopped
    early (classic recipe), failed (a custom recipe), and one whose process died."""
    root = tmp_path_factory.mktemp("walk") / "checkpoints"

    def cfg(preset: str | None, name: str, **changes) -> TrainConfig:
        settings = {**QUICK, "out_dir": str(root), "run_name": name, **changes}
        return TrainConfig.from_preset(preset, **settings) if preset else tiny_config(**settings)

    runner.train(cfg("default", "done-default", steps=4))
    runner.train(cfg("default", "clock-default", steps=10_000_000, minutes=0.01))
    control = Control()
    runner.train(cfg("classic", "stopped-classic", steps=2000), control=control,
                 hooks=[At(3, lambda run: control.stop())])

    def crash(run) -> None:
        raise RuntimeError("a failure in the middle of the run")

    with pytest.raises(RunFailed):
        runner.train(cfg(None, "failed-custom", steps=50, lr_g=3e-4), hooks=[At(5, crash)])
    runner.train(cfg(None, "killed", steps=2))
    killed_session(root / "killed", last=9)  # resumed from 2, then killed at 9 (no end in its event file)
    age(root / "killed", 3600)
    return root


def by_name(root: Path, live=None) -> dict[str, runs.RunInfo]:
    listed = runs.list_runs(root, live) if live else runs.list_runs(root)
    return {r.name: r for r in listed}


# ---- item 13: the runs table -------------------------------------------------------------------------


def test_item13_runs_table_shows_status_and_recipe(made_runs):
    from ui import runs_tab

    listed = by_name(made_runs)
    assert {n: (r.status, runs.recipe_of(r.config), r.iterations) for n, r in listed.items()} == {
        "done-default": ("finished", "default", 4),
        "clock-default": ("finished", "default", listed["clock-default"].iterations),  # its clock ended it
        "stopped-classic": ("stopped", "classic", 3),  # 3 of 2,000: not finished
        "failed-custom": ("failed", "custom", 5),
        "killed": ("interrupted", "custom", 9),
    }
    assert listed["clock-default"].iterations < 10_000_000

    # the app's trainer knows its own run for sure: a paused run, and one it is training now
    live = by_name(made_runs, {str(made_runs / "stopped-classic"): "paused",
                               str(made_runs / "killed"): "running"})
    assert (live["stopped-classic"].status, live["killed"].status, live["done-default"].status) == (
        "paused", "running", "finished")
    # an event file being written right now, with no end yet, is a run in progress
    age(made_runs / "killed", 0)
    try:
        assert by_name(made_runs)["killed"].status == "running"
    finally:
        age(made_runs / "killed", 3600)

    table = runs_tab.runs_table(runs.list_runs(made_runs))
    assert list(table.columns[:3]) == ["run", "status", "recipe"]
    row = table.set_index("run").loc["stopped-classic"]
    assert (row["status"], row["recipe"], row["iterations"]) == ("stopped", "classic", 3)
    text = runs.format_table(runs.list_runs(made_runs))
    assert "status" in text.splitlines()[0] and "failed" in text and "custom" in text


def test_item13_recipe_rule_is_the_forms(made_runs):
    """The Train tab's preset_of and the table's recipe column are one rule."""
    from dcgan.studio import preset_of

    cfg = TrainConfig.from_preset("classic", steps=5)
    assert preset_of(cfg) == runs.recipe_of(cfg.to_dict()) == "classic"
    assert runs.recipe_of(cfg.replace(lr_d=1e-3).to_dict()) == "custom"
    older = {k: v for k, v in TrainConfig().to_dict().items() if k != "r1_gamma"}  # a run from before R1
    assert runs.recipe_of(older) == "default"
    assert runs.recipe_of({}) == ""


def test_item13_training_time_leaves_out_paused_time(tmp_path):
    control = Control()

    def pause(run) -> None:
        control.pause()
        threading.Timer(3.0, control.resume).start()

    started = time.monotonic()
    runner.train(tiny_config(steps=30, out_dir=str(tmp_path), run_name="paused", sample_every_s=0.05),
                 control=control, hooks=[At(10, pause)])
    elapsed = time.monotonic() - started
    info = runs.read_run(tmp_path / "paused")
    rows = runs.curves(tmp_path / "paused").rows
    wall = rows[-1]["time"] - rows[0]["time"]  # what the table used to show: the pause included
    assert wall > 3.0
    assert info.training_s is not None and 0 < info.training_s < elapsed - 2.5, (info.training_s, elapsed, wall)
    assert info.row()["training time"] == runs._duration(info.training_s)
    assert "wall time" not in info.row()


def test_item13_training_time_of_a_resumed_run_adds_its_sessions(tmp_path):
    cfg = tiny_config(steps=20, out_dir=str(tmp_path), run_name="twice", checkpoint_every=10)
    runner.train(cfg)
    one = runs.read_run(tmp_path / "twice").training_s
    time.sleep(1.1)  # the next event file's name sorts after
    runner.train(cfg.replace(steps=40), resume_from=tmp_path / "twice")
    info = runs.read_run(tmp_path / "twice")
    assert info.iterations == 40 and info.status == "finished"
    assert one < info.training_s < 4 * one + 1.0  # twice the steps: about twice the time, never the gap between


def test_item13_settings_diff_uses_the_form_labels(made_runs):
    from dcgan.config import label
    from ui import runs_tab

    chosen = [by_name(made_runs)[n] for n in ("done-default", "stopped-classic")]
    rows = runs.settings_diff(chosen)
    names = [r["setting"] for r in rows]
    assert "lr_g" not in names and "ngf" not in names and "batch_size" not in names
    differing = {r["setting"] for r in rows if r["differs"]}
    assert {label("lr_g"), label("ngf"), label("steps"), label("run_name"), "Steps (iterations)"} <= differing
    frame = runs_tab.settings_frame(chosen).data
    assert "≠ lr G" in frame["setting"].tolist() and "≠ Steps (iterations)" in frame["setting"].tolist()


def test_item13_every_run_writes_samples_png(tmp_path):
    """The app's run (its training process) as well as the command line's: both go through runner.train."""
    from dcgan.trainer import Trainer

    trainer = Trainer()
    trainer.start(tiny_config(steps=6, out_dir=str(tmp_path), run_name="app-run", checkpoint_every=3))
    assert trainer.wait(120) == "finished"
    run_dir = tmp_path / "app-run"
    png = run_dir / "samples.png"
    assert png.is_file(), sorted(p.name for p in run_dir.iterdir())
    picture = np.asarray(Image.open(png).convert("L"))
    assert min(picture.shape) >= 512 and picture.std() > 5
    assert png.stat().st_mtime >= (run_dir / "step_00000006.safetensors").stat().st_mtime
    assert runs.latest_grid(run_dir)[1] == "samples.png"


def test_item9_a_run_that_ends_changes_the_table(made_runs):
    """The Runs tab's poll sends the table again when a run's status changes, even at the same iteration."""
    from types import SimpleNamespace

    from ui import runs_tab

    states = {str(made_runs / "stopped-classic"): "running"}
    studio = SimpleNamespace(checkpoints_dir=made_runs, run_states=lambda: dict(states))
    seen, table, *_ = runs_tab.poll(studio, None)
    assert table.set_index("run").loc["stopped-classic", "status"] == "running"
    assert not isinstance(runs_tab.poll(studio, seen)[1], type(table))  # nothing changed: nothing sent
    states[str(made_runs / "stopped-classic")] = "stopped"
    again, table, *_ = runs_tab.poll(studio, seen)
    assert again != seen and table.set_index("run").loc["stopped-classic", "status"] == "stopped"


# ---- item 14: the command line ------------------------------------------------------------------------


def cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "DCGAN_CACHE"}
    environ["PYTHONPATH"] = os.pathsep.join([str(REPO), environ.get("PYTHONPATH", "")])
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "dcgan", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=environ)


def seeded_cache(folder: Path) -> Path:
    """A digit judge already in a cache folder (untrained weights: what matters is that it is found, not retrained)."""
    import torch
    from safetensors.torch import save_file

    from dcgan.digit_classifier import DigitNet, cache_path

    path = cache_path(28, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.contiguous() for k, v in DigitNet().state_dict().items()}
    save_file({**tensors, "accuracy": torch.tensor(0.5)}, str(path))
    return path


def test_item14_digit_judge_is_cached_per_user(tmp_path):
    from dcgan import digit_classifier

    home = tmp_path / "home"
    judge = seeded_cache(home / ".cache" / "dcgan-studio")
    mtime = judge.stat().st_mtime_ns
    run = tmp_path / "checkpoints" / "done"
    runner.train(tiny_config(steps=2, out_dir=str(run.parent), run_name=run.name))
    for folder in ("one", "two"):  # eval from two new folders: neither gets a cache (nor a retrained judge)
        cwd = tmp_path / folder
        cwd.mkdir()
        started = time.monotonic()
        result = cli("eval", str(run), "--n", "64", "--inception", "no", cwd=cwd,
                     env={"HOME": str(home), "XDG_CACHE_HOME": ""})
        assert result.returncode == 0, result.stderr
        assert list(cwd.iterdir()) == [], list(cwd.rglob("*"))
        assert time.monotonic() - started < 45  # training the judge takes about a minute
    assert judge.stat().st_mtime_ns == mtime and "digit_fd" in result.stdout

    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(home)}
    assert digit_classifier.default_cache_dir(env) == tmp_path / "xdg" / "dcgan-studio"
    assert digit_classifier.default_cache_dir({**env, "DCGAN_CACHE": str(tmp_path / "mine")}) == tmp_path / "mine"
    assert digit_classifier.default_cache_dir({"HOME": str(home)}) == home / ".cache" / "dcgan-studio"


def test_item14_eval_takes_the_run_as_argument(tmp_path):
    cache = tmp_path / "cache"
    seeded_cache(cache)
    runner.train(tiny_config(steps=2, out_dir=str(tmp_path), run_name="r"))
    env = {"DCGAN_CACHE": str(cache)}
    positional = cli("eval", str(tmp_path / "r"), "--n", "32", "--inception", "no", cwd=tmp_path, env=env)
    assert positional.returncode == 0, positional.stderr
    flag = cli("eval", "--checkpoint", str(tmp_path / "r"), "--n", "32", "--inception", "no", cwd=tmp_path, env=env)
    assert flag.returncode == 0, flag.stderr
    assert positional.stdout == flag.stdout and '"digit_fd"' in flag.stdout

    neither = cli("eval", "--n", "32", cwd=tmp_path, env=env)
    assert neither.returncode == 2 and "RUN" in neither.stderr and "Traceback" not in neither.stderr
    both = cli("eval", str(tmp_path / "r"), "--checkpoint", str(tmp_path / "other"), cwd=tmp_path, env=env)
    assert both.returncode == 2 and "one" in both.stderr and "Traceback" not in both.stderr


def test_item14_runs_says_where_it_looked(tmp_path):
    result = cli("runs", cwd=tmp_path)
    assert result.returncode == 2
    assert str(tmp_path / "checkpoints") in result.stderr and "runs PATH" in result.stderr
    (tmp_path / "checkpoints").mkdir()
    result = cli("runs", cwd=tmp_path)
    assert result.returncode == 0
    assert "no runs in" in result.stdout and str(tmp_path / "checkpoints") in result.stdout
    assert "python -m dcgan runs PATH" in result.stdout and "--out-dir" in result.stdout


def test_item14_help_names_the_program_as_invoked(tmp_path):
    """`dcgan --help` (the console script pip installs) says dcgan; `python -m dcgan --help` says that."""
    script = tmp_path / "bin" / "dcgan"  # what pip writes for [project.scripts]
    script.parent.mkdir()
    script.write_text("import sys\nfrom dcgan.__main__ import main\nsys.exit(main())\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    as_script = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, env=env,
                               cwd=tmp_path, timeout=120)
    assert as_script.stdout.startswith("usage: dcgan "), as_script.stdout[:200]
    sub = subprocess.run([sys.executable, str(script), "eval", "--help"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert sub.stdout.startswith("usage: dcgan eval "), sub.stdout[:200]
    as_module = cli("--help", cwd=tmp_path)
    assert as_module.stdout.startswith("usage: python -m dcgan "), as_module.stdout[:200]


# ---- in the browser -------------------------------------------------------------------------------------


def table_fits(pg) -> dict:
    return pg.evaluate("""() => { const v = document.querySelector('#runs-table .virtual-table-viewport');
        return {scroll: v.scrollWidth, client: v.clientWidth}; }""")


@pytest.mark.browser
def test_item9_runs_tab_shows_runs_made_after_the_page_opened(page, tmp_path, made_runs):  # noqa: F811
    url = launch_app(tmp_path)
    page.goto(url)
    page.get_by_role("tab", name="Runs").wait_for()
    page.wait_for_timeout(1000)  # the page has loaded with no runs
    for name in ("done-default", "stopped-classic"):  # runs that appear while the page is open on the Train tab
        shutil.copytree(made_runs / name, tmp_path / "checkpoints" / name)
    page.get_by_role("tab", name="Runs").click()
    # sooner than the tab's 5-second timer: choosing the tab reads the runs
    wait_for(lambda: "stopped-classic" in page.inner_text("#runs-table"), timeout=3.5, what="the runs in the table")
    assert "done-default" in page.inner_text("#runs-table")


@pytest.mark.browser
def test_item13_runs_table_fits_the_page(page, tmp_path, made_runs):  # noqa: F811
    for name in ("done-default", "stopped-classic", "failed-custom"):
        shutil.copytree(made_runs / name, tmp_path / "checkpoints" / name)
    url = launch_app(tmp_path)
    page.goto(url)
    page.get_by_role("tab", name="Runs").click()
    wait_for(lambda: "failed-custom" in page.inner_text("#runs-table"), what="the runs in the table")
    header = page.inner_text("#runs-table thead")
    assert all(word in header for word in ("status", "recipe", "training time", "started")), header
    size = table_fits(page)
    page.locator("#runs-table").screenshot(path=str(tmp_path / "runs-table.png"))
    assert size["scroll"] <= size["client"] + 1, size  # every column in view at 1400 pixels
    # a narrow window scrolls the table inside its box (the page itself does not get wider)
    page.set_viewport_size({"width": 900, "height": 1000})
    page.wait_for_timeout(500)
    narrow = table_fits(page)
    assert narrow["scroll"] > narrow["client"]
    page.evaluate("() => { const v = document.querySelector('#runs-table .virtual-table-viewport');"
                  " v.scrollLeft = v.scrollWidth; }")
    page.wait_for_timeout(300)
    last = page.locator("#runs-table thead th").last.bounding_box()
    box = page.locator("#runs-table").bounding_box()
    assert last["x"] + last["width"] <= box["x"] + box["width"] + 2
    assert page.evaluate("document.documentElement.scrollWidth") <= 900
