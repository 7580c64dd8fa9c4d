r"""Hierarchical VAEs: L stochastic layers z_1 (next to x) .. z_L (top).

Generative model (every kind):

    p(x, z) = p(z_L) prod_{l<L} p(z_l | z_{l+1}) p(x | z_1)      (or p(x | z_1, ..., z_L))

with the top prior any ``priors.Prior`` (standard, mixture, VampPrior, flow) and the layers'
priors ``GaussianLayerPrior`` (context: the layer above). Posteriors:

- ``bottom-up``: q(z_1 | x) q(z_2 | z_1) ... q(z_L | z_{L-1}), the plain stack.
- ``top-down``: q(z_L | x) q(z_{L-1} | x, z_L) ... q(z_1 | x, z_2), Tomczak & Welling's
  two-layer HVAE (2018) for L = 2: its decoder sees every layer, p(x | z_1, z_2).
- ``ladder``: the Ladder VAE (Sonderby et al. 2016): a deterministic bottom-up pass d_l gives
  Gaussian estimates N(mu^_l, s^_l) for each layer; top-down, q(z_L | x) is the top estimate and
  q(z_l | .) merges the estimate with the generative p(z_l | z_{l+1}) by precision weighting:
  s_q^-2 = s^^-2 + s_p^-2, mu_q = (mu^ s^^-2 + mu_p s_p^-2) s_q^2.

The latent variable of the contract is the concatenation z = (z_1, ..., z_L) of dimension
sum M_l: ``posterior(x)`` and ``prior()`` are distributions over it (ancestral sampling with
their log-densities), so the importance-sampled likelihood, the figures and the diagnostics
work as for any latent variable model. ``path(x)`` gives the per-layer Gaussians of one draw
for the ELBO with per-layer closed-form KL terms (``objectives.HierarchicalELBO``).
"""

from abc import abstractmethod
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, TypeAlias, cast

import torch
from torch import nn
from torch.distributions import Distribution, constraints, kl_divergence

from dgmkit._rng import randn, seeded_by
from dgmkit.conditional import Decoder
from dgmkit.devices import dtype_of
from dgmkit.distributions import DiagonalNormal, JointSampler, diagonal_normal
from dgmkit.distributions.sampling import rsample_and_log_prob
from dgmkit.distributions.shapes import check_event_width
from dgmkit.models.base import DecodedModel, LatentVariableModel, ModelELBO, check_decoder, data_batch
from dgmkit.nn.scale import SoftplusScale
from dgmkit.priors import Prior
from dgmkit.priors.conditional import GaussianLayerPrior

if TYPE_CHECKING:
    from dgmkit.models.vdvae import DeepTopDownVAE
    from dgmkit.nn.gated import GatedBranches

__all__ = ["HierarchicalVAE", "LayerDraw", "INFERENCE_KINDS", "TopDownSteps"]

INFERENCE_KINDS = ("bottom-up", "top-down", "ladder")


# bits-back coding's pass over the layers, top first (``LayerStack.top_down_steps``): it yields
# (layer l, p(z_l | z_{>l}) or None at the top, q(z_l | x, z_{>l}) or None without x) and is sent z_l
TopDownSteps: TypeAlias = Generator[tuple[int, DiagonalNormal | None, DiagonalNormal | None], torch.Tensor, None]


@dataclass
class LayerDraw:
    """One layer of a draw: its index l (0 = next to x), the posterior q(z_l | .) it was drawn
    from, the draw z_l, the prior p(z_l | z_{l+1}) given the drawn layer above (None for the
    top layer, whose prior is the model's top prior), and ``of_x``: whether q(z_l | x) is of x
    alone (the same for every draw of a datapoint), not of layers drawn before it."""

    index: int
    q: DiagonalNormal
    z: torch.Tensor
    p: DiagonalNormal | None
    of_x: bool = False


def log_q_of(draws: Sequence[LayerDraw]) -> torch.Tensor:
    """sum_l log q(z_l | .) of one posterior pass's draws (one or more layers)."""
    total = draws[0].q.log_prob(draws[0].z)
    for d in draws[1:]:
        total = total + d.q.log_prob(d.z)
    return total


def _gaussian(h: torch.Tensor, m: int, scale_map: nn.Module) -> DiagonalNormal:
    loc, raw = h.split(m, dim=-1)
    return diagonal_normal(loc, scale_map(raw))


def _draw(q: DiagonalNormal, given: torch.Tensor | None, generator: torch.Generator | None) -> torch.Tensor:
    if given is not None:
        return given
    eps = randn(q.mean.shape, generator, device=q.mean.device, dtype=q.mean.dtype)
    return q.mean + q.stddev * eps


@dataclass(frozen=True)
class PosteriorPass:
    """How one ancestral pass of a layered posterior takes each layer: ``sample_shape`` draws per
    datapoint, ``given`` joint latents (*sample, B, sum M_l) scored instead of drawn, draws from
    ``generator``, or each layer's mean (``means``: a representative point)."""

    sample_shape: tuple[int, ...] = ()
    given: torch.Tensor | None = None
    generator: torch.Generator | None = None
    means: bool = False

    def expand(self, q: DiagonalNormal) -> DiagonalNormal:
        """A q of x alone, for every draw."""
        if not self.sample_shape:
            return q
        shape = (*self.sample_shape, *q.mean.shape)
        return diagonal_normal(q.mean.expand(*shape), q.stddev.expand(*shape))

    def take(self, q: DiagonalNormal, given: torch.Tensor | None) -> torch.Tensor:
        """The layer's z: ``given``, else q's mean (``means``) or a draw of q."""
        return q.mean if self.means and given is None else _draw(q, given, self.generator)


class LayerStack(ModelELBO):
    """What every stack of stochastic layers z = (z_1, ..., z_L) shares, whatever its networks
    (``HierarchicalVAE``, the deep top-down VAE): q(z | x) and p(z) over the concatenated layers,
    ancestral through the model's ``path`` and ``top()``, clusters from the top prior's mixture
    components where it has them, and its ELBO with one KL term per layer (``layer_kls``), in
    closed form where the layer's prior conditions on layers drawn before it. Listed before
    ``LatentVariableModel`` in the bases. ``sizes``: the layers' dimensions M_1, ..., M_L."""

    has_layers: ClassVar[bool] = True
    sizes: list[int]
    if TYPE_CHECKING:  # what the stacks provide
        top_prior: Prior

        def top_posterior(self, u: torch.Tensor) -> DiagonalNormal: ...

        def _posterior_pass(
            self, x: torch.Tensor, how: "PosteriorPass", output: bool
        ) -> tuple[list[LayerDraw], Distribution | None]: ...

        def closed_form_kl(self, index: int) -> bool: ...

        @property
        def draws_top_down(self) -> bool: ...

        def top_down_steps(self, x: torch.Tensor | None, n: int) -> "TopDownSteps":
            """The layers one at a time, top first, for n rows (bits-back coding's pass, whose
            caller chooses each layer): yields (l, p(z_l | z_{>l}) (None for the top layer, whose
            prior is ``top()``), q(z_l | x, z_{>l}) (None without x)) and is sent z_l (n, M_l).
            Only where ``draws_top_down``."""
            ...

        def pixel_log_pmf(self, z: torch.Tensor) -> torch.Tensor: ...

    @property
    def latent_dim(self) -> int:
        return sum(self.sizes)

    def layer_kls(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One posterior draw per datapoint: log p(x | z), shape (B,), and each layer's KL term,
        (L, B), layer 0 next to x: KL(q || p) in closed form where ``closed_form_kl`` allows it and
        torch's registry has it, else the draw's log q(z_l | .) - log p(z_l | .)."""
        draws, px = self.draw(x)
        top = self.top()
        kls = []
        for d in sorted(draws, key=lambda d: d.index):
            p = top if d.p is None else d.p
            kl = None
            if self.closed_form_kl(d.index):
                try:
                    kl = kl_divergence(d.q, p)
                except NotImplementedError:
                    pass
            kls.append(d.q.log_prob(d.z) - p.log_prob(d.z) if kl is None else kl)
        return px.log_prob(x), torch.stack(kls)

    def elbo_terms(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The ELBO of one posterior draw with the per-layer KL terms of ``layer_kls``, as training
        reports it (``objectives.HierarchicalELBO``)."""
        log_px_z, kls = self.layer_kls(x)
        kl = kls.sum(0)
        return {"elbo": log_px_z - kl, "recon": log_px_z, "kl": kl}

    @property
    def num_layers(self) -> int:
        return len(self.sizes)

    def checked_latents(self, z: torch.Tensor, what: str) -> torch.Tensor:
        """Joint latents z (*batch, sum M_l) in the model's precision; z of another shape refused,
        naming ``what`` was given them and the layers' widths (else torch's words: a matmul's, or
        split_with_sizes'; of another precision: 'mat1 and mat2 must have the same dtype')."""
        if z.dim() < 1 or z.shape[-1] != self.latent_dim:
            raise ValueError(
                f"{what} was given latents of shape {tuple(z.shape)}; this model's z has {self.latent_dim} dimensions "
                f"(its layers' {list(self.sizes)} concatenated): (*batch, {self.latent_dim})"
            )
        return z.to(dtype_of(cast(nn.Module, self)))

    def split(self, z: torch.Tensor) -> list[torch.Tensor]:
        """(..., sum M_l) -> [z_1, ..., z_L]."""
        return list(z.split(self.sizes, dim=-1))

    def path(
        self,
        x: torch.Tensor,
        sample_shape: tuple[int, ...] = (),
        given: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        means: bool = False,
    ) -> list[LayerDraw]:
        """One ancestral pass of the posterior for each datapoint (and ``sample_shape`` draws of
        it): the layers in the order they are drawn, each with q, z and the layer's prior given
        the layer above. ``given`` (*sample, B, sum M_l): score these latents instead of drawing;
        ``means``: take each layer's mean instead of a draw (a representative point)."""
        return self._posterior_pass(x, PosteriorPass(sample_shape, given, generator, means), output=False)[0]

    def draw(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[list[LayerDraw], Distribution]:
        """One posterior draw per datapoint (``path``) and p(x | z) at it. The model's
        ``_posterior_pass(x, how, output)`` makes both: the draws and p(x | z) if ``output``."""
        draws, p = self._posterior_pass(x, PosteriorPass(generator=generator), output=True)
        assert p is not None  # made: output=True
        return draws, p

    def top(self) -> Distribution:
        """p(z_L), with the model's q(z_L | x) as context where the prior asks for it."""
        return self.top_prior(self.top_posterior if self.top_prior.context == "encoder" else None)

    def posterior(self, x: torch.Tensor) -> "HierarchicalPosterior":
        """q(z | x) over z = (z_1, ..., z_L): batch (B,), event (sum M_l,)."""
        model = cast("HierarchicalVAE | DeepTopDownVAE", self)
        return HierarchicalPosterior(model, data_batch(x, model.event_shape, "q(z|x)"))

    def prior(self) -> "HierarchicalPrior":
        """p(z) = p(z_L) prod p(z_l | z_{>l}) over z = (z_1, ..., z_L)."""
        stack = cast("HierarchicalVAE | DeepTopDownVAE", self)
        return HierarchicalPrior(stack, stack.top())

    @property
    def top_prior_module(self) -> Prior:
        return self.top_prior

    def top_latents(self, z: torch.Tensor) -> torch.Tensor:
        return self.split(z)[-1]


class HierarchicalVAE(LayerStack, DecodedModel, LatentVariableModel):
    """See the module docstring. Networks (each maps its input's last dimension):

    - ``features``: x (B, *event) -> h (B, F), the deterministic encoder of the data
      (``top-down``: shared by every layer; ``bottom-up``: only by q(z_1 | x));
    - ``q_nets[l]``: ``bottom-up``: h (l = 0) or z_{l-1} -> 2 M_l; ``top-down``: h (l = L-1) or
      [h, z_{l+1}] -> 2 M_l; ``ladder``: d_l -> 2 M_l, where ``ladder_nets[l]`` make d_l
      from d_{l-1} (d_0 = h);
    - ``layer_priors[l]`` (l < L-1): p(z_l | z_{l+1}); ``top_prior``: p(z_L);
    - ``decoder``: z_1 (``decoder_input = "bottom"``) or (z_1, ..., z_L) ("all") -> p(x | .).
    """

    sample_means: ClassVar[bool] = True
    coding: ClassVar[Literal["sequential", "bits-back"] | None] = "bits-back"  # (a top-down or ladder posterior)

    def __init__(
        self,
        sizes: Sequence[int],
        inference: str,
        features: nn.Module,
        q_nets: Sequence[nn.Module],
        layer_priors: Sequence[GaussianLayerPrior],
        top_prior: Prior,
        decoder: Decoder,
        decoder_input: str = "bottom",
        ladder_nets: Sequence[nn.Module] = (),
        input_scale: float = 1.0,
        min_scale: float = 1e-3,
        scale_map: nn.Module | None = None,
    ):
        """``scale_map``: raw network output -> the posteriors' standard deviations
        (``nn.scale``; default softplus floored at ``min_scale``)."""
        super().__init__()
        if inference not in INFERENCE_KINDS:
            raise ValueError(f"inference must be one of {INFERENCE_KINDS}, got {inference!r}")
        if len(sizes) < 1 or len(q_nets) != len(sizes) or len(layer_priors) != len(sizes) - 1:
            raise ValueError("need one posterior network per layer and one layer prior per layer but the top")
        if inference == "ladder" and len(ladder_nets) != len(sizes) - 1:
            raise ValueError("the ladder needs one deterministic network between each two layers")
        if decoder_input not in ("bottom", "all"):
            raise ValueError(f"decoder_input must be 'bottom' or 'all', got {decoder_input!r}")
        if any(p.latent_dim != m for p, m in zip(layer_priors, sizes)) or top_prior.latent_dim != sizes[-1]:
            raise ValueError("each layer's prior must have that layer's size")
        if inference != "ladder" and len(ladder_nets):
            raise ValueError("ladder networks belong to a ladder posterior")
        if top_prior.context == "encoder" and inference == "bottom-up" and len(sizes) > 1:
            raise ValueError("a prior made of the encoder (VampPrior) needs q(z_L | x): a top-down or ladder posterior")
        self.sizes = [int(m) for m in sizes]
        self.inference = inference
        self.features = features
        self.q_nets = nn.ModuleList(q_nets)
        self.layer_priors = nn.ModuleList(layer_priors)
        self.top_prior = top_prior
        check_decoder(decoder)
        self.decoder = decoder
        self.decoder_input = decoder_input
        self.ladder_nets = nn.ModuleList(ladder_nets)
        self.input_scale = float(input_scale)
        self.scale_map = SoftplusScale(min_scale) if scale_map is None else scale_map

    # ------------------------------------------------------------ inference
    def _encode(self, x: torch.Tensor, scale: bool = True) -> list[torch.Tensor]:
        """The deterministic pass over x: [h] (bottom-up, top-down) or [d_1, ..., d_L] (ladder,
        d_1 = h). ``scale``: x is data (times ``input_scale``), not already a network input."""
        x = x.to(next(self.parameters()).dtype)  # (integers, or floats of another precision: float64 failed)
        if scale and self.input_scale != 1.0:
            x = x * self.input_scale
        h = self.features(x)
        if self.inference != "ladder":
            return [h]
        ds = [h]
        for net in self.ladder_nets:
            ds.append(net(ds[-1]))
        return ds

    def _top_q(self, enc: list[torch.Tensor]) -> DiagonalNormal:
        top = self.num_layers - 1
        h = enc[-1] if self.inference == "ladder" else enc[0]
        return _gaussian(self.q_nets[top](h), self.sizes[top], self.scale_map)

    def top_posterior(self, u: torch.Tensor) -> DiagonalNormal:
        """q(z_L | u) for network inputs u (top-down and ladder posteriors): the VampPrior's
        components at its pseudo-inputs, which live in the networks' input space."""
        if self.inference == "bottom-up" and self.num_layers > 1:  # (of one layer: q(z_1 | x) is q(z_L | x))
            raise ValueError("a bottom-up posterior of two or more layers has no q(z_L | x) of x alone")
        return self._top_q(self._encode(u, scale=False))

    def _posterior_pass(
        self, x: torch.Tensor, how: "PosteriorPass", output: bool
    ) -> tuple[list[LayerDraw], Distribution | None]:
        enc = self._encode(x)  # computed once per datapoint, whatever the number of draws
        fixed = self.split(how.given) if how.given is not None else [None] * self.num_layers
        if self.inference == "bottom-up":
            draws = self._bottom_up_path(enc, how, fixed)
        else:
            draws = self._top_down_path(enc, how, fixed)
        if not output:
            return draws, None
        return draws, self.likelihood(torch.cat([d.z for d in sorted(draws, key=lambda d: d.index)], -1))

    def _bottom_up_path(
        self, enc: list[torch.Tensor], how: "PosteriorPass", fixed: Sequence[torch.Tensor | None]
    ) -> list[LayerDraw]:
        """q(z_1 | x) q(z_2 | z_1) ...: the layers drawn upwards, then their priors."""
        L = self.num_layers
        draws: dict[int, LayerDraw] = {}
        below = enc[0]
        for i in range(L):
            q = _gaussian(self.q_nets[i](below), self.sizes[i], self.scale_map)
            q = how.expand(q) if i == 0 else q  # q(z_1 | x): once per datapoint
            below = how.take(q, fixed[i])
            draws[i] = LayerDraw(i, q, below, None, of_x=i == 0)
        for i in range(L - 1):  # the priors, once the layer above is drawn
            draws[i].p = self.layer_priors[i](draws[i + 1].z)
        return [draws[i] for i in range(L)]

    def _top_down_path(
        self, enc: list[torch.Tensor], how: "PosteriorPass", fixed: Sequence[torch.Tensor | None]
    ) -> list[LayerDraw]:
        """q(z_L | x) q(z_{L-1} | x, z_L) ... (top-down), or the ladder's merges: the layers
        drawn downwards, each with its prior given the layer above."""
        L = self.num_layers
        q = how.expand(self._top_q(enc))
        z = how.take(q, fixed[L - 1])
        out = [LayerDraw(L - 1, q, z, None, of_x=True)]
        for i in range(L - 2, -1, -1):
            p = self.layer_priors[i](z)
            q = self._layer_q(enc, i, z, p, how)
            z = how.take(q, fixed[i])
            out.append(LayerDraw(i, q, z, p))
        return out

    def _layer_q(
        self, enc: list[torch.Tensor], i: int, z: torch.Tensor, p: DiagonalNormal, how: "PosteriorPass"
    ) -> DiagonalNormal:
        """q(z_i | x, z_{i+1}) below the top (a top-down or ladder posterior), given the
        deterministic pass ``enc`` over x, the layer above z and its prior p(z_i | z_{i+1})."""
        if self.inference == "top-down":
            net = self.q_nets[i]
            if hasattr(net, "partial"):  # its x branch once per datapoint
                h = cast("GatedBranches", net).partial(enc[0])(z)
            else:
                h = net(torch.cat([enc[0].expand(*z.shape[:-1], enc[0].shape[-1]), z], -1))
            return _gaussian(h, self.sizes[i], self.scale_map)
        # ladder: precision-weighted merge of the bottom-up estimate and the prior
        est = how.expand(_gaussian(self.q_nets[i](enc[i]), self.sizes[i], self.scale_map))
        prec_e, prec_p = est.stddev.pow(-2), p.stddev.pow(-2)
        var = 1.0 / (prec_e + prec_p)
        return diagonal_normal((est.mean * prec_e + p.mean * prec_p) * var, var.sqrt())

    def closed_form_kl(self, index: int) -> bool:
        """Whether layer ``index``'s ELBO term may be the closed-form KL(q || p): p(z_l | z_{l+1})
        conditions on a layer drawn before z_l (every layer of a top-down or ladder posterior; the
        top layer of any)."""
        return self.inference != "bottom-up" or index == self.num_layers - 1

    def descend(self, z_top: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Complete top-layer draws (*batch, M_L) ancestrally from the layer priors: the joint z
        (*batch, sum M_l) and log prod_{l<L} p(z_l | z_{l+1}) of the layers drawn here."""
        layers, log_p = [z_top], z_top.new_zeros(z_top.shape[:-1])
        for i in range(self.num_layers - 2, -1, -1):
            p = self.layer_priors[i](layers[0])
            eps = randn(p.mean.shape, generator, device=p.mean.device, dtype=p.mean.dtype)
            z = p.mean + p.stddev * eps
            log_p = log_p + p.log_prob(z)
            layers.insert(0, z)
        return torch.cat(layers, -1), log_p

    def log_prob_below(self, z: torch.Tensor) -> torch.Tensor:
        """sum_{l<L} log p(z_l | z_{l+1}) for joint latents z (*batch, sum M_l)."""
        zs = self.split(z)
        log_p = z.new_zeros(z.shape[:-1])
        for i, p in enumerate(self.layer_priors_given(z)):
            log_p = log_p + p.log_prob(zs[i])
        return log_p

    def layer_priors_given(self, z: torch.Tensor) -> list[DiagonalNormal]:
        """p(z_l | z_{l+1}) for l = 0 .. L-2 (layer 0 next to x) given joint latents z (*batch,
        sum M_l): each reads only the layer above it."""
        zs = self.split(z)
        return [self.layer_priors[i](zs[i + 1]) for i in range(self.num_layers - 1)]

    @property
    def draws_top_down(self) -> bool:
        """Whether the posterior draws the layers from the top down, as the generative model does
        (a top-down or ladder posterior): then each layer's prior given the layers above is
        known when the layer is drawn, which bits-back coding needs. One layer's is both."""
        return self.inference != "bottom-up" or self.num_layers == 1

    def top_down_steps(self, x: torch.Tensor | None, n: int) -> TopDownSteps:
        """``LayerStack.top_down_steps`` (a top-down or ladder posterior)."""
        if not self.draws_top_down:
            raise ValueError("a bottom-up posterior of two or more layers draws z_1 first: it has no pass from the top")
        enc = None if x is None else self._encode(x)
        how = PosteriorPass()
        top = self.num_layers - 1
        z = yield top, None, None if enc is None else self._top_q(enc)
        for i in range(top - 1, -1, -1):
            p = self.layer_priors[i](z)
            z = yield i, p, None if enc is None else self._layer_q(enc, i, z, p, how)

    # ------------------------------------------------------------ coding
    def pixel_log_pmf(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x_d = v | z) of every value v of every pixel, float64 (``Decoder.pixel_log_pmf``)."""
        return self.decoder.pixel_log_pmf(self._decoded_layers(z, "pixel_log_pmf (each pixel's pmf given z)"))

    # ------------------------------------------------------------ generation
    @property
    def decoded_dims(self) -> int | None:
        return None if self.decoder_input == "all" else self.sizes[0]

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x | z) for z = (z_1, ..., z_L) of shape (*batch, sum M_l)."""
        return self.decoder(self._decoded_layers(z, "p(x|z)"))

    def _decoded_layers(self, z: torch.Tensor, what: str) -> torch.Tensor:
        """The layers of joint latents z (*batch, sum M_l) that the decoder sees (z_1, or every
        layer), z checked first (``checked_latents``): ``what`` was given them."""
        z = self.checked_latents(z, what)
        return z if self.decoder_input == "all" else self.split(z)[0]

    @torch.no_grad()
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z), ancestrally from the top, (n, sum M_l)."""
        return self.prior().rsample_and_log_prob((n,), generator=generator)[0]

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n draws z ~ p(z) (ancestrally), x ~ p(x | z). Returns (x, mean of p(x | z))."""
        z = self.sample_latents(n, generator)
        px = self.likelihood(z)
        with seeded_by(generator, z.device):
            return px.sample(), px.mean


def _no_draws(
    d: Distribution, sample_shape: torch.Size | list[int] | tuple[int, ...], model: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """None of ``d``'s draws and their log-densities, of shapes (*sample_shape, *batch, D) and
    (*sample_shape, *batch), as torch's distributions draw none (a sample_shape (0,)): the
    layers' reshapes cannot infer a size of no elements ('cannot reshape tensor of 0 elements')."""
    weight = next(model.parameters())
    shape = torch.Size(sample_shape) + d.batch_shape
    return weight.new_zeros(shape + d.event_shape), weight.new_zeros(shape)


class _Layered(Distribution, JointSampler):
    """What the hierarchical posterior and prior share over the concatenated layers: a draw is
    ``rsample_and_log_prob``'s without its log-density, and ``log_prob`` checks z before its
    ``_layers_log_prob``: of shape (*sample, *batch, D) (else torch's 'split_with_sizes expects
    split_sizes to sum exactly to 7' from the layers' split), and scored as log-densities of none,
    shape (*sample, *batch), where it holds no draws (the layers' reshapes cannot infer a size of
    no elements, as in ``_no_draws``)."""

    arg_constraints: ClassVar[dict] = {}
    support = constraints.real_vector
    model: "HierarchicalVAE | DeepTopDownVAE"

    def rsample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        return self.rsample_and_log_prob(sample_shape)[0]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        check_event_width(value, self.event_shape[-1], type(self).__name__, "z", self.batch_shape)
        value = value.to(dtype_of(self.model))  # (another precision's: torch's 'mat1 and mat2 must have the same dtype')
        return value.new_zeros(value.shape[:-1]) if value.numel() == 0 else self._layers_log_prob(value)

    @abstractmethod
    def _layers_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log-density of z, checked by ``log_prob``: (*sample, *batch, D) holding some draws."""


class HierarchicalPosterior(_Layered):
    """q(z | x) of a hierarchical model (``HierarchicalVAE``, ``DeepTopDownVAE``: anything with
    ``path``, ``latent_dim``) over the concatenated layers; ``location()`` is the point
    reached by taking every layer's mean on the way (E[z] has no closed form)."""

    has_rsample = True

    @property
    def location_name(self) -> str:
        """What ``location()`` is, in words: the means are taken in the order the posterior draws its
        layers (a bottom-up posterior's z_2 is the mean given z_1's, below it)."""
        order = "above" if self.model.draws_top_down else "below"
        return f"layer-by-layer posterior means (each layer's given the means {order})"

    def __init__(self, model: "HierarchicalVAE | DeepTopDownVAE", x: torch.Tensor):
        self.model = model
        self.x = x
        super().__init__(torch.Size(x.shape[:1]), torch.Size([model.latent_dim]), validate_args=False)

    @staticmethod
    def _join(draws: list[LayerDraw]) -> torch.Tensor:
        return torch.cat([d.z for d in sorted(draws, key=lambda d: d.index)], -1)

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.Size(sample_shape).numel() == 0:
            return _no_draws(self, sample_shape, self.model)
        draws = self.model.path(self.x, tuple(sample_shape), generator=generator)
        return self._join(draws), log_q_of(draws)

    def _layers_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        sample_shape = tuple(value.shape[: value.dim() - 2])
        draws = self.model.path(self.x, sample_shape, given=value)
        return log_q_of(draws)

    def location(self) -> torch.Tensor:
        """The point reached by taking each layer's mean on the way down (or up): a
        representative point for reconstructions and plots. E[z] has no closed form."""
        return self._join(self.model.path(self.x, means=True))


class HierarchicalPrior(_Layered):
    """p(z) = p(z_L) prod_{l<L} p(z_l | z_{l+1}) of a hierarchical model (with ``descend`` and
    ``log_prob_below``) over the concatenated layers; reparameterized
    where the top prior is (not a mixture's component choice)."""

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]  # read-only here: the top prior's
        return bool(getattr(self.top, "has_rsample", False))

    def __init__(self, model: "HierarchicalVAE | DeepTopDownVAE", top: Distribution):
        self.model = model
        self.top = top
        super().__init__(torch.Size(), torch.Size([model.latent_dim]), validate_args=False)

    def rsample_and_log_prob(
        self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size(), generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.Size(sample_shape).numel() == 0:
            return _no_draws(self, sample_shape, self.model)
        device = next(self.model.parameters()).device
        z_top, log_p = rsample_and_log_prob(self.top, tuple(sample_shape), generator, device=device)
        z, log_p_below = self.model.descend(z_top, generator)
        return z, log_p + log_p_below

    def _layers_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.top.log_prob(self.model.split(value)[-1]) + self.model.log_prob_below(value)
