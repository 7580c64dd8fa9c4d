r"""Deep latent variable models on incomplete data: the MIWAE bound and imputation by importance
sampling (Mattei & Frellsen 2019).

Missing entries are NaN in x; the mask m marks the observed ones. The encoder sees the data
with missing entries set to 0 (zero imputation, ``VAE.posterior``), and the likelihood is
evaluated on the observed entries only (``distributions.observed_log_prob``), which a decoder
factorized over pixels allows:

    log p(x_o) >= E log (1/K) sum_k p(x_o | z_k) p(z_k) / q(z_k | x_o),   z_k ~ q(z | x_o),

the importance-weighted bound of the observed part (MIWAE), tight as K grows. Imputation by
self-normalized importance sampling with the same draws: w_k proportional to
p(x_o | z_k) p(z_k) / q(z_k | x_o), the single imputation E[x_m | x_o] ~ sum_k w_k E[x_m | z_k]
(for a categorical entry, the most probable value of sum_k w_k p(x_m | z_k)), and multiple imputations by drawing k with
probabilities w (sampling importance resampling) and then x_m ~ p(x_m | z_k). The draws are
made in chunks, reduced as they come, so that memory stays that of one chunk for any K. A model
that gives E[x_m | x_o] in closed form (``exact_imputation``: PPCA) gives the single imputation
itself, and its multiple imputations are independent draws of its exact p(z | x_o) (no importance
draws: K is unused).
"""

import math
from collections.abc import Callable

import torch
from torch.distributions import Distribution

from dgmkit._modes import evaluates
from dgmkit._rng import checked_generator, seeded_by
from dgmkit.data.missing import observed
from dgmkit.errors import whole_at_least
from dgmkit.models import LatentVariableModel
from dgmkit.models.terms import refuse_non_finite
from dgmkit.objectives.base import BoundTerms, Objective
from dgmkit.objectives.importance import log_importance_weights

__all__ = ["MIWAE", "MIWAETerms", "observed_mask", "miwae_log_weights", "impute", "point_statistics"]

observed_mask = observed  # True where x is observed (not NaN)


def miwae_log_weights(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    generator: torch.Generator | None = None,
    q: Distribution | None = None,
) -> tuple[torch.Tensor, torch.Tensor, Distribution]:
    """k draws z ~ q(z | x_o): their log weights log p(x_o|z) + log p(z) - log q(z|x_o) (k, B),
    the draws, and p(x | z) at them (batch shape (k, B)): ``log_importance_weights``, whose
    likelihood term is already of the observed entries only (``LatentVariableModel.log_joint``)."""
    w = log_importance_weights(model, x, k, q=q, generator=generator, keep_likelihood=True)
    assert w.px is not None  # keep_likelihood
    return w.log_w, w.z, w.px


MIWAETerms = BoundTerms  # the MIWAE bound's terms (its former name)


class MIWAE(Objective[LatentVariableModel]):
    """The MIWAE bound with ``k`` draws per datapoint (NaN entries of x are missing)."""

    score = "bound"
    score_label = "MIWAE bound"
    handles_missing = True

    def __init__(self, k: int = 5):
        self.k = whole_at_least("k", k, 1)

    def __call__(self, model: LatentVariableModel, x: torch.Tensor, beta: float = 1.0) -> BoundTerms:
        log_w, _, _ = miwae_log_weights(model, x, self.k)
        bound = torch.logsumexp(log_w, 0) - math.log(self.k)
        return BoundTerms(-bound, bound)


def point_statistics(px: Distribution) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """What single imputation averages over the draws, (*batch, *event, S), and how the average
    becomes an imputed value: the mean of p(x|z) by default; a distribution that defines
    ``imputation_statistics`` and ``imputation_point`` (categorical columns: their
    probabilities, then the most probable value) says its own."""
    stats = getattr(px, "imputation_statistics", None)
    if stats is not None:
        return stats(), getattr(px, "imputation_point")  # noqa: B009 - duck-typed, as imputation_statistics
    return px.mean.unsqueeze(-1), lambda s: s.squeeze(-1)


def _resample(
    x: torch.Tensor,
    log_w: torch.Tensor,
    z: torch.Tensor,
    log_share: torch.Tensor,
    picked: torch.Tensor | None,
    draws: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Sampling importance resampling, streamed: each of the ``draws`` latents picked so far
    (``picked``, (draws, B, ...), None before the first chunk) keeps its draw or takes one of this
    chunk's ``z`` (chosen within by the weights ``log_w``) with the chunk's share of the weight
    (``log_share``, (B,)). The latents are kept, not their x: they are decoded once, after the last
    chunk (``_decoded``), not at every chunk (draws x B rows of p(x|z) a chunk, many times the
    importance draws' own when the chunks are small)."""
    b = torch.arange(x.shape[0], device=x.device)
    # a row whose draws here all have weight 0 picks any (its share is 0, or it is complete and keeps its
    # values, or it is refused after the last chunk): a softmax of -inf alone is NaN, which multinomial refuses
    # (a NaN weight too: that row is refused after the last chunk, its total NaN, not here by multinomial)
    dead = ~torch.isfinite(log_w).any(0) | torch.isnan(log_w).any(0)
    weights = torch.softmax(log_w.masked_fill(dead, 0.0), 0)
    pick = torch.multinomial(weights.T.float(), draws, replacement=True, generator=generator)
    zs = z[pick.T, b]  # (draws, B, M)
    if picked is None:
        return zs
    share = torch.exp(log_share).nan_to_num(0.0).float()  # (B,) (0 where no draw so far had weight: -inf - -inf)
    u = torch.rand((draws, x.shape[0]), generator=generator, device=x.device)
    take = (u < share).reshape(draws, x.shape[0], *[1] * (zs.dim() - 2))
    return torch.where(take, zs, picked)


def _decoded(
    model: LatentVariableModel, x: torch.Tensor, zs: torch.Tensor, generator: torch.Generator | None, rows: int
) -> torch.Tensor:
    """x ~ p(x | z) of each picked latent ``zs`` (draws, B, ...), (draws, *x.shape) in x's dtype, decoded
    ``rows`` draws at a time (p(x|z) of rows x B latents at once, as the importance draws', whatever the draws)."""
    out = torch.empty((len(zs), *x.shape), dtype=x.dtype, device=x.device)
    with seeded_by(generator, x.device):
        for i in range(0, len(zs), rows):
            out[i : i + rows] = model.likelihood(zs[i : i + rows]).sample().to(x.dtype)
    return out


def _refuse_unimputable(total: torch.Tensor, mask: torch.Tensor) -> None:
    """A row whose every draw has weight 0 (an observed value the model gives probability 0; its
    log total of the weights ``total`` is -inf) or whose weights hold NaN has no imputation to give:
    refused by name, as dgm score refuses its log-likelihood, not left NaN. A complete row (its
    ``mask`` of observed entries all set) keeps its values, whatever its weights."""
    bad = ~torch.isfinite(total) & ~mask.flatten(1).all(1)
    refuse_non_finite(
        "log importance weight (NaN: the model's values of the observed entries)", total, torch.isnan(total) & bad
    )
    refuse_non_finite("log-likelihood of the observed entries (of every draw: nothing to impute from)", total, bad)


@torch.no_grad()
def impute(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int = 10000,
    draws: int = 0,
    generator: torch.Generator | None = None,
    chunk: int = 1000,
    resample_generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Single imputation (x with its missing entries replaced by the self-normalized importance
    sampling estimate, module docstring) and, with ``draws`` > 0, that many multiple imputations
    (draws, *x.shape) by sampling importance resampling over all K draws. Observed entries are
    kept as they are, in x's dtype and on its device (the model computes in its own). The K draws
    are taken ``chunk`` at a time. ``resample_generator``: the stream the multiple imputations are
    resampled from (by default ``generator``'s; one of their own leaves the importance draws, and so
    the single imputation, the same with or without them)."""
    single, multiple = _checked_imputed(model, x, k, draws, generator, chunk, resample_generator)
    # (x as the model took it was in its precision: float64 data of a float32 model came back rounded)
    mask = observed(x)
    single = torch.where(mask, x, single.to(x.device, x.dtype))
    return single, None if multiple is None else torch.where(mask, x, multiple.to(x.device, x.dtype))


def _imputed(
    model: LatentVariableModel,
    x: torch.Tensor,
    k: int,
    draws: int,
    generator: torch.Generator | None,
    chunk: int,
    resample_generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``impute`` of x as the model takes it (``evaluates``: in its precision, on its device)."""
    k, draws, chunk = whole_at_least("k", k, 1), whole_at_least("draws", draws, 0), whole_at_least("chunk", chunk, 1)
    checked_generator(generator)
    checked_generator(resample_generator, "resample_generator")
    mask = observed(x)
    resampling = generator if resample_generator is None else resample_generator
    if model.exact_imputation:  # (E[x_m | x_o] in closed form, p(z | x_o) exact: no importance draws)
        return _exact_imputed(model, x, mask, draws, resampling, chunk)
    q = model.posterior(x)
    total: torch.Tensor | None = None  # log sum of the weights so far, (B,)
    acc: torch.Tensor | None = None  # the weighted sum of the point statistics so far, normalized by exp(total)
    picked = None  # the latents of the multiple imputations so far, (draws, B, M)
    to_point = None
    for start in range(0, k, chunk):
        n = min(chunk, k - start)
        log_w, z, px = miwae_log_weights(model, x, n, generator, q=q)
        log_w = log_w.double()
        part = torch.logsumexp(log_w, 0)
        new_total = part if total is None else torch.logaddexp(total, part)
        stats, to_point = point_statistics(px)
        # (a row whose draws so far all have weight 0, total -inf: its weights are 0 until one has some)
        w = torch.exp(log_w - new_total).nan_to_num(0.0).to(stats.dtype)  # (n, B)
        contrib = (w.reshape(*w.shape, *[1] * (stats.dim() - 2)) * stats).sum(0)
        acc = (
            contrib
            if acc is None or total is None  # (both None before the first chunk, neither after)
            else acc * torch.exp(total - new_total).nan_to_num(0.0).to(acc.dtype).reshape(-1, *[1] * (acc.dim() - 1))
            + contrib
        )
        if draws:
            picked = _resample(x, log_w, z, part - new_total, picked, draws, resampling)
        total = new_total
    assert acc is not None and to_point is not None and total is not None  # k >= 1: at least one chunk
    _refuse_unimputable(total, mask)
    single = torch.where(mask, x, to_point(acc).to(x.dtype))
    multiple = None if picked is None else torch.where(mask, x, _decoded(model, x, picked, resampling, chunk))
    return single, multiple


def _exact_imputed(
    model: LatentVariableModel,
    x: torch.Tensor,
    mask: torch.Tensor,
    draws: int,
    generator: torch.Generator | None,
    chunk: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``_imputed`` of a model of closed-form E[x_m | x_o] and exact p(z | x_o) (``exact_imputation``):
    that mean, and ``draws`` independent draws z ~ p(z | x_o), x_m ~ p(x_m | z), from ``generator``
    (resampled from k importance draws, they repeated draws of the k: with k = 1 every imputation
    held the same z, their variance sigma^2 alone)."""
    single = torch.where(mask, x, model.conditional_mean(x).to(x.dtype))
    if not draws:
        return single, None
    with seeded_by(generator, x.device):
        picked = model.posterior(x).sample((draws,))  # (draws, B, M)
    return single, torch.where(mask, x, _decoded(model, x, picked, generator, chunk))


_checked_imputed = evaluates(torch.no_grad()(_imputed), name="impute")  # (its messages: "impute() needs ...")
