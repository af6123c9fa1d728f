"""The app's Studio: dcgan.studio.Studio (UI-free: the shared run, checkpoints, uploads, models, what every page
shares) plus what needs Gradio: who may train on a public Space (ui/access.py), the heavy jobs' lane and the
serving/training thread policy (ui/queues.py)."""

from __future__ import annotations

from pathlib import Path

from dcgan import studio as _studio
from dcgan.studio import LoadedModel

__all__ = ("Studio", "LoadedModel")


class Studio(_studio.Studio):
    def __init__(self, root: str | Path = "checkpoints", trainer=None, max_runs: int | None = None) -> None:
        from ui import access, queues

        super().__init__(root, trainer, threads=queues.train_threads(), max_runs=max_runs)
        self.access = access.Access()
        self.lane = queues.HeavyLane()

    def require_owner(self, request=None, profile=None) -> None:
        """Training controls on a public Space are for the owner only: raises access.AccessDenied (a
        gr.Error and a PermissionError) for anyone else; off a Space it allows all."""
        self.access.require_owner(request, profile)
