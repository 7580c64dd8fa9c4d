"""``evaluates``: a function of a model that runs it in eval mode and leaves every module's mode
(train or eval) as it found it, so that a caller's own training loop can evaluate mid-run."""

import functools
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from torch import nn

P = ParamSpec("P")
R = TypeVar("R")
M = TypeVar("M", bound=nn.Module)

__all__ = ["evaluates"]


def evaluates(fn: Callable[Concatenate[M, P], R]) -> Callable[Concatenate[M, P], R]:
    """Decorates ``fn(model, ...)``: the model (its first argument) in eval mode during the call,
    each of its modules back in its own mode afterwards, also when the call raises."""

    @functools.wraps(fn)
    def wrapper(model: M, /, *args: P.args, **kwargs: P.kwargs) -> R:
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            return fn(model, *args, **kwargs)
        finally:
            for m, training in modes:
                m.training = training

    return wrapper
