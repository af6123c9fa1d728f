"""Process-wide state of the app, shared by every browser tab that connects.

One trainer per process (a second viewer sees the same run), plus the model being explored when
it was loaded from a checkpoint or the Hub rather than taken from the live run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from dcgan.checkpoint import load_generator
from dcgan.config import TrainConfig
from dcgan.metrics import METRIC_KEY, make_metric_fn
from dcgan.models import Generator
from dcgan.trainer import Trainer


@dataclass
class LoadedModel:
    label: str  # shown to the user: checkpoint file name or Hub repo id
    generator: Generator  # CPU, eval mode
    config: TrainConfig


class Studio:
    def __init__(self, checkpoints_dir: str | Path = "checkpoints") -> None:
        self.checkpoints_dir = Path(checkpoints_dir)
        self.trainer = Trainer(metric_fn=make_metric_fn(), metric_key=METRIC_KEY)  # used when metric_every > 0
        self._lock = threading.Lock()
        self._loaded: LoadedModel | None = None

    def list_checkpoints(self) -> list[Path]:
        """Every .safetensors file under checkpoints/, newest first."""
        if not self.checkpoints_dir.is_dir():
            return []
        files = [p for p in self.checkpoints_dir.rglob("*.safetensors") if p.is_file()]
        return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)

    def resolve_checkpoint(self, name: str) -> Path:
        """A path inside checkpoints/ only: anything pointing outside is refused."""
        root = self.checkpoints_dir.resolve()
        path = (root / name).resolve()
        if root not in path.parents or path.suffix != ".safetensors":
            raise ValueError(f"{name!r} is not a checkpoint inside {self.checkpoints_dir}/")
        return path

    def load_checkpoint(self, name: str) -> LoadedModel:
        path = self.resolve_checkpoint(name)
        G, cfg, _ = load_generator(path)
        return self.set_model(LoadedModel(path.relative_to(self.checkpoints_dir.resolve()).as_posix(), G, cfg))

    def require_owner(self, request=None, profile=None) -> None:
        """Training controls on a public Space are for the owner only (ui/access.py): raises
        access.AccessDenied (a gr.Error and a PermissionError) for anyone else; off a Space it allows all."""
        from ui import access

        access.require_owner(request, profile)

    def set_model(self, model: LoadedModel) -> LoadedModel:
        with self._lock:
            self._loaded = model
        return model

    def loaded_model(self) -> LoadedModel | None:
        with self._lock:
            return self._loaded

    def current_model(self, prefer_live: bool = True) -> LoadedModel | None:
        """The live run's latest generator snapshot if there is one (and prefer_live), else the
        loaded checkpoint / Hub model."""
        if prefer_live:
            iteration, G = self.trainer.generator()
            cfg = self.trainer.config
            if G is not None and cfg is not None:
                return LoadedModel(f"live run, iteration {iteration}", G, cfg)
        return self.loaded_model()
