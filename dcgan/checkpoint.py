"""Checkpoint files: one safetensors file per save, tensors in the body, everything else as JSON metadata.

A checkpoint holds a run's `GANTraining.state_dict()` (G, D, the EMA generator, both Adam states, the RNG
state, the data order, the fixed noise, the config, the metric history) and a format version: enough to
resume a run bit for bit on the CPU. This module only encodes and decodes files; the run builds and
restores its own state (dcgan/train.py). Writes are atomic (temp file, fsync, rename, fsync of the folder), so a
crash mid-save leaves the previous checkpoint untouched. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import ConfigError, TrainConfig

FORMAT_VERSION = 1
FORMAT_NAME = "dcgan-studio-checkpoint"
STEP_FILE = re.compile(r"^step_(\d{8})\.safetensors$")
BEST_FILE = "best.safetensors"
MAX_CHECKPOINT_BYTES = 4 * 1024**3


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says why and what to do."""


# ---- reading and writing files ----------------------------------------------------------------


def write_atomic(path: Path, payload: bytes) -> None:
    """temp file in the same folder, fsync, rename over the target, fsync the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def encode(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """The file's bytes: the tensors, and the metadata as JSON with this format's name and version."""
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "torch_version": torch.__version__, **meta}
    return st_save(tensors, metadata={"dcgan_studio": json.dumps(meta)})


def save_training(run, path: str | Path) -> Path:
    """Write a full, resumable checkpoint of a GANTraining (its state_dict) atomically."""
    tensors, meta = run.state_dict()
    try:
        write_atomic(Path(path), encode(tensors, meta))
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {Path(path).name}: {exc.strerror or exc}. "
                              f"The previous checkpoint is untouched; free disk space or choose a "
                              f"writable folder.") from exc
    return Path(path)


def read(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a checkpoint file, with a clear error for every way it can be wrong."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.suffix in (".pt", ".pth", ".pkl", ".ckpt", ".bin"):
        raise CheckpointError(f"{path.name} is a pickle-based PyTorch file; DCGAN Studio only opens "
                              f".safetensors checkpoints (import pytorch/examples weights with "
                              f"'python -m dcgan import')")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path.name} is empty (0 bytes): the save was interrupted")
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"checkpoint {path.name} is {size / 1e9:.1f} GB, over the 4 GB limit")
    data = path.read_bytes()
    return decode(data, path.name)


def decode(data: bytes, name: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    if data[:2] in (b"\x80\x02", b"\x80\x04", b"\x80\x05") or data[:2] == b"PK":
        raise CheckpointError(f"{name} is a pickle / torch.save file, not safetensors; it was not opened")
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError, OverflowError) as exc:
        raise CheckpointError(f"{name} is corrupt or truncated (not a readable safetensors file: {exc}); "
                              f"use an earlier checkpoint") from exc
    raw = (header.get("__metadata__") or {}).get("dcgan_studio")
    if raw is None:
        raise CheckpointError(f"{name} is a safetensors file but not a DCGAN Studio checkpoint "
                              f"(no dcgan_studio metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{name} has damaged metadata: {exc}") from exc
    version = meta.get("format_version")
    if meta.get("format") != FORMAT_NAME or not isinstance(version, int):
        raise CheckpointError(f"{name} is not a DCGAN Studio checkpoint (format {meta.get('format')!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{name} was written by a newer DCGAN Studio (format {version}, this one "
                              f"reads up to {FORMAT_VERSION}); upgrade DCGAN Studio to open it")
    return tensors, meta


def config_of(meta: dict[str, Any]) -> TrainConfig:
    try:
        return TrainConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(f"the checkpoint's training config is invalid: {exc}") from exc


def load_module(module: torch.nn.Module, prefix: str, tensors: dict[str, torch.Tensor], name: str) -> None:
    """Strict load with a message naming the first mismatch (never a silent strict=False)."""
    own = module.state_dict()
    theirs = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{name}: the {prefix} weights do not fit this architecture ({what})")
    for key, value in own.items():
        if tuple(theirs[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{name}: {prefix}.{key} has shape {tuple(theirs[key].shape)} in the "
                                  f"checkpoint but {tuple(value.shape)} in this architecture "
                                  f"(different image size, channels, nz, ngf/ndf or classes)")
    module.load_state_dict({k: v.to(value.device) for k, v in theirs.items() for value in [own[k]]})


def load_generator(path: str | Path, device: str | torch.device = "cpu", ema: bool = True):
    """(Generator in eval mode, TrainConfig, metadata) from a checkpoint file or run folder, for sampling only."""
    from .models import Generator

    path = resolve_checkpoint(path)
    tensors, meta = read(path)
    cfg = config_of(meta)
    G = Generator.from_config(cfg)
    prefix = "G_ema" if ema and any(k.startswith("G_ema.") for k in tensors) else "G"
    load_module(G, prefix, tensors, Path(path).name)
    return G.to(device).eval(), cfg, meta


# ---- a run folder: last N plus the best ------------------------------------------------------


class RunFolder:
    """checkpoints/<run>/: step_XXXXXXXX.safetensors (last N kept) and best.safetensors."""

    def __init__(self, path: str | Path, keep_last: int = 3):
        self.path = Path(path)
        self.keep_last = keep_last

    @classmethod
    def open(cls, cfg: TrainConfig, resume_from: str | Path | None = None) -> RunFolder:
        """out_dir/run_name, created now so an unwritable out_dir fails before training. A resumed run
        folder (or one of its step/best files) goes on in that same folder, wherever it was renamed or
        moved to; anything else resumed (a Hub download) keeps its folder's name under out_dir."""
        source = None if resume_from is None else Path(resume_from)
        if source is not None and (source.is_dir() or STEP_FILE.match(source.name) or source.name == BEST_FILE):
            path = source if source.is_dir() else source.parent
        elif cfg.run_name:
            path = Path(cfg.out_dir) / cfg.run_name
        elif source is not None:
            path = Path(cfg.out_dir) / (source.name if source.is_dir() else source.parent.name)
        else:
            path = Path(cfg.out_dir) / time.strftime(f"{cfg.dataset}-{cfg.image_size}px-%Y%m%d-%H%M%S")
        folder = cls(path, cfg.keep_last)
        try:
            folder.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(f"cannot create the run folder {folder.path}: {exc.strerror or exc}; "
                                  f"choose a writable out_dir") from exc
        return folder

    def step_files(self) -> list[Path]:
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if STEP_FILE.match(p.name))

    def latest(self) -> Path | None:
        """The newest checkpoint that reads cleanly (a damaged newest one falls back to the one before)."""
        for p in reversed(self.step_files()):
            try:
                read(p)
                return p
            except CheckpointError:
                continue
        return None

    def save(self, run) -> Path:
        path = save_training(run, self.path / f"step_{run.iteration:08d}.safetensors")
        for old in self.step_files()[:-self.keep_last]:
            old.unlink(missing_ok=True)
        for stale in self.path.glob(".step_*.tmp"):  # left by a process killed mid-save
            stale.unlink(missing_ok=True)
        return path

    def best_score(self) -> float | None:
        best = self.path / BEST_FILE
        if not best.exists():
            return None
        try:
            _, meta = read(best)
        except CheckpointError:
            return None
        return meta.get("best_score")

    def offer_best(self, run, score: float, lower_is_better: bool = True) -> bool:
        """Save as best.safetensors if score beats the best so far; True when it did."""
        current = self.best_score()
        better = current is None or (score < current if lower_is_better else score > current)
        if better:
            tensors, meta = run.state_dict()
            meta["best_score"] = score
            try:
                write_atomic(self.path / BEST_FILE, encode(tensors, meta))
            except OSError as exc:
                raise CheckpointError(f"could not write {BEST_FILE}: {exc.strerror or exc}. The previous best is "
                                      f"untouched; free disk space or choose a writable folder.") from exc
        return better


# ---- finding checkpoints ----------------------------------------------------------------------


def resolve_checkpoint(path: str | Path, best: bool = False, step: int | None = None) -> Path:
    """The one "run folder or file -> checkpoint" rule: a file is returned as is; a folder gives its
    newest readable step_*.safetensors (best.safetensors when it has none, or first with best=True).
    step: that iteration's step_XXXXXXXX.safetensors of the run (a file stands for its folder); the error
    lists the steps the run has saved (only the last keep_last are kept)."""
    path = Path(path)
    if step is not None:
        if not path.exists():
            raise CheckpointError(f"checkpoint {path} does not exist")
        folder = path if path.is_dir() else path.parent
        wanted = folder / f"step_{step:08d}.safetensors"
        if not wanted.is_file():
            saved = [int(STEP_FILE.match(p.name).group(1)) for p in RunFolder(folder).step_files()]
            listed = ", ".join(str(s) for s in saved) if saved else "none"
            raise CheckpointError(f"{folder.name} has no checkpoint at step {step} (saved steps: {listed})")
        return wanted
    if path.is_dir():
        best_file = path / BEST_FILE
        if best and best_file.is_file():
            return best_file
        latest = RunFolder(path).latest()
        if latest is not None:
            return latest
        if best_file.is_file():
            return best_file
        raise CheckpointError(f"no readable checkpoint in the folder {path} (expected step_XXXXXXXX.safetensors "
                              f"or {BEST_FILE})")
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata from its safetensors header alone (no tensors read), for listing many files
    cheaply; safetensors checks that the header covers the whole file, so a truncated file fails here too."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("dcgan_studio")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path.name} is damaged ({str(exc)[:120]})") from exc
    try:
        meta = json.loads(raw) if raw else None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path.name} has damaged metadata") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{path.name} is not a DCGAN Studio checkpoint")
    return meta


def is_checkpoint_file(path: Path) -> bool:
    """True when the file's header says it is a whole DCGAN Studio checkpoint (reads the header only)."""
    try:
        read_meta(path)
    except CheckpointError:
        return False
    return True


def is_hidden(relative: str | Path) -> bool:
    """True when a part of a path below the root starts with ".": the app's own folders (.cache with metric
    statistics, .uploads) are never runs or checkpoints."""
    return any(part.startswith(".") for part in Path(relative).parts)


def list_run_checkpoints(root: str | Path) -> list[Path]:
    """Every DCGAN Studio checkpoint under root (run folders, imports, pulls), newest first. Hidden
    folders and safetensors files that are not checkpoints are left out."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.rglob("*.safetensors")
             if p.is_file() and not is_hidden(p.relative_to(root)) and is_checkpoint_file(p)]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
