"""Imputing missing entries with a trained model, next to the classical imputers, and scoring them.

``impute_batched`` runs MIWAE's importance-sampling imputation (``objectives.miwae.impute``)
over a dataset in batches with one seeded generator. The baselines fill each split on its own,
from its observed entries alone (the in-sample protocol of Mattei & Frellsen 2019):

- ``mean``: each column's mean over its observed entries;
- ``knn``: scikit-learn's ``KNNImputer`` (5 neighbours, nan-Euclidean distance);
- ``iterative``: scikit-learn's ``IterativeImputer`` (chained Bayesian ridge regressions, 10
  rounds; MICE's single-imputation form);
- ``missforest``: the same chained imputer with random forests (100 trees) in place of the
  regressions, 10 rounds: missForest (Stekhoven & Buehlmann 2012) in scikit-learn's form.

A table's categorical column is given to ``mean`` and ``knn`` as its indicator columns (one-hot,
missing together) and filled with the most frequent category, of the column or of the neighbours
(``baseline_impute``'s ``categories``): its index is a name, not a number to average. The chained
imputers take the index as a number, rounded after (``baseline_impute`` says why).

``rmse`` scores an imputation on the missing entries only, against the values that were there.
"""

import math
from collections.abc import Sequence
from typing import cast

import numpy as np
import torch

from dgmkit.data import DataTransform
from dgmkit.data.missing import observed
from dgmkit.devices import device_of
from dgmkit.errors import ConfigError, DataError, generator_seed, whole_at_least
from dgmkit.models import GenerativeModel, LatentVariableModel
from dgmkit.objectives.importance import CPU_CHUNK_BYTES, GPU_CHUNK_BYTES
from dgmkit.objectives.miwae import impute

__all__ = [
    "BASELINES", "baseline_impute", "rmse", "check_imputes", "impute_batched", "resampling_seed", "to_data_units",
    "from_data_units",
]  # fmt: skip

BASELINES = ("mean", "knn", "iterative", "missforest")


def baseline_impute(x: np.ndarray, method: str, seed: int = 0, categories: Sequence[int] | None = None) -> np.ndarray:
    """Fill the NaN entries of the rows ``x`` (N, D) with ``method`` (module docstring).
    ``categories``: per column, its number of categories K (a categorical column of indices
    0..K-1) or 0 (a numeric one). The column means and the neighbours take a categorical column as
    its K indicator columns (missing together; the distance between two rows' categories 0 or
    sqrt(2)) and fill it with the category whose indicator is imputed highest: the most frequent
    category, of the column or of the 5 neighbours. The chained imputers regress each column on the
    others, where a category's indicator is fitted exactly by its siblings' (1 minus their sum), so
    that it stays at its first fill: they take the index as a number, filled with the nearest one."""
    if method not in BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise DataError(f"baseline imputers take rows (N, D), got shape {x.shape}")
    if np.isinf(x).any():  # (the column means imputed inf, or NaN, in its column; scikit-learn's imputers refuse it)
        rows = np.isinf(x).any(1).nonzero()[0]
        raise DataError(
            f"the rows hold {int(np.isinf(x).sum())} infinite observed values (inf or -inf), e.g. in row {rows[0]}: "
            "no imputer takes them; mark an unknown entry as missing (NaN)"
        )
    counts = _category_counts(x, categories)
    if not any(counts):
        return _impute_numbers(x, method, seed)
    if method in ("iterative", "missforest"):
        filled = _impute_numbers(x, method, seed)
        for j in np.flatnonzero(counts):
            filled[:, j] = np.clip(np.round(filled[:, j]), 0, counts[j] - 1)
        return filled
    return _from_indicators(_impute_numbers(_to_indicators(x, counts), method, seed), x, counts)


def _category_counts(x: np.ndarray, categories: Sequence[int] | None) -> list[int]:
    """``categories`` checked against the rows ``x``: one count per column, each categorical
    column's observed entries whole numbers in 0..K-1."""
    if categories is None:
        return [0] * x.shape[1]
    counts = list(categories)
    if len(counts) != x.shape[1]:
        raise DataError(f"baseline imputers take one category count per column: {x.shape[1]} columns, got {len(counts)}")
    for j, k in enumerate(counts):
        whole_at_least(f"column {j}'s category count", k, 0)
        seen = x[~np.isnan(x[:, j]), j]
        if k and ((seen != np.round(seen)).any() or (seen < 0).any() or (seen >= k).any()):
            raise DataError(f"column {j} is categorical with {k} categories: its entries must be indices 0..{k - 1}")
    return counts


def _to_indicators(x: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """The rows with each categorical column as its K indicator columns (NaN where it is missing)."""
    parts = []
    for j, k in enumerate(counts):
        if not k:
            parts.append(x[:, j : j + 1])
            continue
        seen = ~np.isnan(x[:, j])
        block = np.full((len(x), k), np.nan)
        block[seen] = 0.0
        block[seen.nonzero()[0], x[seen, j].astype(np.int64)] = 1.0
        parts.append(block)
    return np.concatenate(parts, 1)


def _from_indicators(wide: np.ndarray, x: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """The imputed rows back in the columns of ``x``: a categorical column's missing entries the
    category whose indicator was imputed highest; its observed ones as they were."""
    out, at = x.copy(), 0
    for j, k in enumerate(counts):
        if not k:
            out[:, j] = wide[:, at]
        else:
            out[:, j] = np.where(np.isnan(x[:, j]), wide[:, at : at + k].argmax(1), x[:, j])
        at += max(k, 1)
    return out


def _impute_numbers(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    """The NaN entries of the rows ``x``, every column a number, filled by ``method``."""
    empty = np.isnan(x).all(0)
    if method == "mean":
        means = np.where(empty, 0.0, np.nanmean(np.where(empty, 0.0, x), 0))
        return np.where(np.isnan(x), means, x)
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401 - IterativeImputer is experimental
    from sklearn.impute import IterativeImputer, KNNImputer

    if method == "knn":
        imputer = KNNImputer(n_neighbors=5, keep_empty_features=True)
    elif method == "iterative":
        imputer = IterativeImputer(max_iter=10, random_state=seed, keep_empty_features=True)
    else:
        from sklearn.ensemble import RandomForestRegressor

        forest = RandomForestRegressor(n_estimators=100, random_state=seed, n_jobs=1)
        imputer = IterativeImputer(estimator=forest, max_iter=10, random_state=seed, keep_empty_features=True)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 10 rounds is the protocol, converged or not
        return imputer.fit_transform(x)


def rmse(imputed: np.ndarray | torch.Tensor, truth: np.ndarray | torch.Tensor, missing: np.ndarray | torch.Tensor) -> float:
    """sqrt(mean (imputed - truth)^2) over the missing entries."""
    a, b = np.asarray(imputed, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    given = np.asarray(missing)
    if given.dtype != bool and not np.isin(given, (0, 1)).all():  # (0.5 or NaN was taken as missing, 2 too)
        raise ValueError("the mask of missing entries must be boolean (or 0 and 1 only)")
    m = given.astype(bool)
    if a.shape != b.shape or a.shape != m.shape:
        raise ValueError(f"shapes differ: imputed {a.shape}, truth {b.shape}, mask {m.shape}")
    if not m.any():
        raise ValueError("no missing entries to score")
    d = a[m] - b[m]
    if not np.isfinite(d).all():
        raise ValueError("the imputation or the truth holds NaN or inf on a missing entry")
    return math.sqrt(float(np.mean(d * d)))


def to_data_units(x: torch.Tensor, transform: DataTransform) -> torch.Tensor:
    """Values the model scores back in the data's own units: for ``scale`` and
    ``dynamic-binarize`` (probabilities of the intensity k / (L - 1)) times L - 1; others as they are."""
    if transform.kind in ("scale", "dynamic-binarize"):
        return x.double() * (cast(int, transform.num_levels) - 1)  # (set for these kinds)
    return x.double()


def from_data_units(x: torch.Tensor, transform: DataTransform) -> torch.Tensor:
    """The inverse of ``to_data_units``: values in the data's own units as the model scores them
    (for ``scale`` and ``dynamic-binarize``, k / (L - 1)); float64, NaN kept."""
    if transform.kind in ("scale", "dynamic-binarize"):
        return x.double() / (cast(int, transform.num_levels) - 1)
    return x.double()


def check_imputes(model: GenerativeModel) -> None:
    """Refuses (ConfigError) a model that cannot impute by importance sampling (``can_impute``)."""
    if not model.can_impute:
        raise ConfigError(
            "imputation by importance sampling needs a latent variable model whose p(x|z) factorizes over the "
            "entries and whose encoder reads incomplete data (a VAE, as MIWAE trains it); this run's model, "
            f"{type(model).__name__}, is not one"
        )


def resampling_seed(seed: int) -> int:
    """The seed of the stream ``impute_batched`` resamples multiple imputations from (``seed``'s
    own draws the importance samples)."""
    return (seed + 0x9E3779B97F4A7C15) % 2**64


@torch.no_grad()
def impute_batched(
    model: LatentVariableModel, x: torch.Tensor, k: int = 10000, draws: int = 0, seed: int = 0, batch_size: int = 100
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``objectives.miwae.impute`` over ``x`` in batches, the importance draws from one generator
    seeded by ``seed`` and the multiple imputations resampled from another, in batches that do not
    depend on ``draws`` (so the single imputation is the same whatever ``draws``; a datapoint's
    values do depend on the datapoints batched before it and with it: the same ``x``, ``k`` and
    ``seed`` give the same values); the observed entries of ``x`` are returned as they are, in its
    dtype (the model computes in its own)."""
    check_imputes(model)
    for name, value, low in (("k", k, 1), ("draws", draws, 0), ("batch_size", batch_size, 1)):
        whole_at_least(name, value, low)  # (a float k, 10.5, was range()'s TypeError; batch_size 0 was taken)
    seed = generator_seed(seed)  # (a NumPy integer failed in manual_seed)
    if not isinstance(x, torch.Tensor) or x.dim() == 0 or len(x) == 0:  # (as impute refuses, not torch.cat's words)
        raise DataError("impute_batched takes the data as a torch tensor of one or more datapoints (N, *event)")
    model.check_data(x)  # all of x, before any batch: a bad row named by its index in x (each batch's own check: in it)
    device = device_of(model)  # (where impute draws: the model's, which may not be x's)
    g = torch.Generator(device=device).manual_seed(seed)
    resampling = torch.Generator(device=device).manual_seed(resampling_seed(seed))
    singles, multiples = [], []
    per_row = max(1, math.prod(x.shape[1:]))
    # rows of p(x|z) (draws x datapoints) at once: fewer where the model says its rows are large (a
    # categorical likelihood's probabilities of every level, per entry)
    fit = model.importance_rows(GPU_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES)
    if fit is not None:
        batch_size = max(1, min(batch_size, fit))
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        chunk = max(1, min(1000, 4_000_000 // (len(xb) * per_row)))  # draws at a time: memory of one chunk
        if fit is not None:
            chunk = max(1, min(chunk, fit // len(xb)))
        s, m = impute(model, xb, k=k, draws=draws, generator=g, chunk=chunk, resample_generator=resampling)
        singles.append(s)
        if m is not None:
            multiples.append(m)
    mask = observed(x)
    single = torch.where(mask, x, torch.cat(singles).to(x.dtype))
    return single, torch.where(mask, x, torch.cat(multiples, 1).to(x.dtype)) if multiples else None
