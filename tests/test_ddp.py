"""Data-parallel training (2 CPU processes, gloo) computes what one process computes.

BatchNorm normalises each rank's shard with that shard's statistics unless BatchNorm is synced,
so the exact comparison uses sync_bn=True; the unsynced run is checked to differ, which shows the
comparison is sensitive. A checkpoint written by the 2-process run resumes in one process.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.multiprocessing as mp

from dcgan import distributed
from dcgan.checkpoint import save_training
from dcgan.config import ConfigError
from dcgan.train import GANTraining, load_training
from tests.conftest import free_port, tiny_config

STEPS = 4
SAVE_AT = 2


def ddp_config(**changes):
    return tiny_config(batch_size=32, seed=3, **changes)


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    """One torchrun-like process: environment as torchrun sets it, then the package's own setup."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from dcgan.data import load_dataset

    assert distributed.setup("cpu")
    try:
        data = load_dataset(ddp_config())
        result = {}
        for sync_bn in (True, False):
            run = GANTraining(ddp_config(sync_bn=sync_bn), data)
            losses = []
            for _ in range(STEPS):
                losses.append(run.train_step().as_tensor()[:2].tolist())
                if sync_bn and run.iteration == SAVE_AT and distributed.is_main():
                    save_training(run, os.path.join(out_dir, "at2.safetensors"))
            checksum = sum(float(p.double().sum()) for p in run.G.parameters())
            result[str(sync_bn)] = {"losses": losses, "g_checksum": checksum}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(result, fh)
    finally:
        distributed.cleanup()
    # Done and written: leave without the interpreter's teardown, where gloo now and then aborted the process
    # ("terminate called without an active exception", SIGABRT) after its work, failing the fixture. Seen in
    # full-suite runs before and after the app's trainer moved into a child process; never during the work.
    os._exit(0)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(out)), nprocs=2, join=True)
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return ranks, out / "at2.safetensors"


def _single(steps: int) -> list[list[float]]:
    torch.set_num_threads(1)
    from dcgan.data import load_dataset

    run = GANTraining(ddp_config(), load_dataset(ddp_config()))
    return [run.train_step().as_tensor()[:2].tolist() for _ in range(steps)]


def single_process_losses(steps: int = STEPS) -> torch.Tensor:
    """The one-process run, in a fresh process as each rank is: the models' initialisation draws from torch's
    global generator, which a thread left running by an earlier test of the session (most likely test_crowd's
    app) could draw from too: once the first loss differed by 0.37 (docs/ROBUSTNESS.md: not thread-proof yet)."""
    with mp.get_context("spawn").Pool(1) as pool:
        return torch.tensor(pool.apply(_single, (steps,)))


def test_two_processes_with_sync_bn_match_one_process(two_process_run):
    ranks, _ = two_process_run
    single = single_process_losses()
    # each rank's loss is the mean over its half of the global batch: their average is the global loss
    ddp = torch.tensor([r["True"]["losses"] for r in ranks]).mean(dim=0)
    torch.testing.assert_close(ddp, single, rtol=1e-3, atol=1e-4)
    # DDP keeps the ranks' weights identical
    assert ranks[0]["True"]["g_checksum"] == pytest.approx(ranks[1]["True"]["g_checksum"], rel=1e-9)


def test_without_sync_bn_the_shards_normalise_differently(two_process_run):
    ranks, _ = two_process_run
    single = single_process_losses()
    unsynced = torch.tensor([r["False"]["losses"] for r in ranks]).mean(dim=0)
    assert (unsynced - single).abs().max() > 1e-3
    assert ranks[0]["False"]["g_checksum"] == pytest.approx(ranks[1]["False"]["g_checksum"], rel=1e-9)


def test_a_two_process_checkpoint_resumes_in_one_process(two_process_run, digits_data):
    ranks, checkpoint = two_process_run
    run = load_training(checkpoint, digits_data)
    assert run.iteration == SAVE_AT
    resumed = torch.tensor([run.train_step().as_tensor()[:2].tolist() for _ in range(STEPS - SAVE_AT)])
    single = single_process_losses()
    torch.testing.assert_close(resumed, single[SAVE_AT:], rtol=1e-3, atol=1e-4)


def test_the_global_batch_must_split_evenly(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    with pytest.raises(ConfigError, match="batch_size"):
        distributed.wrap(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1), 32, False, torch.device("cpu"))


def test_shard_takes_this_ranks_slice(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    assert distributed.shard(torch.arange(8)).tolist() == [4, 5, 6, 7]
    assert distributed.shard(None) is None
