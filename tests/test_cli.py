"""The command line end to end on the bundled digits: train, resume, sample, --help."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from dcgan.checkpoint import read


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcgan", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def test_train_resume_and_sample_end_to_end(tmp_path):
    common = ["--ngf", "16", "--ndf", "16", "--batch-size", "32", "--device", "cpu",
              "--out-dir", str(tmp_path), "--run-name", "cli"]
    result = cli("train", "--dataset", "digits", "--image-size", "28", "--steps", "30",
                 "--checkpoint-every", "10", "--keep-last", "2", *common)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "cli"
    files = sorted(p.name for p in run_dir.glob("step_*.safetensors"))
    assert files == ["step_00000020.safetensors", "step_00000030.safetensors"]  # last 2 kept
    assert (run_dir / "samples.png").exists()
    assert list(run_dir.glob("events.out.tfevents.*"))  # TensorBoard logs on the CLI path too

    result = cli("resume", str(run_dir), "--steps", "40")
    assert result.returncode == 0, result.stderr
    _, meta = read(run_dir / "step_00000040.safetensors")
    assert meta["iteration"] == 40 and meta["config"]["ngf"] == 16

    out = tmp_path / "grid.png"
    result = cli("sample", str(run_dir / "step_00000040.safetensors"), "--out", str(out), "--n", "16")
    assert result.returncode == 0, result.stderr
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] >= 512 and grid.std() > 10  # a real picture, not a blank

    by_folder = tmp_path / "grid_folder.png"  # a run folder means its newest checkpoint, as for resume
    result = cli("sample", str(run_dir), "--out", str(by_folder), "--n", "16")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(by_folder)), grid)

    (tmp_path / "empty").mkdir()
    result = cli("sample", str(tmp_path / "empty"), "--out", str(tmp_path / "none.png"))
    assert result.returncode == 2 and "no readable checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_flag_value_names_the_field(tmp_path):
    result = cli("train", "--lr-g", "-1", "--out-dir", str(tmp_path))
    assert result.returncode == 2
    assert "lr_g" in result.stderr and "Traceback" not in result.stderr


def test_help_documents_every_flag():
    import dataclasses

    from dcgan.config import TrainConfig, help_text

    out = " ".join(cli("train", "--help").stdout.split())  # argparse wraps the help lines
    for f in dataclasses.fields(TrainConfig):
        if f.name != "extra":
            assert "--" + f.name.replace("_", "-") in out
            assert " ".join(help_text(f.name).split()[:4]) in out, f.name  # the field's own help text


def test_preset_sets_the_recipe_and_flags_override_it():
    from dcgan.__main__ import build_parser, config_from_args
    from dcgan.config import PRESETS, TrainConfig

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    assert cfg() == TrainConfig()  # the default preset is the dataclass defaults
    classic = cfg("--preset", "classic")
    assert (classic.ngf, classic.ndf, classic.lr_g, classic.ema_decay) == (64, 64, 2e-4, 0.0)
    assert all(getattr(classic, k) == v for k, v in PRESETS["classic"].items())
    assert cfg("--preset", "classic", "--ngf", "16").ngf == 16  # a flag wins over the preset
    assert cfg("--preset", "classic", "--dataset", "digits").ndf == 64


def test_minutes_alone_lets_the_clock_end_the_run_and_steps_still_cap_it():
    from dcgan.__main__ import TIME_LIMITED_STEPS, build_parser, config_from_args

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(["train", *argv]))

    assert cfg().minutes == 0 and cfg().steps == 2000
    timed = cfg("--minutes", "2.5")
    assert timed.minutes == 2.5 and timed.steps == TIME_LIMITED_STEPS
    assert cfg("--minutes", "2.5", "--steps", "300").steps == 300
