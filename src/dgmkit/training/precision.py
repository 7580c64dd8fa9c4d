"""The Trainer's precision part: floating point of the forward pass (``autocast`` to bf16 or
fp16 on CUDA) and, for fp16, the gradient scaler (its backward pass, and its step, which it
skips itself where the scaled gradients overflowed)."""

import contextlib
from typing import Any

import torch

from dgmkit.errors import TrainingError

__all__ = ["MixedPrecision", "resolve_precision", "PRECISIONS"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_precision(precision: str, device: torch.device, bf16_checked: bool = False) -> str:
    """``auto``, ``fp32``, ``bf16`` or ``fp16`` on ``device``: fp32 on a CPU; on CUDA, auto is
    bf16 (fp16 where bf16 is not supported) for a family whose training in bf16 was checked
    (``bf16_checked``: the model's ``trains_in_bf16``), else fp32. bf16 is supported where the
    GPU computes in it (compute capability 8.0 on; ROCm): torch's own answer counts a GPU that
    only emulates it (a T4, a V100), slower than fp32 there and without cuDNN's bf16 convolutions."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {', '.join(PRECISIONS)}")
    if device.type != "cuda":
        if precision in ("bf16", "fp16"):
            raise TrainingError(
                f"mixed precision ({precision}) is only supported on a CUDA device here; precision fp32 (or auto) "
                "trains on this one"
            )
        return "fp32"
    if precision == "auto":
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        return "fp32" if not bf16_checked else "bf16" if native else "fp16"
    return precision


class MixedPrecision:
    def __init__(self, precision: str, device: torch.device, bf16_checked: bool = False):
        self.name = resolve_precision(precision, device, bf16_checked)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler("cuda") if self.name == "fp16" else None
        self.asked, self.checked = precision, bf16_checked

    @property
    def unchecked(self) -> bool:
        """Whether it trains in a reduced precision that this family's training was not checked
        in: bf16 asked of a family not checked in it, or fp16 (checked for none)."""
        return self.name == "fp16" or (self.name == "bf16" and not self.checked)

    def describe(self) -> str | None:
        """One line on the precision a CUDA run trains in, and why; None on a CPU (always fp32)."""
        if self.device_type != "cuda":
            return None
        if self.name == "fp32":
            why = "as asked" if self.asked == "fp32" else "this family's training in bf16 has not been checked"
            return f"precision: fp32 ({why})"
        how = "as asked" if self.asked == self.name else "auto: this GPU has no bf16" if self.name == "fp16" else "auto"
        if not self.unchecked:
            return f"precision: bf16 autocast ({how}; this family's training in bf16 was checked)"
        return (
            f"precision: {self.name} autocast ({how}), though this family's training in {self.name} has not been "
            "checked (--precision fp32 avoids that); a loss that is not finite stops the run"
        )

    def autocast(self, cache: bool = True) -> contextlib.AbstractContextManager:
        """The forward pass's autocast; ``cache``: keep the weights cast within it (not in a step
        captured as a CUDA graph)."""
        if self.name in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.name == "bf16" else torch.float16
            return torch.autocast(self.device_type, dtype=dtype, cache_enabled=cache)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Gradients of ``loss``, unscaled (so that norms and clipping see their true size)."""
        if self.scaler is None:
            loss.backward()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)

    def step(
        self, optimizer: torch.optim.Optimizer, take: bool | torch.Tensor, tell_taken: bool = False
    ) -> bool | torch.Tensor:
        """The optimiser's step where ``take`` (else the gradients are dropped); whether it was
        taken. The fp16 scaler may skip a step on its own; ``tell_taken`` finds out (it costs
        a read of the scale, a synchronisation on CUDA), else a step asked for counts as taken.

        ``take`` may be a boolean tensor decided on the device (``GradientGuard(on_device=True)``):
        fused Adam then skips the update on the device, as it does for the fp16 scaler's
        overflows, with nothing read back; the returned ``taken`` is that tensor. (With the fp16
        scaler, or an optimizer that is not fused, the tensor is read: one synchronisation.)"""
        if isinstance(take, torch.Tensor):
            if self.scaler is None and optimizer.defaults.get("fused"):
                fused: Any = optimizer  # found_inf: an attribute that torch's fused Adam reads, not declared
                fused.found_inf = (~take).float()  # fused Adam's own way to skip a step on the device
                try:
                    optimizer.step()
                finally:
                    del fused.found_inf
                return take
            take = bool(take)
        if not take:
            optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            return False
        if self.scaler is None:
            optimizer.step()
            return True
        scale = self.scaler.get_scale() if tell_taken else None
        self.scaler.step(optimizer)
        self.scaler.update()
        return not (scale is not None and self.scaler.get_scale() < scale)  # a lowered scale: the step was skipped
