"""Gradio's state of a visitor, without Gradio's description of the page kept beside it.

Gradio (6.31) keeps, in every visitor's session, a description of each block (`SessionState.config_values`:
`config_for_block`, an `inspect.signature` and the API description per block): of all ~450 blocks when the session
starts, then again for each component an event writes to for the first time, and once more after each component
update. All of it runs in the server's event loop, during which no other request moves: 27 ms per new visitor on a
quiet machine and 70 ms under a class for the copy at the start (docs/ROBUSTNESS.md), and about half the server's
time of a visitor's first *use the live run* (16 outputs described). The description serves one thing only,
Gradio's deep links (`gr.DeepLinkButton`, `/gradio_api/deep_link`), which this app does not use
(tests/test_sessions.py checks). A lean session keeps what events need (the State values, each visitor's own copy of
an updated component) and describes nothing.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from gradio.state_holder import SessionState, StateHolder


class _NoBlocksToCopy:
    """What SessionState reads of the app when it starts: the shared config, and no block to describe up front."""

    def __init__(self, blocks: Any) -> None:
        self.default_config = blocks.default_config
        self.blocks: dict[int, Any] = {}


class LeanSessionState(SessionState):
    """Gradio's SessionState (State values with their time to live, per-visitor component copies) minus the
    description kept for deep links."""

    def __init__(self, blocks: Any) -> None:
        super().__init__(_NoBlocksToCopy(blocks))

    def __setitem__(self, key: int, value: Any) -> None:
        from gradio.components import State

        block = self.blocks_config.blocks.get(key)
        if isinstance(block, State):
            self._state_ttl[key] = (block.time_to_live, datetime.datetime.now())
            self.state_data[key] = value
        else:
            self.blocks_config.blocks[key] = value

    def _update_config(self, key: int) -> None:
        pass

    def _update_value_in_config(self, key: int, value: Any) -> None:
        pass

    @property
    def components(self) -> Iterator[dict]:
        return iter(())


class LeanSessions(StateHolder):
    """Gradio's StateHolder whose sessions are LeanSessionStates (see the module's docstring)."""

    def __getitem__(self, session_id: str) -> SessionState:
        if session_id not in self.session_data:
            self.session_data[session_id] = LeanSessionState(self.blocks)
        return super().__getitem__(session_id)


def use_lean_sessions(demo: Any) -> None:
    """Make a launched app's session holder a LeanSessions (it keeps its sessions and settings)."""
    if not isinstance(demo.state_holder, LeanSessions):
        demo.state_holder.__class__ = LeanSessions
