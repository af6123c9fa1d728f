"""Command line: python -m dcgan {train,resume,sample} ... (python -m dcgan CMD --help for flags)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .config import ConfigError, TrainConfig

FLAG_HELP = {
    "dataset": "data set: digits (bundled, offline), mnist, fashion-mnist, cifar10, celeba, folder",
    "data_path": "folder or .zip of your own images (with --dataset folder); class sub-folders optional",
    "image_size": "image side in pixels: 28, 32, 64 or 128",
    "channels": "1 (grey) or 3 (colour)",
    "augment": "random horizontal flip and padded random crop of the real images",
    "val_fraction": "fraction of the data held out for metrics",
    "nz": "latent (z) dimension",
    "ngf": "generator width (channels of its last hidden layer)",
    "ndf": "discriminator width (channels of its first layer)",
    "num_classes": "train a class-conditional GAN with this many classes (0 = unconditional)",
    "spectral_norm": "spectral normalisation in D (replaces D's BatchNorm)",
    "batch_size": "images per batch",
    "lr_g": "generator Adam learning rate",
    "lr_d": "discriminator Adam learning rate",
    "beta1": "Adam beta1 (DCGAN: 0.5)",
    "beta2": "Adam beta2",
    "loss": "bce (non-saturating, default), hinge, lsgan or wgan-gp",
    "gp_weight": "gradient-penalty weight for wgan-gp",
    "r1_gamma": "R1 penalty weight on real images (0 = off)",
    "d_steps": "discriminator updates per generator update",
    "ema_decay": "keep an exponential moving average of G for samples (e.g. 0.999; 0 = off)",
    "diffaug": "DiffAugment ops for D, comma list of translation,cutout,color",
    "steps": "number of training iterations",
    "seed": "random seed (weights, noise, data order)",
    "device": "auto (CUDA > MPS > CPU), cuda, mps or cpu",
    "precision": "auto (bf16 where supported), bf16 or fp32",
    "compile": "torch.compile the networks",
    "sync_bn": "with torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)",
    "log_every": "sync with the host for logs and NaN checks every K steps (0 = auto)",
    "sample_every_s": "seconds between fixed-noise grid snapshots",
    "checkpoint_every": "save a checkpoint every K steps (0 = only at the end)",
    "keep_last": "number of step checkpoints to keep (plus best.safetensors)",
    "metric_every": "compute quality metrics every K steps (0 = off)",
    "nan_policy": "on a NaN loss: rollback (to the last good state, halving the lr) or pause",
    "run_name": "name of the run folder under --out-dir (default: dataset-size-time)",
    "out_dir": "folder that holds run folders",
}


def add_config_flags(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """One --flag per TrainConfig field. With defaults=False unset flags stay None (for resume)."""
    base = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name not in FLAG_HELP:
            continue
        flag = "--" + f.name.replace("_", "-")
        value = getattr(base, f.name)
        default = value if defaults else None
        help_text = f"{FLAG_HELP[f.name]} (default: {value})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            parser.add_argument(flag, type=kind, default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = {name: getattr(args, name) for name in FLAG_HELP if getattr(args, name, None) is not None}
    return TrainConfig(**values).validate()


def run_training(trainer, desc: str) -> int:
    """Poll the background trainer with a tqdm bar until it ends; Ctrl-C stops it cleanly."""
    from tqdm import tqdm

    status = trainer.status()
    from .distributed import is_main

    bar = tqdm(total=status.total, initial=status.iteration, desc=desc, unit="it", dynamic_ncols=True,
               disable=not is_main())  # one progress bar under torchrun
    shown = 0
    try:
        while True:
            status = trainer.status()
            bar.update(status.iteration - bar.n)
            rows = trainer.metrics.since(max(0, len(trainer.metrics) - 1))
            if rows:
                r = rows[-1]
                bar.set_postfix(loss_D=f"{r['loss_d']:.3f}", loss_G=f"{r['loss_g']:.3f}",
                                Dx=f"{r['d_real']:.2f}", DGz=f"{r['d_fake']:.2f}",
                                img_s=f"{status.images_per_s:.0f}", refresh=False)
            for event in status.events[shown:]:
                bar.write(event)
            shown = len(status.events)
            if status.state not in ("starting", "running"):
                break
            time.sleep(0.5)
    except KeyboardInterrupt:
        bar.write("stopping: saving a checkpoint ...")
        trainer.stop()
    bar.close()
    status = trainer.status()
    if status.state == "failed":
        print(status.error, file=sys.stderr)
        return 1
    if status.state == "paused" and status.error:
        print(status.error, file=sys.stderr)
        trainer.stop()
        return 1
    if not is_main():
        return 0
    print(f"{status.state} at iteration {status.iteration}; checkpoint: {trainer.last_checkpoint()}")
    grid_path = Path(status.run_dir) / "samples.png"
    _, grid = trainer.grid()
    if grid is not None:
        from .images import save_png, upscale

        save_png(upscale(grid, 512), grid_path)
        print(f"samples: {grid_path}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .metrics import METRIC_KEY, make_metric_fn
    from .trainer import Trainer

    cfg = config_from_args(args)
    trainer = Trainer(metric_fn=make_metric_fn(), metric_key=METRIC_KEY)  # runs when cfg.metric_every > 0
    trainer.start(cfg)
    status = trainer.status()
    print(f"training on {status.device} ({status.precision}) -> {status.run_dir}")
    return run_training(trainer, "train")


def cmd_resume(args: argparse.Namespace) -> int:
    from .checkpoint import resolve_checkpoint
    from .metrics import METRIC_KEY, make_metric_fn
    from .trainer import Trainer

    path = resolve_checkpoint(args.checkpoint)
    trainer = Trainer(metric_fn=make_metric_fn(), metric_key=METRIC_KEY)
    cfg = None
    if args.steps is not None or args.device is not None:
        from .checkpoint import config_of, read

        _, meta = read(path)
        cfg = config_of(meta)
        cfg = cfg.replace(steps=args.steps or cfg.steps, device=args.device or cfg.device)
    trainer.start(cfg, resume_from=path)
    print(f"resuming {path} at iteration {trainer.status().iteration}")
    return run_training(trainer, "resume")


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import load_generator
    from .images import grid_array, save_png, upscale
    from .models import sample

    G, cfg, _ = load_generator(args.checkpoint, ema=not args.no_ema)
    labels = None
    if cfg.num_classes and args.label is not None:
        if not 0 <= args.label < cfg.num_classes:
            raise SystemExit(f"error: --label must be in 0..{cfg.num_classes - 1}")
        labels = torch.full((args.n,), args.label)
    images = sample(G, args.n, args.seed, labels=labels)
    out = save_png(upscale(grid_array(images), args.min_side), args.out)
    print(f"wrote {out} ({args.n} samples, {cfg.image_size}x{cfg.image_size})")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    """Token from HF_TOKEN or `hf auth login` only: a --token flag would leak into shell history."""
    from .checkpoint import resolve_checkpoint
    from .hub import HubError, push

    checkpoint = resolve_checkpoint(args.checkpoint)
    try:
        result = push(checkpoint, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.message, include_training_state=args.training_state,
                      license=args.license)
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pushed {checkpoint.name} to {result.repo_id} ({result.revision}): {', '.join(result.files)}")
    print(f"commit {result.commit_oid[:10]}: {result.url}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from .hub import HubError, pull, save_training_state

    try:
        pulled = pull(args.repo_id, args.revision)
        state = (save_training_state(pulled.training_state, pulled.repo_id, args.out_dir)
                 if pulled.training_state is not None else None)
    except HubError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg = pulled.config
    print(f"pulled {pulled.label}: {cfg.image_size}x{cfg.image_size}x{cfg.channels}, nz={cfg.nz}, "
          f"trained on {cfg.dataset}")
    if args.samples:
        from .card import sample_grid
        from .images import save_png, upscale

        out = save_png(upscale(sample_grid(pulled.generator, cfg, seed=args.seed), 512), args.samples)
        print(f"samples: {out}")
    if state is None:
        print("this repo holds the generator only (no training state to resume)")
        if args.resume:
            return 2
        return 0
    print(f"training state: {state}  (continue with: python -m dcgan resume {state.parent})")
    if not args.resume:
        return 0
    from .trainer import Trainer

    trainer = Trainer()
    trainer.start(cfg.replace(steps=args.steps) if args.steps else None, resume_from=state)
    return run_training(trainer, "resume")


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .checkpoint import resolve_checkpoint
    from .metrics import InceptionUnavailable, evaluate

    path = resolve_checkpoint(args.checkpoint, best=True)  # a run folder: its best checkpoint, else its newest
    try:
        result = evaluate(path, n=args.n, inception=args.inception, device=args.device, seed=args.seed)
    except InceptionUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {"checkpoint": str(path), **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .pth_import import import_pth

    out = Path(args.out or Path("checkpoints") / "imported" / f"{Path(args.pth).stem}.safetensors")
    dest, cfg = import_pth(args.pth, out)
    print(f"imported {args.pth} ({cfg.image_size}x{cfg.image_size}, {cfg.channels} channels, nz={cfg.nz}, "
          f"ngf={cfg.ngf}) -> {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dcgan", description="DCGAN Studio command line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a DCGAN; checkpoints and samples go to OUT_DIR/RUN_NAME/")
    add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue a run from a checkpoint file or run folder")
    p.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder (its newest checkpoint)")
    p.add_argument("--steps", type=int, help="new total number of iterations (default: the original)")
    p.add_argument("--device", help="auto, cuda, mps or cpu (default: the original)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("sample", help="write a grid PNG of samples from a checkpoint")
    p.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder (its newest checkpoint)")
    p.add_argument("--out", default="samples.png", help="output PNG (default: samples.png)")
    p.add_argument("--n", type=int, default=64, help="number of samples (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.add_argument("--label", type=int, help="class for a conditional model (default: cycle through all)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA copy")
    p.add_argument("--min-side", type=int, default=512, help="upscale the grid to at least this side")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("push", help="upload a checkpoint's generator and model card to the Hugging Face Hub "
                                    "(token from HF_TOKEN or `hf auth login`)")
    p.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder (its newest checkpoint)")
    p.add_argument("repo_id", help="user/name on the Hub (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to push to (created from main if missing; default: main)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--training-state", action="store_true",
                   help="also upload the full training state (D, optimisers, step) so training can resume")
    p.add_argument("--license", default="mit", help="license in the model card metadata (default: mit)")
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("pull", help="download a generator from the Hub; resume its training if the state is there")
    p.add_argument("repo_id", help="user/name on the Hub")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--out-dir", default="checkpoints", help="where a training state goes (default: checkpoints)")
    p.add_argument("--samples", help="write a grid PNG of 64 samples here")
    p.add_argument("--seed", type=int, default=0, help="noise seed for --samples (default: 0)")
    p.add_argument("--resume", action="store_true", help="continue training from the pulled training state")
    p.add_argument("--steps", type=int, help="with --resume: new total number of iterations")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("eval", help="quality metrics of a checkpoint as JSON: digit coverage and Fréchet "
                                    "distance (offline), FID / KID / IS (InceptionV3 weights)")
    p.add_argument("--checkpoint", required=True, help="a .safetensors checkpoint or a run folder (its best)")
    p.add_argument("--n", type=int, default=2000, help="number of generated samples (default: 2000)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--inception", choices=("auto", "yes", "no"), default="auto",
                   help="FID/KID/IS: auto = only if the weights are already here, yes = download if needed")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("import", help="convert a pytorch/examples DCGAN generator (netG_epoch_*.pth, a plain "
                                      "state dict, loaded weights-only) into a .safetensors checkpoint")
    p.add_argument("pth", help="the netG_epoch_*.pth file")
    p.add_argument("--out", help="output .safetensors (default: checkpoints/imported/NAME.safetensors)")
    p.set_defaults(func=cmd_import)

    from .bench import add_parser as add_bench_parser

    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from . import distributed
    from .checkpoint import CheckpointError
    from .data import DatasetError

    if args.command in ("train", "resume"):  # under torchrun: join the process group (no-op otherwise)
        distributed.setup(getattr(args, "device", None) or "auto")
    try:
        return args.func(args)
    except (ConfigError, DatasetError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
