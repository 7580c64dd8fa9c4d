"""Variational autoencoder (Kingma & Welling 2014, arXiv 1312.6114; Rezende et al. 2014).

A deep latent variable model p(x, z) = p(z) p(x|z) with an amortized posterior q(z|x).
The model is composition only; the objectives (ELBO, IWAE, ...) are arithmetic on the
distributions it returns.
"""

import itertools
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.distributions import Distribution

from dgmkit._rng import seeded_by
from dgmkit.conditional import ConditionalDistribution, Decoder
from dgmkit.devices import dtype_of
from dgmkit.distributions import JointSampler, may_be_incomplete
from dgmkit.models.base import DecodedModel, LatentVariableModel, check_decoder, data_batch
from dgmkit.priors import Prior

__all__ = ["VAE"]


class VAE(DecodedModel, LatentVariableModel):
    """p(z) p(x|z) with q(z|x): ``encoder`` returns q(z|x), ``decoder`` p(x|z), and
    ``prior_module`` p(z) (called with the encoder as context when it asks for it, as the
    VampPrior does).

    ``input_scale`` multiplies the data before the encoder sees it (for example 1/255 when the
    likelihood scores integer pixels), so that the decoder's targets and the encoder's inputs
    can differ in representation. Its encoder reads a missing entry (NaN) as 0, as MIWAE trains
    it, so missing entries can be imputed (``can_impute``); with ``fill_missing`` False the
    encoder is given the NaN entries to read as it does (a table's one-hot input layer makes a
    missing category no category at all).
    """

    can_impute: ClassVar[bool] = True
    coding: ClassVar[Literal["sequential", "bits-back"] | None] = "bits-back"

    def __init__(
        self,
        encoder: ConditionalDistribution,
        decoder: Decoder,
        prior: Prior,
        input_scale: float = 1.0,
        fill_missing: bool = True,
    ):
        super().__init__()
        _check_prior(prior, encoder)
        check_decoder(decoder)
        self.encoder = encoder
        self.decoder = decoder
        self.prior_module = prior
        self.input_scale = float(input_scale)
        self.fill_missing = bool(fill_missing)
        self.register_load_state_dict_pre_hook(_rename_v1_prior_keys)

    @property
    def latent_dim(self) -> int:
        return self.prior_module.latent_dim

    def prior(self) -> Distribution:
        """p(z): one distribution (batch shape ()) over the latent vector (event shape (M, ...))."""
        p = self.prior_module(self.encoder if self.prior_module.context == "encoder" else None)
        if p.batch_shape != () or p.event_shape[:1] != (self.latent_dim,):
            raise ValueError(
                f"the prior {type(self.prior_module).__name__} gave p(z) of batch shape {tuple(p.batch_shape)} and event "
                f"shape {tuple(p.event_shape)}; it must be one distribution over the latent vector, batch shape () and "
                f"event shape ({self.latent_dim},) (its latent_dim): torch.distributions.Independent(d, 1) makes the last "
                "batch dimension of d its event"
            )
        return p

    def posterior(self, x: torch.Tensor) -> Distribution:
        """q(z|x) for a batch of data of shape (B, *event). Missing entries (NaN) reach the
        encoder as 0 (zero imputation, as MIWAE's encoder sees incomplete data), or as they are
        where the encoder reads them (``fill_missing`` False)."""
        event = self.event_shape
        x = data_batch(x, event, "q(z|x)", leading=True)
        floating = x.is_floating_point()  # (integers hold no missing entry)
        # the model's precision: float64 once made so (float64 data failed in a float32 model's first layer)
        x = x.to(dtype_of(self))
        if floating and self.fill_missing and may_be_incomplete(x):
            x = x.nan_to_num(0.0)
        if self.input_scale != 1.0:
            x = x * self.input_scale
        q = self.encoder(x)
        _check_posterior(q, x.shape[: x.dim() - len(event)], self.latent_dim)
        return q

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x|z) for latents of shape (*batch, M)."""
        if z.shape[-1] != self.latent_dim:  # an encoder that does not say its size, unchecked where built
            raise ValueError(
                f"p(x|z) was given latents of {z.shape[-1]} dimensions, and the prior's p(z) is over {self.latent_dim}: "
                "the encoder's q(z|x) must be over as many (an encoder that sets latent_dim is checked where the model "
                "is built)"
            )
        return self.decoder(self.decoder_input(z))

    def decoder_input(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder network reads of latents z (*batch, M): z itself here."""
        return z

    def pixel_log_pmf(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x_d = v | z) of every value v of every pixel, float64 (``Decoder.pixel_log_pmf``)."""
        return self.decoder.pixel_log_pmf(self.decoder_input(z))

    @property
    def top_prior_module(self) -> Prior:
        return self.prior_module

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n samples z ~ p(z), x ~ p(x|z). Returns (x, mean of p(x|z))."""
        p = self.prior()
        if isinstance(p, JointSampler):
            z, _ = p.rsample_and_log_prob((n,), generator=generator)
        else:
            with seeded_by(generator, self.decoder_device):
                z = p.sample((n,))
        px = self.likelihood(z)
        with seeded_by(generator, self.decoder_device):
            return px.sample(), px.mean

    @property
    def decoder_device(self) -> torch.device:
        """Where the decoder's tensors are (the model's, for a decoder that holds none)."""
        for t in itertools.chain(self.decoder.parameters(), self.decoder.buffers(), self.parameters(), self.buffers()):
            return t.device
        return torch.device("cpu")


def _rename_v1_prior_keys(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """Checkpoints of dgmkit 0.1 named the prior's parameters ``prior.*``."""
    for key in [k for k in state_dict if k.startswith(prefix + "prior.")]:
        state_dict[prefix + "prior_module." + key[len(prefix) + 6 :]] = state_dict.pop(key)


def _check_posterior(q: Distribution, batch: torch.Size, latent_dim: int) -> None:
    """A ValueError unless q(z|x) is one distribution over the latent vector a datapoint of the
    batch ``batch``, naming the likely slip."""
    if q.batch_shape == batch and q.event_shape[:1] == (latent_dim,):
        return
    if q.batch_shape == batch:
        hint = "q(z|x) and p(z) must be over as many latent dimensions"
    elif len(q.event_shape) > 0:
        hint = "an encoder network of images ends in (B, 2M) numbers (nn.Flatten before its first linear layer)"
    else:
        hint = "torch.distributions.Independent(d, 1) makes the last batch dimension of d its event"
    raise ValueError(
        f"the encoder gave q(z|x) of batch shape {tuple(q.batch_shape)} and event shape {tuple(q.event_shape)} for "
        f"data of batch shape {tuple(batch)}; it must give one distribution over the latent vector a datapoint, event "
        f"shape ({latent_dim},) (the prior's latent_dim): {hint}"
    )


def _check_prior(prior: object, encoder: nn.Module) -> None:
    """A Prior that says its latent dimensions, as many as the encoder's where it says them (a
    TypeError or ValueError that says what is wrong)."""
    if not isinstance(prior, Prior):
        raise TypeError(f"the prior must be a dgmkit.priors.Prior (a module returning p(z)), got {type(prior).__name__}")
    dim = getattr(prior, "latent_dim", None)
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(
            f"the prior {type(prior).__name__} sets no latent_dim (got {dim!r}): pass the number of latent "
            "dimensions to Prior.__init__(latent_dim) in its constructor"
        )
    q_dim = getattr(encoder, "latent_dim", None)  # (an encoder's own attribute: GaussianEncoder has one)
    if isinstance(q_dim, int) and q_dim != dim:
        raise ValueError(f"the encoder's q(z|x) is over {q_dim} latent dimensions and the prior's p(z) over {dim}")
