"""The app's Studio: dcgan.studio.Studio (UI-free: the shared run, checkpoints, uploads, models) plus the
owner check of a public Space, which needs Gradio's request (ui/access.py)."""

from __future__ import annotations

from dcgan import studio as _studio
from dcgan.studio import LoadedModel

__all__ = ["Studio", "LoadedModel"]


class Studio(_studio.Studio):
    def require_owner(self, request=None, profile=None) -> None:
        """Training controls on a public Space are for the owner only: raises access.AccessDenied (a
        gr.Error and a PermissionError) for anyone else; off a Space it allows all."""
        from ui import access

        access.require_owner(request, profile)
