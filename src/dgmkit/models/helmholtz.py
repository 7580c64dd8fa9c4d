r"""Helmholtz machine: a sigmoid belief network with a recognition network (Dayan et al. 1995).

Stochastic binary layers h_1 (next to the data) ... h_L (top), sizes n_1..n_L:

    p(h_L) = prod Bern(sigmoid(b_L)),   p(h_{l-1} | h_l) = prod Bern(sigmoid(W_l h_l + b_{l-1}))
    p(x | h_1) = prod Bern(sigmoid(W_0 h_1 + b_x))
    q(h_1 | x) = prod Bern(sigmoid(R_1 x + c_1)),   q(h_l | h_{l-1}) = prod Bern(sigmoid(R_l h_{l-1} + c_l))

The layers are concatenated into one latent vector h = [h_1, ..., h_L], so that ``prior()``,
``posterior(x)`` and ``likelihood(h)`` have the interface of a VAE and the same evaluation
(importance-sampled log p(x)) applies. Trained by wake-sleep or reweighted wake-sleep
(``dgmkit.objectives.wake_sleep``); its latents are discrete, so not by the reparameterized ELBO.
"""

from collections.abc import Iterable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from dgmkit._rng import seeded_by
from dgmkit.devices import device_of, dtype_of
from dgmkit.distributions import BernoulliPixels
from dgmkit.errors import shown_value, whole_at_least
from dgmkit.models.base import LatentVariableModel, data_batch

__all__ = ["HelmholtzMachine"]


def _bernoulli_log_prob(logits: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return (value * logits - F.softplus(logits)).sum(-1)


class _Chain(Distribution):
    """A distribution over the concatenated binary layers, sampled ancestrally."""

    arg_constraints = {}
    support = constraints.boolean
    has_rsample = False

    def __init__(self, machine: "HelmholtzMachine", batch_shape: torch.Size, x: torch.Tensor | None = None):
        self.machine, self.x = machine, x
        super().__init__(batch_shape, torch.Size([sum(machine.sizes)]), validate_args=False)

    def _split(self, h: torch.Tensor) -> list[torch.Tensor]:
        return list(h.split(self.machine.sizes, dim=-1))


class _Prior(_Chain):
    def _layer_logits(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        m = self.machine
        logits = [m.top_logits.expand_as(layers[-1])]
        for i in range(len(layers) - 1, 0, -1):  # p(h_{i-1} | h_i), index 0-based
            logits.insert(0, m.generative[i](layers[i]))
        return logits

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        layers = self._split(h)
        return cast(torch.Tensor, sum(_bernoulli_log_prob(lg, v) for lg, v in zip(self._layer_logits(layers), layers)))

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            m = self.machine
            shape = torch.Size(sample_shape) + self.batch_shape
            h = torch.bernoulli(torch.sigmoid(m.top_logits).expand(*shape, m.sizes[-1]))
            layers = [h]
            for i in range(len(m.sizes) - 1, 0, -1):
                layers.insert(0, torch.bernoulli(torch.sigmoid(m.generative[i](layers[0]))))
            return torch.cat(layers, -1)


class _Posterior(_Chain):
    location_name = "mean-field recognition probabilities (each layer's given the probabilities below)"

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        m, layers = self.machine, self._split(h)
        total = _bernoulli_log_prob(m.recognition[0](self.x), layers[0])  # (h's batch shape broadcast against x's)
        for i in range(1, len(layers)):
            total = total + _bernoulli_log_prob(m.recognition[i](layers[i - 1]), layers[i])
        return total

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            m = self.machine
            p1 = torch.sigmoid(m.recognition[0](self.x))
            layers = [torch.bernoulli(p1.expand(*sample_shape, *p1.shape))]
            for i in range(1, len(m.sizes)):
                layers.append(torch.bernoulli(torch.sigmoid(m.recognition[i](layers[-1]))))
            return torch.cat(layers, -1)

    @property
    def mean(self) -> torch.Tensor:
        """Mean-field propagation of the recognition probabilities (a summary for plots)."""
        m = self.machine
        probs = [torch.sigmoid(m.recognition[0](self.x))]
        for i in range(1, len(m.sizes)):
            probs.append(torch.sigmoid(m.recognition[i](probs[-1])))
        return torch.cat(probs, -1)


class HelmholtzMachine(LatentVariableModel):
    """``sizes`` = (n_1, ..., n_L), bottom to top, for data with ``event_shape`` = (C, H, W)."""

    discrete_latents = True

    def __init__(self, event_shape: Sequence[int], sizes: Sequence[int]):
        super().__init__()
        layers = list(sizes) if isinstance(sizes, Iterable) and not isinstance(sizes, (str, bytes)) else []
        if not layers:  # (3 was "'int' object is not iterable")
            raise ValueError(f"sizes must be a list of the stochastic layers' sizes, one or more, got {shown_value(sizes)}")
        self.event_shape = tuple(event_shape)
        # (a size of 2.5, "3" or True failed in torch or in a comparison, naming nothing)
        self.sizes = [whole_at_least(f"the Helmholtz machine's layer {i + 1} size", n, 1) for i, n in enumerate(layers)]
        d = int(torch.Size(event_shape).numel())
        below = [d, *self.sizes[:-1]]
        # generative[i]: h_{i+1} -> logits of the layer below it (generative[0]: h_1 -> x)
        self.generative = nn.ModuleList(nn.Linear(self.sizes[i], below[i]) for i in range(len(self.sizes)))
        self.recognition = nn.ModuleList(nn.Linear(below[i], self.sizes[i]) for i in range(len(self.sizes)))
        self.top_logits = nn.Parameter(torch.zeros(self.sizes[-1]))
        self.input_scale = 1.0

    @property
    def latent_dim(self) -> int:
        return sum(self.sizes)

    @property
    def data_support(self) -> constraints.Constraint:
        return constraints.boolean

    def prior(self) -> Distribution:
        return _Prior(self, torch.Size())

    def posterior(self, x: torch.Tensor) -> Distribution:
        x = data_batch(x, self.event_shape, "q(h|x)")
        flat = x.to(dtype_of(self)).flatten(1)  # (the model's precision: float64 once made so)
        return _Posterior(self, torch.Size([flat.shape[0]]), flat)

    def likelihood(self, h: torch.Tensor) -> BernoulliPixels:
        h1 = h[..., : self.sizes[0]]
        logits = self.generative[0](h1).reshape(*h.shape[:-1], *self.event_shape)
        return BernoulliPixels(logits, len(self.event_shape))

    def recognition_parameters(self) -> list[nn.Parameter]:
        return list(self.recognition.parameters())

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        with seeded_by(generator, device_of(self)):
            h = self.prior().sample((n,))
            px = self.likelihood(h)
            return px.sample(), px.mean

    def reconstruction_code(self, x: torch.Tensor) -> torch.Tensor:
        """The units on where q(z|x) turns them on with probability above 1/2: a state of the
        binary units, not their probabilities."""
        mean = self.posterior(x).mean
        return (mean > 0.5).to(mean.dtype)
