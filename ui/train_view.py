"""How the Train tab shows a run: the status line, notices, pictures, the evolution GIF (plots: ui/plots.py).

Formatting only: the numbers come from the studio (dcgan/studio.py) and its trainer. `live_view` computes
only what changed since a browser's last poll, so many viewers cost little.
"""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from dcgan.studio import FORM_FIELDS, TEXT_FIELDS, Studio, health_hint, preset_of
from dcgan.trainer import ACTIVE, FAILED, FINISHED, IDLE, PAUSED, RUNNING, STARTING, STOPPED, Status
from ui import plots
from ui.common import FAIL, OK, WARN
from ui.plots import curve_frame  # noqa: F401  (ui/runs_tab.py imports it from here; ui.plots is its home)

PLOTS_EVERY_S = 2.0  # while a run trains, a page redraws its charts at most this often (each redraw is costly)
POLL_ACTIVE_S, POLL_IDLE_S = 2.0, 3.0  # a page polls every 2 s while a run is active (each poll costs the browser
# ~0.3 CPU s on this 2-core Xeon whatever it carries: docs/PERFORMANCE.md), else every 3 s
RETURN_GAP_S = 5.0  # no poll for this long: the page showed another tab (its timers stop there)
RESEND_S = 2.5  # after such a gap the plots are sent again for this long: a chart shown again is rebuilt by the
# browser, and data that lands while it rebuilds is dropped (issue 29, item 1)
TIMELINE_FRAMES = 24  # past grids shown in the gallery (the GIF gets them all)
TIMELINE_EVERY_S = 12.0  # while a run trains, the gallery of past grids (24 pictures) is sent at most this often
NO_METRICS = ("No quality metrics in this run. Set *Quality metrics every* (Advanced) before starting to score the "
              "generator during training: a Fréchet distance in a digit classifier's features for digits/MNIST "
              "(FID with InceptionV3 where its weights exist); the best checkpoint is kept as best.safetensors.")


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds}s"


def status_line(st: Status, speed: float, eta: float | None) -> str:
    """One line: state, progress, speed and ETA (Studio.speed: averaged over the last seconds), device and
    precision."""
    if st.state == IDLE:
        return "**idle**: no run yet. Choose settings and press **Start** (the bundled digits train offline)."
    if st.state == STARTING:
        return "**starting**: loading the data and building the networks…"
    pct = 100.0 * st.iteration / st.total if st.total else 0.0
    parts = [f"**{st.state}**", f"iteration {st.iteration:,} / {st.total:,} ({pct:.0f}%)", f"epoch {st.epoch:.2f}"]
    if st.state == RUNNING:
        parts += [f"{speed:,.0f} images/s", f"ETA {format_seconds(eta)}"]
    if st.device:
        parts.append(f"{st.device} · {st.precision}")
    return " · ".join(parts)


def run_notice(st: Status) -> str:
    """The trainer's error (with what to do) and its latest events, for every viewer."""
    lines = []
    if st.error:
        head = {FAILED: f"{FAIL} **Training failed**", PAUSED: f"{WARN} **Training paused**"}.get(
            st.state, f"{WARN} **Warning**")
        lines.append(f"{head}: {st.error.splitlines()[0]}")
        if st.state == FAILED:
            lines.append("The app keeps serving: change the settings and press **Start**, or **Reset**.")
    events = [e for e in st.events if not st.error or e != st.error.splitlines()[0]]
    lines += [f"- {e}" for e in events[-3:]]
    if st.run_dir and st.state != IDLE:
        lines.append(f"Run folder: `{st.run_dir}`")
    return "\n".join(lines)


def controls(state: str) -> dict[str, bool]:
    """Which buttons make sense in each trainer state."""
    active = state in ACTIVE
    return {"start": not active, "pause": state == RUNNING, "resume": state in (PAUSED, STOPPED, FINISHED),
            "step": state in (RUNNING, PAUSED), "stop": active, "reset": state != IDLE and state != STARTING}


# ---- pictures ------------------------------------------------------------------------------------


def timeline_frames(frames: list[tuple[int, np.ndarray]], n: int = TIMELINE_FRAMES) -> list[tuple[int, np.ndarray]]:
    """At most n snapshots spread evenly over iterations (snapshots are taken by the clock, and a run's speed
    changes, so evenly by index would crowd the fast or the slow part)."""
    if len(frames) <= n:
        return frames
    its = np.array([it for it, _ in frames])
    picked = sorted({int(np.abs(its - target).argmin()) for target in np.linspace(its[0], its[-1], n)})
    return [frames[i] for i in picked]


def labelled(grid: np.ndarray, text: str) -> Image.Image:
    """The grid with a white band underneath saying `text` (which iteration a GIF frame shows)."""
    band = 18
    canvas = Image.new("RGB", (grid.shape[1], grid.shape[0] + band), "white")
    canvas.paste(Image.fromarray(grid).convert("RGB"), (0, 0))
    ImageDraw.Draw(canvas).text((4, grid.shape[0] + 3), text, fill="black", font=ImageFont.load_default())
    return canvas


def export_gif(studio: Studio) -> tuple[str | None, str]:
    """The evolution of the fixed-noise grid as an animated GIF: native size, each frame labelled with its
    iteration, one shared palette (33 frames of digits: about 0.8 MB, where 2x upscaled frames made 3.5 MB)."""
    frames = studio.trainer.frames()
    if len(frames) < 2:
        return None, "Not enough snapshots yet: let the run train a few seconds first."
    out = studio.export_path(f"evolution-{time.strftime('%Y%m%d-%H%M%S')}.gif")
    pictures = [labelled(f, f"iteration {it:,}") for it, f in frames]
    grey = all(np.array_equal(f[..., 0], f[..., 2]) for _, f in frames[-3:])
    palette = pictures[-1].quantize(16 if grey else 64)  # 16 greys are plenty for digits; LZW likes few colours
    quantized = [p.quantize(palette=palette, dither=Image.Dither.NONE) for p in pictures]
    durations = [150] * (len(quantized) - 1) + [1500]
    quantized[0].save(out, save_all=True, append_images=quantized[1:], duration=durations, loop=0, optimize=True)
    return str(out), (f"GIF of {len(frames)} snapshots, iterations {frames[0][0]:,} to {frames[-1][0]:,} "
                      f"({out.stat().st_size / 1024:,.0f} KB).")


# ---- the live view ---------------------------------------------------------------------------------


def form_values(cfg) -> dict[str, Any]:
    """A run's settings as the form shows them, so every browser's form reflects the live run."""
    values = {name: str(getattr(cfg, name)) if name in TEXT_FIELDS else getattr(cfg, name) for name in FORM_FIELDS}
    values["preset"] = preset_of(cfg)
    return values


class Curves(NamedTuple):
    rows: int  # records they were computed from
    losses: Any
    ds: Any
    caption: str
    hint: str


def curves(studio: Studio, run_key: tuple, smooth: float) -> Curves:
    """The loss and D curves of the run, shared by every page on the Train tab polling together (studio.shared:
    a class of watching pages would otherwise each rebuild them from every record, every second)."""
    trainer = studio.trainer

    def compute() -> Curves:
        rows = trainer.metrics.since(0)
        losses, ds = plots.loss_frame(rows, smooth), plots.d_frame(rows, smooth)
        return Curves(len(rows), losses, ds, plots.caption(rows, losses, smooth), health_hint(rows))

    n = len(trainer.metrics)
    return studio.shared.get(("curves", run_key, smooth), compute, keep=lambda made: made.rows <= n)


def live_view(studio: Studio, seen: dict | None, smooth: float = 0.6) -> tuple[dict, dict[str, Any]]:
    """Everything the page shows about the run, computing only what changed since `seen` (per browser).

    Returns the new `seen` and a dict of component name -> new value or gr.skip(), plus, only when they changed:
    "form" (the run's settings, for a browser that has not seen this run yet: a late browser's form shows the
    live run), "state" (the buttons follow it: controls), "poll_s" (the pace of the polls) and "history" (how many
    quality-metric records: metrics_view draws them).
    """
    seen = dict(seen or {})
    trainer = studio.trainer
    st = trainer.status()
    out: dict[str, Any] = {}
    run_key = (st.run_dir, st.state == IDLE)
    new_run = seen.get("run") != run_key
    if new_run:
        seen = {"run": run_key}
        if trainer.config is not None and st.state != IDLE:
            out["form"] = form_values(trainer.config)

    speed, eta = studio.speed()
    text = status_line(st, speed, eta)
    out["status"] = text if seen.get("status") != text else gr.skip()
    seen["status"] = text
    notice = run_notice(st)
    out["notice"] = notice if seen.get("notice") != notice else gr.skip()
    seen["notice"] = notice
    if seen.get("state") != st.state:
        out["state"] = str(st.state)  # the page's buttons follow it (controls)
        out["poll_s"] = POLL_ACTIVE_S if st.state in ACTIVE else POLL_IDLE_S
        seen["state"] = st.state
        seen["plots_at"] = 0.0  # a run that pauses or ends is drawn at once

    now = time.monotonic()
    if now - seen.get("polled_at", now) > RETURN_GAP_S:
        seen["resend_until"] = now + RESEND_S
    seen["polled_at"] = now
    if now < seen.get("resend_until", 0.0):
        seen["rows"] = None
    n_rows = len(trainer.metrics)
    changed = (seen.get("rows"), seen.get("smooth")) != (n_rows, smooth)
    due = seen.get("rows") is None or seen.get("smooth") != smooth or st.state != RUNNING or \
        now - seen.get("plots_at", 0.0) >= PLOTS_EVERY_S
    shown = curves(studio, run_key, smooth) if changed and due else None
    if shown is not None and (seen.get("rows"), seen.get("smooth")) != (shown.rows, smooth):
        # None, not an empty table: the browser builds a plot's legend from the first data it gets. Data only:
        # a changed caption (or any other setting of the plot) makes the browser rebuild the whole chart, and
        # data that arrives while it rebuilds is lost (the plot froze: issue 29, item 1)
        # The one exception is a new series (single steps of one network): the browser draws no series its chart
        # was built without, and a rebuild reads the data the chart held before that update. So: the data with
        # the new series first, then (next poll) the caption naming them, which rebuilds the chart on that data,
        # then the data again for the polls after
        notes = (plots.one_network_note(shown.losses), plots.one_network_note(shown.ds))
        if notes != seen.get("notes", (None, None)):
            if seen.get("next_notes") == notes:
                seen["notes"] = notes
            seen["next_notes"], seen["resend_until"] = notes, now + RESEND_S
        caption = seen.get("notes", (None, None))
        out["loss_plot"] = gr.LinePlot(value=shown.losses if len(shown.losses) else None, caption=caption[0])
        out["d_plot"] = gr.LinePlot(value=shown.ds if len(shown.ds) else None, caption=caption[1])
        out["plot_caption"], out["hint"] = shown.caption, shown.hint
        seen["rows"], seen["smooth"], seen["plots_at"] = shown.rows, smooth, now
    else:
        out["loss_plot"] = out["d_plot"] = out["plot_caption"] = out["hint"] = gr.skip()

    iteration, grid = trainer.grid()
    if grid is not None and seen.get("grid") != iteration:
        out["grid"] = gr.Image(value=studio.pictures.png(grid, 480),
                               label=f"Fixed-noise samples at iteration {iteration:,}")
        seen["grid"] = iteration
    elif grid is None and seen.get("grid") is not None or new_run and grid is None:
        out["grid"] = gr.Image(value=None, label="Fixed-noise samples")
        seen["grid"] = None
    else:
        out["grid"] = gr.skip()

    frames = trainer.frames()
    frame_key = (len(frames), frames[-1][0] if frames else -1)
    timeline_due = st.state != RUNNING or now - seen.get("timeline_at", 0.0) >= TIMELINE_EVERY_S
    if seen.get("frames") != frame_key and timeline_due:  # the live grid above shows the newest at once
        out["timeline"] = [(studio.pictures.png(f), f"it {it:,}") for it, f in timeline_frames(frames)]
        seen["frames"], seen["timeline_at"] = frame_key, now
    else:
        out["timeline"] = gr.skip()

    n_history = len(trainer.history())
    if seen.get("history") != n_history:
        out["history"] = n_history
        seen["history"] = n_history
    return seen, out


def metrics_view(studio: Studio) -> tuple[Any, Any, str]:
    """(plot, table, note) of the run's quality metrics: sent when their number changes, not with every poll."""
    history = studio.trainer.history()
    frame = plots.metric_frame(history)
    return (gr.LinePlot(value=frame if len(frame) else None, visible=bool(len(frame))),
            gr.Dataframe(value=plots.metric_table(history), visible=bool(history)), "" if history else NO_METRICS)


__all__ = ("OK", "live_view", "status_line", "run_notice", "controls", "export_gif", "form_values", "metrics_view")
