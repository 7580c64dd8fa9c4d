"""Modules initialised from their first training batch (ActNorm, a k-means codebook)."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["DataInitialised", "initialisation_pass"]


class DataInitialised(nn.Module):
    """A module set up from the data of its first training pass, once. The flag
    ``initialized`` is a buffer, saved with the weights, so that a loaded module is not
    initialised again. The host reads it until it has seen it set (and again after a load), not
    in every step: on a GPU a read waits for the device, and under torch.compile it ends the
    graph. Subclasses call ``_register_initialized`` in ``__init__``, ask ``needs_initialising()``
    in a training pass, and call ``_mark_initialized()`` when they have initialised. Within
    ``initialisation_pass`` (``initialising_only``) a pass initialises and changes nothing else
    that a training pass changes (a codebook's moving averages)."""

    initialized: torch.Tensor
    _seen_initialized: bool = False  # (until _register_initialized, or in a module pickled before it existed)
    initialising_only: bool = False

    def _register_initialized(self, value: bool) -> None:
        self.register_buffer("initialized", torch.tensor(value))
        self._seen_initialized = value  # the host's copy of ``initialized``, once it is True

    def needs_initialising(self) -> bool:
        if not self._seen_initialized:
            self._seen_initialized = bool(self.initialized)
        return not self._seen_initialized

    def _mark_initialized(self) -> None:
        self.initialized.fill_(True)
        self._seen_initialized = True

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._seen_initialized = False  # (the loaded flag is read at the next training pass)


@contextmanager
def initialisation_pass(model: nn.Module) -> Iterator[None]:
    """Within it, a training pass of ``model`` only initialises its data-initialised modules:
    what data-parallel ranks run on the whole global batch before their first step, which
    itself updates the training statistics once, as one process does."""
    modules = [m for m in model.modules() if isinstance(m, DataInitialised)]
    for m in modules:
        m.initialising_only = True
    try:
        yield
    finally:
        for m in modules:
            m.initialising_only = False
