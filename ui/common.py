"""What every tab shares: the message for a user's mistake, the per-browser view state, the queue groups.

Symbols are plain text ones (✓ ⚠ ✗ ↻ are in DejaVu Sans, which every Linux has); no emoji, which show as
boxes where no emoji font is installed.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import gradio as gr

from dcgan.checkpoint import CheckpointError
from dcgan.config import ConfigError
from dcgan.data import DatasetError
from dcgan.trainer import TrainerBusy
from ui.queues import FAST, HEAVY, POLL, SLIDE, fast, heavy  # noqa: F401  (the tabs import the groups from here)

OK, WARN, FAIL, REFRESH = "✓", "⚠", "✗", "↻"
log = logging.getLogger("dcgan.app")


def problem(exc: BaseException, again: str = "Start") -> str:
    """A short, lasting page message for an error a user can fix, naming the field and the button to press
    again. Logged as one line: a user's mistake is not a bug, so no traceback."""
    if isinstance(exc, TrainerBusy):
        text = f"{WARN} **Busy**: {exc}. This app runs one training job at a time, shared by every viewer."
    elif isinstance(exc, ConfigError):
        text = f"{WARN} **Setting `{exc.field}`**: {exc}. Fix it and press *{again}* again."
    elif isinstance(exc, DatasetError):
        text = f"{WARN} **Data set**: {exc}"
    elif isinstance(exc, CheckpointError):
        text = f"{WARN} **Checkpoint**: {exc}"
    elif isinstance(exc, PermissionError):
        text = f"{WARN} **Not allowed**: {exc}"
    else:
        text = f"{WARN} {exc}"
    log.info("user error: %s: %s", type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
    return text


def user_error(message: str, title: str = "Cannot do that") -> gr.Error:
    """A gr.Error for a user's mistake: shown in the page, logged as one line, no traceback in app.log."""
    log.info("user error: %s", message)
    return gr.Error(message, title=title, print_exception=False)


def new_view(default: Any = None) -> dict[str, Any]:
    """What one browser explores and samples: its pinned model (a dcgan.studio.LoadedModel shared through the
    studio's cache), the grid seed and truncation, the slider start z and class, and which model the Explore
    tab last drew (so a model picked in another tab is drawn when Explore opens)."""
    return {"model": default, "drawn": None, "seed": 0, "psi": 1.0, "z": None, "label": 0}


EXPORT_KEEP_S = 3600.0  # Gradio copies a returned file into its own cache at once; ours may go after this
_exports_dir: Path | None = None
_exports_lock = threading.Lock()


def export_path(name: str) -> Path:
    """A new path named `name` for a file the page hands out (GIF exports): one folder per process with a
    subfolder per file, and subfolders older than EXPORT_KEEP_S removed on the way, so a class exporting all
    day leaves one folder of recent files instead of a temporary folder per click."""
    global _exports_dir
    with _exports_lock:
        if _exports_dir is None or not _exports_dir.is_dir():
            _exports_dir = Path(tempfile.mkdtemp(prefix="dcgan-exports-"))
        root = _exports_dir
        cutoff = time.time() - EXPORT_KEEP_S
        for old in root.iterdir():
            try:
                if old.stat().st_mtime < cutoff:
                    shutil.rmtree(old)
            except OSError:  # gone already
                pass
        folder = root / uuid.uuid4().hex[:12]
        folder.mkdir()
    return folder / name


PRIVATE = {"api_visibility": "private"}  # an event only the page itself triggers: not in the API, not callable
