r"""The two-level VQ-VAE (VQ-VAE-2, Razavi et al. 2019): a top grid of codes at half the bottom
grid's resolution, and a bottom grid quantized from the encoder's features together with what
the top codes say, so that the top level can hold the global structure and the bottom the detail.

    h_b = E_b(x)                                  (width, h, w)
    z_t = q_t(E_t(h_b))                           (D, h/2, w/2)
    z_b = q_b(W [h_b, D_t(z_t)])                  (D, h, w)
    p(x | z_b, z_t) = decoder([z_b, U(z_t)])

The code of an image is the concatenation of both grids in raster order, top first: a (1, n)
grid of n = h w / 4 + h w indices. Everything of ``VQVAE`` then holds unchanged: the bound
log p(x | z) + log p(z) with a uniform prior over the n positions, or with a learned prior over
the (1, n) sequence (an autoregressive model over it is p(z_t) p(z_b | z_t), the two-stage prior
of the paper in one model), evaluation, sampling and reconstruction.
"""

import math

import torch
from torch import nn
from torch.distributions import Distribution

from dgmkit.conditional.heads import LikelihoodHead
from dgmkit.models.vqvae import VQVAE, code_grid
from dgmkit.nn.quantize import Quantized, VectorQuantizer

__all__ = ["TwoLevelVQVAE"]


class TwoLevelVQVAE(VQVAE):
    """See the module docstring. ``quantizer`` is the bottom level's, ``top_quantizer`` the top's
    (the same number of codes K); ``bottom_shape`` is (h, w)."""

    def __init__(
        self,
        encoder: nn.Module,
        top_encoder: nn.Module,
        top_decoder: nn.Module,
        merge: nn.Module,
        top_up: nn.Module,
        top_quantizer: VectorQuantizer,
        quantizer: VectorQuantizer,
        decoder: nn.Module,
        head: LikelihoodHead,
        event_shape: tuple[int, int, int],
        bottom_shape: tuple[int, int],
        input_scale: float = 1.0,
    ):
        h, w = bottom_shape
        if h % 2 or w % 2:
            raise ValueError(f"the bottom grid needs even sides for a top grid at half of it, got {h}x{w}")
        self.bottom_shape, self.top_shape = (h, w), (h // 2, w // 2)
        n = math.prod(self.top_shape) + math.prod(self.bottom_shape)
        super().__init__(encoder, quantizer, decoder, head, event_shape, (1, n), input_scale)
        if top_quantizer.num_codes != quantizer.num_codes:
            raise ValueError("both levels need the same number of codes")
        self.top_encoder, self.top_decoder, self.merge, self.top_up = top_encoder, top_decoder, merge, top_up
        self.top_quantizer = top_quantizer

    def _levels(self, x: torch.Tensor, train: bool) -> tuple[Quantized, Quantized]:
        h_b = self.encoder(self._input(x))
        top = self.top_quantizer(self.top_encoder(h_b)) if train else _frozen(self.top_quantizer, self.top_encoder(h_b))
        z_e = self.merge(torch.cat([h_b, self.top_decoder(top.z_q)], 1))
        bottom = self.quantizer(z_e) if train else _frozen(self.quantizer, z_e)
        return top, bottom

    def _join(self, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """(B, h/2, w/2) and (B, h, w) index grids -> (B, 1, n)."""
        return torch.cat([top.flatten(1), bottom.flatten(1)], 1).unsqueeze(1)

    def _split(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(*batch, 1, n) -> (*batch, h/2, w/2), (*batch, h, w)."""
        flat = codes.reshape(*codes.shape[:-2], codes.shape[-1])
        nt = math.prod(self.top_shape)
        top, bottom = flat[..., :nt], flat[..., nt:]
        return top.reshape(*flat.shape[:-1], *self.top_shape), bottom.reshape(*flat.shape[:-1], *self.bottom_shape)

    def _decode_pair(self, zq_top: torch.Tensor, zq_bottom: torch.Tensor) -> Distribution:
        batch = zq_bottom.shape[:-3]
        zt, zb = zq_top.reshape(-1, *zq_top.shape[-3:]), zq_bottom.reshape(-1, *zq_bottom.shape[-3:])
        out = self.decoder(torch.cat([zb, self.top_up(zt)], 1))
        c, h, w = self.event_shape
        return self.head(out.reshape(*batch, c, self.head.params_per_pixel, h, w))

    def _merged(self, top: Quantized, bottom: Quantized) -> Quantized:
        """Both levels as one: the joined index grid, summed losses, the counts of both codebooks."""
        return Quantized(
            None,  # type: ignore[arg-type]  # the two levels have no one quantized map; never read
            self._join(top.indices, bottom.indices),
            top.commitment + bottom.commitment,
            top.codebook + bottom.codebook,
            torch.cat([top.counts, bottom.counts]),
        )

    def quantize(self, x: torch.Tensor) -> Quantized:
        return self._merged(*self._levels(x, train=True))

    def train_pass(self, x: torch.Tensor) -> tuple[Distribution, Quantized]:
        top, bottom = self._levels(x, train=True)
        return self._decode_pair(top.z_q, bottom.z_q), self._merged(top, bottom)

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self._levels(x, train=False)
        return self._join(top.indices, bottom.indices)

    def likelihood(self, codes: torch.Tensor) -> Distribution:
        top, bottom = self._split(code_grid(codes, self.code_shape, self.num_codes))
        zt = self.top_quantizer.lookup(top).movedim(self.top_quantizer.channel_dim, -3)
        zb = self.quantizer.lookup(bottom).movedim(self.quantizer.channel_dim, -3)
        return self._decode_pair(zt, zb)


def _frozen(quantizer: VectorQuantizer, z_e: torch.Tensor) -> Quantized:
    """The quantizer's nearest codes without its training updates (for encoding in eval)."""
    was = quantizer.training
    quantizer.eval()
    try:
        return quantizer(z_e)
    finally:
        quantizer.train(was)
