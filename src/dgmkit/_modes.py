"""``evaluates``: a function of a model that runs it in eval mode and leaves every module's mode
(train or eval) as it found it, so that a caller's own training loop can evaluate mid-run."""

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from torch import nn

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["evaluates"]


def evaluates(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorates ``fn(model, ...)``: the model (its first argument, given by position or as
    ``model=``) in eval mode during the call, each of its modules back in its own mode
    afterwards, also when the call raises."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        model = args[0] if args else kwargs.get("model")
        if not isinstance(model, nn.Module):
            raise TypeError(f"{fn.__name__}() needs a model (a torch.nn.Module) first, got {type(model).__name__}")
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            return fn(*args, **kwargs)
        finally:
            for m, training in modes:
                m.training = training

    return wrapper
