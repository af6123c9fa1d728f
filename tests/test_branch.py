"""Branching a run (dcgan/branch.py, `dcgan branch`): a branch starts from the parent's saved state exactly, goes
on bit for bit when nothing changed, diverges from its first step when a learning rate changed, records its
lineage where resume, `dcgan runs`, TensorBoard and the model card find it, and refuses bad input creating
nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dcgan import runs
from dcgan.__main__ import main
from dcgan.branch import branch, plan_branch
from dcgan.card import build_card
from dcgan.checkpoint import CheckpointError, config_of, read
from dcgan.config import ConfigError
from dcgan.models import Generator
from dcgan.runner import train
from dcgan.tblog import event_files
from dcgan.train import load_training
from tests.conftest import tiny_config

ROOT = Path(__file__).resolve().parent.parent
STEP = "step_{:08d}.safetensors"


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on the shared 2-core machine two threads wait on each other (100x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def parent_dir(tmp_path_factory, digits_data) -> Path:
    """A 70-step run saved at steps 20, 40, 60 and 70 (EMA and lazy R1 on, as in the default recipe)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("branch") / "checkpoints"
        cfg = tiny_config(steps=70, checkpoint_every=20, keep_last=10, out_dir=str(root), run_name="parent", seed=3)
        assert train(cfg, data=digits_data).state == "finished"
    finally:
        torch.set_num_threads(previous)
    return root / "parent"


@pytest.fixture
def root(parent_dir, tmp_path) -> Path:
    """A checkpoints folder holding a copy of the parent, for tests that add runs beside it."""
    copy = tmp_path / "checkpoints"
    shutil.copytree(parent_dir, copy / "parent")
    return copy


def training_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The weights and optimiser states of a checkpoint (G, D, the EMA generator, both Adam states)."""
    tensors, _ = read(path)
    return {k: v for k, v in tensors.items() if k.split(".")[0] in ("G", "D", "G_ema", "opt_g", "opt_d")}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> list[str]:
    return [k for k in a if k.startswith(prefix + ".") and not torch.equal(a[k], b[k])]


def test_a_branch_without_changes_continues_exactly_as_its_parent(parent_dir, digits_data, tmp_path):
    outcome = branch(parent_dir, step=20, steps=70, out_dir=tmp_path, data=digits_data)
    assert outcome.state == "finished" and outcome.folder.path == tmp_path / "parent-branch"
    branched = training_tensors(outcome.folder.path / STEP.format(70))

    resumed_dir = tmp_path / "resumed"  # the parent resumed from the same step for the same 50 steps
    resumed_dir.mkdir()
    shutil.copy(parent_dir / STEP.format(20), resumed_dir)
    train(tiny_config(steps=70), resume_from=resumed_dir / STEP.format(20), data=digits_data)
    resumed = training_tensors(resumed_dir / STEP.format(70))

    assert any(k.startswith("G.") for k in branched) and any(k.startswith("D.") for k in branched)
    assert same(branched, resumed), differing(branched, resumed, "D") + differing(branched, resumed, "G")
    assert same(branched, training_tensors(parent_dir / STEP.format(70)))  # and as the parent itself went on
    # the 50 steps did change the weights (the comparison is not between two untouched copies)
    assert differing(branched, training_tensors(parent_dir / STEP.format(20)), "G")


def test_a_changed_learning_rate_reaches_the_optimiser_and_differs_from_the_first_step(parent_dir, digits_data,
                                                                                         tmp_path):
    start = training_tensors(parent_dir / STEP.format(20))
    seen = {}

    def opened(run, folder) -> None:
        seen.update(iteration=run.iteration, lr_g=[g["lr"] for g in run.opt_g.param_groups],
                    lr_d=[g["lr"] for g in run.opt_d.param_groups], betas=tuple(run.opt_d.param_groups[0]["betas"]),
                    state=training_tensors_of(run))

    outcome = branch(parent_dir, step=20, changes={"lr_d": "8e-4"}, steps=21, out_dir=tmp_path, data=digits_data,
                     opened=opened)
    assert outcome.folder.path.name == "parent-lr_d=0.0008"
    assert seen["iteration"] == 20 and same(seen["state"], start)  # it starts from the parent's state exactly
    assert seen["lr_d"] == [8e-4] and seen["lr_g"] == [4e-4] and seen["betas"] == (0.5, 0.999)
    _, meta = read(outcome.folder.path / STEP.format(21))
    assert [g["lr"] for g in meta["param_groups_d"]] == [8e-4] and meta["config"]["lr_d"] == 8e-4

    parent_next = load_training(parent_dir / STEP.format(20), digits_data)  # the parent's own step 21
    parent_next.train_step()
    assert parent_next.opt_d.param_groups[0]["lr"] == 4e-4
    ours, theirs = training_tensors(outcome.folder.path / STEP.format(21)), training_tensors_of(parent_next)
    assert differing(ours, theirs, "D") and differing(ours, theirs, "G")


def training_tensors_of(run) -> dict[str, torch.Tensor]:
    tensors, _ = run.state_dict()
    return {k: v for k, v in tensors.items() if k.split(".")[0] in ("G", "D", "G_ema", "opt_g", "opt_d")}


def test_the_lineage_is_recorded_listed_logged_and_kept_on_resume(root, digits_data, capsys):
    outcome = branch(root / "parent", step=40, changes={"loss": "hinge", "batch-size": "16", "d_steps": 2},
                     steps=44, data=digits_data)
    folder = outcome.folder.path
    assert folder == root / "parent-loss=hinge-batch_size=16-d_steps=2"  # beside the parent, named by its changes
    cfg = config_of(read(folder / STEP.format(44))[1])
    assert cfg.extra["branched_from"] == {"run": "parent", "step": 40, "checkpoint": STEP.format(40),
                                          "changes": {"loss": ["bce", "hinge"], "batch_size": [32, 16],
                                                      "d_steps": [1, 2]}}
    assert (cfg.loss, cfg.batch_size, cfg.d_steps, cfg.run_name) == ("hinge", 16, 2, folder.name)
    assert (folder / "samples.png").is_file()

    listed = {r.name: r for r in runs.list_runs(root)}
    assert listed[folder.name].branched_from["step"] == 40 and listed["parent"].branched_from is None
    assert listed[folder.name].row()["branched from"] == "parent @ 40 (loss=hinge, batch_size=16, d_steps=2)"
    assert listed["parent"].row()["branched from"] == ""
    assert main(["runs", str(root)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "branched from" in table[0]
    assert any(line.startswith(f"└─ {folder.name}") and "parent @ 40" in line for line in table)  # under its parent

    hparams = session_hparams(folder)  # TensorBoard's hparams carry the parent and the step
    assert (hparams["branched_from/run"], hparams["branched_from/step"]) == ("parent", 40)

    card = build_card("me/branch", Generator.from_config(cfg), cfg, {"iteration": 44}, has_losses=False,
                      has_training_state=False)
    assert "Branched from the run `parent` at iteration 40" in card and "`loss` bce → hinge" in card

    assert train(cfg.replace(steps=48), resume_from=folder, data=digits_data).folder.path == folder  # a resume
    resumed = config_of(read(folder / STEP.format(48))[1])
    assert resumed.extra["branched_from"] == cfg.extra["branched_from"] and resumed.loss == "hinge"

    again = plan_branch(root / "parent", step=40, changes={"loss": "hinge", "batch_size": 16, "d_steps": 2},
                        steps=44)
    assert again.folder == root / f"{folder.name}-2"  # the default name is made unique
    branch_of_branch = plan_branch(folder, changes={"lr_g": 1e-4}, steps=60)  # a branch of a branch: its own parent
    assert branch_of_branch.cfg.extra["branched_from"]["run"] == folder.name
    assert branch_of_branch.step == 48 and branch_of_branch.changes == {"lr_g": (4e-4, 1e-4)}


def session_hparams(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    ea = EventAccumulator(str(event_files(run_dir, grids=False)[-1]))
    ea.Reload()
    content = ea.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value or v.number_value for k, v in info.hparams.items()}


def test_the_command_line_branches_a_run(root):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["branch", str(root / "parent"), "--step", "60", "--set", "lr_g=2e-4", "--set", "diffaug=translation",
            "--steps", "64", "--name", "what-if"]
    result = subprocess.run([sys.executable, "-m", "dcgan", *args], capture_output=True, text=True, timeout=300,
                            env=env, cwd=root)
    assert result.returncode == 0, result.stderr
    assert "branch of parent at iteration 60 (lr_g 0.0004 -> 0.0002, diffaug  -> translation)" in result.stdout
    _, meta = read(root / "what-if" / STEP.format(64))
    assert [g["lr"] for g in meta["param_groups_g"]] == [2e-4] and meta["config"]["diffaug"] == "translation"
    assert meta["config"]["extra"]["branched_from"]["step"] == 60
    assert sorted(p.name for p in root.iterdir()) == ["parent", "what-if"]


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "lr_x=1"], "error: lr_x: unknown setting; a branch can change"),
    (["--set", "lr_d=fast"], "error: lr_d: must be a number, got 'fast'"),
    (["--set", "lr_d=-1"], "error: lr_d: learning rate must be > 0"),  # TrainConfig's own validation
    (["--set", "d_steps=1.5"], "error: d_steps: must be an integer, got '1.5'"),
    (["--set", "ngf=64"], "error: ngf: ngf (G width) cannot change in a branch: it changes the networks' layers"),
    (["--set", "seed=1"], "error: seed: Seed cannot change in a branch"),
    (["--set", "lr_d"], "error: --set: expected key=value"),
    (["--step", "30"], "error: parent has no checkpoint at step 30 (saved steps: 20, 40, 60, 70)"),
    ([], "error: steps: the branch starts at iteration 70, so its total must be above that (got 70)"),
    (["--step", "20", "--name", "parent"], "already exists; choose another --name"),
    (["--step", "20", "--name", "../out"], "error: run_name: must be a plain name"),
])
def test_bad_input_is_one_clear_line_and_creates_nothing(root, capsys, args, message):
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert main(["branch", str(root / "parent"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_a_missing_run_and_python_errors_name_the_problem(root, tmp_path, capsys):
    assert main(["branch", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="does not exist"):
        plan_branch(tmp_path / "nothing", step=20)
    with pytest.raises(ConfigError) as caught:  # values given as Python values meet the same validation
        plan_branch(root / "parent", step=20, changes={"loss": "mse"})
    assert caught.value.field == "loss" and "'mse' is not one of" in str(caught.value)
    assert sorted(p.name for p in root.iterdir()) == ["parent"]
