"""DCGAN generator and discriminator (Radford et al. 2015), one definition for every size.

Sizes 32, 64 and 128 start from a 4x4 map; 28 (MNIST) starts from 7x7. Each stage doubles
the resolution in G and halves it in D, and the channel count halves / doubles with it, so at
64x64 with nz=100, ngf=ndf=64 the networks are exactly the classic ones (G 3.58 M, D 2.77 M).
"""

from __future__ import annotations

import math
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

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            z = torch.cat([z, nn.functional.one_hot(labels, self.num_classes).to(z.dtype)], dim=1)
        return self.net(z.view(z.shape[0], -1, 1, 1))


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

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        logits = self.head(h).flatten()
        if self.embed is not None:
            if labels is None:
                raise ValueError("this discriminator is class-conditional: pass labels")
            logits = logits + (self.embed(labels) * h.sum(dim=(2, 3))).sum(dim=1)
        return logits


def build_models(cfg) -> tuple[Generator, Discriminator]:
    """Both networks for a TrainConfig."""
    g = Generator(cfg.nz, cfg.ngf, cfg.channels, cfg.image_size, cfg.num_classes)
    d = Discriminator(cfg.ndf, cfg.channels, cfg.image_size, cfg.num_classes, cfg.spectral_norm)
    return g, d


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
