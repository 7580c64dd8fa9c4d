r"""VampPrior (Tomczak & Welling 2018, arXiv 1705.07120):

    p(z) = (1/K) sum_k q(z | u_k)

a mixture of the variational posteriors at K learnable pseudo-inputs u_k. The encoder belongs to
the VAE, not to the prior: it comes in as the context, ``prior(encoder)``, so it is saved and
trained once, as part of the VAE.
"""

import math
import numbers

import torch
from torch import nn
from torch.distributions import Independent, Normal

from dgmkit.conditional.base import ConditionalDistribution, is_shape_error
from dgmkit.distributions import DiagonalGaussianMixture
from dgmkit.errors import finite_at_least, first_line, shown_value, whole_at_least
from dgmkit.priors.base import Prior

__all__ = ["VampPrior"]


class VampPrior(Prior):
    """The context of ``forward`` is the encoder, which maps inputs of shape ``event_shape`` to
    q(z|u). Pseudo-inputs live in the encoder's input space: ``bounded``, for pixels scaled to
    [0, 1], they are clipped to [0, 1] (hardtanh, as in the reference code); otherwise, for
    continuous values of any range (a table's standardized columns, another run's latents), free.

    ``init``: a tensor of K inputs to start from (for example random training images), or None
    for random values N(``mean``, ``std``^2). Bounded, given inputs are mapped affinely into
    [0.01, 0.99]: hardtanh has no gradient at 0 and 1, so pseudo-inputs copied from binary
    images would otherwise never move.
    """

    context = "encoder"

    def __init__(
        self,
        latent_dim: int,
        event_shape: tuple[int, ...],
        components: int = 500,
        init: torch.Tensor | None = None,
        mean: float = 0.05,
        std: float = 0.01,
        bounded: bool = True,
    ):
        super().__init__(latent_dim)
        # (0 components was taken: a mixture of none, log p(z) = -inf for every z, found only when a loss was inf)
        self.components = whole_at_least("the VampPrior's components", components, 1)
        given = tuple(event_shape) if isinstance(event_shape, (tuple, list, torch.Size)) else ()
        if not given or not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in given):
            raise ValueError(f"the VampPrior's event_shape is the encoder's input shape, positive integers: {event_shape!r}")
        shape = tuple(int(n) for n in given)
        self.bounded = bool(bounded)
        if init is None:
            if isinstance(mean, bool) or not isinstance(mean, numbers.Real) or not math.isfinite(mean):
                raise ValueError(f"the VampPrior's pseudo-input mean must be a finite number, got {shown_value(mean)}")
            finite_at_least("the VampPrior's pseudo-input std", std, 0)
            u = mean + std * torch.randn(self.components, *shape)
        else:
            if init.shape != (self.components, *shape):
                raise ValueError(f"init must have shape {(self.components, *shape)}, got {tuple(init.shape)}")
            bad = ~torch.isfinite(init)  # (NaN was taken: a NaN pseudo-input, log p(z) NaN from the first step)
            if bool(bad.any()):
                raise ValueError(f"init must be finite: {int(bad.sum())} of its {init.numel()} values are NaN or infinite")
            u = 0.01 + 0.98 * init.float().clamp(0, 1) if self.bounded else init.float().clone()
        self.pseudo_inputs = nn.Parameter(u)

    def forward(self, context: ConditionalDistribution | None = None) -> DiagonalGaussianMixture:
        if context is None:
            raise TypeError("the VampPrior is the encoder's mixture at its pseudo-inputs: call it with the encoder")
        u = self.pseudo_input_values()
        try:
            q_u = context(u)  # a diagonal Gaussian with batch (K,), event (M,)
        except RuntimeError as e:  # (an encoder of other inputs: "mat1 and mat2 shapes cannot be multiplied")
            if not is_shape_error(e):  # (a dtype's, a device's, the memory's: not of the pseudo-inputs' shape)
                raise
            raise ValueError(
                f"the VampPrior's pseudo-inputs are of shape {tuple(u.shape[1:])} (its event_shape), which the encoder "
                f"does not take ({first_line(str(e))}): build it with the encoder's input shape"
            ) from e
        if not (isinstance(q_u, Independent) and isinstance(q_u.base_dist, Normal)):  # (an IAF's: "a flow's mean ...")
            raise TypeError(
                f"the VampPrior is the mixture of q(z|u_k) at its pseudo-inputs, which needs an encoder of diagonal "
                f"Gaussian posteriors; this encoder gave {type(q_u).__name__} (an IAF posterior: use a GaussianEncoder)"
            )
        loc = q_u.mean
        if loc.shape[-1] != self.latent_dim:
            raise ValueError(
                f"the VampPrior is over {self.latent_dim} latent dimensions, the encoder's q(z|u) over {loc.shape[-1]}"
            )
        weights = torch.zeros(self.components, device=loc.device, dtype=loc.dtype)  # (equal: log 1/K in loc's precision)
        return DiagonalGaussianMixture(weights, loc, q_u.stddev)

    def pseudo_input_values(self) -> torch.Tensor:
        """The pseudo-inputs u_k, clipped to [0, 1] where ``bounded``."""
        return torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0) if self.bounded else self.pseudo_inputs
