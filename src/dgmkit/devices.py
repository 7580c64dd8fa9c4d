"""Where tensors are computed: one way to name a device, for every command and the Python API.

``auto`` is CUDA where a CUDA device is present, else the CPU; ``cpu``; ``cuda`` (the current
CUDA device) or ``cuda:N``. A CUDA device asked for where there is none, or a name that is not
one of these, is refused with one line.

>>> resolve_device("cpu")
device(type='cpu')
"""

import itertools

import torch

from dgmkit.errors import ConfigError

__all__ = ["DEVICE_CHOICES", "check_device_name", "resolve_device", "device_of", "reads_are_free"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def check_device_name(device: str) -> None:
    """Refuse a name that is not auto, cpu, cuda or cuda:N (whether that device is present is
    ``resolve_device``'s to say: a config written on one machine may name another's)."""
    index = device.removeprefix("cuda:")
    if device not in ("auto", "cpu", "cuda") and not (
        device.startswith("cuda:") and index.isascii() and index.isdigit() and len(index) < 6
    ):
        raise ConfigError(f"unknown device {device[:40]!r}; choose auto, cpu, cuda or cuda:N")


def resolve_device(device: "str | torch.device" = "auto") -> torch.device:
    """The torch device that ``device`` names (see the module)."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise ConfigError(f"a device is named by a string (auto, cpu, cuda), got {type(device).__name__}")
    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    index = device.removeprefix("cuda:") if device.startswith("cuda:") else None
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device} was asked for, but no CUDA device is available (use --device cpu or auto)")
    if index is None:
        return torch.device("cuda")
    if int(index) >= torch.cuda.device_count():
        raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", int(index))


def device_of(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (the CPU for one that holds none)."""
    for t in module.parameters():
        return t.device
    for b in module.buffers():
        return b.device
    return torch.device("cpu")


def widened(t: torch.Tensor) -> torch.Tensor:
    """Half-precision results (under autocast) in float32; float32 and float64 as they are."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The floating-point precision of a module's first floating parameter or buffer (the default
    dtype for one that holds none): what its inputs and draws are made in."""
    # (lazily: an AE, a WAE and a VQ-VAE ask on every forward pass, and a tuple of every
    # parameter and buffer took 30 to 75 us a call where the first tensor answers)
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def half_precision_words(module: torch.nn.Module) -> str | None:
    """Why data are not given to ``module``, where it was made half precision (``.half()``,
    ``.bfloat16()``), else None: dgmkit evaluates and reconstructs in float32 or float64 (a
    log-likelihood of 700 nats in float16 is rounded to the nearest 0.5, and such a model's layers
    meet float32 draws)."""
    precision = dtype_of(module)
    if precision not in (torch.float16, torch.bfloat16):
        return None
    return (
        f"the model's parameters are {str(precision).removeprefix('torch.')}; dgmkit gives data to a model in float32 "
        "or float64 (model.float() makes it float32) and trains in half precision under autocast, the parameters "
        "float32 (precision bf16 or fp16 on CUDA)"
    )


def reads_are_free(t: torch.Tensor) -> bool:
    """Whether the host may read ``t``'s values (``float(t)``, ``bool(t)``) at no cost: on the
    CPU, outside ``torch.compile``. On a GPU a read waits for the device, and under
    torch.compile it ends the graph; code in a training step that would read chooses a way that
    does not there."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()
