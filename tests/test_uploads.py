"""Uploads of one's own images: zip bombs, unsafe paths, symlinks, junk files, odd and huge images.

Everything goes through `load_dataset` with dataset="folder", as a Train-tab upload does.
Also: the app's checkpoint picker cannot be pointed outside checkpoints/.
"""

from __future__ import annotations

import io
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcgan import data
from dcgan.checkpoint import save_training
from dcgan.data import DatasetError, load_dataset
from dcgan.train import GANTraining
from tests.conftest import tiny_config
from ui.state import Studio


def png_bytes(mode: str = "L", size: tuple[int, int] = (20, 20), value: int = 128) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, value).save(buf, format="PNG")
    return buf.getvalue()


def load(path: Path, channels: int = 1):
    return load_dataset(tiny_config(dataset="folder", data_path=str(path), channels=channels,
                                    batch_size=2, val_fraction=0.0))


def make_zip(path: Path, members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return path


def good_members(n: int = 4) -> dict[str, bytes]:
    return {f"img{i}.png": png_bytes(value=40 * i) for i in range(n)}


# ---- archives ----------------------------------------------------------------------------------


def test_a_plain_zip_loads_without_extracting_anything(tmp_path):
    archive = make_zip(tmp_path / "faces.zip", good_members())
    before = sorted(os.listdir(tmp_path))
    images = load(archive)
    assert images.train.shape == (4, 1, 28, 28)
    assert sorted(os.listdir(tmp_path)) == before  # nothing written next to it


def test_zip_bomb_by_ratio_is_refused(tmp_path):
    bomb = make_zip(tmp_path / "bomb.zip", {"a.png": png_bytes(), "zeros.png": b"\0" * 30_000_000})
    assert bomb.stat().st_size < 100_000  # 30 MB that compress to ~30 kB
    with pytest.raises(DatasetError, match="expands .*x: refusing a possible zip bomb"):
        load(bomb)


def test_zip_bomb_by_total_size_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_ZIP_TOTAL_BYTES", 5_000_000)  # instead of writing 2 GB
    members = {f"part{i}.png": os.urandom(1_000_000) for i in range(6)}  # incompressible: ratio ~1
    bomb = make_zip(tmp_path / "big.zip", members)
    with pytest.raises(DatasetError, match="unpacks to .* more than the limit"):
        load(bomb)


def test_an_archive_over_the_upload_limit_is_refused(tmp_path, monkeypatch):
    archive = make_zip(tmp_path / "big.zip", good_members(), compression=zipfile.ZIP_STORED)
    monkeypatch.setattr(data, "MAX_UPLOAD_BYTES", archive.stat().st_size - 1)
    with pytest.raises(DatasetError, match="MB limit for an archive of images"):
        load(archive)


@pytest.mark.parametrize("name", ["../evil.png", "a/../../evil.png", "/etc/evil.png", "\\evil.png", "C:evil.png"])
def test_unsafe_member_paths_are_refused(tmp_path, name):
    archive = tmp_path / "trav.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for good_name, payload in good_members().items():
            zf.writestr(good_name, payload)
        zf.writestr(zipfile.ZipInfo(name), png_bytes())  # ZipInfo keeps the raw name
    with pytest.raises(DatasetError, match="unsafe path"):
        load(archive)
    assert not (tmp_path.parent / "evil.png").exists()


def test_symlinks_in_a_zip_are_ignored(tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for good_name, payload in good_members().items():
            zf.writestr(good_name, payload)
        link = zipfile.ZipInfo("passwd.png")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    images = load(archive)
    assert images.train.shape[0] == 4
    assert not any("passwd" in s for s in images.skipped)  # never even opened


def test_symlinks_in_a_folder_are_not_followed(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, payload in good_members().items():
        (folder / name).write_bytes(payload)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png_bytes(value=255))
    (folder / "link.png").symlink_to(outside / "secret.png")
    (folder / "linked-dir").symlink_to(outside, target_is_directory=True)
    images = load(folder)
    assert images.train.shape[0] == 4


def test_non_images_are_skipped_and_counted(tmp_path):
    members = {**good_members(3), "notes.txt": b"hello", "model.pth": b"\x80\x02junk", "fake.png": b"not a png",
               "empty.jpg": b"", ".hidden.png": png_bytes(), "__MACOSX/._img0.png": b"junk"}
    images = load(make_zip(tmp_path / "mixed.zip", members))
    assert images.train.shape[0] == 3
    assert len(images.skipped) == 5
    assert "notes.txt" in images.skipped and "fake.png (UnidentifiedImageError)" in images.skipped


def test_zero_usable_images_is_a_clear_error(tmp_path):
    archive = make_zip(tmp_path / "junk.zip", {"a.txt": b"x", "b.png": b"not an image"})
    with pytest.raises(DatasetError, match=r"found 0 usable images in junk.zip \(2 files skipped\)"):
        load(archive)
    (tmp_path / "empty-folder").mkdir()
    with pytest.raises(DatasetError, match="found 0 usable images"):
        load(tmp_path / "empty-folder")


def test_damaged_archives_and_members(tmp_path):
    archive = make_zip(tmp_path / "ok.zip", good_members())
    raw = bytearray(archive.read_bytes())
    damaged = tmp_path / "damaged.zip"
    # flip bytes inside the first member's compressed data: CRC / zlib errors on read, skipped
    start = raw.index(b"img0.png") + len(b"img0.png") + 10
    raw[start:start + 20] = bytes(20)
    damaged.write_bytes(bytes(raw))
    images = load(damaged)
    assert images.train.shape[0] == 3 and any(s.startswith("img0.png (") for s in images.skipped)
    # a cut archive (central directory gone) or a non-zip file
    (tmp_path / "cut.zip").write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DatasetError):
        load(tmp_path / "cut.zip")
    (tmp_path / "text.zip").write_text("hello")
    with pytest.raises(DatasetError, match="neither a folder nor a .zip"):
        load(tmp_path / "text.zip")
    with pytest.raises(DatasetError, match="does not exist"):
        load(tmp_path / "nowhere")


# ---- odd images --------------------------------------------------------------------------------


def odd_images() -> dict[str, bytes]:
    out = {}
    rgba = Image.new("RGBA", (30, 20), (255, 0, 0, 0))  # fully transparent red: composited on white
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    out["rgba.png"] = buf.getvalue()
    pal = Image.new("P", (16, 16), 3)
    pal.putpalette([0, 0, 0, 255, 255, 255, 10, 20, 30, 200, 100, 50] + [0] * 756)
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    out["palette.png"] = buf.getvalue()
    buf = io.BytesIO()
    pal.save(buf, "GIF", transparency=0)
    out["palette-transparent.gif"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(buf, "JPEG")
    out["cmyk.jpg"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16)).save(buf, "PNG")  # 16-bit grey, white
    out["sixteen.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20), mode="F").save(buf, "TIFF")
    out["float.tif"] = buf.getvalue()
    out["grey.png"] = png_bytes("L", (40, 10), 77)
    buf = io.BytesIO()
    Image.new("LA", (8, 8), (0, 0)).save(buf, "PNG")
    out["grey-alpha.png"] = buf.getvalue()
    buf = io.BytesIO()
    Image.new("1", (9, 9), 1).save(buf, "BMP")
    out["bilevel.bmp"] = buf.getvalue()
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_odd_image_modes_are_converted(tmp_path, channels):
    members = odd_images()
    images = load(make_zip(tmp_path / "odd.zip", members), channels=channels)
    assert images.skipped == []
    assert images.train.shape == (len(members), channels, 28, 28)
    order = sorted(members)
    by_name = {}
    # the split shuffles with a fixed seed; recover each image by loading it alone
    for name in order:
        one = load(make_zip(tmp_path / f"{name}.zip", {name: members[name], "pad.png": png_bytes("L", (5, 5), 0)}),
                   channels=channels)
        by_name[name] = one
    rgba = by_name["rgba.png"].train.float().mean().item()
    assert rgba > 120  # the transparent image became white (255), next to the black pad (0)
    assert by_name["sixteen.png"].train.max().item() == 255  # 16-bit white stays white, not clipped to dark


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_huge_images_are_refused_not_decoded(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "MAX_IMAGE_PIXELS", 5000)  # stands for the real 40 MP limit
    members = {**good_members(2), "big.png": png_bytes("L", (90, 90)), "bomb.png": png_bytes("L", (200, 200))}
    images = load(make_zip(tmp_path / "huge.zip", members))
    assert images.train.shape[0] == 2
    # 8,100 px is between the limit and twice it, where PIL only warns: refused all the same
    assert "big.png (ImageTooLarge)" in images.skipped
    assert any(s.startswith("bomb.png (") for s in images.skipped)


def test_oversized_image_files_are_skipped_unread(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, payload in good_members(2).items():
        (folder / name).write_bytes(payload)
    (folder / "huge.png").write_bytes(png_bytes("L", (200, 200)))
    monkeypatch.setattr(data, "MAX_IMAGE_BYTES", len(png_bytes("L", (200, 200))) - 1)
    images = load(folder)
    assert images.train.shape[0] == 2 and images.skipped == ["huge.png (ImageTooLarge)"]


def test_upload_limit_is_a_number_the_app_can_pass_to_gradio():
    assert isinstance(data.MAX_UPLOAD_BYTES, int) and 0 < data.MAX_UPLOAD_BYTES <= data.MAX_ZIP_TOTAL_BYTES


# ---- the checkpoint picker stays inside checkpoints/ ---------------------------------------------


@pytest.mark.parametrize("name", ["../outside.safetensors", "run/../../outside.safetensors",
                                  "{outside}", "run/link.safetensors", "run/notes.txt", "run", "",
                                  "run/../../../../../../etc/passwd"])
def test_checkpoint_names_cannot_leave_the_checkpoints_folder(tmp_path, name):
    root = tmp_path / "checkpoints"
    (root / "run").mkdir(parents=True)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"secret")
    (root / "run" / "notes.txt").write_text("x")
    (root / "run" / "link.safetensors").symlink_to(outside)
    studio = Studio(root)
    with pytest.raises(ValueError, match="is not a checkpoint inside"):
        studio.resolve_checkpoint(name.format(outside=outside))
    with pytest.raises(ValueError):
        studio.load_checkpoint(name.format(outside=outside))


def test_a_checkpoint_inside_the_folder_resolves(tmp_path, digits_data):
    root = tmp_path / "checkpoints"
    save_training(GANTraining(tiny_config(), digits_data), root / "run" / "a.safetensors")
    studio = Studio(root)
    assert studio.resolve_checkpoint("run/a.safetensors") == (root / "run" / "a.safetensors").resolve()
    assert studio.load_checkpoint("run/a.safetensors").label == "run/a.safetensors"
