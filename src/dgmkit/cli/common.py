"""Helpers shared by the CLI commands: loading data for a run, display scaling, output."""

import argparse
import sys
from pathlib import Path

import torch

from dgmkit._io import atomic_write_bytes, check_new_output
from dgmkit.config import Run
from dgmkit.config.codes import check_codes_current, run_dataset
from dgmkit.errors import DataError
from dgmkit.training.run_writer import RUN_FILES
from dgmkit.training.trainer import VALID_SEED

__all__ = ["split_data", "to_display", "write_png", "png_output", "add_output_flags", "say"]


def say(msg: str = "") -> None:
    print(msg, file=sys.stdout, flush=True)


def split_data(run: Run, split: str, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The split of a run's dataset, transformed as the model scores it (with the fixed
    held-out noise seed for stochastic binarization or dequantization), and its labels."""
    cfg = run.cfg.data
    dataset = run_dataset(cfg, data_dir)
    check_codes_current(dataset, run.record, run.path)
    want = tuple(run.record["data"]["event_shape"])
    if dataset.event_shape != want:
        raise DataError(f"{cfg.dataset} now has images of shape {dataset.event_shape}, but the run was trained on {want}")
    levels = run.record["data"]["num_levels"]
    if dataset.num_levels != levels:
        what = lambda n: "continuous values" if n is None else f"{n} levels"  # noqa: E731
        raise DataError(
            f"{cfg.dataset} now holds {what(dataset.num_levels)}, but the run was trained on {what(levels)}: "
            "the data changed after training"
        )
    s = dataset.split(split)
    x = run.transform(s.x, torch.Generator().manual_seed(VALID_SEED))
    return x, s.y


def to_display(x: torch.Tensor, run: Run) -> torch.Tensor:
    """Map data or model means to [0, 1] for a picture."""
    d = run.record["data"]
    if d["transform"] == "integers":
        return x.float() / (d["num_levels"] - 1)
    return x.float().clamp(0, 1)


def add_output_flags(p: argparse.ArgumentParser, what: str = "PNG file to write") -> None:
    p.add_argument("--out", required=True, help=what)
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def png_output(args: argparse.Namespace) -> Path:
    """The --out of a figure command, checked before any work: a .png name, not an existing
    file (unless --force), never one of the run's own files."""
    path = Path(args.out)
    if path.suffix.lower() != ".png":
        raise DataError(f"--out must name a .png file, got {path}")
    run_dir = Path(getattr(args, "run_dir", "."))
    return check_new_output(path, args.force, protected=[run_dir / n for n in RUN_FILES])


def write_png(path: Path, data: bytes) -> Path:
    atomic_write_bytes(path, data)
    return path
