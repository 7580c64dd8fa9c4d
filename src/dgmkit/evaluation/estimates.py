"""How log p(x) is estimated, by the kind a model declares (``models.base``): one estimator
per kind, each returning an ``Estimate`` that says what its numbers are.

- ``exact``: log p(x) from ``log_prob``; a latent variable model with an exact posterior also
  splits it as E_p(z|x)[log p(x|z)] - KL(p(z|x) || p(z)).
- ``importance-sampled``: log (1/k) sum_i p(x, z_i) / q(z_i|x) with k draws per datapoint (the
  chunked reduction of ``objectives.log_importance_weights``), beside the one-sample ELBO split
  into reconstruction and closed-form (or Monte Carlo) KL.
- ``bound``: the same importance-weighted reduction, for a proposal whose estimate is reported
  as a bound (the noise of variational dequantization); its first draw gives a one-sample ELBO.
- ``time-sampled``: a diffusion model's bound (``TimeSampledBound``), no importance sampling:
  for each datapoint the mean of its ``bound_terms`` at k times, drawn for even k as two
  independent stratified sets of k/2, (u_r + 2m/k) mod 1 (else one set), so that the squared
  difference of the two halves' means gives an unbiased variance of each datapoint's estimate
  from the time sampling alone (``terms["time_var"]``).
- ``reconstruction``: no density: log p(x | z = f(x)) only.
- ``order-mixture`` (asked for, not declared: ``dgm eval --orders M``): an any-order model
  (``AnyOrderModel``) scored exactly as the uniform mixture of M orders of the entries, drawn
  once on the CPU from the evaluation's seed and the same for every datapoint (they are part of
  the model scored), log (1/M) sum_j p(x | sigma_j); its ELBO is the mean of the M per-order
  log-likelihoods, a lower bound on it (Jensen).

What a model reports beyond these it adds itself (``GenerativeModel.evaluation_terms``).
"""

import hashlib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

import torch

from dgmkit import distributed
from dgmkit._modes import evaluates
from dgmkit._rng import checked_generator, seeded, seeded_by
from dgmkit.distributions import location
from dgmkit.errors import EvaluationError, generator_seed, whole_at_least
from dgmkit.evaluation.metrics import observed_entries
from dgmkit.models import (
    AnyOrderModel,
    Autoencoder,
    EnumeratedELBO,
    ExactLikelihoodModel,
    GenerativeModel,
    LatentVariableModel,
    ModelELBO,
    TimeSampledBound,
    VariationalModel,
)
from dgmkit.models.terms import refuse_non_finite
from dgmkit.objectives import ELBO, importance_sampled_log_likelihood
from dgmkit.objectives.importance import CPU_CHUNK_BYTES, GPU_CHUNK_BYTES

__all__ = [
    "Estimate",
    "ESTIMATORS",
    "estimate",
    "log_likelihoods",
    "check_log_volume",
    "draw_orders",
    "OrderStore",
    "MAX_ORDERS",
]

MAX_ORDERS = 4096  # orders of an order mixture (``dgm eval --orders``, ``evaluate(orders=)``)


@dataclass
class Estimate:
    """Per-datapoint tensors (N,) in nats of the data as the model scores them.

    ``log_px``: the estimate of log p(x) (None for ``reconstruction``); ``k``: the importance
    samples behind it (0 if exact); ``terms``: ``elbo``, ``recon`` and ``kl`` where the model
    has them."""

    kind: str
    log_px: torch.Tensor | None
    k: int = 0
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


def _batches(x: torch.Tensor, batch_size: int):
    return (x[i : i + batch_size] for i in range(0, len(x), batch_size))


def _fitting(model: VariationalModel, x: torch.Tensor, batch_size: int) -> int:
    """``batch_size``, or fewer where the model says how many rows of p(x|z) fit in memory."""
    rows = model.importance_rows(GPU_CHUNK_BYTES if x.device.type == "cuda" else CPU_CHUNK_BYTES)
    return batch_size if rows is None else max(1, min(batch_size, rows))


@torch.no_grad()
def _exact(
    model: ExactLikelihoodModel, x: torch.Tensor, k: int, generator: torch.Generator | None, batch_size: int
) -> Estimate:
    log_px = torch.cat([model.log_prob(b).double() for b in _batches(x, batch_size)])
    terms = {}
    if isinstance(model, LatentVariableModel):
        kl = torch.cat(
            [torch.distributions.kl_divergence(model.posterior(b), model.prior()) for b in _batches(x, batch_size)]
        )
        terms = {"elbo": log_px, "recon": log_px + kl.double(), "kl": kl.double()}
    return Estimate("exact", log_px, 0, terms)


@torch.no_grad()
def elbo_terms(model: LatentVariableModel, x: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Each datapoint's ``elbo``, ``recon`` and ``kl`` (float64): the model's own bound where it has
    one (``ModelELBO``), else the one-draw ELBO (the KL in closed form where it has one), in
    batches of at most ``batch_size``."""
    if isinstance(model, ModelELBO):  # the model's own bound (a discrete latent summed out, per-layer KLs)
        size = batch_size if isinstance(model, EnumeratedELBO) else _fitting(model, x, batch_size)
        own = [model.elbo_terms(b) for b in _batches(x, size)]
        return {k: torch.cat([t[k] for t in own]).double() for k in own[0]}
    parts = [ELBO(1)(model, b) for b in _batches(x, _fitting(model, x, batch_size))]
    return {
        "elbo": torch.cat([t.elbo for t in parts]).double(),
        "recon": torch.cat([t.log_px_z for t in parts]).double(),
        "kl": torch.cat([t.kl for t in parts]).double(),
    }


@torch.no_grad()
def _importance_sampled(
    model: LatentVariableModel, x: torch.Tensor, k: int, generator: torch.Generator | None, batch_size: int
) -> Estimate:
    terms = elbo_terms(model, x, batch_size)
    if k < 1:  # no sampling asked for: the ELBO is all there is, reported as the bound it is
        return Estimate("bound", terms["elbo"], 1, terms)
    log_px = cast(torch.Tensor, importance_sampled_log_likelihood(model, x, k=k, generator=generator)).double()
    return Estimate("importance-sampled", log_px, k, terms)


@torch.no_grad()
def _bound(model: VariationalModel, x: torch.Tensor, k: int, generator: torch.Generator | None, batch_size: int) -> Estimate:
    k = max(1, k)
    log_px, first = importance_sampled_log_likelihood(
        model, x, k=k, batch_size=100, chunk_size=1600, generator=generator, first=True
    )
    terms = {"elbo": first.double()}
    if model.point_mass_posterior:  # (a VQ-VAE's code grid): ELBO = log p(x|z) + log p(z)
        parts = [model.log_joint(b, location(model.posterior(b))) for b in _batches(x, batch_size)]
        terms["recon"] = torch.cat([p.log_px_z for p in parts]).double()
        terms["kl"] = -torch.cat([p.log_pz for p in parts]).double()  # KL(delta || p) = -log p(z)
    return Estimate("bound", log_px.double(), k, terms)


@torch.no_grad()
def _time_sampled(
    model: TimeSampledBound, x: torch.Tensor, k: int, generator: torch.Generator | None, batch_size: int
) -> Estimate:
    k = max(1, k)
    halves = 2 if k > 1 and k % 2 == 0 else 1  # two independent stratified sets give an honest standard error
    per = k // halves
    batch_size = max(1, min(batch_size, 100))  # the reconstruction term holds B x D x L logits
    names = ("prior", "recon", "diffusion")
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in (*names, "half_diff")}
    for b in _batches(x, batch_size):
        acc = {name: torch.zeros(len(b), dtype=torch.float64, device=b.device) for name in names}
        half_totals = []
        for _ in range(halves):
            u = torch.rand(len(b), generator=generator, device=generator.device if generator is not None else "cpu")
            total = torch.zeros(len(b), dtype=torch.float64, device=b.device)
            for m in range(per):
                terms = model.bound_terms(b, torch.remainder(u + m / per, 1.0).to(b.device))
                for name in names:
                    acc[name] += terms[name].double()
                    total += terms[name].double()
            half_totals.append(total / per)
        for name in names:
            parts[name].append(acc[name] / k)
        parts["half_diff"].append(half_totals[0] - half_totals[-1])
    mean = {name: torch.cat(v) for name, v in parts.items()}
    elbo = -(mean["prior"] + mean["recon"] + mean["diffusion"])
    terms = {
        "elbo": elbo,
        "recon": -mean["recon"],
        "kl": mean["prior"] + mean["diffusion"],
        "prior_kl": mean["prior"],
        "diffusion_kl": mean["diffusion"],
    }
    if halves == 2:  # Var((A + B) / 2) = E[(A - B)^2] / 4 for independent, identically distributed halves A, B
        terms["time_var"] = mean["half_diff"].square() / 4
    return Estimate("time-sampled", elbo, k, terms)


@torch.no_grad()
def _reconstruction(
    model: Autoencoder, x: torch.Tensor, k: int, generator: torch.Generator | None, batch_size: int
) -> Estimate:
    recon = torch.cat([model.likelihood(location(model.posterior(b))).log_prob(b) for b in _batches(x, batch_size)])
    return Estimate("reconstruction", None, 0, {"recon": recon.double()})


def draw_orders(m: int, d: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """M orders of D entries, (M, D), each a uniform random permutation. Draw them from a CPU
    generator (as ``evaluate`` does from its seed): CUDA's permutations differ from the CPU's, and
    the orders are part of the model scored."""
    if m < 1 or d < 1:
        raise ValueError(f"need at least one order of at least one entry, got M = {m}, D = {d}")
    checked_generator(generator)
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.stack([torch.randperm(d, generator=generator, device=device) for _ in range(m)])


class OrderStore(Protocol):
    """Where the per-order log-likelihoods of a mixture are kept as they are done (``dgm eval
    --orders`` keeps them in the run folder, so that a killed evaluation goes on where it
    stopped): ``get`` gives order j's (N,) values if stored for this very order, else None."""

    def get(self, j: int, order: torch.Tensor) -> torch.Tensor | None: ...

    def put(self, j: int, order: torch.Tensor, values: torch.Tensor) -> None: ...


@torch.no_grad()
def _order_mixture(
    model: GenerativeModel, x: torch.Tensor, orders: torch.Tensor, batch_size: int, store: OrderStore | None = None
) -> Estimate:
    if not isinstance(model, AnyOrderModel):
        raise EvaluationError(f"{type(model).__name__} is not an any-order model: it has no likelihood in an order")
    per = []
    for j, order in enumerate(orders):  # one order at a time, batch_size datapoints a pass
        values = None if store is None else store.get(j, order)
        if values is None:
            values = torch.cat([model.order_log_likelihood(b, order[None]) for b in _batches(x, batch_size)])[:, 0]
            if store is not None:
                store.put(j, order, values)
        per.append(values.double().to(x.device))
    stacked = torch.stack(per, 1)  # (N, M)
    m = len(orders)
    return Estimate("order-mixture", torch.logsumexp(stacked, 1) - math.log(m), m, {"elbo": stacked.mean(1)})


ESTIMATORS: dict[str, Callable[..., Estimate]] = {
    "exact": _exact,
    "importance-sampled": _importance_sampled,
    "bound": _bound,
    "time-sampled": _time_sampled,
    "reconstruction": _reconstruction,
}


@evaluates
def estimate(
    model: GenerativeModel,
    x: torch.Tensor,
    k: int = 5000,
    generator: torch.Generator | None = None,
    batch_size: int = 1000,
    orders: torch.Tensor | None = None,
    order_store: OrderStore | None = None,
) -> Estimate:
    """Estimate log p(x) for data x as the model declares (``model.estimate_kind``), or, given
    ``orders`` (M, D), as the exact mixture of those orders of an any-order model (under torchrun
    rank 0's orders on every rank: one model; ``order_store`` keeps each order's values as they
    are done, in a single process only). Under torchrun each rank estimates its share of the
    datapoints (with its own random stream) and every rank gets all of them back, in order: ranks
    given different data or k are refused alike, by name."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"k (importance samples) must be an integer >= 0 (0: the ELBO alone), got {k!r}")
    batch_size = whole_at_least("batch_size", batch_size, 1)
    checked_generator(generator)  # (an exact estimate draws nothing)
    fn = ESTIMATORS[model.estimate_kind]
    ctx = distributed.current()
    if ctx.parallel:
        _same_on_every_rank(x, k, None if orders is None else tuple(orders.shape))
    if orders is not None:
        if orders.dim() != 2 or len(orders) == 0:
            raise ValueError(f"orders must be (M, D) with M >= 1, got shape {tuple(orders.shape)}")
        drawn = orders.cpu()
        store = order_store
        if distributed.current().parallel:
            drawn, store = cast(torch.Tensor, distributed.broadcast_object(drawn)), None

        def fn(model: GenerativeModel, x: torch.Tensor, k: int, g: torch.Generator | None, bs: int) -> Estimate:
            return _order_mixture(model, x, drawn, bs, store)

    if not ctx.parallel or len(x) < ctx.world_size:
        return fn(model, x, k, generator, batch_size)
    seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device)) if generator is not None else 0
    own = torch.Generator(device=x.device).manual_seed((seed + 7_919 * ctx.rank) % 2**62)
    with seeded_by(torch.Generator().manual_seed((seed + 104_729 * ctx.rank) % 2**62), x.device):
        est = fn(model, x[distributed.shard(len(x), ctx)], k, own, batch_size)
    log_px = None if est.log_px is None else distributed.gather_rows(est.log_px)
    terms = {name: distributed.gather_rows(t) for name, t in est.terms.items()}
    return Estimate(est.kind, log_px, est.k, terms)


def _same_on_every_rank(x: torch.Tensor, k: int, orders: tuple[int, ...] | None) -> None:
    """Refuses, on every rank alike, data-parallel ranks given different datapoints, k or shape of
    orders (rank 0's are taken by all: ranks of which one gave none waited for ever): each
    estimates its share of its own x, so rows of other data would be gathered as these (the
    idiom of each rank passing its own part dropped half of them), and ranks of which one holds
    fewer rows than there are ranks (estimated whole, not shared) wait for the others for ever."""
    digest = hashlib.sha256(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
    mine = {"shape": tuple(x.shape), "dtype": str(x.dtype), "k": k, "orders": orders, "data": digest[:12]}
    ranks = cast(list[dict], distributed.all_gather_object(mine))
    differ = [name for name in mine if len({repr(r[name]) for r in ranks}) > 1]
    if differ:
        said = "; ".join(f"{n}: " + ", ".join(f"rank {i} {r[n]}" for i, r in enumerate(ranks)) for n in differ)
        raise ValueError(
            f"the data-parallel ranks were given different data to estimate ({said}): give every rank the same "
            "datapoints, k and orders (each estimates its share of them and gets all back, in order)"
        )


def check_log_volume(model: GenerativeModel, log_volume: float) -> None:
    """Refuses a ``log_volume`` that is not finite (every number would be NaN), or one given to a
    model of discrete values (``discrete_data``), whose probabilities are of the integers already:
    the shift would report impossible numbers (more bits/dim than the levels hold)."""
    if not math.isfinite(log_volume):
        raise ValueError(f"log_volume (log L per dimension of the dequantization bins) must be finite, got {log_volume}")
    if log_volume != 0.0 and model.discrete_data:
        raise ValueError(
            f"log_volume {log_volume:g} is for a density of dequantized data; {type(model).__name__} gives "
            "probabilities of the discrete values themselves, which no bin volume shifts: leave it 0"
        )


@evaluates
def log_likelihoods(
    model: GenerativeModel,
    x: torch.Tensor,
    *,
    log_volume: float = 0.0,
    iw_samples: int = 5000,
    seed: int = 0,
    batch_size: int = 1000,
) -> torch.Tensor:
    """(N,) float64 on the CPU: each input's estimate of log p(x) as the model declares it, in
    nats of the integer data (what ``dgm score`` writes and ``dgm ood`` scores).

    ``x`` is what the likelihood scores (the run's transform applied); ``log_volume``: log L per
    dimension for uniformly dequantized data (``DataTransform.log_volume``), subtracted once per
    observed entry of each input (NaN entries are missing: log p(x_o)) so that the numbers are of
    the integers; ``iw_samples``: importance samples (or times) where the estimate is sampled,
    drawn from ``seed`` (``_rng.seeded``). A model without a density, or a non-finite value, is
    refused by name. The options are keywords only: ``evaluate`` takes ``iw_samples`` before
    ``log_volume``, and a positional call in the other order would score silently wrong numbers."""
    if model.estimate_kind == "reconstruction":
        raise EvaluationError(
            "the model defines no density over x (a reconstruction score only): there is no log-likelihood to score"
        )
    check_log_volume(model, log_volume)
    seed = generator_seed(seed)  # (a NumPy integer failed in manual_seed)
    with seeded(seed, x.device) as g:
        log_px = estimate(model, x, iw_samples, g, batch_size).log_px
    assert log_px is not None  # only a reconstruction score has none: refused above
    refuse_non_finite("log-likelihood", log_px)
    return log_px.double().cpu() - observed_entries(x) * log_volume
