"""Random-number helpers."""

import contextlib

import torch

__all__ = ["seeded_by"]


@contextlib.contextmanager
def seeded_by(generator: torch.Generator | None, device: torch.device | str = "cpu"):
    """Run code that draws from torch's global RNG (``Distribution.sample`` takes no generator)
    with a seed drawn from ``generator``, restoring the global state afterwards. With no
    generator the global RNG is used as it is."""
    if generator is None:
        yield
        return
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator, device=generator.device)))
        yield
