"""Run folders: ``config.json`` (the run's full config and its data's description), the
checkpoints, ``metrics.jsonl`` and ``eval.json``. A run folder describes itself, so every
command after ``dgm train`` needs only its path. Folders written by dgmkit 0.1 load through
``config.migrate``."""

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from dgmkit import __version__
from dgmkit.config.migrate import FORMAT, check_record, migrate_record
from dgmkit.config.schema import RunConfig
from dgmkit.data import Dataset, DataTransform
from dgmkit.errors import CheckpointError, ConfigError, DataError
from dgmkit.models import GenerativeModel
from dgmkit.objectives import Objective
from dgmkit.training import load_checkpoint

__all__ = ["Run", "load_run", "run_record", "build_model", "build_objective", "read_json"]


def run_record(cfg: RunConfig, dataset: Dataset, transform: DataTransform) -> dict:
    """What config.json and every checkpoint store about a run."""
    return {
        "format": FORMAT,
        "dgmkit_version": __version__,
        "config": cfg.to_dict(),
        "data": {
            "name": dataset.name,
            "event_shape": list(dataset.event_shape),
            "num_levels": dataset.num_levels,
            "transform": transform.kind,
        },
    }


def build_model(
    cfg: RunConfig, event_shape: tuple[int, ...], num_levels: int | None, init_data: torch.Tensor | None = None
) -> GenerativeModel:
    """The model that ``cfg`` describes, its initial weights drawn from the run's seed (the
    global generator is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.optim.seed)
        return cfg.model.build(tuple(event_shape), num_levels, init_data, cfg.optim.seed)


def build_objective(cfg: RunConfig) -> Objective:
    """What gradient training of ``cfg``'s model minimizes."""
    return cfg.model.training_objective()


@dataclass
class Run:
    path: Path
    cfg: RunConfig
    record: dict
    model: GenerativeModel
    checkpoint: Path

    @property
    def transform(self) -> DataTransform:
        d = self.record["data"]
        return DataTransform(d["transform"], d["num_levels"])


def load_run(run_dir: str | Path, which: str = "best") -> Run:
    """Load a run folder's config and model weights (``best`` if it exists, else the last)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise CheckpointError(f"no run folder at {path}")
    names = ["best.safetensors", "checkpoint.safetensors"] if which == "best" else ["checkpoint.safetensors"]
    found = [path / n for n in names if (path / n).is_file()]
    if not found:
        raise CheckpointError(f"{path} holds no checkpoint ({' or '.join(names)}); train with `dgm train --out {path}`")
    ckpt = load_checkpoint(found[0])
    record = migrate_record(ckpt["config"], str(found[0]))
    cfg = check_record(record, str(found[0]))
    data = record["data"]
    try:
        DataTransform(data["transform"], data["num_levels"])
        model = build_model(cfg, tuple(data["event_shape"]), data["num_levels"])
        model.load_state_dict(ckpt["model"])
    except (KeyError, TypeError, ValueError, ConfigError, DataError, RuntimeError) as e:
        raise CheckpointError(f"{found[0]} does not match a model this dgmkit can build: {e}") from None
    return Run(path, cfg, record, model.eval(), found[0])


def read_json(path: Path) -> dict:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return value
