"""The Runs tab: every run under checkpoints/ in one table; pick 2-4 to overlay their curves, see their
settings side by side and their latest samples next to each other; open, resume, rename or delete one.

The reading, renaming and deleting live in dcgan/runs.py (also behind `python -m dcgan runs`); the
curves are drawn with the Train tab's own smoothing; open and resume go through the studio.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType
from typing import Any

import gradio as gr
import pandas as pd

from dcgan import runs
from dcgan.branch import changes_text
from dcgan.branch import parse_settings as branch_settings
from dcgan.checkpoint import STEP_FILE, RunFolder
from dcgan.images import upscale
from dcgan.metrics import METRIC_KEY
from dcgan.studio import USER_ERRORS
from ui.common import FAST, OK, PRIVATE, QUIET, fast, problem
from ui.train_actions import LETTERS
from ui.train_view import curve_frame

MAX_COMPARE = 4
TABLE_CHARS = 48  # a cell of the runs table shows at most this many characters (the CLI's table shows all)
REFRESH_S = 5.0  # seconds between checks for new, finished or changed runs (file times only when unchanged)
RUN_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")  # one colour per selected run, in every plot
PLOTS = MappingProxyType({  # plot key -> (loop row key or metric key, title, y axis)
    "loss_d": ("loss_d", "loss_D", "loss"),
    "loss_g": ("loss_g", "loss_G", "loss"),
    "d_real": ("d_real", "D(x) on real images", "probability"),
    "d_fake": ("d_fake", "D(G(z)) on fakes", "probability"),
    "metric": (METRIC_KEY, f"Quality: {METRIC_KEY} (lower is better)", METRIC_KEY),
})
INTRO = ("Every run under the checkpoints folder. Pick **2–4 runs** to overlay their curves (each run keeps its "
         "colour in every plot), compare their settings (differences highlighted) and their latest samples. "
         "The same runs open in TensorBoard: `tensorboard --logdir checkpoints`.")


def root_of(studio: Any) -> Path:
    return Path(getattr(studio, "checkpoints_dir", studio))


def active_dir(studio: Any, name: str) -> str | None:
    """The folder of `name` when one of the app's runs trains in it now (never renamed or deleted under it)."""
    for run_dir, state in live_states(studio).items():
        if state in ("starting", "running", "paused") and Path(run_dir).name == name:
            return run_dir
    return None


def live_states(studio: Any) -> dict[str, str]:
    """The app's trainer's word on its own run (paused, failed), when this tab has a studio."""
    states = getattr(studio, "run_states", None)
    return states() if states is not None else {}


def listed_runs(studio: Any) -> list[runs.RunInfo]:
    own = getattr(studio, "list_runs", None)  # the app's studio knows its live runs' settings
    return own() if own is not None else runs.list_runs(root_of(studio), live_states(studio))


def runs_table(listed: list[runs.RunInfo]) -> pd.DataFrame:
    """The table as a tree (a branch under its parent); its problems and branched-from columns only when a run has
    one."""
    frame = pd.DataFrame(runs.tree_rows(listed)) if listed else pd.DataFrame({"run": []})
    return frame.drop(columns=[c for c in ("branched from", "problems") if c in frame and not frame[c].any()])


def run_names(root: Path) -> list[str]:
    return [r.name for r in runs.list_runs(root)]


def poll(studio: Any, seen: Any) -> tuple:
    """(signature, table, choices, choices) when the runs changed since `seen` (a new run, more iterations, a
    run that ended); skips otherwise, so a browser is not sent the same table again and a half-made selection
    is left alone."""
    listed = listed_runs(studio)
    signature = [(r.name, r.iterations, r.status, r.problems) for r in listed]
    if signature == seen:
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    names = [r.name for r in listed]
    return signature, runs_table(listed), gr.Dropdown(choices=names), gr.Dropdown(choices=names)


def compare(root: Path, names: list[str] | None, smooth: float = 0.6, only_different: bool = False) -> dict[str, Any]:
    """Everything the comparison panel shows for the chosen runs, as plain values."""
    names = list(names or [])[:MAX_COMPARE]
    known = {r.name: r for r in runs.list_runs(root)}
    chosen = [known[n] for n in names if n in known]
    frames: dict[str, list[pd.DataFrame]] = {k: [] for k in PLOTS}
    notes = []
    for r in chosen:
        c = runs.curves(r.path)
        for plot, (key, _, _) in PLOTS.items():
            source = c.history if plot == "metric" else c.rows
            frames[plot].append(curve_frame(source, {key: r.name}, 0.0 if plot == "metric" else smooth))
        if c.source == "checkpoint":
            notes.append(f"`{r.name}`: no event files, curves from its checkpoint's loss log (no D(x) / D(G(z)))")
        elif c.source == "none":
            notes.append(f"`{r.name}`: no curves (no readable event file or checkpoint)")
        if r.problems:
            notes.append(f"`{r.name}`: ⚠ " + "; ".join(r.problems))
    out: dict[str, Any] = {"notes": notes}
    for plot, parts in frames.items():
        out[plot] = pd.concat(parts, ignore_index=True) if parts else curve_frame([], {})
    out["settings"] = settings_frame(chosen, only_different)
    out["grids"] = []
    for r in chosen:
        grid, where = runs.latest_grid(r.path)
        if grid is not None:
            out["grids"].append((upscale(grid, 360), f"{r.name}: {where}"))
        else:
            notes.append(f"`{r.name}`: {where}")
    return out


def settings_frame(chosen: list[runs.RunInfo], only_different: bool = False):
    """Settings side by side, one column per run; rows that differ are highlighted."""
    rows = runs.settings_diff(chosen, only_different)
    if not rows:
        return pd.DataFrame({"setting": []})
    columns = ["setting", *(r.name for r in chosen)]
    frame = pd.DataFrame([[("≠ " if row["differs"] else "") + row["setting"], *map(str, row["values"])]
                          for row in rows], columns=pd.Index(columns).astype(str))
    highlight = "background-color: #fff3b0; font-weight: 600"
    return frame.style.apply(lambda line: [highlight if rows[line.name]["differs"] else ""] * len(line), axis=1)


# ---- actions ---------------------------------------------------------------------------------


def ask(action: str, name: str | None, new_name: str = "") -> tuple[dict, str, bool]:
    """(pending action, question, show the confirm row) for a rename or delete."""
    if not name:
        return {}, "⚠ Choose a run first.", False
    if action == "rename":
        if not (new_name or "").strip():
            return {}, "⚠ Type the new name first.", False
        return ({"action": "rename", "name": name, "new": new_name},
                f"Rename **{name}** to **{new_name.strip()}**?", True)
    return ({"action": "delete", "name": name},
            f"Delete **{name}** and every checkpoint and log in it? This cannot be undone.", True)


def confirm(studio: Any, pending: dict, request: Any = None) -> str:
    """Carry out a confirmed rename or delete; refusals come back as a message and change nothing."""
    root = root_of(studio)
    try:
        require_owner(studio, request)
        if pending.get("action") == "rename":
            new = runs.rename_run(root, pending["name"], pending["new"], active_dir(studio, pending["name"]))
            return f"{OK} Renamed `{pending['name']}` to `{new.name}`."
        if pending.get("action") == "delete":
            runs.delete_run(root, pending["name"], active_dir(studio, pending["name"]))
            return f"{OK} Deleted `{pending['name']}`."
        return "Nothing to confirm."
    except (runs.RunsError, PermissionError) as exc:
        return problem(exc)


def require_owner(studio: Any, request: Any) -> None:
    """Changing runs on a public Space is for its owner only (the studio's access hook, when it has one)."""
    hook = getattr(studio, "require_owner", None)
    if hook is not None:
        hook(request)


def checkpoint_name(root: Path, name: str | None) -> str:
    """The run's newest readable checkpoint as a path relative to root (what the studio takes)."""
    if not name:
        raise runs.RunsError("choose a run first")
    info = runs.read_run(runs.run_path(root, name))
    if info.checkpoint is None:
        raise runs.RunsError(f"{name!r} has no readable checkpoint ({'; '.join(info.problems)})")
    return info.checkpoint.relative_to(root).as_posix()


EXPLORE_TAB = "explore"  # the Explore tab's id (app.py: each tab's title, lower case)


def open_in_explore(studio: Any, name: str | None, view: dict | None = None) -> tuple[dict | None, str]:
    """(this browser's view with the run's generator pinned, message); the same view object when nothing opened."""
    try:
        model = studio.load_checkpoint(checkpoint_name(root_of(studio), name))
    except USER_ERRORS as exc:
        return view, problem(exc, again="Open in Explore")
    return (dict(view or {}, model=model),
            f"{OK} Loaded `{model.label}` in the **Explore** tab.")


def resume(studio: Any, name: str | None, steps: Any, request: Any = None) -> str:
    """Continue the run from its newest checkpoint in the shared trainer."""
    try:
        require_owner(studio, request)
        done, total = studio.resume(checkpoint_name(root_of(studio), name), steps or None, "auto")
    except USER_ERRORS as exc:  # RunsError is a ValueError
        return problem(exc, again="Resume training")
    return f"{OK} Resumed `{name}` at iteration {done:,}; training to {total:,}. Watch it in the **Train** tab."


def saved_steps(root: Path, name: str | None) -> list[int]:
    """The steps a run has saved (its step_*.safetensors), newest first: where it can branch."""
    if not name:
        return []
    try:
        files = RunFolder(runs.run_path(root, name)).step_files()
    except runs.RunsError:
        return []
    return sorted((int(STEP_FILE.match(p.name).group(1)) for p in files), reverse=True)


def parse_changes(text: str) -> dict[str, str]:
    """"lr_d=8e-4, loss=hinge" -> {setting: value text}: pairs split at a comma or space before the next
    `name=` (so diffaug=translation,cutout stays one value); dcgan.branch checks names and values."""
    pairs = [p.strip() for p in re.split(r"[,;\s]+(?=[A-Za-z_][\w-]*\s*=)", text or "") if p.strip()]
    return branch_settings(pairs)


def branch(studio: Any, name: str | None, step: Any, changes: str, request: Any = None) -> str:
    """Start a branch of a saved run at one of its steps, with the changes typed, beside any run training."""
    try:
        require_owner(studio, request)
        if not name:
            raise runs.RunsError("choose a run first")
        lane, plan = studio.branch(checkpoint_name(root_of(studio), name), parse_changes(changes),
                                   step=int(step) if step not in (None, "") else None)
    except (RuntimeError, *USER_ERRORS) as exc:
        return problem(exc, again="Branch")
    return (f"{OK} Branched `{plan.parent}` at iteration {plan.step:,} ({changes_text(plan.changes)}) as "
            f"`{plan.cfg.run_name}`; it "
            f"trains as run {LETTERS[lane]}: watch it beside the others in the **Train** tab (What if?).")


# ---- layout and wiring -----------------------------------------------------------------------


def build(studio: Any, view: gr.State | None = None) -> None:
    """The tab's components. `studio`: the app's Studio (or just a checkpoints folder: no open/resume);
    `view`: the browser's explore state (a dict with "model"), so *Open in Explore* pins the run there."""
    root = root_of(studio)
    with_trainer = hasattr(studio, "trainer")
    tab = gr.context.Context.block  # the Runs tab app.py opened around us, in the page's gr.Tabs
    strip = tab.parent if isinstance(tab, gr.Tab) and isinstance(tab.parent, gr.Tabs) else None
    gr.Markdown(INTRO)
    with gr.Row(equal_height=True):
        refresh_btn = gr.Button("↻ Refresh", size="sm", scale=0, min_width=100, elem_id="runs-refresh")
    # Few enough columns to fit a 1400-pixel page (details are in "Settings side by side"); long cells (names,
    # problems) are cut at TABLE_CHARS, and a narrower page scrolls the table sideways, inside its own box.
    table = gr.Dataframe(lambda: runs_table(listed_runs(studio)), label="Runs", interactive=False,
                         max_chars=TABLE_CHARS, max_height=320, elem_id="runs-table")
    with gr.Row(equal_height=True):
        chosen = gr.Dropdown(run_names(root), value=[], multiselect=True, max_choices=MAX_COMPARE,
                             label="Compare runs (2–4)", scale=4, elem_id="runs-compare")
        smooth = gr.Slider(0, 0.99, value=0.6, step=0.01, label="Curve smoothing", scale=2,
                           info="moving average; 0 = raw (long runs are also averaged into ≤500 points)")
    notes = gr.Markdown("", elem_id="runs-notes")
    plots: dict[str, gr.LinePlot] = {}
    with gr.Row(equal_height=False):
        for key in ("loss_d", "loss_g"):
            plots[key] = _plot(key)
    with gr.Row(equal_height=False):
        for key in ("d_real", "d_fake"):
            plots[key] = _plot(key)
    with gr.Accordion("Quality metrics", open=False):
        plots["metric"] = _plot("metric")
    with gr.Row(equal_height=True, elem_id="runs-grids"):
        grids = [gr.Image(None, interactive=False, visible=False, format="png", buttons=["download", "fullscreen"],
                          elem_id=f"runs-grid-{i}") for i in range(MAX_COMPARE)]
    with gr.Accordion("Settings side by side", open=True):
        only_diff = gr.Checkbox(False, label="Only the settings that differ")
        settings = gr.Dataframe(label="Settings (≠ = differs between the chosen runs; those come first)",
                                interactive=False, max_height=420, elem_id="runs-settings")

    with gr.Accordion("Manage a run", open=True):
        with gr.Row(equal_height=True):
            target = gr.Dropdown(run_names(root), value=None, label="Run", scale=3, elem_id="runs-target")
            explore_btn = gr.Button("Open in Explore", size="md", scale=1, visible=with_trainer,
                                    elem_id="runs-explore")
            steps = gr.Number(None, label="Resume to iteration", precision=0, scale=1,
                              info="0 or empty: the run's own steps", visible=with_trainer)
            resume_btn = gr.Button("Resume training", size="md", scale=1, visible=with_trainer,
                                   elem_id="runs-resume")
        with gr.Row(equal_height=True):
            new_name = gr.Textbox("", label="New name", scale=3, elem_id="runs-new-name")
            rename_btn = gr.Button("Rename…", size="md", scale=1, elem_id="runs-rename")
            delete_btn = gr.Button("Delete…", variant="stop", size="md", scale=1, elem_id="runs-delete")
        with gr.Row(equal_height=True, visible=with_trainer):
            branch_step = gr.Dropdown([], label="Branch at step", scale=1, elem_id="runs-branch-step",
                                      info="one of the run's saved steps")
            branch_set = gr.Textbox("", label="Changing", scale=3, elem_id="runs-branch-set",
                                    placeholder="lr_d=8e-4, loss=hinge",
                                    info="setting=value, …: learning rates, loss, D steps, EMA, R1, DiffAugment, "
                                         "batch size, … (the networks' shapes and the data stay the parent's)")
            branch_btn = gr.Button("Branch", size="md", scale=1, elem_id="runs-branch")
        with gr.Row(visible=False, equal_height=True) as confirm_row:
            question = gr.Markdown("", elem_id="runs-question")
            yes_btn = gr.Button("Confirm", variant="stop", size="md", scale=0, min_width=120, elem_id="runs-confirm")
            no_btn = gr.Button("Cancel", size="md", scale=0, min_width=120, elem_id="runs-cancel")
        message = gr.Markdown("", elem_id="runs-message")
    pending = gr.State({})

    def show(names: list[str] | None, smooth_value: float, only: bool):
        if names and len(names) > MAX_COMPARE:
            names = names[:MAX_COMPARE]
        view = compare(root, names, float(smooth_value or 0), bool(only))
        hint = "" if len(names or []) >= 2 else "Pick at least two runs to compare them."
        plot_updates = [gr.LinePlot(value=view[k] if len(view[k]) else None, caption=None) for k in plots]
        note = "\n\n".join(([hint] if hint else []) + view["notes"])
        pictures = [gr.Image(value=g[0], label=g[1], visible=True) for g in view["grids"]]
        pictures += [gr.Image(value=None, visible=False)] * (MAX_COMPARE - len(pictures))
        return [*plot_updates, *pictures, view["settings"], note]

    def restyle(names: list[str] | None, smooth_value: float, only: bool):
        # Gradio's plot keeps its first colour scale when only the data changes, so a run added later would
        # not be drawn: a second update of the caption and colours rebuilds each plot from its current data.
        names = [n for n in (names or [])][:MAX_COMPARE]
        colors = dict(zip(names, RUN_COLORS, strict=False))
        how = {k: "not smoothed" if k == "metric" else f"smoothing {float(smooth_value or 0):.2f}" for k in plots}
        return [gr.LinePlot(caption=" · ".join(names + [how[k]]) if names else "", color_map=colors or None)
                for k in plots]

    def refresh(names: list[str] | None, current: str | None):
        listed = listed_runs(studio)
        names_now = [r.name for r in listed]
        keep = [n for n in (names or []) if n in names_now]
        return (runs_table(listed), gr.Dropdown(choices=names_now, value=keep),
                gr.Dropdown(choices=names_now, value=current if current in names_now else None))

    # Reading a run's files is I/O and pure-Python parsing: one queue of its own, so a first look at a long
    # run never holds up the sliders (FAST) or the training controls; pictures use one torch thread (fast()).
    read = {"concurrency_id": "runs-read", "concurrency_limit": 1, **PRIVATE}
    cheap = {"concurrency_limit": None, **QUIET, **PRIVATE}
    control = {"concurrency_id": "train-control", "concurrency_limit": 1, **PRIVATE}  # the Train tab's queue
    view_inputs = [chosen, smooth, only_diff]
    view_outputs = [*plots.values(), *grids, settings, notes]
    plot_outputs = list(plots.values())
    for event in (chosen.change, smooth.release, only_diff.change):
        event(fast(show), view_inputs, view_outputs, **QUIET, **read).then(
            restyle, view_inputs, plot_outputs, **cheap)
    refresh_outputs = [table, chosen, target]
    refresh_btn.click(refresh, [chosen, target], refresh_outputs, **read)
    seen_runs = gr.State(None)
    timer = gr.Timer(REFRESH_S)
    timer.tick(lambda seen: poll(studio, seen), seen_runs, [seen_runs, table, chosen, target], **cheap)
    if isinstance(tab, gr.Tab):  # showing the tab shows the runs of now
        tab.select(lambda seen: poll(studio, seen), seen_runs, [seen_runs, table, chosen, target], **cheap)

    def on_ask_rename(name: str | None, new: str):
        p, q, visible = ask("rename", name, new)
        return p, (q if visible else ""), gr.Row(visible=visible), ("" if visible else q)

    def on_ask_delete(name: str | None):
        p, q, visible = ask("delete", name)
        return p, (q if visible else ""), gr.Row(visible=visible), ("" if visible else q)

    def on_confirm(p: dict, request: gr.Request) -> tuple[dict, gr.Row, str]:
        return {}, gr.Row(visible=False), confirm(studio, p, request)

    def on_resume(name: str | None, total: Any, request: gr.Request) -> str:
        return resume(studio, name, total, request)

    ask_outputs = [pending, question, confirm_row, message]
    rename_btn.click(on_ask_rename, [target, new_name], ask_outputs, **cheap)
    delete_btn.click(on_ask_delete, target, ask_outputs, **cheap)
    no_btn.click(lambda: ({}, gr.Row(visible=False), "Nothing changed."), None, [pending, confirm_row, message],
                 **cheap)
    yes_btn.click(on_confirm, pending, [pending, confirm_row, message], show_progress_on=message, **control).then(
        refresh, [chosen, target], refresh_outputs, **read).then(
        fast(show), view_inputs, view_outputs, **QUIET, **read).then(
        restyle, view_inputs, plot_outputs, **cheap)
    if with_trainer:
        if view is not None:
            def to_explore(name: str | None, v: dict | None):
                opened, note = open_in_explore(studio, name, v)
                shown = [gr.Tabs(selected=EXPLORE_TAB) if opened is not v else gr.skip()] if strip else []
                return (opened, note, *shown)

            explore_btn.click(fast(to_explore), [target, view], [view, message, *([strip] if strip else [])],
                              show_progress_on=message, **FAST, **PRIVATE)  # not the tab strip: see QUIET
        else:
            explore_btn.click(fast(lambda name: open_in_explore(studio, name)[1]), target, message, **FAST, **PRIVATE)
        resume_btn.click(on_resume, [target, steps], message, **control)

        def on_branch(name: str | None, step: Any, changes: str, request: gr.Request) -> str:
            return branch(studio, name, step, changes, request)

        def steps_of(name: str | None) -> gr.Dropdown:
            found = saved_steps(root, name)
            return gr.Dropdown(choices=found, value=found[0] if found else None)

        target.change(steps_of, target, branch_step, **cheap)
        branch_btn.click(on_branch, [target, branch_step, branch_set], message, **control).then(
            refresh, [chosen, target], refresh_outputs, **read)


def _plot(key: str) -> gr.LinePlot:
    _, title, y_title = PLOTS[key]
    y_lim = [0, 1] if y_title == "probability" else None
    return gr.LinePlot(None, x="iteration", y="value", color="series", label=title, y_title=y_title,
                       y_lim=y_lim, elem_id=f"runs-plot-{key.replace('_', '-')}")
