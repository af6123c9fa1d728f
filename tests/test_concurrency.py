"""Concurrency: 50 clicks at once leave exactly one trainer in a consistent state, and sliders keep
answering while training runs. First straight on `Trainer` with 50 threads, then against the real
app through gradio_client on 127.0.0.1 (which also checks what the HTTP file route serves)."""

from __future__ import annotations

import random
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from dcgan.trainer import ACTIVE, FAILED, IDLE, Trainer, TrainerBusy
from tests.conftest import free_port, tiny_config

SERVED_UPLOAD_LIMIT = 1024 * 1024


class LoopCounter:
    """Counts training loops running at the same time (there must never be two)."""

    def __init__(self, monkeypatch):
        self.lock = threading.Lock()
        self.running = 0
        self.most = 0
        self.started = 0
        # the body of the trainer's thread: the reader of the run's training process
        monkeypatch.setattr(Trainer, "_read", self.counted(Trainer._read))

    def counted(self, original):
        def loop(trainer, *args):
            with self.lock:
                self.running += 1
                self.started += 1
                self.most = max(self.most, self.running)
            try:
                return original(trainer, *args)
            finally:
                with self.lock:
                    self.running -= 1

        return loop


def no_memory(run) -> dict:
    """A metric_fn that runs out of memory (module level: it goes to the app's training process)."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")


def trainer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dcgan-trainer" and t.is_alive()]


def assert_consistent(trainer: Trainer) -> None:
    status = trainer.status()
    assert status.state != FAILED, status.error
    assert 0 <= status.iteration <= status.total or status.state == IDLE
    alive = [t for t in trainer_threads() if t is trainer._reader]
    if status.state in ("running", "paused"):
        assert alive, status  # an active run has its thread
    rows = trainer.metrics.since(0)
    iterations = [r["iteration"] for r in rows]
    assert iterations == sorted(iterations)  # one run's records, in order


@pytest.mark.timeout(180)
def test_50_threads_clicking_at_once_leave_one_consistent_trainer(digits_data, tmp_path, monkeypatch):
    counter = LoopCounter(monkeypatch)
    trainer = Trainer()
    cfg = tiny_config(steps=100_000, out_dir=str(tmp_path), checkpoint_every=0)
    errors: list[BaseException] = []
    barrier = threading.Barrier(50)
    rng = random.Random(0)
    actions = (["start"] * 15 + ["pause"] * 8 + ["resume"] * 8 + ["step"] * 8 + ["stop"] * 7 + ["reset"] * 4)
    rng.shuffle(actions)

    def click(action: str) -> str:
        barrier.wait()
        try:
            if action == "start":
                trainer.start(cfg, data=digits_data)
            elif action == "step":
                trainer.step(rng.randint(1, 3), rng.choice(["both", "d", "g"]))
            elif action == "stop":
                trainer.stop(wait=True)
            else:
                getattr(trainer, action)()
            return "ok"
        except TrainerBusy:
            return "busy"
        except RuntimeError as exc:
            if "no run to step" in str(exc):
                return "nothing to step"
            errors.append(exc)
            raise
        except BaseException as exc:  # anything else is a bug
            errors.append(exc)
            raise

    most_threads = 0
    done = threading.Event()

    def watch():
        nonlocal most_threads
        while not done.is_set():
            most_threads = max(most_threads, len(trainer_threads()))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(2):  # two storms, the second one against whatever the first left
            with ThreadPoolExecutor(50) as pool:
                outcomes = list(pool.map(click, actions))
            assert errors == [], errors
            assert_consistent(trainer)
            assert "ok" in outcomes
    finally:
        trainer.stop(wait=True)
        done.set()
        watcher.join()
    assert counter.most == 1 and most_threads <= 1
    assert counter.started >= 1
    assert trainer.status().state not in ACTIVE and not trainer_threads()
    # and it still works normally afterwards
    trainer.reset()
    trainer.start(tiny_config(steps=5, out_dir=str(tmp_path)), data=digits_data)
    assert trainer.wait(60) == "finished"


# ---- the real app over HTTP ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    gradio_client = pytest.importorskip("gradio_client")
    app = pytest.importorskip("app")
    from dcgan import data
    from ui.state import Studio

    studio = Studio(tmp_path_factory.mktemp("served") / "checkpoints")
    demo = app.build_app(studio)
    port = free_port()
    limit, data.MAX_UPLOAD_BYTES = data.MAX_UPLOAD_BYTES, SERVED_UPLOAD_LIMIT  # small, to test it cheaply
    try:
        app.launch(demo, studio, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    finally:
        data.MAX_UPLOAD_BYTES = limit
    url = f"http://127.0.0.1:{port}"
    client = gradio_client.Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    yield studio, client, url
    studio.trainer.stop(wait=True)
    demo.close()


def endpoint_args(client, api_name: str, **by_label) -> list:
    """Arguments for an endpoint: its defaults, with some replaced by (lower-case) label."""
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"][api_name]
    args = []
    for p in info["parameters"]:
        label = p["label"].lower()
        args.append(by_label.pop(label) if label in by_label else p.get("parameter_default"))
    assert not by_label, f"{api_name} has no parameters labelled {list(by_label)}"
    return args


@pytest.mark.timeout(240)
def test_50_concurrent_requests_through_gradio_client_leave_one_trainer(served, monkeypatch):
    studio, client, _ = served
    counter = LoopCounter(monkeypatch)
    start_args = endpoint_args(client, "/on_start", **{"batch size": 32, "steps (iterations)": 100_000,
                                                       "nz (noise size)": 32, "device": "cpu", "ngf (g width)": 16,
                                                       "ndf (d width)": 16, "precision": "fp32"})
    calls = ([("/on_start", start_args)] * 15 + [("/on_pause", [])] * 10 + [("/on_step", [2, None])] * 10
             + [("/on_resume", [])] * 8 + [("/on_stop", [])] * 7)
    random.Random(1).shuffle(calls)
    jobs = [client.submit(*args, api_name=name) for name, args in calls]
    messages = [job.result(timeout=180) for job in jobs]
    assert len(messages) == 50 and all(isinstance(m, str) and m for m in messages)
    assert any(m.startswith("✓ Started") for m in messages), messages
    assert not any("Traceback" in m or "Error" in m for m in messages), messages
    status = studio.trainer.status()
    assert status.state != FAILED, status.error
    assert counter.most == 1 and len(trainer_threads()) <= 1
    assert_consistent(studio.trainer)
    client.predict(api_name="/on_stop")
    assert studio.trainer.status().state not in ACTIVE and not trainer_threads()


@pytest.mark.timeout(240)
def test_sliders_keep_answering_while_training_runs(served):
    studio, client, _ = served
    studio.trainer.reset()
    message = client.predict(*endpoint_args(client, "/on_start", **{
        "batch size": 32, "steps (iterations)": 100_000, "nz (noise size)": 32, "device": "cpu",
        "ngf (g width)": 16, "ndf (d width)": 16, "precision": "fp32"}), api_name="/on_start")
    assert message.startswith("✓ Started"), message
    try:
        client.predict(*endpoint_args(client, "/explore_use_live"), api_name="/explore_use_live")  # pin the live model
        answers, iterations = 0, []
        for i in range(6):
            amounts = [0.5 * i] * 6
            moved = client.predict(*endpoint_args(client, "/explore_sliders")[:2], *amounts,
                                   api_name="/explore_sliders")
            assert moved and Path(moved).is_file()
            answers += 1
            iterations.append(studio.trainer.status().iteration)
        assert answers == 6
        assert studio.trainer.status().state == "running"
        assert iterations[-1] > iterations[0]  # training went on between the slider answers
    finally:
        client.predict(api_name="/on_stop")


def test_the_file_route_serves_nothing_outside_the_app_folders(served):
    studio, _, url = served
    secret = Path(tempfile.mkdtemp(prefix="dcgan-secret-")) / "token.txt"
    secret.write_text("hf_secret_value")
    outside = Path(__file__).resolve().parent.parent / "dcgan" / "config.py"
    for target in (secret, outside, Path("/etc/passwd"),
                   studio.checkpoints_dir.resolve() / ".." / ".." / secret.parent.name / "token.txt"):
        try:
            with urllib.request.urlopen(f"{url}/gradio_api/file={target}", timeout=30) as response:
                body = response.read()
            code = response.status
        except urllib.error.HTTPError as exc:
            code, body = exc.code, b""
        assert code != 200 and b"hf_secret_value" not in body, f"{target} was served"


def upload(url: str, payload: bytes) -> int:
    boundary = "dcgan-boundary-1234"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"images.zip\"\r\n"
            f"Content-Type: application/zip\r\n\r\n").encode() + payload + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_uploads_over_the_limit_are_refused_by_the_server(served):
    """The app launches gradio with max_file_size = dcgan.data.MAX_UPLOAD_BYTES (1 MB in this module)."""
    _, _, url = served
    assert upload(url, b"\0" * 100_000) == 200  # the route works
    assert upload(url, b"\0" * (SERVED_UPLOAD_LIMIT + 100_000)) == 413


def post_status(url: str, body: bytes, chunked: bool = False) -> int:
    """POST to the queue endpoint over a raw socket and return the HTTP status. The server may answer
    413 before the body is all sent (and then close), so send in pieces and stop once it answers."""
    import select
    import socket

    host, port = url.removeprefix("http://").split(":")
    framing = b"Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}".encode()
    head = (b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n" + framing + b"\r\n\r\n")
    pieces = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    if chunked:
        pieces = [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head)
        for piece in pieces:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered already
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
        reply = sock.recv(4096)
    return int(reply.split(b" ", 2)[1])


def test_other_request_bodies_are_bounded(served):
    """Event JSON is capped at ui.limits.MAX_REQUEST_BYTES, with or without a Content-Length header."""
    from ui.limits import MAX_REQUEST_BYTES

    _, _, url = served
    assert post_status(url, b"{}") == 422  # reaches gradio, which rejects the malformed event
    huge = b'{"data": ["' + b"x" * (MAX_REQUEST_BYTES + 1000) + b'"]}'
    assert post_status(url, huge) == 413
    assert post_status(url, huge, chunked=True) == 413


@pytest.mark.timeout(240)
def test_out_of_memory_shows_on_the_page_and_the_app_keeps_serving(served, monkeypatch):
    studio, client, _ = served
    studio.trainer.reset()
    monkeypatch.setattr(studio.trainer, "metric_fn", no_memory)  # fails in the training process, at iteration 2
    small = {"batch size": 32, "steps (iterations)": 50, "nz (noise size)": 32, "device": "cpu",
             "ngf (g width)": 16, "ndf (d width)": 16, "precision": "fp32"}
    args = endpoint_args(client, "/on_start", **small, **{"quality metrics every": 2})
    assert client.predict(*args, api_name="/on_start").startswith("✓ Started")
    assert studio.trainer.wait(60) == FAILED
    page = str(client.predict(0.6, api_name="/train_status"))
    assert "Training failed" in page and "lower the batch size" in page and "keeps serving" in page
    monkeypatch.undo()
    args = endpoint_args(client, "/on_start", **small)
    assert client.predict(*args, api_name="/on_start").startswith("✓ Started")  # serving, and usable
    assert studio.trainer.wait(60) == "finished"


def test_an_upload_field_cannot_name_a_file_on_the_server(served, tmp_path):
    """A hand-made request whose zip 'upload' is a path on the server is refused by Gradio before our
    callback runs: only files really uploaded into Gradio's own folder are accepted."""
    import json
    import zipfile

    studio, client, url = served
    studio.trainer.reset()
    secret = tmp_path / "server-side.zip"
    with zipfile.ZipFile(secret, "w") as zf:
        zf.writestr("a.png", b"not really")
    args = endpoint_args(client, "/on_start", **{"data set": "folder", "steps (iterations)": 5,
                                                 "device": "cpu", "precision": "fp32"})
    info = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/on_start"]
    index = [p["label"] for p in info["parameters"]].index("Your images (.zip, optional class sub-folders)")
    args[index] = {"path": str(secret), "meta": {"_type": "gradio.FileData"}, "orig_name": "images.zip"}
    request = urllib.request.Request(f"{url}/gradio_api/call/on_start", data=json.dumps({"data": args}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.loads(response.read())["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call/on_start/{event_id}", timeout=120) as response:
        stream = response.read().decode()
    assert "event: error" in stream, stream
    assert studio.trainer.status().state == IDLE
