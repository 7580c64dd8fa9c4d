"""Where a distribution's batch shape ends and its event shape begins, and the check that a
value scored has the event's width."""

import torch

__all__ = ["check_event_width", "event_split"]


def event_split(ndim: int, event_dims: int) -> int:
    """The index at which the last ``event_dims`` of ``ndim`` dimensions (the event's) begin; an
    ``event_dims`` outside 0..ndim (which slicing would silently clip) is refused."""
    if isinstance(event_dims, bool) or not isinstance(event_dims, int) or not 0 <= event_dims <= ndim:
        raise ValueError(f"event_dims must be an integer in 0..{ndim} (the dimensions there are), got {event_dims!r}")
    return ndim - event_dims


def check_event_width(value: torch.Tensor, width: int, scorer: str, symbol: str, batch: torch.Size = torch.Size()) -> None:
    """Refuse a ``value`` that ``scorer`` (a distribution over ``width`` dimensions) cannot score:
    one whose last dimension is not ``width`` (a value of width 1 was broadcast over the
    dimensions and scored silently, a flat reshape took any multiple of the width), a scalar, or,
    where ``batch`` is given, one whose dimensions before the last do not end in ``batch``."""
    lead = value.dim() - 1 - len(batch)
    if lead < 0 or value.shape[lead:-1] != batch or value.shape[-1] != width:
        dims = ", ".join(map(str, (*batch, width)))
        got = tuple(value.shape)
        raise ValueError(f"{scorer} over {width} dimensions scores {symbol} of shape (..., {dims}), got {got}")
