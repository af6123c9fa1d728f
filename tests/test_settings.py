"""Bad settings: every invalid hyperparameter names its field (config, JSON, CLI, app form), and a
start that fails leaves the trainer idle with nothing half-made."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from dcgan import __main__ as cli
from dcgan.config import ConfigError, TrainConfig
from dcgan.data import DatasetError
from dcgan.trainer import IDLE, Trainer, TrainerBusy
from tests.conftest import tiny_config

# (field, an impossible value); every field of TrainConfig has at least one
BAD_VALUES = [
    ("dataset", "imagenet"), ("dataset", 3), ("data_path", 5), ("image_size", 48), ("image_size", "64"),
    ("channels", 2), ("augment", "yes"), ("val_fraction", 0.95), ("val_fraction", float("nan")),
    ("nz", 0), ("nz", 2.5), ("ngf", 2), ("ndf", 1000), ("num_classes", 1), ("num_classes", -3),
    ("spectral_norm", 1), ("batch_size", 1), ("batch_size", 5000), ("batch_size", True), ("lr_g", -1.0),
    ("lr_g", 0.0), ("lr_d", 2.0), ("lr_d", float("inf")), ("lr_g", "fast"), ("beta1", 1.0), ("beta2", -0.1),
    ("loss", "mse"), ("gp_weight", -1.0), ("r1_gamma", -0.5), ("d_steps", 0), ("d_steps", 11),
    ("ema_decay", 1.0), ("diffaug", "translation,blur"), ("steps", 0), ("minutes", -1.0), ("seed", -1), ("seed", 2**63),
    ("device", "tpu"), ("precision", "fp16"), ("sync_bn", None), ("log_every", -1),
    ("sample_every_s", 0.0), ("checkpoint_every", -5), ("keep_last", 0), ("metric_every", -1),
    ("nan_policy", "ignore"), ("run_name", "../escape"), ("run_name", "a/b"), ("out_dir", 7), ("extra", "notes"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES, ids=[f"{n}={v!r}" for n, v in BAD_VALUES])
def test_every_invalid_setting_names_its_field(name, value):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{name: value})  # refused where it is built
    assert info.value.field == name
    assert str(info.value).startswith(f"{name}: ")
    with pytest.raises(ConfigError) as info:  # the same through JSON (a saved config, a checkpoint)
        TrainConfig.from_dict({**TrainConfig().to_dict(), name: value})
    assert info.value.field == name


def test_the_table_covers_every_field():
    covered = {name for name, _ in BAD_VALUES}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields - covered == set(), f"add bad values for {sorted(fields - covered)}"


def test_folder_needs_a_path_and_json_errors_name_the_problem():
    with pytest.raises(ConfigError, match="^data_path: "):
        TrainConfig(dataset="folder")
    with pytest.raises(ConfigError, match="^lr_gg: unknown setting"):
        TrainConfig.from_dict({"lr_gg": 0.1})
    with pytest.raises(ConfigError, match="^config: not valid JSON"):
        TrainConfig.from_json("{lr_g: 1")
    with pytest.raises(ConfigError, match="^config: expected a JSON object"):
        TrainConfig.from_json("[1, 2]")


# ---- the command line --------------------------------------------------------------------------

CLI_CASES = [
    (["--lr-g", "-1"], "lr_g"), (["--lr-d", "0"], "lr_d"), (["--batch-size", "1"], "batch_size"),
    (["--image-size", "48"], "image_size"), (["--channels", "4"], "channels"), (["--loss", "l1"], "loss"),
    (["--beta1", "1.5"], "beta1"), (["--steps", "0"], "steps"), (["--nz", "0"], "nz"),
    (["--dataset", "folder"], "data_path"), (["--dataset", "imagenet"], "dataset"),
    (["--device", "cuda"], "device"), (["--run-name", "../x"], "run_name"), (["--ema-decay", "1"], "ema_decay"),
    (["--nan-policy", "skip"], "nan_policy"), (["--diffaug", "blur"], "diffaug"),
    (["--batch-size", "4096", "--val-fraction", "0.5"], "batch_size"),  # larger than the training set
]


@pytest.mark.parametrize(("argv", "name"), CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_names_the_field_and_exits_2(argv, name, capsys, tmp_path):
    import torch

    if name == "device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code = cli.main(["train", "--steps", "5", *argv, "--out-dir", str(tmp_path)])  # the last --steps wins
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"error: {name}: "), err
    assert list(tmp_path.iterdir()) == []  # no run folder, no checkpoint


def test_cli_type_errors_name_the_flag(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--batch-size", "many"])
    assert info.value.code == 2
    assert "--batch-size: invalid int value: 'many'" in capsys.readouterr().err


def test_python_m_dcgan_train_lr_g_minus_one_exits_2_naming_lr_g(tmp_path):
    """The exact command, in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "dcgan", "train", "--lr-g", "-1", "--out-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "lr_g: learning rate must be > 0" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- nothing starts half-configured ----------------------------------------------------------------


def bad_starts(tmp_path, digits):
    base = {"out_dir": str(tmp_path / "out")}
    few = dataclasses.replace(digits, train=digits.train[:40], train_labels=digits.train_labels[:40])
    return [
        ("config", lambda: dataclasses.replace(tiny_config(**base), lr_g=-1.0), digits, ConfigError),
        ("batch larger than the data", lambda: tiny_config(batch_size=64, **base), few, ConfigError),
        ("classes do not match", lambda: tiny_config(num_classes=3, **base), digits, ConfigError),
        ("missing folder", lambda: tiny_config(dataset="folder", data_path=str(tmp_path / "none"), **base),
         None, DatasetError),
    ]


def test_a_failing_start_leaves_the_trainer_idle_and_nothing_on_disk(tmp_path, digits_data):
    trainer = Trainer()
    for label, make, data, error in bad_starts(tmp_path, digits_data):
        with pytest.raises(error):
            trainer.start(make(), data=data)
        status = trainer.status()
        assert status.state == IDLE, label
        assert status.error == "" and status.run_dir == "" and trainer._reader is None, label
        assert trainer.generator() == (-1, None), label
    assert not (tmp_path / "out").exists()
    trainer.start(tiny_config(steps=3, out_dir=str(tmp_path / "out")), data=digits_data)  # still usable
    assert trainer.wait(60) == "finished"


def test_a_second_start_is_refused_and_leaves_the_first_run_alone(tmp_path, digits_data):
    trainer = Trainer()
    trainer.start(tiny_config(steps=10_000, out_dir=str(tmp_path)), data=digits_data, paused=True)
    first = trainer.status().run_dir
    with pytest.raises(TrainerBusy):
        trainer.start(tiny_config(steps=5, out_dir=str(tmp_path), run_name="other"), data=digits_data)
    with pytest.raises(ConfigError):  # nor does an invalid config, which cannot even be built
        trainer.start(dataclasses.replace(tiny_config(), nz=0), data=digits_data)
    status = trainer.status()
    assert status.state == "paused" and status.run_dir == first and status.total == 10_000
    trainer.stop()


def test_app_form_errors_name_the_field(tmp_path):
    from dcgan.studio import FORM_FIELDS
    from ui import train_actions
    from ui.state import Studio

    studio = Studio(tmp_path / "checkpoints")
    good = tiny_config(steps=10)
    form = {name: getattr(good, name, "default") for name in ("preset", *FORM_FIELDS)}  # the whole form, preset too
    form.update(image_size=str(good.image_size), channels=str(good.channels), lr_g=-1)
    message = train_actions.start(studio, form)
    assert "lr_g" in message
    assert studio.trainer.status().state == IDLE
    message = train_actions.start(studio, {**form, "lr_g": 2e-4, "batch_size": None})
    assert "batch_size" in message and studio.trainer.status().state == IDLE
