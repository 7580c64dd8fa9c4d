r"""The VQ-VAE (van den Oord et al. 2017): an encoder to a grid of vectors, each replaced by the
nearest of K codes (``nn.VectorQuantizer``), and a decoder p(x | z_q) from the grid of codes.

The posterior is deterministic, a point mass on the code grid z_q(x) (one-hot at every
position), so for any prior p(z) over code grids

    log p(x) >= E_q[log p(x|z)] - KL(q || p) = log p(x | z_q(x)) + log p(z_q(x)),

a bound (the entropy of a point mass is 0). Trained alone, the model's prior is uniform over
the K codes at each of the h x w positions, log p(z) = -h w log K, as in the paper's first
stage; a learned prior over code grids (an autoregressive model, the second stage) moves the
bound by log p_prior(z_q) + h w log K (up, where the prior fits the codes better than uniform).
``dgm eval`` reports the bound (k = 1 suffices: the posterior has one point).
"""

import math
from typing import cast

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, constraints

from dgmkit._rng import seeded_by
from dgmkit.conditional.heads import LikelihoodHead
from dgmkit.devices import dtype_of
from dgmkit.distributions.delta import Delta
from dgmkit.models.base import ExactLikelihoodModel, GenerativeModel, JointTerms, VariationalModel, data_batch
from dgmkit.nn.quantize import Quantized, VectorQuantizer

__all__ = ["VQVAE", "CodeGridPrior", "UniformCodeGridPrior", "code_grid"]


def code_grid(codes: torch.Tensor, shape: tuple[int, ...], num_codes: int) -> torch.Tensor:
    """Code grids (*batch, *shape) as int64 indices, refused by name where they are of another
    grid shape or not whole numbers in 0..K-1 (a 2x8 grid was decoded and scored as a 4x4 one,
    0.7 read as code 0, and code K was torch's IndexError from inside the prior)."""
    if codes.dim() < len(shape) or tuple(codes.shape[codes.dim() - len(shape) :]) != tuple(shape):
        raise ValueError(f"expected code grids of shape (..., {', '.join(map(str, shape))}), got {tuple(codes.shape)}")
    if codes.numel() and codes.is_floating_point() and not bool((codes == codes.round()).all()):
        raise ValueError(f"code indices must be whole numbers in 0..{num_codes - 1}, got values between them (or NaN)")
    if codes.numel() and (codes.min() < 0 or codes.max() >= num_codes):
        raise ValueError(f"code indices must be in 0..{num_codes - 1}, got {codes.min().item()}..{codes.max().item()}")
    return codes.long()


class VQVAE(VariationalModel):
    """``encoder``: x (B, C, H, W) -> z_e (B, D, h, w); ``quantizer``: K codes of dimension D;
    ``decoder``: z_q (N, D, h, w) -> (N, C * P, H, W), P the ``head``'s parameters per pixel."""

    estimate_kind = "bound"
    has_latents = False  # a grid of code indices: no continuous latent space to plot
    can_sample = True
    reconstructs = True
    point_mass_posterior = True
    produces_codes = True
    sample_means = True

    def __init__(
        self,
        encoder: nn.Module,
        quantizer: VectorQuantizer,
        decoder: nn.Module,
        head: LikelihoodHead,
        event_shape: tuple[int, int, int],
        code_shape: tuple[int, int],
        input_scale: float = 1.0,
    ):
        super().__init__()
        self.encoder, self.quantizer, self.decoder, self.head = encoder, quantizer, decoder, head
        self.event_shape = tuple(event_shape)
        self.code_shape = tuple(code_shape)
        self.input_scale = float(input_scale)
        self.code_prior: GenerativeModel | None = None  # a learned prior over code grids (the second stage)

    @property
    def num_codes(self) -> int:
        return self.quantizer.num_codes

    @property
    def data_support(self) -> constraints.Constraint:
        return self.head.support

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        x = data_batch(x, self.event_shape, "the VQ-VAE's encoder")
        x = x.to(dtype_of(self))  # (the model's precision: float64 once made so)
        return x * self.input_scale if self.input_scale != 1.0 else x

    def quantize(self, x: torch.Tensor) -> Quantized:
        """The encoder's grid, quantized (with the codebook's training updates in train mode)."""
        return self.quantizer(self.encoder(self._input(x)))

    def train_pass(self, x: torch.Tensor) -> tuple[Distribution, Quantized]:
        """One training pass: p(x | z_q) at the quantized (straight-through) codes, and the
        quantizer's output (its losses and code counts)."""
        q = self.quantize(x)
        return self.decode(q.z_q), q

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The code grid z_q(x): (B, h, w) indices in 0..K-1 (no codebook update)."""
        flat, shape = self.quantizer._flatten(self.encoder(self._input(x)))
        return self.quantizer.nearest(flat).reshape(shape[:-1])

    def decode(self, z_q: torch.Tensor) -> Distribution:
        """p(x | z_q) for quantized maps (*batch, D, h, w)."""
        batch = z_q.shape[:-3]
        out = self.decoder(z_q.reshape(-1, *z_q.shape[-3:]))
        c, h, w = self.event_shape
        return self.head(out.reshape(*batch, c, self.head.params_per_pixel, h, w))

    def likelihood(self, codes: torch.Tensor) -> Distribution:
        """p(x | z) for code grids (*batch, h, w)."""
        codes = code_grid(codes, self.code_shape, self.num_codes)
        return self.decode(self.quantizer.lookup(codes).movedim(self.quantizer.channel_dim, -3))

    def posterior(self, x: torch.Tensor) -> Delta:
        """The point mass on z_q(x)."""
        return Delta(self.codes(x), event_dims=2)

    def prior(self) -> Distribution:
        """The learned prior over code grids where one is attached (``code_prior``), else
        uniform over the K codes at every position of the grid."""
        if self.code_prior is not None:
            return CodeGridPrior(self.code_prior, self.code_shape, self.num_codes)
        return UniformCodeGridPrior(self.code_shape, self.num_codes, self.quantizer.embedding.device)

    @property
    def prior_name(self) -> str:
        return "p(z), the uniform code prior" if self.code_prior is None else "p(z), the code prior"

    def untaken_sample_note(self, option: str) -> str | None:
        if option == "naive" and self.code_prior is not None and self.code_prior.sample_cached:
            return "code prior draws its code grids by its cached path, which draws the same codes as the naive one"
        return None

    def log_prior_uniform(self) -> float:
        return -math.prod(self.code_shape) * math.log(self.num_codes)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor, prior: Distribution | None = None) -> JointTerms:
        p = self.prior() if prior is None else prior
        return JointTerms(self.likelihood(z).log_prob(x), p.log_prob(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood(self.codes(x)).mean

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Code grids from the prior (``prior``: uniform unless one is attached), decoded: (x, mean of p(x|z))."""
        with seeded_by(generator, self.quantizer.embedding.device):
            codes = self.prior().sample((n,))
            px = self.likelihood(codes)
            return px.sample(), px.mean


class CodeGridPrior(Distribution):
    """p(z) over code grids (h, w) given by a model of (1, h, w) integer images with an exact
    ``log_prob`` and ``sample`` (an autoregressive model trained on a VQ-VAE's codes)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, model: GenerativeModel, code_shape: tuple[int, ...], num_codes: int):
        self.model, self.num_codes = model, num_codes
        super().__init__(torch.Size(), torch.Size(code_shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        value = code_grid(value, tuple(self.event_shape), self.num_codes)
        batch = value.shape[:-2]
        flat = value.reshape(-1, 1, *self.event_shape)
        return cast(ExactLikelihoodModel, self.model).log_prob(flat).reshape(batch)  # (an exact log_prob, above)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        n = math.prod(sample_shape)
        x, _ = self.model.sample(n)
        return x.reshape(*sample_shape, *self.event_shape).long()


class UniformCodeGridPrior(Independent):
    """p(z) uniform over the K codes at every position of a code grid (h, w): log p(z) = -h w log K."""

    def __init__(self, code_shape: tuple[int, ...], num_codes: int, device: torch.device):
        self.num_codes = num_codes
        logits = torch.zeros(*code_shape, num_codes, device=device)
        super().__init__(Categorical(logits=logits, validate_args=False), 2, validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return super().log_prob(code_grid(value, tuple(self.event_shape), self.num_codes))
