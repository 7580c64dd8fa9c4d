"""Optional TensorBoard logging: a Trainer callback that writes every epoch's metrics with
PyTorch's standard ``SummaryWriter`` (the ``tensorboard`` package must be installed:
``pip install tensorboard``). Off by default; ``dgm train --tensorboard`` writes to
``RUN/tensorboard`` (view with ``tensorboard --logdir RUN/tensorboard``).

Scalars are logged under their metrics.jsonl names at step = epoch, with ``train_`` and
``valid_`` turned into the groups ``train/`` and ``valid/``; a per-layer list (``valid_layer_kl``)
becomes one scalar per layer (``valid/layer_kl/1``, ...). metrics.jsonl stays the record.
"""

import math
from pathlib import Path

from dgmkit.errors import ConfigError

__all__ = ["TensorBoardLogger", "tensorboard_tags", "check_log_dir"]


def tensorboard_tags(metrics: dict) -> dict[str, float]:
    """The scalars of one metrics line by TensorBoard tag (non-finite and non-numeric values left out)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if key in ("epoch", "iteration"):
            continue
        tag = key
        for group in ("train", "valid"):
            if key.startswith(group + "_"):
                tag = f"{group}/{key[len(group) + 1 :]}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            if math.isfinite(value):
                out[tag] = float(value)
        elif isinstance(value, list) and value and all(_is_number(v) for v in value):
            for i, v in enumerate(value):
                if math.isfinite(v):
                    out[f"{tag}/{i + 1}"] = float(v)
    return out


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_log_dir(log_dir: Path) -> None:
    """Refuse (ConfigError) a log folder the event files may not be written to: the run's own
    folder, never followed elsewhere (every other run file is replaced, not followed), and a folder."""
    if log_dir.is_symlink():
        raise ConfigError(f"{log_dir} is a symbolic link: the event files are written only inside the run "
                          "folder; remove the link")  # fmt: skip
    if log_dir.exists() and not log_dir.is_dir():
        raise ConfigError(f"{log_dir} exists and is not a folder: the event files cannot be written there")


class TensorBoardLogger:
    """``callback(trainer, metrics)``: the epoch's scalars to TensorBoard event files in ``log_dir``."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
        self.log_dir = Path(log_dir)
        check_log_dir(self.log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def __call__(self, trainer: object, metrics: dict) -> None:
        step = metrics.get("epoch", metrics.get("iteration", 0))
        for tag, value in tensorboard_tags(metrics).items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
