"""A visitor's session keeps no description of the page (ui/sessions.py), and everything a session holds still
works: its State, component updates, and the app's own pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gradio as gr
import pytest

from tests.conftest import free_port
from ui.sessions import LeanSessions, use_lean_sessions


def small_demo() -> tuple[gr.Blocks, dict]:
    with gr.Blocks() as demo:
        count = gr.State(0)
        word = gr.Textbox(label="word")
        pick = gr.Dropdown(choices=["a"], label="pick")
        shown = gr.Number(label="shown")
        for _ in range(40):  # a page of many blocks, as the app's
            gr.Markdown("filler")

        def press(n: int, text: str) -> tuple:
            return n + 1, gr.Dropdown(choices=[text, text * 2], value=text * 2), n + 1

        gr.Button("go").click(press, [count, word], [count, pick, shown], api_name="press")
    return demo, {"count": count, "word": word, "pick": pick, "shown": shown}


def test_a_new_session_copies_no_description_and_keeps_its_state_and_updates():
    from gradio_client import Client

    demo, parts = small_demo()
    demo.launch(server_port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        use_lean_sessions(demo)
        assert isinstance(demo.state_holder, LeanSessions)
        one, two = (Client(demo.local_url, verbose=False, download_files=False) for _ in range(2))
        # each visitor's State counts its own presses; the update of a component arrives whole
        update = lambda c, text: (lambda r: (r[0]["choices"], r[0]["value"], r[1]))(c.predict(text, api_name="/press"))  # noqa: E731
        assert update(one, "x") == ([["x", "x"], ["xx", "xx"]], "xx", 1)
        assert update(one, "y") == ([["y", "y"], ["yy", "yy"]], "yy", 2)
        assert update(two, "z") == ([["z", "z"], ["zz", "zz"]], "zz", 1)
        sessions = list(demo.state_holder.session_data.values())
        assert len(sessions) == 2
        for state in sessions:  # nothing described, neither up front nor for the event's outputs
            assert state.config_values == {} and list(state.components) == []
        # each visitor keeps its own copy of the updated component (Gradio preprocesses its next input with it)
        copies = sorted(tuple(c for c, _ in state[parts["pick"]._id].choices) for state in sessions)
        assert copies == [("y", "yy"), ("z", "zz")] and parts["pick"].choices == [("a", "a")]
        assert sorted(state[parts["count"]._id] for state in sessions) == [1, 2]
    finally:
        demo.close()


def test_the_app_launches_with_lean_sessions_and_uses_no_deep_links(tmp_path):
    """Gradio's deep links are the one feature that reads a session's full description: the app has none."""
    app = pytest.importorskip("app")
    from ui.state import Studio

    studio = Studio(tmp_path / "checkpoints")
    demo = app.build_app(studio)
    assert not any(isinstance(b, gr.DeepLinkButton) for b in demo.blocks.values())
    app.launch(demo, studio, "127.0.0.1", free_port(), prevent_thread_lock=True, quiet=True)
    try:
        assert isinstance(demo.state_holder, LeanSessions)
        assert demo.state_holder["a-new-visitor"].config_values == {}  # built nothing up front
    finally:
        demo.close()


def test_a_serving_app_leaves_what_it_built_out_of_full_collections(tmp_path, monkeypatch):
    """python app.py serves until it ends: its start-up objects are frozen, so CPython's full collections under a class
    walk only what came after. Launched without blocking (tests, notebooks) nothing is frozen."""
    import gc

    app = pytest.importorskip("app")
    from ui.state import Studio

    studio = Studio(tmp_path / "checkpoints")
    demo = app.build_app(studio)
    monkeypatch.setattr(demo, "block_thread", lambda: None)  # as if served until the end, then back here
    before = gc.get_freeze_count()
    app.launch(demo, studio, "127.0.0.1", free_port(), quiet=True)
    try:
        frozen = gc.get_freeze_count()
        assert frozen > before + 100_000  # the page's blocks, Gradio and torch
        assert len(gc.get_objects(generation=2)) < frozen / 10  # the oldest generation holds only what came after
    finally:
        gc.unfreeze()
        demo.close()


FIRST_EVENT = """
import json, random, sys
import app
from dcgan.tools.crowd import Endpoints
from gradio_client import Client
from ui.state import Studio

studio = Studio(sys.argv[1])
demo = app.build_app(studio)
app.launch(demo, studio, "127.0.0.1", int(sys.argv[2]), prevent_thread_lock=True, quiet=True)
before = "matplotlib.pyplot" in sys.modules
page = Client(demo.local_url, verbose=False, download_files=False)
page.predict(*Endpoints(page.view_api(return_format="dict", print_info=False)).args("train_status", random.Random(0)),
             api_name="/train_status")
print("SEEN", json.dumps({"before": before, "after": "matplotlib.pyplot" in sys.modules}), flush=True)
demo.close()
"""


def test_the_first_event_after_a_start_imports_no_pyplot(tmp_path):
    """Gradio wraps each event in matplotlib.get_backend(); with no backend chosen the first one imported pyplot in
    the server's event loop (1.1 s holding the GIL). A fresh process, as a Space after a restart."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", FIRST_EVENT, str(tmp_path / "checkpoints"), str(free_port())],
                         cwd=root, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(next(line[5:] for line in out.stdout.splitlines() if line.startswith("SEEN ")))
    assert seen == {"before": False, "after": False}
