r"""An autoregressive decoder p(x|z) = prod_d p(x_d | x_<d, z): a gated PixelCNN over x, every
layer of which sees a map s(z) at the image's size (the PixelVAE of Gulrajani et al. 2017,
arXiv 1611.05013; the PixelHVAE of Tomczak & Welling 2018, arXiv 1705.07120).

The decoder returns ``AutoregressivePixels``: log p(x|z) is exact in one network pass (the
network sees x shifted, as a PixelCNN does), while a draw, or the greedy decode that stands for
a representative image, is sequential, pixel by pixel. p(x|z) does not factorize over pixels,
so the log-likelihood of a part of x (missing entries) is not available.
"""

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import nn
from torch.distributions import Distribution

from dgmkit.conditional.base import width_error
from dgmkit.conditional.decoder import Decoder
from dgmkit.conditional.heads import LikelihoodHead
from dgmkit.distributions.sampling import inverse_cdf
from dgmkit.nn.pixelcnn import GatedPixelCNNLayer, GatedPixelCNNNet

__all__ = ["PixelCNNDecoder", "AutoregressivePixels"]


class PixelCNNDecoder(Decoder):
    """p(x|z) over single-channel images of ``event_shape`` = (1, H, W) with a discrete
    likelihood ``head`` (Bernoulli, categorical, discretized logistic).

    ``net`` maps latents (N, M) to the condition map: N * S * H * W numbers, flat or as
    (N, S, H, W), with S = ``cond_channels``. The PixelCNN (``channels``, ``layers``,
    ``kernel``) reads x * ``input_scale``. z of shape (*batch, M) gives a distribution of batch
    shape ``batch``."""

    def __init__(
        self,
        net: nn.Module,
        head: LikelihoodHead,
        event_shape: Sequence[int],
        cond_channels: int,
        channels: int = 64,
        layers: int = 6,
        kernel: int = 3,
        input_scale: float = 1.0,
    ):
        shape = tuple(int(d) for d in event_shape)
        if len(shape) != 3 or shape[0] != 1:
            raise ValueError(f"the PixelCNN decoder takes single-channel images (1, H, W), got shape {shape}")
        if head.num_levels is None:
            raise ValueError(f"the PixelCNN decoder draws pixels from a discrete likelihood, not {type(head).__name__}")
        super().__init__(net, head, shape)
        self.cond_channels, self.input_scale = int(cond_channels), float(input_scale)
        self.pixelcnn = GatedPixelCNNNet(1, head.params_per_pixel, channels, layers, kernel, cond_channels=cond_channels)

    def forward(self, z: torch.Tensor) -> "AutoregressivePixels":
        return AutoregressivePixels(self, z)

    def bytes_per_image(self, dtype: torch.dtype = torch.float32) -> int:
        """About the working memory of ``params`` per image, without gradients: every layer's
        condition terms (4p channels) and vertical pre-activation (2p) are held through the pass,
        beside a few p-channel maps in flight (measured: 11 MB for 64 channels, 8 layers, 28x28)."""
        layer = cast(GatedPixelCNNLayer, self.pixelcnn.layers[0])
        p, layers = layer.h_out.out_channels, len(self.pixelcnn.layers)
        per_pixel = p * (6 * layers + 8) + self.cond_channels + int(self.head.params_per_pixel)
        return math.prod(self.event_shape) * per_pixel * torch.finfo(dtype).bits // 8

    def condition(self, z: torch.Tensor) -> torch.Tensor:
        """The condition map s(z), (N, S, H, W), for latents (N, M)."""
        _, h, w = self.event_shape
        s = self.net(z)
        k = self.cond_channels
        if math.prod(s.shape[1:]) != k * h * w:
            needs = f"a PixelCNNDecoder of {k} condition channels on {h} x {w} images needs {k} * {h} * {w} = {k * h * w}"
            raise width_error(s, math.prod(s.shape[1:]), "decoder", "latent", needs)
        return s.reshape(z.shape[0], self.cond_channels, h, w)

    def params(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The head's parameters (N, 1, P, H, W) of every p(x_d | x_<d, z), one pass."""
        dtype = s.dtype
        x = x.to(dtype) * self.input_scale if self.input_scale != 1.0 else x.to(dtype)
        return self.pixelcnn(x, s).unsqueeze(1)

    @torch.no_grad()
    def generate(
        self, s: torch.Tensor, choose: Callable[[int, torch.Tensor], torch.Tensor], cached: bool = True
    ) -> torch.Tensor:
        """Images (N, 1, H, W) made pixel by pixel: pixel t is ``choose(t, log pmf (N, L))``."""
        x = torch.zeros(s.shape[0], *self.event_shape, device=s.device, dtype=s.dtype)
        pick = lambda t, params: choose(t, self.head.pixel_log_pmf(params))  # noqa: E731
        return self.pixelcnn.generate(x, pick, self.input_scale, s, cached)


class AutoregressivePixels(Distribution):
    """p(x|z) of a ``PixelCNNDecoder`` at latents z (*batch, M): batch shape ``batch``, event
    (1, H, W). ``log_prob`` is exact; ``sample`` and ``location`` (each pixel its most probable
    value given z and the pixels chosen before it, the greedy decode) are sequential. The mean
    has no closed form."""

    arg_constraints: dict = {}

    def __init__(self, decoder: PixelCNNDecoder, z: torch.Tensor):
        self.decoder, self.z = decoder, z
        self._s: torch.Tensor | None = None
        super().__init__(z.shape[:-1], torch.Size(decoder.event_shape), validate_args=False)

    @property
    def _cond(self) -> torch.Tensor:
        """s(z) for every latent of the batch, (N, S, H, W), made once."""
        if self._s is None:
            self._s = self.decoder.condition(self.z.reshape(-1, self.z.shape[-1]))
        return self._s

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x|z) of complete images x, broadcast against the batch (x of shape (B, 1, H, W)
        with z of shape (S, B, M) scores each image under its S latents; x of shape
        (N, *batch, 1, H, W) gives (N, *batch))."""
        if value.shape[-3:] != self.event_shape:
            shape = ", ".join(map(str, self.event_shape))
            raise ValueError(f"expected images of shape (..., {shape}), got {tuple(value.shape)}")
        lead = torch.broadcast_shapes(value.shape[:-3], self.batch_shape)
        x = value.expand(*lead, *self.event_shape).reshape(-1, *self.event_shape)
        s = self._cond
        if lead != self.batch_shape:  # leading sample dimensions of x: the same s for each
            per = s.shape[1:]
            s = s.reshape(*self.batch_shape, *per).expand(*lead, *per).reshape(-1, *per)
        head = self.decoder.head(self.decoder.params(x, s))
        return head.log_prob(x).reshape(lead)

    def _generate(self, sample_shape: torch.Size, choose: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        s = self._cond
        reps = math.prod(sample_shape)
        if reps != 1:
            s = s.repeat(reps, 1, 1, 1)
        x = self.decoder.generate(s, choose)
        return x.reshape(*sample_shape, *self.batch_shape, *self.event_shape)

    @torch.no_grad()
    def sample(self, sample_shape: torch.Size | Sequence[int] = torch.Size()) -> torch.Tensor:
        """Draws of x, pixel by pixel (the cached path), from the global random stream."""
        sample_shape = torch.Size(sample_shape)
        n = math.prod(sample_shape) * self.batch_shape.numel()
        u = torch.rand(n, math.prod(self.event_shape), device=self.z.device, dtype=torch.float64)
        return self._generate(sample_shape, lambda t, log_pmf: inverse_cdf(log_pmf, u[:, t]))

    @torch.no_grad()
    def sample_from_noise(self, u: torch.Tensor, cached: bool = True) -> torch.Tensor:
        """The images whose t-th pixel inverts its conditional CDF at u[:, t] (u: (N, D) uniforms,
        N the batch's size); the cached and the naive path give the same images."""
        n, d = self.batch_shape.numel(), math.prod(self.event_shape)
        if u.shape != (n, d):  # (a row short was an IndexError from the last pixel; a row over, a broadcast's)
            raise ValueError(
                f"expected uniforms of shape ({n}, {d}): one per pixel of each of the {n} images, got {tuple(u.shape)}"
            )
        x = self.decoder.generate(self._cond, lambda t, log_pmf: inverse_cdf(log_pmf, u[:, t]), cached)
        return x.reshape(*self.batch_shape, *self.event_shape)

    @torch.no_grad()
    def location(self) -> torch.Tensor:
        """The greedy decode: each pixel its most probable value given z and the pixels before it."""
        return self._generate(torch.Size(), lambda t, log_pmf: log_pmf.argmax(-1))

    @property
    def mean(self) -> torch.Tensor:
        raise NotImplementedError(
            "an autoregressive p(x|z) has no closed-form mean; location() gives the greedy decode, sample() draws"
        )
