"""Learning-rate and KL-weight schedules."""

import math

__all__ = ["lr_factor", "kl_weight", "LR_SCHEDULES"]

LR_SCHEDULES = ("constant", "cosine", "exponential")


def lr_factor(schedule: str, epoch: int, epochs: int, gamma: float = 0.99) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based)."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))
    if schedule == "exponential":
        return gamma**epoch
    raise ValueError(f"unknown lr schedule {schedule!r}; choose from {LR_SCHEDULES}")


def kl_weight(beta: float, warmup_epochs: float, step: int, steps_per_epoch: int) -> float:
    """beta times a linear warm-up from 0 to 1 over ``warmup_epochs`` epochs, by step
    (Sonderby et al. 2016; Bowman et al. 2016). ``step`` counts from 0 over the whole run."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch))
