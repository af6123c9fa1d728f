"""The Train tab: set up a run, start / pause / step / stop it, and watch it learn live.

Layout and wiring only. Every browser shares the one `studio.trainer`; the callbacks are in
ui/train_actions.py, and the live view (ui/train_view.py) is polled by a gr.Timer.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import gradio as gr

from dcgan import config as config_module
from dcgan import links
from dcgan.config import (
    DATASETS,
    DEVICES,
    IMAGE_SIZES,
    LOSSES,
    NATIVE_CHANNELS,
    PRECISIONS,
    PRESETS,
    ConfigError,
    TrainConfig,
    recipe_of,
)
from dcgan.studio import TEXT_FIELDS
from ui import dview_panel, plots, side_by_side
from ui import train_actions as act
from ui import train_view as live
from ui.common import FAST, OK, POLL, PRIVATE, QUIET, REFRESH, problem
from ui.state import Studio

LOSS_COLORS = MappingProxyType({"loss_D": "#d62728", "loss_G": "#1f77b4"})
D_COLORS = MappingProxyType({"D(x) real": "#2ca02c", "D(G(z)) fake": "#ff7f0e", "0.5 (can't tell)": "#7f7f7f"})
# The form, row by row: the preset, then dcgan.studio.FORM_FIELDS. A new setting is one more entry there and here.
BASIC = (("preset",), ("dataset",), ("image_size", "channels"), ("num_classes", "batch_size"), ("steps", "seed"),
         ("lr_g", "lr_d"), ("loss", "nz"), ("device",))
ADVANCED = (("ngf", "ndf"), ("ema_decay", "r1_gamma"), ("d_steps", "spectral_norm"), ("diffaug",),
            ("precision", "metric_every"), ("run_name",))
# what the form says beside a field where the config's own help text (dcgan.config.help_text) is not the best fit
INFO = MappingProxyType({
    "dataset": "digits: 5,000 real MNIST digits, bundled (offline); stacked-digits: three of them as one colour "
               "image (1,000 modes; offline); mnist, fashion-mnist, cifar10, celeba: downloaded once by "
               "torchvision; folder: your own zip below.",
    "channels": "1 grey · 3 colour", "num_classes": "0 = unconditional; 10 on digits: pick the digit in Explore",
    "metric_every": "steps; 0 = off", "run_name": None, "image_size": None, "lr_g": None, "lr_d": None,
    "seed": None, "device": None, "precision": None})
CHOICES = MappingProxyType({"dataset": DATASETS, "image_size": tuple(str(s) for s in IMAGE_SIZES), "loss": LOSSES,
                            "device": DEVICES, "precision": PRECISIONS})
DEFAULTS = MappingProxyType({"preset": "default", "steps": 2000, "device": "auto", "precision": "auto",
                             "metric_every": 0})
EXPLAIN_D = """
**How to read D(x) and D(G(z))**: the discriminator D outputs the probability that an image is real.
*D(x)* is its average answer on real images, *D(G(z))* on the generator's fakes. Early on D wins easily
(D(x) near 1, D(G(z)) near 0). As G improves the two lines move toward **0.5**: D can no longer tell
real from fake. A healthy GAN hovers around there with both losses wobbling, not converging to zero.
"""
EXPLAIN_FAILURES = """
**What going wrong looks like**
- **Dying discriminator / D wins for good**: loss_D falls to about 0, D(x) stays at 1 and D(G(z)) at 0
  for hundreds of iterations, and the samples stop improving. Lower `lr D`, try `hinge` or `wgan-gp`, or a smaller D.
- **Mode collapse**: the 64 fixed-noise samples turn into a few identical images although each square gets
  different noise; loss_G often swings wildly. Restart with another seed, a lower `lr G`, or `wgan-gp`.
- **Divergence**: NaN losses. The trainer rolls back to its last good state and halves the learning rates.
"""


PRESET_INFO = ("default: the recipe measured in docs/QUALITY.md (ngf = ndf = 32, lr 4e-4, EMA 0.999, lazy R1 γ 1); "
               "classic: the paper's (ngf = ndf = 64, lr 2e-4, no EMA, no R1). Choosing one fills in the settings "
               "below.")


def label_of(name: str) -> tuple[str, str | None]:
    """Label and help text of a setting: the config's own (field metadata), short UI wording where given."""
    if name == "preset":
        return "Recipe", PRESET_INFO
    return config_module.label(name), INFO.get(name, config_module.help_text(name))


def preset_fields(preset: str, form: dict) -> list:
    """The form's values of a preset's recipe (a run that matches no preset shows as custom: nothing changes)."""
    recipe = PRESETS.get(preset, {})
    return [gr.update(value=str(recipe[n]) if n in TEXT_FIELDS else recipe[n]) if n in recipe else gr.skip()
            for n in form]


def field(name: str, default: Any) -> gr.components.Component:
    label, info = label_of(name)
    options = {"label": label, "info": info, "elem_id": name.replace("_", "-"), "min_width": 90}
    if name == "preset":
        return gr.Radio([*PRESETS, "custom"], value=default, **options)
    if name == "channels":
        return gr.Radio(["1", "3"], value=str(default), **options)
    if name in CHOICES:
        return gr.Dropdown(list(CHOICES[name]), value=str(default), **options)
    if isinstance(default, bool):
        return gr.Checkbox(default, **options)
    if name in TEXT_FIELDS:
        hint = {"run_name": "auto: dataset-size-time", "diffaug": "off; e.g. translation,cutout,color"}.get(name)
        return gr.Textbox(default, placeholder=hint, **options)
    # no minimum/maximum: Gradio would answer with a vanishing toast; the validator answers in the page
    return gr.Number(default, precision=None if isinstance(default, float) else 0, **options)


# ---- layout ------------------------------------------------------------------------------------


def build(studio: Studio, view: gr.State | None = None) -> dict:
    """The Train tab's components and events (called inside `with gr.Tab("Train")`); `view` is the browser's
    view state shared with Explore and Hub (a private one when none is given). Returns the form's components
    and the settings a link set (app.open_links fills them from a link)."""
    session = view if view is not None else gr.State({"model": None})
    defaults = {**TrainConfig().to_dict(), **DEFAULTS}
    form: dict[str, gr.components.Component] = {}
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=330):
            gr.Markdown("### Set up a run")
            for row in BASIC:
                with gr.Row():
                    for name in row:
                        form[name] = field(name, defaults[name])
                if row == ("dataset",):
                    # no file_types: the browser would refuse another file with a toast that vanishes; the
                    # server answers in the page instead (act.zip_chosen)
                    zip_file = gr.File(label="Your images (.zip, optional class sub-folders)", type="filepath",
                                       height=140, elem_id="zip-upload")
            with gr.Accordion("Advanced", open=False):
                for row in ADVANCED:
                    with gr.Row():
                        for name in row:
                            form[name] = field(name, defaults[name])
            with gr.Row():
                start_btn = gr.Button("Start", variant="primary", elem_id="start-btn")
                stop_btn = gr.Button("Stop", variant="stop", interactive=False, elem_id="stop-btn")
            with gr.Row():
                pause_btn = gr.Button("Pause", interactive=False, elem_id="pause-btn")
                resume_btn = gr.Button("Resume", interactive=False, elem_id="resume-btn")
                reset_btn = gr.Button("Reset", interactive=False, elem_id="reset-btn")
            with gr.Row(equal_height=True):
                step_k = gr.Number(1, label="k", elem_id="step-k", precision=0, min_width=60, scale=1)
                step_mode = gr.Dropdown(list(act.STEP_MODES), value="both (D then G)", label="Update",
                                        elem_id="step-mode", min_width=120, scale=2)
                step_btn = gr.Button("Step k", interactive=False, size="md", min_width=80, scale=1, elem_id="step-btn")
            message = gr.Markdown("", elem_id="train-message")
            link_ui = link_layout()  # links (issue 26): see the section at the end of this file
            with gr.Accordion("Checkpoints", open=False):
                with gr.Row(equal_height=True):
                    ckpt = gr.Dropdown([], label="Saved runs", scale=4, elem_id="train-checkpoint",
                                       elem_classes=["checkpoint-list"])
                    refresh_btn = gr.Button(REFRESH, min_width=40, scale=1)
                with gr.Row():
                    resume_ckpt_btn = gr.Button("Resume training", size="sm", elem_id="resume-ckpt-btn")
                    load_ckpt_btn = gr.Button("Load for samples", size="sm", elem_id="load-ckpt-btn")
                download_btn = gr.Button("Download the run's checkpoint", size="sm", elem_id="download-btn")
                ckpt_file = gr.File(label="Checkpoint file", interactive=False, visible=False)

        with gr.Column(scale=2, min_width=480):
            status = gr.Markdown(live.status_line(studio.trainer.status(), *studio.speed()), elem_id="train-status")
            notice = gr.Markdown("", elem_id="run-notice")
            with gr.Row(equal_height=False):
                with gr.Column(scale=5, min_width=260):
                    grid = gr.Image(label="Fixed-noise samples", interactive=False, format="png",
                                    buttons=["download", "fullscreen"], elem_id="live-grid")
                with gr.Column(scale=4, min_width=260):
                    loss_plot = gr.LinePlot(None, x="iteration", y="value", color="series",
                                            color_map=plots.with_one_network_colors(LOSS_COLORS),
                                            label="Losses", y_title="loss", elem_id="loss-plot")
                    d_plot = gr.LinePlot(None, x="iteration", y="value", color="series",
                                         color_map=plots.with_one_network_colors(D_COLORS),
                                         label="D(x) and D(G(z))", y_title="probability", y_lim=[0, 1],
                                         elem_id="d-plot")
                    plot_caption = gr.Markdown("", elem_id="plot-caption")
            smooth = gr.Slider(0, 0.99, value=0.6, step=0.01, label="Curve smoothing",
                               info="moving average; 0 = raw (long runs are also averaged into ≤500 points)")
            hint = gr.Markdown("")
            with gr.Accordion("What if? Runs side by side", open=True, elem_id="side-by-side"):
                side = side_by_side.build(studio)
            with gr.Accordion("How to read the plots", open=True), gr.Row():
                gr.Markdown(EXPLAIN_D)
                gr.Markdown(EXPLAIN_FAILURES)
            with gr.Accordion("D's view", open=False) as dview_accordion:
                dview_panel.build(studio, dview_accordion)
            with gr.Accordion("Quality metrics", open=False):
                metrics_note = gr.Markdown(live.NO_METRICS)
                metrics_plot = gr.LinePlot(None, x="iteration", y="value", color="series",
                                           label="Sample quality over training", visible=False)
                metrics_table = gr.Dataframe(label="Latest records", interactive=False, visible=False)
            with gr.Accordion("Timeline", open=True):
                timeline = gr.Gallery(label="Past fixed-noise grids", columns=6, format="png",
                                      object_fit="contain", allow_preview=True, elem_id="timeline")
                with gr.Row(equal_height=False):
                    gif_btn = gr.Button("Export the evolution as GIF", size="md", scale=1)
                    gif_file = gr.File(label="GIF", interactive=False, visible=False, scale=2)
                gif_note = gr.Markdown("", elem_id="timeline-gif-note")
            with gr.Accordion("Fresh samples", open=True):
                with gr.Row(equal_height=True):
                    sample_seed = gr.Number(0, label="Seed", precision=0, min_width=80, scale=1)
                    sample_btn = gr.Button("New samples", scale=1, elem_id="sample-btn")
                sample_note = gr.Markdown("", elem_id="sample-note")
                samples = gr.Image(label="Samples", interactive=False, format="png", height=300, elem_id="samples")

    wire(studio, session, form, zip_file, locals())
    wire_links(studio, form, link_ui)
    return {"form": form, "link_form": link_ui["link_form"], "link_hide": link_ui["hide"]}


def wire(studio: Studio, session: gr.State, form: dict, zip_file: gr.File, c: dict) -> None:
    """Events of the Train tab; `c` holds the components build() made, by name."""
    seen = gr.State({})
    timer = gr.Timer(live.POLL_ACTIVE_S)  # the poll sets its own pace: every 2 s while a run is active
    buttons = {k: c[f"{k}_btn"] for k in ("start", "pause", "resume", "step", "stop", "reset")}
    names = ["status", "notice", "loss_plot", "d_plot", "plot_caption", "hint", "grid", "timeline"]
    fields = list(form)
    # what changes rarely (the buttons, the form, the quality metrics) follows a state of its own: a poll that
    # only moves the status line costs the page little (every output of an event is work for the browser)
    run_state, run_form, n_history = gr.State(""), gr.State({}), gr.State(-1)

    # a message is about the run shown when it was written (message_run): a page that sees another run (one
    # another browser started) drops it rather than saying "Started" beside someone else's run
    message_run = gr.State(None)
    side, side_seen = c["side"], gr.State({})

    def refresh(seen_value: dict, smooth_value: float, about: str | None, side_value: dict):
        new_seen, out = live.live_view(studio, seen_value, float(smooth_value or 0))
        new_side, side_values = side_by_side.view(studio, side_value, float(smooth_value or 0))
        rare = [out.get(k, gr.skip()) for k in ("state", "form", "history")]
        stale = about is not None and about != studio.trainer.status().run_dir
        return [new_seen, *[out[k] for k in names], *rare,
                gr.Timer(value=out["poll_s"]) if "poll_s" in out else gr.skip(),
                *(("", None) if stale else (gr.skip(), gr.skip())), new_side, *side_values]

    def said(text: str) -> tuple[str, str]:
        return text, studio.trainer.status().run_dir

    hidden = {**QUIET, **PRIVATE}
    run_state.change(lambda state: [gr.Button(interactive=live.controls(state)[k]) for k in buttons], run_state,
                     list(buttons.values()), **hidden)
    run_state.change(lambda _: gr.Dropdown(choices=studio.list_checkpoints()), run_state, c["ckpt"], **hidden)
    # a late page shows the live run's settings, except those a link set (issue 26: the link's set-up wins)
    run_form.change(lambda values, linked: [values[f] if f in values and f not in (linked or {}) else gr.skip()
                                            for f in fields], [run_form, c["link_ui"]["link_form"]],
                    list(form.values()), **hidden)
    n_history.change(lambda _: live.metrics_view(studio), n_history,
                     [c["metrics_plot"], c["metrics_table"], c["metrics_note"]], **hidden)
    outputs = [seen, *[c[n] for n in names], run_state, run_form, n_history, timer, c["message"], message_run,
               side_seen, *side_by_side.outputs(side)]
    polled = [seen, c["smooth"], message_run, side_seen]
    # Polls only read the trainer, so they never wait behind a control click; they share the POLL group's one
    # worker (ui/queues.py), so thirty pages on this tab refresh less often instead of taking training's CPU.
    timer.tick(refresh, polled, outputs, **QUIET, api_name="train_status", **POLL)
    c["smooth"].change(refresh, polled, outputs, **QUIET, concurrency_limit=None,
                       **PRIVATE)

    # gr.Request is injected by its annotation, so the control callbacks are named functions.
    def on_start(data: dict, request: gr.Request):  # inputs given as a set arrive as one dict
        message = act.start(studio, {n: data[form[n]] for n in fields}, data[zip_file], request)
        started = message.startswith(OK)
        return *said(message), (dict(data[session], model=None) if started else gr.skip())  # this browser: live

    def on_pause(request: gr.Request):
        return said(act.pause(studio, request))

    def on_resume(steps: Any, device: str, request: gr.Request):
        return said(act.resume(studio, steps, device, request))

    def on_step(k: Any, mode: str, request: gr.Request):
        return said(act.step(studio, k, mode, request))

    def on_stop(request: gr.Request):
        return said(act.stop(studio, request))

    def on_reset(request: gr.Request):
        return said(act.reset(studio, request))

    def on_resume_checkpoint(name: str, steps: Any, device: str, request: gr.Request):
        return said(act.resume_checkpoint(studio, name, steps, device, request))

    def on_download(request: gr.Request) -> tuple[str | None, str]:
        return act.download_checkpoint(studio, request)

    def choices() -> gr.Dropdown:  # a refresh keeps what the person picked
        return gr.Dropdown(choices=studio.list_checkpoints())

    def newest() -> gr.Dropdown:
        names = studio.list_checkpoints()
        return gr.Dropdown(choices=names, value=names[0] if names else None)

    def progress() -> dict:
        """The run's state, iteration, batch size and smoothed images/s: a cheap read for load tests."""
        st, cfg = studio.trainer.status(), studio.trainer.config
        return {"state": str(st.state), "iteration": st.iteration, "total": st.total,
                "batch_size": cfg.batch_size if cfg else 0, "images_per_s": round(studio.speed()[0], 1)}

    gr.api(progress, api_name="train_progress", concurrency_limit=None, queue=False)

    # One queue slot for every control: clicks run one after another, never interleaved.
    control = {"concurrency_limit": 1, "concurrency_id": "train-control"}
    after = {"fn": refresh, "inputs": polled, "outputs": outputs, **QUIET, **PRIVATE}  # (each .then an endpoint)
    message = [c["message"], message_run]
    buttons["start"].click(on_start, {*form.values(), zip_file, session}, [*message, session],
                           **control).then(**after)
    buttons["pause"].click(on_pause, None, message, **control).then(**after)
    buttons["resume"].click(on_resume, [form["steps"], form["device"]], message, **control).then(**after)
    buttons["step"].click(on_step, [c["step_k"], c["step_mode"]], message, **control).then(**after)
    buttons["stop"].click(on_stop, None, message, **control).then(**after)
    buttons["reset"].click(on_reset, None, message, **control).then(**after)
    side_by_side.wire(studio, side, after)
    c["resume_ckpt_btn"].click(on_resume_checkpoint, [c["ckpt"], form["steps"], form["device"]], message,
                               **control).then(**after)

    zip_file.upload(lambda path: act.zip_chosen(path), zip_file, [zip_file, form["dataset"], c["message"]], **PRIVATE)
    # a data set with one native channel count sets Channels (stacked digits are colour: 3)
    form["dataset"].input(lambda d: str(NATIVE_CHANNELS[d]) if d in NATIVE_CHANNELS else gr.skip(), form["dataset"],
                          form["channels"], **PRIVATE)
    # the Recipe says "custom" as soon as a setting leaves every preset, and a preset's name when it matches one
    recipe_names = [n for n in fields if any(n in recipe for recipe in PRESETS.values())]
    for name in recipe_names:
        form[name].input(lambda *v: recipe_of(dict(zip(recipe_names, v, strict=True))),
                         [form[n] for n in recipe_names], form["preset"], **QUIET, **PRIVATE)
    # .input fires on a person's choice only, not when the poll shows the live run's settings
    form["preset"].input(lambda p: preset_fields(p, form), form["preset"], list(form.values()), **QUIET, **PRIVATE)
    c["refresh_btn"].click(choices, None, c["ckpt"], **PRIVATE)
    c["ckpt"].focus(choices, None, c["ckpt"], **PRIVATE)
    if gr.context.Context.root_block is not None:  # filled when the page opens, refreshed on focus
        gr.context.Context.root_block.load(newest, None, c["ckpt"], **PRIVATE)
    c["load_ckpt_btn"].click(lambda name, s: act.load_for_samples(studio, name, s), [c["ckpt"], session],
                             [session, c["message"]], **PRIVATE, **FAST)
    c["download_btn"].click(on_download, None, [c["ckpt_file"], c["message"]]).then(
        lambda p: gr.File(visible=bool(p)), c["ckpt_file"], c["ckpt_file"], **PRIVATE)
    c["gif_btn"].click(lambda: live.export_gif(studio), None, [c["gif_file"], c["gif_note"]]).then(
        lambda p: gr.File(visible=bool(p)), c["gif_file"], c["gif_file"], **PRIVATE)
    c["sample_btn"].click(lambda s, seed: act.new_samples(studio, s, seed), [session, c["sample_seed"]],
                          [c["samples"], c["sample_note"]], **PRIVATE, **FAST)


# ---- links (issue 26): "Copy link to this set-up" and the controls a link hides (dcgan/links.py) -------------
COPY_LINK_JS = """(query, hide, message) => {
  const url = query && !query.startsWith("⚠") ? window.location.origin + window.location.pathname + query : query;
  if (url && navigator.clipboard && !url.startsWith("⚠")) { navigator.clipboard.writeText(url).catch(() => {}); }
  return [url, hide, message];
}"""


def link_layout() -> dict:
    """The Copy-link row: the button, which controls the link hides, and the link itself (to read or copy)."""
    with gr.Accordion("Share this set-up as a link", open=False):
        with gr.Row(equal_height=True):
            copy_btn = gr.Button("Copy link to this set-up", size="sm", elem_id="copy-link-btn", scale=1)
            hide = gr.Dropdown(list(links.HIDABLE), value=[], multiselect=True, label="Hide in the link",
                               elem_id="link-hide", scale=2)
        link = gr.Textbox(label="Link", interactive=False, buttons=["copy"], elem_id="setup-link")
        note = gr.Markdown("", elem_id="link-note")
    return {"copy_btn": copy_btn, "hide": hide, "link": link, "note": note, "link_form": gr.State({})}


def wire_links(studio: Studio, form: dict, ui: dict) -> None:
    """Copy link: the form as a query string (only what differs from a fresh page), made a full URL and copied
    to the clipboard in the browser; a form the app would refuse gets the reason instead."""
    names = list(form)

    def query(*values_and_hide: Any) -> tuple[str, list, str]:
        *values, hide = values_and_hide
        try:
            text = links.query_of(dict(zip(names, values, strict=True)), studio.build_config, hide=hide or ())
        except ConfigError as exc:
            return "", hide, problem(exc, again="Copy link")
        return text or "?", hide, f"{OK} Copied: anyone who opens it gets this set-up" + (
            f", with {', '.join(hide)} hidden." if hide else ".")

    ui["copy_btn"].click(query, [*form.values(), ui["hide"]], [ui["link"], ui["hide"], ui["note"]], **PRIVATE).then(
        None, [ui["link"], ui["hide"], ui["note"]], [ui["link"], ui["hide"], ui["note"]], js=COPY_LINK_JS,
        **PRIVATE)
