"""The Train tab's callbacks: each turns one click into one studio call and a message for the page. Errors
come back as lasting text naming the field and the button to press again, never as an exception that would
leave the controls in a strange state. Plain functions of their inputs, so tests call them without a browser.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import gradio as gr

from dcgan.branch import changes_text
from dcgan.checkpoint import STEP_FILE
from dcgan.config import ConfigError
from dcgan.images import grid_array, upscale
from dcgan.models import sample
from dcgan.studio import USER_ERRORS
from dcgan.trainer import ACTIVE, FINISHED, IDLE, PAUSED, RUNNING, STOPPED
from ui.common import OK, WARN, problem
from ui.state import Studio

LETTERS = "ABCD"  # the runs side by side, by lane (lane 0, the run shown in full, is A)
STEP_MODES = MappingProxyType({"both (D then G)": "both", "D only": "d", "G only": "g"})


def start(studio: Studio, values: dict[str, Any], zip_path: str | None = None, request: Any = None) -> str:
    """Start a run from the form; returns the message for the page (the previous run stays shown on error)."""
    try:
        studio.require_owner(request)
        cfg = studio.build_config(values, zip_path)
        studio.start(cfg)
    except USER_ERRORS as exc:
        return problem(exc)
    except MemoryError:
        return f"{WARN} **Out of memory** while loading the data: pick a smaller image size or data set."
    st = studio.trainer.status()
    return f"{OK} Started: {cfg.dataset}, {cfg.image_size}px, {cfg.steps:,} iterations on {st.device} ({st.precision})."


def _control(studio: Studio, request: Any, needed: str, action: str, done: str) -> str:
    try:
        studio.require_owner(request)
    except PermissionError as exc:
        return problem(exc)
    st = studio.trainer.status()
    if st.state != needed:
        return f"Nothing to {action}: the run is {st.state}."
    getattr(studio.trainer, action)()
    return done


def pause(studio: Studio, request: Any = None) -> str:
    return _control(studio, request, RUNNING, "pause",
                    "Paused. *Resume* continues; *Step* runs single iterations so you can watch each update.")


def resume(studio: Studio, steps: Any = None, device: str = "auto", request: Any = None) -> str:
    """Resume a paused run; a stopped or finished one continues from its newest checkpoint (to Steps)."""
    if studio.trainer.status().state not in (STOPPED, FINISHED):
        return _control(studio, request, PAUSED, "resume", "Resumed.")
    try:
        studio.require_owner(request)
        done, total = studio.continue_run(steps, device)
    except USER_ERRORS as exc:
        return problem(exc, again="Resume")
    return f"{OK} Continuing from iteration {done:,}; training to {total:,}."


def step(studio: Studio, k: Any, mode: str, request: Any = None) -> str:
    """Queue k single iterations (both, D only or G only); pauses a running run first."""
    try:
        studio.require_owner(request)
        if k is None:
            raise ConfigError("k", "enter how many iterations to step (1..10000)")
        update = STEP_MODES.get(mode, mode)
        studio.trainer.step(int(k), update)
    except (ValueError, PermissionError) as exc:
        return problem(exc, again="Step k")
    except RuntimeError as exc:
        return f"{WARN} {exc}."
    what = {"both": "D and G", "d": "only D", "g": "only G"}[update]
    return f"Stepping {int(k)} iteration(s) updating {what}; the run stays paused afterwards."


def stop(studio: Studio, request: Any = None) -> str:
    try:
        studio.require_owner(request)
    except PermissionError as exc:
        return problem(exc)
    st = studio.trainer.status()
    if st.state not in ACTIVE:
        return f"Nothing to stop: the run is {st.state}."
    studio.trainer.stop(wait=True)
    path = studio.trainer.last_checkpoint()
    return f"Stopped at iteration {studio.trainer.status().iteration:,}." + (f" Saved `{path.name}`." if path else "")


def reset(studio: Studio, request: Any = None) -> str:
    try:
        studio.require_owner(request)
        studio.trainer.reset()
    except USER_ERRORS as exc:
        return problem(exc)
    return "Reset: plots and pictures cleared (checkpoints on disk are kept)."


def resume_checkpoint(studio: Studio, name: str | None, steps: Any, device: str, request: Any = None) -> str:
    """Continue a saved run exactly where it stopped; Steps above its iteration extends it."""
    try:
        studio.require_owner(request)
        done, total = studio.resume(name, steps, device)
    except USER_ERRORS as exc:
        return problem(exc, again="Resume training")
    return f"{OK} Resumed `{name}` at iteration {done:,}; training to {total:,}."


def load_for_samples(studio: Studio, name: str | None, session: dict) -> tuple[dict, str]:
    """Pin a checkpoint's generator in this browser (New samples here and the Explore tab draw from it)."""
    try:
        if not name:
            raise ValueError("choose a checkpoint from the list first")
        model = studio.load_checkpoint(name)
    except USER_ERRORS as exc:
        return session, problem(exc, again="Load for samples")
    return dict(session, model=model), f"{OK} Loaded `{model.label}`: *New samples* and the Explore tab use it."


def zip_chosen(path: str | None) -> tuple[Any, Any, str]:
    """(file, data set, message) for an upload: a .zip selects the folder data set; anything else is refused in
    the page, where the message stays (not a toast that vanishes)."""
    if not path:
        return gr.skip(), gr.skip(), ""
    name = Path(path).name
    if not name.lower().endswith(".zip"):
        return None, gr.skip(), (f"{WARN} **Data set**: `{name}` is not a .zip. Put your images (PNG, JPEG, ...) "
                                 f"in a .zip, optionally one sub-folder per class, and upload that.")
    return gr.skip(), "folder", f"{OK} `{name}` uploaded: the data set is now *folder*; press *Start*."


def new_samples(studio: Studio, session: dict, seed: Any) -> tuple[Any, str]:
    """64 fresh samples from this browser's model."""
    model = studio.sampling_model((session or {}).get("model"))
    if model is None:
        return None, "No generator yet: start a run or load a checkpoint."
    seed = int(seed or 0) % 2**63
    images = sample(model.generator, 64, seed)
    return upscale(grid_array(images, nrow=8), 384), f"64 samples from **{model.label}**, seed {seed}."


def what_if(studio: Studio, question: str, lane: int = 0, request: Any = None) -> str:
    """Branch a live run at its current step with one of the common changes (dcgan.branch.WHAT_IF)."""
    try:
        studio.require_owner(request)
        new_lane, plan = studio.what_if(lane, question)
    except (RuntimeError, *USER_ERRORS) as exc:
        return problem(exc, again=question)
    return (f"{OK} Branched `{plan.parent}` at iteration {plan.step:,} ({changes_text(plan.changes)}) as "
            f"`{plan.cfg.run_name}`: run "
            f"{LETTERS[new_lane]} below, beside its parent.")


def lane_control(studio: Studio, lane: int, action: str, request: Any = None) -> str:
    """Pause, resume, step (one iteration, pausing first) or stop one of the runs shown side by side."""
    try:
        studio.require_owner(request)
        trainer = studio.trainer_of(lane)
    except USER_ERRORS as exc:
        return problem(exc)
    state = trainer.status().state
    if action == "pause" and state == RUNNING:
        trainer.pause()
    elif action == "resume" and state == PAUSED:
        trainer.resume()
    elif action == "step" and state in (RUNNING, PAUSED):
        trainer.step(1)
    elif action == "stop" and state in ACTIVE:
        trainer.stop(wait=True)
    else:
        return f"Nothing to {action}: run {LETTERS[lane]} is {state}."
    return f"Run {LETTERS[lane]}: {'one step, then ' if action == 'step' else ''}{trainer.status().state}."


def download_checkpoint(studio: Studio, request: Any = None) -> tuple[str | None, str]:
    """(file, message): the newest checkpoint of the run (Studio.checkpoint_to_download saves one when needed)."""
    trainer = studio.trainer
    st = trainer.status()
    try:
        path = studio.checkpoint_to_download(request)
    except (RuntimeError, PermissionError, *USER_ERRORS) as exc:
        return None, problem(exc)
    if path is None:
        if st.state == IDLE:
            return None, "No run yet: start training first."
        every = trainer.config.checkpoint_every if trainer.config else 0
        when = f"every {every:,} iterations" if every else "when it stops"
        return None, f"No checkpoint yet: the run saves {when}; pause it to save one now."
    step_file = STEP_FILE.match(path.name)
    at = f" (iteration {int(step_file.group(1)):,})" if step_file else ""
    return str(path), f"Checkpoint `{path.name}`{at}; continue it later with *Resume training*."
