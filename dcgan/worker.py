"""The app's training process: `runner.train` with one more hook, `Relay`, that sends what the loop reports as
typed reports (dcgan/reports.py) down a pipe; commands arrive on the same pipe. dcgan/trainer.py starts it.
"""

from __future__ import annotations

import contextvars
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
from . import runner, zerogpu
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
    nice: int = 0  # OS priority offset of the training process (the app's branches give way to its main run)


def give_way_to_others(nice: int) -> None:
    """A branch's training process: it runs on what the run shown in full and the page's answers leave. Linux's
    SCHED_IDLE, not only a nice value: with nice 10 a slider-sized answer's p95 beside two runs was about twice its
    p95 beside one (the waking server thread often landed on the branch's core and waited); a core running only
    SCHED_IDLE work counts as free to a waking thread, which takes it at once (docs/ROBUSTNESS.md). Elsewhere, the
    nice value."""
    os.nice(nice)
    policy = getattr(os, "SCHED_IDLE", None)
    if policy is not None:
        try:
            os.sched_setscheduler(0, policy, os.sched_param(0))  # this thread: the ones started later inherit it
        except OSError:  # not allowed here (a sandbox): the nice value stays
            pass


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
    """Starts the training process and waits until it has built the run (or raises what building it raised).
    On ZeroGPU the run advances in GPU calls from this process instead (dcgan/zerogpu.py), behind the same pipe."""
    payload = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)  # here: what does not pickle starts nothing
    if zerogpu.chunked():
        proc, conn = start_chunks()
    else:
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
        if self.started:  # a ZeroGPU chunk after the first: the run goes on
            return
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


def reporter(conn, control: Control) -> Callable[[rp.Report], None]:
    """say(report): sends it down the pipe, one sender at a time; if the app is gone, the run stops (and saves)."""
    lock = threading.Lock()

    def say(report: rp.Report) -> None:
        with lock:
            try:
                send(conn, report)
            except (OSError, ValueError):
                control.stop()

    return say


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
    if job.nice:
        give_way_to_others(job.nice)
    say = reporter(conn, control)

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
        obey(command, control)


def obey(command: rp.Command, control: Control) -> None:
    """One command from the app, as a Control call."""
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


# ---- ZeroGPU: the run in chunks, each a GPU call from the app's process (dcgan/zerogpu.py says why) ---------


def take_commands(conn, control, wait: float = 0.0) -> None:
    """Every command waiting on the pipe, as Control calls (waiting up to `wait` s for the first); the pipe
    ending means the app is gone: stop (which saves)."""
    try:
        if not conn.poll(wait):
            return
        while True:
            obey(recv(conn), control)
            if not conn.poll(0):
                return
    except (EOFError, OSError):
        control.stop()


def run_chunk(payload: bytes, carry: zerogpu.Carry, conn, seconds: float) -> zerogpu.Carry:
    """One GPU call: the run (built, or rebuilt from carry.state) trains for `seconds` or until it is paused,
    stopped or done; what it reports goes down `conn`. Returns the new carry (carry.end set when the run ended).
    Errors come back in carry.end, not raised: ZeroGPU would pass on only their class name."""
    from .checkpoint import RunFolder, config_of, decode, encode

    job = pickle.loads(payload)  # our own bytes, pickled by worker.launch from the app's Job
    if job.threads:  # per calling thread (OpenMP): set in every chunk, as the training process sets it once
        torch.set_num_threads(job.threads)
    control = zerogpu.ChunkControl(lambda c: take_commands(conn, c), carry, seconds)
    say = reporter(conn, control)

    relay = Relay(say, job, control)
    relay.started = carry.started
    carry.chunks += 1
    try:
        if carry.state is None:
            run, folder = runner.open_run(job.cfg, job.resume_from, job.data, job.branch)
        else:
            tensors, meta = decode(carry.state, "the run's state")
            run = GANTraining(config_of(meta), job.data)
            run.load_state_dict(tensors, meta, "the run's state")
            run.loss_log = [list(r) for r in meta["losses"]]
            folder = RunFolder(carry.run_dir, run.cfg.keep_last)
    except BaseException as exc:  # building the run failed (first chunk: nothing started)
        carry.end = rp.End(job.run_id, 0, 0.0, "failed", f"{type(exc).__name__}: {exc}", _portable(exc))
        return carry
    relay.run, relay.run_dir = run, str(folder.path)
    run.trained_s = carry.trained_s
    try:
        outcome = runner.train(run.cfg, data=job.data, hooks=[control, relay], control=control,
                               metric_fn=job.metric_fn, metric_key=job.metric_key,
                               lower_is_better=job.lower_is_better, pause_on_nan=True, run_in=(run, folder))
    except runner.RunFailed as exc:
        cause = None if relay.started else _portable(exc.__cause__ or exc)
        carry.end = rp.End(job.run_id, run.iteration, run.epoch, "failed", str(exc), cause)
        return carry
    carry.started, carry.run_dir, carry.trained_s = relay.started, str(folder.path), run.trained_s
    carry.iteration, carry.epoch = run.iteration, run.epoch
    carry.control = zerogpu.saved(control)
    if outcome.state == "suspended":
        tensors, meta = run.state_dict()
        meta["losses"] = run.loss_log  # all of it: the state_dict thins a long log for checkpoint files
        carry.state = encode(tensors, meta)
    else:
        carry.end = rp.End(job.run_id, run.iteration, run.epoch, outcome.state)
    return carry


class Driver(threading.Thread):
    """The chunk loop, in the app's process; stands where dcgan/trainer.py keeps its training process."""

    def __init__(self, conn) -> None:
        super().__init__(name="dcgan-chunks", daemon=True)
        self.conn = conn
        self.exitcode: int | None = None
        self._context = contextvars.copy_context()  # the Start click's request: its visitor's ZeroGPU quota

    def run(self) -> None:
        try:
            self._context.run(_drive, self.conn)
            self.exitcode = 0
        except BaseException:
            self.exitcode = 1
            raise
        finally:
            self.conn.close()

    def kill(self) -> None:
        """No thread can be killed: closing its pipe makes the run stop (and save) at its next turn."""
        self.conn.close()


def start_chunks() -> tuple[Driver, Any]:
    """The chunk loop's thread and the app's end of its pipe (worker.launch sends the Job down it)."""
    conn, driver_end = multiprocessing.Pipe()
    driver = Driver(driver_end)
    driver.start()
    return driver, conn


def _drive(conn) -> None:
    """Chunk after chunk until the run ends; between chunks the commands arrive here."""
    payload = conn.recv_bytes()
    job = pickle.loads(payload)
    carry = zerogpu.Carry(control=zerogpu.saved(Control(paused=job.paused)))
    call = zerogpu.gpu_chunk(run_chunk)
    while carry.end is None:
        control = Control()
        zerogpu.restore(control, carry.control)
        while carry.chunks and zerogpu.idle(control):  # a paused run holds no GPU: wait for Resume, Step, Save, Stop
            take_commands(conn, control, wait=0.5)
        take_commands(conn, control)
        carry.control = zerogpu.saved(control)
        before = carry
        try:
            carry = call(payload, before, conn, zerogpu.chunk_seconds())
        except Exception as exc:  # refused or aborted by ZeroGPU (quota, duration): paused at the state before
            if not before.started:
                carry = before
                carry.end = rp.End(job.run_id, 0, 0.0, "failed", f"the GPU call failed: {exc}")
                break
            control.pause()
            control.shown = True
            carry = before
            carry.control = zerogpu.saved(control)
            why = f"The GPU call failed ({exc}): the run is paused at its last chunk's state; resume to try again."
            try:
                send(conn, rp.Event(job.run_id, carry.iteration, carry.epoch, message=why, problem=True, paused=True))
            except (OSError, ValueError):
                return
    try:
        send(conn, carry.end)
    except (OSError, ValueError):
        pass


if zerogpu.on_zerogpu():  # ZeroGPU registers the app's GPU functions when Gradio launches: decorate before that
    zerogpu.gpu_chunk(run_chunk)
