"""How stored integers become what a likelihood scores.

- ``binary``: data already in {0, 1} (static binarization): cast to float.
- ``dynamic-binarize``: a fresh Bernoulli draw x ~ Bernoulli(k / (L - 1)) for every batch.
- ``dequantize``: y = (k + u) / L with u ~ U[0, 1): continuous data in [0, 1], so that a
  density on y lower-bounds the probability of the integers k in expectation over the noise,
  log P(k) >= E_u[log p(y)] - D log L (at one draw of u, a stochastic lower bound).
- ``scale``: k / (L - 1) in [0, 1], deterministic (for display, or for models of continuous
  data where no likelihood of the integers is claimed).
- ``integers``: the raw integers 0..L-1 for categorical and discretized logistic likelihoods.
- ``continuous``: float data used as is (only Gaussian likelihoods).

Missing entries (NaN, ``data.missing``) stay NaN through every transform; ``integers`` then
returns the integers as floats, since an integer tensor cannot hold NaN.
"""

import math
import operator
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from dgmkit._rng import checked_generator
from dgmkit.data.dataset import Dataset
from dgmkit.distributions.pixels import may_be_incomplete
from dgmkit.errors import DataError, shown_value

__all__ = [
    "VALID_SEED",
    "DataTransform",
    "make_transform",
    "density_transform",
    "TRANSFORMS",
    "values_seen",
    "scores_densities",
]

TRANSFORMS = ("binary", "dynamic-binarize", "dequantize", "scale", "integers", "continuous")
_NAMED_8BIT = ("mnist", "fashion-mnist", "digits")
VALID_SEED = 1234  # the fixed noise of held-out data (``DataTransform.held_out``)


def values_seen(v: torch.Tensor | np.ndarray, integers: bool = True) -> str:
    """What observed values ``v`` (no NaN; at least one) hold, for a message that refuses them:
    "values in [0, 16]", with ", not all whole numbers" where some are fractions and ``integers``
    (the values wanted are whole numbers)."""
    floating = v.is_floating_point() if isinstance(v, torch.Tensor) else v.dtype.kind == "f"
    whole = not integers or not floating or bool((v == v.round()).all())
    return f"values in [{float(v.min()):g}, {float(v.max()):g}]" + ("" if whole else ", not all whole numbers")


@dataclass(frozen=True)
class DataTransform:
    """A transform by name with the data's number of levels (see the module docstring)."""

    kind: str
    num_levels: int | None

    def __post_init__(self):
        if self.kind not in TRANSFORMS:
            raise DataError(f"unknown data transform {shown_value(self.kind)}; choose from {TRANSFORMS}")
        if self.num_levels is not None and not isinstance(self.num_levels, bool):
            try:  # (a NumPy or 0-d tensor integer: the int it holds)
                object.__setattr__(self, "num_levels", operator.index(self.num_levels))
            except TypeError:
                pass
        if self.kind in ("dynamic-binarize", "dequantize", "scale") and not (
            type(self.num_levels) is int and self.num_levels >= 2
        ):
            raise DataError(
                f"the {self.kind} transform reads the data's levels 0..L-1: num_levels must be an integer L >= 2, "
                f"got {self.num_levels!r}"
            )

    @property
    def _levels(self) -> int:
        """``num_levels``, set for the kinds that read it (dynamic-binarize, dequantize, scale)."""
        return cast(int, self.num_levels)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):  # (a NumPy array: 'str' object has no attribute 'type', from x.device)
            raise DataError(
                f"a data transform takes the data as a torch tensor, got {type(x).__name__} "
                "(torch.as_tensor(x) makes one of a NumPy array)"
            )
        checked_generator(generator)  # (a deterministic transform draws nothing, and ignored any)
        if x.device.type == "cpu":  # (on a GPU a look would wait for it)
            self.check_stored(x)
        if self.kind == "binary":
            return x.float()
        if self.kind == "dynamic-binarize":
            p = x.float() / (self._levels - 1)
            if not may_be_incomplete(x):  # (integers, or data checked once: no look, which waits for a GPU)
                return torch.bernoulli(p, generator=generator)
            missing = torch.isnan(p)
            b = torch.bernoulli(p.nan_to_num(0.0), generator=generator)
            return b.masked_fill_(missing, float("nan"))
        if self.kind == "dequantize":
            u = torch.rand(x.shape, generator=generator, device=x.device)
            return (x.float() + u) / self._levels
        if self.kind == "scale":
            return x.float() / (self._levels - 1)
        if self.kind == "integers":  # with missing entries (NaN): the integers as floats beside the NaN
            return x.float() if may_be_incomplete(x) else x.long()
        return x.float()

    def held_out(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (on the CPU) as held-out data is seen by validation, ``dgm eval``, ``score``,
        ``ood``, ``impute`` and the figures: transformed with the fixed noise of a CPU generator
        seeded with ``VALID_SEED``, the same binarization or dequantization on every call."""
        return self(x, torch.Generator().manual_seed(VALID_SEED))

    def check_stored(self, x: torch.Tensor) -> None:
        """Refuses (DataError) data ``x`` as stored that this transform does not read: values other
        than the integer levels 0..L-1 (NaN: missing), for every kind but continuous data. Every
        call looks at its input on the CPU; this looks at data on any device, for a whole split
        checked once (the Trainer's: a probe of its first rows let a level of 99 in row 1100 through)."""
        if self.kind != "continuous":
            self._check_levels(x)

    def _check_levels(self, x: torch.Tensor) -> None:
        """Refuses (DataError) values that are not the stored integer levels 0..L-1 (NaN: missing),
        such as images already scaled to [0, 1], whose likelihood would be of other data."""
        top = 1 if self.kind == "binary" else self.num_levels
        if top is None or x.numel() == 0:
            return
        top = 1 if self.kind == "binary" else top - 1
        lo, hi, whole = math.inf, -math.inf, True
        for part in x.reshape(-1).split(1 << 22):  # (in parts: the copies of a look at all of a large x at once)
            v = part[~torch.isnan(part)] if part.is_floating_point() else part
            if v.numel():
                lo, hi = min(lo, v.min().item()), max(hi, v.max().item())
                whole = whole and (not v.is_floating_point() or bool((v == v.round()).all()))
        if lo > hi:  # (every entry missing)
            return
        if lo < 0 or hi > top or not whole:
            v = x[~torch.isnan(x)] if x.is_floating_point() else x  # (all of them, for the message)
            wanted = f"the {self.kind} transform reads the data as stored, integer levels 0..{top}"
            infinite = int(torch.isinf(v).sum()) if v.is_floating_point() else 0
            if infinite:
                entries = "1 entry is" if infinite == 1 else f"{infinite} entries are"
                raise DataError(f"{wanted}; {entries} infinite (NaN marks a missing entry)")
            scaled = " (pass the raw integers, not images scaled to [0, 1])" if not whole and lo >= 0 and hi <= 1 else ""
            raise DataError(f"{wanted}; got {values_seen(v)}{scaled}")

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The interval that every value this transform makes lies in, where there is one: [0, 1]
        for binary and dequantized or scaled levels, [0, L - 1] for the integers as they stand; None
        for continuous data, which may lie anywhere."""
        if self.kind == "continuous":
            return None
        if self.kind == "integers":
            return (0.0, float(self.num_levels - 1)) if self.num_levels is not None else (0.0, math.inf)
        return (0.0, 1.0)

    @property
    def log_volume(self) -> float:
        """log of the Jacobian from integer data to the transformed continuous data, per
        dimension: D times this is added to a continuous NLL to bound the integer NLL."""
        return math.log(self._levels) if self.kind == "dequantize" else 0.0


def scores_densities(kind: str, model: object = None) -> bool:
    """Whether a model's numbers of data taken by the transform ``kind`` are log-densities of
    continuous values (no bits/dim; they shift with the data's scale), not log-probabilities:
    data taken as they are ("continuous"), but for a table of categorical columns only (the mixed
    likelihood of ``model``'s settings, its ``table_levels`` none 0), whose numbers are the
    probabilities of its categories, per column in bits as those of integer levels. ``model``: the
    model's settings, or their table in a run's config.json."""
    setting = (lambda k: model.get(k)) if isinstance(model, dict) else (lambda k: getattr(model, k, None))  # noqa: E731
    levels = setting("likelihood") == "mixed" and setting("table_levels")
    return kind == "continuous" and not (levels and min(levels) > 0)


def _numeric_columns_only(dataset: Dataset, what: str) -> None:
    """Refuses (DataError) a table with categorical columns for a density of numbers, which would
    score their category indices as numbers; and anything but a Dataset (a split of one, the
    arguments swapped, None: an AttributeError on ``columns``), by what it is."""
    if not isinstance(dataset, Dataset):
        hint = " (its splits' levels are the Dataset's: give the Dataset)" if type(dataset).__name__ == "Split" else ""
        raise DataError(
            f"a data transform is chosen for a dgmkit Dataset (dgmkit.data.load_dataset(name)), got "
            f"{shown_value(dataset) if isinstance(dataset, str) else type(dataset).__name__}{hint}"
        )
    cats = [c.name for c in dataset.columns if c.levels]
    if cats:
        raise DataError(
            f"{dataset.name}: the column(s) {', '.join(cats)} are categorical, and {what} would score their category "
            "indices as numbers; model the table with a VAE and --likelihood mixed (a categorical for each such column)"
        )


def make_transform(
    likelihood: str, dataset: Dataset, binarize: str = "auto", other: str = "choose another likelihood"
) -> DataTransform:
    """Choose the transform a likelihood needs for a dataset, or fail with a clear reason;
    ``other``: what else the user can do (a family of one likelihood: another family)."""
    _numeric_columns_only(dataset, f"a {likelihood} likelihood")
    levels = dataset.num_levels
    if binarize not in ("auto", "dynamic", "none"):
        raise DataError(f"binarize must be auto, dynamic or none, got {binarize!r}")
    if likelihood == "bernoulli":
        if levels == 2:
            return DataTransform("binary", 2)
        if levels is None:
            flag = " (--binarize dynamic draws binary pixels from integer levels, not from continuous values)"
            raise DataError(
                f"{dataset.name}: non-binary continuous data cannot have a bernoulli likelihood"
                f"{flag if binarize == 'dynamic' else ''}; model them with a density of continuous values: "
                "--likelihood gaussian (or student-t) in the VAE families, or --model flow"
            )
        dynamic = binarize == "dynamic" or (binarize == "auto" and dataset.name in _NAMED_8BIT)
        if not dynamic:
            raise DataError(
                f"{dataset.name}: non-binary data ({levels} levels) for a bernoulli likelihood; "
                f"pass --binarize dynamic to binarize it on the fly, or {other}"
            )
        return DataTransform("dynamic-binarize", levels)
    if likelihood in ("gaussian", "student-t"):
        return DataTransform("continuous", None) if levels is None else DataTransform("dequantize", levels)
    if likelihood in ("categorical", "logistic"):
        if levels is None:
            raise DataError(f"{dataset.name}: the {likelihood} likelihood needs integer pixel data, got continuous data")
        return DataTransform("integers", levels)
    raise DataError(
        f"unknown likelihood {likelihood!r}: the transforms are those of bernoulli, gaussian, student-t, categorical and "
        "logistic (a likelihood head of your own takes gaussian's for continuous values, categorical's for integer levels)"
    )


def density_transform(dataset: Dataset, variational: bool = False) -> DataTransform:
    """For models of continuous densities (flows): quantized data are uniformly dequantized
    to [0, 1] (so that D log L is added to the NLL of y to bound the integers' NLL); continuous
    data are used as they are. With ``variational`` the model dequantizes itself: integers."""
    _numeric_columns_only(dataset, "a density of continuous values")
    if variational:
        if dataset.num_levels is None:
            raise DataError(f"{dataset.name}: variational dequantization needs integer data, got continuous data")
        return DataTransform("integers", dataset.num_levels)
    return (
        DataTransform("continuous", None) if dataset.num_levels is None else DataTransform("dequantize", dataset.num_levels)
    )
