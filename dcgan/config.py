"""Training configuration: one dataclass that round-trips to JSON and into checkpoints and model cards."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

IMAGE_SIZES = (28, 32, 64, 128)
LOSSES = ("bce", "hinge", "lsgan", "wgan-gp")
DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16")
NAN_POLICIES = ("rollback", "pause")
DATASETS = ("digits", "stacked-digits", "mnist", "fashion-mnist", "cifar10", "celeba", "folder")  # loaded by data.py
NATIVE_CHANNELS = MappingProxyType({"digits": 1, "stacked-digits": 3, "mnist": 1, "fashion-mnist": 1, "cifar10": 3,
                                    "celeba": 3})  # a folder's images may be either
DIFFAUG_OPS = ("translation", "cutout", "color")


class ConfigError(ValueError):
    """An impossible setting; the message names the field so a user can fix it."""

    def __init__(self, field_name: str, message: str):
        self.field, self.reason = field_name, message
        super().__init__(f"{field_name}: {message}")

    def __reduce__(self):  # pickles (the app's training process raises it in the app's)
        return type(self), (self.field, self.reason)


# Named training recipes (the networks and optimisation settings only): `TrainConfig.from_preset`,
# the CLI's --preset and the app's form. "classic" is the paper's (Radford et al. 2015); "default" is
# the dataclass defaults, chosen by the sweep in docs/QUALITY.md.
CLASSIC = dict(ngf=64, ndf=64, batch_size=64, lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, loss="bce",
               spectral_norm=False, ema_decay=0.0, diffaug="", d_steps=1, r1_gamma=0.0)
PRESETS: dict[str, dict[str, Any]] = {
    "default": {**CLASSIC, "ngf": 32, "ndf": 32, "lr_g": 4e-4, "lr_d": 4e-4, "ema_decay": 0.999, "r1_gamma": 1.0},
    "classic": CLASSIC,
}

def recipe_of(values: dict[str, Any]) -> str:
    """The preset that settings match (a config's, or a form's values with numbers maybe as text), else
    "custom". A setting the values leave out (the form has no betas) is not compared."""
    def same(a: Any, b: Any) -> bool:
        if isinstance(b, bool) or isinstance(a, bool):
            return bool(a) == bool(b)
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return str(a).strip() == str(b)

    return next((name for name, recipe in PRESETS.items()
                 if all(same(values[k], v) for k, v in recipe.items() if k in values)), "custom")


RETIRED = ("compile",)  # settings older checkpoints may hold; read and dropped (torch.compile gained nothing)


def setting(default: Any, help: str, label: str = "", **kwargs: Any) -> Any:
    """A config field with its help text (CLI --help, UI info, model card) and UI label in one place."""
    if isinstance(default, dict):
        kwargs["default_factory"] = dict
    else:
        kwargs["default"] = default
    return field(metadata={"help": help, "label": label}, **kwargs)


@dataclass
class TrainConfig:
    # ---- the algorithm: data, networks, optimisation -------------------------------------------
    dataset: str = setting("digits", "data set: digits (bundled, offline), mnist, fashion-mnist, cifar10, celeba, "
                                     "folder (your own images)", "Data set")
    data_path: str = setting("", "folder or .zip of your own images (with --dataset folder); class sub-folders "
                                 "optional", "Your images")
    image_size: int = setting(28, "image side in pixels: 28, 32, 64 or 128", "Image size")
    channels: int = setting(1, "1 (grey) or 3 (colour)", "Channels")
    augment: bool = setting(False, "random horizontal flip and padded random crop of the real images", "Augment")
    val_fraction: float = setting(0.1, "fraction of the data held out for metrics", "Held-out fraction")
    nz: int = setting(100, "latent (z) dimension", "nz (noise size)")
    ngf: int = setting(32, "generator width (channels of its last hidden layer)", "ngf (G width)")
    ndf: int = setting(32, "discriminator width (channels of its first layer)", "ndf (D width)")
    num_classes: int = setting(0, "train a class-conditional GAN with this many classes (0 = unconditional)",
                               "Classes")
    spectral_norm: bool = setting(False, "spectral normalisation in D (replaces D's BatchNorm)", "Spectral norm")
    batch_size: int = setting(64, "images per batch", "Batch size")
    lr_g: float = setting(4e-4, "generator Adam learning rate", "lr G")
    lr_d: float = setting(4e-4, "discriminator Adam learning rate", "lr D")
    beta1: float = setting(0.5, "Adam beta1 (DCGAN: 0.5)", "Adam β1")
    beta2: float = setting(0.999, "Adam beta2", "Adam β2")
    loss: str = setting("bce", "bce (non-saturating, on logits), hinge, lsgan or wgan-gp", "Loss")
    gp_weight: float = setting(10.0, "gradient-penalty weight for wgan-gp", "GP weight")
    r1_gamma: float = setting(1.0, "R1 penalty weight on real images, applied lazily every 16th step (0 = off)",
                              "R1 γ")
    d_steps: int = setting(1, "discriminator updates per generator update", "D steps")
    ema_decay: float = setting(0.999, "keep an exponential moving average of G for samples and metrics "
                                    "(e.g. 0.999; 0 = off)", "EMA decay")
    diffaug: str = setting("", "DiffAugment ops for D, comma list of translation,cutout,color", "DiffAugment")
    steps: int = setting(2000, "number of training iterations; one iteration = one update of D then one of G "
                               "(a single D-only or G-only step by hand counts as one too)", "Steps (iterations)")
    seed: int = setting(0, "random seed (weights, noise, data order)", "Seed")
    # ---- where it runs ---------------------------------------------------------------------------
    device: str = setting("auto", "auto (CUDA > MPS > CPU), cuda, mps or cpu", "Device")
    precision: str = setting("auto", "auto (bf16 where the hardware has it), bf16 or fp32", "Precision")
    sync_bn: bool = setting(False, "with torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)",
                            "Sync BatchNorm")
    # ---- bookkeeping around the loop (the step never reads these) ---------------------------------
    minutes: float = setting(0.0, "stop after this many minutes of training, ending as at the last step "
                                  "(pictures, metrics, checkpoint); 0 = no limit, steps still caps it",
                             "Time limit (min)")
    log_every: int = setting(0, "sync with the host for logs and NaN checks every K steps (0 = auto: 1 on the "
                                "CPU, 20 on a GPU)", "Log every")
    sample_every_s: float = setting(3.0, "seconds between fixed-noise grid snapshots", "Pictures every (s)")
    checkpoint_every: int = setting(500, "save a checkpoint every K steps (0 = only at the end)", "Checkpoint every")
    keep_last: int = setting(3, "number of step checkpoints to keep (plus best.safetensors)", "Keep last")
    metric_every: int = setting(0, "compute quality metrics every K steps (0 = off)", "Quality metrics every")
    nan_policy: str = setting("rollback", "on a NaN loss: rollback (to the last good state, halving the lr) or "
                                          "pause", "On NaN")
    run_name: str = setting("", "name of the run folder under --out-dir (default: dataset-size-time)", "Run name")
    out_dir: str = setting("checkpoints", "folder that holds run folders", "Output folder")
    extra: dict[str, Any] = setting({}, "free-form notes, kept in checkpoints and model cards", "Notes")

    def __post_init__(self) -> None:
        self.validate()  # where a config is built, once: a TrainConfig that exists is a valid one

    # ---- JSON round trip -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        data = {k: v for k, v in data.items() if k not in RETIRED}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown setting (known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("config", f"not valid JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ConfigError("config", "expected a JSON object")
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> TrainConfig:
        changes = {k: v for k, v in changes.items() if k not in RETIRED}
        return dataclasses.replace(self, **changes)

    # ---- validation ----------------------------------------------------------------
    def validate(self, n_train: int | None = None) -> TrainConfig:
        """Raise ConfigError naming the first impossible field; n_train checks the batch size."""
        types = {f.name: f.type for f in dataclasses.fields(self)}
        for name, typ in types.items():
            value = getattr(self, name)
            if typ == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                if isinstance(value, float) and value.is_integer():
                    setattr(self, name, int(value))
                else:
                    raise ConfigError(name, f"must be an integer, got {value!r}")
            elif typ == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise ConfigError(name, f"must be a number, got {value!r}")
                if value != value or value in (float("inf"), float("-inf")):
                    raise ConfigError(name, f"must be finite, got {value!r}")
                setattr(self, name, float(value))
            elif typ == "bool" and not isinstance(value, bool):
                raise ConfigError(name, f"must be true or false, got {value!r}")
            elif typ == "str" and not isinstance(value, str):
                raise ConfigError(name, f"must be text, got {value!r}")

        def check(ok: bool, name: str, msg: str) -> None:
            if not ok:
                raise ConfigError(name, msg)

        check(self.image_size in IMAGE_SIZES, "image_size",
              f"{self.image_size} is not supported; choose one of {IMAGE_SIZES}")
        check(self.channels in (1, 3), "channels", f"must be 1 (grey) or 3 (colour), got {self.channels}")
        check(1 <= self.nz <= 1024, "nz", f"latent size must be in 1..1024, got {self.nz}")
        check(4 <= self.ngf <= 512, "ngf", f"must be in 4..512, got {self.ngf}")
        check(4 <= self.ndf <= 512, "ndf", f"must be in 4..512, got {self.ndf}")
        check(0 <= self.num_classes <= 1000, "num_classes", f"must be in 0..1000, got {self.num_classes}")
        check(self.num_classes != 1, "num_classes", "1 class is not conditional; use 0 for unconditional")
        check(1 <= self.batch_size <= 4096, "batch_size", f"must be in 1..4096, got {self.batch_size}")
        check(self.batch_size >= 2, "batch_size", "BatchNorm needs a batch of at least 2")
        for name in ("lr_g", "lr_d"):
            lr = getattr(self, name)
            check(0 < lr <= 1, name, f"learning rate must be > 0 and <= 1, got {lr}")
        for name in ("beta1", "beta2"):
            b = getattr(self, name)
            check(0 <= b < 1, name, f"Adam beta must be in [0, 1), got {b}")
        check(self.loss in LOSSES, "loss", f"{self.loss!r} is not one of {LOSSES}")
        check(self.gp_weight >= 0, "gp_weight", f"must be >= 0, got {self.gp_weight}")
        check(self.r1_gamma >= 0, "r1_gamma", f"must be >= 0, got {self.r1_gamma}")
        check(1 <= self.d_steps <= 10, "d_steps", f"must be in 1..10, got {self.d_steps}")
        check(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        for op in self.diffaug_ops():
            check(op in DIFFAUG_OPS, "diffaug", f"{op!r} is not one of {DIFFAUG_OPS}")
        check(self.steps >= 1, "steps", f"must be at least 1, got {self.steps}")
        check(self.minutes >= 0, "minutes", f"must be >= 0, got {self.minutes}")
        check(0 <= self.seed < 2**63, "seed", f"must be in 0..2^63-1, got {self.seed}")
        check(self.device in DEVICES, "device", f"{self.device!r} is not one of {DEVICES}")
        check(self.precision in PRECISIONS, "precision", f"{self.precision!r} is not one of {PRECISIONS}")
        check(0.0 <= self.val_fraction < 0.9, "val_fraction", f"must be in [0, 0.9), got {self.val_fraction}")
        check(self.log_every >= 0, "log_every", f"must be >= 0, got {self.log_every}")
        check(self.sample_every_s > 0, "sample_every_s", f"must be > 0, got {self.sample_every_s}")
        check(self.checkpoint_every >= 0, "checkpoint_every", f"must be >= 0, got {self.checkpoint_every}")
        check(self.keep_last >= 1, "keep_last", f"must be at least 1, got {self.keep_last}")
        check(self.metric_every >= 0, "metric_every", f"must be >= 0, got {self.metric_every}")
        check(self.nan_policy in NAN_POLICIES, "nan_policy", f"{self.nan_policy!r} is not one of {NAN_POLICIES}")
        check(self.dataset in DATASETS, "dataset", f"{self.dataset!r} is not one of {DATASETS}")
        check(isinstance(self.extra, dict), "extra", f"must be a JSON object, got {self.extra!r}")
        check(self.dataset != "folder" or bool(self.data_path), "data_path",
              "the folder data set needs a path to a folder or .zip of images")
        check("/" not in self.run_name and "\\" not in self.run_name and ".." not in self.run_name,
              "run_name", "must be a plain name without / or ..")
        if n_train is not None:
            check(self.batch_size <= n_train, "batch_size",
                  f"{self.batch_size} is larger than the training set ({n_train} images)")
        return self

    def diffaug_ops(self) -> list[str]:
        return [op.strip() for op in self.diffaug.split(",") if op.strip()]

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named recipe from PRESETS, with any other settings (or recipe settings) overridden."""
        if name not in PRESETS:
            raise ConfigError("preset", f"{name!r} is not one of {tuple(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})


LINEAGE_KEY = "branched_from"  # extra[LINEAGE_KEY]: where a branch (dcgan/branch.py) came from


def lineage(config: dict[str, Any] | TrainConfig | None) -> dict[str, Any] | None:
    """A branch's record of its parent ({"run", "step", "checkpoint", "changes": {setting: [parent's, branch's]}},
    written by dcgan/branch.py into extra), from a config or its dict; None for a run that is not a branch."""
    extra = config.extra if isinstance(config, TrainConfig) else (config or {}).get("extra")
    if isinstance(extra, str):  # a config read back from TensorBoard's hparams holds extra as JSON text
        try:
            extra = json.loads(extra)
        except ValueError:
            return None
    found = extra.get(LINEAGE_KEY) if isinstance(extra, dict) else None
    return found if isinstance(found, dict) and "run" in found else None


def help_text(name: str) -> str:
    """The help text of a TrainConfig field (CLI --help, UI info lines, model card)."""
    return _field(name).metadata["help"]


def label(name: str) -> str:
    """The short UI label of a TrainConfig field."""
    return _field(name).metadata["label"] or name


def _field(name: str) -> dataclasses.Field:
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            return f
    raise KeyError(f"{name!r} is not a TrainConfig field")
