"""A class on one Space: `python -m dcgan crowd --url URL --users N --seconds S` drives a running app
as N real visitors and reports what they saw and what it cost the training run.

Each visitor is one `gradio_client.Client`, so one browser session with its own Explore state. It
opens the app, pins the live run's latest model (`use_live`), moves the sliders (`sliders`) and draws
new samples (`samples`) once each, then until the time is up, with a pause between actions like a
person's, mostly moves sliders, sometimes draws new samples, now and then interpolates (`interpolate`)
or inverts an image (`invert`). A page polls only for the tab it shows, so these explorers send no
status polls; `--watchers W` adds W pages that keep the Train tab open and poll its status
(`train_status`) every `--poll` seconds, as that tab's timer does. A separate observer reads the
training run's iteration (`train_progress`, else `train_status`) for `--baseline` seconds before the
visitors arrive and during the crowd, so the images/s before and during are measured side by side in
one run.

The endpoints come from the app's own API description (`Client.view_api`, the document at
/gradio_api/info), not from a copy of the UI's names: an action is served by the one named endpoint
whose name is the action or ends with `_` + the action (`/explore_sliders` serves `sliders`), and its
parameters (labels, components, defaults) come from the same description. An action the app does not
describe is left out and named in the result; without `use_live` and `sliders` there is no crowd.

Like a browser, each visitor fetches every picture of every answer (`--no-pictures`: not), on kept-alive
connections; a picture GET that dies on a reused connection before any answer is sent once more, as Chromium
does (`--no-retry`: not), and counted as `retried`. `--pages N` adds N real Chromium pages (Playwright,
/usr/bin/chromium) on the Explore tab: each uses the live run, moves sliders with arrow keys and draws new samples,
timed in the page from the input event to the new picture decoded and painted (`page_*` actions).

The load tool's own start-up (the visitors' processes, the pages' browsers) is done before the baseline: on a
class's machines it costs the students' computers, not the app's cores.

Results are real app answers: an exception, an error toast or a timeout is a failed request;
a "Busy" refusal of a heavy job is counted apart. Every failure is kept in full in `errors` (the request: endpoint
or picture URL, reused connection or not, its idle time; the whole chain of exceptions), so one seen once can be
investigated.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import queue
import random
import re
import ssl
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# what the crowd does, in its own words; each action's endpoint is found in the app's API description
ACTIONS = ("use_live", "sliders", "samples", "interpolate", "invert", "train_status", "train_progress")
REQUIRED = ("use_live", "sliders")  # without these there is nothing to explore
PROGRESS = "train_progress"  # a cheap read of the run's iteration, if the app has one: the observer's choice
MIX = {"sliders": 0.70, "samples": 0.20, "interpolate": 0.08, "invert": 0.02}  # the visitor's mix (weights)
SLIDER_RANGE = 3.0  # the app's sliders go from -3 to 3 standard deviations


MAX_ERRORS = 200  # failures kept in full per process (each with its request), enough to investigate a rare one


def error_text(error: BaseException | str) -> str:
    """The whole story of a failure: type and message of the exception and of every exception behind it (an httpx
    error wraps httpcore's, which wraps the socket's: "Connection reset by peer" is often only in the last one)."""
    if not isinstance(error, BaseException):
        return str(error)
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__module__}.{type(error).__name__}: {error}".strip())
        error = error.__cause__ or error.__context__
    return " <- ".join(parts)


@dataclass
class Tally:
    """Latencies (seconds) of answered requests, the failures per action, and each failure in full: which request
    (endpoint or picture URL, a reused connection or a new one, how long it had been idle) and its whole error text,
    so a failure seen once can be investigated. `retried` counts what a browser would have sent again (a picture
    GET that died on a kept-alive connection before any answer); each of those is in `errors` too."""

    seconds: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retried: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: list[dict[str, Any]] = field(default_factory=list)
    t0: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, action: str, seconds: float) -> None:
        with self.lock:
            self.seconds[action].append(seconds)

    def plain(self) -> dict[str, Any]:
        """What a visitors' process sends back (picklable)."""
        with self.lock:
            return {"seconds": dict(self.seconds), "failed": dict(self.failed), "refused": dict(self.refused),
                    "retried": dict(self.retried), "errors": list(self.errors)}

    def merge(self, other: dict[str, Any]) -> None:
        with self.lock:
            for action, times in other["seconds"].items():
                self.seconds[action].extend(times)
            for kind in ("failed", "refused", "retried"):
                for action, n in other.get(kind, {}).items():
                    getattr(self, kind)[action] += n
            self.errors.extend(other["errors"][:max(0, MAX_ERRORS - len(self.errors))])

    def _record(self, action: str, error: BaseException | str, detail: dict[str, Any]) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"action": action, "at_s": round(time.time() - self.t0, 3),
                                "error": type(error).__name__ if isinstance(error, BaseException) else "",
                                "text": error_text(error), **detail})

    def fail(self, action: str, error: BaseException | str, refused: bool = False, **detail: Any) -> None:
        """A failed (or, refused=True, a refused) request; detail says which request (endpoint=, url=, reused=)."""
        with self.lock:
            (self.refused if refused else self.failed)[action] += 1
            if not refused:
                self._record(action, error, detail)

    def retry(self, action: str, error: BaseException, **detail: Any) -> None:
        """A request sent again, as a browser would; kept in full with the failures, marked retried."""
        with self.lock:
            self.retried[action] += 1
            self._record(action, error, {**detail, "retried": True})


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summary(tally: Tally) -> dict[str, dict[str, Any]]:
    rows = {}
    for action in sorted(set(tally.seconds) | set(tally.failed) | set(tally.refused) | set(tally.retried)):
        times = tally.seconds.get(action, [])
        rows[action] = {"ok": len(times), "failed": tally.failed.get(action, 0),
                        "refused": tally.refused.get(action, 0), "retried": tally.retried.get(action, 0),
                        "p50_s": round(percentile(times, 50), 4) if times else None,
                        "p95_s": round(percentile(times, 95), 4) if times else None,
                        "max_s": round(max(times), 4) if times else None}
    return rows


@functools.cache
def tls() -> ssl.SSLContext:
    """One TLS context for every client of this process. gradio_client opens a new httpx client for each
    request, and each would load the certificate bundle again: 46.6 ms of CPU per request (measured; 3.5 ms with
    one context), more than the app spends serving a slider move, on the cores of the app under test."""
    return ssl.create_default_context()


def client(url: str, timeout: float, **options: Any) -> Any:
    """One gradio_client session (one browser's state in the app)."""
    from gradio_client import Client

    return Client(url, verbose=False, analytics_enabled=False, httpx_kwargs={"timeout": timeout},
                  ssl_verify=tls(), **options)


# ---- arguments for each endpoint, from the app's own API description ---------------------------------


def ring_image() -> str:
    """A drawn-looking digit-like stroke (a ring) to invert, written once per process."""
    from PIL import Image, ImageDraw

    path = Path(tempfile.gettempdir()) / f"dcgan_crowd_ring_{os.getpid()}.png"
    if not path.exists():
        img = Image.new("RGB", (280, 280), "white")
        ImageDraw.Draw(img).ellipse((80, 50, 200, 230), outline="black", width=22)
        img.save(path)
    return str(path)


def serves(api_name: str, action: str) -> bool:
    """Whether a named endpoint serves an action: its name is the action or ends with _action."""
    name = api_name.lstrip("/")
    return name == action or name.endswith("_" + action)


class MissingEndpoint(LookupError):
    """The app's API description has no (or no single) endpoint for an action."""


class Endpoints:
    """The app's named endpoints as its API description gives them (one view_api call per crowd): which one
    serves each action, and its parameters."""

    def __init__(self, api: dict) -> None:
        named = api.get("named_endpoints", {})
        self.params = {name: info.get("parameters", []) for name, info in named.items()}
        self.returns = {name: [str(r.get("label", "")) for r in info.get("returns", [])]
                        for name, info in named.items()}
        self.names: dict[str, str] = {}  # action -> the app's api_name
        self.missing: dict[str, str] = {}  # action -> why it has no endpoint
        for action in ACTIONS:
            found = sorted(name for name in self.params if serves(name, action))
            if len(found) == 1:
                self.names[action] = found[0]
            else:
                self.missing[action] = (f"the app describes several endpoints for {action!r}: {', '.join(found)}"
                                        if found else f"the app describes no endpoint named {action!r} or "
                                                      f"ending in '_{action}'")

    def has(self, action: str) -> bool:
        return action in self.names

    def name(self, action: str) -> str:
        """The api_name that serves the action; MissingEndpoint says why there is none."""
        if action not in self.names:
            described = ", ".join(sorted(self.params)) or "none"
            raise MissingEndpoint(f"{self.missing[action]} (its named endpoints: {described})")
        return self.names[action]

    def args(self, action: str, rng: random.Random) -> list[Any]:
        """Defaults of the endpoint's inputs, with what a visitor would change in this action."""
        from gradio_client import handle_file

        args = []
        for p in self.params[self.name(action)]:
            label, component = str(p.get("label", "")).lower(), str(p.get("component", "")).lower()
            value = p.get("parameter_default")
            if action == "sliders" and component == "slider" and label.startswith("direction"):
                value = round(rng.uniform(-SLIDER_RANGE, SLIDER_RANGE), 1)
            elif action == "samples" and "seed" in label:
                value = rng.randrange(10_000)
            elif action == "interpolate" and label.startswith(("from", "to")):
                value = rng.randrange(16)
            elif component in ("imageeditor", "image"):
                image = handle_file(ring_image())
                value = {"background": image, "layers": [], "composite": image, "id": None} \
                    if component == "imageeditor" else image
            args.append(value)
        return args


# ---- the visitors -------------------------------------------------------------------------------


def is_refusal(exc: BaseException) -> bool:
    return str(exc).lower().startswith("busy")


def picture_urls(answer: Any) -> list[str]:
    """The URLs of the files in an answer (download_files=False leaves them as file data with a url)."""
    if isinstance(answer, dict):
        url = answer.get("url")
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            return [url]
        return [u for v in answer.values() for u in picture_urls(v)]
    if isinstance(answer, (list, tuple)):
        return [u for v in answer for u in picture_urls(v)]
    return []


class Pictures:
    """What a browser tab fetches pictures with: one HTTP client, kept-alive connections (six, as Chromium opens per
    host), bytes read and dropped (a browser decodes them; nothing is written to disk).

    Like a browser, a GET that dies on a *reused* kept-alive connection before any byte of an answer (the server
    closed the idle connection just as the request went out: httpx's "Server disconnected without sending a
    response", or "Connection reset by peer") is sent once more on a new connection: Chromium does the same for
    such errors on a reused socket (HttpNetworkTransaction::ShouldResendRequest), so its pages never see this race.
    The retry is counted and recorded in full (`retried`), never hidden; retry=False gives a client that fails."""

    def __init__(self, timeout: float, retry: bool = True) -> None:
        import httpx

        self.client = httpx.Client(timeout=timeout, verify=tls(), limits=httpx.Limits(max_connections=6))
        self.pool = ThreadPoolExecutor(6, thread_name_prefix="picture")  # an answer's pictures at once, as a tab
        self.retry = retry
        self.last_done: float | None = None  # when the previous picture ended

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()

    def get(self, url: str, tally: Tally) -> bool:
        """One picture, timed as "picture"; a failure is recorded with the request it was (URL, reused, idle)."""
        import httpx

        t0 = time.perf_counter()
        for attempt in (1, 2):
            events: list[str] = []
            sent = time.perf_counter()
            try:
                trace = {"trace": lambda name, info, e=events: e.append(name)}  # httpcore's steps: new connection?
                self.client.get(url, extensions=trace).raise_for_status()
            except Exception as exc:  # httpx.RemoteProtocolError ("Server disconnected ..."), ReadError, HTTP errors
                reused = bool(events) and not any(e.startswith("connection.connect_tcp") for e in events)
                answered = any(e.startswith("http11.receive_response_headers.complete") for e in events)
                detail = {"url": url, "reused_connection": reused, "answer_started": answered, "attempt": attempt,
                          "idle_s": round(sent - self.last_done, 3) if reused and self.last_done else None,
                          "last_step": events[-1] if events else None}
                self.last_done = None  # the connection is gone
                stale = isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError))
                if self.retry and attempt == 1 and reused and not answered and stale:
                    tally.retry("picture", exc, **detail)
                    continue
                tally.fail("picture", exc, **detail)
                return False
            self.last_done = time.perf_counter()
            tally.add("picture", self.last_done - t0)
            return True
        return False  # not reached: the second attempt returns


def fetch(fetcher: Pictures, urls: list[str], tally: Tally) -> bool:
    """Every picture of an answer, six at a time on the tab's kept-alive connections like the page that asked;
    a failed fetch is a failed 'picture' request."""
    return all(list(fetcher.pool.map(lambda url: fetcher.get(url, tally), urls)))


def call(page: Any, endpoints: Endpoints, action: str, rng: random.Random, tally: Tally, timeout: float,
         fetcher: Pictures | None = None) -> bool:
    """One request, timed from sending to having the app's answer and, with a fetcher, every picture in it
    (what a browser waits for before it can paint)."""
    t0 = time.perf_counter()
    try:
        answer = page.submit(*endpoints.args(action, rng), api_name=endpoints.name(action)).result(timeout=timeout)
    except Exception as exc:  # AppError (a gr.Error toast or an exception in the app), timeout, connection
        tally.fail(action, exc, refused=is_refusal(exc), endpoint=endpoints.name(action),
                   after_s=round(time.perf_counter() - t0, 3))
        return False
    if fetcher is not None and not fetch(fetcher, picture_urls(answer), tally):
        tally.fail(action, "a picture of the answer could not be fetched (see its 'picture' error)",
                   endpoint=endpoints.name(action))
        return False
    tally.add(action, time.perf_counter() - t0)
    return True


def open_page(url: str, tally: Tally, timeout: float) -> Any | None:
    """One browser session (a gradio_client.Client); the time it takes is the "open" action."""
    t0 = time.perf_counter()
    try:
        # download_files=False: gradio_client would write every picture to disk, which made thirty clients on
        # the app's own two cores the bottleneck (ROBUSTNESS.md); the pictures are fetched as a browser does
        page = client(url, timeout, download_files=False, max_workers=4)
    except Exception as exc:
        tally.fail("open", exc, url=url)
        return None
    tally.add("open", time.perf_counter() - t0)
    return page


def mix(endpoints: Endpoints) -> dict[str, float]:
    """The visitor's mix of actions, less those the app does not describe."""
    return {action: weight for action, weight in MIX.items() if endpoints.has(action)}


def visitor(url: str, endpoints: Endpoints, until: float, seed: int, think_s: float,
            tally: Tally, timeout: float, stop: threading.Event, pictures: bool = True, retry: bool = True) -> None:
    """A student on the Explore tab (which sends no status polls); pictures: fetch each answer's pictures (retry:
    a stale kept-alive connection's GET once more, as a browser does)."""
    rng = random.Random(seed)
    page = open_page(url, tally, timeout)
    if page is None:
        return
    fetcher = Pictures(timeout, retry) if pictures else None
    try:
        explore(page, endpoints, until, rng, think_s, tally, timeout, stop, fetcher)
    finally:
        if fetcher is not None:
            fetcher.close()


def explore(page: Any, endpoints: Endpoints, until: float, rng: random.Random, think_s: float, tally: Tally,
            timeout: float, stop: threading.Event, fetcher: Pictures | None) -> None:
    if not call(page, endpoints, "use_live", rng, tally, timeout, fetcher):
        return  # no model to explore: the failure is counted; nothing else this visitor could do
    actions, weights = zip(*mix(endpoints).items(), strict=True)
    first = ["sliders", "samples"]  # every visitor tries these at least once, however short the crowd
    while first or (time.time() < until and not stop.is_set()):
        stop.wait(rng.expovariate(1 / think_s) if think_s > 0 and not stop.is_set() else 0)
        if not first and time.time() >= until:
            break
        call(page, endpoints, first.pop(0) if first else rng.choices(actions, weights)[0], rng, tally, timeout,
             fetcher)


def watcher(url: str, endpoints: Endpoints, until: float, poll_s: float, tally: Tally, timeout: float,
            stop: threading.Event) -> None:
    """A page showing the Train tab: its status timer polls every poll_s seconds while it is open."""
    page = open_page(url, tally, timeout)
    if page is None:
        return
    rng = random.Random()
    stop.wait(rng.uniform(0, poll_s))
    while time.time() < until and not stop.is_set():
        t0 = time.perf_counter()
        call(page, endpoints, "train_status", rng, tally, timeout)
        stop.wait(max(0.0, poll_s - (time.perf_counter() - t0)))


# ---- a real page ---------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# the page's parts (ui/explore_tab.py elem_ids); a slider's range input moves one step per arrow key
USE, SAMPLES, GRID, MOVED = "#explore-use", "#explore-samples", "#explore-grid img", "#explore-moved img"
SLIDER = "#explore-slider-{} input[type=range]"
PAGE_SLIDERS = 6

# before a trusted input (a key press, a click) reaches the element, note when its event fires (performance.now())
MARK_JS = """([selector, type]) => { window.__crowdT0 = null; window.__crowdParts = null; window.__crowdSame = false;
  performance.clearResourceTimings();  // the buffer holds 250 entries: keep it for this answer's pictures
  document.querySelector(selector).addEventListener(type, () => { window.__crowdT0 = performance.now(); },
                                                    {once: true, capture: true}); }"""
# then wait, frame by frame, until the pictures under a selector are new (none of the old sources), decoded and
# complete, and one more frame has been painted: the time from the input event to a picture the visitor sees
PAINTED_JS = """async ([selector, old, count, timeoutMs]) => {
  const before = new Set(old), deadline = performance.now() + timeoutMs;
  const frame = () => new Promise(r => requestAnimationFrame(() => r()));
  for (;;) {
    const imgs = [...document.querySelectorAll(selector)];
    if (window.__crowdT0 !== null && imgs.length >= count && imgs.every(i => i.src && !before.has(i.src))) {
      try { await Promise.all(imgs.map(i => i.decode())); } catch (e) { await frame(); continue; }
      if (imgs.every(i => i.isConnected && i.complete && i.naturalWidth > 0)) {
        await frame(); await frame();
        const t0 = window.__crowdT0, got = performance.getEntriesByName(imgs[0].src).pop();
        // where the time went: until the page asked for the new picture (the server's answer and its delivery to
        // the page's script), and from the picture's last byte to the painted frame (decode, layout, paint)
        window.__crowdParts = got ? {asked: got.startTime - t0, shown: performance.now() - got.responseEnd} : null;
        const net = window.__crowdNet || [], join = net.find(([k, t]) => k === 'join' && t >= t0);
        const done = net.filter(([k, t]) => k === 'done' && join && t >= join[1] && got && t <= got.startTime).pop();
        if (window.__crowdParts && join && done)  // input → posted; posted → answer on the stream; → picture asked
          Object.assign(window.__crowdParts, {sent: join[1] - t0, answered: done[1] - join[1],
                                              after: got.startTime - done[1]});
        return {ms: performance.now() - t0, srcs: imgs.map(i => i.src)};
      }
    }
    // an answer whose picture is the one shown (the same bytes: Gradio names a cached file by its content, so its
    // address stays) is painted as soon as it is read: a small slider step may change no pixel of a 28x28 digit
    if (window.__crowdT0 !== null && imgs.length >= count && imgs.every(i => before.has(i.src))) {
      const t0 = window.__crowdT0, net = window.__crowdNet || [];
      const join = net.find(([k, t]) => k === 'join' && t >= t0);
      const paths = imgs.map(i => decodeURIComponent(i.src.split('file=').pop().split('?')[0]));
      if (join && net.find(([k, t, text]) => k === 'done' && t >= join[1] && paths.every(p => text.includes(p)))) {
        await frame(); await frame();
        window.__crowdSame = true;
        return {ms: performance.now() - t0, srcs: imgs.map(i => i.src)};
      }
    }
    if (performance.now() > deadline) {
      const t0 = window.__crowdT0, net = window.__crowdNet || [];
      const joins = net.filter(([k, t]) => k === 'join' && t0 !== null && t >= t0);
      const dones = net.filter(([k, t]) => k === 'done' && t0 !== null && t >= t0);
      return {timeout: true, fired: t0 !== null, images: imgs.length, joins: joins.length, dones: dones.length,
              posted: joins.map(j => j[2]), answers: dones.map(d => d[2]), srcs: imgs.map(i => i.src)};
    }
    await frame();
  }
}"""
SOURCES_JS = "(selector) => [...document.querySelectorAll(selector)].map(i => i.src)"
# before the app's scripts run: note when the page's Gradio client posts an event (/queue/join) and when an event's
# "process_completed" message arrives on its /queue/data stream (a fetch-read event stream), so that a move's time
# splits into the page's script before it sends, the server and the stream, and the script after the answer
NET_JS = """(() => { const plain = window.fetch; window.__crowdNet = [];
  window.fetch = async function (input, init) {
    const url = String((input && input.url) || input), t = performance.now();
    if (url.includes('/queue/join'))
      window.__crowdNet.push(['join', t, String((init && init.body) || '').slice(0, 400)]);
    const r = await plain.apply(this, arguments);
    if (!url.includes('/queue/data') || !r.body) return r;
    const text = new TextDecoder();
    const seen = new TransformStream({transform(chunk, out) {
      const got = text.decode(chunk, {stream: true}), at = got.indexOf('process_completed');
      if (at >= 0) window.__crowdNet.push(['done', performance.now(), got.slice(Math.max(0, at - 80), at + 4000)]);
      out.enqueue(chunk); }});
    return new Response(r.body.pipeThrough(seen), {status: r.status, statusText: r.statusText, headers: r.headers});
  };
  setInterval(() => { if (window.__crowdNet.length > 400) window.__crowdNet.splice(0, 200); }, 1000); })()"""


class PageTimeout(TimeoutError):
    """The page did not paint the new pictures in time."""


def painted(page: Any, trigger: Any, selector: str, count: int, timeout: float, event: tuple[str, str]) -> float:
    """Seconds from the trusted input `trigger()` makes (its DOM event, `event` = (element selector, type)) to the
    new pictures under `selector` painted in the page; measured in the page with performance.now()."""
    old = page.evaluate(SOURCES_JS, selector)
    page.evaluate(MARK_JS, list(event))
    trigger()
    seen = page.evaluate(PAINTED_JS, [selector, old, count, timeout * 1000])
    if seen.get("timeout"):
        raise PageTimeout(f"no answer painted under {selector} within {timeout:g} s (the input event "
                          f"{'fired' if seen['fired'] else 'never fired'}; {seen['images']} images there; since the "
                          f"input the page posted {seen['joins']} events and received {seen['dones']} answers; "
                          f"posted {seen['posted']}; answers {seen['answers']}; pictures shown {seen['srcs']})")
    return seen["ms"] / 1000


def page_visitor(url: str, until: float, seed: int, think_s: float, tally: Tally, timeout: float,
                 stop: threading.Event, go: Callable[[], float] | None = None) -> None:
    """A real Chromium page among the visitors: it opens the app, goes to the Explore tab, uses the live run, then
    until the time is up moves a latent slider one step at a time (arrow keys: trusted input events), now and then
    draws new samples. Each time runs from the input event to the new picture painted (`page_*` actions); the
    page's own failed requests (Chromium's network errors, HTTP errors) are `page_request` failures. go: called
    once the browser is up, it returns when the crowd starts, with its end (the browser's start-up is the load
    tool's, not the class's: a student's browser starts on the student's machine)."""
    from playwright.sync_api import sync_playwright

    rng = random.Random(seed)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(timeout * 1000)
            page = context.new_page()
            if go is not None:
                until = go()

            def failed(request: Any) -> None:
                why = request.failure or ""
                if "ERR_ABORTED" not in why:  # a picture replaced before it loaded, the page closing: not a failure
                    tally.fail("page_request", f"{request.method} {request.url}: {why}", url=request.url)

            def answered(response: Any) -> None:
                if response.status >= 400:
                    tally.fail("page_request", f"HTTP {response.status} for {response.request.method} {response.url}",
                               url=response.url)

            context.add_init_script(NET_JS)
            page.on("requestfailed", failed)
            page.on("response", answered)
            explore_page(page, url, until, rng, think_s, tally, timeout, stop)
        finally:
            browser.close()


def explore_page(page: Any, url: str, until: float, rng: random.Random, think_s: float, tally: Tally,
                 timeout: float, stop: threading.Event) -> None:
    def timed(action: str, measure: Any) -> bool:
        try:
            tally.add(action, measure())
            return True
        except Exception as exc:  # PageTimeout, a Playwright timeout, the page gone
            tally.fail(action, exc, url=page.url)
            return False

    def opened() -> float:
        t0 = time.perf_counter()
        page.goto(url)
        page.get_by_role("tab", name="Explore").click()
        page.locator(USE).wait_for(state="visible")
        return time.perf_counter() - t0

    if not timed("page_open", opened):
        return
    if not timed("page_use_live", lambda: painted(page, lambda: page.click(USE), GRID, 1, timeout, (USE, "click"))):
        return
    steps = {j: rng.choice((-1, 1)) for j in range(1, PAGE_SLIDERS + 1)}  # each slider's direction of travel
    first = ["sliders", "samples"]
    while first or (time.time() < until and not stop.is_set()):
        stop.wait(rng.expovariate(1 / think_s) if think_s > 0 and not stop.is_set() else 0)
        if not first and time.time() >= until:
            break
        action = first.pop(0) if first else rng.choices(("sliders", "samples"), (0.8, 0.2))[0]
        if action == "samples":
            timed("page_samples", lambda: painted(page, lambda: page.click(SAMPLES), GRID, 1, timeout,
                                                  (SAMPLES, "click")))
            continue
        j = rng.randint(1, PAGE_SLIDERS)
        slider = page.locator(SLIDER.format(j))
        value = float(slider.input_value())
        low, high = (float(slider.get_attribute(k) or d) for k, d in (("min", -SLIDER_RANGE), ("max", SLIDER_RANGE)))
        if not low < value + 0.1 * steps[j] < high:  # at an end: turn round
            steps[j] = -steps[j]
        key = "ArrowRight" if steps[j] > 0 else "ArrowLeft"
        if timed("page_sliders", lambda s=slider, k=key, j=j: painted(page, lambda: s.press(k), MOVED, 1, timeout,
                                                                      (SLIDER.format(j), "input"))):
            parts, same = page.evaluate("() => [window.__crowdParts, window.__crowdSame]")
            if same:  # the answer's picture was the one shown (counted in page_sliders too)
                tally.add("page_sliders_unchanged", tally.seconds["page_sliders"][-1])
            if parts:  # the move's time split: until the page asked for the picture / from its bytes to the screen
                tally.add("page_sliders_asked", parts["asked"] / 1000)
                tally.add("page_sliders_shown", parts["shown"] / 1000)
                for part in ("sent", "answered", "after"):
                    if part in parts:
                        tally.add(f"page_sliders_{part}", parts[part] / 1000)


# ---- the training run, watched from outside ------------------------------------------------------------

_NUMBER = r"([0-9][0-9,]*(?:\.[0-9]+)?)"


def parse_status(value: Any, labels: list[str] | None = None) -> dict[str, float]:
    """Iteration, batch size and images/s out of what train_status returns: a dict (or its JSON), the
    status text ("**running** · iteration 1,234 / 5,000 · ... · 812 images/s"), or a tuple of outputs
    (labelled by the endpoint's return labels, so the form's "Batch size" is found too)."""
    if isinstance(value, (list, tuple)):
        found: dict[str, float] = {}
        for i, item in enumerate(value):
            label = (labels[i] if labels and i < len(labels) else "").lower()
            if label == "batch size" and str(item).strip().isdigit():
                found["batch_size"] = float(item)
            elif "iteration" not in found:
                found.update({k: v for k, v in parse_status(item).items() if k not in found})
        return found
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, dict):
        return {k: float(value[k]) for k in ("iteration", "batch_size", "images_per_s")
                if isinstance(value.get(k), (int, float))}
    text = str(value)
    found = {}
    for key, pattern in (("iteration", r"iteration\s*" + _NUMBER), ("images_per_s", _NUMBER + r"\s*(?:img|images)/s")):
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            found[key] = float(m.group(1).replace(",", ""))
    return found


class TrainingWatch:
    """Reads the run's status every second; the rate of a window is (images seen)/(time)."""

    def __init__(self, url: str, endpoints: Endpoints, batch_size: int | None, timeout: float) -> None:
        self.client = client(url, timeout)
        self.endpoints, self.batch_size, self.timeout = endpoints, batch_size, timeout
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def read(self) -> dict[str, float]:
        """One reading: the cheap progress endpoint when there is one (the page's status poll may wait in
        its queue behind thirty pages), else the page's own status poll."""
        if self.endpoints.has(PROGRESS):
            return parse_status(self.client.predict(api_name=self.endpoints.name(PROGRESS)))
        if not self.endpoints.has("train_status"):
            return {}
        args = self.endpoints.args("train_status", random.Random(0))
        name = self.endpoints.name("train_status")
        return parse_status(self.client.predict(*args, api_name=name), self.endpoints.returns[name])

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                found = self.read()
                self.batch_size = self.batch_size or found.get("batch_size")
                if found:
                    self.samples.append((time.time(), found))
            except Exception:  # a missed reading only widens the window
                pass
            self._stop.wait(1.0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout)

    def rate(self, t0: float, t1: float) -> dict[str, Any]:
        """images/s between the first and last reading in [t0, t1]."""
        readings = [(t, s) for t, s in self.samples if "iteration" in s]
        inside = [(t, s) for t, s in readings if t0 <= t <= t1]
        if len(inside) < 2:  # a slow app answers seldom: take the readings just around the window
            around = [r for r in readings if r[0] <= t0][-1:] + [r for r in readings if r[0] >= t1][:1]
            inside = around if len(around) == 2 else inside
        batch = self.batch_size or next((s["batch_size"] for _, s in inside if "batch_size" in s), None)
        if len(inside) < 2 or not batch:
            reported = [s["images_per_s"] for _, s in inside if "images_per_s" in s]
            return {"images_per_s": round(sum(reported) / len(reported), 1) if reported else None,
                    "from": "the app's readout" if reported else "no readings", "readings": len(inside)}
        (ta, a), (tb, b) = inside[0], inside[-1]
        iterations = b["iteration"] - a["iteration"]
        return {"images_per_s": round(iterations * batch / max(tb - ta, 1e-9), 1), "iterations": int(iterations),
                "seconds": round(tb - ta, 1), "batch_size": int(batch), "readings": len(inside),
                "from": "iterations x batch size / time"}


# ---- the crowd ------------------------------------------------------------------------------------


def loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def describe(url: str, timeout: float) -> Endpoints:
    """The app's endpoints from its API description; MissingEndpoint when it cannot host a crowd."""
    endpoints = Endpoints(client(url, timeout).view_api(return_format="dict", print_info=False))
    for action in REQUIRED:
        try:
            endpoints.name(action)
        except MissingEndpoint as exc:
            raise MissingEndpoint(f"{url} cannot host a crowd: {exc}. Is it DCGAN Studio?") from None
    return endpoints


def warm_up() -> int:
    """A visitors' process, started and its imports done before the crowd is timed (returns its pid)."""
    import gradio_client  # noqa: F401
    import httpx  # noqa: F401

    return os.getpid()


def visitors(url: str, endpoints: Endpoints, plan: list[tuple[int, float]], until: float, think_s: float,
             timeout: float, seed: int, pictures: bool, tally: Tally | None = None,
             stop: threading.Event | None = None, retry: bool = True) -> dict[str, Any]:
    """Visitors (index, arrival delay) as threads of this process, until `until`; their tally, plain."""
    tally, stop = tally or Tally(), stop or threading.Event()
    threads = []
    for i, delay in plan:
        th = threading.Thread(target=lambda d=delay, i=i: (stop.wait(d), visitor(
            url, endpoints, until, seed * 1000 + i, think_s, tally, timeout, stop, pictures, retry)), daemon=True)
        th.start()
        threads.append(th)
    for th in threads:
        th.join(timeout=max(0.0, until - time.time()) + timeout)
    return tally.plain()


def crowd(url: str, users: int = 30, seconds: float = 60.0, think_s: float = 1.0, poll_s: float = 1.0,
          baseline_s: float = 15.0, ramp_s: float = 5.0, batch_size: int | None = None, timeout: float = 120.0,
          seed: int = 0, watchers: int = 0, pictures: bool = True, processes: int = 1, *, retry: bool = True,
          pages: int = 0) -> dict[str, Any]:
    """Drive the app at `url` with `users` visitors for `seconds`; see the module docstring."""
    endpoints = describe(url, timeout)
    watch = TrainingWatch(url, endpoints, batch_size, timeout)
    tally, stop = Tally(), threading.Event()
    # the load tool's own start-up first, before the baseline: the visitors' processes (imports) and the pages'
    # browsers, each page waiting at `go` for the crowd's end time (a student's browser starts on the student's
    # machine; on the app's cores their start-up fell into the visitors' first seconds)
    shares = [list(range(users))[k::max(1, processes)] for k in range(max(1, processes))]  # visitors per process
    pool = others = None
    if len(shares) > 1:  # thirty clients' own Python work can fill a core: spread it (the GIL is per process)
        import concurrent.futures
        import multiprocessing

        pool = concurrent.futures.ProcessPoolExecutor(len(shares) - 1, mp_context=multiprocessing.get_context("spawn"))
        for ready in [pool.submit(warm_up) for _ in shares[1:]]:
            ready.result(timeout=timeout)
    ends: queue.Queue[float] = queue.Queue()
    launched = threading.Semaphore(0)

    def go() -> float:  # a page's browser is up: it waits for the crowd's start, and learns its end
        launched.release()
        return ends.get()

    threads = []
    for i in range(pages):  # real Chromium pages, arriving with the first visitors
        th = threading.Thread(target=page_visitor, args=(url, 0.0, seed * 1000 + 900 + i, think_s, tally, timeout,
                                                         stop, go), daemon=True)
        th.start()
        threads.append(th)
    for _ in range(pages):  # a browser that fails to start fails its page's thread; the crowd goes on without it
        launched.acquire(timeout=timeout)
    load_before = loadavg()
    watch.start()
    t_base = time.time()
    time.sleep(baseline_s)
    while len(watch.samples) < 2 and time.time() < t_base + baseline_s + timeout:  # a slow app: wait for two
        time.sleep(0.2)
    t_start = time.time()
    until = t_start + ramp_s + seconds
    plans = [[(i, ramp_s * i / max(users, 1)) for i in share] for share in shares]  # arrivals spread over the ramp
    if pool is not None:
        others = [pool.submit(visitors, url, endpoints, plan, until, think_s, timeout, seed, pictures, None, None,
                              retry) for plan in plans[1:]]
    threads.insert(0, threading.Thread(target=visitors, args=(url, endpoints, plans[0], until, think_s, timeout,
                                                              seed, pictures, tally, stop, retry), daemon=True))
    threads[0].start()
    for _ in range(pages):
        ends.put(until)
    if poll_s > 0 and endpoints.has("train_status"):
        for i in range(watchers):
            th = threading.Thread(target=lambda d=ramp_s * i / max(watchers, 1): (stop.wait(d), watcher(
                url, endpoints, until, poll_s, tally, timeout, stop)), daemon=True)
            th.start()
            threads.append(th)
    for th in threads:
        th.join(timeout=max(0.0, until - time.time()) + timeout)
    for future in others or ():
        try:
            tally.merge(future.result(timeout=max(0.0, until - time.time()) + timeout))
        except Exception as exc:  # a visitors' process that died: its visitors count as one failure
            tally.fail("process", exc)
    if pool is not None:
        pool.shutdown(cancel_futures=True)
    stop.set()
    t_end = time.time()
    seen = len(watch.samples)
    while len(watch.samples) == seen and time.time() < t_end + timeout:  # one reading after the crowd
        time.sleep(0.2)
    watch.stop()
    before, during = watch.rate(t_base, t_start), watch.rate(t_start + ramp_s, until)  # the crowd's own minute
    ratio = (during["images_per_s"] / before["images_per_s"]
             if before.get("images_per_s") and during.get("images_per_s") is not None else None)
    actions = summary(tally)
    return {
        "url": url, "users": users, "watchers": watchers, "seconds": seconds, "ramp_s": ramp_s, "think_s": think_s,
        "poll_s": poll_s, "pictures": pictures, "processes": max(1, processes), "retry": retry,
        "pages": pages,
        "baseline_s": baseline_s, "seed": seed, "mix": mix(endpoints), "endpoints": endpoints.names,
        "missing_endpoints": sorted(endpoints.missing), "missing_why": endpoints.missing,
        "requests": sum(a["ok"] + a["failed"] + a["refused"] for a in actions.values()),
        "failed": sum(a["failed"] for a in actions.values()),
        "refused": sum(a["refused"] for a in actions.values()),
        "retried": sum(a["retried"] for a in actions.values()),
        "actions": actions, "errors": tally.errors,
        "training": {"read_from": endpoints.names.get(PROGRESS, endpoints.names.get("train_status")),
                     "before": before, "during": during,
                     "during_over_before": round(ratio, 3) if ratio is not None else None},
        "loadavg_before": load_before, "loadavg_after": loadavg(), "cpus": os.cpu_count(),
        "wall_s": round(t_end - t_base, 1),
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"{result['users']} visitors exploring, {result.get('pages', 0)} real Chromium pages on Explore and "
             f"{result.get('watchers', 0)} pages on the Train tab for "
             f"{result['seconds']:g} s against {result['url']} (think {result['think_s']:g} s, watchers' status poll "
             f"{result['poll_s']:g} s)",
             f"{'action':<14}{'ok':>7}{'failed':>8}{'refused':>9}{'retried':>9}{'p50 s':>9}{'p95 s':>9}{'max s':>9}"]
    for name, a in result["actions"].items():
        cells = [f"{a[k]:>9.3f}" if a[k] is not None else f"{'-':>9}" for k in ("p50_s", "p95_s", "max_s")]
        lines.append(f"{name:<14}{a['ok']:>7}{a['failed']:>8}{a['refused']:>9}{a.get('retried', 0):>9}"
                     f"{''.join(cells)}")
    tr = result["training"]
    fmt = lambda r: "-" if r.get("images_per_s") is None else f"{r['images_per_s']:.1f}"  # noqa: E731
    lines.append(f"training images/s: before {fmt(tr['before'])}, during {fmt(tr['during'])}"
                 + (f" ({100 * tr['during_over_before']:.0f}% of before)" if tr["during_over_before"] else ""))
    lines.append(f"failed requests: {result['failed']} of {result['requests']}"
                 f" (and {result.get('retried', 0)} picture GETs sent again on a new connection, as a browser does); "
                 f"load average before {result['loadavg_before']}, after {result['loadavg_after']}")
    for error in result["errors"][:8]:
        where = error.get("endpoint") or error.get("url") or ""
        how = (f" reused connection idle {error['idle_s']} s" if error.get("reused_connection") and error.get("idle_s")
               else " reused connection" if error.get("reused_connection") else "")
        lines.append(f"  {'retried' if error.get('retried') else 'error'} at {error['at_s']} s: {error['action']} "
                     f"{where}{how}: {error['text'][:300]}")
    for action, why in result.get("missing_why", {}).items():
        lines.append(f"  {action} left out: {why}")
    return "\n".join(lines)


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("crowd", help="load test: N visitors (gradio_client sessions) explore a running app "
                                     "while it trains; latency per action and the run's images/s")
    p.add_argument("--url", default="http://127.0.0.1:7860", help="the running app (default: %(default)s)")
    p.add_argument("--users", type=int, default=30, help="visitors, one session each (default: 30)")
    p.add_argument("--seconds", type=float, default=60, help="how long the crowd stays (default: 60)")
    p.add_argument("--think", type=float, default=1.0,
                   help="mean pause between a visitor's actions, seconds, exponential (default: 1.0)")
    p.add_argument("--watchers", type=int, default=0,
                   help="extra pages that keep the Train tab open (status polls only; default: 0)")
    p.add_argument("--poll", type=float, default=1.0,
                   help="seconds between a watching page's status polls, as its timer does (default: 1.0)")
    p.add_argument("--baseline", type=float, default=15,
                   help="seconds of training measured alone before the visitors arrive (default: 15)")
    p.add_argument("--ramp", type=float, default=5, help="visitors arrive spread over this many seconds")
    p.add_argument("--batch-size", type=int, default=None,
                   help="the run's batch size, when the status does not say it")
    p.add_argument("--timeout", type=float, default=120, help="seconds before a request counts as failed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-pictures", dest="pictures", action="store_false",
                   help="take the answers without fetching their pictures (a browser fetches them; default: fetch)")
    p.add_argument("--no-retry", dest="retry", action="store_false",
                   help="never send a picture GET again, even when it died on a kept-alive connection the server "
                        "was closing (a browser sends it again; default: once, counted as retried)")
    p.add_argument("--pages", type=int, default=0,
                   help="real Chromium pages (Playwright, /usr/bin/chromium) among the visitors, on the Explore tab: "
                        "slider and new-samples times from the input event to the picture painted (default: 0)")
    p.add_argument("--page", dest="pages", action="store_const", const=1, help="one real page (--pages 1)")
    p.add_argument("--processes", type=int, default=1,
                   help="spread the visitors over this many processes (default: 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (the table goes to stderr)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.set_defaults(func=cmd_crowd)
    return p


def cmd_crowd(args: argparse.Namespace) -> int:
    try:
        result = crowd(args.url, args.users, args.seconds, args.think, args.poll, args.baseline, args.ramp,
                       args.batch_size, args.timeout, args.seed, args.watchers, args.pictures, args.processes,
                       retry=args.retry, pages=args.pages)
    except MissingEndpoint as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2)
    print(table(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 1 if result["failed"] else 0


__all__ = ["crowd", "describe", "Endpoints", "MissingEndpoint", "add_parser", "parse_status", "percentile", "summary",
           "table"]
