"""The "D's view" panel of the Train tab: dcgan/dview.py's picture of the game, live or for a checkpoint.

The studio's one `DViewHook` computes the frames in its own thread, and the studio draws saved runs once for
every browser; this module only shows the newest frame, answers a click on a dot with its image, asks for a
saved run's frame and exports the frames as a GIF.
"""

from __future__ import annotations

import time
from typing import Any

import gradio as gr
import numpy as np

from dcgan import dview
from dcgan.images import upscale
from ui.common import HEAVY, PRIVATE, QUIET, REFRESH, WARN, problem
from ui.state import Studio

POLL_S = 2.0  # the hook draws a frame every few seconds at most; polling faster shows nothing new
WAITING = "D's view appears a few seconds after a run starts (it is drawn for the live run, or for a saved run below)."


def caption(frame: dview.Frame) -> str:
    cls = " (logits include the class term)" if frame.conditional else ""
    arrows = f"Arrows: {frame.push_note}." if frame.push is not None else "No arrows for this frame."
    return (f"**{frame.source}**, iteration {frame.iteration:,}: mean D(x) {frame.d_real:.3f} on {len(frame.real_xy)} "
            f"real images, mean D(G(z)) {frame.d_fake:.3f} on {len(frame.fake_xy)} generated ones{cls}. {arrows}")


def note_text() -> str:
    return dview.NOTE.format(n_real=dview.N_POINTS, n_fake=dview.N_POINTS, cls=" (+ the class term for a "
                             "class-conditional D)", mag=" (drawn longer than life: the legend gives the factor)")


NO_DOT = "Click a dot in the plot to see its image."


def live_frame(studio: Studio) -> dview.Frame | None:
    if studio.trainer.status().state == "idle":
        return None
    return studio.dview_hook().latest()


def live_frames(studio: Studio) -> list[dview.Frame]:
    """The live run's frames; none after a Reset (the hook keeps them until the next run begins)."""
    if studio.trainer.status().state == "idle":
        return []
    return studio.dview_hook().frames()


def shown_frame(studio: Studio, seen: dict) -> dview.Frame | None:
    """The frame this browser shows: a checkpoint's if it picked one, else the live run's at that iteration."""
    key = (seen or {}).get("shown")
    if not key:
        return None
    source, ident = key
    if source == "checkpoint":
        return studio.dview_frames.peek(ident)
    hook = studio.dview_hook()
    return next((f for f in reversed(hook.frames()) if f.iteration == ident), hook.latest())


def _picture(frame: dview.Frame, seen: dict) -> np.ndarray:
    dot = seen.get("dot")
    return dview.marked(frame, *dot) if dot else dview.picture_array(frame)


def _dot(frame: dview.Frame | None, seen: dict) -> tuple[Any, str]:
    """(image, text) of the clicked dot in `frame`: the same real image or latent, as this frame sees it."""
    dot = seen.get("dot")
    if frame is None or not dot:
        return None, NO_DOT
    image, text = dview.describe_point(frame, *dot)
    return (None if image is None else upscale(image, 168)), text


def refresh(studio: Studio, seen: dict) -> tuple[dict, Any, Any, Any, Any]:
    """(seen, plot, caption, dot image, dot text): the newest live frame when this browser follows the live run
    and it changed. A clicked dot is followed from frame to frame of the same run and forgotten with the run."""
    seen = dict(seen or {})
    skip = gr.skip()
    if seen.get("source") == "checkpoint":
        return seen, skip, skip, skip, skip
    frame = live_frame(studio)
    run = studio.trainer.status().run_dir if frame is not None else None
    forget = seen.get("dot") is not None and seen.get("run") != run
    if forget:
        seen["dot"] = None
    seen["run"] = run
    dot = _dot(None, seen) if forget else (skip, skip)
    if frame is None:
        if seen.get("shown") is None and seen.get("polled"):
            return (seen, skip, skip, *dot)
        seen.update(shown=None, polled=True)
        return (seen, gr.Image(value=None, label="D's view"), WAITING, *dot)
    key = ("live", frame.iteration)
    if seen.get("shown") == key and seen.get("frame_id") == id(frame):
        return (seen, skip, skip, *dot)
    seen.update(shown=key, frame_id=id(frame), polled=True)
    return (seen, gr.Image(value=_picture(frame, seen), label=f"D's view, iteration {frame.iteration:,}"),
            caption(frame), *_dot(frame, seen))


def show_checkpoint(studio: Studio, name: str, seen: dict) -> tuple[dict, Any, str, Any, str]:
    """D's view of a saved run (its G, D and Adam state), drawn once per file version and shared."""
    seen = dict(seen or {})
    try:
        key, frame = studio.dview_of_checkpoint(name)
    except Exception as exc:  # a bad or vanished file, data that cannot be loaded: say so, keep the view
        return seen, gr.skip(), problem(exc), gr.skip(), gr.skip()
    seen.update(source="checkpoint", shown=("checkpoint", key), dot=None)
    return (seen, gr.Image(value=dview.picture_array(frame), label=f"D's view of {frame.source}"), caption(frame),
            None, NO_DOT)


def follow_live(studio: Studio, seen: dict) -> tuple[dict, Any, Any, Any, Any]:
    seen = dict(seen or {})
    seen.update(source="live", shown=None, frame_id=None, polled=False, dot=None)
    out = refresh(studio, seen)
    return (*out[:3], None, NO_DOT)


def click(studio: Studio, seen: dict, x: float, y: float) -> tuple[dict, Any, Any, str]:
    """(seen, plot with the dot marked, image, text) of the dot nearest to where the picture was clicked."""
    seen = dict(seen or {})
    frame = shown_frame(studio, seen)
    if frame is None:
        return seen, gr.skip(), None, "No picture yet."
    hit = dview.nearest_point(frame, x, y)
    if hit is None:
        return seen, gr.skip(), None, "No dot there: click on a dot."
    seen["dot"] = hit
    return (seen, gr.Image(value=_picture(frame, seen)), *_dot(frame, seen))


def export_gif(studio: Studio) -> tuple[str | None, str]:
    frames = live_frames(studio)
    if len(frames) < 2:
        return None, f"{WARN} Not enough frames yet: D's view is drawn every few seconds while a run trains."
    out = studio.export_path(f"dview-{time.strftime('%Y%m%d-%H%M%S')}.gif")
    dview.save_frames_gif(frames, out)
    return str(out), f"GIF of {len(frames)} frames, iterations {frames[0].iteration:,} to {frames[-1].iteration:,}."


def build(studio: Studio, accordion: gr.Accordion | None = None) -> None:
    """The panel's components and events (inside the Train tab's layout; it polls with its own timer). Inside
    a closed `accordion` it sends nothing: a page pays for D's view only while it shows it."""
    studio.dview_hook()
    seen = gr.State({})
    with gr.Column(elem_id="dview-panel"):
        _layout(studio, seen, accordion)


def _layout(studio: Studio, seen: gr.State, accordion: gr.Accordion | None) -> None:
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=420):
            plot = gr.Image(label="D's view", interactive=False, format="png", buttons=["fullscreen"],
                            elem_id="dview-plot")
            text = gr.Markdown(WAITING, elem_id="dview-caption")
        with gr.Column(scale=1, min_width=180):
            point = gr.Image(label="Clicked dot", interactive=False, format="png", height=200, elem_id="dview-point")
            point_text = gr.Markdown(NO_DOT, elem_id="dview-point-text")
    gr.Markdown(note_text(), elem_id="dview-note")
    with gr.Row(equal_height=True):
        ckpt = gr.Dropdown([], label="A saved run", scale=3, elem_id="dview-checkpoint",
                           elem_classes=["checkpoint-list"])
        ckpt_refresh = gr.Button(REFRESH, min_width=40, scale=0)
        show_btn = gr.Button("D's view of this checkpoint", size="md", scale=2, elem_id="dview-ckpt-btn")
        live_btn = gr.Button("Back to the live run", size="md", scale=2, elem_id="dview-live-btn")
    with gr.Row(equal_height=False):
        gif_btn = gr.Button("Export D's view as GIF", size="md", scale=1, elem_id="dview-gif-btn")
        gif_file = gr.File(label="GIF", interactive=False, visible=False, scale=2)
    gif_note = gr.Markdown("")

    def poll(seen_value: dict):
        if accordion is not None and not (seen_value or {}).get("open"):
            return seen_value, *[gr.skip()] * 4
        return refresh(studio, seen_value)

    def on_click(seen_value: dict, evt: gr.SelectData):
        x, y = evt.index if isinstance(evt.index, (list, tuple)) else (-1e9, -1e9)
        return click(studio, seen_value, float(x), float(y))

    @studio.lane.wrap
    def run_dview_checkpoint(name: str, seen_value: dict):
        return show_checkpoint(studio, name, seen_value)

    def choices() -> gr.Dropdown:
        names = studio.list_checkpoints()
        return gr.Dropdown(choices=names, value=names[0] if names else None)

    timer = gr.Timer(POLL_S)
    shown = [seen, plot, text, point, point_text]
    timer.tick(poll, seen, shown, **QUIET, concurrency_limit=None, **PRIVATE)
    if accordion is not None:
        accordion.expand(lambda s: refresh(studio, {**(s or {}), "open": True}), seen, shown,
                         **QUIET, **PRIVATE)
        accordion.collapse(lambda s: {**(s or {}), "open": False}, seen, seen, **QUIET, **PRIVATE)
    plot.select(on_click, seen, [seen, plot, point, point_text], **QUIET, **PRIVATE)
    show_btn.click(run_dview_checkpoint, [ckpt, seen], shown, **HEAVY, **PRIVATE)
    live_btn.click(lambda s: follow_live(studio, s), seen, shown, **PRIVATE)
    ckpt_refresh.click(choices, None, ckpt, **PRIVATE)
    ckpt.focus(choices, None, ckpt, **PRIVATE)
    gif_btn.click(lambda: export_gif(studio), None, [gif_file, gif_note], **PRIVATE).then(
        lambda p: gr.File(visible=bool(p)), gif_file, gif_file, **PRIVATE)
