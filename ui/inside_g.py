"""The "Inside G" panel of the Explore tab (issue 25): G's layers for the browser's latent, its units ranked, units
switched off or on with the image re-rendered, and for digits models what the classifier reads.

Layout and wiring: the numbers come from dcgan/inside.py, the values every page shares from `studio.inside_g()`.
Closed, the panel computes nothing and its timer stops itself at its first tick (showing the Explore tab starts
every timer in it: app.poll_only_the_shown_tab); open, the timer follows the live run's newest snapshot. Each
callback returns {name: value}.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch

from dcgan import inside, latent
from dcgan.images import image_array, upscale
from dcgan.studio import LoadedModel, digit_classifier_ready
from ui.common import FAST, HEAVY, PRIVATE, QUIET, as_files, fast, user_error
from ui.queues import POLL
from ui.state import Studio

POLL_S = 2.0  # a live run sends a new snapshot every few seconds
UNITS_SHOWN = 24  # the highest-ranked units shown (of up to 512)
SWITCHES = ("off", "on")
NOTE = """**Inside G.** Left to right: each layer of G for the latent you chose (click a sample above with *clicking a
sample sets: sliders*), from the first small map to the image. Each small square is one *unit* (channel), all on the
layer's scale: bright = strongly active. Units are ranked by how much they matter: their mean activation over 1,000
samples times how much the image changes when they are switched off. Click a unit to select it (several can be
selected) and switch it **off** (set to its mean or zero, GAN Dissection's x·(1−a) + r·a) or **on** (forced to its
strongest value in a region): the image is drawn again at once. Notice which units draw a part of the digit: switching
one off removes a stroke, switching it on in a region adds one. On a live run, watch units take on their roles while G
trains, and drag *snapshot* back to see when they did."""
HIST_NOTE = """**What G makes.** The share of each digit among 256 samples (as the project's digit classifier reads
them) beside the real share in the training data, updated while the run trains: a digit whose bar shrinks to nothing
is a mode G dropped."""


def panel_model(studio: Studio, session: dict[str, Any], seen: dict[str, Any]) -> LoadedModel | None:
    """What this panel shows: the browser's checkpoint or Hub model, else the live run's newest snapshot, or the
    snapshot the browser scrubbed back to."""
    pinned = session.get("model")
    model = studio.sampling_model(pinned) if pinned is None or pinned.source == "live" else pinned
    frame = seen.get("frame")
    if model is None or model.source != "live" or frame is None or frame == model.key[2]:
        return model
    G = studio.inside_g().past(model.key[1], frame)
    if G is None:
        return model
    return LoadedModel(f"live run, iteration {frame:,} (scrubbed back)", G, model.config, "live",
                       (*model.key[:2], frame))


def chosen_latent(model: LoadedModel, session: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    z = session.get("z")
    if z is None or z.shape[-1] != model.config.nz:
        z = latent.sample_latents(model.config.nz, 1, 1000)
    label = torch.tensor([int(session.get("label") or 0)]) if model.config.num_classes else None
    return z, label


def switches(seen: dict[str, Any]) -> list[inside.Switch]:
    return [inside.Switch(seen["layer"], int(u), seen.get("mode", "off"), seen.get("value", "mean"),
                          seen.get("region", "everywhere")) for u in seen.get("selected", [])]


def ranking(studio: Studio, model: LoadedModel, layer: int, again: bool = False) -> tuple[Any, inside.Ranking]:
    return studio.inside_g().ranking(inside.family(model.source, model.key), model.key, model.generator, layer, again)


def layer_choices(model: LoadedModel) -> list[tuple[str, int]]:
    return [(f"layer {k}: {c} units, {s}x{s}", k)
            for k, (c, s) in enumerate(inside.layer_shapes(model.generator), start=1)]


def draw(studio: Studio, session: dict[str, Any], seen: dict[str, Any], again: bool = False,
         may_rank: bool = True) -> dict[str, Any]:
    """Everything that changed since this browser's last drawing: layers, units, images, snapshots, histogram.
    may_rank False (the timer): a layer never ranked for this model or run is left for a click to rank."""
    seen = dict(seen or {})
    model = panel_model(studio, session or {}, seen)
    if model is None:
        return {"seen": seen, "status": "*Choose a model above (or start a run) to look inside its generator.*"}
    out: dict[str, Any] = {}
    layers = inside.num_layers(model.generator)
    if seen.get("model") != model.key[:2] or not 1 <= seen.get("layer", 0) <= layers:
        seen.update(layer=min(seen.get("layer") or 2, layers), selected=[])  # a new model: its second layer
        out["layer"] = gr.Radio(choices=layer_choices(model), value=seen["layer"])
    seen["model"] = model.key[:2]
    layer = seen["layer"]
    kept = studio.inside_g().rankings.peek((*inside.family(model.source, model.key), layer))
    if not may_rank and kept is None:
        out["status"] = f"**{model.label}** · layer {layer}: not ranked yet (choose a layer to rank its units)"
        return {"seen": seen, **out, **histogram(studio, model, seen)}
    version, rank = ranking(studio, model, layer, again)
    z, label = chosen_latent(model, session or {})
    key = (model.key, tuple(z.flatten().tolist()[:4]), layer, tuple(seen.get("selected", [])), seen.get("mode"),
           seen.get("value"), seen.get("region"), version)
    if key != seen.get("drawn"):
        seen["drawn"] = key
        out.update(images(model, rank, z, label, seen, studio.pictures.png))
        ranked_at = "" if version == model.key else f" (units ranked at iteration {version[2]:,}: *Rank again*)"
        out["status"] = (f"**{model.label}**{ranked_at} · layer {layer}: {rank.n:,} samples behind the ranking, the "
                         f"effect of each unit measured on {rank.effect_n} of them")
    if model.source == "live":
        out.update(snapshots(studio, model, seen))
    out.update(histogram(studio, model, seen))
    return {"seen": seen, **out}


def images(model: LoadedModel, rank: inside.Ranking, z: torch.Tensor, label: torch.Tensor | None,
           seen: dict[str, Any], png: Callable[[np.ndarray], str]) -> dict[str, Any]:
    """The layers (switched units outlined), the top units' maps, and the image before and after the switches
    (the pictures inside a component update as files: ui.common.as_files)."""
    layer, chosen = seen["layer"], switches(seen)
    plain = inside.features(model.generator, z, label)
    maps = inside.render(model.generator, z, label, chosen, {layer: rank}) if chosen else plain
    selected = seen.get("selected", [])
    return {"layers": inside.layers_picture([m[0] for m in maps], marked={layer: selected}),
            "units": inside.unit_gallery(maps[layer - 1][0], rank, UNITS_SHOWN),
            "selected": gr.Dropdown(choices=[(f"unit {u} (score {rank.score[u]:.3g})", u) for u in rank.order],
                                    value=selected, multiselect=True),
            "before": upscale(image_array(plain[-1][0]), 224),
            "after": gr.Image(value=png(upscale(image_array(maps[-1][0]), 224)),
                              label=f"switched: {inside.describe(chosen)}" if chosen else "switched: nothing yet")}


def snapshots(studio: Studio, model: LoadedModel, seen: dict[str, Any]) -> dict[str, Any]:
    """The scrub slider over the live run's kept snapshots (updated when one more is kept)."""
    its = studio.inside_g().history.iterations(model.key[1])
    if not its or seen.get("snapshots") == (its[0], its[-1], len(its)):
        return {}
    seen["snapshots"] = (its[0], its[-1], len(its))
    value = seen.get("frame") if seen.get("frame") in its else its[-1]
    return {"scrub": gr.Slider(minimum=0, maximum=max(len(its) - 1, 1), value=its.index(value), step=1,
                               interactive=len(its) > 1,
                               label=f"snapshot {its.index(value) + 1} of {len(its)} (iterations {its[0]:,} to "
                                     f"{its[-1]:,}): drag back to see when structure appeared")}


def real_shares(model: LoadedModel) -> list[float] | None:
    try:
        data = latent.dataset_for(model.config)
    except Exception:  # offline data set: the generated bars alone
        return None
    labels = data.train_labels
    return None if labels is None else inside.real_digit_shares(labels, model.config.dataset == "stacked-digits")


def histogram(studio: Studio, model: LoadedModel, seen: dict[str, Any]) -> dict[str, Any]:
    """The digit histogram of the shown model, read again for a newer live snapshot at most every few seconds."""
    cfg = model.config
    if not inside.reads_digits(cfg.dataset):
        if seen.get("hist") != "none":
            seen["hist"] = "none"
            return {"hist_text": "*The digit histogram is for digits models (the classifier reads digits only).*"}
        return {}
    if not digit_classifier_ready(cfg.image_size):
        studio.classifier_job(cfg.image_size)
        seen["hist"] = "waiting"
        return {"hist_text": "*The digit classifier is being trained once for this installation (1-2 minutes); "
                             "the histogram appears then.*"}
    version, reading = studio.inside_g().reading(inside.family(model.source, model.key), model.key, model.generator)
    if seen.get("hist") == version:
        return {}
    seen["hist"] = version
    real = real_shares(model)
    rows = [{"digit": f"{d} gen", "share": s, "images": "generated"} for d, s in enumerate(reading.shares)]
    rows += [{"digit": f"{d} real", "share": s, "images": "real"} for d, s in enumerate(real or [])]
    at = f"iteration {version[2]:,}" if model.source == "live" else model.label
    missing = [str(d) for d, s in enumerate(reading.shares) if s < 0.02]
    gone = f" Missing (under 2 %): **{', '.join(missing)}**." if missing else " Every digit is there."
    return {"hist": pd.DataFrame(rows), "hist_text": f"Digits in {reading.n} samples of {at}.{gone}"}


# ---- events ---------------------------------------------------------------------------------------


def pick_unit(studio: Studio, session: dict[str, Any], seen: dict[str, Any], index: int) -> dict[str, Any]:
    """A click on a unit's map: select it (or unselect it) and show its strongest samples."""
    seen = dict(seen or {})
    model = panel_model(studio, session or {}, seen)
    if model is None or "layer" not in seen:
        raise user_error("Open the panel on a model first.")
    _, rank = ranking(studio, model, seen["layer"])
    unit = rank.order[index]
    chosen = list(seen.get("selected", []))
    seen["selected"] = [u for u in chosen if u != unit] if unit in chosen else [*chosen, unit]
    strong = inside.strongest_samples(model.generator, rank, unit)
    out = draw(studio, session, seen)
    label = f"layer {seen['layer']} unit {unit}: its {len(strong)} strongest samples (red: where it fires)"
    return {**out, "strongest": gr.Gallery(value=as_files(studio, strong), label=label)}


def set_option(studio: Studio, session: dict[str, Any], seen: dict[str, Any], name: str, value: Any) -> dict[str, Any]:
    seen = dict(seen or {})
    if name == "layer" and value != seen.get("layer"):
        seen["selected"] = []
    seen[name] = [int(v) for v in value or []] if name == "selected" else value
    return draw(studio, session, seen)


def scrub(studio: Studio, session: dict[str, Any], seen: dict[str, Any], index: float) -> dict[str, Any]:
    """The snapshot slider: back to a kept snapshot of the live run (the newest follows the run again)."""
    seen = dict(seen or {})
    model = panel_model(studio, session or {}, {})
    if model is None or model.source != "live":
        return {"seen": seen}
    its = studio.inside_g().history.iterations(model.key[1])
    i = int(index or 0)
    seen["frame"] = None if not its or i >= len(its) - 1 else its[max(i, 0)]
    seen.pop("snapshots", None)
    return draw(studio, session, seen)


def measure_shift(studio: Studio, session: dict[str, Any], seen: dict[str, Any]) -> dict[str, Any]:
    """How the digit classifier's reading of 256 samples moves with the selected switches."""
    seen = dict(seen or {})
    model = panel_model(studio, session or {}, seen)
    if model is None or not seen.get("selected"):
        raise user_error("Select a unit first (click one of the units' maps).")
    if not inside.reads_digits(model.config.dataset):
        raise user_error("The digit classifier reads digits models only.")
    if not digit_classifier_ready(model.config.image_size):
        studio.classifier_job(model.config.image_size)
        raise user_error("The digit classifier is still being trained (1-2 minutes, once); try again then.")
    _, rank = ranking(studio, model, seen["layer"])
    shift = inside.class_shift(model.generator, switches(seen), {seen["layer"]: rank})
    rows = [{"digit": f"{d} {when}", "mean probability": p, "samples": when}
            for when, probs in (("before", shift.before), ("after", shift.after)) for d, p in enumerate(probs)]
    return {"shift_text": shift.text, "shift_plot": pd.DataFrame(rows)}


def read_as(studio: Studio, session: dict[str, Any], seen: dict[str, Any], digit: Any) -> dict[str, Any]:
    """Samples (of the histogram's) that the classifier reads as this digit."""
    model = panel_model(studio, session or {}, dict(seen or {}))
    if model is None or digit is None or not inside.reads_digits(model.config.dataset):
        return {}
    version, reading = studio.inside_g().reading(inside.family(model.source, model.key), model.key,
                                                 model.generator)
    d = int(digit)
    hits = (reading.predicted.view(reading.n, -1) == d).any(dim=1).nonzero().flatten()[:12]
    z, labels = inside.latents(model.generator, reading.n, reading.seed)
    images = inside.features(model.generator, z[hits], None if labels is None else labels[hits])[-1] if len(hits) \
        else []
    at = f" at iteration {version[2]:,}" if model.source == "live" else ""
    return {"read_as": gr.Gallery(value=as_files(studio, [upscale(image_array(im), 84) for im in images]),
                                  label=f"samples read as {d}{at}: {int(round(reading.shares[d] * reading.n))} of "
                                        f"{reading.n}")}


def build(studio: Studio, session: gr.State) -> None:
    """The panel (inside the Explore tab, below its tools): an accordion that computes nothing while closed."""
    studio.inside_g()  # subscribes the snapshot history before any run starts
    seen = gr.State({})
    C: dict[str, Any] = {"seen": seen}
    with gr.Accordion("Inside G: the generator's layers and units", open=False, elem_id="inside-panel") as acc:
        gr.Markdown(NOTE)
        C["status"] = gr.Markdown(elem_id="inside-status")
        C["scrub"] = gr.Slider(0, 1, value=1, step=1, label="snapshot (live run)", interactive=False,
                               elem_id="inside-scrub")
        C["layers"] = gr.Image(label="layers of G for your latent (selected units outlined in red)",
                               interactive=False, buttons=["fullscreen"], elem_id="inside-layers")
        with gr.Row():
            with gr.Column(scale=3):
                C["layer"] = gr.Radio([], label="layer", elem_id="inside-layer")
                C["units"] = gr.Gallery(label=f"its {UNITS_SHOWN} highest-ranked units (click to select)", columns=8,
                                        height="auto", allow_preview=False, elem_id="inside-units")
                C["selected"] = gr.Dropdown([], multiselect=True, label="selected units", elem_id="inside-selected")
                with gr.Row():
                    C["mode"] = gr.Radio(SWITCHES, value="off", label="switch", elem_id="inside-mode")
                    C["value"] = gr.Radio(inside.OFF_VALUES, value="mean", label="off: set to its")
                    C["region"] = gr.Dropdown(list(inside.REGIONS), value="everywhere", label="on: where")
                C["again"] = gr.Button("Rank units again on this snapshot", size="sm")
            with gr.Column(scale=2):
                with gr.Row():
                    C["before"] = gr.Image(label="G(z)", interactive=False, height=224, elem_id="inside-before")
                    C["after"] = gr.Image(label="switched", interactive=False, height=224, elem_id="inside-after")
                C["strongest"] = gr.Gallery(label="a unit's strongest samples", columns=5, height="auto",
                                            allow_preview=False, elem_id="inside-strongest")
        with gr.Row():
            with gr.Column():
                C["shift_btn"] = gr.Button("How do the switches change the digits? (256 samples)", size="sm")
                C["shift_text"] = gr.Markdown(elem_id="inside-shift-text")
                C["shift_plot"] = gr.BarPlot(x="digit", y="mean probability", color="samples", x_label_angle=-45,
                                             title="digit classifier: mean probability before and after", height=240)
            with gr.Column():
                gr.Markdown(HIST_NOTE)
                C["hist_text"] = gr.Markdown(elem_id="inside-hist-text")
                C["hist"] = gr.BarPlot(x="digit", y="share", color="images", x_label_angle=-45, height=240,
                                       title="share of each digit: generated vs real", elem_id="inside-hist")
                C["digit"] = gr.Radio([str(d) for d in range(10)], label="show samples read as")
                C["read_as"] = gr.Gallery(label="samples read as the digit", columns=6, height="auto",
                                          allow_preview=False)
    wire(studio, session, C, acc)


def wire(studio: Studio, session: gr.State, C: dict[str, Any], acc: gr.Accordion) -> None:
    def named(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> dict:
            return {C[k]: as_files(studio, v) for k, v in fn(*args, **kwargs).items()} or {C["seen"]: gr.skip()}
        return wrapper

    shown = [C[k] for k in ("seen", "status", "scrub", "layers", "layer", "units", "selected", "before", "after",
                            "hist", "hist_text")]
    ins = [session, C["seen"]]

    def opened(s, seen):
        return draw(studio, s, {**(seen or {}), "open": True, "drawn": None, "hist": None, "snapshots": None})

    def tick(s, seen):
        """A closed panel's timer stops itself (showing the Explore tab starts every timer in it)."""
        return draw(studio, s, seen, may_rank=False) if (seen or {}).get("open") else {"timer": gr.Timer(active=False)}

    def unit_click(s, seen, evt: gr.SelectData):
        return pick_unit(studio, s, seen, int(evt.index))

    def rank_again(s, seen):
        return draw(studio, s, dict(seen or {}), again=True)

    # opening and choosing a layer may rank a layer's units (a second or two at 28x28, minutes at 64x64 on a busy
    # 2-core CPU): the heavy lane's job, never the fast queue's
    timer = C["timer"] = gr.Timer(POLL_S)
    acc.expand(lambda seen: ({**(seen or {}), "open": True}, gr.Timer(active=True)), C["seen"], [C["seen"], timer],
               **QUIET, queue=False, **PRIVATE).then(
        studio.lane.wrap(named(opened)), ins, shown, **QUIET, **PRIVATE, **HEAVY)
    acc.collapse(lambda seen: ({**(seen or {}), "open": False}, gr.Timer(active=False)), C["seen"],
                 [C["seen"], timer], **QUIET, queue=False, **PRIVATE)
    timer.tick(fast(named(tick)), ins, [*shown, timer], **QUIET, **PRIVATE, **POLL)
    C["units"].select(fast(named(unit_click)), ins, [*shown, C["strongest"]], **QUIET, **PRIVATE,
                      **FAST)
    def choose_layer(s, seen, layer):
        return set_option(studio, s, seen, "layer", layer)

    C["layer"].input(studio.lane.wrap(named(choose_layer)),
                     [*ins, C["layer"]], shown, trigger_mode="always_last", show_progress_on=C["units"], **PRIVATE,
                     **HEAVY)
    for name in ("selected", "mode", "value", "region"):
        C[name].input(fast(named(lambda s, seen, v, name=name: set_option(studio, s, seen, name, v))),
                      [*ins, C[name]], shown, **QUIET, trigger_mode="always_last", **PRIVATE, **FAST)
    C["scrub"].release(fast(named(lambda s, seen, v: scrub(studio, s, seen, v))), [*ins, C["scrub"]], shown,
                       **QUIET, **PRIVATE, **FAST)
    C["again"].click(studio.lane.wrap(named(rank_again)), ins, shown, show_progress_on=C["units"], **PRIVATE, **HEAVY)
    C["shift_btn"].click(studio.lane.wrap(named(lambda s, seen: measure_shift(studio, s, seen))), ins,
                         [C["shift_text"], C["shift_plot"]], **PRIVATE, **HEAVY)
    C["digit"].input(fast(named(lambda s, seen, d: read_as(studio, s, seen, d))), [*ins, C["digit"]], C["read_as"],
                     **QUIET, **PRIVATE, **FAST)


__all__ = ("build", "draw", "panel_model", "pick_unit", "measure_shift", "scrub")
