"""The Lessons tab: pick a lesson, predict, run it, see the reveal (dcgan/lessons.py holds the lessons).

Layout and wiring only. A browser's progress (its anonymous token, its locked predictions, the outcomes it saw)
is a gr.BrowserState, so a reload keeps it; the class's answers are the Studio's (dcgan.lessons.class_answers).
On a public Space the owner runs the lesson and sees everyone's predictions; visitors see their own.
"""

from __future__ import annotations

import uuid
from types import MappingProxyType
from typing import Any

import gradio as gr
import pandas as pd

from dcgan import lessons
from dcgan.studio import USER_ERRORS
from ui.common import OK, POLL, PRIVATE, QUIET, WARN, as_files, fast, problem
from ui.state import Studio

POLL_S = 1.5
STORAGE_KEY = "dcgan-studio-lessons"
SERIES_COLORS = MappingProxyType({"D(x) real": "#2ca02c", "D(G(z)) fake": "#ff7f0e", "0.5 (can't tell)": "#7f7f7f",
                                  "your prediction": "#9467bd", "64 real images": "#2ca02c",
                                  "different-looking samples (of 64)": "#ff7f0e", "ink, share of real": "#1f77b4",
                                  "sharpness, share of real": "#d62728"})  # as the Train tab colours D(x), D(G(z))
INTRO = ("### Lessons: predict, run, reveal\nEach lesson says what to look at, asks for your prediction **before** "
         "the run, trains a small set-up (under 90 s on a 2-core CPU), then draws your prediction against what "
         "happened and says why. Your progress stays in this browser; the class's answers are anonymous and "
         "kept in memory only.")


def fresh_progress(progress: Any) -> dict:
    """This browser's progress with its random token (never a name: it only lets a changed answer replace the
    old one)."""
    progress = dict(progress) if isinstance(progress, dict) else {}
    progress.setdefault("token", uuid.uuid4().hex)
    progress.setdefault("answers", {})
    progress.setdefault("seen", {})
    return progress


def owner(studio: Studio, request: Any) -> bool:
    try:
        studio.require_owner(request)
    except PermissionError:
        return False
    return True


def shown_answer(question: lessons.Question, value: Any) -> str:
    return f"{value:g}" if question.slider and isinstance(value, (int, float)) else str(value)


def lesson_view(lesson_id: str, progress: dict) -> list:
    """The lesson's text and question, with this browser's locked prediction (if any)."""
    chosen = lessons.lesson(lesson_id)
    q = chosen.question
    mine = progress["answers"].get(lesson_id)
    locked = mine is not None
    return [f"#### {chosen.title}\n{chosen.look}\n\n*The run takes {chosen.runs_for} on a 2-core CPU.*",
            f"**Your prediction:** {q.text}",
            gr.Radio(choices=list(q.choices), value=mine if locked and not q.slider else None, visible=not q.slider,
                     interactive=not locked),
            gr.Slider(minimum=q.low, maximum=q.high, step=q.step,
                      value=mine if locked and q.slider else (q.low + q.high) / 2, visible=q.slider,
                      interactive=not locked),
            gr.Button(interactive=not locked),
            f"{OK} Locked in: **{shown_answer(q, mine)}**" if locked else "",
            progress]


def reveal_view(studio: Studio, lesson_id: str, progress: dict, request: Any) -> tuple[list, list, dict]:
    """(outputs, their keys, progress): the lesson's status line, the reveal once this browser has predicted and the
    run has reached its point, and (for the owner) the class's answers beside the outcome. A poll sends only the
    outputs whose key changed (each chart sent costs the browser a redraw)."""
    chosen = lessons.lesson(lesson_id)
    q = chosen.question
    mine = progress["answers"].get(lesson_id)
    status = lessons.progress_text(studio, lesson_id)
    reading = lessons.reading(studio, lesson_id)
    seen = progress["seen"].get(lesson_id)
    if reading is not None and reading.reached and mine is not None:
        seen = {"value": reading.value, "text": reading.text}
        progress = {**progress, "seen": {**progress["seen"], lesson_id: seen}}
    plot, plot_key = gr.skip(), None
    if mine is None:
        reveal = "*Lock in your prediction first: the reveal follows the run.*"
    elif seen is None:
        reveal = "*The reveal appears here when the lesson's run reaches its point.*"
    else:
        right = _verdict(q, mine, seen["value"])
        reveal = (f"#### Reveal\nYou predicted **{shown_answer(q, mine)}**; what happened: "
                  f"**{shown_answer(q, seen['value'])}**. {right}\n\n{seen['text']}\n\n**Why:** {chosen.why}")
    if reading is not None and reading.curves:
        rows = list(reading.curves)
        if q.slider and mine is not None:  # from the first point: a chart draws no series it was built without
            xs = [r["x"] for r in rows]
            rows += [{"x": min(xs), "y": float(mine), "series": "your prediction"},
                     {"x": max(xs), "y": float(mine), "series": "your prediction"}]
        plot = gr.LinePlot(value=pd.DataFrame(rows), x_title=reading.x_title, y_title=reading.y_title,
                           visible=True)
        plot_key = (lesson_id, len(rows), rows[-1]["x"], mine)
    shows_picture = reading is not None and reading.picture is not None and seen is not None
    picture = (gr.Image(value=as_files(studio, reading.picture), visible=True) if shows_picture
               else gr.Image(visible=False))
    picture_key = (lesson_id, status, shows_picture)
    if owner(studio, request):
        hist = lessons.class_answers(studio).histogram(lesson_id)
        frame = pd.DataFrame([{"answer": bar, "count": n} for bar, n in hist])
        total = sum(n for _, n in hist)
        note = f"**The class's predictions** ({total} answer{'s' if total != 1 else ''}, anonymous)"
        if seen is not None:
            bar = hist[q.bin_of(seen["value"])][0]
            note += f". The outcome, **{shown_answer(q, seen['value'])}**, is in the bar *{bar}*."
        class_plot, hist_key = gr.BarPlot(value=frame, visible=True), (lesson_id, tuple(hist))
    else:
        note, class_plot, hist_key = "", gr.BarPlot(visible=False), None
    return ([status, reveal, plot, picture, note, class_plot],
            [status, reveal, plot_key, picture_key, note, hist_key], progress)


def _verdict(q: lessons.Question, mine: Any, outcome: Any) -> str:
    if outcome is None:
        return ""
    if q.slider:
        off = abs(float(mine) - float(outcome)) / (q.high - q.low)
        return "Close!" if off <= 0.1 else f"Off by {abs(float(mine) - float(outcome)):.3g}."
    return "Right!" if mine == outcome else "Not this time."


def build(studio: Studio, view: gr.State | None = None) -> dict:
    """The Lessons tab (inside `with gr.Tab("Lessons")`). Returns the browser's progress state, which the app
    renders outside every tab: inside a tab the page shows later, it would not be read back on a reload."""
    progress = gr.BrowserState({}, storage_key=STORAGE_KEY, render=False)
    gr.Markdown(INTRO)
    with gr.Row(equal_height=False):
        with gr.Column(scale=2, min_width=320):
            pick = gr.Dropdown([(x.title, x.id) for x in lessons.LESSONS], value=lessons.LESSONS[0].id,
                               label="Lesson", elem_id="lesson-pick")
            look = gr.Markdown(elem_id="lesson-look")
            question = gr.Markdown(elem_id="lesson-question")
            choice = gr.Radio([], label="Choose one", elem_id="lesson-choice", visible=False)
            slider = gr.Slider(0, 1, label="Your value", elem_id="lesson-slider", visible=False)
            predict_btn = gr.Button("Lock in my prediction", variant="primary", elem_id="lesson-predict-btn")
            mine = gr.Markdown(elem_id="lesson-mine")
            run_btn = gr.Button("Run the lesson", elem_id="lesson-run-btn")
            message = gr.Markdown(elem_id="lesson-message")
            status = gr.Markdown(elem_id="lesson-status")
        with gr.Column(scale=3, min_width=420):
            reveal = gr.Markdown(elem_id="lesson-reveal")
            plot = gr.LinePlot(None, x="x", y="y", color="series", label="What happened", visible=False,
                               elem_id="lesson-plot", color_map=dict(SERIES_COLORS))
            picture = gr.Image(label="The run's samples", interactive=False, format="png", visible=False,
                               elem_id="lesson-picture")
            class_note = gr.Markdown(elem_id="lesson-class-note")
            class_plot = gr.BarPlot(None, x="answer", y="count", label="The class's predictions", visible=False,
                                    elem_id="lesson-class-plot")
            clear_btn = gr.Button("Clear the class's answers", size="sm", elem_id="lesson-clear-btn")
    timer = gr.Timer(POLL_S)
    shown = [look, question, choice, slider, predict_btn, mine, progress]
    revealed = [status, reveal, plot, picture, class_note, class_plot]

    def on_load(saved: Any, request: gr.Request):
        progress_value = fresh_progress(saved)
        asked = dict(request.query_params).get("lesson") if request is not None else None
        lesson_id = asked if asked in lessons.BY_ID else progress_value.get("lesson", lessons.LESSONS[0].id)
        lesson_id = lesson_id if lesson_id in lessons.BY_ID else lessons.LESSONS[0].id
        progress_value["lesson"] = lesson_id
        outputs, _, progress_value = reveal_view(studio, lesson_id, progress_value, request)
        return [gr.Dropdown(value=lesson_id), *lesson_view(lesson_id, progress_value)[:-1], progress_value,
                *outputs]

    def on_pick(lesson_id: str, saved: Any, request: gr.Request):
        progress_value = {**fresh_progress(saved), "lesson": lesson_id}
        outputs, _, progress_value = reveal_view(studio, lesson_id, progress_value, request)
        return [*lesson_view(lesson_id, progress_value)[:-1], progress_value, "", *outputs]

    def on_predict(lesson_id: str, picked: Any, value: Any, saved: Any):
        progress_value = fresh_progress(saved)
        q = lessons.lesson(lesson_id).question
        try:
            answer = lessons.class_answers(studio).answer(lesson_id, progress_value["token"],
                                                          value if q.slider else picked)
        except ValueError as exc:
            return [gr.skip()] * (len(shown) - 1) + [progress_value, f"{WARN} Your prediction: {exc}."]
        progress_value["answers"] = {**progress_value["answers"], lesson_id: answer}
        progress_value["seen"] = {k: v for k, v in progress_value["seen"].items() if k != lesson_id}
        return [*lesson_view(lesson_id, progress_value)[:-1], progress_value, ""]

    def on_run(lesson_id: str, saved: Any, request: gr.Request) -> str:
        if lesson_id not in fresh_progress(saved)["answers"]:
            return f"{WARN} Lock in your prediction first: predicting before you see is the point."
        try:
            lessons.start(studio, lesson_id, request)
        except USER_ERRORS as exc:
            return problem(exc, again="Run the lesson")
        return f"{OK} The lesson's run has started: watch it here or on the Train tab."

    def on_poll(lesson_id: str, saved: Any, sent_keys: list | None, request: gr.Request):
        outputs, keys, progress_value = reveal_view(studio, lesson_id, fresh_progress(saved), request)
        sent_keys = sent_keys or [None] * len(keys)
        fresh = [out if key is None or key != old else gr.skip()
                 for out, key, old in zip(outputs, keys, sent_keys, strict=True)]
        return [*fresh, progress_value if progress_value != saved else gr.skip(), keys]

    def on_clear(lesson_id: str, request: gr.Request) -> str:
        if not owner(studio, request):
            return f"{WARN} Only the owner can clear the class's answers."
        lessons.class_answers(studio).clear(lesson_id)
        return f"{OK} The class's answers to this lesson are cleared."

    # the readers run torch: with one thread each, as every serving request (ui/queues.py), beside the training run
    if gr.context.Context.root_block is not None:
        gr.context.Context.root_block.load(fast(on_load), progress, [pick, *shown, *revealed], **QUIET, **PRIVATE)
    pick.input(fast(on_pick), [pick, progress], [*shown, message, *revealed], show_progress_on=message, **PRIVATE)
    predict_btn.click(on_predict, [pick, choice, slider, progress], [*shown, message], **PRIVATE)
    run_btn.click(on_run, [pick, progress], message, concurrency_limit=1, concurrency_id="train-control",
                  **PRIVATE)
    sent = gr.State(None)  # what this page's polls sent last (reveal_view's keys)
    timer.tick(fast(on_poll), [pick, progress, sent], [*revealed, progress, sent], **QUIET, **POLL,
               **PRIVATE)
    clear_btn.click(on_clear, pick, message, **PRIVATE)
    return {"progress": progress}
