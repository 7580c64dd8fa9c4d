"""The trainer, checkpoints and schedules."""

from dgmkit.training.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from dgmkit.training.schedules import LR_SCHEDULES, kl_weight, lr_factor
from dgmkit.training.trainer import Trainer, resolve_device

__all__ = [
    "Trainer",
    "resolve_device",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "kl_weight",
    "lr_factor",
    "LR_SCHEDULES",
]
