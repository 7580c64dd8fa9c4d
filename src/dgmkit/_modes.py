"""``evaluates``: a function of a model that runs it in eval mode and leaves every module's mode
(train or eval) as it found it, so that a caller's own training loop can evaluate mid-run, and
that checks its data against what the model's likelihood defines."""

import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import torch
from torch import nn

from dgmkit.models.base import GenerativeModel

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["evaluates"]


def evaluates(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorates ``fn(model, ...)``: the model (its first argument, given by position or as
    ``model=``) in eval mode during the call, each of its modules back in its own mode
    afterwards, also when the call raises. Where ``fn`` takes data ``x``, a model of the
    contract checks them first (``GenerativeModel.check_data``: values its likelihood defines)."""
    names = list(inspect.signature(fn).parameters)
    at = names.index("x") if "x" in names else None

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        model = args[0] if args else kwargs.get("model")
        if not isinstance(model, nn.Module):
            raise TypeError(f"{fn.__name__}() needs a model (a torch.nn.Module) first, got {type(model).__name__}")
        x = None if at is None else args[at] if at < len(args) else kwargs.get("x")
        if isinstance(model, GenerativeModel) and isinstance(x, torch.Tensor):
            model.check_data(x)
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            return fn(*args, **kwargs)
        finally:
            for m, training in modes:
                m.training = training

    return wrapper
