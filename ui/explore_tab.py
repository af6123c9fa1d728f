"""The Explore tab: what did the generator learn? Sliders, interpolation, arithmetic, classes, inversion of
your own image, a memorisation check and a mode-collapse meter.

Layout and wiring only: the callbacks are in ui/explore_tools.py and return {component name: value}; `C`
maps those names to the components below. Each browser explores the model pinned in its own view state.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr

from dcgan import latent
from ui import explore_tools as tools
from ui import inside_g
from ui.common import FAST, HEAVY, PRIVATE, QUIET, SLIDE, as_files, fast, new_view
from ui.state import Studio

NOTE_SLIDERS = """**Latent sliders.** Each slider moves z along one direction, in standard deviations of the prior.
*Principal directions* are found from the generator itself (GANSpace: PCA of G's intermediate features over
1,024 random z, mapped back to z by least squares), so slider 1 is the change G makes most often: notice
that it changes stroke thickness, slant or shape smoothly, while a *raw z dimension* usually mixes several
small changes: single coordinates of z mean nothing in particular."""
NOTE_GRID = """**Samples.** Lower the truncation ψ to pull every z towards the prior's centre: samples become cleaner
and more alike (fidelity), ψ = 1 is the full diversity G was trained on. *New samples* draws the next seed's grid;
type a seed and press Enter to see that one again. Click a sample to use it in the tool chosen under *clicking a
sample sets*."""
NOTE_INTERP = """**Interpolation.** Notice that the frames change gradually, with no jumps or garbage in between: the
generator has learned a smooth map, not a lookup table of training images. *slerp* keeps |z| typical of the
Gaussian prior; *lerp*'s middle frames have a smaller |z| and often look fainter or blurrier."""
NOTE_ARITH = """**Vector arithmetic** (DCGAN paper, Sec. 6.3): average a few latents per concept, then compute
mean(A) − mean(B) + mean(C). Averaging cancels what the samples do not share. Notice whether the result keeps
C's identity with the A-minus-B change added (e.g. thick A, thin B, thin C → a thick version of C)."""
NOTE_CLASS = """**Class control** (conditional models). The same z is drawn as every class: notice that the *style*
(thickness, slant, size) stays while the identity changes: z carries style, the label carries content. The
interpolation blends the one-hot class input with z fixed."""
NOTE_INVERT = """**Inversion.** Upload or draw an image; Adam searches z (several random starts at once) so that G(z)
matches it pixel by pixel. A drawing on a plain page is first made to look like G's samples: the same polarity
(black on white becomes white on black for digits) and its shape scaled and centred as G's shapes are. The error
is judged against real held-out images inverted by the same G with the same settings (computed once per model): a
shape G can draw comes back about as closely as they do; one it cannot draw comes back as the nearest thing it
*can* draw. The result becomes the slider start."""
NOTE_MEMO = """**Memorisation check.** The nearest training images of a sample, by pixel distance (RMS on the [−1, 1]
scale). The yardstick is how close held-out real images, which copy nothing, come to their nearest training image:
a sample closer than 95 % of them (their 5th percentile) is suspiciously close, one closer than all of them is
likely a copy of a training image."""
NOTE_DIVERSITY = """**Diversity meter.** The mean distance between pairs of generated samples (at ψ = 1, whatever the
grid's ψ) versus between pairs of real images. Near 1: G varies as much as the data. Towards 0: mode collapse, many
z give the same image. On digits the bar chart shows which digits a classifier sees in the samples: a collapsed
generator piles up on a few."""


def build(studio: Studio, view: gr.State | None = None) -> None:
    """The Explore tab's components and events; call inside `with gr.Tab("Explore")`. `view` is the browser's
    view state shared with the other tabs (a private one when none is given)."""
    session = view if view is not None else gr.State(new_view())
    C: dict[str, Any] = {"session": session}
    gr.Markdown("Explore what the generator learned. Choose a model, then use the tools below. Everything runs on "
                "a CPU copy of G, so it works while a run trains, and what you pick here is yours alone.")
    with gr.Row(equal_height=True):
        with gr.Column(scale=2, min_width=200):
            C["use_btn"] = gr.Button("Use the live run (its newest snapshot)", variant="primary", size="md",
                                     elem_id="explore-use")
        C["checkpoint"] = gr.Dropdown(choices=[], label="or a saved checkpoint", scale=3, elem_id="explore-checkpoint",
                                      allow_custom_value=True)  # the studio confines names to its folder
        with gr.Column(scale=1, min_width=120):
            C["load_btn"] = gr.Button("Load checkpoint", size="sm", elem_id="explore-load")
            C["refresh_btn"] = gr.Button("Refresh list", size="sm")
    C["summary"] = gr.Markdown("*No model chosen yet.*", elem_id="explore-summary")

    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown(NOTE_GRID)
            with gr.Row(equal_height=True):
                C["seed"] = gr.Number(0, label="grid seed", precision=0, scale=1, elem_id="explore-seed")
                C["psi"] = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="truncation ψ", scale=2,
                                     elem_id="explore-psi")
            C["samples_btn"] = gr.Button("New samples (next seed)", size="sm", elem_id="explore-samples")
            C["grid"] = gr.Image(label="samples #0..#15, row by row: click one", interactive=False,
                                    format="png", buttons=["fullscreen"], elem_id="explore-grid")
            C["pick_mode"] = gr.Radio(tools.PICK_MODES, value="sliders", label="clicking a sample sets")
        with gr.Column(scale=3):
            with gr.Tab("Sliders"):
                gr.Markdown(NOTE_SLIDERS)
                with gr.Row(equal_height=True):
                    C["kind"] = gr.Radio(tools.DIRECTION_KINDS, value=tools.DIRECTION_KINDS[0],
                                         label="slider directions", scale=2)
                    C["first"] = gr.Number(0, label="first raw dimension", precision=0, scale=1)
                with gr.Row():
                    with gr.Column(scale=1):
                        for j, name in enumerate(tools.SLIDERS):
                            C[name] = gr.Slider(-3, 3, value=0, step=0.1, label=f"direction {j + 1}",
                                                elem_id=f"explore-slider-{j + 1}")
                    with gr.Column(scale=1):
                        with gr.Row():
                            C["start"] = gr.Image(label="start", height=220, interactive=False, elem_id="explore-start")
                            C["moved"] = gr.Image(label="moved", height=220, interactive=False, elem_id="explore-moved")
                        with gr.Row():
                            C["random_btn"] = gr.Button("Random z", size="sm")
                            C["reset_btn"] = gr.Button("Reset sliders", size="sm")
                        C["note"] = gr.Markdown()
            with gr.Tab("Interpolation"):
                gr.Markdown(NOTE_INTERP)
                with gr.Row():
                    C["a_num"] = gr.Number(0, label="from sample #", precision=0, elem_id="interp-from")
                    C["b_num"] = gr.Number(1, label="to sample #", precision=0)
                    C["frames"] = gr.Slider(3, 16, value=8, step=1, label="frames")
                    C["mode"] = gr.Radio(["slerp", "lerp"], value="slerp", label="path")
                C["interp_btn"] = gr.Button("Interpolate", variant="primary", elem_id="explore-interpolate")
                # no toolbar on strips: its buttons would cover the last frame
                C["strip"] = gr.Image(label="frames", interactive=False, buttons=[], elem_id="explore-strip")
                C["gif"] = gr.Image(label="animation (GIF)", type="filepath", interactive=False, height=200)
            with gr.Tab("Arithmetic"):
                gr.Markdown(NOTE_ARITH)
                with gr.Row():
                    C["term_a"] = gr.Textbox("0 1 2", label="A: sample numbers (+)")
                    C["term_b"] = gr.Textbox("3 4 5", label="B: sample numbers (−)")
                    C["term_c"] = gr.Textbox("6 7 8", label="C: sample numbers (+)")
                C["arith_btn"] = gr.Button("Compute mean(A) − mean(B) + mean(C)", variant="primary")
                C["equation"] = gr.Image(label="equation (each term is the image of the averaged latent)",
                                         interactive=False, buttons=[])
                C["variants"] = gr.Image(label="result + small noise (is the effect robust?)", interactive=False,
                                         buttons=[])
            with gr.Tab("Classes"):
                gr.Markdown(NOTE_CLASS)
                C["cond_note"] = gr.Markdown(elem_id="explore-cond-note")
                with gr.Row():
                    C["class_a"] = gr.Dropdown([], label="from class", interactive=False)
                    C["class_b"] = gr.Dropdown([], label="to class", interactive=False)
                    C["class_frames"] = gr.Slider(3, 16, value=8, step=1, label="frames", interactive=False)
                C["class_btn"] = gr.Button("Draw the slider's z as every class", variant="primary", interactive=False,
                                           elem_id="explore-class-btn")
                C["every_class"] = gr.Image(label="same z, every class", interactive=False, buttons=[])
                C["class_strip"] = gr.Image(label="class interpolation, z fixed", interactive=False, buttons=[])
                C["class_gif"] = gr.Image(label="animation (GIF)", type="filepath", interactive=False, height=200)
            with gr.Tab("Inversion"):
                gr.Markdown(NOTE_INVERT)
                with gr.Row():
                    C["editor"] = gr.ImageEditor(label="your image: upload, paste or draw", type="numpy",
                                                 sources=("upload", "clipboard"), canvas_size=(280, 280), height=340,
                                                 brush=gr.Brush(default_size=18, colors=["#000000"]),
                                                 elem_id="explore-editor")
                    with gr.Column():
                        C["restarts"] = gr.Slider(1, 8, value=latent.INVERT_RESTARTS, step=1, label="random restarts")
                        C["steps"] = gr.Slider(50, 600, value=latent.INVERT_STEPS, step=50,
                                               label="optimisation steps")
                        C["invert_btn"] = gr.Button("Invert: find z", variant="primary", elem_id="explore-invert")
                with gr.Row():
                    C["target_img"] = gr.Image(label="target as G sees it", interactive=False, height=200)
                    C["recon_img"] = gr.Image(label="reconstruction G(z)", interactive=False, height=200)
                    C["error_img"] = gr.Image(label="|error|", interactive=False, height=200)
                C["invert_text"] = gr.Markdown(elem_id="explore-invert-text")
            with gr.Tab("Memorisation"):
                gr.Markdown(NOTE_MEMO)
                with gr.Row():
                    C["memo_num"] = gr.Number(0, label="sample #", precision=0)
                    C["memo_start"] = gr.Checkbox(False, label="use the slider start instead (e.g. an inversion)")
                    C["memo_btn"] = gr.Button("Find nearest training images", variant="primary")
                C["memo_gallery"] = gr.Gallery(label="sample and its nearest training images (distance)", columns=5,
                                               height="auto", allow_preview=False)
                C["memo_text"] = gr.Markdown()
            with gr.Tab("Diversity"):
                gr.Markdown(NOTE_DIVERSITY)
                with gr.Row():
                    C["div_n"] = gr.Slider(64, 512, value=256, step=64, label="samples")
                    C["div_btn"] = gr.Button("Measure diversity", variant="primary")
                C["div_text"] = gr.Markdown()
                C["div_plot"] = gr.LinePlot(x="distance", y="share of pairs", color="images",
                                            title="pairwise distances: generated vs real", height=260)
                C["class_plot"] = gr.BarPlot(x="digit", y="share of images", color="images", x_title="digit",
                                             x_label_angle=-45,
                                             title="digits a classifier sees in them (digits models)", height=260)
    wire(studio, C)
    inside_g.build(studio, session)  # below the tools, full width: G's layers and units (issue 25)


def wire(studio: Studio, C: dict[str, Any]) -> None:
    """The events: inputs by name, outputs are every component a callback may name."""

    def shared(value: Any) -> Any:
        return as_files(studio, value)

    def named(fn: Callable) -> Callable:
        """A tools callback returning {name: value} -> {component: value}, as Gradio wants (pictures as files)."""
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> dict:
            out = {C[name]: shared(value) for name, value in fn(*args, **kwargs).items()}
            return out or {C["session"]: gr.skip()}  # nothing to change (Gradio wants at least one entry)
        return wrapper

    def ins(*names: str) -> list:
        return [C[n] for n in names]

    heavy = studio.lane.wrap
    sliders = ins(*tools.SLIDERS)
    model_out = ins("session", "summary", "grid", "start", "moved", *tools.SLIDERS, "note", "class_a", "class_b",
                    "class_btn", "class_frames", "cond_note")

    def use_live(s, k, f):
        return tools.use_live(studio, s, k, f)

    def load(name, s, k, f):
        return tools.load_checkpoint(studio, name, s, k, f)

    def opened(s, k, f):
        return tools.on_open(studio, s, k, f)

    def choices():
        names = studio.list_checkpoints()
        return gr.Dropdown(choices=names, value=names[0] if names else None)

    def invert(s, editor, restarts, steps, k, f, progress=gr.Progress()):
        return tools.run_inversion(studio, s, editor, restarts, steps, k, f, progress)

    def diversity(s, n, progress=gr.Progress()):
        return tools.run_diversity(studio, s, n, progress)

    # the tools that draw with the shared slider directions or write a GIF take the studio
    def slide(session, kind, first, *amounts):  # the names of the public explore_sliders endpoint
        return shared(tools.slide(studio, session, kind, first, *amounts))

    def random_start(s, k, f):
        return tools.random_start(studio, s, k, f)

    def on_pick(s, mode, ta, tb, tc, k, f, evt: gr.SelectData):
        return tools.on_pick(studio, s, mode, ta, tb, tc, k, f, evt)

    def run_interpolation(session, a, b, frames, mode):
        return tools.run_interpolation(studio, session, a, b, frames, mode)

    def run_class_control(s, class_a, class_b, frames):
        return tools.run_class_control(studio, s, class_a, class_b, frames)

    C["use_btn"].click(fast(named(use_live)), ins("session", "kind", "first"), model_out,
                       api_name="explore_use_live", show_progress_on=C["grid"], **FAST)
    C["load_btn"].click(fast(named(load)), ins("checkpoint", "session", "kind", "first"), model_out,
                        api_name="explore_load_checkpoint", show_progress_on=C["grid"], **FAST)
    C["refresh_btn"].click(choices, None, C["checkpoint"], **PRIVATE)
    tab = gr.context.Context.block  # the Explore tab app.py opened around us
    if isinstance(tab, gr.Tab):
        tab.select(fast(named(opened)), ins("session", "kind", "first"), model_out, **QUIET, **PRIVATE, **FAST)
    root = gr.context.Context.root_block
    if root is not None:
        root.load(choices, None, C["checkpoint"], **PRIVATE)

    C["samples_btn"].click(fast(named(tools.new_samples)), ins("session", "seed", "psi"),
                           ins("session", "grid", "seed"), **PRIVATE, **FAST)
    # the grid of the seed and ψ as shown: Enter in the seed box (the public endpoint: a seed always draws the same
    # grid); any new ψ, dragged or typed (a slider's number box has no submit event, and release fires only when
    # it loses focus)
    redraw_grid = fast(named(tools.draw_samples))
    C["seed"].submit(redraw_grid, ins("session", "seed", "psi"), ins("session", "grid"),
                     api_name="explore_samples", **FAST)
    C["psi"].change(redraw_grid, ins("session", "seed", "psi"), ins("session", "grid"),
                    trigger_mode="always_last", **PRIVATE, **FAST)
    for j, sl in enumerate(sliders):
        sl.input(fast(slide), [C["session"], C["kind"], C["first"], *sliders], C["moved"],
                 trigger_mode="always_last", **QUIET,
                 api_name="explore_sliders" if j == 0 else None,
                 api_visibility="public" if j == 0 else "private", **SLIDE)

    def redraw(s, k, f, *amounts):
        if s.get("model") is None:
            return gr.skip(), ""
        return slide(s, k, f, *amounts), tools.directions_note(studio, s, k)

    C["kind"].change(fast(redraw), [C["session"], C["kind"], C["first"], *sliders], ins("moved", "note"),
                     **PRIVATE, **FAST)
    C["first"].submit(fast(slide), [C["session"], C["kind"], C["first"], *sliders], C["moved"],
                      **PRIVATE, **FAST)
    C["reset_btn"].click(fast(lambda s, k, f: (slide(s, k, f), *[0.0] * tools.NUM_SLIDERS)),
                         ins("session", "kind", "first"), [C["moved"], *sliders], **PRIVATE, **FAST)
    C["random_btn"].click(fast(named(random_start)), ins("session", "kind", "first"),
                          ins("session", "start", "moved", *tools.SLIDERS), **PRIVATE, **FAST)
    C["grid"].select(fast(named(on_pick)), ins("session", "pick_mode", "term_a", "term_b", "term_c",
                                                         "kind", "first"),
                        ins("session", "start", "moved", *tools.SLIDERS, "a_num", "b_num", "term_a", "term_b",
                            "term_c", "memo_num"), show_progress_on=C["moved"], **PRIVATE, **FAST)

    C["interp_btn"].click(heavy(named(run_interpolation)), ins("session", "a_num", "b_num", "frames", "mode"),
                          ins("strip", "gif"), api_name="explore_interpolate", **HEAVY)
    C["arith_btn"].click(fast(named(tools.run_arithmetic)), ins("session", "term_a", "term_b", "term_c"),
                         ins("equation", "variants"), **PRIVATE, **FAST)
    C["class_btn"].click(heavy(named(run_class_control)), ins("session", "class_a", "class_b", "class_frames"),
                         ins("every_class", "class_strip", "class_gif"), **PRIVATE, **HEAVY)
    C["invert_btn"].click(heavy(named(invert)), ins("session", "editor", "restarts", "steps", "kind", "first"),
                          ins("session", "target_img", "recon_img", "error_img", "invert_text", "start", "moved",
                              *tools.SLIDERS), api_name="explore_invert", show_progress_on=C["recon_img"], **HEAVY)
    C["memo_btn"].click(heavy(named(tools.run_memorisation)), ins("session", "memo_num", "memo_start"),
                        ins("memo_gallery", "memo_text"), **PRIVATE, **HEAVY)
    C["div_btn"].click(heavy(named(diversity)), ins("session", "div_n"), ins("div_text", "div_plot", "class_plot"),
                       **PRIVATE, **HEAVY)
