"""A class on one app: each visitor explores their own model, heavy jobs queue fairly, serving threads
leave the training thread alone, and the crowd load test (`python -m dcgan crowd`) drives a real app
with several gradio_client sessions and gets every answer. Timings are measured in docs/ROBUSTNESS.md,
never asserted here."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dcgan.checkpoint import save_training
from dcgan.tools.crowd import ACTIONS, Endpoints, MissingEndpoint, Tally, mix, parse_status, percentile, summary
from dcgan.train import GANTraining
from tests.conftest import free_port, tiny_config
from ui import queues

gr = pytest.importorskip("gradio")


# ---- ui/queues.py -----------------------------------------------------------------------------------


def as_visitor(session: str, fn, *args):
    """Run fn in the event context of a browser session (what Gradio sets around a callback)."""
    gr.context.LocalContext.request.set(SimpleNamespace(session_hash=session))
    return fn(*args)


def test_one_heavy_job_per_visitor_the_next_is_refused_with_a_wait_and_others_queue():
    lane = queues.HeavyLane(running=1, per_visitor=1)
    started, release = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def inversion():
        started.set()
        assert release.wait(10)
        return "inverted"

    def call(key: str, session: str, fn) -> None:
        try:
            outcomes[key] = as_visitor(session, lane.run, "inversion", fn)
        except gr.Error as exc:
            outcomes[key] = exc

    first = threading.Thread(target=call, args=("a1", "alice", inversion))
    bob_ran = threading.Event()
    bob = threading.Thread(target=call, args=("b", "bob", lambda: bob_ran.set() or "bob's"))
    first.start()
    try:
        assert started.wait(10)
        call("a2", "alice", inversion)  # alice again while hers runs: refused at once, not queued
        refusal = outcomes["a2"]
        assert isinstance(refusal, queues.Busy), refusal
        wait_s = refusal.message.lower().split("try again in ")[1].split()[0]
        assert refusal.message.startswith("Busy") and int(wait_s) >= 1, refusal.message
        bob.start()
        time.sleep(0.3)
        assert not bob_ran.is_set()  # one heavy job runs at a time: bob waits (he is not refused)
    finally:
        release.set()
        first.join(10)
        if bob.is_alive() or bob.ident:
            bob.join(10)
    assert outcomes["a1"] == "inverted" and outcomes["b"] == "bob's"
    assert as_visitor("alice", lane.run, "inversion", lambda: "again") == "again"  # her turn is free again


def test_a_failing_heavy_job_frees_the_visitors_turn():
    lane = queues.HeavyLane(running=1, per_visitor=1)

    def broken():
        raise ValueError("bad image")

    with pytest.raises(ValueError):
        as_visitor("carol", lane.run, "inversion", broken)
    assert as_visitor("carol", lane.run, "inversion", lambda: "ok") == "ok"


def test_heavy_jobs_run_below_the_apps_priority_and_see_the_events_context():
    """Training and slider moves come first: a heavy job runs on the lane's own thread, niced on Linux,
    with the Gradio context (request, progress) of the event that asked for it."""
    import contextvars
    import os
    import sys

    lane = queues.HeavyLane(running=1, per_visitor=1, nice=5)
    marker = contextvars.ContextVar("marker", default="unset")
    marker.set("the event's")
    seen = {}

    def job():
        seen["thread"] = threading.current_thread().name
        seen["visitor"], seen["marker"] = queues.visitor(), marker.get()
        seen["torch threads"] = torch.get_num_threads()
        if sys.platform.startswith("linux"):
            seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        return "done"

    assert as_visitor("erin", lane.run, "inversion", job) == "done"
    assert seen["thread"].startswith("heavy") and seen["thread"] != threading.current_thread().name
    assert seen["visitor"] == "erin" and seen["marker"] == "the event's"
    assert seen["torch threads"] == queues.SERVE_THREADS
    if sys.platform.startswith("linux"):
        own = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert seen["nice"] == min(19, own + 5), (seen["nice"], own)


def test_heavy_wrapper_keeps_the_signature_gradio_reads():
    def run_inversion(session, editor, steps: float, progress: gr.Progress = gr.Progress()):
        return steps

    import inspect

    wrapped = queues.HeavyLane().wrap(run_inversion)
    assert list(inspect.signature(wrapped).parameters) == ["session", "editor", "steps", "progress"]
    assert as_visitor("dave", wrapped, None, None, 3) == 3


# ---- the crowd tool's arithmetic ---------------------------------------------------------------------


def test_status_parsing_and_percentiles():
    text = "**running** · iteration 1,234 / 100,000 (1%) · epoch 0.21 · 812 images/s · ETA 3h · cpu"
    assert parse_status(text) == {"iteration": 1234.0, "images_per_s": 812.0}
    assert parse_status(("x", text, "64"), ["status", "other", "Batch size"]) == {
        "iteration": 1234.0, "images_per_s": 812.0, "batch_size": 64.0}
    assert parse_status('{"iteration": 5, "batch_size": 32}') == {"iteration": 5.0, "batch_size": 32.0}
    assert parse_status("idle: no run yet") == {}
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 100)) == (50.0, 95.0, 100.0)
    tally = Tally()
    tally.add("sliders", 0.1)
    tally.fail("sliders", RuntimeError("boom"))
    tally.fail("invert", RuntimeError("Busy: ..."), refused=True)
    rows = summary(tally)
    assert rows["sliders"]["ok"] == 1 and rows["sliders"]["failed"] == 1 and rows["invert"]["refused"] == 1


def described(*names: str) -> dict:
    """An API description (view_api's dict, /gradio_api/info's shape) of endpoints with these names; the
    slider endpoints get the app's "direction N" sliders."""
    def param(label, component, default):
        return {"label": label, "component": component, "parameter_default": default, "parameter_has_default": True}

    def params(name):
        if name.endswith("sliders"):
            return [param("slider directions", "Radio", "principal directions"),
                    param("first raw dimension", "Number", 0), *(param(f"direction {i}", "Slider", 0) for i in (1, 2))]
        return [param("grid seed", "Number", 0)] if name.endswith("samples") else []

    return {"named_endpoints": {name: {"parameters": params(name), "returns": [{"label": "x"}], "description": ""}
                                for name in names}, "unnamed_endpoints": {}}


def test_endpoints_come_from_the_apps_description_renamed_or_missing():
    """The crowd finds each action's endpoint by name in the app's own API description: a renamed endpoint
    (/latent_sliders, not /explore_sliders) is found, its parameters read from the description; an action the
    app does not describe is left out of the visitor's mix and named with the reason; two candidates are not
    guessed between."""
    import random

    api = described("/explore_use_live", "/latent_sliders", "/explore_samples", "/train_status", "/refresh_1",
                    "/a_interpolate", "/b_interpolate")
    endpoints = Endpoints(api)
    assert endpoints.name("sliders") == "/latent_sliders" and endpoints.name("use_live") == "/explore_use_live"
    assert endpoints.name("train_status") == "/train_status"  # not /refresh_1, which takes the same inputs
    values = endpoints.args("sliders", random.Random(0))
    assert values[:2] == ["principal directions", 0] and len(values) == 4  # the description's defaults ...
    assert all(-3 <= v <= 3 for v in values[2:]) and values[2:] != [0, 0]  # ... with the directions moved
    assert endpoints.args("samples", random.Random(0))[0] != 0  # a new grid seed
    assert set(mix(endpoints)) == {"sliders", "samples"}  # no invert, no single interpolate: left out
    assert sorted(endpoints.missing) == ["interpolate", "invert", "train_progress"]
    assert "no endpoint named 'invert'" in endpoints.missing["invert"]
    assert "several" in endpoints.missing["interpolate"] and "/a_interpolate" in endpoints.missing["interpolate"]
    with pytest.raises(MissingEndpoint, match="no endpoint named 'invert'.*/latent_sliders"):
        endpoints.name("invert")  # the message lists what the app does describe


def test_a_crowd_against_an_app_without_the_explore_endpoints_says_which_are_missing(monkeypatch, capsys):
    from dcgan.tools import crowd as crowd_module

    class App:  # stands in for gradio_client.Client: only the description is read before the crowd starts
        def view_api(self, **_):
            return described("/explore_samples", "/train_status")

    monkeypatch.setattr(crowd_module, "client", lambda url, timeout, **_: App())
    with pytest.raises(MissingEndpoint, match="cannot host a crowd: the app describes no endpoint named 'use_live'"):
        crowd_module.crowd("http://127.0.0.1:1", users=1, seconds=1, baseline_s=0)
    from dcgan.__main__ import main

    assert main(["crowd", "--url", "http://127.0.0.1:1", "--users", "1"]) == 2
    assert "error: http://127.0.0.1:1 cannot host a crowd" in capsys.readouterr().err


# ---- the real app -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crowd_app(tmp_path_factory, digits_data):
    """The app on 127.0.0.1 with two saved runs (different weights) and a live training run."""
    pytest.importorskip("gradio_client")
    app = pytest.importorskip("app")
    from ui.state import Studio

    root = tmp_path_factory.mktemp("crowd") / "checkpoints"
    names = []
    for run_name, seed in (("run_a", 1), ("run_b", 2)):
        run = GANTraining(tiny_config(seed=seed, steps=3), digits_data)
        for _ in range(3):
            run.train_step()
        names.append(save_training(run, root / run_name / "step_00000003.safetensors")
                     .relative_to(root).as_posix())
    studio = Studio(root)
    studio.trainer.start(tiny_config(steps=1_000_000, out_dir=str(root), run_name="live"), data=digits_data)
    deadline = time.time() + 60
    while studio.live_model() is None and time.time() < deadline:  # the first pictures
        time.sleep(0.2)
    demo = app.build_app(studio)
    port = free_port()
    app.launch(demo, studio, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    yield studio, f"http://127.0.0.1:{port}", names
    studio.trainer.stop(wait=True)
    demo.close()


def client(url: str):
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, httpx_kwargs={"timeout": 120})


def endpoint(c, action: str) -> str:
    """The app's endpoint for a crowd action, found in its API description as the crowd finds it."""
    return Endpoints(c.view_api(return_format="dict", print_info=False)).name(action)


def args(c, action: str, **by_label) -> list:
    """The action's endpoint's defaults, with some inputs set by their (lower-case) label."""
    api_name = endpoint(c, action)
    params = c.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]["parameters"]
    values = [by_label.pop(p["label"].lower(), p.get("parameter_default")) for p in params]
    assert not by_label, f"{api_name} has no inputs labelled {list(by_label)}"
    return values


def ask(c, action: str, **by_label):
    """One request for a crowd action, its inputs the defaults except those given by label."""
    return c.predict(*args(c, action, **by_label), api_name=endpoint(c, action))


def pixels(answer) -> np.ndarray:
    """An image answer, decoded (the client downloads the file)."""
    from PIL import Image

    return np.asarray(Image.open(answer if isinstance(answer, str) else answer["value"]))


def test_a_session_loading_another_checkpoint_leaves_the_other_sessions_model_alone(crowd_app):
    """The studio layer: two browser sessions, one switches checkpoints, the other draws what it drew."""
    from ui import explore_tools as tools
    from ui.common import new_view

    studio, _, (run_a, run_b) = crowd_app
    kind = tools.DIRECTION_KINDS[0]
    alice = tools.load_checkpoint(studio, run_a, new_view(), kind, 0)["session"]
    bob = tools.load_checkpoint(studio, run_a, new_view(), kind, 0)["session"]
    assert bob["model"] is alice["model"]  # one shared copy of the same checkpoint

    def grid(session) -> np.ndarray:
        return tools.new_samples(session, 7, 1.0)["grid"]

    alice_before = grid(alice)
    bob = tools.load_checkpoint(studio, run_b, bob, kind, 0)["session"]
    assert "run_b" in bob["model"].label and "run_a" in alice["model"].label
    assert not np.array_equal(alice_before, grid(bob))
    assert np.array_equal(alice_before, grid(alice))


@pytest.mark.timeout(300)
def test_a_visitor_taking_a_newer_snapshot_leaves_the_other_visitors_explore_alone(crowd_app):
    """The real app, two gradio_client sessions: Bob pins a newer snapshot of the live run; Alice's
    samples and slider picture stay exactly what they were."""
    studio, url, _ = crowd_app
    alice, bob = client(url), client(url)
    pinned = ask(alice, "use_live")[0]

    def samples(c) -> np.ndarray:
        return pixels(ask(c, "samples", **{"grid seed": 7}))

    def moved(c) -> np.ndarray:
        return pixels(ask(c, "sliders", **{"direction 1": 2.0}))

    alice_before, alice_moved = samples(alice), moved(alice)
    first = studio.live_model().key
    deadline = time.time() + 60
    while studio.live_model().key == first and time.time() < deadline:  # the run draws new pictures
        time.sleep(0.2)
    newer = ask(bob, "use_live")[0]
    assert newer != pinned, (pinned, newer)  # a later iteration
    assert not np.array_equal(alice_before, samples(bob))
    assert np.array_equal(alice_before, samples(alice))
    assert np.array_equal(alice_moved, moved(alice))
    assert studio.trainer.status().state == "running"  # nobody's exploring touched the shared run


@pytest.mark.timeout(300)
def test_a_second_heavy_job_from_one_visitor_is_refused_while_another_visitor_slides(crowd_app):
    from gradio_client import handle_file

    from dcgan.tools.crowd import ring_image

    _, url, _ = crowd_app
    alice, bob = client(url), client(url)
    for c in (alice, bob):
        ask(c, "use_live")
    image = handle_file(ring_image())
    editor = {"background": image, "layers": [], "composite": image, "id": None}
    invert = args(alice, "invert", **{"your image: upload, paste or draw": editor,
                                      "optimisation steps": 600, "random restarts": 8})
    jobs = [alice.submit(*invert, api_name=endpoint(alice, "invert")) for _ in range(2)]
    slid = ask(bob, "sliders", **{"direction 1": 1.0})
    assert slid  # bob's slider answers while alice's inversions are in the heavy lane
    answers, refusals = [], []
    for job in jobs:
        try:
            answers.append(job.result(timeout=240))
        except Exception as exc:  # the refusal reaches the client as an AppError with the message
            refusals.append(str(exc))
    assert len(answers) == 1 and len(refusals) == 1, (answers, refusals)
    assert "Busy" in refusals[0] and "try again in" in refusals[0].lower(), refusals


@pytest.mark.timeout(300)
def test_a_short_crowd_gets_every_answer_and_sees_the_run_train(crowd_app, monkeypatch):
    import ssl

    from dcgan.tools.crowd import crowd, table

    studio, url, _ = crowd_app
    contexts = []
    make_context = ssl.create_default_context
    monkeypatch.setattr(ssl, "create_default_context", lambda *a, **k: contexts.append(a) or make_context(*a, **k))
    result = crowd(url, users=4, seconds=5, think_s=0.2, poll_s=1.0, baseline_s=3, ramp_s=0.5, timeout=120,
                   watchers=2, processes=2)  # two visitors here, two in another process
    # the clients share one TLS context: gradio_client makes an httpx client per request, and each new
    # default context reads the certificate bundle (~40 ms of CPU on the cores of the app under test)
    assert len(contexts) <= 1 and result["requests"] > 20, (len(contexts), result["requests"])
    assert result["failed"] == 0, result["errors"]
    assert result["missing_endpoints"] == [] and set(result["endpoints"]) == set(ACTIONS)  # all from the description
    actions = result["actions"]
    assert actions["open"]["ok"] == 4 + 2 and actions["use_live"]["ok"] == 4  # every page opened; explorers pinned
    assert actions["sliders"]["ok"] >= 4 and actions["samples"]["ok"] >= 4  # each visitor's first moves
    # like a browser, each answer's pictures were fetched (a pinned model shows several; a slider move one)
    assert actions["picture"]["ok"] >= 2 * 4 + 4 + 4 and actions["picture"]["failed"] == 0
    assert result["pictures"] and result["processes"] == 2
    assert actions["train_status"]["ok"] >= 2  # both Train pages polled (how often is CPU-bound)
    assert result["requests"] == sum(a["ok"] + a["failed"] + a["refused"] for a in actions.values())
    assert result["training"]["read_from"] == "/train_progress"  # the cheap read, not the pages' poll
    for window in ("before", "during"):
        assert result["training"][window]["images_per_s"] > 0, result["training"]  # the run kept training
    text = table(result)
    assert "sliders" in text and "training images/s" in text
    assert studio.trainer.status().state == "running"


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_real_page_among_the_visitors_times_its_sliders_from_input_to_painted_picture(crowd_app):
    """`dcgan crowd --page`: a headless Chromium page opens the app, goes to Explore, uses the live run, moves
    sliders with arrow keys and draws new samples; each time runs from the input event to the new picture painted.
    The Explore answers it paints are the studio's PNG files (written whole), not per-request webp writes."""
    from pathlib import Path as P

    from dcgan.tools import crowd as crowd_module

    if not P(crowd_module.CHROMIUM).exists():
        pytest.skip(f"{crowd_module.CHROMIUM} is missing")
    pytest.importorskip("playwright")
    _, url, _ = crowd_app
    tally, stop = Tally(), threading.Event()
    srcs: list[str] = []
    painted = crowd_module.painted

    def spy(page, trigger, selector, count, timeout, event):
        seconds = painted(page, trigger, selector, count, timeout, event)
        srcs.extend(page.evaluate(crowd_module.SOURCES_JS, selector))
        return seconds

    crowd_module.painted = spy
    started: list[float] = []

    def go() -> float:  # the crowd's start: the browser is up by now, the page not opened yet (the crowd's timing)
        started.append(time.time())
        return time.time() + 6

    try:
        crowd_module.page_visitor(url, 0.0, 0, 0.2, tally, 60, stop, go)
    finally:
        crowd_module.painted = painted
    rows = summary(tally)
    assert not tally.failed, tally.errors
    assert len(started) == 1 and "page_open" in tally.seconds
    assert rows["page_open"]["ok"] == 1 and rows["page_use_live"]["ok"] == 1
    assert rows["page_sliders"]["ok"] >= 1 and rows["page_samples"]["ok"] >= 1, rows  # its first moves, at least
    assert all(0 < t < 60 for t in tally.seconds["page_sliders"])
    # each move's time split where the page asked for its picture and where the picture's bytes had arrived (a move
    # whose answer is the picture already shown asks for none: counted apart)
    unchanged = tally.seconds.get("page_sliders_unchanged", [])
    assert len(tally.seconds["page_sliders_asked"]) + len(unchanged) == len(tally.seconds["page_sliders"])
    if not unchanged:
        moves = zip(tally.seconds["page_sliders"], tally.seconds["page_sliders_asked"],
                    tally.seconds["page_sliders_shown"], strict=True)
        assert all(0 < asked < total and 0 < shown < total - asked for total, asked, shown in moves)
    # and the part before it at the event's post and the answer's arrival on the page's event stream
    parts = zip(tally.seconds["page_sliders_asked"], tally.seconds["page_sliders_sent"],
                tally.seconds["page_sliders_answered"], tally.seconds["page_sliders_after"], strict=True)
    assert all(sent >= 0 and answered > 0 and after >= 0 and abs(sent + answered + after - asked) < 1e-3
               for asked, sent, answered, after in parts)
    assert srcs and all(src.split("?")[0].endswith(".png") for src in srcs), srcs[:3]


def test_the_pictures_of_an_answer_are_found_wherever_the_answer_puts_them():
    from dcgan.tools.crowd import picture_urls

    answer = ({"path": "/tmp/a.png", "url": "http://h/gradio_api/file=/tmp/a.png"}, "text",
              [[{"image": {"url": "http://h/gradio_api/file=/tmp/b.png"}, "caption": None}], {"url": None}])
    assert picture_urls(answer) == ["http://h/gradio_api/file=/tmp/a.png", "http://h/gradio_api/file=/tmp/b.png"]
    assert picture_urls("no files") == []


class ClosingServer:
    """An HTTP server on 127.0.0.1 that answers the first request of each connection, keeping it alive, and closes a
    connection on its second request without answering: what uvicorn does when its keep-alive timeout closes an idle
    connection just as the client sends on it (the request arrives at a socket that is being closed)."""

    def __init__(self, answer_reused: bool = False) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/gradio_api/file=pic.png"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 3\r\n\r\npng")
            conn.recv(65536)  # the next request on the kept-alive connection: closed unanswered

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("retry", [True, False])
def test_a_picture_get_that_dies_on_a_reused_connection_is_sent_again_like_a_browser_and_recorded(retry):
    """The keep-alive race: a GET on a kept-alive connection the server closes unanswered. Like Chromium, the crowd's
    picture fetcher sends it once more on a new connection (retry=True), counted and recorded in full; without the
    retry it is a failure, recorded with its URL, the reused connection and its idle time."""
    from dcgan.tools.crowd import Pictures

    server, tally = ClosingServer(), Tally()
    fetcher = Pictures(timeout=10, retry=retry)
    try:
        assert fetcher.get(server.url, tally)  # a new connection: answered, kept alive
        time.sleep(0.05)
        assert fetcher.get(server.url, tally) is retry  # reused: closed unanswered; a browser sends it again
    finally:
        fetcher.close()
        server.close()
    assert len(tally.seconds["picture"]) == 1 + retry
    assert (tally.retried["picture"], tally.failed["picture"]) == ((1, 0) if retry else (0, 1))
    [error] = tally.errors
    assert error["url"] == server.url and error["reused_connection"] and not error["answer_started"]
    assert 0.04 < error["idle_s"] < 5 and error.get("retried", False) is retry
    assert "Server disconnected without sending a response" in error["text"], error["text"]
    assert server.connections == 1 + retry


def test_a_picture_get_that_dies_on_a_new_connection_is_a_failure_not_retried():
    """Only a stale kept-alive connection is the race a browser hides; a server that drops a fresh connection fails."""
    import socket

    from dcgan.tools.crowd import Pictures

    sock = socket.create_server(("127.0.0.1", 0))

    def drop() -> None:
        for _ in range(2):
            conn, _ = sock.accept()
            conn.recv(65536)
            conn.close()

    threading.Thread(target=drop, daemon=True).start()
    tally, fetcher = Tally(), Pictures(timeout=10)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/x.png"
    try:
        assert not fetcher.get(url, tally)
    finally:
        fetcher.close()
        sock.close()
    assert tally.failed["picture"] == 1 and not tally.retried
    assert tally.errors[0]["reused_connection"] is False and tally.errors[0]["url"] == url


def test_the_cli_is_registered():
    from dcgan.__main__ import build_parser

    parsed = build_parser().parse_args(["crowd", "--url", "http://127.0.0.1:1", "--users", "2", "--json"])
    assert parsed.users == 2 and parsed.json and callable(parsed.func)
    assert parsed.pictures and parsed.processes == 1  # pictures fetched unless --no-pictures
    assert parsed.retry and parsed.pages == 0  # a stale connection's GET sent again as a browser does; no real page
    parsed = build_parser().parse_args(["crowd", "--page", "--no-retry"])
    assert parsed.pages == 1 and not parsed.retry
    assert Path(parsed.func.__code__.co_filename).parts[-2:] == ("tools", "crowd.py")


def test_visitors_pinning_the_same_live_snapshot_at_once_wait_for_one_computation():
    """Thirty "use the live run" at the same moment: the directions are computed once, not once per visitor
    that arrived before the first finished (dcgan/studio.py ModelMemo)."""
    from dcgan.studio import LoadedModel, ModelMemo

    memo, runs, answers = ModelMemo(8), [], []
    snapshot = LoadedModel("live 100", torch.nn.Linear(1, 1), tiny_config(), "live", ("live", "run1", 100))
    older = LoadedModel("live 97", torch.nn.Linear(1, 1), tiny_config(), "live", ("live", "run1", 97))

    def slow() -> str:
        runs.append(1)
        time.sleep(0.3)
        return f"directions {len(runs)}"

    threads = [threading.Thread(target=lambda m=m: answers.append(memo.get(m, (8,), slow)))
               for m in [snapshot] * 10 + [older] * 5]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(runs) == 1 and set(answers) == {"directions 1"}
    other = LoadedModel("run/x", torch.nn.Linear(1, 1), tiny_config(), "checkpoint", ("ck", "x"))
    assert memo.get(other, (8,), slow) == "directions 2"  # another model computes its own


def test_the_live_runs_old_directions_answer_at_once_while_new_ones_are_computed_behind():
    """After live_s a newer snapshot is not made to wait for a second of GANSpace (with the one serving thread,
    neither is anyone queued behind it): it gets the run's latest directions, fresh ones follow for later
    snapshots, and a pinned snapshot keeps what it got."""
    from dcgan.studio import LoadedModel, ModelMemo

    memo, runs = ModelMemo(8, live_s=0.0), []
    snap = lambda it: LoadedModel(f"live {it}", torch.nn.Linear(1, 1), tiny_config(), "live", ("live", "run1", it))  # noqa: E731

    def slow() -> str:
        runs.append(1)
        time.sleep(0.5)
        return f"directions {len(runs)}"

    assert memo.get(snap(100), (8,), slow) == "directions 1"  # the run's first: computed while the visitor waits
    t0 = time.perf_counter()
    assert memo.get(snap(140), (8,), slow) == "directions 1"  # old: at once
    assert memo.get(snap(150), (8,), slow) == "directions 1"  # and only one computation behind
    assert time.perf_counter() - t0 < 0.3
    memo.settle()
    assert len(runs) == 2 and memo.get(snap(180), (8,), slow) == "directions 2"
    memo.settle()
    assert memo.get(snap(140), (8,), slow) == "directions 1"  # pinned
