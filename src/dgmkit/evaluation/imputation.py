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
imputers of a table with categorical columns are MICE's and missForest's own (``baseline_impute``):
a classifier for a categorical column (multinomial logistic regression; a random forest
classifier), the other columns' categories one-hot as its predictors.

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
    category, of the column or of the 5 neighbours. A category's indicator is fitted exactly by its
    siblings' (1 minus their sum), so that a chained regression would keep it at its first fill:
    with categorical columns, the chained imputers are MICE's and missForest's for mixed tables
    (``_impute_chained``). They fill each numeric column with its mean and each categorical one
    with its most frequent category, then, in rounds over the columns with missing entries (fewest
    first), predict each one's missing entries from the other columns' current fills (numeric ones
    standardized, categorical ones one-hot) by a model fitted on its observed entries: for a numeric
    column Bayesian ridge (``iterative``) or a random forest regressor of 100 trees seeded by
    ``seed`` (``missforest``); for a categorical one a multinomial logistic regression or a random
    forest classifier of 100 trees. ``iterative`` runs 10 rounds; ``missforest`` at most 10, by its
    stopping rule (``_impute_chained``). Without categorical columns they are scikit-learn's
    ``IterativeImputer`` (which stops early once no fill moves by 1e-3 of the largest observed |value|)."""
    if method not in BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; choose from {', '.join(BASELINES)}")
    # (-1 met scikit-learn's "'random_state' parameter of RandomForestRegressor must be an int in the range
    # [0, 4294967295]"; the chained MICE of a mixed table, which draws nothing, took any seed silently)
    if whole_at_least("seed", seed, 0) >= 2**32:
        raise ValueError(f"seed must be an integer in 0..2**32 - 1 (scikit-learn's random_state), got {seed}")
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
        return _impute_chained(x, method, seed, counts)
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


def _impute_chained(x: np.ndarray, method: str, seed: int, counts: Sequence[int]) -> np.ndarray:
    """The chained imputer ``method`` of a table with categorical columns (``counts``): the first
    fill, then rounds over the columns with missing entries, fewest first, each column's missing
    entries predicted from the other columns' current fills (``_predict_column``). ``iterative``
    runs 10 rounds; ``missforest`` stops earlier by its rule (``_forest_change``): after the first
    round in which neither the change of the numeric columns nor that of the categorical ones
    decreased, returning the round before it."""
    missing = np.isnan(x)
    filled = _first_fill(x, counts)
    order = [j for j in np.argsort(missing.sum(0), kind="stable") if missing[:, j].any()]
    change = (math.inf, math.inf)
    for _ in range(10):
        current = filled.copy()
        for j in order:
            current[missing[:, j], j] = _predict_column(current, j, missing[:, j], counts, method, seed)
        if method == "missforest":
            now = _forest_change(current, filled, counts)
            if not (now[0] < change[0] or now[1] < change[1]):
                return filled
            change = now
        filled = current
    return filled


def _first_fill(x: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """The rows ``x`` with each numeric column's missing entries its mean and each categorical
    column's its most frequent category (the first, of a tie); 0 in a column of no observed entry."""
    out = x.copy()
    for j, k in enumerate(counts):
        seen = x[~np.isnan(x[:, j]), j]
        if not len(seen):
            fill = 0.0
        else:
            fill = float(np.bincount(seen.astype(np.int64), minlength=k).argmax()) if k else float(seen.mean())
        out[np.isnan(x[:, j]), j] = fill
    return out


def _predictors(filled: np.ndarray, j: int, counts: Sequence[int]) -> np.ndarray:
    """The columns other than ``j`` of the complete rows ``filled`` as predictors: a numeric one
    standardized (over all rows), a categorical one as its K indicator columns."""
    parts = []
    for i, k in enumerate(counts):
        if i == j:
            continue
        column = filled[:, i]
        if k:
            parts.append(np.eye(k)[column.astype(np.int64)])
        else:
            spread = column.std()
            parts.append(((column - column.mean()) / (spread if spread > 0 else 1.0))[:, None])
    return np.concatenate(parts, 1) if parts else np.zeros((len(filled), 0))


def _predict_column(
    filled: np.ndarray, j: int, gone: np.ndarray, counts: Sequence[int], method: str, seed: int
) -> np.ndarray:
    """Column ``j``'s entries at the rows ``gone`` predicted from the other columns of ``filled``
    by a model fitted on its other rows: a regression for a numeric column (Bayesian ridge, or a
    random forest of 100 trees), a classifier for a categorical one (multinomial logistic
    regression, or a random forest classifier of 100 trees). A column of no observed entry, or no
    other column, keeps its fill; a categorical column of one observed category takes it."""
    design, target = _predictors(filled, j, counts), filled[~gone, j]
    if not len(target) or not design.shape[1]:
        return filled[gone, j]
    if counts[j] and len(np.unique(target)) == 1:
        return np.full(int(gone.sum()), target[0])
    import warnings

    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import BayesianRidge, LogisticRegression

    if method == "iterative":
        model = LogisticRegression(max_iter=1000) if counts[j] else BayesianRidge()
    else:
        forest = RandomForestClassifier if counts[j] else RandomForestRegressor
        model = forest(n_estimators=100, random_state=seed, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(design[~gone], target)
    return model.predict(design[gone]).astype(np.float64)


def _forest_change(new: np.ndarray, old: np.ndarray, counts: Sequence[int]) -> tuple[float, float]:
    """missForest's change between two rounds' fills (Stekhoven & Buehlmann 2012): over the numeric
    columns, sum (new - old)^2 / sum new^2; over the categorical ones, the share of their entries
    that changed. 0 for a kind of column that the table does not hold."""
    numeric = np.array([not k for k in counts])
    squares = float((new[:, numeric] ** 2).sum()) if numeric.any() else 0.0
    numbers = float(((new[:, numeric] - old[:, numeric]) ** 2).sum()) / squares if squares > 0 else 0.0
    categories = float((new[:, ~numeric] != old[:, ~numeric]).sum()) / max(new[:, ~numeric].size, 1)
    return numbers, categories


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
