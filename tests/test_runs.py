"""The runs model (dcgan/runs.py) and the Runs tab's callbacks: listing, curves, settings diff, samples,
damaged or missing files, and renames / deletes that are refused with a message and change nothing."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from dcgan import runs
from dcgan.tblog import event_files
from dcgan.trainer import Trainer
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> Path:
    """checkpoints/ with two short runs on the digits: bce (8 steps) and hinge (6 steps)."""
    root = tmp_path_factory.mktemp("runs") / "checkpoints"
    trainer = Trainer()
    for name, loss, n in (("bce-run", "bce", 8), ("hinge-run", "hinge", 6)):
        trainer.start(tiny_config(steps=n, loss=loss, out_dir=str(root), run_name=name, ngf=8, ndf=8,
                                  batch_size=16, sample_every_s=0.01))
        assert trainer.wait(120) == "finished"
        trainer.reset()
    return root


@pytest.fixture
def root(two_runs, tmp_path) -> Path:
    """A copy the test may damage, rename or delete in."""
    copy = tmp_path / "checkpoints"
    shutil.copytree(two_runs, copy)
    return copy


def by_name(root: Path) -> dict[str, runs.RunInfo]:
    return {r.name: r for r in runs.list_runs(root)}


def test_lists_runs_with_their_settings_and_progress(two_runs):
    listed = by_name(two_runs)
    assert sorted(listed) == ["bce-run", "hinge-run"]
    bce = listed["bce-run"]
    assert bce.ok, bce.problems
    assert (bce.config["loss"], bce.config["dataset"], bce.config["image_size"]) == ("bce", "digits", 28)
    assert bce.iterations == 8 and listed["hinge-run"].iterations == 6
    assert bce.training_s is not None and bce.training_s > 0 and bce.started is not None
    assert (bce.status, listed["hinge-run"].status) == ("finished", "finished")
    assert bce.checkpoint.name == "step_00000008.safetensors" and bce.event_files == 1
    row = bce.row()
    assert (row["run"], row["loss"], row["size"], row["iterations"], row["problems"]) == (
        "bce-run", "bce", "28px", 8, "")


def test_curves_come_from_the_event_files(two_runs):
    curves = runs.curves(two_runs / "bce-run")
    assert curves.source == "events"
    assert [r["iteration"] for r in curves.rows] == list(range(1, 9))
    assert {"loss_d", "loss_g", "d_real", "d_fake"} <= set(curves.rows[-1])


def test_settings_diff_puts_the_differences_first(two_runs):
    chosen = [by_name(two_runs)[n] for n in ("bce-run", "hinge-run")]
    rows = runs.settings_diff(chosen)
    differing = [r["key"] for r in rows if r["differs"]]
    assert set(differing) == {"loss", "run_name", "steps"}
    assert [r["key"] for r in rows[:3]] == ["loss", "steps", "run_name"]  # the differences first, in the form's order
    loss = next(r for r in rows if r["key"] == "loss")
    assert loss["values"] == ["bce", "hinge"] and loss["setting"] == "Loss"  # named as the form names it
    assert {r["key"] for r in runs.settings_diff(chosen, only_different=True)} == set(differing)


def test_latest_grid_is_drawn_from_the_checkpoint_or_is_the_last_fixed_noise_grid(root):
    grid, where = runs.latest_grid(root / "bce-run")  # the run's own samples.png, written at its end
    assert grid.shape == (726, 726, 3) and where == "samples.png" and grid.std() > 0
    (root / "bce-run" / "samples.png").unlink()
    grid, where = runs.latest_grid(root / "bce-run")
    assert grid.shape == (242, 242, 3) and "step_00000008" in where and grid.std() > 0
    (root / "bce-run" / "step_00000008.safetensors").unlink()
    grid, where = runs.latest_grid(root / "bce-run")
    assert grid.shape == (242, 242, 3) and "fixed-noise grid at iteration 8" in where and grid.std() > 0


def test_damaged_or_missing_files_still_list_marked(root):
    events = event_files(root / "bce-run", grids=False)[0]
    events.write_bytes(events.read_bytes()[: events.stat().st_size // 2])  # a half-written event file
    ckpt = root / "hinge-run" / "step_00000006.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:5000])  # a truncated checkpoint
    (root / "only-checkpoint").mkdir()
    shutil.copy(root / "bce-run" / "step_00000008.safetensors", root / "only-checkpoint")
    (root / "garbage").mkdir()
    (root / "garbage" / "events.out.tfevents.1.host").write_bytes(b"not an event file at all" * 10)
    (root / "garbage" / "step_00000001.safetensors").write_bytes(b"\x80\x04 pickle?")
    (root / "odd").mkdir()  # a readable checkpoint header with nonsense in it
    save_file({"x": torch.zeros(1)}, root / "odd" / "step_00000001.safetensors", metadata={"dcgan_studio": json.dumps(
        {"format": "dcgan-studio-checkpoint", "format_version": 1, "iteration": "many", "config": [1, 2]})})
    an_hour_ago = time.time() - 3600  # a file written to right now may end in half a record: not damaged yet
    for path in (events, root / "garbage" / "events.out.tfevents.1.host"):
        os.utime(path, (an_hour_ago, an_hour_ago))

    listed = by_name(root)
    assert sorted(listed) == ["bce-run", "garbage", "hinge-run", "odd", "only-checkpoint"]
    assert listed["odd"].problems and "unreadable" in listed["odd"].problems[0]
    assert runs.latest_grid(root / "odd")[0] is None and runs.curves(root / "odd").rows == []
    bce = listed["bce-run"]
    assert any("damaged" in p and events.name in p for p in bce.problems)
    assert bce.checkpoint is not None and bce.config["loss"] == "bce"
    assert runs.curves(root / "bce-run").rows  # the readable part of the curve is still there

    hinge = listed["hinge-run"]
    assert hinge.checkpoint is None and any("step_00000006" in p and "damaged" in p for p in hinge.problems)
    assert hinge.config["loss"] == "hinge"  # from the hparams in its event file
    assert hinge.iterations == 6

    only = listed["only-checkpoint"]
    assert only.problems == ["no TensorBoard event file"] and only.iterations == 8
    curves = runs.curves(root / "only-checkpoint")
    assert curves.source == "checkpoint" and [r["iteration"] for r in curves.rows] == list(range(1, 9))

    garbage = listed["garbage"]
    assert garbage.checkpoint is None and garbage.config == {} and len(garbage.problems) >= 2
    assert runs.curves(root / "garbage").rows == []
    assert runs.latest_grid(root / "garbage") == (None, "no samples yet")
    assert "garbage" in runs.format_table(list(listed.values()))

    from ui import runs_tab  # ... and the tab shows them with notes instead of breaking

    view = runs_tab.compare(root, ["garbage", "odd", "hinge-run", "bce-run"])
    assert set(view["loss_d"]["series"]) == {"hinge-run", "bce-run"}
    notes = "\n".join(view["notes"])
    assert "`garbage`: no curves" in notes and "`odd`: ⚠ unreadable" in notes and "`hinge-run`: ⚠" in notes
    assert "odd" in runs_tab.runs_table(runs.list_runs(root))["run"].tolist()


@pytest.mark.parametrize("bad, why", [("a/b", "cannot contain /"), ("..", "'..'"), ("../escape", "cannot contain /"),
                                      ("", "cannot be empty"), ("   ", "cannot be empty"), (".hidden", "start with"),
                                      ("hinge-run", "already exists")])
def test_rename_refuses_bad_names_and_changes_nothing(root, bad, why):
    before = sorted(p.name for p in root.iterdir())
    with pytest.raises(runs.RunsError, match=why.replace("(", r"\(")) as caught:
        runs.rename_run(root, "bce-run", bad)
    assert str(caught.value)  # a message for the page
    assert sorted(p.name for p in root.iterdir()) == before
    assert not (root.parent / "escape").exists()


def test_rename_moves_the_run_and_its_curves(root):
    new = runs.rename_run(root, "bce-run", "  bce-baseline ")
    assert new == root / "bce-baseline" and not (root / "bce-run").exists()
    assert by_name(root)["bce-baseline"].ok
    assert len(runs.curves(new).rows) == 8


def test_delete_only_inside_the_root_and_never_the_live_run(root, tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "step_00000001.safetensors").write_bytes(b"x")
    os.symlink(outside, root / "link")
    for name in ("../precious", str(outside), "link", ".", "..", "", "missing"):
        with pytest.raises(runs.RunsError):
            runs.delete_run(root, name)
    assert (outside / "step_00000001.safetensors").exists()
    with pytest.raises(runs.RunsError, match="being trained"):
        runs.delete_run(root, "bce-run", active=root / "bce-run")
    with pytest.raises(runs.RunsError, match="being trained"):
        runs.rename_run(root, "bce-run", "x", active=str(root / "bce-run"))
    runs.delete_run(root, "bce-run")
    assert not (root / "bce-run").exists() and sorted(by_name(root)) == ["hinge-run"]


def record_offset(data: bytes, step: int) -> int:
    """Where the first event of `step` starts in an event file (TFRecord: length, CRC, payload, CRC)."""
    from tensorboard.compat.proto.event_pb2 import Event

    offset = 0
    while offset < len(data):
        n = int.from_bytes(data[offset:offset + 8], "little")
        if Event.FromString(data[offset + 12:offset + 12 + n]).step == step:
            return offset
        offset += n + 16
    raise AssertionError(f"no event at step {step}")


def test_a_live_event_file_is_read_incrementally_and_not_called_damaged(root):
    (root / "bce-run" / "step_00000008.safetensors").unlink()  # iterations from the event file alone
    events = event_files(root / "bce-run", grids=False)[0]
    whole = events.read_bytes()
    events.write_bytes(whole[: record_offset(whole, step=5) + 10])  # cut inside the first record of step 5
    half = by_name(root)["bce-run"]
    assert half.problems == ["no checkpoint"] and half.iterations == 4
    events.write_bytes(whole)  # the rest arrives; only the new records are parsed
    assert by_name(root)["bce-run"].iterations == 8
    an_hour_ago = time.time() - 3600
    events.write_bytes(whole[:-3])
    os.utime(events, (an_hour_ago, an_hour_ago))  # ... and an hour later it is still cut short: damaged
    assert any("damaged" in p for p in by_name(root)["bce-run"].problems)


def test_cmd_runs_prints_the_table(two_runs, capsys, tmp_path):
    assert runs.cmd_runs(argparse.Namespace(root=str(two_runs), json=False)) == 0
    out = capsys.readouterr().out
    header, *lines = out.strip().splitlines()
    assert header.split()[:6] == ["run", "status", "recipe", "data", "set", "size"]
    assert len(lines) == 2 and "bce-run" in out and "hinge" in out
    assert runs.cmd_runs(argparse.Namespace(root=str(tmp_path / "nope"), json=False)) == 2


def test_runs_tab_callbacks(root):
    from ui import runs_tab

    view = runs_tab.compare(root, ["bce-run", "hinge-run"], smooth=0.6)
    assert set(view["loss_d"]["series"]) == {"bce-run", "hinge-run"}
    assert set(view["d_fake"]["series"]) == {"bce-run", "hinge-run"}
    assert len(view["grids"]) == 2 and view["notes"] == []
    settings = view["settings"].data
    assert list(settings.columns) == ["setting", "bce-run", "hinge-run"] and settings.iloc[0, 0].startswith("≠")

    pending, question, shown = runs_tab.ask("rename", "bce-run", "a/b")
    assert shown and "a/b" in question
    message = runs_tab.confirm(root, pending)
    assert message.startswith("⚠") and "/" in message and (root / "bce-run").is_dir()
    assert runs_tab.ask("delete", None)[2] is False
    message = runs_tab.confirm(root, runs_tab.ask("delete", "hinge-run")[0])
    assert message.startswith("✓") and not (root / "hinge-run").exists()


def test_open_in_explore_and_resume_from_the_runs_tab(tmp_path):
    from dcgan.studio import Studio
    from ui import runs_tab

    root = tmp_path / "checkpoints"
    studio = Studio(root)
    studio.trainer.start(tiny_config(steps=6, out_dir=str(root), run_name="short", ngf=8, ndf=8, batch_size=16))
    assert studio.trainer.wait(120) == "finished"

    view, message = runs_tab.open_in_explore(studio, "short", {"model": None, "seed": 3})
    assert message.startswith("✓") and view["model"].label == "short/step_00000006.safetensors"
    assert view["seed"] == 3 and view["model"].config.loss == "bce"
    assert runs_tab.open_in_explore(studio, "../elsewhere", {"model": None})[0] == {"model": None}

    with pytest.raises(runs.RunsError, match="being trained"):
        studio.trainer.start(tiny_config(steps=10_000, out_dir=str(root), run_name="busy", ngf=8, ndf=8,
                                         batch_size=16))
        try:
            runs.delete_run(root, "busy", runs_tab.active_dir(studio, "busy"))
        finally:
            studio.trainer.stop()
    studio.trainer.reset()

    message = runs_tab.resume(studio, "short", 9)
    assert message.startswith("✓") and "iteration 6" in message
    assert studio.trainer.wait(120) == "finished"
    assert studio.trainer.status().run_dir == str(root / "short")
    info = by_name(root)["short"]
    assert info.iterations == 9 and info.event_files == 2 and info.ok  # one scalar file per session
    assert [r["iteration"] for r in runs.curves(root / "short").rows] == list(range(1, 10))
    assert runs_tab.resume(studio, "nope", 20).startswith("⚠")


def test_a_resume_after_a_crash_replaces_the_orphaned_points(tmp_path):
    """Session 1 logged steps 1..10 but its last checkpoint was at 6 (then it was killed); session 2 resumed
    from 6. The curve is 1..6 from the first session and 7..12 from the second, each step once."""
    from types import SimpleNamespace

    from dcgan.config import TrainConfig
    from dcgan.tblog import TensorBoardHook

    def session(first: int, last: int, loss: float) -> None:
        run = SimpleNamespace(iteration=first - 1, cfg=TrainConfig())
        hook = TensorBoardHook(tmp_path / "crashed")
        hook.on_start(run)
        for i in range(first, last + 1):
            hook.on_log(run, {"iteration": i, "loss_d": loss, "loss_g": loss, "time": time.time()})
        hook.writer.close()  # killed: no on_end

    session(1, 10, 1.0)
    time.sleep(1.1)  # the next file's name (its time stamp) sorts after
    session(7, 12, 2.0)
    rows = runs.curves(tmp_path / "crashed").rows
    assert [r["iteration"] for r in rows] == list(range(1, 13))
    assert [r["loss_d"] for r in rows] == [1.0] * 6 + [2.0] * 6


def test_a_renamed_or_moved_run_resumes_in_its_own_folder(root, two_runs):
    """The config inside the checkpoint still names the old out_dir/run_name; the resume must not go there."""
    new = runs.rename_run(root, "bce-run", "bce-renamed")
    trainer = Trainer()
    trainer.start(tiny_config(steps=10), resume_from=new)
    assert trainer.wait(120) == "finished"
    assert trainer.status().run_dir == str(new)
    assert (new / "step_00000010.safetensors").exists()
    assert not (two_runs / "bce-run" / "step_00000010.safetensors").exists()
    assert not (root / "bce-run").exists()


def test_one_header_reader_and_one_hidden_rule(root, tmp_path):
    """dcgan.checkpoint.read_meta reads every checkpoint header (the runs table, the checkpoint lists);
    is_hidden is the one rule that keeps the app's own folders out of both."""
    from dcgan.checkpoint import CheckpointError, is_checkpoint_file, is_hidden, read_meta

    good = root / "bce-run" / "step_00000008.safetensors"
    assert read_meta(good)["iteration"] == 8 and is_checkpoint_file(good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:5000])
    other = tmp_path / "weights.safetensors"
    save_file({"x": torch.zeros(1)}, other)
    for path, why in ((truncated, "damaged"), (other, "not a DCGAN Studio checkpoint"),
                      (tmp_path / "missing.safetensors", "damaged")):
        with pytest.raises(CheckpointError, match=why):
            read_meta(path)
        assert not is_checkpoint_file(path)
    assert is_hidden(".cache/x.safetensors") and is_hidden("run/.tmp/x") and not is_hidden("run/step.safetensors")
    (root / ".cache").mkdir()
    shutil.copy(good, root / ".cache" / "step_00000008.safetensors")
    assert ".cache" not in [r.name for r in runs.list_runs(root)]
    with pytest.raises(runs.RunsError, match="start with"):
        runs.check_new_name(root, ".hidden")
