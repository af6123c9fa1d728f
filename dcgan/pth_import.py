"""Import a generator trained by the pytorch/examples DCGAN (`netG_epoch_*.pth`) as a safetensors checkpoint.

Those files are pickles of a plain state dict. They are read only through
`torch.load(weights_only=True)`, which rebuilds tensors and containers and refuses every other
object, so a malicious pickle executes nothing. The examples' `netG.main` is the same layer
sequence as our `Generator.net` (ConvTranspose 4x4/1/0, then [ConvTranspose 4x4/2/1, BatchNorm,
ReLU] stages, ConvTranspose to the colour channels, Tanh), so `main.N.*` maps to `net.N.*`; nz,
ngf, the channels and the image size are read off the weight shapes.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .checkpoint import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MAX_CHECKPOINT_BYTES,
    CheckpointError,
    encode,
    load_module,
    write_atomic,
)
from .config import TrainConfig
from .models import Generator


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a .pth file, loaded weights-only; anything but a flat dict of tensors is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty (0 bytes)")
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path.name} is {size / 1e9:.1f} GB, over the 4 GB limit")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        globals_asked = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if globals_asked:  # the pickle wants to import and call something: a code-execution attempt
            raise CheckpointError(f"{path.name} was refused: it holds Python objects other than tensors, "
                                  f"and DCGAN Studio never runs code from a pickle ({globals_asked[0]})") from exc
        raise CheckpointError(f"{path.name} is not a readable PyTorch file (corrupt or truncated?)") from exc
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, ImportError, IndexError, KeyError,
            TypeError) as exc:  # what torch's weights-only unpickler raises on random bytes, not only the first
        raise CheckpointError(f"{path.name} is not a readable PyTorch file (corrupt or truncated?): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path.name} is not a plain state dict (a dict of tensors); save the "
                              f"generator with torch.save(netG.state_dict(), ...)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def generator_from_state_dict(state: dict[str, torch.Tensor], name: str = "state dict") -> Generator:
    """Our Generator holding the weights of a pytorch/examples `netG` state dict."""
    convs = sorted((int(k.split(".")[1]), v) for k, v in state.items()
                   if k.startswith("main.") and k.endswith(".weight") and v.dim() == 4)
    if not convs:
        raise CheckpointError(f"{name} has no main.N.weight convolutions: not a pytorch/examples DCGAN generator")
    first, last = convs[0][1], convs[-1][1]
    if last.shape[0] == 1 and last.shape[1] not in (1, 3):  # D ends in a Conv2d [1, 8*ndf, 4, 4]
        raise CheckpointError(f"{name} looks like a discriminator (netD_*.pth); import the generator netG_*.pth")
    if first.shape[2:] != (4, 4) or last.shape[1] not in (1, 3):
        raise CheckpointError(f"{name} does not look like a DCGAN generator (first layer {tuple(first.shape)}, "
                              f"last {tuple(last.shape)})")
    nz, channels, ngf = first.shape[0], last.shape[1], last.shape[0]
    image_size = 4 * 2 ** (len(convs) - 1)
    try:
        G = Generator(nz=nz, ngf=ngf, channels=channels, image_size=image_size)
    except ValueError as exc:
        raise CheckpointError(f"{name}: {len(convs)} transposed convolutions means {image_size}x{image_size} "
                              f"images, which DCGAN Studio does not support") from exc
    ours = {"G.net." + k.removeprefix("main."): v for k, v in state.items()}
    for key, value in G.state_dict().items():  # files from before PyTorch 0.4.1 lack this counter
        if key.endswith("num_batches_tracked"):
            ours.setdefault("G." + key, torch.zeros_like(value))
    load_module(G, "G", ours, name)
    return G.eval()


def import_pth(src: str | Path, dest: str | Path) -> tuple[Path, TrainConfig]:
    """Convert a pytorch/examples `netG_epoch_*.pth` into a generator-only .safetensors checkpoint."""
    src = Path(src)
    G = generator_from_state_dict(read_state_dict(src), src.name)
    cfg = TrainConfig(dataset="folder", data_path=f"imported from {src.name}", image_size=G.image_size,
                      channels=G.channels, nz=G.nz, ngf=G.ngf, ndf=G.ngf, device="cpu",
                      extra={"imported_from": src.name, "source": "pytorch/examples dcgan"})
    tensors = {f"G.{k}": v.detach().to("cpu", memory_format=torch.contiguous_format, copy=True)
               for k, v in G.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "torch_version": torch.__version__,
            "config": cfg.to_dict(), "iteration": 0, "images_seen": 0, "history": [],
            "generator_only": True, "dataset": {"name": "imported", "class_names": []}}
    dest = Path(dest)
    try:
        write_atomic(dest, encode(tensors, meta))
    except OSError as exc:
        raise CheckpointError(f"could not write {dest}: {exc.strerror or exc}") from exc
    return dest, cfg
