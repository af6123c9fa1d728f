"""The Train tab's "What if?" view: the runs this app trains at once (a run and its branches) side by side: their
fixed-noise grids next to each other (the same latents: a branch keeps its parent's), their curves overlaid, each
labelled by what differs from its parent and steerable on its own, and the buttons that branch the run shown in
full at its current step (dcgan.branch.WHAT_IF). Layout, wiring and formatting only: the runs are the studio's lanes
(dcgan/studio.py); the Train tab's poll (ui/train_tab.py) refreshes this view with the rest of the tab.
"""

from __future__ import annotations

import time
from types import MappingProxyType
from typing import Any

import gradio as gr
import pandas as pd

from dcgan.branch import WHAT_IF, changes_text
from dcgan.config import lineage
from dcgan.trainer import ACTIVE, PAUSED, RUNNING, Trainer
from ui import plots
from ui import train_actions as act
from ui.common import PRIVATE
from ui.state import Studio
from ui.train_view import PLOTS_EVERY_S, RESEND_S, RETURN_GAP_S

LETTERS = act.LETTERS
# each run one hue: its first curve dark, its second light (loss_D / loss_G, D(x) / D(G(z)))
HUES = MappingProxyType({"A": ("#1f77b4", "#9ecae1"), "B": ("#e6550d", "#fdae6b"), "C": ("#31a354", "#a1d99b"),
                         "D": ("#756bb1", "#bcbddc")})
LOSS_SERIES = MappingProxyType({"loss_d": "loss_D", "loss_g": "loss_G"})
D_SERIES = MappingProxyType({"d_real": "D(x)", "d_fake": "D(G(z))"})
ACTIONS = ("pause", "resume", "step", "stop")  # each run's own buttons
GRID_SIDE = 256  # pixels of each run's grid PNG
ALONE = ("*One run.* A **What if?** button branches the run above at this very step (same weights, optimiser "
         "states, noise and data order) with one setting changed; both then train side by side here. The Runs tab "
         "branches any saved step with any change.")


def colors(series: MappingProxyType) -> dict[str, str]:
    first, second = series.values()
    return {f"{letter} {name}": hue[k] for letter, hue in HUES.items() for k, name in enumerate((first, second))}


def differs(trainer: Trainer, lane: int) -> str:
    """What makes this run what it is, in one line: a branch's parent, step and changes."""
    record = lineage(trainer.config) if trainer.config is not None else None
    if record:
        changes = changes_text(record.get("changes") or {})
        return f"branch of `{record.get('run', '?')}` at {record.get('step', '?'):,}: {changes}"
    return "the run shown in full above" if lane == 0 else "a run of its own"


def name_of(trainer: Trainer) -> str:
    return trainer.status().run_dir.rstrip("/").rsplit("/", 1)[-1] or "?"


def head(trainer: Trainer, lane: int) -> str:
    st = trainer.status()
    return (f"**{LETTERS[lane]}** · `{name_of(trainer)}` · **{st.state}** · iteration {st.iteration:,}\n\n"
            f"{differs(trainer, lane)}")


def curves(studio: Studio, runs: list[tuple[int, Trainer]], smooth: float) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    """(records, losses, D outputs) of the runs overlaid, each series named by its run's letter; shared by every
    page polling together (studio.shared), as the run-in-full's curves are."""
    sizes = tuple((t.status().run_dir, len(t.metrics)) for _, t in runs)

    def compute() -> tuple[int, pd.DataFrame, pd.DataFrame]:
        losses, ds = [], []
        for lane, trainer in runs:
            rows = trainer.metrics.since(0)
            letter = LETTERS[lane]
            losses.append(plots.curve_frame(rows, {k: f"{letter} {v}" for k, v in LOSS_SERIES.items()}, smooth))
            ds.append(plots.curve_frame(rows, {k: f"{letter} {v}" for k, v in D_SERIES.items()}, smooth))
        return sum(n for _, n in sizes), pd.concat(losses, ignore_index=True), pd.concat(ds, ignore_index=True)

    return studio.shared.get(("side", sizes, smooth), compute)


def build(studio: Studio) -> dict[str, Any]:
    """The view's components (inside the Train tab); returns them by name for the tab's wiring."""
    c: dict[str, Any] = {}
    with gr.Row(equal_height=True):
        gr.Markdown("**What if?** Branch the run at this step:")
        c["what_if"] = [gr.Button(q, size="sm", min_width=90, elem_classes=["what-if"]) for q in WHAT_IF]
    c["message"] = gr.Markdown("", elem_id="side-message")
    c["note"] = gr.Markdown(ALONE, elem_id="side-note")
    c["slots"] = []
    with gr.Row(equal_height=False):
        for lane in range(studio.max_runs):
            with gr.Column(visible=False, min_width=180, elem_id=f"side-run-{lane}") as column:
                slot = {"column": column, "head": gr.Markdown("", elem_id=f"side-head-{lane}"),
                        "grid": gr.Image(show_label=False, interactive=False, format="png", height=GRID_SIDE,
                                         buttons=["fullscreen"], elem_id=f"side-grid-{lane}")}
                with gr.Row():
                    for action in ACTIONS:
                        slot[action] = gr.Button(action.title(), size="sm", min_width=60,
                                                 elem_id=f"side-{action}-{lane}")
            c["slots"].append(slot)
    with gr.Row(visible=False) as plots_row:
        c["loss_plot"] = gr.LinePlot(None, x="iteration", y="value", color="series", color_map=colors(LOSS_SERIES),
                                     label="Losses, run by run", y_title="loss", elem_id="side-loss-plot")
        c["d_plot"] = gr.LinePlot(None, x="iteration", y="value", color="series", color_map=colors(D_SERIES),
                                  label="D(x) and D(G(z)), run by run", y_title="probability", y_lim=[0, 1],
                                  elem_id="side-d-plot")
    c["plots_row"] = plots_row
    return c


def outputs(c: dict[str, Any]) -> list:
    """The components `view` updates, in the order of its values."""
    slots = [s[k] for s in c["slots"] for k in ("column", "head", "grid", *ACTIONS)]
    return [c["note"], c["plots_row"], *slots, c["loss_plot"], c["d_plot"]]


def view(studio: Studio, seen: dict | None, smooth: float) -> tuple[dict, list]:
    """The view's new values (gr.skip() where nothing changed since this browser's `seen`), for the tab's poll.
    Runs show side by side once a lane other than the first holds one."""
    seen = dict(seen or {})
    runs = studio.runs_now()
    shown = runs if any(lane for lane, _ in runs) else []
    lanes = {lane: trainer for lane, trainer in shown}
    values: list[Any] = []

    def put(key: str, value: Any, make=lambda v: v) -> None:
        values.append(make(value) if seen.get(key) != value else gr.skip())
        seen[key] = value

    put("alone", not shown, lambda alone: gr.Markdown(visible=alone))
    put("plots", bool(shown), lambda any_: gr.Row(visible=any_))
    for lane in range(studio.max_runs):
        trainer = lanes.get(lane)
        put(f"show{lane}", trainer is not None, lambda on: gr.Column(visible=on))
        if trainer is None:
            values += [gr.skip()] * (2 + len(ACTIONS))
            seen.pop(f"grid{lane}", None)  # shown again later: its grid is sent again
            continue
        state = trainer.status().state
        put(f"head{lane}", head(trainer, lane))
        iteration, grid = trainer.grid()
        key = (trainer.status().run_dir, iteration)
        if grid is not None and seen.get(f"grid{lane}") != key:
            values.append(studio.pictures.png(grid, GRID_SIDE))
            seen[f"grid{lane}"] = key
        else:
            values.append(gr.skip())
        for action, live in (("pause", state == RUNNING), ("resume", state == PAUSED),
                             ("step", state in (RUNNING, PAUSED)), ("stop", state in ACTIVE)):
            put(f"{action}{lane}", live, lambda on: gr.Button(interactive=on))

    if not shown:
        values += [gr.skip(), gr.skip()]
        seen.pop("runs", None)
        return seen, values
    # A chart draws no series it was built without, and a rebuild (a caption change) reads the data it held: so a
    # new set of runs gets its data first, then the caption naming them (the rebuild), then the data again for a
    # few seconds (as ui/train_view.live_view does for a new series)
    now = time.monotonic()
    # a run's series appear with its first records (a new branch's process may take a while to report): that too
    # is a new set of series, named in the caption
    runs_key = tuple((t.status().run_dir, len(t.metrics) > 0) for _, t in shown)
    if seen.get("runs") != runs_key:
        seen.update(runs=runs_key, rows=None, captioned=False, resend_until=now + RESEND_S)
    if now - seen.get("polled_at", now) > RETURN_GAP_S:  # the tab was shown again: its charts are being rebuilt
        seen["resend_until"] = now + RESEND_S
    seen["polled_at"] = now
    active = any(t.status().state == RUNNING for _, t in shown)
    resend = now < seen["resend_until"]
    due = seen["rows"] is None or resend or not active or now - seen.get("plots_at", 0.0) >= PLOTS_EVERY_S
    if not due:
        return seen, [*values, gr.skip(), gr.skip()]
    rows, losses, ds = curves(studio, shown, smooth)
    if rows == seen["rows"] and not resend and seen.get("smooth") == smooth:
        return seen, [*values, gr.skip(), gr.skip()]
    extra = {}
    if seen["rows"] is not None and not seen["captioned"]:
        extra["caption"] = " · ".join(f"{LETTERS[lane]}: {name_of(t)}" + ("" if len(t.metrics) else " (no curves yet)")
                                      for lane, t in shown)
        seen.update(captioned=True, resend_until=now + RESEND_S)
    values += [gr.LinePlot(value=losses if len(losses) else None, **extra),
               gr.LinePlot(value=ds if len(ds) else None, **extra)]
    seen.update(rows=rows, smooth=smooth, plots_at=now)
    return seen, values


def wire(studio: Studio, c: dict[str, Any], after: dict[str, Any]) -> None:
    """The buttons: What-if branches the run shown in full; each slot's Pause / Resume / Step / Stop steers its run.
    `after` is the tab's refresh (run after each click, as for the tab's own buttons)."""
    control = {"concurrency_limit": 1, "concurrency_id": "train-control", **PRIVATE}

    for button in c["what_if"]:
        def ask(request: gr.Request, question: str = button.value) -> str:
            return act.what_if(studio, question, 0, request)

        button.click(ask, None, c["message"], **control).then(**after)
    for lane, slot in enumerate(c["slots"]):
        for action in ACTIONS:
            def steer(request: gr.Request, lane: int = lane, action: str = action) -> str:
                return act.lane_control(studio, lane, action, request)

            slot[action].click(steer, None, c["message"], **control).then(**after)
