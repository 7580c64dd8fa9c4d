r"""Autoregressive models of images: p(x) = prod_d p(x_d | x_<d), exact in one pass.

A network maps the image to per-pixel parameters that depend only on earlier pixels, and a
likelihood head (Bernoulli, 256-way categorical, discretized logistic mixture) turns them into
p(x_d | x_<d). Generation is sequential. Every model has a naive path (the full network per
pixel) and a cached path (re-using what earlier steps computed); both draw pixel d by inverting
the CDF of p(x_d | x_<d) at a given uniform u_d, so for the same u they give the same images
(in float32 and float64; a MADE cast to bf16 or fp16 rounds the cached path's sums, one pixel's
rows and then the bias, otherwise than the full layer does, and its two paths' images may differ).
The same sequential loop drives the entropy coder (``dgmkit.coding``).
"""

import math
import typing
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
from torch.distributions import constraints

from dgmkit._rng import seeded_by
from dgmkit.conditional.heads import LikelihoodHead
from dgmkit.devices import dtype_of
from dgmkit.distributions.sampling import inverse_cdf
from dgmkit.errors import whole_at_least, whole_in
from dgmkit.models.base import ExactLikelihoodModel
from dgmkit.nn.causal import CausalConvNet
from dgmkit.nn.made import MADE, MaskedLinear
from dgmkit.nn.pixelcnn import GatedPixelCNNNet

if typing.TYPE_CHECKING:
    from torch.nn.modules.module import _IncompatibleKeys

__all__ = ["AutoregressiveModel", "CausalConvARM", "MADEARM", "GatedPixelCNN", "inverse_cdf"]

# choose(t, log_pmf) -> the values of the pixels at position t, (B,) integers
Chooser = Callable[[int, torch.Tensor], torch.Tensor]


class AutoregressiveModel(ExactLikelihoodModel):
    """Single-channel images (B, 1, H, W) of integers (or 0/1 floats), raster order unless the
    model says otherwise. ``input_scale`` maps the integers to [0, 1] for the network."""

    sample_cached = True
    coding = "sequential"

    def __init__(self, head: LikelihoodHead, event_shape: tuple[int, int, int], input_scale: float = 1.0):
        super().__init__()
        if event_shape[0] != 1:
            raise ValueError(f"these autoregressive models take single-channel images, got shape {event_shape}")
        self.head, self.event_shape, self.input_scale = head, tuple(event_shape), float(input_scale)
        self.num_dims = math.prod(event_shape)
        self.p = head.params_per_pixel

    def _net_input(self, x: torch.Tensor) -> torch.Tensor:
        dtype = next(self.parameters()).dtype
        x = x.to(dtype)
        return x * self.input_scale if self.input_scale != 1.0 else x

    @abstractmethod
    def params(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel head parameters (B, 1, P, H, W) of p(x_d | x_<d), one pass."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != self.event_shape:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, self.event_shape))}), got {tuple(x.shape)}")
        return self.head(self.params(x)).log_prob(x)

    @property
    def coding_levels(self) -> int | None:
        """Exact conditionals over ``num_levels`` values drive an entropy coder."""
        return self.head.num_levels

    @property
    def data_support(self) -> constraints.Constraint:
        return self.head.support

    def order(self) -> torch.Tensor:
        """Flat pixel indices in generation order."""
        return torch.arange(self.num_dims)

    def coding_bytes_per_image(self) -> int:
        """About the memory that ``run_cached`` holds per image of its batch: the image three times (at
        the end, its values scaled back and then rounded are two copies) and one pixel's head parameters
        here; a model with caches adds theirs (the coder bounds a batch's)."""
        return (3 * self.num_dims + self.p) * dtype_of(self).itemsize

    # -- sequential generation -------------------------------------------------------------
    def _params_at(self, x: torch.Tensor, d: int) -> torch.Tensor:
        return self.params(x).flatten(3)[:, 0, :, d]  # (B, P)

    @torch.no_grad()
    def run_naive(self, n: int, choose: Chooser, device: torch.device | str | None = None) -> torch.Tensor:
        """Generate n images position by position with a full network pass per pixel."""
        x = torch.zeros(n, self.num_dims, device=device, dtype=dtype_of(self))
        for t, d in enumerate(self.order().tolist()):
            log_pmf = self.head.pixel_log_pmf(self._params_at(x.view(n, *self.event_shape), d))
            x[:, d] = choose(t, log_pmf).to(x.dtype)
        return x.view(n, *self.event_shape)

    @torch.no_grad()
    def run_cached(self, n: int, choose: Chooser, device: torch.device | str | None = None) -> torch.Tensor:
        """As ``run_naive``; models override it with a path that re-uses earlier work."""
        return self.run_naive(n, choose, device)

    sample_kind = "float"

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, cached: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """n images drawn pixel by pixel. Returns (x, x) (there is no separate mean)."""
        device = next(self.parameters()).device
        with seeded_by(generator, device):
            u = torch.rand(n, self.num_dims, device=device, dtype=torch.float64)
        x = self.sample_from_noise(u, cached)
        return x, x

    @torch.no_grad()
    def sample_from_noise(self, u: torch.Tensor, cached: bool = True) -> torch.Tensor:
        """Images whose t-th generated pixel inverts its conditional CDF at u[:, t]: u (n, D) of
        uniforms in [0, 1) (one of another width met an IndexError at its last pixel, and NaN drew
        the first level everywhere without a word)."""
        if u.dim() != 2 or u.shape[1] != self.num_dims:
            raise ValueError(f"u must be (n, {self.num_dims}), a uniform per pixel, got shape {tuple(u.shape)}")
        if not bool(((u >= 0) & (u < 1)).all()):
            raise ValueError("u must hold uniforms in [0, 1); it holds values outside it (or NaN)")
        run = self.run_cached if cached else self.run_naive
        return run(u.shape[0], lambda t, log_pmf: inverse_cdf(log_pmf, u[:, t]), u.device)


class GatedConvARM(AutoregressiveModel):
    """A model whose network (``net_class``) is ``layers`` gated causal convolutions of
    ``channels`` channels and kernel width ``kernel``, from the image's one channel to the head's
    P parameters a pixel; ``layers`` None: the model's ``default_layers``."""

    net_class: ClassVar[type[CausalConvNet] | type[GatedPixelCNNNet]]
    default_layers: ClassVar[int]

    def __init__(
        self,
        head: LikelihoodHead,
        event_shape: tuple[int, int, int],
        channels: int = 64,
        layers: int | None = None,
        kernel: int = 3,
        input_scale: float = 1.0,
    ):
        super().__init__(head, event_shape, input_scale)
        whole_at_least("channels", channels, 1)
        layers = self.default_layers if layers is None else whole_at_least("layers", layers, 1)
        self.net = self.net_class(1, self.p, channels, layers, kernel)


class CausalConvARM(GatedConvARM):
    """A causal, dilated 1-D convolutional network over the image flattened in raster order
    (8 layers by default)."""

    net_class = CausalConvNet
    default_layers = 8
    net: CausalConvNet

    def params(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self._net_input(x).flatten(1).unsqueeze(1))  # (B, P, D)
        return out.view(x.shape[0], 1, self.p, *self.event_shape[1:])

    def coding_bytes_per_image(self) -> int:
        """``run_cached`` keeps every layer's outputs at every position of the image."""
        ch = cast(torch.nn.Conv1d, self.net.mix[0]).out_channels
        return super().coding_bytes_per_image() + len(self.net.convs) * ch * self.num_dims * dtype_of(self).itemsize

    @torch.no_grad()
    def run_cached(self, n: int, choose: Chooser, device: torch.device | str | None = None) -> torch.Tensor:
        x = torch.zeros(n, 1, self.num_dims, device=device, dtype=dtype_of(self))
        ch = cast(torch.nn.Conv1d, self.net.mix[0]).out_channels
        cache = [torch.zeros(n, ch, self.num_dims, device=device, dtype=x.dtype) for _ in self.net.convs]
        for t in range(self.num_dims):
            params = self.net.step(cache, x, t)  # (B, P)
            value = choose(t, self.head.pixel_log_pmf(params))
            x[:, 0, t] = value.to(x.dtype) * self.input_scale
        return (x[:, 0] / self.input_scale).round().view(n, *self.event_shape)


class GatedPixelCNN(GatedConvARM):
    """Gated PixelCNN with vertical and horizontal stacks (no blind spot; 6 layers by default)."""

    net_class = GatedPixelCNNNet
    default_layers = 6
    net: GatedPixelCNNNet
    PASS_BYTES = 256 * 2**20  # the vertical stack's pass through a row's rows, at most (``_pass_images``)

    def params(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(self._net_input(x))  # (B, P, H, W)
        return out.unsqueeze(1)

    def coding_bytes_per_image(self) -> int:
        """``run_cached`` holds, for a row, every layer's vertical pre-activation (2p channels) and
        horizontal output (p) on the row; the pass of the vertical stack through the rows above
        takes at most ``PASS_BYTES`` beside, whatever the batch (``_pass_images``)."""
        layers, ch = len(self.net.stack), self.net.stack[0].h_out.out_channels
        return super().coding_bytes_per_image() + layers * 3 * ch * self.event_shape[2] * dtype_of(self).itemsize

    def _pass_images(self) -> int:
        """The most images whose vertical pass goes at once within ``PASS_BYTES``. Counted for one layer:
        its input (p channels) on the R rows it sees, the padded copy, the convolution's unfolded input
        (p (k + 1)(2k + 1)), its output (2p) and the gate's three (p), twice, for the allocator's and
        the convolution's own workspace (500 MNIST images of the default 6 layers of 32 channels
        made one pass of 0.31 GB on the CPU; 0.22 GB counted once)."""
        first = self.net.stack[0]
        layers, ch, k, w = len(self.net.stack), first.h_out.out_channels, first.k, self.event_shape[2]
        rows = min(self.event_shape[1], layers * k + 2)
        passing = ch * (rows + k) * (w + 2 * k) + ch * rows * w * ((k + 1) * (2 * k + 1) + 1 + 2 + 3)
        return max(1, self.PASS_BYTES // (2 * passing * dtype_of(self).itemsize))

    @torch.no_grad()
    def run_cached(self, n: int, choose: Chooser, device: torch.device | str | None = None) -> torch.Tensor:
        """Row by row, each layer at the new pixel alone (``GatedPixelCNNNet.generate``)."""
        x = torch.zeros(n, *self.event_shape, device=device, dtype=dtype_of(self))
        pick = lambda t, params: choose(t, self.head.pixel_log_pmf(params))  # noqa: E731
        return self.net.generate(x, pick, self.input_scale, pass_images=self._pass_images())


class MADEARM(AutoregressiveModel):
    """MADE over the flattened image (Germain et al. 2015, arXiv 1502.03509).

    With ``masks`` K > 1, training draws one of K fixed connectivities (order and hidden
    degrees, or hidden degrees alone with ``random_order=False``) for each minibatch, and the
    model's density is the equal mixture over the K: log p(x) = logsumexp_k log p_k(x) - log K,
    a proper distribution (averaging logits across orderings would not be one).
    """

    def __init__(
        self,
        head: LikelihoodHead,
        event_shape: tuple[int, int, int],
        hidden: Sequence[int] = (500,),
        masks: int = 1,
        random_order: bool = False,
        seed: int = 0,
        input_scale: float = 1.0,
        direct: bool = False,
    ):
        super().__init__(head, event_shape, input_scale)
        self.made = MADE(self.num_dims, list(hidden), self.p, direct=direct)
        # (a seed of 1.5 met torch's "manual_seed expected a long" in the first use_mask)
        self.masks, self.random_order, self.seed = (
            whole_at_least("masks", masks, 1),
            random_order,
            whole_in("seed", seed, 0, 2**32 - 1),  # (a seed of 2**62 met torch's overflow in use_mask's seed * 1000 + k)
        )
        self._current = -1
        self.use_mask(0)

    def use_mask(self, k: int) -> None:
        if k == self._current:
            return
        if self.masks == 1 and not self.random_order:
            self.made.set_order(torch.arange(self.num_dims, device="cpu"))
        else:
            g = torch.Generator().manual_seed(self.seed * 1000 + k)
            natural = torch.arange(self.num_dims, device="cpu")
            order = torch.randperm(self.num_dims, generator=g, device="cpu") if self.random_order else natural
            self.made.set_order(order, generator=g if self.masks > 1 else None)
        self._current = k

    @property
    def coding_levels(self) -> int | None:
        """None for a mixture over connectivities: it has no single pixel order to code with."""
        return super().coding_levels if self.masks == 1 else None

    @property
    def fixed_step(self) -> bool:
        return self.masks == 1  # (more: each training step draws one on the host)

    def coding_bytes_per_image(self) -> int:
        """``run_cached`` holds the first hidden layer's pre-activation and, at once, at most three
        activations of the widest hidden layer: the last layer's output while the pre-activation is
        updated (the old one, the new pixel's term and the sum), or a layer's input, pre-activation and
        output (500 hidden units on MNIST: 13.4 kB an image measured on the CPU, where every hidden
        layer's activations once, with the image, counted 5.1)."""
        widths = [cast(MaskedLinear, layer).out_features for layer in self.made.hidden_layers]
        return super().coding_bytes_per_image() + (widths[0] + 3 * max(widths)) * dtype_of(self).itemsize

    def order(self) -> torch.Tensor:
        return torch.argsort(self.made.order)  # order[d] is d's position; generation visits positions 0, 1, ...

    def params(self, x: torch.Tensor) -> torch.Tensor:
        out = self.made(self._net_input(x).flatten(1))  # (B, P, D)
        return out.view(x.shape[0], 1, self.p, *self.event_shape[1:])

    @torch.no_grad()
    def run_cached(self, n: int, choose: Chooser, device: torch.device | str | None = None) -> torch.Tensor:
        """Keeps the first hidden layer's pre-activation and adds the new pixel's column to it
        (x changes one entry per step), then evaluates only the rows of the output layer (and
        of the direct connections) that belong to the next pixel."""
        made = self.made
        first = cast(MaskedLinear, made.hidden_layers[0])
        w1 = first.weight * first.mask  # (H, D)
        a1 = first.bias.expand(n, -1).clone()  # (B, H)
        w_out = made.output_layer.weight * made.output_layer.mask  # (P * D, H)
        w_dir = None if made.direct is None else made.direct.weight * made.direct.mask  # (P * D, D)
        x = torch.zeros(n, self.num_dims, device=device, dtype=a1.dtype)
        rows = torch.arange(self.p, device=x.device) * self.num_dims
        for t, d in enumerate(self.order().tolist()):
            h = made.act(a1)
            for layer in made.hidden_layers[1:]:
                h = made.act(layer(h))
            params = h @ w_out[rows + d].T + made.output_layer.bias[rows + d]  # (B, P)
            if w_dir is not None:
                params = params + x @ w_dir[rows + d].T
            value = choose(t, self.head.pixel_log_pmf(params)).to(x.dtype)
            x[:, d] = value * self.input_scale
            a1 = a1 + x[:, d : d + 1] * w1[:, d]
        return (x / self.input_scale).round().view(n, *self.event_shape)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.masks == 1:
            if self.training and self.masks > 1:
                self.use_mask(int(torch.randint(self.masks, ())))
            return super().log_prob(x)
        per_mask = []
        for k in range(self.masks):
            self.use_mask(k)
            per_mask.append(super().log_prob(x))
        return torch.logsumexp(torch.stack(per_mask), 0) - math.log(self.masks)

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> "_IncompatibleKeys":
        self._current = -2  # the loaded masks are those saved; re-derive on the next use_mask
        return super().load_state_dict(state_dict, strict, assign)

    sample_kind = "float"

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, cached: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """With K connectivities, a draw from the mixture: k uniform per image, then x ~ p_k."""
        if self.masks == 1 or n == 0:
            return super().sample(n, generator, cached)
        device = next(self.parameters()).device
        with seeded_by(generator, device):
            ks = torch.randint(self.masks, (n,), device=device)
            u = torch.rand(n, self.num_dims, device=device, dtype=torch.float64)
        out = torch.empty(n, *self.event_shape, device=device, dtype=dtype_of(self))
        for k in ks.unique().tolist():
            self.use_mask(k)
            sel = ks == k
            out[sel] = self.sample_from_noise(u[sel], cached)
        return out, out
