"""Gradio's state of a new visitor, without a copy of the whole page's description.

When a visitor's first event arrives, Gradio (6.31) creates its session state and, in the server's event loop, builds
the description of every block of the page for it (`SessionState.config_values`: `config_for_block`, an
`inspect.signature` per block) — ~450 blocks here, 27 ms per visitor on a quiet machine and 70 ms under a class,
during which no other request moves (docs/ROBUSTNESS.md). That copy serves one thing only, Gradio's deep links
(`gr.DeepLinkButton`, `/gradio_api/deep_link`), which this app does not use (tests/test_described.py checks). Gradio
still records the description of each component an event updates, as it goes.
"""

from __future__ import annotations

from typing import Any

from gradio.state_holder import SessionState, StateHolder


class _NoBlocksToCopy:
    """What SessionState reads of the app when it starts: the shared config, and no block to describe up front."""

    def __init__(self, blocks: Any) -> None:
        self.default_config = blocks.default_config
        self.blocks: dict[int, Any] = {}


class LeanSessions(StateHolder):
    """Gradio's StateHolder whose new sessions start without the page's description (see the module's docstring)."""

    def __getitem__(self, session_id: str) -> SessionState:
        if session_id not in self.session_data:
            self.session_data[session_id] = SessionState(_NoBlocksToCopy(self.blocks))
        return super().__getitem__(session_id)


def use_lean_sessions(demo: Any) -> None:
    """Make a launched app's session holder a LeanSessions (it keeps its sessions and settings)."""
    if not isinstance(demo.state_holder, LeanSessions):
        demo.state_holder.__class__ = LeanSessions
