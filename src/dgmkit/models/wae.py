"""The Wasserstein autoencoder (Tolstikhin et al. 2018): an encoder q(z|x), deterministic or
Gaussian, a decoder p(x|z) and a prior p(z) that the aggregate posterior q(z) = E_x q(z|x) is
pushed towards by a divergence penalty (``objectives.WAEObjective``: the MMD).

It is a generative model (samples are x ~ p(x|z), z ~ p(z)) without a tractable density: the
penalty is not a KL, so there is no ELBO. Evaluation reports the reconstruction log p(x|z) at
q(z|x)'s location and the MMD, never a log-likelihood.
"""

import math

import torch
from torch import nn
from torch.distributions import Distribution

from dgmkit._rng import seeded_by
from dgmkit.conditional import Decoder
from dgmkit.devices import dtype_of, widened
from dgmkit.distributions.delta import Delta
from dgmkit.distributions.mmd import IMQ_SCALES, InverseMultiquadric, Kernel, kernel_words, mmd2_unbiased
from dgmkit.models.base import DecodedModel, check_decoder, data_batch
from dgmkit.models.terms import Term
from dgmkit.priors import Prior

__all__ = ["WassersteinAutoencoder"]


class WassersteinAutoencoder(DecodedModel):
    """``encoder``: x -> q(z|x) (a ``conditional`` encoder returning a distribution), or a plain
    network x -> z for a deterministic encoder (``deterministic=True``). ``kernel``: the MMD's
    kernel, which training (``objectives.WAEObjective``) and evaluation both use; by default the
    inverse multiquadric kernel at the scales of Tolstikhin et al., C = 2 M sigma^2 s, with sigma^2
    the prior's variance at construction (its mean over the M dimensions)."""

    estimate_kind = "reconstruction"
    estimate_draws = "the codes and prior samples of its MMD"  # (evaluation_terms)
    has_latents = True
    can_sample = True
    reconstructs = True
    sample_means = True

    def __init__(
        self,
        encoder: nn.Module,
        decoder: Decoder,
        prior: Prior,
        deterministic: bool = True,
        input_scale: float = 1.0,
        kernel: Kernel | None = None,
    ):
        super().__init__()
        check_decoder(decoder)
        self.encoder = encoder
        self.decoder = decoder
        self.top_prior = prior
        self.deterministic = deterministic
        self.input_scale = float(input_scale)
        self.chosen_kernel = kernel if kernel is not None else _default_kernel(prior)  # (None only on the meta device)

    @property
    def kernel(self) -> Kernel:
        """The MMD's kernel (see the class docstring)."""
        if self.chosen_kernel is None:
            raise RuntimeError("a model built on the meta device (to check a checkpoint's shapes) has no kernel")
        return self.chosen_kernel

    @property
    def latent_dim(self) -> int:
        return self.top_prior.latent_dim

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x): a point mass at f(x) (deterministic encoder) or the encoder's Gaussian."""
        x = data_batch(x, self.event_shape, "q(z|x)").to(dtype_of(self))  # (the model's precision: float64 once made so)
        x = x * self.input_scale if self.input_scale != 1.0 else x
        if self.deterministic:
            return Delta(widened(self.encoder(x)))
        return self.encoder(x)

    def prior(self) -> Distribution:
        return self.top_prior()

    def likelihood(self, z: torch.Tensor) -> Distribution:
        return self.decoder(z)

    def reconstruction_code(self, x: torch.Tensor) -> torch.Tensor:
        """The point of latent space that ``reconstruct`` decodes: q(z|x)'s representative point."""
        from dgmkit.distributions import location

        return location(self.posterior(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood(self.reconstruction_code(x)).mean

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws z ~ p(z), x ~ p(x|z). Returns (x, mean of p(x|z))."""
        device = next(self.parameters()).device
        with seeded_by(generator, device):
            z = self.prior().sample((n,))
            px = self.likelihood(z)
            return px.sample(), px.mean

    @torch.no_grad()
    def evaluation_terms(
        self, x: torch.Tensor, y: torch.Tensor | None, estimate: dict[str, torch.Tensor], batch_size: int
    ) -> dict[str, Term]:
        """How close the codes came to the prior: the unbiased MMD^2 (``distributions.mmd``,
        under the model's kernel, the one it was trained with) between the codes of each batch (one draw of q(z|x)
        each) and as many prior draws, given to every datapoint of the batch."""
        mmd = torch.cat([self._batch_mmd(b) for b in x.split(batch_size)])
        return {
            "mmd": Term(
                "MMD^2(q(z), p(z))",
                mmd,
                unit="",
                note=f"unbiased, {kernel_words(self.kernel)}, {_batches(len(x), batch_size)}, one draw of q and p each",
                undefined="the unbiased estimate needs at least 2 datapoints",
                partial=True,
                digits=5,
            )
        }

    def _batch_mmd(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) < 2:  # the unbiased estimate needs two codes: no value (NaN, left out of the mean)
            return torch.full((len(x),), float("nan"), dtype=torch.float64, device=x.device)
        z = self.posterior(x).sample().reshape(len(x), -1).double()
        zp = self.prior().sample((len(x),)).reshape(len(x), -1).double()
        return mmd2_unbiased(z, zp, self.kernel).expand(len(x))


def _default_kernel(prior: Prior) -> InverseMultiquadric | None:
    """The inverse multiquadric kernel at ``IMQ_SCALES`` scaled by sigma^2, the prior's variance
    averaged over its dimensions (None for a prior on the meta device, which holds no values)."""
    try:
        variance = prior().variance
    except NotImplementedError:
        raise ValueError(
            "the prior has no closed-form variance for the MMD kernel's scale: give the model a kernel "
            "(distributions.mmd.imq_kernel(sigma^2))"
        ) from None
    if variance.is_meta:
        return None
    value = float(variance.detach().double().mean())
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"the prior's variance {value} cannot scale the MMD kernel")
    return InverseMultiquadric(value, IMQ_SCALES)


def _batches(n: int, size: int) -> str:
    """The batches that n datapoints make, in words: "one batch of 300", "10 batches of 1000", "2
    batches of 1000 and one of 200"."""
    whole, rest = divmod(n, size)
    if not whole:
        return f"one batch of {rest}"
    said = f"{'one' if whole == 1 else whole} batch{'es' if whole > 1 else ''} of {size}"
    return said + (f" and one of {rest}" if rest else "")
