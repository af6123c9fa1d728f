"""DCGAN Studio web app: `python app.py` serves http://127.0.0.1:7860 (0.0.0.0 on a Hugging Face Space).

A thin shell: one Studio (one trainer) per process shared by every browser, one module per tab under ui/,
and one view state per browser (what it explores) shared by its tabs. Options: --host, --port, --checkpoints
(or GRADIO_SERVER_NAME, GRADIO_SERVER_PORT, DCGAN_CHECKPOINTS): the one folder the app writes into.
SIGTERM (a Space or container stopping) saves the live run before the process ends.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no phoning home: the app works offline
# Gradio's queue summarises its last 10,000 events with pandas after every event, by default (for its monitoring
# page): under a class's load that cost grows with every request served and held the GIL for seconds a minute,
# so answers slowed from one crowd to the next against the same app (docs/ROBUSTNESS.md). Once per 1,000 events.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
os.environ.setdefault("GRADIO_ANALYTICS_MAX_EVENTS", "1000")

if TYPE_CHECKING:
    import gradio as gr

    from ui.state import Studio

# Gradio and the tabs are imported inside the functions: the run's training process imports this file
# again (as every multiprocessing child does with the main module) and needs none of them (2 s less per start).

# (tab title, module with build(studio, view)): every tab gets the studio and this browser's view state
TABS = (("Train", "ui.train_tab"), ("Explore", "ui.explore_tab"), ("Runs", "ui.runs_tab"), ("Hub", "ui.hub_tab"),
        ("Lessons", "ui.lessons"))
HEADER = ("# DCGAN Studio\n"
          "Train a deep convolutional GAN on real images and watch it learn: the discriminator D learns to tell "
          "real images from fakes, the generator G learns to fool it.")
CSS = """
#train-status { font-size: 1.05em; }
#train-message:empty, #run-notice:empty, #link-message:empty { display: none; }
button:disabled, button[disabled] { opacity: 0.4; filter: grayscale(1); cursor: not-allowed; box-shadow: none; }
#zip-upload .wrap { padding-top: 1.6em; }
/* help under a field: readable (Gradio's default grey on white is about 1.9:1) */
.info-text { color: #4b4b57 !important; font-size: 0.8rem !important; }
/* a picture's label sits above the picture, never over its top rows */
[data-testid="block-label"].float { position: static !important; margin-bottom: 4px; }
"""
log = logging.getLogger("dcgan.app")


def build_app(studio: Studio) -> gr.Blocks:
    """The whole page for one studio; every tab gets the same studio and this browser's view state."""
    import gradio as gr

    from ui.common import new_view

    # Gradio's own copies of uploads and generated files: swept hourly, deleted after a day.
    with gr.Blocks(title="DCGAN Studio", delete_cache=(3600, 86400)) as demo:
        gr.Markdown(HEADER)
        link_message = gr.Markdown("", elem_id="link-message")
        view = gr.State(lambda: new_view(studio.default_model))  # a callable: each browser gets its own
        tabs, parts = [], {}
        with gr.Tabs() as tab_set:
            for title, module_name in TABS:
                with gr.Tab(title, id=title.lower()) as tab:  # the id: a button elsewhere can show this tab
                    parts[title.lower()] = importlib.import_module(module_name).build(studio, view)
                tabs.append(tab)
        parts["lessons"]["progress"].render()  # in no tab: a browser's lesson progress is read back on every load
        timers_for = poll_only_the_shown_tab(tabs)
        refresh_lists_on_select(tabs, studio)
        open_links(demo, studio, link_message, tab_set, parts["train"], timers_for)
    return demo


def open_links(demo: gr.Blocks, studio: Studio, message: gr.Markdown, tab_set: gr.Tabs, train: dict,
               timers_for: Callable[[int], list]) -> None:
    """A page opened with a link (dcgan/links.py: ?dataset=...&hide=lr_d&tab=lessons&lesson=collapse) fills
    the Train form, hides the named controls, opens the tab (its timers with it) and names what did not apply."""
    import gradio as gr

    from dcgan import lessons, links
    from ui.common import QUIET

    form, ids = train["form"], [title.lower() for title, _ in TABS]
    names = [n for n in links.SETUP if n in form]

    def on_open(request: gr.Request):
        query = dict(request.query_params) if request is not None else {}
        link = links.parse(query, studio.build_config, ids, lessons.BY_ID)
        tab = link.tab or ("lessons" if link.lesson else None)
        updates = [gr.update(**({"value": link.form[n]} if n in link.form else {}),
                             **({"visible": False} if n in link.hide else {}))
                   if n in link.form or n in link.hide else gr.skip() for n in names]
        timers = timers_for(ids.index(tab)) if tab else [gr.skip()] * len(timers_for.timers)
        return [f"⚠ {link.message}" if link.message else "", gr.Tabs(selected=tab) if tab else gr.skip(),
                *updates, {n: link.form[n] for n in names if n in link.form},
                list(link.hide) if link.hide else gr.skip(), *timers]  # a copied link hides the same controls

    on_open.__annotations__["request"] = gr.Request  # gradio is imported here only, so name it for the injection
    demo.load(on_open, None, [message, tab_set, *[form[n] for n in names], train["link_form"],
                              train["link_hide"], *timers_for.timers], **QUIET, api_visibility="private")


def blocks_in(block: gr.blocks.Block, wanted: Callable[[gr.blocks.Block], bool]) -> list:
    """The blocks under `block` that are `wanted` (not looking inside one that is)."""
    found = []
    for child in getattr(block, "children", []):
        found += [child] if wanted(child) else blocks_in(child, wanted)
    return found


def poll_only_the_shown_tab(tabs: list[gr.Tab]) -> Callable[[int], list]:
    """A page polls for the tab it shows and no other: thirty students exploring cost no status polls.

    The first tab's timers run from the start; choosing a tab starts its timers and stops the others'. Returns
    timers_for(i): the Timer updates that show tab i (a link that opens another tab uses it); .timers lists them."""
    import gradio as gr

    from ui.common import QUIET

    own = [blocks_in(tab, lambda b: isinstance(b, gr.Timer)) for tab in tabs]
    every = [t for timers in own for t in timers]
    for timers in own[1:]:
        for timer in timers:
            timer.active = False

    def timers_for(index: int) -> list:
        shown = set(map(id, own[index]))
        return [gr.Timer(active=id(t) in shown) for t in every]

    for index, tab in enumerate(tabs):
        tab.select(lambda index=index: timers_for(index), None, every,
                   queue=False, **QUIET, api_visibility="private")
    timers_for.timers = every
    return timers_for


CHECKPOINT_LIST = "checkpoint-list"  # elem_classes of a dropdown of saved checkpoints


def refresh_lists_on_select(tabs: list[gr.Tab], studio: Studio) -> None:
    """Choosing a tab refreshes its lists of saved checkpoints: a page opened before a run existed shows the run
    without a press on ↻ (a list with nothing chosen gets the newest)."""
    import gradio as gr

    from ui.common import QUIET

    for tab in tabs:
        lists = blocks_in(tab, lambda b: CHECKPOINT_LIST in (getattr(b, "elem_classes", None) or []))
        if not lists:
            continue

        def fresh(*chosen: str | None) -> gr.Dropdown | list[gr.Dropdown]:
            names = studio.list_checkpoints()
            out = [gr.Dropdown(choices=names, value=c if c in names else (names[0] if names else None))
                   for c in chosen]
            return out[0] if len(out) == 1 else out  # one output takes its value bare

        tab.select(fresh, lists, lists, **QUIET, api_visibility="private")


def default_host() -> str:
    """Loopback on a laptop; all interfaces on a Space (SPACE_ID), where the proxy must reach us."""
    return os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")


def launch(demo: gr.Blocks, studio: Studio, host: str, port: int, **options) -> None:
    """Start serving; checkpoints may live outside the working directory, so they are allowed for download."""
    from starlette.middleware import Middleware

    from dcgan import data
    from ui.described import KeepDescriptions
    from ui.limits import BodyLimit
    from ui.sessions import use_lean_sessions

    # A thread inside torch's small ops (an inversion, a warm-up) holds the GIL for CPython's whole 5 ms switch
    # interval each time a request's thread wants it back: one G forward of a slider went from 1.3 ms to 30 ms at
    # p95 beside one such thread, 1.7 ms with a 1 ms interval (docs/ROBUSTNESS.md)
    sys.setswitchinterval(0.001)
    # Gradio runs every event inside matplotlib.get_backend(): with no backend chosen, the first event after a start
    # imported matplotlib and pyplot (1.1 s holding the GIL on the 2-core machine: every request waited). Chosen
    # here, that call costs nothing and pyplot is never imported (the app draws with Figure objects only). Where
    # pyplot is imported already (a notebook that plots) its backend stays
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    demo.queue(default_concurrency_limit=4)
    block = not options.pop("prevent_thread_lock", False)
    demo.launch(server_name=host, server_port=port, css=CSS, show_error=True,
                allowed_paths=[str(studio.checkpoints_dir.resolve())],  # never all of /tmp: anyone could read it
                max_file_size=data.MAX_UPLOAD_BYTES, prevent_thread_lock=True,
                app_kwargs={"middleware": [Middleware(BodyLimit), Middleware(KeepDescriptions)]}, **options)
    use_lean_sessions(demo)  # a new visitor's session no longer copies the page's description (ui/sessions.py)
    if block:
        # Everything built so far (torch, Gradio, the page's ~450 blocks: about 500k objects) lives as long as the
        # server. CPython's full collection walks all of it holding the GIL, 0.6-0.7 s in which no request moved,
        # once per class; frozen, a full collection walks only what came after: 0.06-0.16 s (docs/ROBUSTNESS.md).
        gc.collect()
        gc.freeze()
        demo.block_thread()


def save_on_sigterm(studio: Studio) -> None:
    """SIGTERM stops the runs, each saving a checkpoint, then exits: a Space restart loses nothing."""

    def handler(signum: int, frame: object) -> None:
        log.info("SIGTERM: stopping the runs (each saves a checkpoint), then exiting")
        studio.close(timeout=120)
        saved = [str(p) for p in (t.last_checkpoint() for t in studio.lanes) if p]
        log.info("saved %s", ", ".join(saved) if saved else "nothing (no run)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        # the run is saved: leave now. Interpreter shutdown with the server's and hooks' threads still
        # alive can abort in C++ ("terminate called without an active exception") and report a crash.
        os._exit(0)

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=default_host())
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--checkpoints", default=os.environ.get("DCGAN_CHECKPOINTS", "checkpoints"),
                        help="the folder the app writes into: run folders, .uploads/ and .cache/")
    parser.add_argument("--max-runs", type=int, default=None,
                        help="runs trained at once (branches side by side), 1-4; default: one per core, at least 2 "
                             "(or DCGAN_MAX_RUNS)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from dcgan.studio import use_cache_dir
    from ui.state import Studio

    studio = Studio(args.checkpoints, max_runs=args.max_runs)
    use_cache_dir(studio.cache_dir)
    threading.Thread(target=studio.trainer.warm_up, name="warm-up", daemon=True).start()
    save_on_sigterm(studio)
    launch(build_app(studio), studio, args.host, args.port)


if __name__ == "__main__":
    main()
