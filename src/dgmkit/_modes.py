"""``evaluates``: a function of a model that runs it in eval mode and leaves every module's mode
(train or eval) as it found it, so that a caller's own training loop can evaluate mid-run, and
that checks its data against what the model's likelihood defines."""

import contextvars
import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar, cast

import torch
from torch import nn

from dgmkit.devices import device_of, dtype_of, half_precision_words
from dgmkit.errors import DataError, EvaluationError
from dgmkit.models.base import CapabilityError, GenerativeModel

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["evaluates", "codes", "needs_kind"]

_checked = contextvars.ContextVar("data_checked", default=False)  # within an evaluation that checked its data


def codes(fn: Callable[P, R]) -> Callable[P, R]:
    """``evaluates`` for a coder, which codes any number of datapoints, none too (an empty file)."""
    return _evaluation(fn, empty_ok=True)


def evaluates(fn: Callable[P, R], *, name: str | None = None) -> Callable[P, R]:
    """Decorates ``fn(model, ...)``: the model (its first argument, given by position or as
    ``model=``) in eval mode during the call, each of its modules back in its own mode
    afterwards, also when the call raises. Where ``fn`` takes data ``x``, a model of the
    contract checks them first (``GenerativeModel.check_data``: values its likelihood defines, in
    datapoints of its event shape), once: the evaluations it calls in turn are given those data,
    or parts of them. Data that are not a tensor (a NumPy array) are refused in words, and
    floating-point data of another precision than the model's are given to it in its own (a
    float64 model scores float32 data, as the transforms make them, and the reverse), and data on
    another device than the model's on its (a model on a GPU scores CPU tensors). Data of no
    datapoint (N = 0) are refused: no estimate, mean or imputation is made of none. The messages
    name ``fn`` by ``name`` (by default its own: a public function's private worker names the public one)."""
    return _evaluation(fn, empty_ok=False, name=name)


def needs_kind(model: object, kind: type, called: str, what: str) -> None:
    """A CapabilityError naming ``called`` and the model's class where ``model`` is not a ``kind``
    (``what`` says what it must be): a flow given to a function of a model's q(z|x) met an
    AttributeError deep inside (``'FlowModel' object has no attribute 'posterior'``)."""
    if not isinstance(model, kind):
        raise CapabilityError(f"{called}() needs {what}; the model is a {type(model).__name__}")


def _as_model_takes(x: torch.Tensor, model: nn.Module) -> torch.Tensor:
    """``x`` on the model's device (a model moved to a GPU scores the caller's CPU tensors) and,
    where floating-point, in its precision (a matrix product of float64 and float32 fails)."""
    want = dtype_of(model) if x.is_floating_point() else x.dtype
    return x.to(device=device_of(model), dtype=want)  # (x itself where nothing changes)


def _evaluation(fn: Callable[P, R], empty_ok: bool, name: str | None = None) -> Callable[P, R]:
    called = name or fn.__name__
    params = inspect.signature(fn).parameters
    names = list(params)
    at = names.index("x") if "x" in names else None
    needs_x = at is not None and params["x"].default is inspect.Parameter.empty  # (x=None: no data, refused as such)

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        model = args[0] if args else kwargs.get("model")
        if not isinstance(model, nn.Module):
            raise TypeError(f"{called}() needs a model (a torch.nn.Module) first, got {type(model).__name__}")
        x = None if at is None else args[at] if at < len(args) else kwargs.get("x")
        if isinstance(model, GenerativeModel) and (x is not None or needs_x):
            if not isinstance(x, torch.Tensor):
                given = "None" if x is None else type(x).__name__
                raise DataError(
                    f"{called}() takes the data as a torch tensor (N, *event), got {given} "
                    "(torch.as_tensor(x) makes one of a NumPy array)"
                )
            if problem := half_precision_words(model):
                raise EvaluationError(f"{called}(): {problem}")
        data = x if isinstance(x, torch.Tensor) and not _checked.get() else None  # (not a part an evaluation passes on)
        if data is not None and not empty_ok and data.dim() > 0 and len(data) == 0:
            raise DataError(f"{called}() needs at least one datapoint, got none (x of shape {tuple(data.shape)})")
        check = data is not None and isinstance(model, GenerativeModel)
        if check:
            cast(GenerativeModel, model).check_data(cast(torch.Tensor, data))
        if isinstance(model, GenerativeModel) and isinstance(x, torch.Tensor):
            taken = _as_model_takes(x, model)
            if at is not None and at < len(args):
                args = (*args[:at], taken, *args[at + 1 :])  # type: ignore[assignment]
            else:
                kwargs["x"] = taken
        modes = [(m, m.training) for m in model.modules()]
        model.eval()
        token = _checked.set(True) if check else None
        try:
            return fn(*args, **kwargs)
        finally:
            if token is not None:
                _checked.reset(token)
            for m, training in modes:
                m.training = training

    return wrapper
