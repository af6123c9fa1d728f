"""The Train tab's callbacks and the trainer state machine behind them, without a browser."""

from __future__ import annotations

import shutil
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import app
from dcgan import studio as studio_module
from dcgan.studio import MAX_KEPT_UPLOADS
from dcgan.trainer import Status
from ui import plots
from ui import train_actions as act
from ui import train_view as tv
from ui.state import Studio

TINY = {"dataset": "digits", "image_size": "28", "channels": "1", "batch_size": 32, "steps": 100_000,
        "lr_g": 2e-4, "lr_d": 2e-4, "loss": "bce", "nz": 32, "seed": 0, "device": "cpu", "ngf": 16, "ndf": 16,
        "precision": "fp32", "metric_every": 0, "run_name": ""}


def form(**changes):
    return {**TINY, **changes}


def wait_until(check, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def trainer_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "dcgan-trainer" and t.is_alive())


@pytest.fixture
def studio(tmp_path, monkeypatch):
    s = Studio(tmp_path / "checkpoints")
    # Explore's warm-up for each model shown (the inversion's calibration, tested in test_walkthrough_explore) ran
    # on after these tests: three such threads took most of both cores from the modules after this one
    monkeypatch.setattr(s, "prepare_explore", lambda model: threading.Thread())
    yield s
    s.trainer.stop(wait=True)


def test_full_control_cycle(studio):
    """start -> pause -> step k (D only, G only) -> resume -> stop -> reset, each with its message."""
    msg = act.start(studio, form())
    assert msg.startswith("✓ Started") and "cpu" in msg
    trainer = studio.trainer
    wait_until(lambda: trainer.status().iteration >= 5, what="5 iterations")

    assert act.pause(studio).startswith("Paused")
    assert trainer.status().state == "paused"
    time.sleep(0.3)  # let the step in flight finish
    it = trainer.status().iteration
    time.sleep(0.3)
    assert trainer.status().iteration == it, "a paused run must not train"
    assert "Nothing to pause" in act.pause(studio)

    rows_before = len(trainer.metrics)
    assert "only D" in act.step(studio, 3, "D only")
    wait_until(lambda: trainer.status().iteration == it + 3, what="3 D-only steps")
    d_rows = trainer.metrics.since(rows_before)
    assert len(d_rows) == 3 and all(np.isnan(r["loss_g"]) and np.isfinite(r["loss_d"]) for r in d_rows)
    act.step(studio, 2, "G only")
    wait_until(lambda: trainer.status().iteration == it + 5, what="2 G-only steps")
    assert trainer.status().state == "paused"

    assert act.resume(studio) == "Resumed."
    wait_until(lambda: trainer.status().iteration > it + 10, what="training after resume")
    assert "Nothing to resume" in act.resume(studio)

    msg = act.stop(studio)
    assert msg.startswith("Stopped at iteration") and "Saved `step_" in msg
    assert trainer.status().state == "stopped" and trainer_threads() == 0
    assert list(studio.checkpoints_dir.rglob("step_*.safetensors"))
    assert "Nothing to stop" in act.stop(studio)

    assert act.reset(studio).startswith("Reset")
    st = trainer.status()
    assert st.state == "idle" and st.iteration == 0 and len(trainer.metrics) == 0
    assert trainer.grid()[1] is None


def test_double_and_simultaneous_starts_make_one_job(studio):
    assert act.start(studio, form()).startswith("✓ Started")
    again = act.start(studio, form())  # the same settings at once (a double click): that run, no second job
    assert again.startswith("✓ Started") and trainer_threads() == 1
    other = act.start(studio, form(seed=2))
    assert "Busy" in other and "already running; stop it first" in other

    results = []
    barrier = threading.Barrier(4)

    def click():
        barrier.wait()
        results.append(act.start(studio, form(seed=1)))

    clickers = [threading.Thread(target=click) for _ in range(4)]
    for t in clickers:
        t.start()
    for t in clickers:
        t.join()
    assert all("Busy" in r for r in results)
    assert trainer_threads() == 1
    assert studio.trainer.config.seed == 0, "the running job was not replaced"

    studio.trainer.stop()
    # a fresh Studio: simultaneous first clicks also give exactly one job
    results.clear()
    barrier.reset()
    studio.trainer.reset()
    clickers = [threading.Thread(target=click) for _ in range(4)]
    for t in clickers:
        t.start()
    for t in clickers:
        t.join()
    # the same settings at the same moment: one job, and each click is told its run started (it is that job)
    assert all(r.startswith("✓ Started") for r in results), results
    assert trainer_threads() == 1


def test_bad_settings_are_explained_and_nothing_starts(studio, tmp_path, monkeypatch):
    msg = act.start(studio, form(lr_g=0))
    assert "`lr_g`" in msg and "learning rate" in msg
    assert "`steps`" in act.start(studio, form(steps=None)) and "empty" in act.start(studio, form(steps=None))
    assert "`batch_size`" in act.start(studio, form(batch_size=1))
    assert "upload a .zip" in act.start(studio, form(dataset="folder"))

    not_images = tmp_path / "notes.zip"
    with zipfile.ZipFile(not_images, "w") as zf:
        zf.writestr("readme.txt", "no images here")
    msg = act.start(studio, form(dataset="folder"), str(not_images))
    assert msg.startswith("⚠ **Data set**") and "0 usable images" in msg
    assert "not a .zip" in act.start(studio, form(dataset="folder"), str(tmp_path / "photo.png"))
    assert studio.trainer.status().state == "idle" and trainer_threads() == 0
    assert "no run to step" in act.step(studio, 1, "both")
    assert "k:" in act.step(studio, 0, "both")


def test_uploaded_zip_trains_and_is_kept(studio, tmp_path, monkeypatch):
    upload = tmp_path / "gradio-tmp" / "shapes.zip"
    upload.parent.mkdir()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(upload, "w") as zf:
        for i in range(40):
            path = tmp_path / f"img{i}.png"
            Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(path)
            zf.write(path, f"pics/img{i}.png")
    msg = act.start(studio, form(dataset="folder", channels="3", batch_size=8, steps=3), str(upload))
    assert msg.startswith("✓ Started"), msg
    kept = studio.trainer.config.data_path
    uploads = studio.root / ".uploads"  # under the app's one root folder, never <cwd>/data
    assert kept.startswith(str(uploads)) and kept.endswith(".zip")
    assert studio.trainer.wait(60) == "finished"
    upload.unlink()  # the upload's temp file goes away; the kept copy stays for resuming
    assert list(uploads.iterdir())

    # Later uploads push the oldest kept zips out; the one in use is never deleted.
    for i in range(MAX_KEPT_UPLOADS + 3):
        other = tmp_path / f"other{i}.zip"
        other.write_bytes(bytes([i]) * 10)
        time.sleep(0.01)
        in_use = studio.keep_upload(str(other))
    left = sorted(uploads.glob("*.zip"))
    assert len(left) == MAX_KEPT_UPLOADS and in_use in map(str, left) and kept not in map(str, left)


def test_owner_hook_guards_every_control(studio, monkeypatch):
    """On a public Space a visitor who is not the owner cannot start, stop or reset anything."""
    monkeypatch.setenv("SPACE_ID", "someone/dcgan-studio")
    monkeypatch.delenv("DCGAN_STUDIO_PASSWORD", raising=False)
    for msg in (act.start(studio, form()), act.pause(studio), act.resume(studio), act.step(studio, 1, "both"),
                act.stop(studio), act.reset(studio)):
        assert msg.startswith("⚠ **Not allowed**") and "owner" in msg
    assert studio.trainer.status().state == "idle"
    monkeypatch.delenv("SPACE_ID")
    assert act.start(studio, form(steps=2)).startswith("✓ Started")


def test_failures_and_events_are_shown_with_what_to_do():
    failed = Status(state="failed", iteration=7, total=10, error="Out of memory at batch size 4096 on cuda: "
                    "lower the batch size or the image size and start again.",
                    events=["Out of memory at batch size 4096 on cuda: lower the batch size or the image size "
                            "and start again."])
    text = tv.run_notice(failed)
    assert "Training failed" in text and "lower the batch size" in text and "press **Start**" in text
    assert text.count("Out of memory") == 1  # the error is not repeated as an event
    nan = Status(state="running", iteration=400, total=1000,
                 events=["NaN/inf loss at iteration 420: rolled back to iteration 400 and halved the learning "
                         "rates (now x0.5)."])
    assert "rolled back to iteration 400" in tv.run_notice(nan)
    assert tv.controls("running") == {"start": False, "pause": True, "resume": False, "step": True,
                                      "stop": True, "reset": True}
    assert tv.controls("paused")["resume"] and not tv.controls("paused")["pause"]
    assert tv.controls("failed")["start"] and not tv.controls("failed")["stop"]
    assert tv.controls("idle") == {"start": True, "pause": False, "resume": False, "step": False,
                                   "stop": False, "reset": False}
    assert "loading the data" in tv.status_line(Status(state="starting"), 0.0, None)
    line = tv.status_line(Status(state="running", iteration=500, total=2000, epoch=3.25, device="cuda:0",
                                 precision="bfloat16"), 1234.0, 125)
    assert line == ("**running** · iteration 500 / 2,000 (25%) · epoch 3.25 · 1,234 images/s · ETA 2m 05s · "
                    "cuda:0 · bfloat16")


def test_health_hints():
    winning = [{"iteration": i, "d_real": 0.995, "d_fake": 0.004} for i in range(60)]
    assert "D wins every time" in studio_module.health_hint(winning)
    confused = [{"iteration": i, "d_real": 0.5, "d_fake": 0.49} for i in range(60)]
    assert "0.5 for everything" in studio_module.health_hint(confused)
    healthy = [{"iteration": i, "d_real": 0.7, "d_fake": 0.3} for i in range(60)]
    assert studio_module.health_hint(healthy) == "" and studio_module.health_hint(winning[:10]) == ""


def test_long_runs_plot_at_most_500_smoothed_points():
    rng = np.random.default_rng(0)
    rows = [{"iteration": i + 1, "loss_d": 1.0 + rng.normal(0, 0.3), "loss_g": float("nan") if i % 7 == 0
             else 2.0 + rng.normal(0, 0.3), "d_real": 0.8, "d_fake": 0.2} for i in range(100_000)]
    frame = plots.loss_frame(rows)
    for name in ("loss_D", "loss_G"):
        part = frame[frame.series == name]
        assert 400 <= len(part) <= 500 and part.iteration.is_monotonic_increasing
        assert part.iteration.iloc[-1] == 100_000
    # bucket means keep the level and remove most of the noise
    loss_d = frame[frame.series == "loss_D"].value
    assert abs(loss_d.mean() - 1.0) < 0.01 and loss_d.std() < 0.05
    smoothed = plots.loss_frame(rows[:300], smooth=0.9)
    raw = plots.loss_frame(rows[:300], smooth=0.0)
    assert smoothed[smoothed.series == "loss_D"].value.std() < raw[raw.series == "loss_D"].value.std() / 2
    d = plots.d_frame(rows[:300])
    half = d[d.series == "0.5 (can't tell)"]
    assert list(half.value) == [0.5, 0.5] and list(half.iteration) == [1, 300]
    assert plots.loss_frame([]).empty and plots.d_frame([]).empty
    assert "100,000 records" in plots.caption(rows, frame, 0.0)
    # each point is the mean of its bucket's finite values (200 records here); an all-NaN bucket is NaN
    g = np.array([r["loss_g"] for r in rows])
    its, vals = plots.downsample(np.arange(1, 100_001), g)
    assert len(vals) == 500 and its[0] == 200 and vals[0] == pytest.approx(np.nanmean(g[:200]))
    assert vals[-1] == pytest.approx(np.nanmean(g[-200:]))
    assert np.isnan(plots.downsample(np.arange(1000), np.full(1000, np.nan))[1]).all()


def test_live_view_sends_only_what_changed(studio):
    seen, out = tv.live_view(studio, {})
    assert "idle" in out["status"] and tv.controls(out["state"])["start"]
    seen, again = tv.live_view(studio, seen)
    assert all(again[k] == {"__type__": "update"} for k in ("status", "loss_plot", "grid", "timeline"))
    assert "state" not in again

    act.start(studio, form())
    wait_until(lambda: len(studio.trainer.metrics) >= 3, what="metrics")
    file, msg = act.download_checkpoint(studio)
    assert file is None and "saves every 500 iterations; pause it" in msg
    seen, out = tv.live_view(studio, seen)
    assert "running" in out["status"] and out["state"] == "running"
    assert out["loss_plot"].value is not None and "records" in out["plot_caption"]
    assert out["grid"].value is not None and out["timeline"]
    first_grid = seen["grid"]
    wait_until(lambda: studio.trainer.grid()[0] != first_grid, what="a new grid", timeout=30)
    seen, out = tv.live_view(studio, seen)
    assert out["grid"].label.startswith("Fixed-noise samples at iteration")

    act.pause(studio)
    time.sleep(0.3)
    assert tv.export_gif(studio)[0].endswith(".gif")
    studio.trainer.reset()
    seen, out = tv.live_view(studio, seen)
    assert "idle" in out["status"] and out["loss_plot"].value is None


def test_pages_polling_together_share_one_computation_of_the_curves(studio, monkeypatch):
    """Thirty Train-tab pages polling every second rebuild the curves from every record once, not thirty times."""
    row = {"loss_d": 1.0, "loss_g": 2.0, "d_real": 0.7, "d_fake": 0.3}
    for i in range(1, 301):
        studio.trainer.metrics.append({"iteration": i, **row})
    calls, real = [], plots.loss_frame
    monkeypatch.setattr(plots, "loss_frame", lambda rows, smooth=0.0: calls.append(len(rows)) or real(rows, smooth))
    pages = [tv.live_view(studio, {}) for _ in range(5)]
    assert calls == [300]
    assert all(out["loss_plot"].value is not None and "300 records" in out["plot_caption"] for _, out in pages)
    seen, again = tv.live_view(studio, pages[0][0])
    assert again["loss_plot"] == {"__type__": "update"} and calls == [300]  # nothing new: nothing sent
    studio.trainer.metrics.append({"iteration": 301, **row})
    monkeypatch.setattr(studio.shared, "max_age_s", 0.0)  # the shared copy has aged: the next poll recomputes
    seen, out = tv.live_view(studio, seen)
    assert calls == [300, 301] and "301 records" in out["plot_caption"] and seen["rows"] == 301


def test_gif_samples_and_checkpoints(studio):
    assert tv.export_gif(studio) == (None, "Not enough snapshots yet: let the run train a few seconds first.")
    assert act.new_samples(studio, {}, 1)[0] is None
    assert act.download_checkpoint(studio)[0] is None

    act.start(studio, form(steps=20))
    studio.trainer.wait(60)
    path, msg = tv.export_gif(studio)
    with Image.open(path) as gif:
        assert gif.n_frames >= 2 and gif.size[1] > gif.size[0] >= 240  # native size plus the iteration label
    a, note = act.new_samples(studio, {}, 3)
    b, _ = act.new_samples(studio, {}, 3)
    c, _ = act.new_samples(studio, {}, 4)
    assert a.shape[0] >= 384 and np.array_equal(a, b) and not np.array_equal(a, c)
    assert "live run, iteration 20" in note

    ckpt, msg = act.download_checkpoint(studio)
    assert ckpt.endswith("step_00000020.safetensors") and "iteration 20" in msg
    name = studio.list_checkpoints()[0]
    assert name.endswith("step_00000020.safetensors")
    assert "already at iteration 20" in act.resume_checkpoint(studio, name, 20, "cpu")
    msg = act.resume_checkpoint(studio, name, 30, "cpu")
    assert msg.startswith("✓ Resumed") and "iteration 20" in msg
    assert studio.trainer.wait(60) == "finished" and studio.trainer.status().iteration == 30
    assert "choose a checkpoint" in act.resume_checkpoint(studio, None, 30, "cpu")
    assert "not a checkpoint inside" in act.load_for_samples(studio, "../../etc/passwd.safetensors", {})[1]

    broken = studio.checkpoints_dir / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert "corrupt or truncated" in act.load_for_samples(studio, "broken.safetensors", {})[1]
    studio.trainer.reset()
    session, message = act.load_for_samples(studio, name, {})
    assert message.startswith("✓ Loaded")
    assert "samples from **" in act.new_samples(studio, session, 0)[1]


def test_app_has_the_train_tab_and_main_parses_options(tmp_path, monkeypatch):
    demo = app.build_app(Studio(tmp_path))
    ids = {c.get("props", {}).get("elem_id") for c in demo.get_config_file()["components"]}
    assert {"start-btn", "pause-btn", "resume-btn", "step-btn", "stop-btn", "reset-btn", "loss-plot", "d-plot",
            "live-grid", "timeline", "samples"} <= ids
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    assert app.default_host() == "127.0.0.1"
    monkeypatch.setenv("SPACE_ID", "someone/dcgan-studio")
    assert app.default_host() == "0.0.0.0"
    launched = {}
    monkeypatch.setattr(app, "launch", lambda demo, studio, host, port: launched.update(
        host=host, port=port, dir=studio.checkpoints_dir))
    app.main(["--port", "1234", "--checkpoints", str(tmp_path / "ck")])
    assert launched == {"host": "0.0.0.0", "port": 1234, "dir": tmp_path / "ck"}


def test_no_event_marks_a_layout_block_pending_and_the_api_lists_no_internal_chain(tmp_path):
    """Gradio's page re-sends the loading status of every progress target any event ever had on each status message
    of every event, walking a target's whole subtree: one event with the tab strip among its outputs made every
    slider move clone the props of all the page's components (docs/ROBUSTNESS.md). And each public endpoint is
    described to every visitor who opens the page."""
    import gradio as gr

    demo = app.build_app(Studio(tmp_path))
    config = demo.get_config_file()
    layout_types = {"tabs", "tabitem", "row", "column", "group", "accordion", "form", "sidebar"}
    kinds = {c["id"]: c["type"] for c in config["components"]}
    for dep in config["dependencies"]:
        if not dep["backend_fn"]:
            continue
        targets = dep["show_progress_on"] if dep["show_progress_on"] is not None else dep["outputs"]
        assert not [kinds[t] for t in targets if kinds.get(t) in layout_types], dep["api_name"]
        if dep["show_progress"] == "hidden" and dep["targets"]:  # an event on the page that shows nothing marks none
            assert dep["show_progress_on"] == [], dep["api_name"]
    assert any(isinstance(b, gr.Tabs) for b in demo.blocks.values())  # the strip is there, and a link can show a tab
    named = [d["api_name"] for d in config["dependencies"] if d["api_visibility"] == "public"]
    assert "explore_sliders" in named and "train_status" in named
    assert not [n for n in named if n.startswith("refresh")], named


def test_quality_metrics_show_when_the_run_has_them(studio, monkeypatch):
    seen, out = tv.live_view(studio, {})
    assert out["history"] == 0
    plot, _, note = tv.metrics_view(studio)
    assert note == tv.NO_METRICS and plot.value is None
    history = [{"iteration": 500, "score": 40.0, "digit_fd": 40.0, "digit_fd_real": 2.5, "classes_covered": 7},
               {"iteration": 1000, "score": 21.123456, "digit_fd": 21.123456, "digit_fd_real": 2.5,
                "classes_covered": 10}]
    monkeypatch.setattr(studio.trainer, "history", lambda: history)
    seen, out = tv.live_view(studio, seen)
    assert out["history"] == 2 and tv.metrics_view(studio)[2] == ""
    frame = plots.metric_frame(history)
    assert sorted(set(frame.series)) == sorted(plots.METRIC_SERIES.values()) and len(frame) == 4
    table = plots.metric_table(history)
    assert list(table.iteration) == [1000, 500] and table.score.iloc[0] == 21.1235
    seen, again = tv.live_view(studio, seen)
    assert "history" not in again  # nothing new: nothing sent
    cfg = studio.build_config(form(metric_every=250))
    assert cfg.metric_every == 250


def test_pictures_are_encoded_once_and_never_stale(tmp_path):
    files = studio_module.PictureFiles(keep=2)
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 255, np.uint8)
    path_a = files.png(a, 32)
    assert files.png(a.copy(), 32) == path_a  # same picture, same file: no second encode
    with Image.open(path_a) as img:
        assert img.size == (32, 32)
    assert files.png(b, 32) != path_a
    files.png(a, 0)
    assert len(list(files.dir.glob("*.png"))) == 2  # bounded: the oldest file went


def test_timeline_spreads_snapshots_over_iterations():
    # a run that was fast at first (snapshots 50 iterations apart) and slow later (2 apart)
    its = list(range(0, 1000, 50)) + list(range(1000, 1200, 2))
    frames = [(it, np.zeros((2, 2, 3), np.uint8)) for it in its]
    picked = [it for it, _ in tv.timeline_frames(frames, 12)]
    assert picked[0] == 0 and picked[-1] == its[-1] and len(picked) <= 12
    assert sum(it < 1000 for it in picked) >= 8  # not crowded into the slow tail
    assert tv.timeline_frames(frames[:5], 12) == frames[:5]


def test_evolution_gif_is_small_and_labelled(studio, trained_checkpoint, monkeypatch):
    """Defect 11: 33 frames made a 3.5 MB GIF without iteration labels."""
    from dcgan.checkpoint import load_generator
    from dcgan.images import grid_array
    from dcgan.models import sample

    G, _, _ = load_generator(trained_checkpoint)
    frames = [(it * 50, grid_array(sample(G, 64, seed=it), nrow=8)) for it in range(33)]
    monkeypatch.setattr(studio.trainer, "frames", lambda: frames)
    path, msg = tv.export_gif(studio)
    size = Path(path).stat().st_size
    assert size < 1_000_000, f"{size:,} bytes for 33 frames"
    with Image.open(path) as gif:
        assert gif.n_frames == 33
        gif.seek(32)
        band = np.asarray(gif.convert("L"))[-16:, :120]
    assert (band < 128).sum() > 30, "the last frame carries its iteration as text under the grid"
    assert "1,600" in msg and "KB" in msg


# ---- the Explore tab's callbacks (ui/explore_tools.py) ------------------------------------------------


class _Click:
    """A click on the grid picture's sample `i` (its centre, in the picture's pixels, as gr.Image's select sends)."""

    def __init__(self, i: int, image_size: int = 28):
        from ui import explore_tools as tools

        pitch = tools.cell_side(image_size, tools.GRID_CELL) + tools.GRID_PAD
        row, col = divmod(i, tools.GRID_COLUMNS)
        self.index = [tools.GRID_PAD + col * pitch + pitch // 2 - 2, tools.GRID_PAD + row * pitch + pitch // 2 - 2]


@pytest.fixture
def explored(studio, trained_checkpoint):
    """A browser view with the fixture checkpoint loaded through the Explore tab."""
    from ui import explore_tools as tools
    from ui.common import new_view

    (studio.root / "run").mkdir(parents=True)
    shutil.copy(trained_checkpoint, studio.root / "run" / "step_00000300.safetensors")
    out = tools.load_checkpoint(studio, "run/step_00000300.safetensors", new_view(), tools.DIRECTION_KINDS[0], 0)
    return tools, out


def test_explore_tools_on_a_checkpoint(studio, explored, monkeypatch):
    import gradio as gr

    from dcgan import latent
    from ui.common import new_view

    tools, out = explored
    kind = tools.DIRECTION_KINDS[0]
    session = out["session"]
    assert "checkpoint `run/step_00000300.safetensors`" in out["summary"]
    # the grid is one picture; each of its cells is that sample, enlarged, and a click there picks it
    z, labels = tools.grid_latents(session)
    images = tools.render(session["model"], z, labels)
    side = tools.cell_side(28, tools.GRID_CELL)
    assert out["grid"].shape == (4 * side + 5 * tools.GRID_PAD,) * 2
    for i in range(tools.GRID):
        x, y = _Click(i).index
        assert tools.grid_index(x, y, 28) == i
        row, col = divmod(i, tools.GRID_COLUMNS)
        top, left = (tools.GRID_PAD + k * (side + tools.GRID_PAD) for k in (row, col))
        cell, sample = out["grid"][top:top + side, left:left + side], tools.picture(images, i, side)
        assert np.array_equal(cell[:side - 20], sample[:side - 20])  # above its number in the corner
        assert np.array_equal(cell[:, :side - 40], sample[:, :side - 40])  # left of it
        assert not np.array_equal(cell[side - 16:, side - 30:], sample[side - 16:, side - 30:])  # the number
    assert tools.grid_index(0, 0, 28) == 0 and tools.grid_index(10_000, 10_000, 28) == tools.GRID - 1
    assert np.array_equal(out["start"], out["moved"]) and all(out[s] == 0.0 for s in tools.SLIDERS)
    with pytest.raises(gr.Error, match="Could not load"):
        tools.load_checkpoint(studio, "../outside.safetensors", new_view(), kind, 0)
    with pytest.raises(gr.Error, match="No live run yet"):
        tools.use_live(studio, new_view(), kind, 0)

    # opening the tab draws a model picked elsewhere (Train, Hub) once, and leaves a drawn one alone
    assert tools.on_open(studio, session, kind, 0) == {}
    picked_in_train = dict(new_view(), model=session["model"])
    assert tools.on_open(studio, picked_in_train, kind, 0)["session"]["drawn"] == session["model"].key

    picked = tools.on_pick(studio, session, "sliders", "", "", "", kind, 0, _Click(5))
    z, labels = tools.grid_latents(session)
    assert np.array_equal(picked["start"], tools.picture(tools.render(session["model"], z[5:6], labels[5:6])))
    assert tools.on_pick(studio, session, "arithmetic B (-)", "0", "3", "", kind, 0, _Click(7)) == {"term_b": "3 7"}
    session = picked["session"]

    interp = tools.run_interpolation(studio, session, 2, 9, 6, "slerp")
    assert interp["strip"].shape[1] > 5 * interp["strip"].shape[0] and Path(interp["gif"]).stat().st_size > 0
    arith = tools.run_arithmetic(session, "0 1 2", "3 4 5", "6 7 8")
    assert arith["equation"].shape[1] > 4 * arith["equation"].shape[0]
    with pytest.raises(gr.Error, match="sample 99 does not exist"):
        tools.run_arithmetic(session, "0 99", "1", "2")
    with pytest.raises(gr.Error, match="unconditional"):
        tools.run_class_control(studio, session, "0", "1", 5)
    memo = tools.run_memorisation(session, 3, False)
    assert len(memo["memo_gallery"]) == 9 and "held-out real images" in memo["memo_text"]
    monkeypatch.setattr(latent, "digit_coverage", lambda G, real, n: ([n // 10] * 10, [n // 10] * 10))
    monkeypatch.setattr(studio, "classifier_status", lambda model: None)  # as if the classifier were ready
    div = tools.run_diversity(studio, session, 64)
    assert div["div_text"].startswith("## Diversity") and set(div["div_plot"]["images"]) == {"generated", "real"}
    assert len(div["class_plot"]) == 20 and all(isinstance(d, str) for d in div["class_plot"]["digit"])  # bars


def test_defect10_a_drawn_seven_is_not_called_poor(studio, explored, digits_data):
    """The verdict on a real held-out 7 (as if drawn) compares it with real images inverted by the same G."""
    import gradio as gr

    tools, out = explored
    kind = tools.DIRECTION_KINDS[0]
    val = digits_data.val
    seven = next(i for i in range(val.shape[0] - 1, 0, -1) if int(digits_data.val_labels[i]) == 7)
    drawing = np.stack([255 - val[seven, 0].numpy()] * 3, axis=-1)  # black on white, as drawn in the editor
    inv = tools.run_inversion(studio, out["session"], {"composite": drawing, "background": None, "layers": []},
                              2, 150, kind, 0)
    assert "**close**" in inv["invert_text"] and "real held-out images" in inv["invert_text"], inv["invert_text"]
    assert "poor" not in inv["invert_text"] and not np.array_equal(inv["start"], out["start"])
    with pytest.raises(gr.Error, match="Upload an image"):
        tools.run_inversion(studio, out["session"], {"composite": None, "background": None, "layers": []},
                            2, 50, kind, 0)


def test_defect5_class_control_is_disabled_for_an_unconditional_model(explored):
    """The page's class controls are built disabled: a first unconditional model sends only the note (no component
    update, which costs the server a component per visitor); after a conditional model they are disabled again."""
    tools, out = explored
    assert "unconditional" in out["cond_note"] and "Classes" in out["cond_note"]
    assert not {"class_a", "class_b", "class_btn", "class_frames"} & set(out)
    assert out["session"]["classes"] == ()
    assert tools.class_controls((), ()) == {}  # the same model again: nothing to send
    digits = tuple(str(c) for c in range(10))
    on = tools.class_controls((), digits)
    assert on["class_btn"].interactive is True and on["class_a"].choices[0] == ("0", "0") and on["cond_note"] == ""
    off = tools.class_controls(digits, ())
    assert off["class_btn"].interactive is False and off["class_a"].interactive is False
    assert off["class_b"].choices == []
    assert "unconditional" in off["cond_note"]


def test_defect4_load_for_samples_wins_over_the_stopped_live_run(studio, trained_checkpoint):
    assert act.start(studio, form(steps=5)).startswith("✓ Started")
    studio.trainer.wait(60)
    assert "live run" in act.new_samples(studio, {}, 0)[1]
    (studio.root / "saved").mkdir(parents=True)
    shutil.copy(trained_checkpoint, studio.root / "saved" / "step_00000300.safetensors")
    session, message = act.load_for_samples(studio, "saved/step_00000300.safetensors", {})
    assert message.startswith("✓ Loaded")
    picture, note = act.new_samples(studio, session, 0)
    assert "saved/step_00000300.safetensors" in note and picture is not None
    assert "live run" in act.new_samples(studio, {}, 0)[1]  # another browser still samples the run


def test_defect8_a_late_browser_gets_the_runs_settings(studio):
    act.start(studio, form(steps=400, batch_size=16, num_classes=10))
    _, out = tv.live_view(studio, {})
    assert out["form"]["steps"] == 400 and out["form"]["batch_size"] == 16 and out["form"]["num_classes"] == 10
    seen, _ = tv.live_view(studio, {})
    assert "form" not in tv.live_view(studio, seen)[1]  # later polls leave what this browser types alone


def test_defect9_messages_name_the_field_and_the_button(studio, trained_checkpoint):
    msg = act.start(studio, form(batch_size=0))
    assert "`batch_size`" in msg and "press *Start* again" in msg
    assert "`steps`" in act.start(studio, form(steps=10**12)) and studio.trainer.status().state == "idle"
    (studio.root / "run").mkdir(parents=True)
    shutil.copy(trained_checkpoint, studio.root / "run" / "step_00000300.safetensors")
    msg = act.resume_checkpoint(studio, "run/step_00000300.safetensors", 100, "cpu")
    assert "already at iteration 300" in msg and "press *Resume training* again" in msg


def test_defect9_the_form_has_no_browser_side_limits(tmp_path):
    """A Number with minimum/maximum makes Gradio answer 0 with a toast that vanishes; the validator answers."""
    import gradio as gr

    demo = app.build_app(Studio(tmp_path))
    ids = {"batch-size", "steps", "num-classes", "lr-g", "ngf", "ndf", "step-k"}
    numbers = [b for b in demo.blocks.values() if isinstance(b, gr.Number) and b.elem_id in ids]
    assert len(numbers) == len(ids)
    assert all(b.minimum is None and b.maximum is None for b in numbers)


def test_defect11_readable_metric_names_bars_and_no_emoji():
    import re

    history = [{"iteration": 500, "score": 4.0, "class_entropy_bits": 3.2, "classes_covered": 10}]
    columns = list(plots.metric_table(history).columns)
    assert "class_entropy_bits" not in columns and any("class balance" in c for c in columns)
    emoji = re.compile("[\U0001F000-\U0001FAFF\u2705\u274C\u2B50\u231B\u23F3]")
    for path in [Path("app.py"), *Path("ui").glob("*.py")]:
        assert not emoji.search(path.read_text()), path
