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
        self._device_updates: torch.Tensor | None
        self._updates, self._device_updates = 0, None  # the count, on the host or (tensor-told updates) the device
        self.weights = {name: p.detach().clone() for name, p in model.named_parameters()}
        self._seen: tuple[torch.nn.Module, list[torch.Tensor]] | None = None  # (model, its parameters)

    def current_decay(self) -> float:
        """The decay of the next update (with the warm-up)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @property
    def updates(self) -> int:
        """Updates made so far (read back from the device where ``update`` was told by a tensor)."""
        if self._device_updates is not None:
            return int(self._device_updates)
        return self._updates

    @updates.setter
    def updates(self, n: int) -> None:
        # the device's count is kept, and set in place: a step captured as a CUDA graph adds to that tensor
        self._updates = n
        if self._device_updates is not None:
            self._device_updates.fill_(n)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, taken: bool | torch.Tensor = True) -> None:
        """Move the averages towards ``model``'s parameters, where the step was ``taken``: a
        bool, or a boolean tensor decided on the device (then the update is made or not there,
        its decay and count kept on the device: nothing is read back)."""
        params = self._parameters_of(model)
        averages = list(self.weights.values())
        if not isinstance(taken, torch.Tensor) and self._device_updates is not None:
            if not taken:  # (a count kept on the device, by a step captured as a CUDA graph: updated there, unread)
                return
            taken = torch.ones((), dtype=torch.bool, device=self._device_updates.device)
        if not isinstance(taken, torch.Tensor):
            if taken:
                torch._foreach_lerp_(averages, params, 1.0 - self.current_decay())
                self.updates += 1
            return
        if self._device_updates is None:
            self._device_updates = torch.tensor(self._updates, dtype=torch.float64, device=taken.device)
        n = self._device_updates  # (float64, as the host's Python floats: exact counts and the same decay)
        weight = ((1.0 - torch.clamp((1 + n) / (10 + n), max=self.decay)) * taken).to(averages[0].dtype)  # 0: skipped
        torch._foreach_lerp_(averages, params, [weight] * len(averages))  # (one op a step; weight 0 leaves them)
        n += taken

    def _parameters_of(self, model: torch.nn.Module) -> list[torch.Tensor]:
        """``model``'s parameters in the order of the averages, looked up once a model: on a GPU
        a step of a model of hundreds of weight tensors would otherwise spend a few hundred
        microseconds of the host's time walking its modules. The same Parameter objects for
        the rest of the run (what their data become, in place or re-laid, is what is averaged):
        a model whose parameters are replaced by new objects (``load_state_dict(..., assign=True)``)
        needs a new EMA, as it needs a new optimizer."""
        if self._seen is None or self._seen[0] is not model:
            named = dict(model.named_parameters())
            self._seen = (model, [named[name] for name in self.weights])
        return self._seen[1]

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
