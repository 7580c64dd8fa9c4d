"""Shared set-up of the benchmarks: data, the reference model, and timing helpers."""

import argparse
import os
import sys
from pathlib import Path

import torch

from dgmkit.config import Run, RunConfig, load_run
from dgmkit.data import load_dataset
from dgmkit.errors import DgmError

# The model of both speed benchmarks: 784-512-256-32 MLP VAE, Bernoulli likelihood.
REFERENCE = RunConfig.of(
    dataset="binarized-mnist",
    likelihood="bernoulli",
    encoder="mlp",
    hidden=[512, 256],
    latent_dim=32,
    batch_size=128,
    lr=1e-3,
    device="cpu",
)


def count(text: str) -> int:
    """An argparse type: a whole number >= 1 (rounds, steps, images, draws), refused in words."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def the_argument(doc: str, default: str | None = None) -> str:
    """The one positional argument of a script that takes no flags (a run folder, an output
    folder), or ``default``: the script's docstring for -h or --help, its usage line (the
    docstring's ``python benchmarks/...`` line) where it is missing or more are given."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(doc)
        sys.exit(0)
    if len(args) > 1 or (not args and default is None) or (args and args[0].startswith("-")):
        sys.exit(f"usage: {_usage(doc)}")
    return args[0] if args else str(default)


def no_arguments(doc: str) -> None:
    """A script that takes no arguments: its docstring for -h or --help, its usage line for
    anything else (not the whole benchmark run as if nothing had been given)."""
    args = sys.argv[1:]
    if "-h" in args or "--help" in args:
        print(doc)
        sys.exit(0)
    if args:
        sys.exit(f"usage: {_usage(doc)}  (no arguments, got {' '.join(args)})")


def _usage(doc: str) -> str:
    """The docstring's ``python benchmarks/...`` line."""
    return next((line.strip() for line in doc.splitlines() if "python benchmarks/" in line), "see the docstring")


def run_of(folder: str) -> Run:
    """The run in ``folder``, or the script stops with dgmkit's words (not a traceback)."""
    try:
        return load_run(folder)
    except DgmError as e:
        sys.exit(f"{folder}: {e}")


def masked_diffusion_run(folder: str) -> Run:
    """The run in ``folder`` (``run_of``), which must be a masked diffusion run; another is refused in words."""
    run = run_of(folder)
    if getattr(run.cfg.model, "process", None) != "masked":
        what = run.cfg.model.describe()
        sys.exit(f"{folder} holds {what}, not a masked diffusion model (--model diffusion --process masked)")
    return run


def coded_test_split(folder: str, run: Run):
    """The coder of the run's model and its data set, whose test images as stored the model must
    code; the script stops in words where the model has no coder, cannot code (``coder.check``), or
    codes pixels of other levels than the data set's (a run binarized on the fly codes 0 and 1,
    not its data set's own levels)."""
    from dgmkit.coding import coder_of

    coder = coder_of(run.model)
    if coder is None:
        sys.exit(f"{folder} holds {run.cfg.model.describe()}, a model with no coder")
    try:
        levels = coder.check(run.model)
    except DgmError as e:
        sys.exit(f"{folder} holds {run.cfg.model.describe()}, which cannot code: {e}")
    data = dataset(run.cfg.data.dataset)
    if data.num_levels != levels:
        sys.exit(
            f"{folder}'s model codes pixels of {levels} levels and the test images of {run.cfg.data.dataset} have "
            f"{data.num_levels} (a run binarized on the fly codes black and white images): give a run of the data as stored"
        )
    return coder, data


def found_data_dir() -> str | None:
    """$DGMKIT_DATA if set, else ../shared/data beside the repository where it exists, else None."""
    env = os.environ.get("DGMKIT_DATA")
    if env:
        return env
    shared = Path(__file__).resolve().parents[2] / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def data_dir() -> str:
    """The data folder (``found_data_dir``); the benchmark stops, saying so, where there is none."""
    return found_data_dir() or sys.exit("set DGMKIT_DATA to the folder holding binarized_mnist/*.amat(.gz)")


def dataset(name: str):
    """The data set ``name`` from the data folder (``data_dir``), as it is there (no download); the
    benchmark stops with dgmkit's words (not a traceback) where its files are missing."""
    try:
        return load_dataset(name, data_dir(), download=False)
    except DgmError as e:
        sys.exit(f"{name}: {e}")


def binarized_mnist():
    return dataset("binarized-mnist")


def machine() -> str:
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"
