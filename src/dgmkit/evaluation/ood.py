r"""Out-of-distribution detection from a likelihood: detection metrics and the typicality test.

Scores are "larger means more out-of-distribution" (e.g. the negative log-likelihood), and the
out-of-distribution inputs are the positive class:

- ``auroc``: the area under the ROC curve, P(s_ood > s_in) + P(s_ood = s_in) / 2 (Mann-Whitney);
- ``auprc``: average precision, sum_k (R_k - R_{k-1}) P_k over the distinct thresholds
  (scikit-learn's ``average_precision_score``);
- ``fpr_at_tpr``: the share of in-distribution inputs flagged at the strictest threshold that
  still flags at least ``tpr`` (95%) of the out-of-distribution ones.

The typicality test (Nalisnick et al. 2019): a model's typical set holds inputs whose negative
log-likelihood is near the entropy H of the model. H is estimated by the mean NLL of training
data; a batch of M inputs is flagged when |mean NLL - H| > eps, with eps the (1 - alpha)
quantile of that statistic over ``bootstraps`` batches of M drawn (with replacement) from
held-out in-distribution data. For M = 1 the per-input score |NLL(x) - H| ranks inputs.
"""

import math
from dataclasses import dataclass

import torch

from dgmkit._rng import checked_generator
from dgmkit.errors import whole_at_least

__all__ = ["float64_values", "auroc", "auprc", "fpr_at_tpr", "detection_metrics", "TypicalityTest", "typicality_test"]


def float64_values(v: torch.Tensor) -> torch.Tensor:
    """``v`` (a tensor, on any device, an array or a list) as a flat float64 CPU tensor: a list of
    Python floats is read in float64 (torch.as_tensor's float32 made 1e8 + 1 and 1e8 + 2 a tie)."""
    t = v.detach().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float64)
    return t.double().flatten()


def _check(scores_in: torch.Tensor, scores_ood: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = float64_values(scores_in), float64_values(scores_ood)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("need at least one in-distribution and one out-of-distribution score")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise ValueError("the scores hold NaN or inf")
    return a, b


def auroc(scores_in: torch.Tensor, scores_ood: torch.Tensor) -> float:
    """P(s_ood > s_in) + P(s_ood = s_in) / 2, from the ranks (ties share their mean rank)."""
    a, b = _check(scores_in, scores_ood)
    s = torch.cat([a, b])
    order = s.argsort()
    ranks = torch.empty_like(s)
    ranks[order] = torch.arange(1, len(s) + 1, dtype=s.dtype)
    values, inverse, counts = s.unique(return_inverse=True, return_counts=True)
    # the mean rank of each tied group
    sums = torch.zeros(len(values), dtype=s.dtype).index_add_(0, inverse, ranks)
    ranks = (sums / counts)[inverse]
    u = ranks[len(a) :].sum() - len(b) * (len(b) + 1) / 2
    return float(u / (len(a) * len(b)))


def _curve(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """True and false positives at every distinct threshold, strictest first, and the thresholds."""
    s = torch.cat([a, b])
    y = torch.cat([torch.zeros(len(a)), torch.ones(len(b))]).double()
    order = s.argsort(descending=True, stable=True)
    s, y = s[order], y[order]
    last = torch.ones(len(s), dtype=torch.bool)
    last[:-1] = s[1:] != s[:-1]  # the last position of each distinct score
    tp = y.cumsum(0)[last]
    fp = (1 - y).cumsum(0)[last]
    return tp, fp, s[last]


def auprc(scores_in: torch.Tensor, scores_ood: torch.Tensor) -> float:
    """Average precision with the out-of-distribution inputs as positives."""
    a, b = _check(scores_in, scores_ood)
    tp, fp, _ = _curve(a, b)
    precision, recall = tp / (tp + fp), tp / len(b)
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype))
    return min(1.0, float((steps * precision).sum()))  # (the steps' rounding summed to 1.0000000000000002)


def fpr_at_tpr(scores_in: torch.Tensor, scores_ood: torch.Tensor, tpr: float = 0.95) -> float:
    """The false positive rate at the strictest threshold whose true positive rate is >= ``tpr``."""
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    a, b = _check(scores_in, scores_ood)
    tp, fp, _ = _curve(a, b)
    reached = (tp / len(b)) >= tpr - 1e-12
    return float(fp[reached.nonzero()[0, 0]] / len(a))


def detection_metrics(scores_in: torch.Tensor, scores_ood: torch.Tensor) -> dict[str, float]:
    """AUROC, AUPRC and the FPR at 95% TPR."""
    return {
        "auroc": auroc(scores_in, scores_ood),
        "auprc": auprc(scores_in, scores_ood),
        "fpr_at_95_tpr": fpr_at_tpr(scores_in, scores_ood, 0.95),
    }


@dataclass(frozen=True)
class TypicalityTest:
    """``entropy``: the estimate of H (nats); ``epsilon``: the threshold for batches of
    ``batch_size`` at level ``alpha``."""

    entropy: float
    epsilon: float
    batch_size: int
    alpha: float

    def statistic(self, nll: torch.Tensor) -> torch.Tensor:
        """|mean NLL - H| of each consecutive batch of ``batch_size`` finite NLLs (a trailing partial batch is
        dropped), on the NLLs' device."""
        nll = nll.detach().double().flatten() if isinstance(nll, torch.Tensor) else float64_values(nll)
        if not torch.isfinite(nll).all():  # (|NaN - H| > epsilon is False: no likelihood was called typical)
            raise ValueError("the NLLs hold NaN or inf")
        n = len(nll) // self.batch_size * self.batch_size
        if n == 0:
            raise ValueError(f"need at least {self.batch_size} inputs for one batch")
        return (nll[:n].reshape(-1, self.batch_size).mean(1) - self.entropy).abs()

    def flags(self, nll: torch.Tensor) -> torch.Tensor:
        """True where a batch falls outside the typical set."""
        return self.statistic(nll) > self.epsilon


def typicality_test(
    train_nll: torch.Tensor,
    valid_nll: torch.Tensor,
    batch_size: int = 1,
    alpha: float = 0.01,
    bootstraps: int = 10000,
    generator: torch.Generator | None = None,
) -> TypicalityTest:
    """Fit the test (module docstring): H from the training NLLs, epsilon by bootstrap from the
    held-out NLLs."""
    batch_size, bootstraps = whole_at_least("batch_size", batch_size, 1), whole_at_least("bootstraps", bootstraps, 1)
    if not 0 < alpha < 1:  # (batch_size True was batches of 1; 1.5 torch.randint's TypeError)
        raise ValueError(f"need 0 < alpha < 1, got {alpha}")
    t, v = float64_values(train_nll), float64_values(valid_nll)
    if len(t) == 0 or len(v) == 0 or not (torch.isfinite(t).all() and torch.isfinite(v).all()):
        raise ValueError("need finite training and held-out NLLs")
    h = float(t.mean())
    g = checked_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    rows = max(1, (1 << 22) // batch_size)  # bootstrap batches at a time: (10000, M) indices at once held GBs
    stats = torch.cat([
        (v[torch.randint(len(v), (min(rows, bootstraps - i), batch_size), generator=g)].mean(1) - h).abs()
        for i in range(0, bootstraps, rows)
    ])  # fmt: skip
    return TypicalityTest(h, _quantile(stats, 1 - alpha), batch_size, alpha)


def _quantile(v: torch.Tensor, q: float) -> float:
    """torch.quantile's linear interpolation of the sorted ``v``, without its cap of 2^24 values
    (bootstraps=2**24 + 1 met "quantile() input tensor is too large")."""
    s = v.sort().values
    pos = q * (len(s) - 1)
    below, above = math.floor(pos), math.ceil(pos)
    return float(torch.lerp(s[below], s[above], pos - below))
