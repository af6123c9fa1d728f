"""Command line: python -m dcgan {train,resume,branch,sample,dissect} ... (python -m dcgan CMD --help for flags)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
from pathlib import Path

from .config import PRESETS, ConfigError, TrainConfig
from .train import Hook

NOT_FLAGS = ("extra",)  # free-form notes: JSON only, not a flag


def flag_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in NOT_FLAGS]


TIME_LIMITED_STEPS = 10_000_000


def add_config_flags(parser: argparse.ArgumentParser, defaults: bool = True) -> None:
    """One --flag per TrainConfig field, its help from the field's metadata. With defaults=False unset
    flags stay None (for resume)."""
    base = TrainConfig()
    for f in flag_fields():
        flag = "--" + f.name.replace("_", "-")
        value = getattr(base, f.name)
        default = value if defaults else None
        help_text = f"{f.metadata['help']} (default: {value})"
        if f.type == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(f.type, str)
            parser.add_argument(flag, type=kind, default=default, help=help_text)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset's recipe, then every flag given on the command line on top of it."""
    values = {f.name: getattr(args, f.name) for f in flag_fields() if getattr(args, f.name, None) is not None}
    if values.get("minutes") and "steps" not in values:
        values["steps"] = TIME_LIMITED_STEPS  # `--minutes 2.5` alone: the clock ends the run, not the step count
    return TrainConfig.from_preset(getattr(args, "preset", None) or "default", **values)


class ProgressBar(Hook):
    """The command line's view of a run: a tqdm bar with the losses, and events printed above it."""

    def __init__(self, desc: str, disable: bool) -> None:
        self.desc, self.disable = desc, disable
        self.bar = None

    def on_start(self, run) -> None:
        from tqdm import tqdm

        total = None if run.cfg.minutes else run.cfg.steps  # a time-limited run: no step-count ETA
        self.bar = tqdm(total=total, initial=run.iteration, desc=self.desc, unit="it",
                        dynamic_ncols=True, disable=self.disable)

    def on_log(self, run, row: dict) -> None:
        self.bar.update(row["iteration"] - self.bar.n)
        self.bar.set_postfix(loss_D=f"{row['loss_d']:.3f}", loss_G=f"{row['loss_g']:.3f}", Dx=f"{row['d_real']:.2f}",
                             DGz=f"{row['d_fake']:.2f}", img_s=f"{row['images_per_s']:.0f}", refresh=False)

    def on_event(self, run, message: str, problem: bool = False) -> None:
        self.write(message)

    def write(self, message: str) -> None:
        if self.disable:
            return
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, file=sys.stderr)

    def on_end(self, run, state: str) -> None:
        self.bar.close()


@contextlib.contextmanager
def stop_on_signals(control, say):
    """SIGTERM (a Space restart, Kubernetes, SLURM) and SIGINT (Ctrl-C) stop the run after its current
    step; fit then saves a checkpoint at that iteration and the command exits 0. A second signal quits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if control.stopping:
            raise SystemExit(128 + signum)
        say(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint ...")
        control.stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def train_in_foreground(desc: str, cfg: TrainConfig | None = None, resume_from: Path | None = None,
                        branch: bool = False) -> int:
    """Every command that trains (train, resume, branch, pull --resume) runs this: `runner.train` in this process
    with a progress bar (the runner adds NaN roll-back, TensorBoard, checkpoints and samples.png; quality metrics
    when cfg.metric_every)."""
    from .distributed import is_main
    from .metrics import make_metric_fn
    from .runner import SAMPLES_FILE, RunFailed, train
    from .train import Control

    control = Control()
    bar = ProgressBar(desc, disable=not is_main())  # one progress bar under torchrun

    def opened(run, folder) -> None:
        if resume_from is not None:
            bar.write(f"{'branching' if branch else 'resuming'} {resume_from} at iteration {run.iteration}")
        if is_main():
            print(f"training on {run.device} ({str(run.dtype).replace('torch.', '')}) -> {folder.path}")

    with stop_on_signals(control, bar.write):
        try:
            outcome = train(cfg, resume_from=resume_from, branch=branch, hooks=[bar], control=control,
                            metric_fn=make_metric_fn(), opened=opened)
        except RunFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    if outcome.nan_stop:  # the NaN policy's "pause": nobody can resume a CLI run, so it stopped
        print(outcome.nan_stop, file=sys.stderr)
        return 1
    if not is_main():
        return 0
    folder, checkpoints = outcome.folder, outcome.folder.step_files()
    latest = checkpoints[-1] if checkpoints else None
    print(f"{outcome.state} at iteration {outcome.run.iteration}; checkpoint: {latest}")
    if (folder.path / SAMPLES_FILE).is_file():
        print(f"samples: {folder.path / SAMPLES_FILE}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    return train_in_foreground("train", config_from_args(args))


def cmd_resume(args: argparse.Namespace) -> int:
    from .checkpoint import config_of, read, resolve_checkpoint

    path = resolve_checkpoint(args.checkpoint)
    cfg = None
    if args.steps is not None or args.device is not None:
        cfg = config_of(read(path)[1])
        cfg = cfg.replace(steps=args.steps or cfg.steps, device=args.device or cfg.device)
    return train_in_foreground("resume", cfg, resume_from=path)


def cmd_branch(args: argparse.Namespace) -> int:
    """A new run from RUN's checkpoint at --step with --set changes (dcgan/branch.py), trained like resume."""
    from .branch import parse_settings, plan_branch

    plan = plan_branch(args.run, step=args.step, changes=parse_settings(args.set), name=args.name,
                       steps=args.steps, out_dir=args.out_dir)
    what = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in plan.changes.items()) or "no settings changed"
    print(f"branch of {plan.parent} at iteration {plan.step} ({what}) -> {plan.folder}")
    return train_in_foreground("branch", plan.cfg, resume_from=plan.checkpoint, branch=True)


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
    return train_in_foreground("resume", cfg.replace(steps=args.steps) if args.steps else None, resume_from=state)


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from .checkpoint import resolve_checkpoint
    from .metrics import InceptionUnavailable, evaluate

    prog = getattr(args, "prog", "dcgan")
    if args.run and args.checkpoint and Path(args.run) != Path(args.checkpoint):
        print(f"error: give one run: `{prog} eval RUN` or `{prog} eval --checkpoint RUN`, not both "
              f"({args.run} and {args.checkpoint})", file=sys.stderr)
        return 2
    target = args.run or args.checkpoint
    if not target:
        print(f"error: which run? `{prog} eval RUN` (a run folder or a .safetensors checkpoint)", file=sys.stderr)
        return 2
    path = resolve_checkpoint(target, best=True)  # a run folder: its best checkpoint, else its newest
    say_when_the_judge_trains(path)
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


def say_when_the_judge_trains(checkpoint: Path) -> None:
    """The first digit metrics for this user train the judge (about a minute): say so, and where it is kept."""
    from .checkpoint import read_meta
    from .digit_classifier import cache_path
    from .metrics import DIGIT_SETS, STACKED_SETS

    config = read_meta(checkpoint).get("config") or {}
    size = config.get("image_size")
    if config.get("dataset") in DIGIT_SETS + STACKED_SETS and isinstance(size, int) and not cache_path(size).exists():
        print(f"training the digit judge for {size}px once (about a minute on one core); it is kept in "
              f"{cache_path(size).parent} for every later eval", file=sys.stderr)


def cmd_dissect(args: argparse.Namespace) -> int:
    """Inside G as a picture (dcgan/inside.py): the layers of one sample, then the layer's highest-ranked units,
    each with its strongest samples and the sample with the unit switched off."""
    from . import inside
    from .checkpoint import load_generator
    from .images import save_png

    G, cfg, _ = load_generator(args.checkpoint, ema=not args.no_ema)
    layers = inside.num_layers(G)
    if not 1 <= args.layer <= layers:
        print(f"error: --layer must be in 1..{layers} for this {cfg.image_size}x{cfg.image_size} generator",
              file=sys.stderr)
        return 2
    z, labels = inside.latents(G, args.sample + 1, args.seed)
    labels = None if labels is None else labels[args.sample:]
    ranking = inside.rank_units(G, args.layer)
    out = save_png(inside.dissect_picture(G, args.layer, z[args.sample:], labels, units=args.units,
                                          ranking=ranking), args.out)
    top = ", ".join(f"unit {u} ({ranking.score[u]:.3g})" for u in ranking.order[:args.units])
    print(f"wrote {out}: layer {args.layer} of {layers}; highest-ranked {top} (mean activation x effect of "
          f"switching off, {ranking.n} samples, effect on {ranking.effect_n})")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .pth_import import import_pth

    out = Path(args.out or Path("checkpoints") / "imported" / f"{Path(args.pth).stem}.safetensors")
    dest, cfg = import_pth(args.pth, out)
    print(f"imported {args.pth} ({cfg.image_size}x{cfg.image_size}, {cfg.channels} channels, nz={cfg.nz}, "
          f"ngf={cfg.ngf}) -> {dest}")
    return 0


def program_name(argv0: str | None = None) -> str:
    """How this program was invoked, for usage lines and hints: `dcgan` (the installed command) or
    `python -m dcgan` (where argv[0] is this file)."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    name = Path(argv0).name
    return "python -m dcgan" if not name or name in ("__main__.py", "-m", "-c") else name


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog or program_name(), description="DCGAN Studio command line")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a DCGAN; checkpoints and samples go to OUT_DIR/RUN_NAME/")
    p.add_argument("--preset", choices=tuple(PRESETS), default="default",
                   help="recipe: default (measured in docs/QUALITY.md) or classic (Radford et al. 2015: ngf=ndf=64, "
                        "lr 2e-4, no EMA); flags given after it override it (default: default)")
    add_config_flags(p, defaults=False)  # unset flags stay None so the preset's values stand
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("resume", help="continue a run from a checkpoint file or run folder")
    p.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder (its newest checkpoint)")
    p.add_argument("--steps", type=int, help="new total number of iterations (default: the original)")
    p.add_argument("--device", help="auto, cuda, mps or cpu (default: the original)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("branch", help="a new run from a run's saved step with settings changed (\"what if?\"): same "
                                      "weights, optimiser states, random state and data order")
    p.add_argument("run", metavar="RUN", help="a run folder (its newest checkpoint, or --step) or a .safetensors "
                                              "checkpoint")
    p.add_argument("--step", type=int, help="branch at this saved step (step_XXXXXXXX.safetensors of the run)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting to change, e.g. --set lr_d=8e-4 --set loss=hinge (repeatable; the names of "
                        "`train --help` with _; the networks' shapes, data and seed cannot change)")
    p.add_argument("--name", help="the branch's run folder name (default: <parent>-<key>=<value>..., made unique)")
    p.add_argument("--steps", type=int, help="the branch's total iterations (default: the parent's)")
    p.add_argument("--out-dir", help="folder for the branch's run folder (default: beside the parent's)")
    p.set_defaults(func=cmd_branch)

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
    p.add_argument("run", nargs="?", metavar="RUN", help="a run folder (its best checkpoint, else its newest) or a "
                                                          ".safetensors checkpoint")
    p.add_argument("--checkpoint", help="the same as RUN (the older spelling)")
    p.add_argument("--n", type=int, default=2000, help="number of generated samples (default: 2000)")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--inception", choices=("auto", "yes", "no"), default="auto",
                   help="FID/KID/IS: auto = only if the weights are already here, yes = download if needed")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("dissect", help="Inside G as a PNG: one sample's layers and a layer's highest-ranked units "
                                       "(their strongest samples and the sample with the unit switched off)")
    p.add_argument("checkpoint", help="a .safetensors checkpoint or a run folder (its newest checkpoint)")
    p.add_argument("--layer", type=int, default=2, help="the layer whose units to rank, 1 = the first (default: 2)")
    p.add_argument("--out", default="inside_g.png", help="output PNG (default: inside_g.png)")
    p.add_argument("--units", type=int, default=4, help="how many of the highest-ranked units to show (default: 4)")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the sample (default: 0)")
    p.add_argument("--sample", type=int, default=0, help="which sample of that seed (default: 0)")
    p.add_argument("--no-ema", action="store_true", help="use the raw generator, not its EMA copy")
    p.set_defaults(func=cmd_dissect)

    p = sub.add_parser("import", help="convert a pytorch/examples DCGAN generator (netG_epoch_*.pth, a plain "
                                      "state dict, loaded weights-only) into a .safetensors checkpoint")
    p.add_argument("pth", help="the netG_epoch_*.pth file")
    p.add_argument("--out", help="output .safetensors (default: checkpoints/imported/NAME.safetensors)")
    p.set_defaults(func=cmd_import)

    from .runs import add_parser as add_runs_parser
    from .tools.bench import add_parser as add_bench_parser
    from .tools.crowd import add_parser as add_crowd_parser
    from .tools.sweep import add_parser as add_sweep_parser

    add_bench_parser(sub)
    add_crowd_parser(sub)
    add_sweep_parser(sub)
    add_runs_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.prog = parser.prog  # for hints that name a command ("list another folder with: dcgan runs PATH")
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
