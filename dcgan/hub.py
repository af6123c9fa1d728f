"""Share generators through the Hugging Face Hub, with huggingface_hub doing every request.

push: a checkpoint -> repo with model.safetensors + config.json (the Generator's PyTorchModelHubMixin),
a model card (README.md) with samples and loss curves, training_config.json, metrics.json and,
optionally, training_state.safetensors (the whole checkpoint) so training can resume from the Hub.
pull: repo (+ revision) -> Generator checked key by key and shape by shape against its config, and
the training state when there is one. Every failure becomes a HubError saying what to do; tokens
are passed to huggingface_hub only and never printed, logged or written anywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, constants, get_token, hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file

from . import card
from .checkpoint import CheckpointError, config_of, load_generator, load_module, read
from .config import ConfigError, TrainConfig
from .models import Generator

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAINING_CONFIG = "training_config.json"
TRAINING_STATE = "training_state.safetensors"
OPTIONAL_FILES = [TRAINING_STATE, "losses.png"]  # removed from the repo when a push does not write them
TENSORBOARD_DIR = "tensorboard"  # the run's event files, under tensorboard/<run>/: the Hub's "Training metrics" tab
GENERATOR_ARGS = ("nz", "ngf", "channels", "image_size", "num_classes")
REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]{0,95}/)?[A-Za-z0-9][\w.-]{0,95}$")
STARTUP_ENV = "DCGAN_STUDIO_MODEL"


class HubError(RuntimeError):
    """A push or pull that could not happen; the message says why and what to do."""


@dataclass
class PushResult:
    repo_id: str
    revision: str
    commit_url: str
    commit_oid: str
    files: list[str]

    @property
    def url(self) -> str:
        return self.commit_url.split("/commit/")[0]


@dataclass
class Pulled:
    repo_id: str
    revision: str  # what was asked for (branch, tag or commit)
    commit: str  # the commit it resolved to
    generator: Generator  # CPU, eval mode
    config: TrainConfig
    training_state: Path | None  # local file (in the HF cache) when the repo holds one

    @property
    def label(self) -> str:
        rev = "" if self.revision == "main" else f"@{self.revision}"
        return f"{self.repo_id}{rev} ({self.commit[:7]})"


# ---- errors -----------------------------------------------------------------------------------


def _is_offline(exc: BaseException) -> bool:
    """Connection refused / DNS failure / dropped connection / HF_HUB_OFFLINE, anywhere in the chain."""
    seen: BaseException | None = exc
    while seen is not None:
        kind = type(seen)
        if isinstance(seen, (OfflineModeIsEnabled, ConnectionError, TimeoutError, LocalEntryNotFoundError)):
            return True
        if kind.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "requests", "urllib3") and any(
                base.__name__ in ("TransportError", "ConnectionError", "ConnectError") for base in kind.__mro__):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def explain(exc: BaseException, repo_id: str, revision: str | None, token: str | None, action: str,
            endpoint: str | None = None) -> HubError:
    """One clear, token-free message for anything huggingface_hub raised."""
    endpoint = endpoint or constants.ENDPOINT
    rev = revision or "main"
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, RevisionNotFoundError):
        return HubError(f"{repo_id} has no branch, tag or commit {rev!r}: check the revision (default: main).")
    if isinstance(exc, GatedRepoError):
        return HubError(f"{repo_id} is gated: accept its conditions on the Hub with the account of your token.")
    if isinstance(exc, RepositoryNotFoundError):
        if token:
            return HubError(f"repo {repo_id} was not found on {endpoint}, or your token has no access to it: "
                            f"check the name (user/name) and the token's permissions.")
        return HubError(f"repo {repo_id} was not found on {endpoint}. If it is private, you need a token: set "
                        f"HF_TOKEN, run `hf auth login`, or paste a token in the Hub tab.")
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 401:
            return HubError(f"the Hub refused the token ({action} {repo_id}): it is invalid or expired; "
                            f"create a new one at https://huggingface.co/settings/tokens.")
        if status == 403 and action == "pull":
            return HubError(f"your token has no access to {repo_id}: ask its owner, or use a token that has.")
        if status == 403:
            return HubError(f"your token may not {action} {repo_id}: it needs 'write' permission and the repo "
                            f"must be in your namespace or an organisation you belong to.")
        if status == 404 and isinstance(exc, EntryNotFoundError):
            return HubError(f"{repo_id}@{rev} is missing a file: {exc.response.url.path.rsplit('/', 1)[-1]}.")
        server_message = exc.server_message or ""
        return HubError(f"the Hub answered {status} while trying to {action} {repo_id}: "
                        f"{server_message.strip() or 'no details'}.")
    if _is_offline(exc):
        return HubError(f"cannot reach the Hub at {endpoint} (offline or no network) to {action} {repo_id}. "
                        f"Check the connection (or HF_ENDPOINT / HF_HUB_OFFLINE) and try again; local checkpoints "
                        f"keep working meanwhile.")
    return HubError(f"could not {action} {repo_id}: {type(exc).__name__}: {exc}")


def check_repo_id(repo_id: str) -> str:
    repo_id = (repo_id or "").strip()
    if not REPO_ID.match(repo_id) or ".." in repo_id or repo_id.endswith(".git"):
        raise HubError(f"{repo_id!r} is not a repo id: use user/name (letters, digits, '-', '_', '.').")
    return repo_id


def resolve_token(token: str | bool | None = None) -> str | None:
    """An explicit token, else HF_TOKEN, else the cached `hf auth login` token, else None.
    token=False means anonymous (no fallback): a Space visitor must not borrow the owner's secret."""
    if token is False:
        return None
    return (token or "").strip() or get_token()


# ---- push ----------------------------------------------------------------------------------------


def stage_files(folder: Path, checkpoint: str | Path, repo_id: str, *, loss_rows: list[dict] | None = None,
                include_training_state: bool = False, license: str = "mit") -> list[str]:
    """Write everything a push uploads into folder; returns the file names."""
    G, cfg, meta = load_generator(checkpoint, ema=True)
    tensors, _ = read(checkpoint)
    sampler = "G_ema" if any(k.startswith("G_ema.") for k in tensors) else "G"
    G.save_pretrained(folder)  # model.safetensors + config.json (+ a generic README we replace)
    (folder / "samples.png").write_bytes(card.samples_png(G, cfg))
    saved = [{"iteration": r[0], "loss_d": r[1], "loss_g": r[2]} for r in meta.get("losses") or []]
    losses = card.loss_curve_png(loss_rows or saved)
    if losses is not None:
        (folder / "losses.png").write_bytes(losses)
    (folder / TRAINING_CONFIG).write_text(cfg.to_json() + "\n")
    (folder / "metrics.json").write_text(card.metrics_json(meta) + "\n")
    if include_training_state:
        shutil.copyfile(checkpoint, folder / TRAINING_STATE)
    from .tblog import event_files

    run_dir = Path(checkpoint).resolve().parent
    for events in event_files(run_dir):
        target = folder / TENSORBOARD_DIR / run_dir.name / events.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(events, target)
    (folder / "README.md").write_text(card.build_card(
        repo_id, G, cfg, meta, has_losses=losses is not None, has_training_state=include_training_state,
        license=license, sampler=sampler))
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def push(checkpoint: str | Path, repo_id: str, *, token: str | bool | None = None, private: bool = False,
         revision: str | None = None, commit_message: str | None = None, include_training_state: bool = False,
         loss_rows: list[dict] | None = None, license: str = "mit", endpoint: str | None = None) -> PushResult:
    """Upload a checkpoint's generator (and optionally its full training state) with a model card.

    revision: a branch, created from main when it does not exist yet. The whole upload is one commit.
    """
    repo_id = check_repo_id(repo_id)
    token = resolve_token(token)
    if not token:
        raise HubError("pushing needs a Hugging Face token with write access: set HF_TOKEN, run "
                       "`hf auth login`, or paste a token in the Hub tab.")
    try:
        read(checkpoint)
    except CheckpointError as exc:
        raise HubError(f"nothing was pushed: {exc}") from exc
    branch = (revision or "").strip() or None
    api = HfApi(endpoint=endpoint, token=token)
    try:
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        repo_id = url.repo_id
        if branch and branch != "main":
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="dcgan-push-") as tmp:
            files = stage_files(Path(tmp), checkpoint, repo_id, loss_rows=loss_rows,
                                include_training_state=include_training_state, license=license)
            info = api.upload_folder(
                repo_id=repo_id, folder_path=tmp, revision=branch,
                commit_message=commit_message or f"Upload DCGAN generator from {Path(checkpoint).name}",
                # a stale state, curve or older run's event files never outlive the push that replaced them
                delete_patterns=[f for f in OPTIONAL_FILES if f not in files] + [f"{TENSORBOARD_DIR}/**"])
    except Exception as exc:
        raise explain(exc, repo_id, branch, token, "push to", endpoint) from exc
    return PushResult(repo_id, branch or "main", info.commit_url, info.oid, files)


# ---- pull ------------------------------------------------------------------------------------


def _generator_from(config: dict[str, Any], weights: Path, where: str) -> Generator:
    """Build G from config.json and load weights strictly: every key present, every shape equal."""
    unknown = sorted(set(config) - set(GENERATOR_ARGS))
    missing = sorted(set(GENERATOR_ARGS) - set(config))
    if unknown or missing:
        raise HubError(f"{where} is not a DCGAN Studio generator (wrong architecture): config.json "
                       f"{'has unknown keys ' + str(unknown) if unknown else 'lacks ' + str(missing)}.")
    try:
        G = Generator(**{k: int(config[k]) for k in GENERATOR_ARGS})
    except (TypeError, ValueError) as exc:
        raise HubError(f"{where}: config.json describes a generator this version cannot build: {exc}") from exc
    try:
        tensors = load_file(weights)
    except (SafetensorError, OSError) as exc:
        raise HubError(f"{where}: model.safetensors is corrupt or truncated ({exc}).") from exc
    try:
        load_module(G, "G", {f"G.{k}": v for k, v in tensors.items()}, where)
    except CheckpointError as exc:
        raise HubError(f"wrong architecture: {exc}") from exc
    return G.eval()


def _check_same_generator(cfg: TrainConfig, config: dict[str, Any], what: str) -> None:
    for k in GENERATOR_ARGS:
        if getattr(cfg, k) != config.get(k):
            raise HubError(f"{what} disagrees with config.json on {k} ({getattr(cfg, k)} vs {config.get(k)}): "
                           f"the repo's files come from different models.")


def pull(repo_id: str, revision: str | None = None, *, token: str | bool | None = None, endpoint: str | None = None,
         cache_dir: str | Path | None = None) -> Pulled:
    """Download and check a generator (and its training state when present) from the Hub."""
    repo_id = check_repo_id(repo_id)
    revision = (revision or "").strip() or "main"
    token = resolve_token(token)
    api = HfApi(endpoint=endpoint, token=token or False)
    where = f"{repo_id}@{revision}"

    def fetch(name: str, commit: str) -> Path:
        return Path(hf_hub_download(repo_id, name, revision=commit, token=token or False,
                                    endpoint=endpoint, cache_dir=cache_dir))

    try:
        info = api.model_info(repo_id, revision=revision)
        commit = info.sha or revision
        names = {s.rfilename for s in info.siblings or []}
        if WEIGHTS not in names or CONFIG not in names:
            raise HubError(f"{where} is not a DCGAN Studio generator (wrong architecture): it has no "
                           f"{WEIGHTS} + {CONFIG} (files: {', '.join(sorted(names)) or 'none'}).")
        config_path, weights_path = fetch(CONFIG, commit), fetch(WEIGHTS, commit)
        train_cfg_path = fetch(TRAINING_CONFIG, commit) if TRAINING_CONFIG in names else None
        state_path = fetch(TRAINING_STATE, commit) if TRAINING_STATE in names else None
    except Exception as exc:
        raise explain(exc, repo_id, revision, token, "pull", endpoint) from exc

    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HubError(f"{where}: config.json is not valid JSON ({exc}).") from exc
    if not isinstance(config, dict):
        raise HubError(f"{where}: config.json is not a JSON object.")
    G = _generator_from(config, weights_path, where)
    if train_cfg_path is not None:
        try:
            cfg = TrainConfig.from_json(train_cfg_path.read_text())
        except ConfigError as exc:
            raise HubError(f"{where}: training_config.json is invalid ({exc}).") from exc
        _check_same_generator(cfg, config, "training_config.json")
    else:
        cfg = TrainConfig(**{k: int(config[k]) for k in GENERATOR_ARGS})
    if state_path is not None:
        try:
            _, meta = read(state_path)
            _check_same_generator(config_of(meta), config, TRAINING_STATE)
        except CheckpointError as exc:
            raise HubError(f"{where}: {TRAINING_STATE} cannot be used to resume: {exc}") from exc
    return Pulled(repo_id, revision, commit, G, cfg, state_path)


def save_training_state(state: str | Path | None, repo_id: str, out_dir: str | Path = "checkpoints") -> Path:
    """Copy a pulled training state into a run folder (out_dir/hub-<user>--<name>/step_XXXXXXXX.safetensors),
    the shape `python -m dcgan resume` and the Train tab expect."""
    if not state:
        raise HubError(f"{repo_id} holds only the generator: push it again with the training state "
                       f"included to resume training from the Hub.")
    _, meta = read(state)
    folder = Path(out_dir) / ("hub-" + check_repo_id(repo_id).replace("/", "--"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"step_{int(meta['iteration']):08d}.safetensors"
    shutil.copyfile(state, target)
    return target


def startup_repo() -> tuple[str, str | None] | None:
    """(repo_id, revision) from DCGAN_STUDIO_MODEL ("user/repo" or "user/repo@revision"), or None."""
    value = os.environ.get(STARTUP_ENV, "").strip()
    if not value:
        return None
    repo_id, _, revision = value.partition("@")
    return repo_id, revision or None
