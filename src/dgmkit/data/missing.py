"""Incomplete data: missing entries are NaN.

A dataset holds missing entries when its images are floats with NaN in them: read from a file
that has them, or removed on purpose with ``remove_completely_at_random`` (each entry missing
independently with probability ``rate``: MCAR, the MIWAE protocol's mechanism). Quantized
data keep their number of levels: the observed entries are still integers 0..L-1, stored as
floats so that NaN can stand beside them.
"""

import dataclasses
import numbers
import operator

import torch

from dgmkit.data.dataset import SPLITS, Dataset
from dgmkit.errors import ConfigError, DataError

__all__ = [
    "remove_completely_at_random",
    "has_missing",
    "missing_count",
    "observed",
    "check_missing_allowed",
    "never_observed_note",
    "MAX_MISSING_RATE",
]

MAX_MISSING_RATE = 0.99


def observed(x: torch.Tensor) -> torch.Tensor:
    """True where x is observed (not NaN)."""
    return ~torch.isnan(x) if x.is_floating_point() else torch.ones_like(x, dtype=torch.bool)


def missing_count(dataset: Dataset) -> int:
    """How many entries of all splits are missing."""
    return sum(int((~observed(dataset.split(s).x)).sum()) for s in SPLITS)


def has_missing(dataset: Dataset) -> bool:
    return any(dataset.split(s).x.is_floating_point() and bool(torch.isnan(dataset.split(s).x).any()) for s in SPLITS)


def remove_completely_at_random(dataset: Dataset, rate: float, seed: int = 0) -> Dataset:
    """``dataset`` with each entry of every split removed (set to NaN) independently with
    probability ``rate`` (the split's own seeded stream: ``seed`` and the split's index), so
    that the same rate and seed remove the same entries again. Entries already missing stay
    missing. Every datapoint keeps at least one observed entry (a row with none would carry
    no information; its first observed entry is restored)."""
    real = isinstance(rate, numbers.Real) and not isinstance(rate, bool)  # ("0.5", None: raw TypeErrors; False was 0)
    if not (real and 0 <= rate <= MAX_MISSING_RATE):
        raise ConfigError(f"missing_rate must be a number in [0, {MAX_MISSING_RATE}], got {rate!r}")
    try:
        whole = -1 if isinstance(seed, bool) else operator.index(seed)  # an int or NumPy integer, not a float
    except TypeError:
        whole = -1
    if whole < 0:
        raise ConfigError(f"the seed of the removed entries must be an integer >= 0, got {seed!r}")
    if rate == 0:
        return dataset
    if dataset.name.startswith("codes:"):
        raise ConfigError("missing_rate applies to data, not to the code grids of a VQ-VAE (--codes-of)")
    splits = {}
    for i, name in enumerate(SPLITS):
        s = dataset.split(name)
        g = torch.Generator().manual_seed((whole * len(SPLITS) + i) % 2**64)  # any seed: 2**64 wraps
        drop = torch.rand(s.x.shape, generator=g) < rate
        flat = drop.view(len(s.x), -1)
        seen = observed(s.x).reshape(len(s.x), -1)
        none_left = (flat | ~seen).all(1) & seen.any(1)
        flat[none_left, seen[none_left].int().argmax(1)] = False  # each such row's first observed entry
        x = s.x.float() if not s.x.is_floating_point() else s.x.clone()
        x[drop] = float("nan")
        splits[name] = dataclasses.replace(s, x=x)
    return dataclasses.replace(dataset, train=splits["train"], valid=splits["valid"], test=splits["test"])


def check_missing_allowed(
    dataset: Dataset, handles_missing: bool, what: str, removed_by: str | None = None, cannot: str = "score incomplete data"
) -> None:
    """Refuse data with missing entries for a model or objective that cannot score them;
    ``removed_by``: the setting that removed them (``--missing-rate 0.5``), else they are the data's;
    ``cannot``: what ``what`` cannot do with them (a model fitted in closed form: be fitted to them)."""
    if handles_missing or not has_missing(dataset):
        return
    where = f"NaN, with {removed_by}" if removed_by else "NaN"
    fix = (
        f"leave out {removed_by.split()[0]} (and fill in any the data lack themselves)"
        if removed_by
        else "fill them in first"
    )
    raise DataError(
        f"{dataset.name} has {missing_count(dataset)} missing entries ({where}), and {what} cannot {cannot}; "
        f"train a VAE with --objective miwae (the likelihood of the observed entries), or {fix}"
    )


def never_observed_note(dataset: Dataset) -> str | None:
    """A note on training data with entries (pixels, columns) missing (NaN) in every training row,
    or None: a model scores the observed entries as ever, but learns nothing of those, and imputes
    them with what an untrained network gives (a VAE trained on a file whose column was all NaN
    filled it so, without a word; PPCA, which needs each dimension seen, refuses such data)."""
    x = dataset.train.x
    if not x.is_floating_point() or len(x) == 0:
        return None
    never = torch.isnan(x).reshape(len(x), -1).all(0)
    if not bool(never.any()):
        return None
    j = int(never.nonzero()[0])
    name = f"column {dataset.columns[j].name!r}" if dataset.columns else f"entry {j} (flattened)"
    return (
        f"{int(never.sum())} of the {never.numel()} entries of a datapoint of {dataset.name} are missing (NaN) in every "
        f"training row, e.g. {name}: the model learns nothing of them, and its imputations of them are an untrained "
        "network's"
    )
