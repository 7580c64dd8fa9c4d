"""Helpers shared by the CLI commands: loading data for a run, display scaling, output."""

import sys
from pathlib import Path

import torch

from dgmkit._io import atomic_write_bytes
from dgmkit.config import Run
from dgmkit.data import load_dataset
from dgmkit.errors import DataError
from dgmkit.training.trainer import VALID_SEED

__all__ = ["split_data", "to_display", "write_png", "say"]


def say(msg: str = "") -> None:
    print(msg, file=sys.stdout, flush=True)


def split_data(run: Run, split: str, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The split of a run's dataset, transformed as the model scores it (with the fixed
    held-out noise seed for stochastic binarization or dequantization), and its labels."""
    cfg = run.cfg.data
    dataset = load_dataset(cfg.dataset, data_dir or cfg.data_dir, download=cfg.download)
    want = tuple(run.record["data"]["event_shape"])
    if dataset.event_shape != want:
        raise DataError(f"{cfg.dataset} now has images of shape {dataset.event_shape}, but the run was trained on {want}")
    s = dataset.split(split)
    x = run.transform(s.x, torch.Generator().manual_seed(VALID_SEED))
    return x, s.y


def to_display(x: torch.Tensor, run: Run) -> torch.Tensor:
    """Map data or model means to [0, 1] for a picture."""
    d = run.record["data"]
    if d["transform"] == "integers":
        return x.float() / (d["num_levels"] - 1)
    return x.float().clamp(0, 1)


def write_png(path: str, data: bytes) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"--out must name a .png file, got {path}")
    atomic_write_bytes(path, data)
    return path
