r"""Posterior collapse and prior holes: per-layer diagnostics of any latent variable model.

For data x_1..x_N (a random subset, drawn with a seed) and each stochastic layer z_l (a model
with one latent variable has one layer, ``z``):

- **KL** (nats): the mean over x of the layer's ELBO term, KL(q(z_l | .) || p(z_l | z_{l+1})),
  in closed form given one ancestral posterior draw of the layers it conditions on (a one-draw
  estimate where no closed form applies); **per dimension** where q and p are diagonal Gaussians.
- **Active units** (Burda et al. 2016): dimension u is active when Cov_x(E_q[z_u | x]) > 0.01, with
  E_q taken at the posterior's location (a hierarchical posterior: each layer's mean on the way).
- **Mutual information** I(x; z_l) under the encoder's joint q(x, z_l) = p_data(x) q(z_l | x),
  by the nested Monte Carlo (aggregate-posterior) estimator

      I ~ 1/N sum_m [ log q^(z_l^m | x_m) - log 1/N sum_n q^(z_l^m | x_n) ],   z_l^m ~ q(z_l | x_m),

  where q^(z_l | x_n) = 1/S sum_s q(z_l | x_n, pa_s) averages the layer's conditional over S
  posterior draws pa_s of the layers it depends on (exact, S = 1, for a layer of x alone). For a
  layer that conditions on others there are two estimates (``mutual_info`` and
  ``mutual_info_apart``): z_l^m one of the S draws, whose own term counts its own component (high,
  by up to log S: past the layer's KL for a collapsed layer), and z_l^m drawn apart, its own term
  of 8 S draws (low, by the Jensen gap of the log of a finite mixture), floored at 0; the two
  close in as S grows. It is consistent as N and S grow; for finite N it cannot exceed log N (Hoffman & Johnson
  2016; He et al. 2019 use the same aggregate estimate). For a layer of x alone it is unbiased for the N
  datapoints' own (empirical) distribution, but of the data distribution's I(x; z) its expectation
  is a lower bound at every N, not only near log N (the InfoNCE bound: van den Oord et al. 2018,
  Poole et al. 2019): q(z|x) = N(0.8 x, 0.36) on x ~ N(0, I_2), I = 1.022, reads 0.385 at N = 2,
  0.854 at N = 10 and 0.987 at N = 50 on average.
- **Marginal KL** (the prior hole), for the top layer, whose prior p(z_L) is the model's prior:
  KL(q(z_L) || p(z_L)) with q(z_L) = 1/N sum_n q(z_L | x_n), estimated on the same draws as
  1/N sum_m [log q^(z_L^m) - log p(z_L^m)], unbiased for that mixture of N; of the data
  distribution's aggregate posterior it is, in expectation, an upper bound (KL is convex in q(z),
  which the mixture of N is on average): in the example above q(z) = p(z), yet it reads 0.69 at
  N = 2, 0.19 at N = 10 and 0.04 at N = 50 on average. With the mean KL it obeys E_x KL(q(z|x) || p(z)) =
  I(x; z) + KL(q(z) || p(z)) (Hoffman & Johnson 2016), which the report shows as a check where
  the layer's ELBO term is that mean KL: a top layer of x alone (a bottom-up posterior's top layer
  conditions on the layer below, and its term, E KL(q(z_L | z_{L-1}) || p), is larger). On these
  estimates the aggregate terms cancel: the gap is 1/N sum_m [KL_m - log q(z^m | x_m) + log p(z^m)],
  of mean 0 over the posterior draws, whatever N, with the standard error ``identity_stderr``; a gap
  of several standard errors points to a KL column that disagrees with the densities. Where the
  KL has no closed form it is that log-ratio at the same draws (``kl_one_draw``): the two sides
  agree by construction, and there is no check.
- **What the pairs cost**: the aggregate terms score every draw under every datapoint's q, N^2 S
  values: matrix products for a Gaussian q, but a flow posterior scores a point it did not draw by
  its data -> base direction, an IAF's one pass a latent and layer (on a CPU, some 250 pairs a
  second for 32 latents and 4 layers). ``pair_passes`` caps N^2 S times those passes (N (N + H) S
  at the top, whose H hole draws are scored under every datapoint's q too); past it a
  layer's I(x; z) (and at the top the marginal KL and the holes) are left out, and ``skipped``
  says why and what -n would fit.
- **Hole draws**: z_L ~ p(z_L) scored by log q^(z_L) - log p(z_L); ``hole_fraction`` is the share
  of prior draws where the aggregate posterior has less than a tenth of the prior's density,
  and the draws with the lowest ratio are decoded (the lower layers drawn from their priors).
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import torch
from torch.distributions import Distribution, Independent, Normal, kl_divergence

from dgmkit._modes import evaluates, needs_kind
from dgmkit.distributions import kl_per_dimension, location
from dgmkit.distributions.flow import FlowDistribution
from dgmkit.distributions.sampling import rsample_and_log_prob
from dgmkit.errors import DataError, EvaluationError, generator_seed, whole_at_least
from dgmkit.evaluation.metrics import standard_error, unit_variance
from dgmkit.models.base import LatentVariableModel

if TYPE_CHECKING:
    from dgmkit.models.hvae import HierarchicalVAE
    from dgmkit.models.vdvae import DeepTopDownVAE

__all__ = [
    "LayerReport",
    "Diagnosis",
    "diagnose",
    "aggregate_log_density",
    "aggregate_marginal",
    "ACTIVE_THRESHOLD",
    "DIAGNOSTIC_ESTIMATORS",
    "PAIR_PASSES",
]

ACTIVE_THRESHOLD = 0.01
HOLE_RATIO = 0.1  # a prior draw is in a hole where q^(z) < HOLE_RATIO p(z)
PAIR_PASSES = 1 << 24  # pairs x S x a flow posterior's passes a layer's aggregate terms may cost (module docstring)

DIAGNOSTIC_ESTIMATORS = {
    "kl": "mean over x of the layer's ELBO term: closed-form KL given one posterior draw of the layers above "
    "(a one-draw estimate where none applies)",
    "active_units": f"Cov_x(E_q[z_u|x]) > {ACTIVE_THRESHOLD} at the posterior's location (Burda et al. 2016)",
    "mutual_info": "nested Monte Carlo: 1/N sum_m [log q^(z^m|x_m) - log 1/N sum_n q^(z^m|x_n)], q^ averaging the "
    "layer's conditional over S posterior draws of the layers it depends on, z^m one of them (for such a layer its own "
    "term is high, by up to log S; mutual_info_apart: z^m drawn apart and its own q^ of 8 S draws, that term low by "
    "Jensen's gap, floored at 0: the two close in as S grows); at most log N; for a layer of x alone unbiased for "
    "the N datapoints, and of the data distribution's I(x;z) a lower bound in expectation at every N (InfoNCE's), "
    "tightening as N grows",
    "marginal_kl": "KL(q(z_L)||p(z_L)) with q(z_L) the mixture 1/N sum_n q(z_L|x_n), on the same draws: unbiased for "
    "that mixture of N, and of the data distribution's aggregate posterior an upper bound in expectation at every N "
    "(a mixture of few datapoints is spikier), tightening as N grows",
    "hole_fraction": f"share of z ~ p(z_L) with q^(z) < {HOLE_RATIO} p(z), q^ the mixture of N (high where it is spiky)",
}


@dataclass
class LayerReport:
    """One stochastic layer's diagnostics (index 0 next to x)."""

    name: str
    index: int
    size: int
    kl: float
    active_units: int
    mutual_info: float | None
    kl_per_dim: list[float] | None
    mean_variance: list[float]
    # a layer that conditions on others: I(x; z_l) with its own draw apart from the S (see DIAGNOSTIC_ESTIMATORS)
    mutual_info_apart: float | None = None
    # a KL without a closed form: the mean of log q - log p at one posterior draw per datapoint; or
    # (kl_at_draw) one in closed form given one draw of the layers that the layer's q or p conditions on
    # (a top-down stack's lower layers, a bottom-up stack's upper ones). Either is a random estimate
    # of the layer's ELBO term, with its standard error over the datapoints (their spread and the
    # draws'). None for a KL exact given the data: a single layer, or a top layer of x alone
    kl_one_draw: bool = False
    kl_stderr: float | None = None
    kl_at_draw: bool = False
    # I(x; z_l)'s Monte Carlo standard error: the spread of its datapoints' terms (one draw each) over sqrt(N)
    mutual_info_stderr: float | None = None


@dataclass
class Diagnosis:
    layers: list[LayerReport]
    n: int
    samples: int
    marginal_kl: float | None = None
    top_mean_kl: float | None = None
    identity_stderr: float | None = None  # of mean KL - I - marginal KL, over the posterior draws (module docstring)
    marginal_kl_stderr: float | None = None  # the spread of its draws' terms log q(z) - log p(z) over sqrt(N)
    kl_one_draw: bool = False  # the top layer's KL is log q - log p at its draws: the identity holds by construction
    hole_fraction: float | None = None
    skipped: str | None = None  # why the aggregate terms of a layer were left out (their cost: ``pair_passes``)
    hole_z: torch.Tensor | None = field(default=None, repr=False)  # joint z of the deepest holes
    typical_z: torch.Tensor | None = field(default=None, repr=False)  # joint z of prior draws q covers best

    @property
    def active_units(self) -> int:
        return sum(layer.active_units for layer in self.layers)

    def metrics(self) -> dict:
        """The compact per-epoch form for metrics.jsonl."""
        out = {
            "layer_kl": [round(layer.kl, 4) for layer in self.layers],
            "layer_active_units": [layer.active_units for layer in self.layers],
            "layer_mutual_info": [None if la.mutual_info is None else round(la.mutual_info, 4) for la in self.layers],
        }
        if self.marginal_kl is not None:
            out["marginal_kl"] = round(self.marginal_kl, 4)
        if self.hole_fraction is not None:
            out["hole_fraction"] = round(self.hole_fraction, 4)
        return out

    def to_json(self) -> dict:
        return {
            "n": self.n,
            "samples": self.samples,
            "active_units": self.active_units,
            "marginal_kl": self.marginal_kl,
            "top_mean_kl": self.top_mean_kl,
            "identity_stderr": self.identity_stderr,
            "marginal_kl_stderr": self.marginal_kl_stderr,
            "kl_one_draw": self.kl_one_draw,
            "hole_fraction": self.hole_fraction,
            "skipped": self.skipped,
            "estimators": DIAGNOSTIC_ESTIMATORS,
            "layers": [vars(layer) for layer in self.layers],
        }


# ---------------------------------------------------------------- aggregate densities
def _normal_cross_log_density(loc: torch.Tensor, scale: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """z (A, M) -> (A, J): log N(z_a; loc_j, diag scale_j^2) for every pair, loc/scale (J, M), by
    two matrix products (no (A, J, M) tensor); the terms of the J Gaussians are computed once."""
    loc, scale = loc.double(), scale.double()
    prec = scale.pow(-2)
    prec_t, weighted_t = prec.T.contiguous(), (loc * prec).T.contiguous()
    const = -scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi) - 0.5 * (loc.pow(2) * prec).sum(-1)

    def log_density(z: torch.Tensor) -> torch.Tensor:
        z = z.double()
        return const - 0.5 * (z.pow(2) @ prec_t - 2 * z @ weighted_t)

    return log_density


def _diagonal_parts(q: Distribution) -> tuple[torch.Tensor, torch.Tensor] | None:
    if isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1:
        return q.base_dist.loc, q.base_dist.scale
    return None


_BLOCK_VALUES = 1 << 23  # float64 values of one block of log q(z_a | x_n) terms (64 MiB), at most


def _aggregate_blocks(z: torch.Tensor, q: Distribution, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
    """(a, block): rows a.. of log q^(z_a | x_n), each block (A', N) (see ``aggregate_log_density``),
    A' at most ``chunk`` and chosen so that a block's intermediate values (A' x S x N, times the
    event's size where q has no diagonal-Gaussian form) stay within ``_BLOCK_VALUES``: memory of a
    block does not grow with A, and with S and N only past one row a block."""
    parts = _diagonal_parts(q)
    batch = q.batch_shape
    if len(batch) == 1:
        batch = torch.Size([1, *batch])
    s, n = batch
    per_row = s * n
    if parts is not None:
        loc, scale = (t.reshape(s, n, -1) for t in parts)
        if s > 1 and loc.stride(0) == 0 and scale.stride(0) == 0:  # the same q for every draw
            loc, scale, s = loc[:1], scale[:1], 1
        cross = _normal_cross_log_density(loc.reshape(-1, loc.shape[-1]), scale.reshape(-1, loc.shape[-1]))
        per_row = s * n
    else:
        per_row *= max(1, math.prod(z.shape[1:]))  # log_prob broadcasts (A', S, N, *event) first
    rows = max(1, min(chunk, _BLOCK_VALUES // per_row))
    for a in range(0, len(z), rows):
        za = z[a : a + rows]
        if parts is not None:
            lp = cross(za.flatten(1)).reshape(len(za), s, n)
        else:
            shape = (len(za),) + (1,) * len(q.batch_shape) + tuple(za.shape[1:])
            lp = q.log_prob(za.reshape(shape)).double().reshape(len(za), -1, n)
        yield a, torch.logsumexp(lp, 1) - math.log(lp.shape[1])


def aggregate_log_density(z: torch.Tensor, q: Distribution, chunk: int = 256) -> torch.Tensor:
    """log q^(z_a | x_n) for every draw a and datapoint n, (A, N): q has batch shape (S, N) (S
    draws of what the layer conditions on, averaged: a mixture of S) or (N,); z is (A, *event).
    Diagonal Gaussians by matrix products; any other q through its broadcasting ``log_prob``.
    (A x N values: for large A and N, ``aggregate_marginal`` reduces them as they are made.)"""
    return torch.cat([block for _, block in _aggregate_blocks(z, q, chunk)])


def aggregate_marginal(
    z: torch.Tensor, q: Distribution, diagonal: bool = False, chunk: int = 256
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log q(z_a) = log mean_n q^(z_a | x_n), (A,), the aggregate posterior's density at each
    draw, and with ``diagonal`` (z_n drawn from q(. | x_n), A = N) each draw's own log q^(z_n | x_n),
    (N,): what ``aggregate_log_density`` gives, reduced block by block (memory O(A), not O(A N))."""
    n = q.batch_shape[-1]
    marginal, own = [], []
    for a, block in _aggregate_blocks(z, q, chunk):
        marginal.append(torch.logsumexp(block, 1) - math.log(n))
        if diagonal:
            own.append(block[torch.arange(len(block)), torch.arange(a, a + len(block))])
    return torch.cat(marginal), torch.cat(own) if diagonal else None


# ---------------------------------------------------------------- layers of a model
@dataclass
class _Layer:
    name: str
    size: int
    kl: torch.Tensor  # (N,)
    kl_dims: torch.Tensor | None  # (N, M)
    loc: torch.Tensor  # (N, *event)
    q_many: Distribution | None  # batch (S, N) or (N,)
    # (N, *event): one draw from the layer's marginal q(z_l | x_n), drawn apart from the S draws of
    # q_many (one of them counts its own component in q^(z_l | x_n): I(x; z_l) up to log S high)
    z: torch.Tensor
    of_x: bool = True  # q(z_l | x) of x alone (not of layers drawn below it: a bottom-up posterior's top)
    # log q^(z_l | x_n) at z, from OWN_DRAWS x S draws of what the layer conditions on (None: of x alone, exact)
    own_log_q: torch.Tensor | None = None
    z_among: torch.Tensor | None = None  # (N, *event): a conditional layer's draw among the S (the high estimate's)
    kl_one_draw: bool = False  # the KL is log q - log p at the draw z (no closed form), not its expectation
    kl_at_draw: bool = False  # a closed-form KL given one draw of the layers that q or p of this one condition on


def _stack(model: LatentVariableModel) -> "HierarchicalVAE | DeepTopDownVAE":
    """A model with ``has_layers``: one of the stacks of stochastic layers."""
    return cast("HierarchicalVAE | DeepTopDownVAE", model)


def _hierarchical_layers(
    model: "HierarchicalVAE | DeepTopDownVAE", x: torch.Tensor, samples: int, g: torch.Generator, bracket: bool
) -> list[_Layer]:
    one = sorted(model.path(x, generator=g), key=lambda d: d.index)
    means = sorted(model.path(x, means=True), key=lambda d: d.index)
    many = sorted(model.path(x, (samples,), generator=g), key=lambda d: d.index)
    top = model.top()
    layers = []
    alone = [s.of_x for s in many]  # declared by the model: a test of the values misreads S = 1
    own = _own_log_densities(model, x, samples, g, one, alone) if bracket else [None] * len(many)
    for d, m, s, o, a in zip(one, means, many, own, alone):
        p = top if d.p is None else d.p
        closed = model.closed_form_kl(d.index)
        dims = kl_per_dimension(d.q, p) if closed else None
        kl: torch.Tensor | None
        one_draw = False
        if dims is not None:
            kl = dims.sum(-1)
        else:
            kl = None
            if closed:
                try:
                    kl = kl_divergence(d.q, p)
                except NotImplementedError:
                    pass
            one_draw = kl is None
            kl = d.q.log_prob(d.z) - p.log_prob(d.z) if kl is None else kl
        name = f"z{d.index + 1}"
        among = None if a else s.z[0]
        at_draw = not one_draw and (d.p is not None or not a)  # (p(z_l | z_above) or q(z_l | x, z_other) at a draw)
        layers.append(_Layer(name, d.z.shape[-1], kl, dims, m.z, s.q, d.z, a, o, among, dims is None and one_draw, at_draw))
    return layers


OWN_DRAWS = 8  # times S: the draws of a conditional layer's q^(z | x_m) at its own datapoint's draw
_OWN_ROWS = 1 << 14  # posterior draws in one pass of those


def _own_log_densities(
    model: "HierarchicalVAE | DeepTopDownVAE",
    x: torch.Tensor,
    samples: int,
    g: torch.Generator,
    one: list,
    alone: list[bool],
) -> list[torch.Tensor | None]:
    """Per layer, log q^(z_l^m | x_m) at each datapoint's own draw z_l^m (drawn apart from the
    mixture: one of its components would count itself, up to log S too high), averaged over
    OWN_DRAWS x S draws of the layers it conditions on (fewer, S, leave log q^ low by Jensen's gap:
    the own term of I(x; z_l) is the one datapoint's mixture, the aggregate's has N of them); None
    for a layer of x alone, whose q is exact (the aggregate's diagonal)."""
    if all(alone):
        return [None] * len(alone)
    draws = OWN_DRAWS * samples
    rows = max(1, _OWN_ROWS // draws)  # datapoints a pass: the draws of a pass stay within _OWN_ROWS
    parts: list[list[torch.Tensor]] = [[] for _ in alone]
    for i in range(0, len(x), rows):
        wide = sorted(model.path(x[i : i + rows], (draws,), generator=g), key=lambda d: d.index)
        for layer, (d, w) in enumerate(zip(one, wide)):
            if not alone[layer]:
                lp = w.q.log_prob(d.z[i : i + rows].unsqueeze(0).expand_as(w.z)).double()  # (S', n)
                parts[layer].append(torch.logsumexp(lp, 0) - math.log(draws))
    return [None if a else torch.cat(p) for a, p in zip(alone, parts)]


def _single_layer(model: LatentVariableModel, x: torch.Tensor, g: torch.Generator) -> list[_Layer]:
    q = model.posterior(x)
    params = [location(q), *(_diagonal_parts(q) or ())]
    if not all(bool(torch.isfinite(t).all()) for t in params):
        raise EvaluationError(
            "the model gives a non-finite posterior (NaN or inf; its weights may be too large): no diagnosis"
        )
    p = model.prior()
    z, log_q = rsample_and_log_prob(q, (), g, reparameterized=False, device=x.device)
    dims = kl_per_dimension(q, p)
    one_draw = False
    if dims is not None:
        kl = dims.reshape(len(x), -1).sum(-1)
    else:
        try:
            kl = kl_divergence(q, p)
        except NotImplementedError:
            kl, one_draw = log_q - p.log_prob(z), True
    # the units counted (``unit_variance``'s, active or not): a categorical posterior's variables, not their classes
    loc = location(q)
    size = loc.shape[1] if loc.dim() > 1 else 1
    return [_Layer("z", size, kl, dims, loc, q, z, kl_one_draw=one_draw)]


# ---------------------------------------------------------------- the report
@evaluates
@torch.no_grad()
def diagnose(
    model: LatentVariableModel,
    x: torch.Tensor,
    samples: int = 16,
    holes: int = 1000,
    shown: int = 16,
    seed: int = 0,
    batch_size: int = 500,
    mutual_info: bool = True,
    bracket: bool = True,
    pair_passes: int | None = PAIR_PASSES,
) -> Diagnosis:
    """The diagnostics of the module docstring on data x (N, *event), N >= 2; ``samples``: S,
    the posterior draws that make each conditional layer's marginal; ``holes``: prior draws scored
    for prior holes (0: none); ``shown``: the deepest holes kept as joint latents for decoding;
    ``mutual_info=False``: KL and active units only (no N x N aggregate: for large N);
    ``bracket=False``: a conditional layer's I(x; z_l) without its second estimate (``mutual_info_apart``);
    ``pair_passes``: the aggregate terms' budget (the module docstring; None: no limit)."""
    needs_kind(model, LatentVariableModel, "diagnose", "a latent variable model, with a prior p(z) and a q(z|x)")
    if len(x) < 2:
        raise DataError(f"the diagnostics need at least two datapoints (a covariance over x), got {len(x)}")
    samples = whole_at_least("samples", samples, 1)
    holes = whole_at_least("holes", holes, 0)  # (-3 drew none, silently; 2.5 met torch.Size's TypeError)
    batch_size = whole_at_least("batch_size", batch_size, 1)
    seed = generator_seed(seed)  # (a NumPy integer failed in manual_seed)
    if pair_passes is not None:
        pair_passes = whole_at_least("pair_passes", pair_passes, 0)
    bracket = bracket and mutual_info  # (no draws beyond the KL's where no I(x; z) is asked for)
    g = torch.Generator(device=x.device).manual_seed(seed)
    hierarchical = model.has_layers
    layers = _layers(model, x, samples, g, batch_size, bracket)
    reports, agg_top, skipped = [], None, []
    for index, layer in enumerate(layers):
        top = index == len(layers) - 1
        left_out = _over_budget(layer, pair_passes, holes if top else None) if mutual_info else None
        report, agg, own = _layer_report(index, layer, mutual_info and left_out is None)
        reports.append(report)
        skipped += [left_out] if left_out else []
        if agg is not None and index == len(layers) - 1:
            agg_top = (layer, agg, own)
    _check_finite(reports)
    out = Diagnosis(reports, len(x), samples, skipped="; ".join(skipped) or None)
    if agg_top is None:
        return out
    top_layer, agg, own = agg_top
    p_top = _stack(model).top() if hierarchical else model.prior()
    _prior_hole(out, top_layer, p_top, agg, own)
    if holes > 0:
        _find_holes(out, model, top_layer, p_top, holes, shown, g, x.device)
    return out


def _check_finite(reports: list[LayerReport]) -> None:
    numbers = [v for r in reports for v in (r.kl, r.mutual_info, *(r.kl_per_dim or ()), *r.mean_variance) if v is not None]
    if not all(math.isfinite(v) for v in numbers):
        raise EvaluationError(
            "the model gives non-finite KL terms, mutual informations or posterior means (NaN or inf; its weights may "
            "be too large): no diagnosis"
        )


def _over_budget(layer: _Layer, pair_passes: int | None, holes: int | None) -> str | None:
    """Why the layer's aggregate terms are left out, or None where they fit ``pair_passes``: a flow
    posterior's pairs each take its passes (a Gaussian's, a discrete q's: elementwise, no limit).
    ``holes``: at the top layer, the prior draws scored under every datapoint's q too (None below)."""
    q = layer.q_many
    if pair_passes is None or not isinstance(q, FlowDistribution):
        return None
    n, extra = len(layer.z), holes or 0
    draws = q.batch_shape.numel() // n  # S: each pair scores the draw under S components
    per_pair = draws * q.log_prob_passes()
    cost = n * (n + extra) * per_pair  # N draws and the prior's draws, each under N datapoints' q
    if cost <= pair_passes:
        return None
    fits = (math.isqrt(4 * (pair_passes // per_pair) + extra**2) - extra) // 2  # the most n of n (n + extra) pairs
    with_holes = " with these hole draws" if extra else ""
    fitting = f"{fits} datapoints fit it" if fits >= 2 else f"not 2 datapoints fit it{with_holes}"
    which = f"I(x; {layer.name}){', the marginal KL and the prior holes' if holes is not None else ''}"
    pairs = f"{n}^2 pairs of draw and datapoint" + (f" and {extra} x {n} of prior draw and datapoint" if extra else "")
    return (
        f"{which} left out: its {pairs} take {per_pair} passes each of the flow posterior (scoring a point it did "
        f"not draw), {cost:,} in all, past the budget of {pair_passes:,}; {fitting}"
    )


def _prior_hole(out: Diagnosis, top_layer: _Layer, p_top: Distribution, agg: torch.Tensor, own: torch.Tensor | None) -> None:
    """The marginal KL of ``out``, and where the top layer's q is of x alone the mean KL it is
    checked against with that check's standard error (the module docstring)."""
    log_p = p_top.log_prob(top_layer.z).double()
    terms = agg - log_p
    out.marginal_kl, out.marginal_kl_stderr = float(terms.mean()), standard_error(terms)
    if not math.isfinite(out.marginal_kl):
        raise EvaluationError("the model gives a non-finite marginal KL (NaN or inf; its weights may be too large)")
    # E_x KL(q(z_L|x) || p) = I + marginal KL: the layer's ELBO term is that mean KL only where q is of x alone
    out.top_mean_kl = out.layers[-1].kl if top_layer.of_x else None
    out.kl_one_draw = top_layer.kl_one_draw
    if out.top_mean_kl is not None and own is not None and not out.kl_one_draw:  # the gap, draw by draw
        gap = top_layer.kl.double() - (own - log_p)
        out.identity_stderr = standard_error(gap)


def _layers(
    model: LatentVariableModel, x: torch.Tensor, samples: int, g: torch.Generator, batch_size: int, bracket: bool
) -> list[_Layer]:
    """Each layer's draws and terms over all of x, gathered batch by batch (a model of one layer:
    in one batch, so that any kind of q keeps its aggregate)."""
    hierarchical = model.has_layers
    size = batch_size if hierarchical else len(x)
    parts: list[list[_Layer]] = []
    for i in range(0, len(x), size):
        xb = x[i : i + size]
        parts.append(
            _hierarchical_layers(_stack(model), xb, samples, g, bracket) if hierarchical else _single_layer(model, xb, g)
        )
    return [_join([p[j] for p in parts]) for j in range(len(parts[0]))]


def _layer_report(
    index: int, layer: _Layer, mutual_info: bool
) -> tuple[LayerReport, torch.Tensor | None, torch.Tensor | None]:
    """One layer's numbers, log q(z) of its aggregate posterior at its own draws, and each draw's
    log q^(z^m | x_m) (both None where not computed: ``mutual_info`` off, or a q whose log_prob does
    not broadcast)."""
    variance = unit_variance(layer.loc)
    mi, agg, own, low, mi_se = None, None, None, None, None
    try:
        log_q = None if layer.q_many is None or not mutual_info else aggregate_marginal(layer.z, layer.q_many, True)
        among = (
            None
            if log_q is None or layer.z_among is None or layer.q_many is None
            else aggregate_marginal(layer.z_among, layer.q_many, True)
        )
    except (RuntimeError, ValueError, NotImplementedError):  # a q whose log_prob does not broadcast
        log_q, among = None, None
    if log_q is not None:
        agg, own = log_q
        terms = cast(torch.Tensor, own) - agg
        if among is not None:  # a layer that conditions on others: its draw among the S, and apart (with more draws)
            terms = cast(torch.Tensor, among[1]) - among[0]
        mi, mi_se = float(terms.mean()), standard_error(terms)
        if among is not None and layer.own_log_q is not None:
            low = max(0.0, float((layer.own_log_q - agg).mean()))
    report = LayerReport(
        name=layer.name,
        index=index,
        size=layer.size,
        kl=float(layer.kl.double().mean()),
        active_units=int((variance > ACTIVE_THRESHOLD).sum()),
        mutual_info=mi,
        kl_per_dim=None if layer.kl_dims is None else layer.kl_dims.double().flatten(1).mean(0).tolist(),
        mean_variance=variance.tolist(),
        mutual_info_apart=low,
        kl_one_draw=layer.kl_one_draw,
        kl_at_draw=layer.kl_at_draw,
        kl_stderr=standard_error(layer.kl) if layer.kl_one_draw or layer.kl_at_draw else None,
        mutual_info_stderr=mi_se,
    )
    return report, agg, own


def _find_holes(
    out: Diagnosis,
    model: LatentVariableModel,
    top_layer: _Layer,
    p_top: Distribution,
    holes: int,
    shown: int,
    g: torch.Generator,
    device: torch.device,
) -> None:
    """The prior-hole numbers of ``out``: ``holes`` draws of the top prior scored against the
    aggregate posterior, and the ``shown`` deepest and most typical of them (descended to the
    bottom layer of a hierarchy), as joint latents for decoding."""
    assert top_layer.q_many is not None  # the caller has its aggregate marginal
    z_p, log_p = rsample_and_log_prob(p_top, (holes,), g, reparameterized=False, device=device)
    ratio = aggregate_marginal(z_p, top_layer.q_many)[0] - log_p.double()
    out.hole_fraction = float((ratio < math.log(HOLE_RATIO)).double().mean())
    order = ratio.argsort()
    k = min(shown, holes)
    deepest, typical = z_p[order[:k]], z_p[order.flip(0)[:k]]
    if model.has_layers:
        deepest, typical = _stack(model).descend(deepest, g)[0], _stack(model).descend(typical, g)[0]
    out.hole_z, out.typical_z = deepest, typical


def _join(parts: list[_Layer]) -> _Layer:
    """One layer's pieces over the data batches, concatenated along the datapoints."""
    first = parts[0]
    q = first.q_many
    if len(parts) > 1 and q is not None:
        q = _cat_distributions(cast("list[Distribution]", [p.q_many for p in parts]))  # every batch's, as the first's
    return _Layer(
        first.name,
        first.size,
        torch.cat([p.kl for p in parts]),
        None if first.kl_dims is None else torch.cat(cast("list[torch.Tensor]", [p.kl_dims for p in parts])),
        torch.cat([p.loc for p in parts]),
        q,
        torch.cat([p.z for p in parts]),
        all(p.of_x for p in parts),
        None if first.own_log_q is None else torch.cat(cast("list[torch.Tensor]", [p.own_log_q for p in parts])),
        None if first.z_among is None else torch.cat(cast("list[torch.Tensor]", [p.z_among for p in parts])),
        first.kl_one_draw,
        first.kl_at_draw,
    )


def _cat_distributions(qs: list[Distribution]) -> Distribution | None:
    """Diagonal Gaussians with batch (S, n_i) or (n_i,) joined along the data dimension; None
    (no mutual information) for other kinds split over batches."""
    found = [_diagonal_parts(q) for q in qs]
    if any(p is None for p in found):
        return None
    parts = cast("list[tuple[torch.Tensor, torch.Tensor]]", found)
    dim = len(qs[0].batch_shape) - 1
    if dim == 1 and all(t.stride(0) == 0 for p in parts for t in p):  # one q of x alone, expanded: keep it so
        loc = torch.cat([p[0][0] for p in parts]).expand(parts[0][0].shape[0], -1, -1)
        scale = torch.cat([p[1][0] for p in parts]).expand(parts[0][0].shape[0], -1, -1)
    else:
        loc = torch.cat([p[0].contiguous() for p in parts], dim)
        scale = torch.cat([p[1].contiguous() for p in parts], dim)
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
