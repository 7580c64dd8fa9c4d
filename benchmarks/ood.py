"""Out-of-distribution detection: the known failure of likelihoods and its corrections.

A PixelCNN (discretized logistic mixture) trained on Fashion-MNIST gives MNIST digits a higher
likelihood than Fashion-MNIST's own test images (Nalisnick et al. 2019), so -log p(x) detects
MNIST worse than chance. The protocol, all through the `dgm` command:

1. `dgm train` the model on Fashion-MNIST (50000 training images, 10000 validation);
2. `dgm train` the background model: the same architecture and settings with
   `--mutation-rate MU` (Ren et al. 2019; MU = 0.2 by default, optional `--weight-decay`);
3. `dgm ood MODEL --in test --ood mnist --background BG`: all 10000 Fashion-MNIST test images
   (in) against all 10000 MNIST test images (OOD), with the typicality test fitted on
   `--fit-limit` training and validation images, and Serra et al.'s complexity score with PNG
   code lengths.

    python benchmarks/ood.py OUT_DIR [--epochs 1 --channels 16 --layers 5 --device cpu]

Each step's wall time is printed; the runs, ood.json and the histogram figure land in OUT_DIR.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import count, machine  # noqa: E402

from dgmkit.cli.main import main as dgm  # noqa: E402


def _step(what: str, argv: list[str]) -> None:
    print(f"$ dgm {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    code = dgm(argv)
    print(f"# {what}: {time.perf_counter() - t0:.1f} s (exit {code})", flush=True)
    if code != 0:
        sys.exit(code)


def _check(argv: list[str]) -> None:
    """The dgm command line ``argv`` read as dgm reads it (a training's settings checked as a new
    run's), before any step runs: a value that the background model's training or the scores
    refuse (--mutation-rate 2) stops the script at once, not after the first model has trained."""
    import contextlib
    import io

    from dgmkit.cli.flags import given_values
    from dgmkit.cli.main import build_parser
    from dgmkit.cli.train import resolve_config
    from dgmkit.errors import DgmError

    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            args = build_parser(argv).parse_args(argv)
        if argv[0] == "train":
            resolve_config(args).check_inert(None, given_values(args, args._dests))
    except SystemExit as e:
        sys.exit(f"$ dgm {' '.join(argv)}\n{said.getvalue().strip() or e}")
    except DgmError as e:
        sys.exit(f"$ dgm {' '.join(argv)}\ndgm: error: {e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--epochs", type=count, default=1)
    p.add_argument("--channels", type=count, default=16)
    p.add_argument("--layers", type=count, default=5)
    p.add_argument("--components", type=count, default=5, help="logistic mixture components per pixel")
    p.add_argument("--batch-size", type=count, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--mutation-rate", type=float, default=0.2)
    p.add_argument("--weight-decay", type=float, default=0.0, help="of the background model only")
    p.add_argument("--fit-limit", type=count, default=10000)
    p.add_argument("--limit", type=count, default=None, help="in and OOD test images (default: all 10000 each)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    print(f"# OOD benchmark: Fashion-MNIST (in) vs MNIST (OOD); {machine()}; device {args.device}", flush=True)
    model = [
        "--dataset", "fashion-mnist", "--model", "arm", "--arm", "pixelcnn", "--likelihood", "logistic",
        "--logistic-components", str(args.components), "--channels", str(args.channels),
        "--arm-layers", str(args.layers), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--lr", str(args.lr), "--device", args.device, "--quiet",
    ]  # fmt: skip
    fg, bg = args.out / "fashion", args.out / "fashion-background"
    background = ["--mutation-rate", str(args.mutation_rate), "--weight-decay", str(args.weight_decay)]
    ood = ["ood", str(fg), "--in", "test", "--ood", "mnist", "--background", str(bg), "--device", args.device]
    ood += ["--fit-limit", str(args.fit_limit), "--out", str(args.out / "ood-hist.png"), "--force"]
    if args.limit:
        ood += ["--limit", str(args.limit)]
    steps = [
        ("the model", ["train", *model, "--out", str(fg)]),
        ("the background model", ["train", *model, *background, "--out", str(bg)]),
        ("the scores", ood),
    ]
    for _, argv in steps:
        _check(argv)
    for run in (fg, bg):  # (a run folder there from an earlier call: refused now, not after the first training)
        if run.exists() and (not run.is_dir() or any(run.iterdir())):
            sys.exit(f"{run} is not a new or empty folder: the two runs are trained afresh; give another OUT_DIR")
    t0 = time.perf_counter()
    for what, argv in steps:
        _step(what, argv)
    print(f"# total {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}", flush=True)


if __name__ == "__main__":
    main()
