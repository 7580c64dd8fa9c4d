"""``dgm demo``: the main job on the embedded default data (scikit-learn's 8x8 digits).

Trains a VAE with a Bernoulli likelihood (dynamic binarization) for up to 150 epochs, evaluates
it with 5000 importance samples on the whole test split, and writes samples, reconstructions,
interpolations and the latent plot into the run folder: about 20 s on two cores.
"""

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

from dgmkit._io import shell_path
from dgmkit.cli.common import add_count_flag, add_device_flag, say
from dgmkit.cli.train import train_run
from dgmkit.config import RunConfig
from dgmkit.errors import DgmError
from dgmkit.training import RunFolder
from dgmkit.training.checkpoint import trainer_counters

if TYPE_CHECKING:
    from dgmkit.families.vae import VAEConfig

__all__ = ["add_parser", "run_demo", "DEMO_CONFIG", "DEMO_IW_SAMPLES"]

DEMO_IW_SAMPLES = 5000
DEMO_RESULTS = ("eval.json", "samples.png", "reconstructions.png", "interpolations.png", "latents.png")  # after training

DEMO_CONFIG = dict(
    dataset="digits",
    likelihood="bernoulli",
    encoder="mlp",
    hidden=[256, 128],
    latent_dim=8,
    epochs=150,
    batch_size=64,
    lr=1e-3,
    warmup=10,
    patience=30,
    seed=0,
    device="cpu",
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="train, evaluate and plot a VAE on the bundled 8x8 digits (about 20 s on two cores)")
    p.add_argument(
        "--out", default=None, help="run folder, new or empty (default: runs/demo, or runs/demo-2, ... if that is taken)"
    )
    add_count_flag(
        p, "--epochs", 1, 10**6, help=f"at most this many epochs, fewer if it stops early (default: {DEMO_CONFIG['epochs']})"
    )
    add_device_flag(p, "where the demo trains and evaluates", default="cpu", why="the output the README shows is the CPU's")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run_demo)


def _free_folder(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that does not exist or is empty, and
    that no other dgm process holds (a demo started a moment before, which has written nothing yet)."""
    for i in range(1, 10_000):
        path = base if i == 1 else base.with_name(f"{base.name}-{i}")
        try:
            folder = RunFolder(path, fresh=True)
            folder.check_fresh()
            folder.check_not_in_use()
            return path
        except DgmError:
            continue
    raise DgmError(f"no free folder named {base}-N; give one with --out")


def run_demo(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = Path(args.out) if args.out is not None else _free_folder(Path("runs/demo"))
    RunFolder(out, fresh=True).check_fresh()  # never touch what is there: a demo needs a new or empty folder
    given = {"device": args.device, **({"epochs": args.epochs} if args.epochs else {})}
    cfg = RunConfig.from_dict({**DEMO_CONFIG, **given}, "demo")
    vae = cast("VAEConfig", cfg.model)  # DEMO_CONFIG's
    say(
        f"dgm demo: training a VAE ({vae.hidden} MLP, {vae.latent_dim}-D latent, Bernoulli likelihood) on "
        f"the 8x8 digits into {out}"
    )
    trained = False
    try:
        result = train_run(cfg, out, quiet=args.quiet, report_every=10)
        trained = True
        ended = (
            f"all {result.epoch} epochs trained"
            if result.epoch >= result.epochs
            else f"stopped early after epoch {result.epoch} of {result.epochs}"
        )
        say(f"best validation {result.label} {result.best_valid:.3f} nats at epoch {result.best_epoch} ({ended})")
        say("")
        # the follow-up commands, parsed by the real parser so their defaults stay those of `dgm`
        from dgmkit.cli.main import build_parser

        parser = build_parser()
        for argv in (
            ["eval", out, "--iw-samples", str(DEMO_IW_SAMPLES)],
            ["sample", out, "-n", "64", "--out", out / "samples.png", "--nrow", "8"],
            ["reconstruct", out, "-n", "32", "--out", out / "reconstructions.png"],
            ["interpolate", out, "--pairs", "6", "--steps", "8", "--out", out / "interpolations.png"],
            ["latents", out, "--out", out / "latents.png"],
        ):
            cmd = parser.parse_args([str(a) for a in argv] + ["--device", args.device])
            cmd.func(cmd)
    except KeyboardInterrupt:  # (Ctrl-C: what the unfinished demo leaves in its folder, said with dgm's "interrupted")
        raise KeyboardInterrupt(_left_behind(out, trained)) from None
    say(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; everything is in {out}/:")
    for f in sorted(out.iterdir()):
        if not f.name.startswith("."):  # the folder's lock file
            say(f"  {f}")
    return 0


def _left_behind(out: Path, trained: bool) -> str:
    """What an interrupted demo leaves in ``out`` (a folder it found new or empty: all of it the
    demo's), and what to do with it."""
    try:
        left = RunFolder(out, fresh=True).other_entries()
    except DgmError:
        left = []
    if not left:  # (a run stopped before its first checkpoint removes what it wrote)
        return "the demo stopped before its first checkpoint: nothing of it was kept"
    folder = shell_path(out)
    again = f"remove {folder} before a new `dgm demo --out {folder}` (`dgm demo` alone writes into a new folder)"
    if not trained:
        counters = trainer_counters(out / "checkpoint.safetensors")
        where = f", its last checkpoint after epoch {counters['epoch']}" if counters else ""
        return (
            f"{out} holds the demo's run, not finished{where} (not evaluated, no figures): "
            f"`dgm train --resume --out {shell_path(out)}` goes on training it; or {again}"
        )
    missing = [name for name in DEMO_RESULTS if not (out / name).exists()]
    if not missing:  # (stopped after its last figure: all of it is there)
        return f"{out} holds the demo's trained run, evaluated, and its figures: all the demo makes"
    return (
        f"{out} holds the demo's trained run; its {', '.join(missing)} were not written (dgm eval and the figure commands "
        f"make them from the run); or {again}"
    )
