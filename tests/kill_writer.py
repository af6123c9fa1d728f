"""Helper process for the SIGKILL test: forks checkpoint writers that the test kills with kill -9.

Importing torch takes seconds, so this process pays for it once and then, for every line
``go RUN_DIR ITERATION SAFE|UNSAFE`` on stdin, forks a child that saves checkpoints into RUN_DIR
through the real ``RunFolder.save`` as fast as it can (iteration numbers counting up from
ITERATION). It prints the child's pid, waits for the child to die (the test sends SIGKILL at a
random moment) and prints ``dead``. The children never touch stdout. With UNSAFE the child saves
with a non-atomic in-place writer instead (the test's own check that it can fail).

    python tests/kill_writer.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcgan import checkpoint  # noqa: E402
from dcgan.checkpoint import RunFolder  # noqa: E402
from dcgan.config import TrainConfig  # noqa: E402
from dcgan.data import ImageData  # noqa: E402
from dcgan.train import GANTraining  # noqa: E402

KEEP_LAST = 2


def kill_config() -> TrainConfig:
    """Mid-sized nets so one checkpoint is a few MB and the write takes a while."""
    return TrainConfig(dataset="digits", image_size=28, channels=1, ngf=32, ndf=32, nz=100, batch_size=16,
                       steps=10**7, device="cpu", precision="fp32", keep_last=KEEP_LAST)


def synthetic_data() -> ImageData:
    """Fixed random images, so the test can resume with the very same data set."""
    g = torch.Generator().manual_seed(7)
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g)
    return ImageData(name="synthetic", train=images[:56], val=images[56:])


def write_forever(run: GANTraining, folder: RunFolder, iteration: int) -> None:
    run.train_step()  # every child saves a state of its own
    run.iteration = iteration
    while True:
        run.iteration += 1
        folder.save(run)


def write_in_place(path: Path, payload: bytes) -> None:
    """The unsafe way, to prove the test notices it: straight over the target, in chunks as most
    serialisers write (one big write() is hard to interrupt, so a kill would rarely tear it)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        for start in range(0, len(payload), 1 << 16):
            fh.write(payload[start:start + (1 << 16)])
            fh.flush()


def main() -> int:
    torch.set_num_threads(1)  # no worker threads exist when we fork
    run = GANTraining(kill_config(), synthetic_data())
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] != "go":
            break
        pid = os.fork()
        if pid == 0:
            try:
                if command[3] == "UNSAFE":
                    checkpoint.write_atomic = write_in_place
                write_forever(run, RunFolder(Path(command[1]), keep_last=KEEP_LAST), int(command[2]))
            finally:
                os._exit(3)
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"dead {status}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
