"""Where a distribution's batch shape ends and its event shape begins."""

__all__ = ["event_split"]


def event_split(ndim: int, event_dims: int) -> int:
    """The index at which the last ``event_dims`` of ``ndim`` dimensions (the event's) begin; an
    ``event_dims`` outside 0..ndim (which slicing would silently clip) is refused."""
    if isinstance(event_dims, bool) or not isinstance(event_dims, int) or not 0 <= event_dims <= ndim:
        raise ValueError(f"event_dims must be an integer in 0..{ndim} (the dimensions there are), got {event_dims!r}")
    return ndim - event_dims
