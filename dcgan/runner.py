"""The one way to run training: open a run (new, or resumed from a checkpoint), attach the standard hooks
(NaN roll-back, TensorBoard; `fit` itself saves the checkpoints), run `fit`, write its last samples as
samples.png, and turn a failure into one clear message. The command line (`dcgan train / resume / branch /
pull --resume`), dcgan/branch.py and the app's training process (dcgan/trainer.py) all call `train`.
"""

from __future__ import annotations

import io
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from . import distributed
from .checkpoint import RunFolder, config_of, read_meta, resolve_checkpoint, write_atomic
from .config import TrainConfig
from .data import ImageData
from .metrics import METRIC_KEY
from .train import Control, GANTraining, Hook, NanRollback, fit, load_training, out_of_memory_message


class RunFailed(RuntimeError):
    """Training stopped by an error; the message says what happened and what to do."""


@dataclass
class Outcome:
    state: str  # 'finished' or 'stopped' ('suspended': a ZeroGPU chunk ended)
    run: GANTraining
    folder: RunFolder
    nan_stop: str = ""  # why a NaN stopped the run (pause_on_nan=False), else ""


def open_run(cfg: TrainConfig | None, resume_from: str | Path | None = None,
             data: ImageData | None = None, branch: bool = False) -> tuple[GANTraining, RunFolder]:
    """A new run from cfg, or a checkpoint's (cfg, when given, sets its steps and device), and its folder.

    branch (dcgan/branch.py): the checkpoint's state under cfg as a whole (settings changed mid-run), in a
    folder of its own (cfg.out_dir / cfg.run_name) rather than going on in the checkpoint's."""
    if resume_from is not None and branch:
        if cfg is None:
            raise ValueError("a branch needs its config")
        before = config_of(read_meta(resolve_checkpoint(resume_from)))
        run = load_training(resume_from, data, **cfg.to_dict())
        carry_optimiser_settings(run, before)
        return run, RunFolder.open(run.cfg)
    if resume_from is not None:
        changes = {"steps": cfg.steps, "device": cfg.device} if cfg is not None else {}
        run = load_training(resume_from, data, **changes)
    else:
        if cfg is None:
            raise ValueError("a run needs a config or a checkpoint to resume")
        run = GANTraining(cfg, data)
    return run, RunFolder.open(run.cfg, resume_from)


def carry_optimiser_settings(run: GANTraining, before: TrainConfig) -> None:
    """Put the learning rates and Adam betas of run.cfg into the optimisers, where they differ from `before`
    (the config the optimiser states were saved under): load_state_dict restores the saved param_groups,
    which would otherwise keep the old values. A rate the NaN roll-back had lowered stays lowered by the
    same factor; an unchanged one is not touched (a branch without changes continues bit for bit)."""
    cfg = run.cfg
    for opt, key in ((run.opt_g, "lr_g"), (run.opt_d, "lr_d")):
        old, new = getattr(before, key), getattr(cfg, key)
        for group in opt.param_groups:
            if new != old:
                group["lr"] = new * (group["lr"] / old)
            if (cfg.beta1, cfg.beta2) != (before.beta1, before.beta2):
                group["betas"] = (cfg.beta1, cfg.beta2)


def failure_message(exc: BaseException, cfg: TrainConfig, device: torch.device | str) -> str:
    return (out_of_memory_message(exc, cfg, device) or
            f"Training stopped by an error: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}")


def tensorboard_hooks(run_dir: Path) -> list[Hook]:
    """TensorBoard event files in the run folder (dcgan/tblog.py); none where TensorBoard is missing."""
    try:
        from .tblog import TensorBoardHook
    except ImportError:
        return []
    return [TensorBoardHook(run_dir)]


SAMPLES_FILE = "samples.png"
SAMPLES_MIN_SIDE = 512


class LastPictures(Hook):
    """Keeps the newest fixed-noise samples fit drew (at the end: those of the last iteration)."""

    images: torch.Tensor | None = None

    def on_pictures(self, run: GANTraining, images: torch.Tensor) -> None:
        self.images = images


def write_samples(run_dir: Path, images: torch.Tensor) -> Path:
    """The run's last samples as run_dir/samples.png, upscaled so 28-pixel digits are visible (atomic: the Runs
    tab may read it meanwhile)."""
    from PIL import Image

    from .images import grid_array, upscale

    buffer = io.BytesIO()
    Image.fromarray(upscale(grid_array(images), SAMPLES_MIN_SIDE)).save(buffer, format="PNG")
    path = Path(run_dir) / SAMPLES_FILE
    write_atomic(path, buffer.getvalue())
    return path


def train(cfg: TrainConfig | None = None, *, resume_from: str | Path | None = None, branch: bool = False,
          data: ImageData | None = None, hooks: Sequence[Hook] = (), control: Control | None = None,
          metric_fn: Callable[[GANTraining], dict] | None = None, metric_key: str = METRIC_KEY,
          lower_is_better: bool = True, pause_on_nan: bool = False,
          opened: Callable[[GANTraining, RunFolder], None] | None = None,
          run_in: tuple[GANTraining, RunFolder] | None = None) -> Outcome:
    """Open the run and train it with `fit` until cfg.steps, cfg.minutes or a stop.

    What opening the run raises (ConfigError, DatasetError, CheckpointError, out of memory) propagates as it
    is: nothing has started. An error while training raises RunFailed with one clear message; the run's
    checkpoints stay. A NaN that the roll-backs do not cure pauses the run (pause_on_nan: someone can resume
    it) or stops it, saving the last good state. opened(run, folder) is called once the run is built.
    branch: resume_from's state trains under cfg in a new folder (see open_run; dcgan.branch.branch).
    run_in: a run already open (a ZeroGPU chunk after the first, dcgan/zerogpu.py); its Outcome may be
    'suspended' (the chunk's end)."""
    control = control or Control()
    run, folder = run_in if run_in is not None else open_run(cfg, resume_from, data, branch)
    if opened is not None:
        opened(run, folder)
    nan_stop: list[str] = []

    def announce(message: str, problem: bool = False) -> None:
        for hook in hooks:
            on_event = getattr(hook, "on_event", None)
            if on_event is not None:
                on_event(run, message, problem)

    def nan_pause(message: str) -> None:
        if pause_on_nan:
            control.pause()
        else:
            nan_stop.append(message)
            control.stop()
        announce(message, True)

    last = LastPictures()
    standard: list[Hook] = [NanRollback(say=announce, pause=nan_pause), last]
    if distributed.is_main():
        standard += tensorboard_hooks(folder.path)
    try:
        state = fit(run, [*standard, *hooks], control, folder=folder, metric_fn=metric_fn, metric_key=metric_key,
                    lower_is_better=lower_is_better)
    except Exception as exc:
        raise RunFailed(failure_message(exc, run.cfg, run.device)) from exc
    finally:
        if run.device.type == "cuda":
            torch.cuda.empty_cache()
    if last.images is not None:  # every run, the app's and the command line's (rank 0 alone draws pictures)
        try:
            write_samples(folder.path, last.images)
        except OSError as exc:  # a full disk: the checkpoint is what matters
            announce(f"could not write {SAMPLES_FILE}: {exc.strerror or exc}", True)
    return Outcome(state, run, folder, nan_stop[0] if nan_stop else "")


__all__ = ["train", "open_run", "carry_optimiser_settings", "Outcome", "RunFailed", "failure_message",
           "tensorboard_hooks", "write_samples", "SAMPLES_FILE"]
