"""Hub tab: push a checkpoint to the Hugging Face Hub, pull a generator into Explore or resume its
training, and (on a public Space) unlock the training controls with the owner password.

The handlers are plain functions of the studio so tests call them without a browser; build() only
wires them to components. A typed token goes to huggingface_hub and nowhere else: no handler
returns it, logs it or stores it. On a Space, the Space's own HF_TOKEN secret is only used for
the owner, so a visitor can never push with it or read the owner's private repos through it.
"""

from __future__ import annotations

import os
import sys
from types import MappingProxyType
from typing import Any

import gradio as gr

from dcgan import hub
from dcgan.card import sample_grid
from dcgan.checkpoint import CheckpointError
from dcgan.config import ConfigError
from dcgan.data import DatasetError
from dcgan.images import upscale
from dcgan.trainer import TrainerBusy
from ui import access
from ui.common import OK, PRIVATE, WARN
from ui.state import Studio

# Events whose inputs hold a token or password stay out of the API docs and out of Gradio's run history
# (which saves the inputs of public endpoints and shows them again at /gradio_api/runs).
SECRET = MappingProxyType({"api_visibility": "undocumented"})
LICENSES = ("mit", "apache-2.0", "cc-by-4.0", "cc-by-nc-4.0", "openrail", "other")


def _token_for(studio: Studio, typed: str | None, request: Any) -> str | bool | None:
    """The typed token; else, for the owner, HF_TOKEN / the cached login (None); else anonymous (False)."""
    typed = (typed or "").strip()
    if typed:
        return typed
    return None if studio.access.is_owner(request) else False


def problem(message: str) -> str:
    return f"{WARN} {message}"


def checkpoint_choices(studio: Studio) -> list[str]:
    return studio.list_checkpoints()


def _loss_rows(studio: Studio, path) -> list[dict] | None:
    """The live run's loss rows when the checkpoint belongs to it (a checkpoint's own rows otherwise)."""
    run_dir = studio.trainer.status().run_dir
    if run_dir and path.parent.resolve() == os.path.realpath(run_dir):
        return studio.trainer.metrics.since(0)
    return None


def push_action(studio: Studio, checkpoint: str, repo_id: str, private: bool, branch: str, message: str,
                include_state: bool, license: str, token: str | None, request: Any = None) -> str:
    """Push one checkpoint; owner-only on a Space (it publishes under the owner's name)."""
    try:
        studio.require_owner(request)
    except access.AccessDenied as exc:
        return problem(exc.message)
    if not checkpoint:
        return problem("Choose a checkpoint to push (train a run first, or press ↻ to refresh the list).")
    try:
        path = studio.resolve_checkpoint(checkpoint)
        result = hub.push(path, repo_id, token=_token_for(studio, token, request), private=private, revision=branch,
                          commit_message=message or None, include_training_state=include_state,
                          loss_rows=_loss_rows(studio, path), license=license or "mit")
    except (hub.HubError, ValueError) as exc:
        return problem(str(exc))
    state = " with the full training state" if include_state else ""
    link = result.url if result.revision == "main" else f"{result.url}/tree/{result.revision}"
    return (f"{OK} Pushed `{checkpoint}`{state} to [{result.repo_id}]({link}) "
            f"(branch `{result.revision}`, commit `{result.commit_oid[:10]}`): {', '.join(result.files)}.")


def pull_action(studio: Studio, repo_id: str, revision: str, token: str | None, session: dict | None = None,
                request: Any = None) -> tuple[str, Any, dict[str, str], Any, Any]:
    """Pull a generator into this browser's Explore tab (no other visitor's); returns (message, sample grid,
    {repo, state}, resume button, this browser's view state)."""
    try:
        pulled = hub.pull(repo_id, revision, token=_token_for(studio, token, request))
    except hub.HubError as exc:
        return problem(str(exc)), None, {}, gr.update(interactive=False), gr.skip()
    model = studio.add_pulled(pulled)
    cfg = pulled.config
    resumable = pulled.training_state is not None
    text = (f"{OK} Pulled **{pulled.label}**: {cfg.image_size}×{cfg.image_size}, {cfg.channels} channel(s), "
            f"nz={cfg.nz}{f', {cfg.num_classes} classes' if cfg.num_classes else ''}, trained on {cfg.dataset}. "
            f"Open the Explore tab to explore it (in this browser only)."
            + (" The repo holds the full training state: **Resume training** continues it." if resumable else
               " The repo holds the generator only (no training state to resume)."))
    grid = upscale(sample_grid(pulled.generator, cfg), 512)
    state = {"repo": pulled.repo_id, "state": str(pulled.training_state or "")}
    return text, grid, state, gr.update(interactive=resumable), dict(session or {}, model=model)


def resume_action(studio: Studio, pulled: dict[str, str], request: Any = None) -> str:
    """Continue the pulled training state in the shared trainer (Studio.resume_pulled)."""
    try:
        studio.require_owner(request)
    except access.AccessDenied as exc:
        return problem(exc.message)
    if not (pulled or {}).get("state"):
        return problem("Pull a repo that holds a training state first.")
    try:
        iteration = studio.resume_pulled(pulled["state"], pulled["repo"])
    except (hub.HubError, CheckpointError, TrainerBusy, ConfigError, DatasetError, OSError) as exc:
        return problem(str(exc))
    return f"{OK} Resuming {pulled['repo']} at iteration {iteration}: follow it in the Train tab."


def unlock_action(studio: Studio, password: str, request: Any = None) -> tuple[str, str]:
    """Check the owner password for this browser session; the field is cleared either way."""
    if not access.on_space():
        return studio.access.describe(request), ""
    if not access.password_configured():
        return problem(f"No owner password is set: add the secret {access.PASSWORD_ENV} in the Space settings "
                       f"(or log in with Hugging Face as the owner)."), ""
    if studio.access.unlock(request, password or ""):
        return f"{OK} " + studio.access.describe(request), ""
    return problem("Wrong password. Training controls stay locked; sampling and exploring are open."), ""


def load_startup_model(studio: Studio) -> str:
    """Pull the repo named in DCGAN_STUDIO_MODEL ("user/repo[@revision]"), once at start-up: the model every
    new browser starts exploring. Never raises: a Space must come up even when the Hub is unreachable; the
    message says what happened."""
    named = hub.startup_repo()
    if named is None:
        return ""
    repo_id, revision = named
    try:
        pulled = hub.pull(repo_id, revision)
    except hub.HubError as exc:
        message = f"Could not load {hub.STARTUP_ENV}={repo_id}: {exc}"
        print(message, file=sys.stderr)
        return problem(message)
    studio.default_model = studio.add_pulled(pulled)
    return f"{OK} Loaded {pulled.label} at start-up ({hub.STARTUP_ENV}): explore it in the Explore tab."


def build(studio: Studio, view: gr.State | None = None) -> None:
    """The Hub tab's components and events (called inside `with gr.Tab("Hub")`); `view` is the browser's
    view state shared with Explore (a private one when none is given)."""
    session = view if view is not None else gr.State({"model": None})
    startup = load_startup_model(studio)
    gr.Markdown("Share generators through the Hugging Face Hub, and pull models others trained. "
                "The token is used for this request only: it is never shown, logged or saved. "
                "Leave it empty to use `HF_TOKEN` or your `hf auth login`.")
    if access.on_space():
        with gr.Accordion("Owner access", open=not studio.access.is_owner(None)):
            access_status = gr.Markdown(studio.access.describe(None), elem_id="hub-access-status")
            if os.environ.get("OAUTH_CLIENT_ID"):
                gr.LoginButton()
            with gr.Row():
                password = gr.Textbox(label="Owner password", type="password", scale=3,
                                      elem_id="hub-owner-password")
                unlock = gr.Button("Unlock training", scale=1, elem_id="hub-unlock")

        def do_unlock(value: str, request: gr.Request) -> tuple[str, str]:
            return unlock_action(studio, value, request)

        unlock.click(do_unlock, [password], [access_status, password], api_name="unlock", **SECRET)
        password.submit(do_unlock, [password], [access_status, password], **SECRET)
    token = gr.Textbox(label="Hugging Face token (optional)", type="password", placeholder="hf_…",
                       elem_id="hub-token")
    with gr.Row(equal_height=False):
        with gr.Column():
            gr.Markdown("### Push a checkpoint")
            with gr.Row():
                checkpoint = gr.Dropdown(checkpoint_choices(studio), label="Checkpoint", scale=4,
                                         elem_id="hub-checkpoint", elem_classes=["checkpoint-list"])
                refresh = gr.Button("↻", scale=0, min_width=40)  # U+21BB: in DejaVu Sans, not an emoji
            repo = gr.Textbox(label="Repo id", placeholder="your-name/dcgan-digits", elem_id="hub-push-repo")
            with gr.Row():
                branch = gr.Textbox(label="Branch", placeholder="main", elem_id="hub-push-branch")
                private = gr.Checkbox(label="Private repo", value=False)
            message = gr.Textbox(label="Commit message", placeholder="Upload DCGAN generator")
            with gr.Row():
                include_state = gr.Checkbox(label="Include the full training state (resume from the Hub)",
                                            value=False)
                license = gr.Dropdown(list(LICENSES), value="mit", label="License")
            push = gr.Button("Push to the Hub", variant="primary", elem_id="hub-push")
            push_status = gr.Markdown(elem_id="hub-push-status")
        with gr.Column():
            gr.Markdown("### Pull a generator")
            pull_repo = gr.Textbox(label="Repo id", placeholder="user/dcgan-digits", elem_id="hub-pull-repo")
            revision = gr.Textbox(label="Revision (branch, tag or commit)", placeholder="main",
                                  elem_id="hub-pull-revision")
            with gr.Row():
                pull = gr.Button("Pull into Explore", variant="primary", elem_id="hub-pull")
                resume = gr.Button("Resume training", interactive=False, elem_id="hub-resume")
            pull_status = gr.Markdown(startup, elem_id="hub-pull-status")
            grid = gr.Image(label="Samples (seed 0)", type="numpy", interactive=False, height=320)
            pulled = gr.State({})

    refresh.click(lambda: gr.update(choices=checkpoint_choices(studio)), None, checkpoint, **PRIVATE)

    def do_push(ckpt, repo_id, priv, br, msg, inc, lic, tok, request: gr.Request):
        return push_action(studio, ckpt, repo_id, priv, br, msg, inc, lic, tok, request)

    def do_pull(repo_id, rev, tok, view, request: gr.Request):
        return pull_action(studio, repo_id, rev, tok, view, request)

    def do_resume(pulled_now, request: gr.Request):
        return resume_action(studio, pulled_now, request)

    push.click(do_push, [checkpoint, repo, private, branch, message, include_state, license, token], push_status,
               api_name="push", concurrency_limit=1, **SECRET)
    pull.click(do_pull, [pull_repo, revision, token, session], [pull_status, grid, pulled, resume, session],
               api_name="pull", concurrency_limit=2, **SECRET)
    resume.click(do_resume, [pulled], pull_status, api_name="resume_from_hub", concurrency_limit=1)
