"""A table's row as a network reads it: numeric columns as they are, each categorical column as
indicators of its categories (one-hot), so that no order or distance between categories is read
into their indices (with the index itself as input, category 2 would lie "between" 1 and 3).

The indicator of category k is the hat function max(0, 1 - |x - k|): exactly one-hot at an
index, piecewise linear between two, so that inputs that are not indices (a VampPrior's
pseudo-inputs) still have a gradient. A missing entry (NaN) becomes 0 in a numeric column (its
standardized mean) and all-zero indicators in a categorical one (no category), as MIWAE's
zero imputation reads incomplete rows.
"""

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["OneHotColumns"]


class OneHotColumns(nn.Module):
    """x (B, *row) with D columns in the last dimensions -> (B, W): column d is one feature if
    ``levels[d]`` is 0 (numeric), else ``levels[d]`` indicators; W = sum(max(1, levels[d])).
    No parameters: a model's state dict does not hold it."""

    source: torch.Tensor
    category: torch.Tensor
    numeric: torch.Tensor

    def __init__(self, levels: Sequence[int]):
        super().__init__()
        if not levels or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in levels):
            raise ValueError(f"levels must be 0 (numeric) or a number of categories >= 1 per column, got {list(levels)}")
        source = [d for d, k in enumerate(levels) for _ in range(max(1, k))]
        category = [float(c) for k in levels for c in range(max(1, k))]
        numeric = [k == 0 for k in levels for _ in range(max(1, k))]
        self.levels = [int(k) for k in levels]
        self.width = len(source)
        self.register_buffer("source", torch.tensor(source), persistent=False)  # (W,): the column of each feature
        self.register_buffer("category", torch.tensor(category), persistent=False)  # (W,): its category
        self.register_buffer("numeric", torch.tensor(numeric), persistent=False)  # (W,): a numeric column's value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        row = x.reshape(x.shape[0], -1)
        if row.shape[1] != len(self.levels):
            raise ValueError(
                f"rows of {row.shape[1]} values given to the input layer of a table of {len(self.levels)} columns"
            )
        if not row.is_floating_point():
            row = row.to(self.category.dtype)
        v = row[:, self.source]  # (B, W)
        hat = (1 - (v - self.category.to(v.dtype)).abs()).clamp(min=0)
        return torch.where(self.numeric, v, hat).nan_to_num(0.0)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, width={self.width}"
