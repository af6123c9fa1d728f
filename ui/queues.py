"""Fair queues for many visitors: slider moves never wait behind someone's 30-second inversion.

Four Gradio concurrency groups (events with the same `concurrency_id` share one queue whose limit is
the smallest `concurrency_limit` among them; Gradio holds the rest in its queue without a thread):

- SLIDE: slider moves alone (one small image, ~20 ms): they never wait behind a 16-image sample grid.
- FAST: new samples, choosing a model, the other quick tools: tens to a hundred milliseconds each.
- POLL: every open page's status timer (the Train tab's `train_status`, once a second per browser). A
  tick is not sent again while one is pending, so with one worker the pages of a big class refresh
  less often instead of taking the CPU that training and sliders need.
- HEAVY: inversion, diversity, memorisation: seconds each. The app's lane (`studio.lane.wrap(fn)`) wraps
  these so that at most HEAVY_RUNNING run at once and each visitor (browser session) has at most PER_VISITOR
  of them waiting or running; one more is refused at once with "busy, try again in N s" instead of queueing
  behind itself (a visitor who fires twenty inversions through the API cannot push everyone else back). They
  run on the lane's own thread at a lower OS priority (HEAVY_NICE), so on a busy machine training and
  slider moves get the cores first.

CPU threads: torch's intra-op thread count belongs to each thread (OpenMP), but `torch.set_num_threads`
also sets the count that any thread takes at its first torch call. Serving requests run with
SERVE_THREADS each (`serve_threads()`: the fast wrapper, the heavy lane's threads). The run trains in a
process of its own (dcgan/trainer.py: a thread here waited for Python's GIL behind the serving code and
kept about half its solo speed beside thirty visitors) with `train_threads()`: the cores left after the
fast workers. Two training threads on two cores collapse (to ~9% of their speed in one measurement) as
soon as one serving thread is busy: an OpenMP barrier waits for a descheduled thread; one training
thread kept 63% beside the same load. Measured in docs/ROBUSTNESS.md ("Thirty visitors").
"""

from __future__ import annotations

import contextvars
import functools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import MappingProxyType
from typing import Any

import gradio as gr
import torch

from dcgan.train import lower_thread_priority

FAST_WORKERS = 1  # slider work in parallel with training oversubscribes 2 cores; queueing is cheaper
HEAVY_SLOTS = 4  # heavy events Gradio lets into heavy(): HEAVY_RUNNING run, the rest wait or are refused
HEAVY_RUNNING = 1
PER_VISITOR = 1  # heavy jobs one browser session may have waiting or running
HEAVY_NICE = 10  # heavy jobs' threads run this much nicer than the app: training and sliders come first
SERVE_THREADS = 1  # torch intra-op threads of one serving request

POLL_WORKERS = 1

SLIDE = MappingProxyType(dict(concurrency_id="slide", concurrency_limit=1))
FAST = MappingProxyType(dict(concurrency_id="fast", concurrency_limit=FAST_WORKERS))
POLL = MappingProxyType(dict(concurrency_id="poll", concurrency_limit=POLL_WORKERS))
HEAVY = MappingProxyType(dict(concurrency_id="heavy", concurrency_limit=HEAVY_SLOTS))


def serve_threads(n: int = SERVE_THREADS) -> None:
    """Give the calling (serving) thread n torch threads; cheap when it already has them. (The get comes
    first: a thread's first torch call sets its count to the last one set by any thread.)"""
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def lower_priority(nice: int = HEAVY_NICE) -> None:
    """A heavy-lane thread: SERVE_THREADS torch threads, below the training thread and the fast requests."""
    serve_threads()
    lower_thread_priority(nice)


def visitor() -> str:
    """The browser session (gradio_client: the Client) of the event being served; "" outside one."""
    request = gr.context.LocalContext.request.get(None)
    return str(getattr(request, "session_hash", None) or "")


class Busy(gr.Error):
    """A visitor asked for another heavy job while one of theirs is still waiting or running."""


class HeavyLane:
    """Admission for heavy jobs: a per-visitor bound, then at most `running` at once (the app's Studio holds
    the one lane every page shares)."""

    def __init__(self, running: int = HEAVY_RUNNING, per_visitor: int = PER_VISITOR, nice: int = HEAVY_NICE) -> None:
        self.per_visitor = per_visitor
        # the jobs run on threads of their own, at a lower OS priority than training and the fast requests
        self._pool = ThreadPoolExecutor(running, thread_name_prefix="heavy", initializer=lower_priority,
                                        initargs=(nice,))
        self._lock = threading.Lock()
        self._jobs: dict[str, list[tuple[str, float, list[float]]]] = {}  # visitor -> (name, admitted, [started])
        self._seconds: dict[str, float] = {}  # typical duration per job name (running mean)

    def typical(self, name: str) -> float:
        return self._seconds.get(name, 10.0)

    def wait_estimate(self, key: str) -> int:
        """Seconds until this visitor's oldest job is likely done."""
        now = time.monotonic()
        with self._lock:
            waits = []
            for name, admitted, started in self._jobs.get(key, []):
                elapsed = now - (started[0] if started else admitted)
                waits.append(self.typical(name) * (1 if started else 2) - elapsed)
        return max(1, round(min(waits, default=1)))

    def admit(self, key: str, name: str) -> tuple[str, float, list[float]]:
        with self._lock:
            jobs = self._jobs.setdefault(key, [])
            if len(jobs) < self.per_visitor:
                job = (name, time.monotonic(), [])
                jobs.append(job)
                return job
            what = ", ".join(n for n, _, _ in jobs)
        raise Busy(f"Busy: your {what} request is still running. Try again in {self.wait_estimate(key)} s.",
                   title="One heavy job at a time", print_exception=False)

    def release(self, key: str, job: tuple[str, float, list[float]]) -> None:
        name, _, started = job
        with self._lock:
            self._jobs[key].remove(job)
            if not self._jobs[key]:
                del self._jobs[key]
            if started:
                took = time.monotonic() - started[0]
                self._seconds[name] = 0.7 * self._seconds.get(name, took) + 0.3 * took

    def run(self, name: str, fn: Callable, *args: Any, **kwargs: Any) -> Any:
        key = visitor()
        job = self.admit(key, name)
        context = contextvars.copy_context()  # Gradio's request and progress bar live in context variables

        def work() -> Any:
            job[2].append(time.monotonic())
            return context.run(fn, *args, **kwargs)

        try:
            return self._pool.submit(work).result()
        finally:
            self.release(key, job)

    def wrap(self, fn: Callable) -> Callable:
        """A heavy event function that runs in this lane (use with **HEAVY). Keeps fn's signature, so Gradio
        still passes gr.Progress / gr.Request to it."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return self.run(getattr(fn, "__name__", "job").replace("run_", "").replace("_", " "), fn, *args, **kwargs)

        return wrapper


def fast(fn: Callable) -> Callable:
    """Wrap a fast event function (use with **FAST): it runs with SERVE_THREADS torch threads."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        serve_threads()
        return fn(*args, **kwargs)

    return wrapper


def train_threads() -> int:
    """Torch threads for the app's training run: the cores left after the fast workers, at least one.
    Two training threads on a 2-core machine collapse as soon as anything else runs (OpenMP barriers wait for
    a descheduled thread): measured 9% of solo speed beside one busy serving thread, against 63% with one."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores - FAST_WORKERS * SERVE_THREADS)  # polls and heavy jobs are rarer: not counted
