"""Push and pull through huggingface_hub against a local Hub-compatible server (tests/hub_server.py).

The CLI runs in fresh processes with HF_ENDPOINT pointing at the server (huggingface_hub reads it at
import time); in-process calls pass endpoint= explicitly. Every test also feeds the token-leak
check at the end: no output, file, repo file, server log or page may contain the token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from PIL import Image
from safetensors.torch import save_file

from dcgan import hub
from dcgan.card import sample_grid
from dcgan.checkpoint import load_generator, read, save_training
from dcgan.images import upscale
from dcgan.models import Generator
from dcgan.train import GANTraining
from tests.conftest import free_port, tiny_config
from tests.hub_server import HubServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_TESTtokenALICE0123456789abcdef"  # alice's write token
BOB_TOKEN = "hf_TESTtokenBOB0123456789abcdefgh"
SEEN: list[str] = []  # every output and message the tests saw, for the leak check


@pytest.fixture(scope="module")
def server():
    with HubServer(tokens={TOKEN: "alice", BOB_TOKEN: "bob"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """HF_HOME for this module: an empty cache and no cached login."""
    return tmp_path_factory.mktemp("hf_home")


@pytest.fixture(autouse=True)
def isolated_hf(home, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(home / "token"))


def run_cli(args: list[str], server: HubServer, home: Path, token: str | None = None, cwd: Path | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(home), HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=str(ROOT), HF_HUB_ETAG_TIMEOUT="5")
    if token:
        env["HF_TOKEN"] = token
    proc = subprocess.run([sys.executable, "-m", "dcgan", *args], capture_output=True, text=True, env=env,
                          cwd=cwd or ROOT, timeout=120)
    SEEN.extend([proc.stdout, proc.stderr])
    return proc


def small_checkpoint(path: Path, **changes) -> Path:
    """A few steps of a tiny model: enough to have distinct weights."""
    cfg = tiny_config(steps=3, **changes)
    run = GANTraining(cfg)
    for _ in range(cfg.steps):
        run.train_step()
    return save_training(run, path)


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(hub.HubError) as info:
        fn(*args, **kwargs)
    SEEN.append(str(info.value))
    return str(info.value)


def test_push_cli_then_pull_in_fresh_process_gives_identical_samples(server, home, tmp_path, trained_checkpoint):
    pushed = run_cli(["push", str(trained_checkpoint), "alice/digits", "--training-state",
                      "--message", "first digits model"], server, home, token=TOKEN)
    assert pushed.returncode == 0, pushed.stderr
    assert "pushed digits.safetensors to alice/digits (main)" in pushed.stdout

    fresh = tmp_path / "fresh_home"  # a new process with an empty cache and no token (public repo)
    pulled = run_cli(["pull", "alice/digits", "--samples", str(tmp_path / "pulled.png"),
                      "--out-dir", str(tmp_path / "ckpts")], server, fresh, cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    G, cfg, _ = load_generator(trained_checkpoint)
    local = upscale(sample_grid(G, cfg), 512)
    remote = np.asarray(Image.open(tmp_path / "pulled.png"))
    assert remote.shape == local.shape and np.array_equal(remote, local)

    # the full training state came along, byte for byte, where `dcgan resume` finds it
    state = tmp_path / "ckpts" / "hub-alice--digits" / "step_00000300.safetensors"
    assert state.read_bytes() == Path(trained_checkpoint).read_bytes()
    assert f"python -m dcgan resume {state.parent}" in pulled.stdout

    # three lines outside the app: Generator.from_pretrained, in another fresh process
    script = ("import torch; from dcgan.models import Generator\n"
              "G = Generator.from_pretrained('alice/digits')\n"
              "torch.manual_seed(0); print(G(torch.randn(4, G.nz)).sum().item(), G.training)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "home3"), PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    torch.manual_seed(0)
    expected = G(torch.randn(4, G.nz)).sum().item()
    value, training = out.stdout.split()
    assert float(value) == pytest.approx(expected, abs=1e-5) and training == "False"


def test_model_card_carries_metadata_images_config_and_usage(server, home, trained_checkpoint):
    rows = [{"iteration": i, "loss_d": 1.4 - i / 500, "loss_g": 0.7 + i / 400} for i in range(1, 301)]
    result = hub.push(trained_checkpoint, "alice/card-test", token=TOKEN, endpoint=server.url, loss_rows=rows,
                      license="apache-2.0")
    assert {"README.md", "config.json", "model.safetensors", "samples.png", "losses.png",
            "training_config.json", "metrics.json"} <= set(result.files)
    assert "training_state.safetensors" not in result.files

    def fetch(name: str) -> Path:
        return Path(hf_hub_download("alice/card-test", name, endpoint=server.url, cache_dir=home / "c1"))

    card = ModelCard.load(fetch("README.md"))
    assert card.data.library_name == "dcgan-studio"
    assert {"gan", "dcgan", "pytorch", "unconditional-image-generation"} <= set(card.data.tags)
    assert card.data.datasets == ["ylecun/mnist"]
    assert card.data.license == "apache-2.0"
    assert "![64 samples" in card.text and "(samples.png)" in card.text and "(losses.png)" in card.text
    assert 'Generator.from_pretrained("alice/card-test")' in card.text
    assert "300 iterations" in card.text
    _, cfg, meta = load_generator(trained_checkpoint)
    assert cfg.to_json() in card.text
    assert json.loads(fetch("training_config.json").read_text()) == cfg.to_dict()
    assert json.loads(fetch("metrics.json").read_text())["iteration"] == meta["iteration"] == 300
    for name, min_side in (("samples.png", 512), ("losses.png", 200)):
        with Image.open(fetch(name)) as im:
            im.load()
            assert im.format == "PNG" and min(im.size) >= min_side
    samples = np.asarray(Image.open(fetch("samples.png")).convert("L"), dtype=float)
    assert samples.std() > 20  # a real grid of digits, not a blank picture
    assert json.loads(fetch("config.json").read_text()) == {"nz": 100, "ngf": 32, "channels": 1,
                                                           "image_size": 28, "num_classes": 0}


def test_trainer_checkpoints_carry_the_loss_curve_into_the_card(server, tmp_path):
    """A run of the background trainer keeps its loss rows in the checkpoint, so a CLI push has the curve."""
    from dcgan.train import load_training
    from dcgan.trainer import Trainer

    trainer = Trainer()
    trainer.start(tiny_config(steps=12, out_dir=str(tmp_path), run_name="curve"))
    assert trainer.wait(60) == "finished"
    path = trainer.last_checkpoint()
    _, meta = read(path)
    assert [r[0] for r in meta["losses"]] == list(range(1, 13))
    assert load_training(path).loss_log == meta["losses"]  # kept across resume
    result = hub.push(path, "alice/curve", token=TOKEN, endpoint=server.url)
    assert "losses.png" in result.files


def test_push_uploads_the_runs_event_files_for_the_hubs_metrics_tab(server, home, tmp_path, trained_checkpoint):
    """The run folder's TensorBoard files go along (tensorboard/<run>/), readable with TensorBoard's reader;
    a later push of another run replaces them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dcgan.trainer import Trainer

    trainer = Trainer()
    trainer.start(tiny_config(steps=6, out_dir=str(tmp_path), run_name="tb-run", ngf=8, ndf=8, batch_size=16))
    assert trainer.wait(60) == "finished"
    local = sorted(p.name for p in (tmp_path / "tb-run").glob("events.out.tfevents.*"))
    assert local
    result = hub.push(trainer.last_checkpoint(), "alice/tb", token=TOKEN, endpoint=server.url)
    pushed = [f"tensorboard/tb-run/{name}" for name in local]
    assert set(pushed) <= set(result.files)
    api = HfApi(endpoint=server.url, token=TOKEN)
    assert set(pushed) <= set(api.list_repo_files("alice/tb", revision=result.commit_oid))
    fetched = [hf_hub_download("alice/tb", name, endpoint=server.url, cache_dir=home / "tb") for name in pushed]
    ea = EventAccumulator(str(Path(fetched[0]).parent), size_guidance={"scalars": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars("loss/D")] == list(range(1, 7))
    assert ea.Tags()["images"] == ["samples/fixed_noise"]

    other = hub.push(trained_checkpoint, "alice/tb", token=TOKEN, endpoint=server.url)  # a run without logs
    assert not any(f.startswith("tensorboard/") for f in api.list_repo_files("alice/tb", revision=other.commit_oid))


def test_branches_and_commits_are_separate_revisions(server, home, tmp_path, trained_checkpoint):
    hub.push(trained_checkpoint, "alice/revs", token=TOKEN, endpoint=server.url)
    other = small_checkpoint(tmp_path / "other.safetensors", ngf=8, nz=16, seed=5)
    on_branch = hub.push(other, "alice/revs", token=TOKEN, endpoint=server.url, revision="experiment",
                         commit_message="smaller model", include_training_state=True)
    assert on_branch.revision == "experiment"

    main = hub.pull("alice/revs", endpoint=server.url, cache_dir=home / "c2")
    exp = hub.pull("alice/revs", "experiment", endpoint=server.url, cache_dir=home / "c2")
    assert (main.config.ngf, main.training_state) == (32, None)
    assert (exp.config.ngf, exp.config.nz) == (8, 16) and exp.training_state is not None
    by_commit = hub.pull("alice/revs", on_branch.commit_oid, endpoint=server.url, cache_dir=home / "c2")
    assert by_commit.commit == exp.commit == on_branch.commit_oid
    G, _, _ = load_generator(other)
    for k, v in G.state_dict().items():
        assert torch.equal(v, by_commit.generator.state_dict()[k])
    # pushing main again without the state removes a stale one, so main never resumes the wrong weights
    hub.push(other, "alice/revs", token=TOKEN, endpoint=server.url, revision="experiment")
    assert hub.pull("alice/revs", "experiment", endpoint=server.url, cache_dir=home / "c2").training_state is None
    assert "no branch, tag or commit 'nope'" in error_of(hub.pull, "alice/revs", "nope", endpoint=server.url,
                                                         cache_dir=home / "c2")


def test_every_failure_path_says_what_happened(server, home, tmp_path, trained_checkpoint):
    url = server.url
    assert "not found" in error_of(hub.pull, "alice/does-not-exist", endpoint=url, token=False)
    # private repo: invisible without a token, and without the owner's token; fine with it
    hub.push(trained_checkpoint, "alice/secret", token=TOKEN, endpoint=url, private=True)
    msg = error_of(hub.pull, "alice/secret", endpoint=url, token=False, cache_dir=home / "c3")
    assert "private" in msg and "HF_TOKEN" in msg
    assert "no access" in error_of(hub.pull, "alice/secret", endpoint=url, token=BOB_TOKEN, cache_dir=home / "c3")
    assert hub.pull("alice/secret", endpoint=url, token=TOKEN, cache_dir=home / "c3").config.ngf == 32
    # push: no token, a bad token, someone else's namespace, a broken checkpoint, a bad repo id
    assert "needs a Hugging Face token" in error_of(hub.push, trained_checkpoint, "alice/x", endpoint=url)
    assert "refused the token" in error_of(hub.push, trained_checkpoint, "alice/x", token="hf_wrong", endpoint=url)
    assert "may not push to bob/x" in error_of(hub.push, trained_checkpoint, "bob/x", token=TOKEN, endpoint=url)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(Path(trained_checkpoint).read_bytes()[:5000])
    assert "nothing was pushed" in error_of(hub.push, broken, "alice/x", token=TOKEN, endpoint=url)
    assert "not a repo id" in error_of(hub.pull, "../etc", endpoint=url)
    # offline: nothing listens on the port
    dead = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach the Hub" in error_of(hub.pull, "alice/secret", endpoint=dead, token=False,
                                              cache_dir=tmp_path / "c4")
    assert "cannot reach the Hub" in error_of(hub.push, trained_checkpoint, "alice/y", token=TOKEN, endpoint=dead)

    # wrong architecture: another model's config, and right config with wrong shapes
    api = HfApi(endpoint=url, token=TOKEN)
    api.create_repo("alice/not-dcgan")
    folder = tmp_path / "foreign"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"hidden_size": 768, "num_layers": 12}))
    save_file({"w": torch.zeros(3)}, folder / "model.safetensors")
    api.upload_folder(repo_id="alice/not-dcgan", folder_path=folder)
    assert "wrong architecture" in error_of(hub.pull, "alice/not-dcgan", endpoint=url, cache_dir=home / "c5")
    (folder / "config.json").write_text(json.dumps({"nz": 100, "ngf": 64, "channels": 1, "image_size": 28,
                                                    "num_classes": 0}))
    Generator(100, 32, 1, 28).save_pretrained(tmp_path / "g32")  # ngf 32 weights under an ngf 64 config
    (folder / "model.safetensors").write_bytes((tmp_path / "g32" / "model.safetensors").read_bytes())
    api.upload_folder(repo_id="alice/not-dcgan", folder_path=folder)
    msg = error_of(hub.pull, "alice/not-dcgan", endpoint=url, cache_dir=home / "c5")
    assert "wrong architecture" in msg and "shape" in msg
    api.create_repo("alice/empty")
    assert "has no model.safetensors" in error_of(hub.pull, "alice/empty", endpoint=url, cache_dir=home / "c5")

    # the CLI prints the same messages and a non-zero status, no traceback
    proc = run_cli(["pull", "alice/secret"], server, tmp_path / "h6")
    assert proc.returncode == 2 and "private" in proc.stderr and "Traceback" not in proc.stderr


def test_startup_model_from_env(server, home, monkeypatch, trained_checkpoint, tmp_path):
    from ui.hub_tab import load_startup_model
    from ui.state import Studio

    hub.push(trained_checkpoint, "alice/startup", token=TOKEN, endpoint=server.url)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", server.url)  # as if HF_ENDPOINT was set at import
    monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    studio = Studio(tmp_path / "ck")
    monkeypatch.setenv("DCGAN_STUDIO_MODEL", "alice/startup@main")
    assert "Loaded alice/startup" in load_startup_model(studio)
    assert studio.loaded_model().config.ngf == 32
    monkeypatch.setenv("DCGAN_STUDIO_MODEL", "alice/missing")
    assert "Could not load" in load_startup_model(Studio(tmp_path / "ck"))  # reported, never raised


def test_ui_push_and_pull_never_show_the_token(server, home, monkeypatch, tmp_path, trained_checkpoint):
    """The Hub tab's handlers, through a real Gradio server: results, page and config hold no token."""
    import urllib.request

    import gradio as gr
    from gradio_client import Client

    from ui import hub_tab
    from ui.state import Studio

    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", server.url)
    monkeypatch.setattr("huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE",
                        server.url + "/{repo_id}/resolve/{revision}/{filename}")
    studio = Studio(tmp_path / "checkpoints")
    run_dir = tmp_path / "checkpoints" / "digits-run"
    run_dir.mkdir(parents=True)
    (run_dir / "step_00000300.safetensors").write_bytes(Path(trained_checkpoint).read_bytes())
    with gr.Blocks() as demo, gr.Tab("Hub"):
        hub_tab.build(studio)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        pushed = client.predict("digits-run/step_00000300.safetensors", "alice/from-ui", True, "ui-branch",
                                "from the UI", True, "mit", TOKEN, api_name="/push")
        assert "Pushed" in pushed and "alice/from-ui" in pushed, pushed
        text, grid, *_ = client.predict("alice/from-ui", "ui-branch", TOKEN, api_name="/pull")
        assert "Pulled" in text and "training state" in text and grid
        assert studio.loaded_model().label.startswith("alice/from-ui@ui-branch")
        denied = client.predict("alice/from-ui", "", "", api_name="/pull")[0]  # private, no token typed
        assert "⚠" in denied and "private" in denied
        pages = [urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=10).read().decode()
                 for p in ("/", "/config")]
        SEEN.extend([pushed, text, denied, *pages])
    finally:
        demo.close()


def test_no_public_endpoint_takes_a_secret(tmp_path):
    """Gradio records the inputs of public endpoints in its run history (/gradio_api/runs) and lists them in
    the API docs: every event of the whole app that reads a password box must be undocumented."""
    import gradio as gr

    import app
    from ui.state import Studio

    demo = app.build_app(Studio(tmp_path))
    secret_events = [fn for fn in demo.fns.values()
                     if any(isinstance(b, gr.Textbox) and b.type == "password" for b in fn.inputs)]
    assert len(secret_events) >= 2  # push and pull (unlock too on a Space)
    for fn in secret_events:
        assert fn.api_visibility != "public", fn.api_name


def test_token_never_leaks(server, home, tmp_path_factory):
    """Runs last in this module: no output, message, page, written file, repo file or server log has it."""
    assert SEEN, "the other tests must run first"
    for text in SEEN:
        assert TOKEN not in text and BOB_TOKEN not in text
    for line in server.log:
        assert TOKEN not in line
    for repo in server.repos.values():
        for files in repo.commits.values():
            for name, content in files.items():
                assert TOKEN.encode() not in content, name
    roots = [home, tmp_path_factory.getbasetemp()]
    checked = 0
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert TOKEN.encode() not in path.read_bytes(), path
                checked += 1
    assert checked > 10
    tensors, meta = read(next(Path(tmp_path_factory.getbasetemp()).rglob("step_00000300.safetensors")))
    assert TOKEN not in json.dumps(meta)


def test_from_pretrained_is_strict_about_the_architecture(tmp_path):
    """Generator.from_pretrained never half-loads: weights that do not fit config.json raise."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    from dcgan.models import Generator

    G = Generator(nz=16, ngf=8, channels=1, image_size=28).eval()
    G.save_pretrained(tmp_path / "good")
    again = Generator.from_pretrained(tmp_path / "good")
    z = torch.randn(4, 16)
    assert torch.equal(again(z), G(z))

    (tmp_path / "wider").mkdir()
    G.save_pretrained(tmp_path / "wider")
    config = json.loads((tmp_path / "wider" / "config.json").read_text())
    (tmp_path / "wider" / "config.json").write_text(json.dumps({**config, "ngf": 16}))
    with pytest.raises(RuntimeError, match="size|shape"):
        Generator.from_pretrained(tmp_path / "wider")

    G.save_pretrained(tmp_path / "missing")
    weights = load_file(tmp_path / "missing" / "model.safetensors")
    del weights["net.0.weight"]
    save_file(weights, tmp_path / "missing" / "model.safetensors")
    with pytest.raises(RuntimeError, match="net.0.weight"):
        Generator.from_pretrained(tmp_path / "missing")
