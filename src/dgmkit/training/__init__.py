"""Fitting: the Trainer (gradient steps) and its parts, closed-form and EM fits, one run
writer, checkpoints, schedules and the moving average of the weights."""

from dgmkit.training import parts
from dgmkit.training.checkpoint import load_checkpoint, read_metadata, save_checkpoint
from dgmkit.training.ema import EMA
from dgmkit.training.fit import EXACT_SCORE, FitResult, fit_closed_form, fit_em, latent_diagnostics, trainer_result
from dgmkit.training.parts import *  # noqa: F403 - the parts, listed once in parts.__all__
from dgmkit.training.run_writer import RunFolder, RunWriter
from dgmkit.training.schedules import LR_SCHEDULES, LRSchedule, kl_weight, lr_factor
from dgmkit.training.trainer import VALID_SEED, Trainer, resolve_device

__all__ = [
    "Trainer",
    *parts.__all__,
    "EMA",
    "resolve_device",
    "VALID_SEED",
    "RunWriter",
    "RunFolder",
    "FitResult",
    "fit_closed_form",
    "fit_em",
    "trainer_result",
    "latent_diagnostics",
    "EXACT_SCORE",
    "save_checkpoint",
    "load_checkpoint",
    "read_metadata",
    "kl_weight",
    "lr_factor",
    "LRSchedule",
    "LR_SCHEDULES",
]
