"""The Explore tab: what did the generator learn? Sliders, interpolation, arithmetic, classes,
inversion of your own image, a memorisation check and a mode-collapse meter.

All the maths lives in dcgan/latent.py; this module turns it into components. Each browser pins
one model snapshot in its session (the live run's latest generator, or the loaded checkpoint /
Hub model) so that a running training does not change the picture under a slider; "Use latest"
fetches a newer one. Callbacks are plain functions of their inputs so tests can call them.
"""

from __future__ import annotations

import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import torch

from dcgan import latent
from dcgan.images import grid_array, image_array, save_gif, upscale
from ui.state import LoadedModel, Studio

NUM_SLIDERS = 6
GRID = 16  # samples in the pick-from grid
LIVE, LOADED = "live run (latest snapshot)", "loaded checkpoint / Hub model"
PICK_MODES = ("sliders", "interpolation start", "interpolation end", "arithmetic A (+)", "arithmetic B (-)",
              "arithmetic C (+)", "memorisation check")
DIRECTION_KINDS = ("principal directions", "raw z dimensions")

NOTE_SLIDERS = """**Latent sliders.** Each slider moves z along one direction, in standard deviations of the prior.
*Principal directions* are found from the generator itself (GANSpace: PCA of G's intermediate features over
1,024 random z, mapped back to z by least squares), so slider 1 is the change G makes most often: notice
that it changes stroke thickness, slant or shape smoothly, while a *raw z dimension* usually mixes several
small changes: single coordinates of z mean nothing in particular."""
NOTE_GRID = """**Samples.** Lower the truncation ψ to pull every z towards the prior's centre: samples become cleaner
and more alike (fidelity), ψ = 1 is the full diversity G was trained on. Click a sample to use it in the tool
chosen under *clicking a sample sets*."""
NOTE_INTERP = """**Interpolation.** Notice that the frames change gradually, with no jumps or garbage in between: the
generator has learned a smooth map, not a lookup table of training images. *slerp* keeps |z| typical of the
Gaussian prior; *lerp*'s middle frames have a smaller |z| and often look fainter or blurrier."""
NOTE_ARITH = """**Vector arithmetic** (DCGAN paper, Sec. 6.3): average a few latents per concept, then compute
mean(A) − mean(B) + mean(C). Averaging cancels what the samples do not share. Notice whether the result keeps
C's identity with the A-minus-B change added (e.g. thick A, thin B, thin C → a thick version of C)."""
NOTE_CLASS = """**Class control** (conditional models). The same z is drawn as every class: notice that the *style*
(thickness, slant, size) stays while the identity changes: z carries style, the label carries content. The
interpolation blends the one-hot class input with z fixed."""
NOTE_INVERT = """**Inversion.** Upload or draw an image; Adam searches z (several random starts at once) so that G(z)
matches it pixel by pixel. A shape that G can draw comes back closely (small error); one it cannot draw comes
back as the nearest thing it *can* draw: the reconstruction shows the limits of what G learned. The result
becomes the slider start, so you can edit your own image."""
NOTE_MEMO = """**Memorisation check.** The nearest training images of a sample, by pixel distance (RMS on the [−1, 1]
scale). Compare the distance with the yardstick: held-out real images lie this far from their nearest training
image. A sample much closer than that is (nearly) a copy of a training image."""
NOTE_DIVERSITY = """**Diversity meter.** The mean distance between pairs of generated samples versus between pairs of
real images. Near 1: G varies as much as the data. Towards 0: mode collapse, many z give the same image. On digits
the lower plot shows which digits a classifier sees in the samples: a collapsed generator piles up on a few."""


# ---- model and per-model analysis ----------------------------------------------------------------


_directions_cache: OrderedDict[int, tuple[torch.nn.Module, latent.Directions]] = OrderedDict()


def principal_directions_of(G: torch.nn.Module) -> latent.Directions:
    """GANSpace directions of a generator, computed once per model object (keeps the model alive in
    the cache so its id cannot be reused by another one)."""
    key = id(G)
    if key in _directions_cache:
        _directions_cache.move_to_end(key)
        return _directions_cache[key][1]
    dirs = latent.principal_directions(G, k=NUM_SLIDERS)
    _directions_cache[key] = (G, dirs)
    while len(_directions_cache) > 4:
        _directions_cache.popitem(last=False)
    return dirs


def new_session() -> dict[str, Any]:
    return {"model": None, "seed": 0, "psi": 1.0, "z": None, "label": 0}


def pick_model(studio: Studio, source: str) -> LoadedModel:
    model = studio.current_model(prefer_live=(source == LIVE))
    if model is None:
        if source == LIVE:
            raise gr.Error("No model yet: start a run in the Train tab, or load a checkpoint here.")
        raise gr.Error("No checkpoint loaded: pick one in the list and press Load (or pull one from the Hub).")
    return model


def session_model(session: dict[str, Any]) -> LoadedModel:
    if session.get("model") is None:
        raise gr.Error("Choose a model first (Load a checkpoint, or Use latest for the live run).")
    return session["model"]


def model_summary(model: LoadedModel) -> str:
    cfg = model.config
    kind = f"conditional, {cfg.num_classes} classes" if cfg.num_classes else "unconditional"
    return (f"**Exploring:** {model.label} · {cfg.dataset} {cfg.image_size}×{cfg.image_size}×{cfg.channels} · "
            f"z of {cfg.nz} dims · ngf {cfg.ngf} · {kind}")


def picture(images: torch.Tensor, index: int = 0, side: int = 256) -> np.ndarray:
    return upscale(image_array(images[index]), side)


def class_vec(model: LoadedModel, labels: torch.Tensor) -> torch.Tensor | None:
    return latent.class_inputs(model.generator, labels, labels.shape[0])


def grid_latents(session: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    model = session_model(session)
    z = latent.sample_latents(model.config.nz, GRID, session["seed"], session["psi"])
    labels = torch.arange(GRID) % max(model.config.num_classes, 1)
    return z, labels


# ---- callbacks -------------------------------------------------------------------------------------


def grid_gallery(session: dict[str, Any]) -> list[tuple[np.ndarray, str]]:
    model = session_model(session)
    z, labels = grid_latents(session)
    images = latent.render(model.generator, z, class_vec(model, labels))
    return [(picture(images, i, 96), f"#{i}") for i in range(GRID)]


def slider_images(session: dict[str, Any], kind: str, first: float,
                  amounts: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(start image, moved image) for the session's z and the slider values."""
    model = session_model(session)
    G, z = model.generator, session["z"]
    cv = class_vec(model, torch.tensor([session["label"]]))
    dirs = (principal_directions_of(G) if kind == DIRECTION_KINDS[0]
            else latent.raw_directions(G.nz, NUM_SLIDERS, int(first or 0)))
    with torch.inference_mode():
        start = latent.render(G, z, cv)
        moved = latent.render(G, latent.move(z, dirs, [float(a) for a in amounts]), cv)
    return picture(start), picture(moved)


def directions_note(session: dict[str, Any], kind: str) -> str:
    if session.get("model") is None or kind != DIRECTION_KINDS[0]:
        return ""
    dirs = principal_directions_of(session["model"].generator)
    shares = ", ".join(f"{100 * e:.1f}%" for e in dirs.explained)
    return f"Share of G's feature variance along slider 1..{len(dirs.explained)}: {shares}"


def use_model(studio: Studio, source: str, session: dict[str, Any], kind: str, first: float):
    """Pin the chosen model in this browser session and redraw everything that depends on it."""
    model = pick_model(studio, source)
    session = dict(session, model=model, label=0)
    session["z"] = latent.sample_latents(model.config.nz, 1, session["seed"] + 1000)
    start, moved = slider_images(session, kind, first, [0.0] * NUM_SLIDERS)
    names = [str(c) for c in range(model.config.num_classes)]
    is_cond = bool(model.config.num_classes)
    return (session, model_summary(model), grid_gallery(session), start, moved,
            *[0.0] * NUM_SLIDERS, directions_note(session, kind),
            gr.update(choices=names, value=names[0] if names else None, interactive=is_cond),
            gr.update(choices=names, value=names[-1] if names else None, interactive=is_cond),
            "" if is_cond else "*This model is unconditional (trained with num_classes = 0): train with "
                               "`--num-classes 10` on digits to get class control.*")


def use_model_if_none(studio: Studio, source: str, session: dict[str, Any], kind: str, first: float):
    """When the tab is opened: pin the latest model if this browser has none yet and one exists."""
    if session.get("model") is None and studio.current_model(prefer_live=(source == LIVE)) is not None:
        return use_model(studio, source, session, kind, first)
    return tuple(gr.skip() for _ in range(6 + NUM_SLIDERS + 3))


def load_checkpoint(studio: Studio, name: str | None, session: dict[str, Any], kind: str, first: float):
    if not name:
        raise gr.Error("Pick a checkpoint in the list first (Refresh lists new ones).")
    try:
        studio.load_checkpoint(name)
    except Exception as exc:  # CheckpointError, ValueError (outside checkpoints/), OSError
        raise gr.Error(f"Could not load {name}: {exc}") from exc
    return (gr.update(value=LOADED), *use_model(studio, LOADED, session, kind, first))


def checkpoint_choices(studio: Studio) -> dict:
    root = studio.checkpoints_dir.resolve()
    names = [p.resolve().relative_to(root).as_posix() for p in studio.list_checkpoints()]
    return gr.update(choices=names, value=names[0] if names else None)


def new_samples(session: dict[str, Any], seed: float, psi: float):
    session = dict(session, seed=int(seed or 0), psi=float(psi))
    return session, grid_gallery(session)


def random_start(session: dict[str, Any], kind: str, first: float):
    """A fresh random z for the sliders."""
    model = session_model(session)
    seed = int(np.random.default_rng().integers(0, 2**31 - 1))
    session = dict(session, z=latent.sample_latents(model.config.nz, 1, seed))
    start, moved = slider_images(session, kind, first, [0.0] * NUM_SLIDERS)
    return session, start, moved, *[0.0] * NUM_SLIDERS


def on_pick(session: dict[str, Any], mode: str, ta: str, tb: str, tc: str, kind: str, first: float,
            evt: gr.SelectData):
    """A click on a grid sample: hand its number to the tool chosen in `mode`."""
    i = int(evt.index)
    skip = gr.skip()
    out = dict.fromkeys(("session", "start", "moved", "a", "b", "ta", "tb", "tc", "memo"), skip)
    sliders = [skip] * NUM_SLIDERS
    if mode == "sliders":
        z, labels = grid_latents(session)
        session = dict(session, z=z[i:i + 1].clone(), label=int(labels[i]))
        out["session"] = session
        out["start"], out["moved"] = slider_images(session, kind, first, [0.0] * NUM_SLIDERS)
        sliders = [0.0] * NUM_SLIDERS
    elif mode == "interpolation start":
        out["a"] = i
    elif mode == "interpolation end":
        out["b"] = i
    elif mode.startswith("arithmetic"):
        letter = mode.split()[1]
        current = {"A": ta, "B": tb, "C": tc}[letter] or ""
        out["t" + letter.lower()] = f"{current.strip()} {i}".strip()
    elif mode == "memorisation check":
        out["memo"] = i
    return (out["session"], out["start"], out["moved"], *sliders, out["a"], out["b"],
            out["ta"], out["tb"], out["tc"], out["memo"])


def run_interpolation(session: dict[str, Any], a: float, b: float, frames: float, mode: str):
    model = session_model(session)
    z, labels = grid_latents(session)
    ia, ib = latent.parse_indices(f"{int(a)} {int(b)}", GRID)
    path = latent.interpolate(z[ia], z[ib], int(frames), mode)
    # class: from A's to B's (the same when unconditional); one-hot mixed along the path
    t = torch.linspace(0, 1, path.shape[0]).view(-1, 1)
    cv = class_vec(model, labels[[ia, ib]])
    cv = None if cv is None else (1 - t) * cv[0] + t * cv[1]
    images = latent.render(model.generator, path, cv)
    return strip_picture(images), write_gif(images)


def strip_picture(images: torch.Tensor, side: int = 112) -> np.ndarray:
    """A row of images, each enlarged (nearest neighbour) to about `side` pixels."""
    factor = max(1, round(side / images.shape[-1]))
    big = torch.nn.functional.interpolate(images.float(), scale_factor=factor, mode="nearest")
    return grid_array(big, nrow=images.shape[0], padding=4)


def write_gif(images: torch.Tensor) -> str:
    frames = [picture(images, i, 192) for i in range(images.shape[0])]
    frames = frames + frames[-2:0:-1]  # there and back, so the loop has no jump
    if frames[0].ndim == 2:
        frames = [np.stack([f] * 3, axis=-1) for f in frames]
    path = Path(tempfile.mkdtemp(prefix="dcgan_explore_")) / "interpolation.gif"
    return str(save_gif(frames, path, duration_ms=90))


def equation_image(images: list[np.ndarray], signs: list[str]) -> np.ndarray:
    """Pictures side by side with the signs of the equation drawn between them."""
    from PIL import Image, ImageDraw, ImageFont

    side, gap = images[0].shape[0], 48
    width = len(images) * side + (len(images) - 1) * gap
    canvas = Image.new("RGB", (width, side), "white")
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=40)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    x = 0
    for k, img in enumerate(images):
        canvas.paste(Image.fromarray(img).convert("RGB"), (x, 0))
        x += side
        if k < len(signs):
            draw.text((x + gap // 2, side // 2), signs[k], fill="black", font=font, anchor="mm")
            x += gap
    return np.asarray(canvas)


def run_arithmetic(session: dict[str, Any], ta: str, tb: str, tc: str):
    model = session_model(session)
    z, labels = grid_latents(session)
    try:
        ia, ib, ic = (latent.parse_indices(t or "", GRID) for t in (ta, tb, tc))
    except ValueError as exc:
        raise gr.Error(f"Arithmetic: {exc}") from exc
    res = latent.vector_arithmetic(z, ia, ib, ic)
    G = model.generator
    cv = class_vec(model, labels[ic[:1]].expand(4))  # conditional: keep C's class
    images = latent.render(G, torch.cat([res.terms, res.result[None]]), cv)
    pics = [picture(images, i, 160) for i in range(4)]
    # the paper shows the result with a little noise added: is the effect robust?
    g = torch.Generator().manual_seed(0)
    jitter = res.result[None] + 0.25 * torch.randn(8, G.nz, generator=g)
    variants = latent.render(G, jitter, None if cv is None else cv[:1].expand(8, -1))
    eq = equation_image(pics, ["-", "+", "="])
    return eq, strip_picture(variants, 96)


def run_class_control(session: dict[str, Any], class_a: str | None, class_b: str | None, frames: float):
    model = session_model(session)
    n = model.config.num_classes
    if not n:
        raise gr.Error("This model is unconditional: class control needs a model trained with num_classes > 0.")
    z = session["z"]
    every = latent.render(model.generator, z.expand(n, -1), class_vec(model, torch.arange(n)))
    ca, cb = int(class_a or 0), int(class_b or 0)
    t = torch.linspace(0, 1, int(frames)).view(-1, 1)
    onehots = class_vec(model, torch.tensor([ca, cb]))
    path = latent.render(model.generator, z.expand(t.shape[0], -1), (1 - t) * onehots[0] + t * onehots[1])
    return strip_picture(every), strip_picture(path), write_gif(path)


def editor_array(value: Any) -> np.ndarray | None:
    """The picture in a gr.ImageEditor value (its composite) or a plain array."""
    if isinstance(value, dict):
        value = value.get("composite") if value.get("composite") is not None else value.get("background")
    return None if value is None else np.asarray(value)


def run_inversion(session: dict[str, Any], editor: Any, restarts: float, steps: float, kind: str, first: float,
                  progress: gr.Progress = gr.Progress()):
    model = session_model(session)
    arr = editor_array(editor)
    if arr is None or arr.size == 0 or (arr.ndim == 3 and arr.shape[2] == 4 and arr[..., 3].max() == 0):
        raise gr.Error("Upload an image or draw one in the box first.")
    G = model.generator
    try:
        target = latent.target_from_array(arr, G)
    except (ValueError, OSError) as exc:
        raise gr.Error(f"Could not read the image: {exc}") from exc
    progress(0.1, desc="optimising z")
    inv = latent.invert(G, target, restarts=int(restarts), steps=int(steps))
    session = dict(session, z=inv.z[None].clone(), label=inv.label or 0)
    start, moved = slider_images(session, kind, first, [0.0] * NUM_SLIDERS)
    cls = f" · best class {inv.label}" if inv.label is not None else ""
    verdict = ("close: G can draw this" if inv.mse < 0.02 else
               "rough: G draws the nearest thing it can" if inv.mse < 0.1 else
               "poor: this is outside what G learned")
    text = (f"Reconstruction error: MSE {inv.mse:.4f} on the [−1, 1] scale · PSNR {inv.psnr:.1f} dB{cls} · "
            f"{verdict}. Loss went {inv.losses[0]:.3f} → {inv.losses[-1]:.3f} over {len(inv.losses)} steps. "
            f"It is now the slider start: open *Sliders* to edit it.")
    diff = (inv.image - target).abs().mean(0, keepdim=True) * 2 - 1  # |error| as a grey picture
    return (session, picture(target[None]), picture(inv.image[None]), picture(diff[None]), text,
            start, moved, *[0.0] * NUM_SLIDERS)


def run_memorisation(session: dict[str, Any], index: float, use_slider_start: bool, k: float = 8):
    model = session_model(session)
    if use_slider_start:
        z, label = session["z"], torch.tensor([session["label"]])
    else:
        zs, labels = grid_latents(session)
        i = latent.parse_indices(str(int(index)), GRID)[0]
        z, label = zs[i:i + 1], labels[i:i + 1]
    sample = latent.render(model.generator, z, class_vec(model, label))
    try:
        data = latent.dataset_for(model.config)
    except Exception as exc:  # DatasetError (offline), OSError
        raise gr.Error(f"The training data of this model could not be loaded: {exc}") from exc
    d, idx = latent.nearest_training(sample, data.train, k=int(k))
    yardstick = latent.heldout_nn_distance(data)
    gallery = [(picture(sample, 0, 128), "sample")]
    gallery += [(upscale(image_array(data.train[j].float() / 127.5 - 1), 128), f"#{j}: {dist:.3f}")
                for j, dist in zip(idx[0].tolist(), d[0].tolist(), strict=True)]
    nearest = float(d[0, 0])
    ratio = nearest / yardstick if yardstick == yardstick and yardstick > 0 else float("nan")
    verdict = ("looks like a copy of a training image" if ratio < 0.3 else
               "closer than usual to a training image: look at the pictures" if ratio < 0.7 else
               "no closer to the training set than new real images are: not a copy")
    text = (f"Nearest training image at distance **{nearest:.3f}**; held-out real images are typically "
            f"**{yardstick:.3f}** from theirs (ratio {ratio:.2f}): {verdict}. "
            f"Searched {data.train.shape[0]} training images of '{data.name}'.")
    return gallery, text


def run_diversity(session: dict[str, Any], n: float, progress: gr.Progress = gr.Progress()):
    model = session_model(session)
    try:
        data = latent.dataset_for(model.config)
    except Exception as exc:  # DatasetError (offline), OSError
        raise gr.Error(f"The training data of this model could not be loaded: {exc}") from exc
    real = data.val if data.val.shape[0] >= 32 else data.train
    progress(0.2, desc="pairwise distances")
    div = latent.diversity(model.generator, real, n=int(n), psi=session["psi"])
    bins = np.linspace(0, max(float(div.generated_distances.max()), float(div.real_distances.max()), 1e-3), 25)
    rows = []
    for name, dists in (("generated", div.generated_distances), ("real", div.real_distances)):
        counts, _ = np.histogram(dists.numpy(), bins=bins)
        share = counts / max(counts.sum(), 1)
        rows += [{"distance": round(float((lo + hi) / 2), 4), "share of pairs": float(s), "images": name}
                 for lo, hi, s in zip(bins[:-1], bins[1:], share, strict=True)]
    verdict = ("healthy: samples vary about as much as real images" if div.ratio > 0.8 else
               "somewhat less varied than the data" if div.ratio > 0.5 else
               "low diversity: signs of mode collapse")
    text = (f"## Diversity {div.ratio:.2f}\nMean pairwise distance of {int(n)} samples **{div.generated:.3f}** versus "
            f"**{div.real:.3f}** for real images ({verdict}).")
    classes = pd.DataFrame({"digit": [], "share of images": [], "images": []})
    if model.config.dataset == "digits":
        progress(0.6, desc="classifying digits (the classifier trains once, ~20 s, on first use)")
        fake_counts, real_counts = latent.digit_coverage(model.generator, real, n=int(n))
        classes = pd.DataFrame(
            [{"digit": d, "share of images": c / max(sum(counts), 1), "images": name}
             for name, counts in (("generated", fake_counts), ("real", real_counts))
             for d, c in enumerate(counts)])
        covered = sum(1 for c in fake_counts if c >= 0.02 * int(n))
        text += f"\n\nDigits present in the samples (≥ 2% each): **{covered} of 10**."
    return text, pd.DataFrame(rows), classes


# ---- layout ---------------------------------------------------------------------------------------------


def build(studio: Studio) -> None:
    """The Explore tab's components and events; call inside `with gr.Tab("Explore")`."""
    session = gr.State(new_session())
    gr.Markdown("Explore what the generator learned. Pick a model, then use the tools below. "
                "Everything runs on the CPU copy of G, so it works while a run trains.")
    with gr.Row():
        with gr.Column(scale=3):
            source = gr.Radio([LIVE, LOADED], value=LIVE, label="model")
            use_btn = gr.Button("Use latest (live run's newest snapshot, or the loaded model)", variant="primary",
                                size="sm", elem_id="explore-use")
        with gr.Column(scale=3):
            checkpoint = gr.Dropdown(choices=[], label="checkpoint (in checkpoints/)", elem_id="explore-checkpoint")
            with gr.Row():
                load_btn = gr.Button("Load checkpoint", size="sm", elem_id="explore-load")
                refresh_btn = gr.Button("Refresh list", size="sm")
    summary = gr.Markdown("*No model chosen yet.*", elem_id="explore-summary")

    with gr.Row():
        with gr.Column(scale=2):
            gr.Markdown(NOTE_GRID)
            with gr.Row(equal_height=True):
                seed = gr.Number(0, label="grid seed", precision=0, minimum=0, scale=1)
                psi = gr.Slider(0.0, 1.5, value=1.0, step=0.05, label="truncation ψ", scale=2)
            samples_btn = gr.Button("New samples", size="sm")
            gallery = gr.Gallery(label="samples #0..#15", columns=4, height="auto", allow_preview=False,
                                 elem_id="explore-grid")
            pick_mode = gr.Radio(PICK_MODES, value="sliders", label="clicking a sample sets")
        with gr.Column(scale=3):
            with gr.Tab("Sliders"):
                gr.Markdown(NOTE_SLIDERS)
                with gr.Row(equal_height=True):
                    kind = gr.Radio(DIRECTION_KINDS, value=DIRECTION_KINDS[0], label="slider directions", scale=2)
                    first = gr.Number(0, label="first raw dimension", precision=0, minimum=0, scale=1)
                with gr.Row():
                    with gr.Column(scale=1):
                        sliders = [gr.Slider(-3, 3, value=0, step=0.1, label=f"direction {j + 1}",
                                             elem_id=f"explore-slider-{j + 1}") for j in range(NUM_SLIDERS)]
                    with gr.Column(scale=1):
                        with gr.Row():
                            start_img = gr.Image(label="start", height=220, interactive=False,
                                                 elem_id="explore-start")
                            moved_img = gr.Image(label="moved", height=220, interactive=False,
                                                 elem_id="explore-moved")
                        with gr.Row():
                            random_btn = gr.Button("Random z", size="sm")
                            reset_btn = gr.Button("Reset sliders", size="sm")
                        note = gr.Markdown()
            with gr.Tab("Interpolation"):
                gr.Markdown(NOTE_INTERP)
                with gr.Row():
                    a_num = gr.Number(0, label="from sample #", precision=0)
                    b_num = gr.Number(1, label="to sample #", precision=0)
                    frames = gr.Slider(3, 16, value=8, step=1, label="frames")
                    mode = gr.Radio(["slerp", "lerp"], value="slerp", label="path")
                interp_btn = gr.Button("Interpolate", variant="primary")
                strip = gr.Image(label="frames", interactive=False)
                gif = gr.Image(label="animation (GIF)", type="filepath", interactive=False, height=200)
            with gr.Tab("Arithmetic"):
                gr.Markdown(NOTE_ARITH)
                with gr.Row():
                    term_a = gr.Textbox("0 1 2", label="A: sample numbers (+)")
                    term_b = gr.Textbox("3 4 5", label="B: sample numbers (−)")
                    term_c = gr.Textbox("6 7 8", label="C: sample numbers (+)")
                arith_btn = gr.Button("Compute mean(A) − mean(B) + mean(C)", variant="primary")
                equation = gr.Image(label="equation (each term is the image of the averaged latent)",
                                    interactive=False)
                variants = gr.Image(label="result + small noise (is the effect robust?)", interactive=False)
            with gr.Tab("Classes"):
                gr.Markdown(NOTE_CLASS)
                cond_note = gr.Markdown()
                with gr.Row():
                    class_a = gr.Dropdown([], label="from class")
                    class_b = gr.Dropdown([], label="to class")
                    class_frames = gr.Slider(3, 16, value=8, step=1, label="frames")
                class_btn = gr.Button("Draw the slider's z as every class", variant="primary")
                every_class = gr.Image(label="same z, every class", interactive=False)
                class_strip = gr.Image(label="class interpolation, z fixed", interactive=False)
                class_gif = gr.Image(label="animation (GIF)", type="filepath", interactive=False, height=200)
            with gr.Tab("Inversion"):
                gr.Markdown(NOTE_INVERT)
                with gr.Row():
                    editor = gr.ImageEditor(label="your image: upload, paste or draw", type="numpy",
                                            sources=("upload", "clipboard"), canvas_size=(280, 280),
                                            height=340, brush=gr.Brush(default_size=18, colors=["#000000"]),
                                            elem_id="explore-editor")
                    with gr.Column():
                        restarts = gr.Slider(1, 8, value=4, step=1, label="random restarts")
                        steps = gr.Slider(50, 600, value=250, step=50, label="optimisation steps")
                        invert_btn = gr.Button("Invert: find z", variant="primary")
                with gr.Row():
                    target_img = gr.Image(label="target as G sees it", interactive=False, height=200)
                    recon_img = gr.Image(label="reconstruction G(z)", interactive=False, height=200)
                    error_img = gr.Image(label="|error|", interactive=False, height=200)
                invert_text = gr.Markdown()
            with gr.Tab("Memorisation"):
                gr.Markdown(NOTE_MEMO)
                with gr.Row():
                    memo_num = gr.Number(0, label="sample #", precision=0)
                    memo_start = gr.Checkbox(False, label="use the slider start instead (e.g. an inversion)")
                    memo_btn = gr.Button("Find nearest training images", variant="primary")
                memo_gallery = gr.Gallery(label="sample and its nearest training images (distance)", columns=5,
                                          height="auto", allow_preview=False)
                memo_text = gr.Markdown()
            with gr.Tab("Diversity"):
                gr.Markdown(NOTE_DIVERSITY)
                with gr.Row():
                    div_n = gr.Slider(64, 512, value=256, step=64, label="samples")
                    div_btn = gr.Button("Measure diversity", variant="primary")
                div_text = gr.Markdown()
                div_plot = gr.LinePlot(x="distance", y="share of pairs", color="images",
                                       title="pairwise distances: generated vs real", height=260)
                class_plot = gr.LinePlot(x="digit", y="share of images", color="images",
                                         title="digits a classifier sees in them (digits models)", height=260)

    # ---- events ----
    model_outputs = [session, summary, gallery, start_img, moved_img, *sliders, note, class_a, class_b, cond_note]
    use_btn.click(lambda src, s, k, f: use_model(studio, src, s, k, f), [source, session, kind, first],
                  model_outputs)
    load_btn.click(lambda name, s, k, f: load_checkpoint(studio, name, s, k, f), [checkpoint, session, kind, first],
                   [source, *model_outputs])
    refresh_btn.click(lambda: checkpoint_choices(studio), None, checkpoint)
    tab = gr.context.Context.block  # the Explore tab app.py opened around us
    if isinstance(tab, gr.Tab):
        tab.select(lambda src, s, k, f: use_model_if_none(studio, src, s, k, f), [source, session, kind, first],
                   model_outputs)
    root = gr.context.Context.root_block
    if root is not None:
        root.load(lambda: checkpoint_choices(studio), None, checkpoint)

    samples_btn.click(new_samples, [session, seed, psi], [session, gallery])
    psi.release(new_samples, [session, seed, psi], [session, gallery])

    def slide(s, k, f, *amounts):
        return slider_images(s, k, f, list(amounts))[1]

    for sl in sliders:
        sl.input(slide, [session, kind, first, *sliders], moved_img, trigger_mode="always_last",
                 show_progress="hidden")
    kind.change(lambda s, k, f, *a: (slide(s, k, f, *a), directions_note(s, k)) if s.get("model") else
                (gr.skip(), ""), [session, kind, first, *sliders], [moved_img, note])
    first.submit(slide, [session, kind, first, *sliders], moved_img)
    reset_btn.click(lambda s, k, f: (slider_images(s, k, f, [0.0] * NUM_SLIDERS)[1], *[0.0] * NUM_SLIDERS),
                    [session, kind, first], [moved_img, *sliders])
    random_btn.click(random_start, [session, kind, first], [session, start_img, moved_img, *sliders])

    gallery.select(on_pick, [session, pick_mode, term_a, term_b, term_c, kind, first],
                   [session, start_img, moved_img, *sliders, a_num, b_num, term_a, term_b, term_c, memo_num])
    interp_btn.click(run_interpolation, [session, a_num, b_num, frames, mode], [strip, gif])
    arith_btn.click(run_arithmetic, [session, term_a, term_b, term_c], [equation, variants])
    class_btn.click(run_class_control, [session, class_a, class_b, class_frames], [every_class, class_strip, class_gif])
    invert_btn.click(run_inversion, [session, editor, restarts, steps, kind, first],
                     [session, target_img, recon_img, error_img, invert_text, start_img, moved_img, *sliders])
    memo_btn.click(run_memorisation, [session, memo_num, memo_start], [memo_gallery, memo_text])
    div_btn.click(run_diversity, [session, div_n], [div_text, div_plot, class_plot])
