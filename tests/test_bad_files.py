"""Bad checkpoint files each get their own message; pickles are never unpickled unsafely.

Also the pytorch/examples import: a `netG_epoch_*.pth` state dict gives the very same images,
and a malicious pickle runs nothing.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dcgan import __main__ as cli
from dcgan.checkpoint import CheckpointError, RunFolder, encode, load_generator, read, save_training
from dcgan.models import sample
from dcgan.pth_import import import_pth
from dcgan.train import GANTraining, load_training
from tests.conftest import tiny_config


@pytest.fixture(scope="module")
def good(tmp_path_factory, digits_data) -> Path:
    run = GANTraining(tiny_config(), digits_data)
    run.train_step()
    return save_training(run, tmp_path_factory.mktemp("good") / "good.safetensors")


def rewrite_meta(src: Path, dest: Path, change) -> Path:
    tensors, meta = read(src)
    change(meta)
    dest.write_bytes(encode(tensors, meta))
    return dest


def bad_files(good: Path, tmp: Path) -> dict[str, Path]:
    data = good.read_bytes()
    files = {
        "corrupt": tmp / "corrupt.safetensors",
        "truncated": tmp / "truncated.safetensors",
        "empty": tmp / "empty.safetensors",
        "not ours": tmp / "other.safetensors",
        "pickle": tmp / "renamed-pickle.safetensors",
        "pth": tmp / "weights.pth",
        "missing": tmp / "missing.safetensors",
    }
    files["corrupt"].write_bytes(os.urandom(4096))
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["empty"].write_bytes(b"")
    save_file({"w": torch.zeros(3)}, str(files["not ours"]))
    torch.save({"w": torch.zeros(3)}, files["pickle"])
    torch.save({"w": torch.zeros(3)}, files["pth"])
    files["future format"] = rewrite_meta(good, tmp / "future.safetensors",
                                          lambda m: m.update(format_version=m["format_version"] + 1))
    files["wrong architecture"] = rewrite_meta(good, tmp / "wrong-arch.safetensors",
                                               lambda m: m["config"].update(ngf=m["config"]["ngf"] * 2))
    files["bad config"] = rewrite_meta(good, tmp / "bad-config.safetensors",
                                       lambda m: m["config"].update(lr_g=-1))
    return files


EXPECTED = {
    "corrupt": "is corrupt or truncated",
    "truncated": "is corrupt or truncated",
    "empty": "is empty (0 bytes): the save was interrupted",
    "not ours": "not a DCGAN Studio checkpoint (no dcgan_studio metadata)",
    "pickle": "is a pickle / torch.save file, not safetensors; it was not opened",
    "pth": "is a pickle-based PyTorch file",
    "missing": "does not exist",
    "future format": "was written by a newer DCGAN Studio",
    "wrong architecture": "has shape (32, 32, 7, 7) in the checkpoint but (32, 64, 7, 7) in this architecture",
    "bad config": "training config is invalid: lr_g",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_bad_checkpoint_gets_its_own_message(good, tmp_path, kind):
    path = bad_files(good, tmp_path)[kind]
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    assert EXPECTED[kind] in str(info.value)
    assert path.name in str(info.value) or kind in ("wrong architecture", "bad config")


def test_the_messages_differ_and_the_good_file_still_loads(good, tmp_path, digits_data):
    messages = {}
    for kind, path in bad_files(good, tmp_path).items():
        with pytest.raises(CheckpointError) as info:
            load_training(path, digits_data)
        messages[kind] = str(info.value).replace(path.name, "FILE").split(" (")[0]
    assert len(set(messages.values())) >= len(messages) - 1, messages  # corrupt and truncated may share
    G, cfg, _ = load_generator(good)
    assert cfg.ngf == 16


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(good, tmp_path, digits_data):
    folder = RunFolder(tmp_path / "run")
    run = load_training(good, digits_data)
    older = folder.save(run)
    run.train_step()
    newest = folder.save(run)
    newest.write_bytes(newest.read_bytes()[:1000])  # e.g. a copy cut short
    assert folder.latest() == older
    assert load_training(folder.latest(), digits_data).iteration == 1


def test_cli_prints_the_reason_and_exits_2(good, tmp_path, capsys):
    path = bad_files(good, tmp_path)["truncated"]
    assert cli.main(["sample", str(path), "--out", str(tmp_path / "s.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: truncated.safetensors is corrupt or truncated")
    assert not (tmp_path / "s.png").exists()


# ---- importing pytorch/examples weights -----------------------------------------------------------


class ExamplesGenerator(nn.Module):
    """The generator of pytorch/examples dcgan/main.py (64x64), written out here as the reference."""

    def __init__(self, nz: int = 100, ngf: int = 64, nc: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        widths = [nz, ngf * 8, ngf * 4, ngf * 2, ngf]
        for i, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
            layers += [nn.ConvTranspose2d(a, b, 4, 1 if i == 0 else 2, 0 if i == 0 else 1, bias=False),
                       nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, x):
        return self.main(x)


@pytest.fixture(scope="module")
def examples_netg(tmp_path_factory):
    torch.manual_seed(3)
    net = ExamplesGenerator(nz=100, ngf=16, nc=3)
    with torch.no_grad():  # non-trivial BatchNorm statistics, as after training
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(1234)
    path = tmp_path_factory.mktemp("examples") / "netG_epoch_24.pth"
    torch.save(net.state_dict(), path)
    return net.eval(), path


def test_examples_state_dict_imports_and_gives_identical_images(examples_netg, tmp_path):
    net, pth = examples_netg
    dest, cfg = import_pth(pth, tmp_path / "imported.safetensors")
    assert (cfg.image_size, cfg.channels, cfg.nz, cfg.ngf) == (64, 3, 100, 16)
    G, cfg2, meta = load_generator(dest)
    assert meta["generator_only"] and cfg2.extra["imported_from"] == "netG_epoch_24.pth"
    z = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(z.view(8, 100, 1, 1))
    ours = sample(G, z=z)
    assert ours.shape == (8, 3, 64, 64)
    assert torch.equal(ours, expected)


def test_import_through_the_cli(examples_netg, tmp_path, capsys):
    _, pth = examples_netg
    out = tmp_path / "cli.safetensors"
    assert cli.main(["import", str(pth), "--out", str(out)]) == 0
    assert "64x64, 3 channels, nz=100, ngf=16" in capsys.readouterr().out
    assert load_generator(out)[1].image_size == 64


def test_import_handles_dataparallel_prefix_and_old_files(examples_netg, tmp_path):
    net, _ = examples_netg
    state = {"module." + k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    pth = tmp_path / "netG_old.pth"
    torch.save(state, pth)
    dest, _ = import_pth(pth, tmp_path / "old.safetensors")
    z = torch.randn(4, 100)
    with torch.no_grad():
        assert torch.equal(sample(load_generator(dest)[0], z=z), net(z.view(4, 100, 1, 1)))


class Payload:
    """Unpickling this runs `touch MARKER` (the classic pickle attack)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_executes_nothing(tmp_path):
    marker = tmp_path / "pwned"
    pth = tmp_path / "netG_epoch_0.pth"
    torch.save({"main.0.weight": torch.zeros(100, 128, 4, 4), "evil": Payload(marker)}, pth)
    with pytest.raises(CheckpointError, match="never runs code from a pickle.*posix.system"):
        import_pth(pth, tmp_path / "out.safetensors")
    with pytest.raises(CheckpointError):
        read(pth)  # the checkpoint reader refuses .pth outright
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    # the file really is an attack: an unsafe load would have run it
    torch.load(pth, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["discriminator", "not a dict", "truncated", "empty", "random bytes", "wrong sizes"])
def test_bad_pth_files_get_clear_messages(examples_netg, tmp_path, kind):
    net, good_pth = examples_netg
    pth = tmp_path / f"{kind}.pth"
    if kind == "discriminator":
        d = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1, bias=False), nn.LeakyReLU(0.2), nn.Conv2d(16, 32, 4, 2, 1),
                          nn.BatchNorm2d(32), nn.Conv2d(32, 1, 4, 1, 0, bias=False))
        torch.save({"main." + k: v for k, v in d.state_dict().items()}, pth)
        expected = "looks like a discriminator"
    elif kind == "not a dict":
        torch.save([torch.zeros(3)], pth)
        expected = "not a plain state dict"
    elif kind == "truncated":
        pth.write_bytes(good_pth.read_bytes()[:5000])
        expected = "not a readable PyTorch file"
    elif kind == "empty":
        pth.write_bytes(b"")
        expected = "is empty"
    elif kind == "random bytes":  # b"R" and b"h\x1a" made torch's unpickler raise IndexError / KeyError (seen in CI)
        for head in (b"R", b"h\x1a", b"r:", b""):
            for seed in range(40):
                pth.write_bytes(head + random.Random(seed).randbytes(2048))
                with pytest.raises(CheckpointError, match="not a readable PyTorch file"):
                    import_pth(pth, tmp_path / "out.safetensors")
        expected = "not a readable PyTorch file"
    else:  # a 64px generator with an odd layer removed: shapes no longer chain
        state = dict(net.state_dict())
        state["main.3.weight"] = torch.zeros(128, 32, 4, 4)
        torch.save(state, pth)
        expected = "has shape"
    with pytest.raises(CheckpointError, match=expected):
        import_pth(pth, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_checkpoint_metadata_is_json_not_pickle(good):
    """What a checkpoint holds beyond tensors is JSON text in the safetensors header."""
    header_len = int.from_bytes(good.read_bytes()[:8], "little")
    header = json.loads(good.read_bytes()[8:8 + header_len])
    json.loads(header["__metadata__"]["dcgan_studio"])
