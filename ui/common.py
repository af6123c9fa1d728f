"""What every tab shares: the message for a user's mistake, the per-browser view state, the queue groups.

Symbols are plain text ones (✓ ⚠ ✗ ↻ are in DejaVu Sans, which every Linux has); no emoji, which show as
boxes where no emoji font is installed.
"""

from __future__ import annotations

import dataclasses
import logging
from types import MappingProxyType
from typing import Any

import gradio as gr
import numpy as np

from dcgan import config
from dcgan.checkpoint import CheckpointError
from dcgan.config import ConfigError, TrainConfig
from dcgan.data import DatasetError
from dcgan.trainer import TrainerBusy
from ui.queues import FAST, HEAVY, POLL, SLIDE, fast  # noqa: F401  (the tabs import the groups from here)

OK, WARN, FAIL, REFRESH = "✓", "⚠", "✗", "↻"
log = logging.getLogger("dcgan.app")


def problem(exc: BaseException, again: str = "Start") -> str:
    """A short, lasting page message for an error a user can fix, naming the field and the button to press
    again. Logged as one line: a user's mistake is not a bug, so no traceback."""
    if isinstance(exc, TrainerBusy):
        text = f"{WARN} **Busy**: {exc}."
    elif isinstance(exc, ConfigError):  # the field as the form names it; the setting's name for the CLI
        known = exc.field in {f.name for f in dataclasses.fields(TrainConfig)}
        name = f"{config.label(exc.field)}** (`{exc.field}`)" if known else f"{exc.field}**"
        text = f"{WARN} **{name}: {exc.reason}. Fix it and press *{again}* again."
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


def as_files(studio: Any, value: Any) -> Any:
    """A picture (or a gallery of them, captioned or not) as the studio's PNG file, written whole and renamed into
    place; anything else as it is. Handed an array, Gradio 6.31 writes it to a path named by its content with a
    plain write (gradio.processing_utils.save_pil_to_cache): visitors who get the same picture (every visitor on one
    snapshot gets the same grid) rewrote a file while it was being served to another, and the server closed that
    connection mid-stream ("Too much data for declared Content-Length"; docs/ROBUSTNESS.md, issue 27). A file it
    copies atomically."""
    if isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim in (2, 3):
        return studio.pictures.png(value)
    if isinstance(value, list) and value and all(isinstance(v, np.ndarray) or isinstance(v, tuple) and
                                                 isinstance(v[0], np.ndarray) for v in value):
        return [as_files(studio, v) if isinstance(v, np.ndarray) else (as_files(studio, v[0]), *v[1:])
                for v in value]
    return value


def new_view(default: Any = None) -> dict[str, Any]:
    """What one browser explores and samples: its pinned model (a dcgan.studio.LoadedModel shared through the
    studio's cache), the grid seed and truncation, the slider start z and class, and which model the Explore
    tab last drew (so a model picked in another tab is drawn when Explore opens)."""
    return {"model": default, "drawn": None, "seed": 0, "psi": 1.0, "z": None, "label": 0}


# an event only the page itself triggers: not in the API, not callable
PRIVATE = MappingProxyType({"api_visibility": "private"})
# An event that shows no progress marks nothing pending either. Gradio's page re-sends every component that was ever
# an event's progress target its loading status on each status message of every event: with the whole tab strip
# among them (a link's tab) each slider move cloned the props of all ~450 components four times (83,000
# structuredClone calls, the page's script ~70 ms per move on an idle machine; docs/ROBUSTNESS.md).
QUIET = MappingProxyType({"show_progress": "hidden", "show_progress_on": ()})
