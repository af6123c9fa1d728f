"""Five built-in lessons (issue 26): look, predict, run, reveal, and why.

Each lesson says what to look at, asks one prediction *before* its run (a choice or a slider value: Distill's
"predict before revealing"), runs a small set-up on the app's one trainer (Studio.start, with single D-only steps
where the lesson needs them), reads the outcome from what the run reports (the Trainer's metric rows, its
fixed-noise frames, its latest generator), then draws the prediction against what happened and says why.
Every lesson reaches its point within 90 s of training on a 2-core CPU (README, "Teaching with DCGAN Studio").

The class's answers (`ClassAnswers`) are anonymous, in memory and per lesson: a random token per browser (never
a name) so a changed answer replaces the old one; a restart clears them. A browser's own progress (its token, its
predictions, what it saw) lives in that browser (gr.BrowserState in ui/lessons.py), so it survives a reload.

Readers are plain functions of a `RunView` (rows, frames, generator, status), so tests drive them without a run.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from .data import to_float
from .images import grid_array
from .latent import dataset_for, interpolate
from .models import Generator, sample, seeded_latents
from .trainer import ACTIVE, FINISHED, PAUSED, STOPPED, Status

MAX_ANSWERS = 5000  # per lesson: a class, not a crowd; beyond it the oldest answer goes
SLIDER_BINS = 10  # the class histogram of a slider question


# ---- questions and readings --------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """The prediction asked before the run: a choice among `choices`, or a slider value in [low, high]."""

    text: str
    choices: tuple[str, ...] = ()
    low: float = 0.0
    high: float = 1.0
    step: float = 0.01

    @property
    def slider(self) -> bool:
        return not self.choices

    def check(self, answer: Any) -> float | str:
        """The answer as stored; ValueError for one the question does not allow (a page sends only these)."""
        if self.choices:
            if answer not in self.choices:
                raise ValueError(f"choose one of: {', '.join(self.choices)}")
            return str(answer)
        try:
            value = float(answer)
        except (TypeError, ValueError):
            raise ValueError(f"a number from {self.low:g} to {self.high:g}") from None
        if not (math.isfinite(value) and self.low <= value <= self.high):
            raise ValueError(f"a number from {self.low:g} to {self.high:g}")
        return value

    def bins(self) -> list[str]:
        """The class histogram's bars: each choice, or SLIDER_BINS equal ranges of the slider."""
        if self.choices:
            return list(self.choices)
        edges = np.linspace(self.low, self.high, SLIDER_BINS + 1)
        decimals = 0 if self.step >= 1 else 1
        width = len(str(int(abs(self.high)))) + (decimals + 1 if decimals else 0)
        # fixed width, so the bars sort as text in their own order ("0.9–1.0", "07–13", ...)
        return [f"{a:0{width}.{decimals}f}–{b:0{width}.{decimals}f}"
                for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def bin_of(self, answer: float | str) -> int:
        if self.choices:
            return self.choices.index(answer)
        share = (float(answer) - self.low) / (self.high - self.low)
        return min(int(share * SLIDER_BINS), SLIDER_BINS - 1)


@dataclass(frozen=True)
class Reading:
    """What a run shows for a lesson so far. `value` is the outcome in the question's terms (a number on the
    slider's scale or one of its choices) once `reached`; `curves` are rows {x, y, series} for the reveal plot."""

    reached: bool
    value: float | str | None = None
    text: str = ""  # what happened, in words and numbers
    curves: list[dict] = field(default_factory=list)
    x_title: str = "iteration"
    y_title: str = ""
    picture: np.ndarray | None = None  # uint8 HxWx3 for the reveal (frames, an interpolation), or None


@dataclass(frozen=True)
class RunView:
    """What a reader needs of the live run, read once from the trainer."""

    status: Status
    config: TrainConfig | None
    rows: list[dict]
    frames: list[tuple[int, np.ndarray]]
    generator: Callable[[], Generator | None] = lambda: None

    @classmethod
    def of(cls, trainer: Any) -> RunView:
        return cls(trainer.status(), trainer.config, trainer.metrics.since(0), trainer.frames(),
                   lambda: trainer.generator()[1])


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    look: str  # what to look at, before predicting
    question: Question
    setup: Mapping[str, Any]  # form values (Studio.build_config) for the run
    read: Callable[[RunView], Reading]
    why: str  # the short explanation shown with the reveal
    d_only: int = 0  # single D-only steps asked for right after the start (the run pauses for them)
    picture_every_s: float = 3.0  # how often the run draws its fixed-noise grid (the timeline's frames)
    runs_for: str = ""  # how long the run takes, in words, for the page


# ---- reading numbers out of a run ----------------------------------------------------------------


def _finite(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(int(r["iteration"]), float(r[key])) for r in rows
            if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]


def _mean_last(points: list[tuple[int, float]], n: int) -> float:
    return float(np.mean([v for _, v in points[-n:]])) if points else float("nan")


def _ended(view: RunView) -> bool:
    return view.status.state in (FINISHED, STOPPED) or (view.status.total > 0
                                                         and view.status.iteration >= view.status.total)


def grid_images(grid: np.ndarray, size: int, channels: int, padding: int = 2) -> torch.Tensor:
    """The images of a fixed-noise grid (dcgan.images.grid_array's layout: 8 per row, `padding` pixels apart)
    as float [-1, 1] [N, C, size, size]."""
    cell = size + padding
    rows, cols = (grid.shape[0] - padding) // cell, (grid.shape[1] - padding) // cell
    tiles = [grid[padding + r * cell: padding + r * cell + size, padding + c * cell: padding + c * cell + size]
             for r in range(rows) for c in range(cols)]
    images = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)[:, :channels]
    return to_float(images.contiguous())


def sharpness(images: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels: thin crisp strokes score high, soft blobs low."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    return float((dx + dy) / 2)


def ink(images: torch.Tensor) -> float:
    """Share of pixels brighter than mid-grey: how much of the picture is drawn (digits: white on black)."""
    return float((images > 0).float().mean())


def mid_grey(images: torch.Tensor) -> float:
    """Share of pixels that are neither background nor ink (|x| < 0.5): high for a double exposure."""
    return float((images.abs() < 0.5).float().mean())


def real_reference(cfg: TrainConfig, n: int = 64) -> torch.Tensor:
    """n real training images of the run's data set (float [-1, 1]), the same ones each time."""
    data = dataset_for(cfg)
    pick = torch.randperm(data.train.shape[0], generator=torch.Generator().manual_seed(0))[:n]
    return to_float(data.train[pick])


def _distances(images: torch.Tensor) -> torch.Tensor:
    """RMS pixel distance of every pair, as a full [N, N] matrix (latent.pairwise_distances' measure)."""
    flat = images.float().flatten(1)
    return torch.cdist(flat, flat) / math.sqrt(flat.shape[1])


def look_threshold(real: torch.Tensor, share: float = 0.5) -> float:
    """Two images closer than this look alike: `share` of the typical nearest-neighbour distance among real images."""
    real_d = _distances(real)
    real_d.fill_diagonal_(float("inf"))
    return share * float(real_d.min(dim=1).values.median())


def distinct_looks(images: torch.Tensor, threshold: float) -> int:
    """How many different-looking images there are among `images`: greedy groups of images closer to one another
    than `threshold` (look_threshold). Real images count (almost) all as distinct; a collapsed generator's count
    drops to a handful."""
    near = (_distances(images) <= threshold).numpy()
    left, groups = np.ones(images.shape[0], dtype=bool), 0
    while left.any():
        first = int(np.argmax(left))
        left &= ~near[first]
        groups += 1
    return groups


# ---- the five lessons' readers ------------------------------------------------------------------------


WHO_WINS_STEPS = 300
STRONG_D_STEPS = 200
COLLAPSE_STEPS = 300
COLLAPSE_FROM = 100  # the untrained start draws alike pictures too: counted from here
LEARN_STEPS = 500
WALK_STEPS = 500


def read_who_wins(view: RunView) -> Reading:
    d_real, d_fake = _finite(view.rows, "d_real"), _finite(view.rows, "d_fake")
    curves = ([{"x": i, "y": v, "series": "D(x) real"} for i, v in d_real] +
              [{"x": i, "y": v, "series": "D(G(z)) fake"} for i, v in d_fake])
    if d_fake:
        curves += [{"x": d_fake[0][0], "y": 0.5, "series": "0.5 (can't tell)"},
                   {"x": d_fake[-1][0], "y": 0.5, "series": "0.5 (can't tell)"}]
    if not (_ended(view) and d_fake):
        return Reading(False, curves=curves, y_title="probability")
    fake, real = _mean_last(d_fake, 30), _mean_last(d_real, 30)
    leader = "D is winning" if fake < 0.4 else "G is fooling D" if fake > 0.6 else "nobody clearly wins"
    return Reading(True, round(fake, 3), f"After {view.status.iteration:,} iterations D(G(z)) averages **{fake:.2f}** "
                   f"over the last 30 iterations and D(x) **{real:.2f}**: {leader}.", curves, y_title="probability")


def read_strong_d(view: RunView) -> Reading:
    d_rows = [r for r in view.rows if r.get("update") == "d"]
    d_fake = _finite(d_rows, "d_fake")
    loss_d = _finite(d_rows, "loss_d")
    curves = [{"x": i, "y": v, "series": "D(G(z)) fake"} for i, v in d_fake] + \
        [{"x": i, "y": v, "series": "D(x) real"} for i, v in _finite(d_rows, "d_real")]
    if len(d_fake) < STRONG_D_STEPS and view.status.state != STOPPED:
        return Reading(False, curves=curves, y_title="probability")
    fake = _mean_last(d_fake, 10)
    return Reading(True, round(fake, 3), f"After {len(d_fake)} steps of D alone D(G(z)) is **{fake:.3f}** (it started "
                   f"at {d_fake[0][1]:.2f}) and D's loss {_mean_last(loss_d, 10):.3f}: D tells every fake apart.",
                   curves, y_title="probability")


def _frame_measure(view: RunView, measure: Callable[[torch.Tensor], float]) -> list[tuple[int, float]]:
    cfg = view.config
    if cfg is None:
        return []
    return [(it, measure(grid_images(grid, cfg.image_size, cfg.channels))) for it, grid in view.frames]


def read_collapse(view: RunView) -> Reading:
    cfg = view.config
    if cfg is None or not view.frames:
        return Reading(False)
    real = real_reference(cfg)
    threshold = look_threshold(real)
    looks = _frame_measure(view, lambda x: distinct_looks(x, threshold))
    real_looks = distinct_looks(real, threshold)
    curves = [{"x": i, "y": v, "series": "different-looking samples (of 64)"} for i, v in looks]
    curves += [{"x": looks[0][0], "y": real_looks, "series": "64 real images"},
               {"x": looks[-1][0], "y": real_looks, "series": "64 real images"}]
    if not _ended(view):
        return Reading(False, curves=curves, y_title="different-looking samples")
    settled = [p for p in looks if p[0] >= COLLAPSE_FROM] or looks
    worst_at, worst = min(settled, key=lambda p: p[1])
    frame = next(grid for it, grid in view.frames if it == worst_at)
    return Reading(True, float(worst), f"At its worst (iteration {worst_at:,}) the 64 fixed-noise samples showed "
                   f"only **{worst}** different looks; at the end {looks[-1][1]} (64 real digits: "
                   f"{real_looks}). The picture is the grid at its worst.", curves,
                   y_title="different-looking samples", picture=frame)


LEARN_CHOICES = ("the blobs: ink in the right amount and place", "the sharp strokes", "both at the same time")
SAME_WITHIN = 50  # iterations: two measures reaching their mark this close together count as the same time


def _first_close(points: list[tuple[int, float]], target: float, within: float = 0.15) -> int | None:
    return next((i for i, v in points if abs(v - target) <= within * target), None)


def read_learns_first(view: RunView) -> Reading:
    cfg = view.config
    if cfg is None or not view.frames:
        return Reading(False)
    real = real_reference(cfg)
    ink_real, sharp_real = ink(real), sharpness(real)
    inks = _frame_measure(view, ink)
    sharps = _frame_measure(view, sharpness)
    curves = ([{"x": i, "y": v / ink_real, "series": "ink, share of real"} for i, v in inks] +
              [{"x": i, "y": v / sharp_real, "series": "sharpness, share of real"} for i, v in sharps])
    if not _ended(view):
        return Reading(False, curves=curves, y_title="G's samples / real images")
    ink_at, sharp_at = _first_close(inks, ink_real), _first_close(sharps, sharp_real)
    if ink_at is None and sharp_at is None:
        value, what = LEARN_CHOICES[2], "neither measure came within 15 % of real images yet"
    elif sharp_at is None or (ink_at is not None and ink_at + SAME_WITHIN < sharp_at):
        value, what = LEARN_CHOICES[0], f"the ink came within 15 % of real digits at iteration {ink_at:,}, " + (
            f"the sharpness only at {sharp_at:,}" if sharp_at is not None else "the sharpness not yet")
    elif ink_at is None or sharp_at + SAME_WITHIN < ink_at:
        value, what = LEARN_CHOICES[1], f"the sharpness came within 15 % of real digits at iteration {sharp_at:,}, " + (
            f"the ink only at {ink_at:,}" if ink_at is not None else "the ink not yet")
    else:
        value, what = LEARN_CHOICES[2], f"ink at iteration {ink_at:,} and sharpness at {sharp_at:,}"
    picks = [view.frames[k][1] for k in sorted({0, len(view.frames) // 3, 2 * len(view.frames) // 3,
                                                 len(view.frames) - 1})]
    strip = np.concatenate([np.pad(p, ((0, 0), (0, 6), (0, 0)), constant_values=255) for p in picks], axis=1)
    return Reading(True, value, f"First: **{value}**. {what[0].upper() + what[1:]}.", curves,
                   y_title="G's samples / real images", picture=strip)


WALK_CHOICES = ("a crisp new image, like the two ends", "a double exposure: both images see-through",
                "noise")
WALK_PAIRS = 16


def read_latent_walk(view: RunView) -> Reading:
    if not _ended(view):
        return Reading(False)
    G = view.generator()
    if G is None:
        return Reading(False)
    z, labels = seeded_latents(G.nz, 2 * WALK_PAIRS, seed=7, num_classes=G.num_classes)
    a, b = z[:WALK_PAIRS], z[WALK_PAIRS:]
    ends = sample(G, z=torch.cat([a, b]), labels=None if labels is None else labels)
    middles = sample(G, z=torch.stack([interpolate(a[i], b[i], 3)[1] for i in range(WALK_PAIRS)]),
                     labels=None if labels is None else labels[:WALK_PAIRS])
    blends = (ends[:WALK_PAIRS] + ends[WALK_PAIRS:]) / 2
    grey_ends, grey_mid, grey_blend = mid_grey(ends), mid_grey(middles), mid_grey(blends)
    noise = sharpness(middles) > 3 * sharpness(ends)
    value = WALK_CHOICES[2] if noise else WALK_CHOICES[0] if abs(grey_mid - grey_ends) < abs(grey_mid - grey_blend) \
        else WALK_CHOICES[1]
    walk = sample(G, z=interpolate(a[0], b[0], 8), labels=None if labels is None else labels[:1].repeat(8))
    picture = grid_array(torch.cat([walk, blends[:1]]), nrow=9)  # the walk, then the pixel blend of its ends
    return Reading(True, value, f"Halfway between two latent vectors G draws **{value}**: the share of mid-grey "
                   f"pixels is {grey_mid:.2f} at the midpoints, {grey_ends:.2f} at the ends and {grey_blend:.2f} in "
                   f"a pixel blend of the ends ({WALK_PAIRS} pairs). The picture: a walk from z₁ to z₂, then the pixel "
                   f"blend of its two ends.", picture=picture)


# Every lesson trains the bundled digits on the CPU in fp32: the same numbers on every machine (a 28-pixel run this
# small gains little from a GPU), and the times measured in the README hold wherever the app runs.
DIGITS = MappingProxyType({"dataset": "digits", "image_size": "28", "channels": "1", "device": "cpu",
                           "precision": "fp32"})

LESSONS: tuple[Lesson, ...] = (
    Lesson("who-wins", "Who is winning? D(x), D(G(z)) and the 0.5 line",
           "D answers how likely an image is real. **D(x)** is its average answer on real digits, **D(G(z))** on "
           "G's fakes. If D could not tell them apart, both would sit on the **0.5** line. Watch the two curves "
           f"during a short default run ({WHO_WINS_STEPS} iterations).",
           Question(f"After {WHO_WINS_STEPS} iterations, where will D(G(z)) be (its average over the last 30)?"),
           {**DIGITS, "steps": WHO_WINS_STEPS}, read_who_wins,
           "D learns faster than G at first (telling apart is easier than drawing), so D(G(z)) drops below 0.5 "
           "and D(x) rises above it. G then learns from D's gradients, so D(G(z)) does not fall to 0: the two "
           "keep pulling at each other. A healthy GAN never settles at 0.5 exactly; it wobbles below it.",
           runs_for="about 20–40 s"),
    Lesson("strong-d", "A discriminator that is too strong",
           "What if D trains alone? Right after the start the run pauses and takes "
           f"{STRONG_D_STEPS} single steps updating **only D** (the Train tab's *Step k* with *D only*). "
           "G keeps drawing its first blurry guesses.",
           Question(f"After {STRONG_D_STEPS} steps of D only, where will D(G(z)) be?"),
           {**DIGITS, "steps": 100_000}, read_strong_d,
           "Nothing stops D from learning that every fake is fake: D(G(z)) falls to almost 0 and D's loss to "
           "almost 0. In the original minimax game G would minimise log(1 − D(G(z))), whose gradient vanishes "
           "exactly there: a too-strong D teaches G nothing. That is why DCGAN (and this app) trains G to "
           "maximise log D(G(z)) instead, which has its largest gradient when D(G(z)) is near 0. The run stays "
           "paused: press *Resume* on the Train tab to watch G recover.",
           d_only=STRONG_D_STEPS, runs_for="about 10–20 s"),
    Lesson("collapse", "Mode collapse: how many different things does G draw?",
           "Every one of the 64 fixed-noise samples gets a different z. A healthy G draws 64 different digits; "
           "a *collapsed* one draws a handful of shapes again and again. The count below groups samples that "
           "look alike (closer than half the distance between two neighbouring real digits). This run uses the "
           "paper's classic recipe with G's learning rate 25 times too high and D's halved "
           f"({COLLAPSE_STEPS} iterations).",
           Question(f"At its worst (after iteration {COLLAPSE_FROM}), how many of the 64 samples will look different?",
                    low=1, high=64, step=1),
           {**DIGITS, "preset": "classic", "steps": COLLAPSE_STEPS, "lr_g": 0.005, "lr_d": 0.0001,
            "ngf": 32, "ndf": 32}, read_collapse,
           "G is rewarded for whatever fools D *now*. With too large steps G jumps to the few shapes D currently "
           "believes and moves all of its samples there together; D then learns to reject those shapes and G jumps "
           "again. Nothing in the loss asks G to cover every digit, so variety is lost first. Remedies: smaller "
           "steps for G, EMA of G, R1 or WGAN-GP for D (the default recipe), or minibatch statistics.",
           picture_every_s=1.0, runs_for="about 30–50 s"),
    Lesson("learns-first", "What does G learn first? Blobs, strokes, digits",
           "The timeline keeps G's fixed-noise grid every second. Two numbers follow it: how much of each picture "
           "is **ink** (bright pixels, compared with real digits) and how **sharp** the edges are (the difference "
           "between neighbouring pixels, compared with real digits).",
           Question("Which will G get right first?", choices=LEARN_CHOICES),
           {**DIGITS, "steps": LEARN_STEPS}, read_learns_first,
           "D's first easy clue is the overall picture: too much or too little ink, in the wrong place. G fixes "
           "that first, with soft blobs. Sharp thin strokes need the upsampling layers to agree on fine detail, so "
           "they come later; whole legible digits come last. Convolutional Gs learn coarse to fine.",
           picture_every_s=1.0, runs_for="about 40–60 s"),
    Lesson("latent-walk", "Walking the latent space",
           "G turns a vector z of 100 numbers into a digit. Take two vectors z₁ and z₂ and walk from one to the "
           "other (spherical interpolation). The reveal shows the walk, then the two end images simply "
           "averaged pixel by pixel.",
           Question("Halfway between z₁ and z₂, what will G draw?", choices=WALK_CHOICES),
           {**DIGITS, "steps": WALK_STEPS}, read_latent_walk,
           "G maps *every* z to something that fooled D, so the midpoint is not a mix of two pictures but a "
           "picture of its own: the walk morphs one digit into another through plausible shapes. Averaging "
           "pixels gives a see-through double exposure, which D would reject. Directions in z (Explore tab) and "
           "vector arithmetic work for the same reason: G's output space is smooth in z.",
           runs_for="about 40–60 s"),
)
BY_ID = MappingProxyType({lesson.id: lesson for lesson in LESSONS})


def lesson(lesson_id: str | None) -> Lesson:
    if lesson_id not in BY_ID:
        raise KeyError(f"no lesson {lesson_id!r} (choose one of {', '.join(BY_ID)})")
    return BY_ID[lesson_id]


# ---- the class's answers and the lesson runs -------------------------------------------------------


class ClassAnswers:
    """Everyone's predictions, per lesson: anonymous (a random token per browser, so a changed answer replaces
    the old one), in memory only (a restart clears it), at most MAX_ANSWERS per lesson. Also which run is each
    lesson's, so every page reveals the same outcome."""

    def __init__(self, limit: int = MAX_ANSWERS) -> None:
        self.limit = limit
        self._lock = threading.Lock()
        self._answers: dict[str, dict[str, float | str]] = {}
        self._runs: dict[str, str] = {}

    def answer(self, lesson_id: str, token: str, value: Any) -> float | str:
        checked = lesson(lesson_id).question.check(value)
        if not token:
            raise ValueError("no browser token")
        with self._lock:
            answers = self._answers.setdefault(lesson_id, {})
            answers.pop(token, None)
            answers[token] = checked
            while len(answers) > self.limit:
                answers.pop(next(iter(answers)))
        return checked

    def answers(self, lesson_id: str) -> list[float | str]:
        with self._lock:
            return list(self._answers.get(lesson_id, {}).values())

    def histogram(self, lesson_id: str) -> list[tuple[str, int]]:
        """(bar, number of answers) for each bar of the lesson's question."""
        question = lesson(lesson_id).question
        counts = [0] * len(question.bins())
        for value in self.answers(lesson_id):
            counts[question.bin_of(value)] += 1
        return list(zip(question.bins(), counts, strict=True))

    def clear(self, lesson_id: str) -> None:
        with self._lock:
            self._answers.pop(lesson_id, None)

    def set_run(self, lesson_id: str, run_dir: str) -> None:
        with self._lock:
            self._runs[lesson_id] = run_dir

    def run_of(self, lesson_id: str) -> str | None:
        with self._lock:
            return self._runs.get(lesson_id)

    def runs(self) -> set[str]:
        """Every lesson's run folder."""
        with self._lock:
            return set(self._runs.values())


def class_answers(studio: Any) -> ClassAnswers:
    """The studio's one ClassAnswers (what every page of one app shares is the Studio's)."""
    return studio.lesson_answers


def config_of(studio: Any, lesson_id: str) -> TrainConfig:
    """The lesson's run, through the form's own rules (Studio.build_config)."""
    chosen = lesson(lesson_id)
    return studio.build_config(dict(chosen.setup)).replace(sample_every_s=chosen.picture_every_s)


def start(studio: Any, lesson_id: str, request: Any = None) -> str:
    """Start the lesson's run on the app's trainer (the owner's to do on a Space); returns its run folder."""
    studio.require_owner(request)
    chosen = lesson(lesson_id)
    # a lesson's run still going (strong-d's stays paused for Resume) gives way to the next lesson; a run of the
    # user's own is never stopped here (the start is refused with its reason)
    st = studio.trainer.status()
    if st.state in ACTIVE and st.run_dir in class_answers(studio).runs():
        studio.trainer.stop(wait=True)
    studio.start(config_of(studio, lesson_id))
    if chosen.d_only:
        studio.trainer.step(chosen.d_only, "d")
    run_dir = studio.trainer.status().run_dir
    class_answers(studio).set_run(lesson_id, run_dir)
    return run_dir


def reading(studio: Any, lesson_id: str) -> Reading | None:
    """What the lesson's run shows now; None when the trainer no longer holds it (another run replaced it) or
    it never started."""
    run_dir = class_answers(studio).run_of(lesson_id)
    st = studio.trainer.status()
    if not run_dir or st.run_dir != run_dir:
        return None
    view = RunView.of(studio.trainer)
    key = ("lesson", lesson_id, run_dir, str(view.status.state), len(view.rows), len(view.frames),
           view.frames[-1][0] if view.frames else -1)
    return studio.shared.get(key, lambda: lesson(lesson_id).read(view))  # once for every page polling together


def progress_text(studio: Any, lesson_id: str) -> str:
    """One line about the lesson's run for every page."""
    run_dir = class_answers(studio).run_of(lesson_id)
    st = studio.trainer.status()
    if not run_dir:
        return "The lesson's run has not started yet."
    if st.run_dir != run_dir:
        return "Another run has replaced this lesson's run: run the lesson again."
    state = "training" if st.state in ACTIVE and st.state != PAUSED else str(st.state)
    return f"Lesson run: **{state}**, iteration {st.iteration:,}."


__all__ = ["Lesson", "Question", "Reading", "RunView", "LESSONS", "BY_ID", "ClassAnswers", "class_answers",
           "lesson", "start", "reading", "config_of", "progress_text", "grid_images", "look_threshold",
           "distinct_looks", "ink", "sharpness", "mid_grey"]
