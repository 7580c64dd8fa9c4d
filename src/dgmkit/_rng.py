"""Random-number helpers."""

import contextlib
from collections.abc import Iterator

import torch

from dgmkit.errors import shown_value

__all__ = ["checked_generator", "seeded_by", "seeded", "randn"]


def checked_generator(generator: object, name: str = "generator") -> torch.Generator | None:
    """``generator`` where it is a ``torch.Generator`` or None, else a TypeError that names ``name``
    (an int or a NumPy Generator was ignored where nothing is drawn, a deterministic transform or an
    exact estimate, and failed deep in torch where something is)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    kind = type(generator)
    given = shown_value(generator) if kind.__module__ == "builtins" else f"a {kind.__module__.split('.')[0]} {kind.__name__}"
    hint = f"; torch.Generator().manual_seed({generator}) is one seeded with it" if isinstance(generator, int) else ""
    raise TypeError(f"{name} must be a torch.Generator or None, got {given}{hint}")


@contextlib.contextmanager
def seeded_by(generator: torch.Generator | None, device: torch.device | str = "cpu"):
    """Run code that draws from torch's global RNG (``Distribution.sample`` takes no generator)
    with a seed drawn from ``generator``, restoring the global state afterwards. With no
    generator the global RNG is used as it is."""
    generator = checked_generator(generator)
    if generator is None:
        yield
        return
    target = torch.device(device)
    devices = [target] if target.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        torch.default_generator.manual_seed(seed)  # only the generators fork_rng restores (torch.manual_seed
        if devices:  # would also seed every other CUDA device's, and leave them so)
            with torch.cuda.device(target):
                torch.cuda.manual_seed(seed)
        yield


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[torch.Generator]:
    """A generator on ``device`` seeded by ``seed``, for the code that takes one, while torch's
    global RNG is seeded from the same seed for the code that draws from it (``seeded_by``), and
    restored afterwards: an evaluation of one seed draws the same numbers each time it is run
    (a data-parallel one, each rank from a seed of its own: the same on as many processes), and
    leaves the caller's random state as it was."""
    with seeded_by(torch.Generator().manual_seed(seed), device):
        yield torch.Generator(device=device).manual_seed(seed)


def randn(
    shape: tuple[int, ...] | torch.Size, generator: torch.Generator | None, *, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """``torch.randn(shape)`` from ``generator``, or from torch's global generator where it is
    None. The generator is named only where there is one: ``torch.compile`` cannot trace
    ``torch.randn(shape, generator=None)`` once the batch size in ``shape`` is symbolic (a short
    last batch compiles the step again for any batch size), and the whole step would fall back
    to eager."""
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)
