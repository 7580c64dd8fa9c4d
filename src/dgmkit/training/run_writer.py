"""The one writer of run folders: every fit path (gradient steps, closed form, EM) writes
``config.json`` once, one ``metrics.jsonl`` line per epoch (or iteration), and the checkpoints
``checkpoint.safetensors`` (every epoch, with the training state where there is one) and
``best.safetensors`` (whenever the monitored score improves), each atomically."""

import json
from pathlib import Path

import torch

from dgmkit._io import atomic_write_bytes, atomic_write_json
from dgmkit.training.checkpoint import save_checkpoint

__all__ = ["RunWriter"]


class RunWriter:
    def __init__(self, run_dir: str | Path, record: dict):
        self.run_dir = Path(run_dir)
        self.record = record

    def start(self) -> None:
        """Create the folder and write config.json."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run_dir / "config.json", self.record)

    def checkpoint(
        self,
        model: torch.nn.Module,
        name: str = "checkpoint.safetensors",
        optimizer: torch.optim.Optimizer | None = None,
        rng: dict[str, torch.Tensor] | None = None,
        counters: dict | None = None,
    ) -> None:
        save_checkpoint(self.run_dir / name, model, self.record, optimizer=optimizer, rng=rng, trainer=counters)

    def metrics(self, metrics: dict) -> None:
        """Append one epoch's line to metrics.jsonl."""
        path = self.run_dir / "metrics.jsonl"
        old = path.read_bytes() if path.exists() else b""
        atomic_write_bytes(path, old + (json.dumps(metrics) + "\n").encode())

    def truncate_metrics(self, epoch: int) -> None:
        """Drop metric lines of epochs after ``epoch`` (a resumed run trains them again)."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epoch]
        atomic_write_bytes(path, "".join(ln + "\n" for ln in lines).encode())
