"""Several runs at once in the app (issue 24): a live run branched at its step by a What-if question trains in a
lane of its own beside its parent, each steerable on its own; the Train tab's side-by-side view shows both; the Runs
tab branches a saved step and lists runs as a tree."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from dcgan import runs
from dcgan.branch import WHAT_IF
from dcgan.studio import BRANCH_NICE, Studio
from dcgan.trainer import TrainerBusy
from tests.browser import wait_for as wait_until
from tests.conftest import tiny_config
from ui import runs_tab, side_by_side
from ui import train_actions as act


def steps_saved(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("step_*.safetensors"))


@pytest.fixture
def studio(tmp_path):
    studio = Studio(tmp_path / "checkpoints", threads=2, max_runs=2)
    yield studio
    studio.stop_all(wait=True, timeout=60)


def test_a_what_if_branch_trains_beside_its_parent_and_each_is_steered_alone(studio):
    root = studio.root
    assert studio.threads == 1  # two runs on two threads' worth of cores: one each
    studio.start(tiny_config(steps=100_000, out_dir=str(root), run_name="parent", sample_every_s=0.5))
    parent = studio.trainer
    wait_until(lambda: parent.status().iteration >= 5, what="the parent's first iterations")

    message = act.what_if(studio, "D learns ×2 faster")
    assert message.startswith("✓") and "run B" in message, message
    branch = studio.trainer_of(1)
    st, lr = branch.status(), parent.config.lr_d
    assert st.state == "running" and st.run_dir.endswith(f"parent-lr_d={2 * lr:g}")
    record = branch.config.extra["branched_from"]
    assert record["run"] == "parent" and record["changes"] == {"lr_d": [lr, 2 * lr]}
    assert record["step"] >= 5 and (root / "parent" / f"step_{record['step']:08d}.safetensors").is_file()
    assert branch.config.lr_d == 2 * parent.config.lr_d and branch.config.seed == parent.config.seed

    # the branch's training process gives way to the parent's and to the page (nice), the parent's does not
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    niceness = sorted(os.getpriority(os.PRIO_PROCESS, p.pid) - mine for p in multiprocessing.active_children()
                      if p.name == "dcgan-train")
    assert niceness == [0, BRANCH_NICE]
    if hasattr(os, "SCHED_IDLE"):  # Linux: the branch runs only on what the others leave (SCHED_IDLE)
        policies = sorted(os.sched_getscheduler(p.pid) for p in multiprocessing.active_children()
                          if p.name == "dcgan-train")
        assert policies == sorted([os.SCHED_OTHER, os.SCHED_IDLE])

    # no room for a third run: refused before the parent saves anything
    saved = steps_saved(root / "parent")
    refused = act.what_if(studio, "another loss")
    assert "2 runs already train at once" in refused and steps_saved(root / "parent") == saved

    # pause the branch: it stays where it is while the parent trains on
    wait_until(lambda: branch.status().iteration > record["step"] + 2, what="the branch's own iterations")
    assert act.lane_control(studio, 1, "pause") == "Run B: paused."
    wait_until(lambda: branch.status().state == "paused", what="the pause")
    time.sleep(0.5)
    held, moving = branch.status().iteration, parent.status().iteration
    wait_until(lambda: parent.status().iteration > moving + 3, what="the parent going on")
    assert branch.status().iteration == held
    assert set(studio.run_states().values()) == {"running", "paused"}
    assert act.lane_control(studio, 1, "pause").startswith("Nothing to pause")
    assert act.lane_control(studio, 1, "step") == "Run B: one step, then paused."
    wait_until(lambda: branch.status().iteration == held + 1, what="the branch's single step")
    assert parent.status().state == "running"

    # the side-by-side view: both runs' columns, heads saying what differs, grids, curves of both
    seen, values = side_by_side.view(studio, {}, 0.0)
    outputs = side_by_side.outputs(studio_components := fake_components(studio.max_runs))
    assert len(values) == len(outputs), (len(values), len(outputs))
    shown = dict(zip(map(id, outputs), values, strict=True))
    heads = [shown[id(studio_components["slots"][lane]["head"])] for lane in range(2)]
    assert "**A**" in heads[0] and "the run shown in full" in heads[0]
    assert "**B**" in heads[1] and "branch of `parent`" in heads[1] and f"lr_d {lr} → {2 * lr}" in heads[1]
    grids = [shown[id(studio_components["slots"][lane]["grid"])] for lane in range(2)]
    assert all(isinstance(g, str) and g.endswith(".png") for g in grids)
    losses = shown[id(studio_components["loss_plot"])].value["data"]
    series = {row[-1] for row in losses}
    assert {"A loss_D", "A loss_G", "B loss_D", "B loss_G"} <= series
    # a second poll right after sends no grid again (nothing changed for it)
    _, again = side_by_side.view(studio, seen, 0.0)
    assert "png" not in str(dict(zip(map(id, outputs), again, strict=True))[id(studio_components["slots"][1]["grid"])])

    studio.stop_all()
    assert {t.status().state for t in studio.lanes} == {"stopped"}
    assert all(t.last_checkpoint() is not None for t in studio.lanes)


def fake_components(lanes: int) -> dict:
    """Stand-ins with the shape side_by_side.build returns (outputs() only reads them), without Gradio Blocks."""
    names = ("column", "head", "grid", *side_by_side.ACTIONS)
    return {"note": object(), "plots_row": object(), "loss_plot": object(), "d_plot": object(),
            "slots": [{k: object() for k in names} for _ in range(lanes)]}


def test_the_runs_tab_branches_a_saved_step_and_shows_the_tree(studio):
    root = studio.root
    studio.trainer.start(tiny_config(steps=12, checkpoint_every=4, out_dir=str(root), run_name="p"))
    assert studio.trainer.wait(120) == "finished"
    assert runs_tab.saved_steps(root, "p") == [12, 8, 4]

    bad = runs_tab.branch(studio, "p", 8, "ngf=32")
    assert "cannot change in a branch" in bad and not (root / "p-ngf=32").exists()
    message = runs_tab.branch(studio, "p", 8, "lr_g=1e-3, diffaug=translation,cutout loss=hinge")
    assert message.startswith("✓") and "iteration 8" in message, message
    lane = next(t for t in studio.lanes[1:] if t.config is not None)
    assert lane.wait(120) == "finished"
    cfg = lane.config
    assert (cfg.lr_g, cfg.diffaug, cfg.loss) == (1e-3, "translation,cutout", "hinge")

    tree = [(depth, r.name) for depth, r in runs.as_tree(runs.list_runs(root))]
    assert tree == [(0, "p"), (1, cfg.run_name)]
    table = runs_tab.runs_table(runs.list_runs(root))
    assert list(table["run"]) == ["p", f"└─ {cfg.run_name}"]
    assert table["branched from"].iloc[1].startswith("p @ 8")


def test_changes_typed_in_the_runs_tab_split_at_each_name():
    assert runs_tab.parse_changes("lr_d=8e-4, diffaug=translation,cutout loss=hinge") == {
        "lr_d": "8e-4", "diffaug": "translation,cutout", "loss": "hinge"}
    assert runs_tab.parse_changes("  ") == {}


def test_every_what_if_question_changes_one_setting_of_a_valid_config():
    cfg = tiny_config()
    for question, change in WHAT_IF.items():
        changed = change(cfg)
        assert len(changed) == 1, question
        cfg.replace(**changed)  # valid: TrainConfig checks it


def test_a_lane_beyond_the_limit_is_refused_with_the_reason(tmp_path):
    studio = Studio(tmp_path, max_runs=1)
    with pytest.raises(TrainerBusy, match="no run to ask about"):
        studio.what_if(0, "D learns ×½")
    with pytest.raises(ValueError, match="there is no run 3"):
        studio.trainer_of(2)
