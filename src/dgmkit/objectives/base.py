"""The objective interface."""

from abc import ABC, abstractmethod

import torch

__all__ = ["Objective"]


class Objective(ABC):
    """An estimator: ``objective(model, x, beta)`` returns named per-example tensors with at
    least ``loss`` (what training minimizes) and ``elbo`` (a bound in nats, for reporting).

    ``update(step)`` is called by the Trainer before every training step with the global step
    count, for schedules such as a relaxation temperature; the step is checkpointed, so a
    resumed run continues the schedule exactly."""

    @abstractmethod
    def __call__(self, model, x: torch.Tensor, beta: float = 1.0): ...

    def update(self, step: int) -> None:  # noqa: B027 - a hook, empty by default
        pass
