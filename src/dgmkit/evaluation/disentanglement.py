r"""Disentanglement metrics: how well single latent dimensions capture single known factors.

Both take codes c(x) (N, M): the posterior means E_q[z | x] of a latent variable model, or an
autoencoder's codes, and data made from known factors v_1..v_K (``Split.factors``).

- **MIG**, the mutual information gap (Chen et al. 2018):

      MIG = 1/K sum_k ( I(c_{j1}; v_k) - I(c_{j2}; v_k) ) / H(v_k),

  where j1 and j2 are the code dimensions with the largest and second largest mutual information
  with factor k. Estimator (stated in every report): each code dimension is cut into ``bins``
  equal-width bins over its range in the evaluated data (20, as in Locatello et al.'s
  disentanglement_lib), and I(c_j; v_k) is the mutual information of the empirical joint
  distribution of the bin and the factor's value (plug-in, in nats); H(v_k) is the empirical
  entropy of the factor. 1 when every factor has its own dimension that determines it and no
  other dimension says anything about it; 0 when two dimensions tell the same amount. A factor
  that takes one value in the data (H(v_k) = 0) has no gap: it is left out of the mean (its
  entry in ``gaps`` is 0), and data in which no factor varies are refused.

- **The FactorVAE metric** (Kim & Mnih 2018): for each vote, one factor k and one of its values
  are drawn, ``batch`` images with that value (the other factors at random) are encoded, each
  active dimension is divided by its standard deviation over the data, and the dimension of
  least variance within the batch votes for factor k. A majority-vote classifier (each dimension
  predicts the factor it voted for most) is fitted on ``votes`` votes and its accuracy measured
  on as many fresh ones. Needs images for chosen factor values (``SpritesGrid.render``).
  Active dimensions: variance of the code over the data above 0.01 (Burda et al.'s active
  units); dimensions below that cannot vote, and a model with none scores chance, 1/K, what a
  classifier that knows nothing scores on votes spread evenly over the factors (Locatello et
  al.'s disentanglement_lib reports 0 there instead). A factor with one value is no factor of
  variation: fixing it fixes nothing, so it draws no votes (K counts the factors that vary), as
  it is left out of MIG; sizes in which no factor varies are refused.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from dgmkit._rng import checked_generator
from dgmkit.errors import whole_at_least

__all__ = ["MIG", "mutual_information_gap", "FactorVAEScore", "factor_vae_score", "MIG_ESTIMATOR", "ACTIVE_VARIANCE"]

MIG_ESTIMATOR = "plug-in mutual information of each code dimension cut into {bins} equal-width bins, in nats"
ACTIVE_VARIANCE = 0.01


@dataclass(frozen=True)
class MIG:
    """``mig``: the mean gap; ``gaps`` (K,): each factor's normalised gap; ``mutual_information``
    (M, K): I(c_j; v_k) in nats; ``entropy`` (K,): H(v_k) in nats; ``best`` (K,): the dimension
    that tells most about each factor."""

    mig: float
    gaps: torch.Tensor
    mutual_information: torch.Tensor
    entropy: torch.Tensor
    best: torch.Tensor
    estimator: str


def _bin(codes: torch.Tensor, bins: int) -> torch.Tensor:
    """Each column cut into ``bins`` equal-width bins over its range: (N, M) indices in 0..bins-1."""
    # a column of finite codes more than 1.8e308 apart is halved first (exact): its hi - lo was inf,
    # every index NaN, and the column said to tell nothing
    codes = codes * torch.where(torch.isfinite(codes.max(0).values - codes.min(0).values), 1.0, 0.5)
    lo, hi = codes.min(0).values, codes.max(0).values
    width = torch.where(hi > lo, (hi - lo) / bins, torch.ones_like(hi))
    return ((codes - lo) / width).floor().clamp(0, bins - 1).long()


def _entropy(counts: torch.Tensor) -> torch.Tensor:
    p = counts / counts.sum(-1, keepdim=True)
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)


def _discrete_mi(a: torch.Tensor, na: int, b: torch.Tensor, nb: int) -> torch.Tensor:
    """Plug-in mutual information (nats) between integer columns a (N, M) in 0..na-1 and b (N,)
    in 0..nb-1: (M,)."""
    # the joint's entropy from the pairs that occur (at most N a dimension): a dense (M, na, nb) table of
    # counts took M * bins * the factor's values doubles (64 GB for 4 dimensions, 10**4 bins, 200000 values)
    h_b = _entropy(torch.bincount(b, minlength=nb).double())
    h_ab = torch.stack([_entropy(torch.unique(col * nb + b, return_counts=True)[1].double()) for col in a.T])
    h_a = torch.stack([_entropy(torch.bincount(col, minlength=na).double()) for col in a.T])
    return (h_a + h_b - h_ab).clamp_min(0)


def mutual_information_gap(codes: torch.Tensor, factors: torch.Tensor, bins: int = 20) -> MIG:
    """MIG of codes (N, M) against factor indices (N, K) (see the module docstring)."""
    codes = torch.as_tensor(codes)
    factors = torch.as_tensor(factors)
    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or len(codes) < 2:
        raise ValueError(
            f"need codes (N, M) and factors (N, K) for the same N >= 2, got {tuple(codes.shape)} and {tuple(factors.shape)}"
        )
    if codes.shape[1] < 2:
        raise ValueError("the gap needs at least 2 code dimensions")
    if factors.shape[1] < 1:  # (was torch.stack's RuntimeError of an empty list)
        raise ValueError("need at least one factor (factors of shape (N, K), K >= 1)")
    if codes.is_complex():  # (its imaginary part was dropped, with a warning)
        raise ValueError("the codes must be real numbers, not complex")
    if factors.is_floating_point() or (factors < 0).any():
        raise ValueError("factors must be non-negative integer indices")
    if not torch.isfinite(codes).all():
        raise ValueError("the codes hold NaN or inf")
    bins = whole_at_least("bins", bins, 2)  # (2.5 was torch.zeros' TypeError, naming nothing)
    if bins > 10**4:
        raise ValueError(f"bins must be in 2..10000, got {bins}")
    binned = _bin(codes.double(), bins)
    mis, ents = [], []
    for k in range(factors.shape[1]):
        _, v = factors[:, k].unique(return_inverse=True)
        n_values = int(v.max()) + 1
        mis.append(_discrete_mi(binned, bins, v, n_values))
        ents.append(_entropy(torch.bincount(v, minlength=n_values).double()))
    mi, ent = torch.stack(mis, 1), torch.stack(ents)  # (M, K), (K,)
    top = mi.topk(2, dim=0)
    varies = ent > 0
    if not bool(varies.any()):
        raise ValueError("no factor takes more than one value in these data: there is nothing for the codes to tell")
    gaps = torch.where(varies, (top.values[0] - top.values[1]) / ent.clamp_min(1e-12), torch.zeros_like(ent))
    mig = float(gaps[varies].mean())  # (a factor that does not vary has no gap: 0/0, left out)
    return MIG(mig, gaps, mi, ent, top.indices[0], MIG_ESTIMATOR.format(bins=bins))


@dataclass(frozen=True)
class FactorVAEScore:
    """``accuracy`` of the majority-vote classifier on fresh votes; ``train_accuracy`` on its
    own votes; ``assignment`` (M,): the factor each dimension predicts (-1: inactive or never
    voted); ``active`` (M,) bool."""

    accuracy: float
    train_accuracy: float
    assignment: torch.Tensor
    active: torch.Tensor
    votes: int
    batch: int


def _factor_sizes(factor_sizes: Sequence[int]) -> tuple[list[int], list[int]]:
    """The factors' sizes, whole numbers >= 1 (2.5 was taken as 2), and which factors vary (more
    than one value: a factor of one value draws no votes, which were noise); refused where none does."""
    sizes = [whole_at_least(f"factor {k}'s size", s, 1) for k, s in enumerate(factor_sizes)]
    if not sizes:
        raise ValueError("need at least one factor with at least one value, got no sizes")
    varying = [k for k, size in enumerate(sizes) if size > 1]
    if not varying:
        raise ValueError(f"no factor takes more than one value (sizes {sizes}): there is nothing for the codes to tell")
    return sizes, varying


def _real_codes(codes: torch.Tensor, what: str) -> torch.Tensor:
    """Codes as float64, refused if complex (``.double()`` dropped the imaginary part, with a warning)."""
    codes = torch.as_tensor(codes)
    if codes.is_complex():
        raise ValueError(f"{what} must be real numbers, not complex")
    return codes.double()


def _vote_codes(codes: torch.Tensor, batch: int, factor: int, m: int) -> torch.Tensor:
    """The codes ``encode`` gave for one vote's images, checked: (batch, m) as the data's codes, finite."""
    codes = _real_codes(codes, f"the codes of a vote's batch (factor {factor} fixed)")
    if codes.shape != (batch, m):  # (a width not M was broadcasting's RuntimeError, or, (M,) for M images, one vote)
        raise ValueError(
            f"encode gave codes of shape {tuple(codes.shape)} for a vote's {batch} images, where ({batch}, {m}) was "
            f"expected (data_codes are {m} wide)"
        )
    if not torch.isfinite(codes).all():  # (argmin over a NaN variance chose that dimension: every vote its)
        raise ValueError(f"the codes of a vote's batch (factor {factor} fixed) hold NaN or inf")
    return codes


def factor_vae_score(
    encode: Callable[[torch.Tensor], torch.Tensor],
    render: Callable[[torch.Tensor], torch.Tensor],
    factor_sizes: Sequence[int],
    data_codes: torch.Tensor,
    votes: int = 800,
    batch: int = 64,
    generator: torch.Generator | None = None,
) -> FactorVAEScore:
    """The FactorVAE metric (see the module docstring). ``encode``: images -> codes (n, M);
    ``render``: factor indices (n, K) -> images; ``data_codes``: codes of the data, for each
    dimension's scale and activity."""
    sizes, varying = _factor_sizes(factor_sizes)
    votes, batch = whole_at_least("votes", votes, 1), whole_at_least("batch", batch, 2)  # (True was 1 vote; 1.5 range()'s)
    checked_generator(generator)
    data_codes = _real_codes(data_codes, "data_codes")
    if data_codes.ndim != 2 or len(data_codes) < 2 or not torch.isfinite(data_codes).all():
        raise ValueError("data_codes must be finite codes (N, M) with N >= 2")
    var = data_codes.var(0)
    active = var > ACTIVE_VARIANCE
    scale = var.clamp_min(1e-12).sqrt()
    m, k_count = data_codes.shape[1], len(sizes)
    if not active.any():
        return FactorVAEScore(1.0 / len(varying), 1.0 / len(varying), torch.full((m,), -1), active, votes, batch)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    high = torch.tensor(sizes)

    def draw_votes() -> tuple[torch.Tensor, torch.Tensor]:
        dims, facs = [], []
        for _ in range(votes):
            k = varying[int(torch.randint(len(varying), (1,), generator=g))]
            f = (torch.rand(batch, k_count, generator=g) * high).long()
            f[:, k] = int(torch.randint(sizes[k], (1,), generator=g))
            within = _vote_codes(encode(render(f)), batch, k, m).div(scale).var(0).masked_fill(~active, float("inf"))
            dims.append(int(within.argmin()))
            facs.append(k)
        return torch.tensor(dims), torch.tensor(facs)

    d_train, k_train = draw_votes()
    table = torch.zeros(m, k_count, dtype=torch.long)
    table.index_put_((d_train, k_train), torch.ones_like(d_train), accumulate=True)
    assignment = torch.where(table.sum(1) > 0, table.argmax(1), torch.full((m,), -1))
    d_eval, k_eval = draw_votes()
    train_acc, acc = (float((assignment[d] == k).double().mean()) for d, k in ((d_train, k_train), (d_eval, k_eval)))
    return FactorVAEScore(acc, train_acc, assignment, active, votes, batch)
