"""An exponential moving average (EMA) of a model's weights, as VDVAE and NVAE evaluate with.

After each optimizer step that was taken, every parameter's average moves towards it:
``ema = ema + (1 - d) * (p - ema)`` with the decay ``d = min(decay, (1 + n) / (10 + n))``, where
``n`` counts the updates made before this one. The warm-up (``d`` is 0.1, 0.18, 0.25, ... at
first) forgets the initial weights within tens of steps, so that an average of a short run is
not mostly its random initialisation; after about ``10 / (1 - decay)`` steps ``d`` is ``decay``.

Only the parameters are averaged. Buffers (running statistics, masks, ActNorm's
``initialized`` flag) are the model's own: the averaged model is the model with its parameters
replaced (what ``swapped`` does), as in NVAE, whose EMA averages what the optimizer updates.
"""

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["EMA"]


class EMA:
    """The moving average of ``model``'s parameters with ``decay`` in (0, 1), starting from
    their values now. ``update(model)`` after each step, ``with ema.swapped(model):`` to
    evaluate with the averages, ``state_dict``/``load_state_dict`` to checkpoint it."""

    def __init__(self, model: torch.nn.Module, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"the EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.weights = {name: p.detach().clone() for name, p in model.named_parameters()}

    def current_decay(self) -> float:
        """The decay of the next update (with the warm-up)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the averages towards ``model``'s parameters (call after a step that was taken)."""
        params = dict(model.named_parameters())
        averages = list(self.weights.values())
        torch._foreach_lerp_(averages, [params[name].detach() for name in self.weights], 1.0 - self.current_decay())
        self.updates += 1

    @contextlib.contextmanager
    def swapped(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Within the block, ``model``'s parameters hold the averages; its own weights are put
        back afterwards (also when the block raises)."""
        params = dict(model.named_parameters())
        raw = {name: p.detach().clone() for name, p in params.items()}
        try:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(self.weights[name])
            yield model
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(raw[name])

    def state_dict(self) -> dict:
        """``{"updates": n, "weights": {parameter name: average}}``."""
        return {"updates": self.updates, "weights": dict(self.weights)}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict``; ValueError (and nothing changed) if its weights do not
        match this model's parameters name for name and shape for shape."""
        updates, weights = state.get("updates"), state.get("weights")
        if not isinstance(updates, int) or isinstance(updates, bool) or updates < 0:
            raise ValueError(f"the EMA update count {updates!r} is not an integer >= 0")
        if not isinstance(weights, dict) or weights.keys() != self.weights.keys():
            names = set(weights) if isinstance(weights, dict) else set()
            missing, extra = sorted(self.weights.keys() - names), sorted(names - self.weights.keys())
            raise ValueError(
                f"the EMA weights do not match the model's parameters (missing {missing[:3]}, extra {extra[:3]})"
            )
        for name, t in weights.items():
            if not torch.is_tensor(t) or t.shape != self.weights[name].shape or not t.is_floating_point():
                raise ValueError(
                    f"the EMA weight {name} does not match the parameter of shape {tuple(self.weights[name].shape)}"
                )
        for name, t in weights.items():
            self.weights[name].copy_(t)
        self.updates = updates
