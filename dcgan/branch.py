"""Branch a run: from one of its saved steps, a new run with the same weights, optimiser states, random state and
data order, and one or more settings changed ("what if D learned twice as fast from here?").

A branch is a resume under a changed config, trained by the one training path (`runner.train(..., branch=True)`)
in a folder of its own. Its config records where it came from in `extra["branched_from"]`: {"run": the parent's
folder name, "step": the iteration it branched at, "checkpoint": that file's name, "changes": {setting: [parent's
value, branch's value]}}. Checkpoints carry the config, so the lineage survives a resume and a push (model card,
training_config.json), and TensorBoard's hparams and `dcgan runs` show it. Only names are recorded, never a local
path (a pushed card is public). `config.lineage` reads the record back.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .checkpoint import config_of, read_meta, resolve_checkpoint
from .config import LINEAGE_KEY, ConfigError, TrainConfig, label
from .runs import NAME_LIMIT

_SAME_DATA = "the parent's weights, data order and held-out split belong to its data"
_SHAPES = "it changes the networks' layers, so the parent's weights would not fit"
# Settings a branch cannot change, and why (everything else in TrainConfig can change between two steps).
FIXED = {
    "dataset": _SAME_DATA,
    "data_path": _SAME_DATA,
    "val_fraction": _SAME_DATA,
    "image_size": _SHAPES,
    "channels": _SHAPES,
    "nz": _SHAPES,
    "ngf": _SHAPES,
    "ndf": _SHAPES,
    "num_classes": _SHAPES,
    "spectral_norm": _SHAPES,
    "seed": "a branch goes on with the parent's random state (same noise and data order); the seed only sets "
            "where a new run starts",
    "run_name": "name the branch with --name (name= in Python)",
    "out_dir": "choose the branch's folder with --out-dir (out_dir= in Python)",
    "extra": "free-form notes, not a training setting",
}
_TYPES = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
# The questions a student asks most while a GAN trains, as the changes a branch makes (the app's What-if buttons)
WHAT_IF: dict[str, Callable[[TrainConfig], dict[str, Any]]] = {
    "D learns ×2 faster": lambda c: {"lr_d": c.lr_d * 2},
    "D learns ×½": lambda c: {"lr_d": c.lr_d / 2},
    "G learns ×2 faster": lambda c: {"lr_g": c.lr_g * 2},
    "G learns ×½": lambda c: {"lr_g": c.lr_g / 2},
    "another loss": lambda c: {"loss": "bce" if c.loss == "hinge" else "hinge"},
    "one more D step": lambda c: {"d_steps": c.d_steps + 1},
}
CHANGEABLE = tuple(k for k in _TYPES if k not in FIXED)


@dataclass
class BranchPlan:
    """What a branch will be, checked before anything is created."""

    checkpoint: Path  # the parent's checkpoint the branch starts from
    parent: str  # the parent's run folder name
    step: int  # the iteration it branches at
    cfg: TrainConfig  # the branch's config: the parent's, changed, with its lineage in extra
    changes: dict[str, tuple[Any, Any]]  # setting -> (parent's value, branch's value)

    @property
    def folder(self) -> Path:
        return Path(self.cfg.out_dir) / self.cfg.run_name


def parse_settings(pairs: Iterable[str]) -> dict[str, str]:
    """`--set key=value` strings as {key: value text}; ConfigError for a pair without '='."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", f"expected key=value (e.g. lr_d=8e-4), got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def _value(key: str, raw: Any) -> Any:
    """A setting's value from text, by its TrainConfig type (values that are not text pass as they are, for
    TrainConfig's own validation)."""
    if not isinstance(raw, str):
        return raw
    kind = _TYPES[key]
    try:
        if kind == "int":
            number = float(raw)
            if not number.is_integer():
                raise ValueError
            return int(number)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ConfigError(key, f"must be {'an integer' if kind == 'int' else 'a number'}, got {raw!r}") from None
    if kind == "bool":
        words = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}
        if raw.lower() not in words:
            raise ConfigError(key, f"must be true or false, got {raw!r}")
        return words[raw.lower()]
    return raw


def _checked_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for name, raw in changes.items():
        key = name.strip().replace("-", "_")
        if key not in _TYPES:
            raise ConfigError(key, f"unknown setting; a branch can change {', '.join(CHANGEABLE)}")
        if key in FIXED:
            raise ConfigError(key, f"{label(key)} cannot change in a branch: {FIXED[key]}")
        values[key] = _value(key, raw)
    return values


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value) if value != "" else "none"


def changes_text(changes: Mapping[str, Any]) -> str:
    """A branch's changes for a person: "lr_d 0.0004 → 0.0008, loss bce → hinge" ("no change" when none); takes a
    plan's {setting: (old, new)} or a lineage record's {setting: [old, new]}."""
    return ", ".join(f"{k} {old} → {new}" for k, (old, new) in changes.items()) or "no change"


def default_name(parent: str, changes: Mapping[str, tuple[Any, Any]]) -> str:
    """<parent>-<key>=<value>-... (or <parent>-branch without changes), in characters safe for a folder."""
    tail = "-".join(f"{k}={_text(new)}" for k, (_, new) in changes.items()) or "branch"
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", f"{parent}-{tail}")[:NAME_LIMIT]


def _unique(out_dir: Path, name: str) -> str:
    candidate, n = name, 1
    while (out_dir / candidate).exists():
        n += 1
        suffix = f"-{n}"
        candidate = name[:NAME_LIMIT - len(suffix)] + suffix
    return candidate


def plan_branch(run: str | Path, *, step: int | None = None, changes: Mapping[str, Any] | None = None,
                name: str | None = None, steps: int | None = None, out_dir: str | Path | None = None) -> BranchPlan:
    """Check a branch and work out its config; nothing is written. run: a run folder or checkpoint file; step:
    one of its saved steps (default: its newest checkpoint); changes: {setting: value or value text}; steps: the
    branch's total iterations (default: the parent's, which must lie past the step); name: its folder (default
    from the changes, made unique); out_dir: where that folder goes (default: beside the parent's).
    ConfigError or CheckpointError say what is wrong."""
    checkpoint = resolve_checkpoint(run, step=step)
    meta = read_meta(checkpoint)
    parent_cfg = config_of(meta)
    iteration = int(meta.get("iteration", 0))
    values = _checked_changes(changes or {})
    if steps is not None:
        values["steps"] = steps
    values.setdefault("steps", parent_cfg.steps)
    cfg = parent_cfg.replace(**values)  # TrainConfig's own validation names a bad value's field
    if cfg.steps <= iteration:
        raise ConfigError("steps", f"the branch starts at iteration {iteration}, so its total must be above that "
                                   f"(got {cfg.steps}); give one with --steps (steps= in Python)")
    diff = {k: (getattr(parent_cfg, k), getattr(cfg, k)) for k in values  # in the order given
            if k != "steps" and getattr(cfg, k) != getattr(parent_cfg, k)}
    parent = checkpoint.parent.name
    where = Path(out_dir) if out_dir is not None else checkpoint.parent.parent
    if name:
        if (where / name).exists():
            raise ConfigError("run_name", f"{where / name} already exists; choose another --name")
    else:
        name = _unique(where, default_name(parent, diff))
    lineage = {"run": parent, "step": iteration, "checkpoint": checkpoint.name,
               "changes": {k: [old, new] for k, (old, new) in diff.items()}}
    cfg = cfg.replace(run_name=name, out_dir=str(where), extra={**cfg.extra, LINEAGE_KEY: lineage})
    return BranchPlan(checkpoint, parent, iteration, cfg, diff)


def branch(run: str | Path, *, step: int | None = None, changes: Mapping[str, Any] | None = None,
           name: str | None = None, steps: int | None = None, out_dir: str | Path | None = None,
           **train_kwargs: Any):
    """Start a branch of `run` (see plan_branch) and train it like a resume: `runner.train` with its hooks,
    control, metrics and so on (train_kwargs). Returns the runner's Outcome; its folder is the branch's."""
    from .runner import train

    plan = plan_branch(run, step=step, changes=changes, name=name, steps=steps, out_dir=out_dir)
    return train(plan.cfg, resume_from=plan.checkpoint, branch=True, **train_kwargs)


__all__ = ["branch", "plan_branch", "BranchPlan", "parse_settings", "default_name", "FIXED", "CHANGEABLE", "WHAT_IF",
           "changes_text"]
