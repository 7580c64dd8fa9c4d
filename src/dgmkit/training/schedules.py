"""Learning-rate and KL-weight schedules."""

import math
from dataclasses import dataclass

from dgmkit.errors import finite_at_least, whole_at_least

__all__ = ["lr_factor", "kl_weight", "LR_SCHEDULES", "LRSchedule"]

LR_SCHEDULES = ("constant", "cosine", "exponential", "iwae")


def lr_factor(schedule: str, epoch: int, epochs: int, gamma: float = 0.99, every: int = 1) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based): 1, a half cosine over the
    epochs, ``gamma`` to the power of the ``every``-epoch periods that have passed, or Burda et
    al.'s IWAE schedule: stages i = 0..7 of 3^i epochs (3280 in all) at 10^(-i/7) rounded as
    their code rounds it (1, 0.72, 0.52, 0.37, 0.27, 0.19, 0.14, 0.1), and 0.1 after them."""
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, epochs)))
    if schedule == "exponential":
        return gamma ** (epoch // every)
    if schedule == "iwae":
        stage, end = 0, 1
        while epoch >= end and stage < 7:
            stage += 1
            end += 3**stage
        return round(10 ** (1 - stage / 7), 1) / 10
    raise ValueError(f"unknown lr schedule {schedule!r}; choose from {LR_SCHEDULES}")


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate over the epochs: ``kind`` (one of ``LR_SCHEDULES``); for the exponential
    one, times ``decay`` every ``every`` epochs (1: each epoch; 200 with 0.75: Maaløe et al.'s
    steps); never below ``minimum``."""

    kind: str = "constant"
    decay: float = 0.99
    every: int = 1
    minimum: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LR_SCHEDULES:
            raise ValueError(f"unknown lr schedule {self.kind!r}; choose from {LR_SCHEDULES}")
        whole_at_least("the lr schedule's every", self.every, 1)  # (2.5 halved the rate at epochs 3 and 5)
        # Python floats (frozen: set as the dataclass sets them): a floor of True trained at lr 1, written
        # "lr": true, one of inf made every weight NaN, and a NumPy float32 made each rate one JSON cannot write
        object.__setattr__(self, "minimum", float(finite_at_least("the lr schedule's minimum", self.minimum, 0.0)))
        object.__setattr__(self, "decay", float(finite_at_least("the lr schedule's decay", self.decay, 0.0, strict=True)))
        if self.decay > 1:
            raise ValueError(f"the lr schedule's decay must be in (0, 1], got {self.decay}")

    def learning_rate(self, lr: float, epoch: int, epochs: int) -> float:
        """The learning rate of ``epoch`` (0-based) for a base rate ``lr``."""
        return max(self.minimum, lr * lr_factor(self.kind, epoch, epochs, self.decay, self.every))


def kl_weight(beta: float, warmup_epochs: float, step: int, steps_per_epoch: int) -> float:
    """beta times a linear warm-up from 0 to 1 over ``warmup_epochs`` epochs, by step
    (Sonderby et al. 2016; Bowman et al. 2016). ``step`` counts from 0 over the whole run, as
    the epochs done times ``steps_per_epoch`` plus the step within the epoch (so that a run
    resumed with another number of steps an epoch continues where it was)."""
    if warmup_epochs <= 0:
        return beta
    return beta * min(1.0, (step + 1) / (warmup_epochs * steps_per_epoch))
