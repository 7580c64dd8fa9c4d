r"""VAEs with an autoregressive decoder: the PixelVAE (Gulrajani et al. 2017, arXiv 1611.05013)
and, with two stochastic layers, Tomczak & Welling's PixelHVAE (2018, arXiv 1705.07120).

    p(x, z) = p(z_L) prod_{l<L} p(z_l | z_{l+1}) prod_d p(x_d | x_<d, z)

The latent stack, its posteriors and priors are the hierarchical VAE's (``HierarchicalVAE``,
one layer or more); p(x|z) is a ``PixelCNNDecoder``. log p(x|z) stays exact in one pass, so
the ELBO, the IWAE bound and the importance-sampled log p(x) are computed as for any latent
variable model; drawing x is sequential, pixel by pixel, with a cached and a naive path that
give the same images for the same uniforms.
"""

import math
from typing import Any, ClassVar, Literal, cast

import torch

from dgmkit._rng import seeded_by
from dgmkit.conditional.pixelcnn import AutoregressivePixels, PixelCNNDecoder
from dgmkit.models.hvae import HierarchicalVAE

__all__ = ["PixelVAE"]


class PixelVAE(HierarchicalVAE):
    """A hierarchical VAE (one layer or more) whose decoder is a ``PixelCNNDecoder``.

    What it does not offer: a mean of p(x|z) (samples are shown instead; a reconstruction is the
    greedy decode at the posterior's representative point), and imputation (p(x|z) does not
    factorize over pixels, so the likelihood of the observed entries alone is intractable)."""

    sample_means: ClassVar[bool] = False
    sample_cached: ClassVar[bool] = True
    decoded_name: ClassVar[str] = (
        "greedy decode of p(x|z) (each pixel its most probable value given z and the pixels before it)"
    )
    can_impute: ClassVar[bool] = False
    coding: ClassVar[Literal["sequential", "bits-back"] | None] = None  # (p(x|z) is not a product over pixels)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """As ``HierarchicalVAE``'s, with a ``PixelCNNDecoder`` as the decoder."""
        super().__init__(*args, **kwargs)
        if not isinstance(self.decoder, PixelCNNDecoder):
            raise TypeError(f"a PixelVAE's decoder is a PixelCNNDecoder, got {type(self.decoder).__name__}")

    @property
    def pixel_decoder(self) -> PixelCNNDecoder:
        return cast(PixelCNNDecoder, self.decoder)

    def importance_rows(self, budget_bytes: int) -> int:
        """Rows (draws x datapoints) of the PixelCNN's one pass that fit in ``budget_bytes``: its
        activations per image are many times the image (the paper preset's: about 11 MB), so the
        importance sampler's default chunks (65536 rows on a GPU) would not fit in memory."""
        return max(1, budget_bytes // self.pixel_decoder.bytes_per_image(next(self.parameters()).dtype))

    def likelihood(self, z: torch.Tensor) -> AutoregressivePixels:
        """p(x | z), autoregressive over the pixels, for z of shape (*batch, sum M_l)."""
        px = super().likelihood(z)
        assert isinstance(px, AutoregressivePixels)
        return px

    sample_kind = "float"

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, cached: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws z ~ p(z), x ~ p(x | z) pixel by pixel (``cached``: the cached path, else the
        whole network per pixel). Returns (x, x): there is no separate mean."""
        z = self.sample_latents(n, generator)
        with seeded_by(generator, z.device):
            u = torch.rand(n, math.prod(self.event_shape), device=z.device, dtype=torch.float64)
        x = self.likelihood(z).sample_from_noise(u, cached)
        return x, x
