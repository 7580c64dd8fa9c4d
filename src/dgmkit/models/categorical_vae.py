"""VAE with discrete latent variables: V categorical variables with K classes each.

The decoder reads the flattened one-hot vectors (or their relaxation). Such a model cannot use
the reparameterization trick; it is trained with the Gumbel-softmax relaxation or with the
score-function estimator (``dgmkit.objectives.discrete``), and evaluated with the true discrete
ELBO and importance sampling with discrete samples.
"""

import torch
from torch import nn
from torch.distributions import Distribution

from dgmkit.devices import dtype_of
from dgmkit.distributions import may_be_incomplete
from dgmkit.models.vae import VAE
from dgmkit.nn.moments import RunningMoments

__all__ = ["CategoricalVAE"]


class CategoricalVAE(VAE):
    """The VAE's parts (its arguments), and ``baseline``: an optional network x -> (B, 1), the
    learned control variate of the score-function estimator (trained with the model, saved with it);
    ``signal_moments``: NVIL's running mean and variance of that estimator's learning signal
    (``ReinforceELBO(normalise=True)`` centres and scales the signal by them)."""

    discrete_latents = True

    def __init__(
        self,
        *vae_args,
        baseline: nn.Module | None = None,
        signal_moments: RunningMoments | None = None,
        **vae_kwargs,
    ):
        super().__init__(*vae_args, **vae_kwargs)
        self.baseline = baseline
        self.signal_moments = signal_moments
        self.latent_shape = self._one_hot_shape()

    def _one_hot_shape(self) -> tuple[int, int]:
        """(V, K) of the prior's p(z), whose event is V one-hot vectors of K classes."""
        event = tuple(self.prior().event_shape)
        if len(event) != 2:
            raise ValueError(
                f"a CategoricalVAE's prior must be over V one-hot categorical variables of K classes, event shape (V, K) "
                f"(as UniformCategoricalPrior's); {type(self.prior_module).__name__} gave event shape {event}"
            )
        return event[0], event[1]

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for one-hot (or relaxed) z of shape (*batch, V, K)."""
        return self.decoder(self.decoder_input(z))

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """The flattened one-hot (or relaxed) z of shape (*batch, V, K) that the decoder reads. Another
        shape is refused: flattened, a z of shape (K, V), (V * K,) or (V * K, 1) was read without a word."""
        if tuple(z.shape[-2:]) != self.latent_shape:
            v, k = self.latent_shape
            raise ValueError(
                f"p(x|z) was given latents of shape {tuple(z.shape)}; this model's z is {v} one-hot variables of {k} "
                f"classes: shape (*batch, {v}, {k})"
            )
        return z.flatten(-2)

    def baseline_value(self, x: torch.Tensor) -> torch.Tensor:
        if self.baseline is None:
            raise ValueError(
                "this model has no baseline network, which the score-function (REINFORCE) estimator needs as its "
                "control variate: build it as CategoricalVAE(..., baseline=net), net mapping x to one number a datapoint"
            )
        if self.fill_missing and x.is_floating_point() and may_be_incomplete(x):  # (integer data hold no NaN)
            x = x.nan_to_num(0.0)  # missing entries (NaN) read as 0, as the encoder reads them
        return self.baseline(x.to(dtype_of(self)) * self.input_scale).squeeze(-1)
