"""The app's Studio: dcgan.studio.Studio (UI-free: the shared run, checkpoints, uploads, models) plus what needs
Gradio: the owner check of a public Space (ui/access.py) and the serving/training thread policy (ui/queues.py)."""

from __future__ import annotations

from pathlib import Path

from dcgan import studio as _studio
from dcgan.studio import LoadedModel

__all__ = ["Studio", "LoadedModel"]


class Studio(_studio.Studio):
    def __init__(self, root: str | Path = "checkpoints", trainer=None) -> None:
        from ui.queues import train_threads

        super().__init__(root, trainer, threads=train_threads())

    def require_owner(self, request=None, profile=None) -> None:
        """Training controls on a public Space are for the owner only: raises access.AccessDenied (a
        gr.Error and a PermissionError) for anyone else; off a Space it allows all."""
        from ui import access

        access.require_owner(request, profile)
