"""DCGAN generator and discriminator (Radford et al. 2015), one definition for every size.

Sizes 32, 64 and 128 start from a 4x4 map; 28 (MNIST) starts from 7x7. Each stage doubles
the resolution in G and halves it in D, and the channel count halves / doubles with it, so at
64x64 with nz=100, ngf=ndf=64 the networks are exactly the classic ones (G 3.58 M, D 2.77 M).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm


def base_size(image_size: int) -> int:
    """Side of the first feature map: 7 for 28x28, 4 for the powers of two."""
    return 7 if image_size == 28 else 4


def num_stages(image_size: int) -> int:
    stages = math.log2(image_size // base_size(image_size))
    if image_size % base_size(image_size) or not stages.is_integer():
        raise ValueError(f"unsupported image size {image_size}")
    return int(stages)


def init_dcgan_weights(module: nn.Module) -> None:
    """N(0, 0.02) for convolutions, N(1, 0.02) for BatchNorm scale, as in the paper."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="dcgan-studio",
    tags=["gan", "dcgan", "pytorch", "unconditional-image-generation"],
):
    """z (and optionally a class) -> image in [-1, 1]: transposed convs + BatchNorm + ReLU, Tanh out."""

    def __init__(self, nz: int = 100, ngf: int = 64, channels: int = 3, image_size: int = 64,
                 num_classes: int = 0):
        super().__init__()
        self.nz, self.ngf, self.channels = nz, ngf, channels
        self.image_size, self.num_classes = image_size, num_classes
        stages = num_stages(image_size)
        width = ngf * 2 ** (stages - 1)
        in_dim = nz + num_classes
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, width, base_size(image_size), 1, 0, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(True),
        ]
        for _ in range(stages - 1):
            layers += [
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(width // 2),
                nn.ReLU(True),
            ]
            width //= 2
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(init_dcgan_weights)

    @classmethod
    def _load_as_safetensor(cls, model, model_file, map_location, strict):
        """Always strict: weights that do not fit config.json are an error, never a half-loaded model
        (the mixin's default, strict=False, would leave missing layers at their random init)."""
        return super()._load_as_safetensor(model, model_file, map_location, True)

    @classmethod
    def _load_as_pickle(cls, model, model_file, map_location, strict):
        raise ValueError(f"{Path(model_file).name} is a pickle-based PyTorch file; DCGAN Studio loads only "
                         f"model.safetensors")

    @classmethod
    def from_config(cls, cfg) -> Generator:
        """The generator a TrainConfig describes (the one place that maps config fields to arguments)."""
        return cls(cfg.nz, cfg.ngf, cfg.channels, cfg.image_size, cfg.num_classes)

    @classmethod
    def from_state(cls, cfg, state: Mapping[str, torch.Tensor]) -> Generator:
        """A CPU copy in eval mode from a config and a state dict (strict): the one "state dict -> G" rule."""
        return _from_state(cls.from_config(cfg), state)

    def _input(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """z with the class appended: int ids [N] become one-hot rows, a float [N, C] is used as is,
        so a soft mixture of classes (the Explore tab's class sliders) goes through the same path."""
        if self.num_classes:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            onehot = (labels.to(z.dtype) if labels.is_floating_point()
                      else nn.functional.one_hot(labels.long(), self.num_classes).to(z.dtype))
            z = torch.cat([z, onehot], dim=1)
        return z.view(z.shape[0], -1, 1, 1)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """labels: int class ids [N] or a float (soft) class vector [N, num_classes]."""
        return self.net(self._input(z, labels))

    def hidden(self, z: torch.Tensor, labels: torch.Tensor | None = None, blocks: int = 2) -> torch.Tensor:
        """The activations after the first `blocks` conv-BN-ReLU blocks (latent tools read these)."""
        return self.net[:3 * blocks](self._input(z, labels))


class Discriminator(nn.Module):
    """image (and optionally a class) -> raw logit: strided convs + LeakyReLU(0.2), no Sigmoid.

    BatchNorm everywhere except the input layer; with spectral_norm, every conv is spectrally
    normalised and BatchNorm is left out (SNGAN). A conditional D adds a projection term
    <embed(y), pooled features> (Miyato & Koyama 2018).
    """

    def __init__(self, ndf: int = 64, channels: int = 3, image_size: int = 64, num_classes: int = 0,
                 spectral_norm: bool = False):
        super().__init__()
        self.ndf, self.channels, self.image_size = ndf, channels, image_size
        self.num_classes, self.spectral_norm = num_classes, spectral_norm
        sn = _spectral_norm if spectral_norm else (lambda m: m)
        stages = num_stages(image_size)
        layers: list[nn.Module] = [sn(nn.Conv2d(channels, ndf, 4, 2, 1, bias=spectral_norm)),
                                   nn.LeakyReLU(0.2, True)]
        width = ndf
        for _ in range(stages - 1):
            layers.append(sn(nn.Conv2d(width, width * 2, 4, 2, 1, bias=spectral_norm)))
            if not spectral_norm:
                layers.append(nn.BatchNorm2d(width * 2))
            layers.append(nn.LeakyReLU(0.2, True))
            width *= 2
        self.features = nn.Sequential(*layers)
        self.head = sn(nn.Conv2d(width, 1, base_size(image_size), 1, 0, bias=False))
        self.embed = sn(nn.Embedding(num_classes, width)) if num_classes else None
        self.apply(init_dcgan_weights)

    @classmethod
    def from_config(cls, cfg) -> Discriminator:
        return cls(cfg.ndf, cfg.channels, cfg.image_size, cfg.num_classes, cfg.spectral_norm)

    @classmethod
    def from_state(cls, cfg, state: Mapping[str, torch.Tensor]) -> Discriminator:
        """A CPU copy in eval mode from a config and a state dict (strict): the one "state dict -> D" rule."""
        return _from_state(cls.from_config(cfg), state)

    def features_and_logit(self, x: torch.Tensor,
                           labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f [N, F], logit [N]): f is the flat feature vector D's last linear map reads, so that
        logit = head_weight()·f + b (+ the class projection term for a conditional D)."""
        h = self.features(x)
        logits = self.head(h).flatten()
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels")
            logits = logits + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return h.flatten(1), logits

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.features_and_logit(x, labels)[1]

    @torch.no_grad()
    def head_weight(self) -> tuple[torch.Tensor, float]:
        """(w [F], b) of the last linear map: the head conv covers the whole final feature map,
        so it is a dot product with the flattened features (spectrally normalised when SN is on)."""
        w = self.head.weight.detach().flatten().clone()
        b = float(self.head.bias) if self.head.bias is not None else 0.0
        return w, b


def _from_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    module.load_state_dict(state)  # strict: a key or shape that does not fit raises, never a half-loaded copy
    return module.eval()


def build_models(cfg) -> tuple[Generator, Discriminator]:
    """Both networks for a TrainConfig."""
    return Generator.from_config(cfg), Discriminator.from_config(cfg)


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm on running statistics) inside the block; each module's own mode after."""
    was = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, was, strict=True):
            m.train(mode)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """No gradients for the module's weights inside the block (inputs still get theirs)."""
    was = [p.requires_grad for p in module.parameters()]
    try:
        module.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(module.parameters(), was, strict=True):
            p.requires_grad_(flag)


def seeded_latents(nz: int, n: int, seed: int = 0, num_classes: int = 0,
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """(z [n, nz], labels [n] | None): z from a CPU generator seeded with `seed` (the same on every
    device, independent of any training RNG); labels cycle 0..num_classes-1 for a conditional G."""
    z = torch.randn(n, nz, generator=torch.Generator().manual_seed(int(seed))).to(device)
    labels = torch.arange(n, device=device) % num_classes if num_classes else None
    return z, labels


@torch.no_grad()
def sample(G: Generator, n: int | None = None, seed: int = 0, *, z: torch.Tensor | None = None,
           labels: torch.Tensor | None = None, batch: int = 256) -> torch.Tensor:
    """THE sampler: float CPU images [N, C, H, W] in [-1, 1] from G in eval mode (so one image never
    depends on the rest of its batch), no grad, G's mode restored. Give n (and seed) for seeded
    latents with cycled classes, or z (and labels: ids or soft class vectors) for your own."""
    if z is None:
        if n is None:
            raise ValueError("sample needs n or z")
        z, cycled = seeded_latents(G.nz, n, seed, G.num_classes)
        labels = cycled if labels is None else labels
    weight = next(iter(G.state_dict().values()), None)
    device = weight.device if weight is not None else torch.device("cpu")
    outs = []
    with eval_mode(G):
        for i in range(0, z.shape[0], batch):
            lab = None if labels is None else labels[i:i + batch].to(device)
            outs.append(G(z[i:i + batch].to(device), lab).float().cpu())
    return torch.cat(outs) if outs else torch.empty(0, G.channels, G.image_size, G.image_size)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
