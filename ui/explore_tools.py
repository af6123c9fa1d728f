"""The Explore tab's callbacks: each takes this browser's view state (ui.common.new_view) and the tool's
inputs, asks dcgan.latent / dcgan.studio for the numbers and returns {component name: new value}.

Names instead of positions: the tab maps names to components, so adding a slider or an output cannot shift
what lands where. The model a browser explores is pinned in its own state; other visitors never change it.
"""

from __future__ import annotations

from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont

from dcgan import latent
from dcgan.images import grid_array, image_array, save_gif, upscale
from dcgan.models import sample, seeded_latents
from dcgan.studio import (
    NUM_DIRECTIONS,
    PRESENT_SHARE,
    LoadedModel,
    Studio,
    digit_coverage,
    diversity_verdict,
    inversion_verdict,
    memorisation_verdict,
)
from ui.common import user_error

NUM_SLIDERS = NUM_DIRECTIONS
GRID = 16  # samples in the pick-from grid
GRID_COLUMNS, GRID_CELL, GRID_PAD = 4, 96, 4  # its layout: at least 96 pixels a sample, 4 between them
SLIDERS = tuple(f"slider{j + 1}" for j in range(NUM_SLIDERS))
PICK_MODES = ("sliders", "interpolation start", "interpolation end", "arithmetic A (+)", "arithmetic B (-)",
              "arithmetic C (+)", "memorisation check")
DIRECTION_KINDS = ("principal directions", "raw z dimensions")
UNCONDITIONAL = ("*This model is unconditional (trained with 0 classes): set **Classes** to 10 in the Train tab "
                 "on digits to get class control.*")

def session_model(session: dict[str, Any]) -> LoadedModel:
    if session.get("model") is None:
        raise user_error("Choose a model first: *Use the live run*, or load a checkpoint (or pull one in the Hub tab).")
    return session["model"]


def model_summary(model: LoadedModel) -> str:
    cfg = model.config
    kind = f"conditional, {cfg.num_classes} classes" if cfg.num_classes else "unconditional"
    where = {"live": f"the live run's snapshot at {model.label.removeprefix('live run, ')} (training goes on; "
                     f"press *Use the live run* again for a newer one)",
             "checkpoint": f"checkpoint `{model.label}`", "hub": f"Hub model `{model.label}`"}.get(model.source,
                                                                                                model.label)
    return (f"**Exploring:** {where} · {cfg.dataset} {cfg.image_size}×{cfg.image_size}×{cfg.channels} · "
            f"z of {cfg.nz} dims · ngf {cfg.ngf} · {kind}")


def picture(images: torch.Tensor, index: int = 0, side: int = 256) -> np.ndarray:
    return upscale(image_array(images[index]), side)


def render(model: LoadedModel, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """G(z) through the one sampler; labels are class ids or soft class vectors (ignored when unconditional)."""
    if model.config.num_classes and labels is None:
        labels = torch.zeros(z.shape[0], dtype=torch.long)
    return sample(model.generator, z=z, labels=labels if model.config.num_classes else None)


def grid_latents(session: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid's z (scaled by the truncation ψ) and classes (0 for an unconditional model)."""
    model = session_model(session)
    z, labels = seeded_latents(model.config.nz, GRID, session["seed"], model.config.num_classes)
    return z * float(session["psi"]), labels if labels is not None else torch.zeros(GRID, dtype=torch.long)


def grid_picture(session: dict[str, Any]) -> np.ndarray:
    """The 16 samples as one picture, row by row: one file per answer instead of sixteen (each file cost the
    serving loop and every visitor's browser a request; docs/ROBUSTNESS.md). A click is mapped back by grid_index."""
    z, labels = grid_latents(session)
    images = render(session_model(session), z, labels)
    grid = Image.fromarray(strip_picture(images, GRID_CELL, GRID_COLUMNS, GRID_PAD))
    side, draw, font = cell_side(images.shape[-1], GRID_CELL), ImageDraw.Draw(grid), ImageFont.load_default(size=12)
    for i in range(images.shape[0]):  # each sample's number in its corner, as the tools ask for numbers
        left, top = (GRID_PAD + k * (side + GRID_PAD) for k in (i % GRID_COLUMNS, i // GRID_COLUMNS))
        box = draw.textbbox((0, 0), f"#{i}", font=font)
        w, h = box[2] + 4, box[3] + 3
        draw.rectangle((left + side - w, top + side - h, left + side - 1, top + side - 1), fill="white")
        draw.text((left + side - w + 2, top + side - h + 1), f"#{i}", font=font, fill="black")
    return np.asarray(grid)


def grid_index(x: float, y: float, image_size: int) -> int:
    """The sample under pixel (x, y) of grid_picture's picture; a click on the padding goes to the nearest."""
    pitch = cell_side(image_size, GRID_CELL) + GRID_PAD
    col, row = ((int(v) - GRID_PAD // 2) // pitch for v in (x, y))
    rows = -(-GRID // GRID_COLUMNS)
    return min(max(row, 0), rows - 1) * GRID_COLUMNS + min(max(col, 0), GRID_COLUMNS - 1)


def moved_image(studio: Studio, session: dict[str, Any], kind: str, first: float,
                amounts: list[float]) -> np.ndarray:
    """The session's z moved by the slider values along the chosen directions (what a slider move redraws)."""
    model = session_model(session)
    dirs = (studio.principal_directions(model, NUM_SLIDERS) if kind == DIRECTION_KINDS[0]
            else latent.raw_directions(model.config.nz, NUM_SLIDERS, int(first or 0)))
    z = latent.move(session["z"], dirs, [float(a or 0) for a in amounts])
    return picture(render(model, z, torch.tensor([session["label"]])))


def slider_images(studio: Studio, session: dict[str, Any], kind: str, first: float,
                  amounts: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(start image, moved image) for the session's z and the slider values."""
    start = render(session_model(session), session["z"], torch.tensor([session["label"]]))
    return picture(start), moved_image(studio, session, kind, first, amounts)


def directions_note(studio: Studio, session: dict[str, Any], kind: str) -> str:
    if session.get("model") is None or kind != DIRECTION_KINDS[0]:
        return ""
    directions = studio.principal_directions(session["model"], NUM_SLIDERS)
    shares = ", ".join(f"{100 * e:.1f}%" for e in directions.explained)
    return f"Share of G's feature variance along slider 1..{NUM_SLIDERS}: {shares}"


def zero_sliders() -> dict[str, float]:
    return dict.fromkeys(SLIDERS, 0.0)


# ---- choosing the model ------------------------------------------------------------------------


def show_model(studio: Studio, model: LoadedModel, session: dict[str, Any], kind: str,
               first: float) -> dict[str, Any]:
    """Pin `model` in this browser and redraw everything that depends on it; start preparing the heavy tools."""
    studio.prepare_explore(model)
    session = dict(session, model=model, drawn=model.key, label=0,
                   z=latent.sample_latents(model.config.nz, 1, session.get("seed", 0) + 1000))

    def draw() -> tuple:
        start, moved = slider_images(studio, session, kind, first, [0.0] * NUM_SLIDERS)
        return start, moved, grid_picture(session), directions_note(studio, session, kind)

    # every visitor pinning the same snapshot (or checkpoint) with the same settings gets the same first pictures:
    # drawn once, by whoever asks first (the others wait for it), not once per visitor
    key = (model.key, session["seed"], session.get("psi"), kind, float(first or 0))
    start, moved, grid, note = studio.first_views.get(key, draw) if model.key else draw()
    names = tuple(str(c) for c in range(model.config.num_classes))
    controls = class_controls(session.get("classes"), names)
    return {"session": dict(session, classes=names), "summary": model_summary(model), "grid": grid,
            "start": start, "moved": moved, **zero_sliders(), "note": note, **controls}


def class_controls(shown: tuple[str, ...] | None, names: tuple[str, ...]) -> dict[str, Any]:
    """The Classes tab's controls for a model with these classes, where they differ from what the page shows
    (`shown`: the classes last sent, None as built: none, no note). A component update costs the server a new
    component for the visitor: a class of visitors on the unconditional live run needs none."""
    if shown == names:
        return {}
    out: dict[str, Any] = {"cond_note": "" if names else UNCONDITIONAL}
    if names or shown:
        cond = bool(names)
        out.update(class_a=gr.Dropdown(choices=list(names), value=names[0] if cond else None, interactive=cond),
                   class_b=gr.Dropdown(choices=list(names), value=names[-1] if cond else None, interactive=cond),
                   class_btn=gr.Button(interactive=cond), class_frames=gr.Slider(interactive=cond))
    return out


def use_live(studio: Studio, session: dict[str, Any], kind: str, first: float) -> dict[str, Any]:
    model = studio.live_model()
    if model is None:
        raise user_error("No live run yet: start one in the Train tab, or load a checkpoint here.")
    return show_model(studio, model, session, kind, first)


def load_checkpoint(studio: Studio, name: str | None, session: dict[str, Any], kind: str,
                    first: float) -> dict[str, Any]:
    if not name:
        raise user_error("Pick a checkpoint in the list first (Refresh lists new ones).")
    try:
        model = studio.load_checkpoint(name)
    except Exception as exc:  # CheckpointError, ValueError (outside the folder), OSError: all the user's to fix
        raise user_error(f"Could not load {name}: {exc}") from None
    return show_model(studio, model, session, kind, first)


def on_open(studio: Studio, session: dict[str, Any], kind: str, first: float) -> dict[str, Any]:
    """When the tab opens: draw the model this browser picked elsewhere (Train, Hub) if it is not drawn yet;
    with none, the start-up model or the live run. Leaves a drawn model alone."""
    model = session.get("model") or studio.default_model or studio.live_model()
    if model is None:
        return {}
    if session.get("model") is model and session.get("drawn") == model.key:
        studio.prepare_explore(model)  # once per model: the tab is shown, its heavy tools may come next
        return {}
    return show_model(studio, model, session, kind, first)


# ---- tools -----------------------------------------------------------------------------------


def draw_samples(session: dict[str, Any], seed: float, psi: float) -> dict[str, Any]:
    """The grid of this seed at this truncation (a seed typed in, a new ψ): the same seed draws the same grid."""
    session = dict(session, seed=int(seed or 0), psi=float(1.0 if psi is None else psi))
    return {"session": session, "grid": grid_picture(session)}


def new_samples(session: dict[str, Any], seed: float, psi: float) -> dict[str, Any]:
    """*New samples*: the next seed's grid, the seed box advanced to it (the same seed would redraw the same
    images); a seed typed in but not drawn yet is drawn as typed."""
    typed = int(seed or 0)
    drawn = draw_samples(session, typed + 1 if typed == session.get("seed", 0) else typed, psi)
    return {**drawn, "seed": drawn["session"]["seed"]}


def slide(studio: Studio, session: dict[str, Any], kind: str, first: float, *amounts: float) -> np.ndarray:
    return moved_image(studio, session, kind, first, list(amounts))


def random_start(studio: Studio, session: dict[str, Any], kind: str, first: float) -> dict[str, Any]:
    model = session_model(session)
    seed = int(np.random.default_rng().integers(0, 2**31 - 1))
    session = dict(session, z=latent.sample_latents(model.config.nz, 1, seed))
    start, moved = slider_images(studio, session, kind, first, [0.0] * NUM_SLIDERS)
    return {"session": session, "start": start, "moved": moved, **zero_sliders()}


def on_pick(studio: Studio, session: dict[str, Any], mode: str, ta: str, tb: str, tc: str, kind: str, first: float,
            evt: gr.SelectData) -> dict[str, Any]:
    """A click on a grid sample: hand its number to the tool chosen in `mode`."""
    i = grid_index(*evt.index[:2], session_model(session).config.image_size)
    if mode == "sliders":
        z, labels = grid_latents(session)
        session = dict(session, z=z[i:i + 1].clone(), label=int(labels[i]))
        start, moved = slider_images(studio, session, kind, first, [0.0] * NUM_SLIDERS)
        return {"session": session, "start": start, "moved": moved, **zero_sliders()}
    if mode.startswith("interpolation"):
        return {"a_num" if mode.endswith("start") else "b_num": i}
    if mode.startswith("arithmetic"):
        letter = mode.split()[1].lower()
        current = {"a": ta, "b": tb, "c": tc}[letter] or ""
        return {f"term_{letter}": f"{current.strip()} {i}".strip()}
    return {"memo_num": i}


def cell_side(image_size: int, side: int) -> int:
    """An image's side once enlarged (nearest neighbour, a whole factor) to at least `side` pixels."""
    return image_size * max(1, -(-side // image_size))


def strip_picture(images: torch.Tensor, side: int = 112, nrow: int | None = None, padding: int = 4) -> np.ndarray:
    """Images in a row (or rows of nrow), each enlarged to at least `side` pixels; grey stays one channel."""
    factor = cell_side(images.shape[-1], side) // images.shape[-1]
    big = torch.nn.functional.interpolate(images.float(), scale_factor=factor, mode="nearest")
    grid = grid_array(big, nrow=nrow or images.shape[0], padding=padding)
    return grid[..., 0] if images.shape[1] == 1 else grid


def write_gif(studio: Studio, images: torch.Tensor) -> str:
    frames = [picture(images, i, 192) for i in range(images.shape[0])]
    frames = frames + frames[-2:0:-1]  # there and back, so the loop has no jump
    return str(save_gif(frames, studio.export_path("interpolation.gif"), 90))


def run_interpolation(studio: Studio, session: dict[str, Any], a: float, b: float, frames: float,
                      mode: str) -> dict[str, Any]:
    model = session_model(session)
    z, labels = grid_latents(session)
    try:
        ia, ib = latent.parse_indices(f"{int(a or 0)} {int(b or 0)}", GRID)
    except ValueError as exc:
        raise user_error(f"Interpolation: {exc}") from None
    path = latent.interpolate(z[ia], z[ib], int(frames), mode)
    # class: from A's to B's (the same when unconditional); one-hot mixed along the path
    t = torch.linspace(0, 1, path.shape[0]).view(-1, 1)
    onehot = torch.nn.functional.one_hot(labels[[ia, ib]], max(model.config.num_classes, 1)).float()
    images = render(model, path, (1 - t) * onehot[0] + t * onehot[1])
    return {"strip": strip_picture(images), "gif": write_gif(studio, images)}


def equation_image(images: list[np.ndarray], signs: list[str]) -> np.ndarray:
    """Pictures side by side with the signs of the equation drawn between them."""
    from PIL import Image, ImageDraw, ImageFont

    side, gap = images[0].shape[0], 48
    canvas = Image.new("RGB", (len(images) * side + (len(images) - 1) * gap, side), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=40)
    x = 0
    for k, img in enumerate(images):
        canvas.paste(Image.fromarray(img).convert("RGB"), (x, 0))
        x += side
        if k < len(signs):
            draw.text((x + gap // 2, side // 2), signs[k], fill="black", font=font, anchor="mm")
            x += gap
    return np.asarray(canvas)


def run_arithmetic(session: dict[str, Any], ta: str, tb: str, tc: str) -> dict[str, Any]:
    model = session_model(session)
    z, labels = grid_latents(session)
    try:
        ia, ib, ic = (latent.parse_indices(t or "", GRID) for t in (ta, tb, tc))
    except ValueError as exc:
        raise user_error(f"Arithmetic: {exc}") from None
    n = model.config.num_classes
    onehots = torch.nn.functional.one_hot(labels, n).float() if n else None
    res = latent.vector_arithmetic(z, ia, ib, ic, onehots)
    # conditional: each term as its own class (A's zeros as zeros), the result as C's
    classes = torch.cat([res.term_classes, res.result_class[None]]) if n else None
    images = render(model, torch.cat([res.terms, res.result[None]]), classes)
    pics = [picture(images, i, 160) for i in range(4)]
    # the paper shows the result with a little noise added: is the effect robust?
    jitter = res.result[None] + 0.25 * seeded_latents(model.config.nz, 8)[0]
    variants = render(model, jitter, res.result_class.expand(8, -1) if n else None)
    return {"equation": equation_image(pics, ["-", "+", "="]), "variants": strip_picture(variants, 96)}


def run_class_control(studio: Studio, session: dict[str, Any], class_a: str | None, class_b: str | None,
                      frames: float) -> dict[str, Any]:
    model = session_model(session)
    n = model.config.num_classes
    if not n:
        raise user_error("This model is unconditional: class control needs a model trained with Classes > 0.")
    z = session["z"]
    every = render(model, z.expand(n, -1), torch.arange(n))
    t = torch.linspace(0, 1, int(frames)).view(-1, 1)
    onehots = torch.nn.functional.one_hot(torch.tensor([int(class_a or 0), int(class_b or 0)]), n).float()
    path = render(model, z.expand(t.shape[0], -1), (1 - t) * onehots[0] + t * onehots[1])
    return {"every_class": strip_picture(every), "class_strip": strip_picture(path),
            "class_gif": write_gif(studio, path)}


def editor_array(value: Any) -> np.ndarray | None:
    """The picture in a gr.ImageEditor value (its composite) or a plain array."""
    if isinstance(value, dict):
        value = value.get("composite") if value.get("composite") is not None else value.get("background")
    return None if value is None else np.asarray(value)


def run_inversion(studio: Studio, session: dict[str, Any], editor: Any, restarts: float, steps: float, kind: str,
                  first: float, progress: Any = None) -> dict[str, Any]:
    """Invert the picture, then judge the error against real held-out images inverted by the same G."""
    progress = progress or (lambda *a, **k: None)
    model = session_model(session)
    arr = editor_array(editor)
    if arr is None or arr.size == 0 or (arr.ndim == 3 and arr.shape[2] == 4 and arr[..., 3].max() == 0):
        raise user_error("Upload an image or draw one in the box first.")
    try:
        prepared = latent.prepare_target(arr, model.generator)
    except (ValueError, OSError) as exc:
        raise user_error(f"Could not read the image: {exc}") from None
    target = prepared.image
    progress(0.05, desc="optimising z")
    inv = latent.invert(model.generator, target, restarts=int(restarts), steps=int(steps))
    progress(0.4, desc="inverting real held-out images for comparison (once per model)")
    try:
        reference = studio.inversion_reference(model, int(restarts), int(steps))
    except Exception:  # the data set of a Hub model may be unavailable offline: no yardstick then
        reference = []
    verdict = inversion_verdict(inv.mse, reference, float(target.var()))
    session = dict(session, z=inv.z[None].clone(), label=inv.label or 0)
    start, moved = slider_images(studio, session, kind, first, [0.0] * NUM_SLIDERS)
    cls = f" · best class {inv.label}" if inv.label is not None else ""
    done = [what for what, yes in (("inverted to this model's polarity", prepared.flipped),
                                   ("scaled and centred as its samples are", prepared.framed)) if yes]
    seen = f"Your picture was {' and '.join(done)} (see *target as G sees it*). " if done else ""
    text = (f"{seen}Reconstruction error: MSE {inv.mse:.4f} on the [−1, 1] scale · PSNR {inv.psnr:.1f} dB{cls}. "
            f"**{verdict.word}**: {verdict.text}. It is now the slider start: open *Sliders* to edit it.")
    diff = (inv.image - target).abs().mean(0, keepdim=True) * 2 - 1  # |error| as a grey picture
    return {"session": session, "target_img": picture(target[None]), "recon_img": picture(inv.image[None]),
            "error_img": picture(diff[None]), "invert_text": text, "start": start, "moved": moved, **zero_sliders()}


def training_data(model: LoadedModel):
    try:
        return latent.dataset_for(model.config)
    except Exception as exc:  # DatasetError (offline), OSError
        raise user_error(f"The training data of this model could not be loaded: {exc}") from None


def run_memorisation(session: dict[str, Any], index: float, use_slider_start: bool, k: float = 8) -> dict[str, Any]:
    model = session_model(session)
    if use_slider_start:
        z, label = session["z"], torch.tensor([session["label"]])
    else:
        zs, labels = grid_latents(session)
        i = min(max(int(index or 0), 0), GRID - 1)
        z, label = zs[i:i + 1], labels[i:i + 1]
    found = render(model, z, label)
    data = training_data(model)
    d, idx = latent.nearest_training(found, data.train, k=int(k))
    heldout = latent.heldout_nn_distances(data)
    gallery = [(picture(found, 0, 128), "sample")]
    gallery += [(upscale(image_array(data.train[j].float() / 127.5 - 1), 128), f"#{j}: {dist:.3f}")
                for j, dist in zip(idx[0].tolist(), d[0].tolist(), strict=True)]
    nearest = float(d[0, 0])
    verdict = memorisation_verdict(nearest, heldout)
    text = (f"Nearest training image at distance **{nearest:.3f}**: {verdict.text} "
            f"Searched {data.train.shape[0]} training images of '{data.name}'.")
    return {"memo_gallery": gallery, "memo_text": text}


def run_diversity(studio: Studio, session: dict[str, Any], n: float, progress: Any = None) -> dict[str, Any]:
    """The diversity meter at ψ = 1 (whatever the grid's ψ: truncation lowers diversity by design) and, on
    digits, the digit chart: when the digit classifier is still being prepared, the numbers come at once and the
    message says what is being prepared instead of the page waiting a minute for the chart."""
    progress = progress or (lambda *a, **k: None)
    model = session_model(session)
    data = training_data(model)
    real = data.val if data.val.shape[0] >= 32 else data.train
    progress(0.2, desc="pairwise distances")
    div = latent.diversity(model.generator, real, n=int(n), psi=1.0)
    bins = np.linspace(0, max(float(div.generated_distances.max()), float(div.real_distances.max()), 1e-3), 25)
    rows = []
    for name, dists in (("generated", div.generated_distances), ("real", div.real_distances)):
        counts, _ = np.histogram(dists.numpy(), bins=bins)
        share = counts / max(counts.sum(), 1)
        rows += [{"distance": round(float((lo + hi) / 2), 4), "share of pairs": float(s), "images": name}
                 for lo, hi, s in zip(bins[:-1], bins[1:], share, strict=True)]
    grid_psi = float(session.get("psi", 1.0))
    psi_note = "" if grid_psi == 1.0 else f" (not the grid's ψ = {grid_psi:g}: truncation lowers diversity by design)"
    text = (f"## Diversity {div.ratio:.2f}\nMeasured at truncation ψ = 1, the model's full diversity{psi_note}. "
            f"Mean pairwise distance of {int(n)} samples **{div.generated:.3f}** "
            f"versus **{div.real:.3f}** for real images ({diversity_verdict(div.ratio)}).")
    classes = pd.DataFrame({"digit": pd.Series(dtype="str"), "share of images": pd.Series(dtype="float"),
                            "images": pd.Series(dtype="str")})
    preparing = studio.classifier_status(model)
    if preparing is not None:
        text += f"\n\nDigit chart: {preparing}. Press *Measure diversity* again when it is ready."
        return {"div_text": text, "div_plot": pd.DataFrame(rows), "class_plot": classes}
    progress(0.6, desc="classifying digits")
    coverage = digit_coverage(model, real, int(n))
    if coverage is not None:
        # one bar per digit and kind, side by side (a bar plot stacks bars that share an x)
        classes = pd.DataFrame([{"digit": f"{d} {name[:3] if name == 'generated' else name}",
                                 "share of images": c / max(sum(counts), 1),
                                 "images": name}
                                for name, counts in (("generated", coverage.generated), ("real", coverage.real))
                                for d, c in enumerate(counts)])
        text += (f"\n\nDigits present in the samples (≥ {PRESENT_SHARE:.0%} each): "
                 f"**{coverage.present} of 10**.")
    return {"div_text": text, "div_plot": pd.DataFrame(rows), "class_plot": classes}
