"""The app's training process: `runner.train` with one more hook, `Relay`, that sends what the loop reports as
typed reports (dcgan/reports.py) down a pipe; commands arrive on the same pipe. dcgan/trainer.py starts it.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import pickle
import signal
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import reports as rp
from . import runner
from .config import TrainConfig
from .data import ImageData
from .images import grid_array
from .runs import curves
from .train import Control, GANTraining, Hook


@dataclass
class Job:
    run_id: str
    cfg: TrainConfig | None
    resume_from: str | None
    data: ImageData | None
    paused: bool
    metric_fn: Callable | None
    metric_key: str
    lower_is_better: bool
    threads: int
    snapshots: bool  # a subscriber wants D's view's snapshot with each picture
    env: dict[str, str]  # the app's environment now (a forkserver child has the server's)
    branch: bool = False  # resume_from's state trains under cfg in a folder of its own (dcgan/branch.py)


@functools.cache
def context():
    """A forkserver that has imported torch and the training code once: a run starts in a fraction of a second
    and without CUDA state inherited from the app (spawn where there is no forkserver)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["dcgan.worker", "dcgan.metrics", "dcgan.dview", "dcgan.tblog", "dcgan.cuda_graph"])
    return ctx


def send(conn, obj: Any) -> None:
    """Plain pickle through the pipe: torch's multiprocessing pickler would move tensors into /dev/shm (64 MB in
    many containers). Only the app and its own training process read these bytes."""
    conn.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def recv(conn):
    return pickle.loads(conn.recv_bytes())


def reports(first: rp.Report, conn):
    """first, then every report until the pipe ends (the training process has ended)."""
    yield first
    while True:
        try:
            yield recv(conn)
        except (EOFError, OSError):
            return


def launch(job: Job) -> tuple[Any, Any, rp.Started]:
    """Starts the training process and waits until it has built the run (or raises what building it raised)."""
    payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)  # here: what does not pickle starts nothing
    ctx = context()
    conn, child_end = ctx.Pipe()
    proc = ctx.Process(target=main, args=(child_end,), name="dcgan-train", daemon=True)
    proc.start()
    child_end.close()
    try:
        conn.send_bytes(payload)
        while not conn.poll(0.5):
            if not proc.is_alive() and not conn.poll(0):
                raise EOFError
        first = recv(conn)
    except (EOFError, OSError):
        proc.join(5)
        conn.close()
        raise RuntimeError(f"the training process ended before the run started (exit code {proc.exitcode})"
                           ) from None
    except BaseException:
        conn.close()
        proc.kill()
        proc.join()
        raise
    if isinstance(first, rp.End):
        proc.join(30)
        conn.close()
        raise first.exception or RuntimeError(first.error)
    return proc, conn, first


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class Relay(Hook):
    """In the training process: what the loop reports, as typed reports down the pipe."""

    def __init__(self, send: Callable[[rp.Report], None], job: Job, control: Control) -> None:
        self.send, self.job, self.control = send, job, control
        self.run_dir = ""
        self.run: GANTraining | None = None  # once built
        self.started = False

    def _report(self, kind: type, run: GANTraining, **fields) -> Any:
        return kind(self.job.run_id, run.iteration, run.epoch, **fields)

    def pictures(self, run: GANTraining, images: torch.Tensor) -> rp.Pictures:
        snap = None
        if self.job.snapshots:
            from .dview import snapshot

            snap = replace(snapshot(run), data=None)  # the app has the data
        return self._report(rp.Pictures, run, grid=grid_array(images, nrow=8), g_state=_cpu(run.sampler().state_dict()),
                            snapshot=snap)

    def on_start(self, run: GANTraining) -> None:
        first = self.pictures(run, run.fixed_samples())
        earlier = [r for r in curves(self.run_dir).rows if r["iteration"] <= run.iteration] if run.iteration else []
        self.send(self._report(rp.Started, run, cfg=run.cfg, device=str(run.device),
                               precision=str(run.dtype).replace("torch.", ""), run_dir=self.run_dir,
                               history=tuple(run.history), pictures=first, earlier=tuple(earlier)))
        self.started = True

    def on_log(self, run: GANTraining, row: dict) -> None:
        self.send(self._report(rp.Log, run, row=row))

    def on_pictures(self, run: GANTraining, images: torch.Tensor) -> None:
        self.send(self.pictures(run, images))

    def on_metrics(self, run: GANTraining, record: dict) -> None:
        self.send(self._report(rp.Metrics, run, record=record, history=tuple(run.history)))

    def on_checkpoint(self, run: GANTraining, path: Path) -> None:
        self.send(self._report(rp.Checkpoint, run, path=str(path)))

    def on_event(self, run: GANTraining, message: str, problem: bool = False) -> None:
        self.send(self._report(rp.Event, run, message=message, problem=problem,
                               paused=problem and self.control.paused))

    def on_nan(self, run: GANTraining, iteration: int) -> None:  # after NanRollback restored the good state
        self.send(self._report(rp.RolledBack, run, history=tuple(run.history)))


def _portable(exc: BaseException) -> BaseException:
    """exc if it survives a round trip through pickle, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def main(conn) -> None:
    """The training process: `runner.train` with a relay of its reports; commands arrive on the same pipe."""
    job: Job = recv(conn)
    os.environ.clear()
    os.environ.update(job.env)
    if "DCGAN_CACHE" in os.environ:  # the forkserver imported the metrics before the app chose its cache
        from .metrics import use_cache_dir

        use_cache_dir(os.environ["DCGAN_CACHE"])
    control = Control(paused=job.paused)
    signal.signal(signal.SIGTERM, lambda *_: control.stop())  # the app is exiting: stop, save, end
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the app stops us
    if job.threads:
        torch.set_num_threads(job.threads)
    lock = threading.Lock()

    def say(report: rp.Report) -> None:
        with lock:
            try:
                send(conn, report)
            except (OSError, ValueError):  # the app is gone: stop, which saves the run
                control.stop()

    threading.Thread(target=_obey, args=(conn, control), name="dcgan-commands", daemon=True).start()
    relay = Relay(say, job, control)

    def opened(run: GANTraining, folder) -> None:
        relay.run, relay.run_dir = run, str(folder.path)

    try:
        outcome = runner.train(job.cfg, resume_from=job.resume_from, branch=job.branch, data=job.data, hooks=[relay],
                               control=control,
                               metric_fn=job.metric_fn, metric_key=job.metric_key,
                               lower_is_better=job.lower_is_better, pause_on_nan=True, opened=opened)
    except runner.RunFailed as exc:
        run = relay.run
        cause = None if relay.started else _portable(exc.__cause__ or exc)
        say(rp.End(job.run_id, run.iteration, run.epoch, "failed", str(exc), cause))
    except BaseException as exc:  # building the run failed: nothing started
        say(rp.End(job.run_id, 0, 0.0, "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}",
                    _portable(exc)))
    else:
        run = outcome.run
        say(rp.End(job.run_id, run.iteration, run.epoch, outcome.state))


def _obey(conn, control: Control) -> None:
    """The training process's command thread. The pipe ending means the app is gone: stop (which saves)."""
    while True:
        try:
            command = recv(conn)
        except (EOFError, OSError):
            control.stop()
            return
        if isinstance(command, rp.Step):
            control.step(command.k, command.update)
        elif isinstance(command, rp.Pause):
            control.pause()
        elif isinstance(command, rp.Resume):
            control.resume()
        elif isinstance(command, rp.Save):
            control.save()
        elif isinstance(command, rp.Stop):
            control.stop()
