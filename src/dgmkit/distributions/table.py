"""The likelihood of a table's row: a Gaussian per numeric column, a categorical per categorical one."""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

from dgmkit.distributions.normal import normal_log_density

__all__ = ["MixedColumns", "TableColumns"]


class TableColumns(constraints.Constraint):
    """The values of a table's row, column by column (the last dimension): any real number in
    a numeric column (``levels[d]`` 0), the indices 0..levels[d]-1 in a categorical one."""

    is_discrete = False
    event_dim = 0

    def __init__(self, levels: torch.Tensor):
        self.levels = levels
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        levels = self.levels.to(value.device)
        value = value if value.is_floating_point() else value.double()  # (integer or boolean data)
        index = (value == value.round()) & (value >= 0) & (value <= levels - 1)
        return torch.where(levels > 0, index, value == value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(levels={self.levels.tolist()})"

    def describe(self) -> str:
        cats = [f"column {d}: 0..{n - 1}" for d, n in enumerate(self.levels.tolist()) if n > 0]
        return f"real numbers in numeric columns and category indices in categorical ones ({', '.join(cats)})"


class MixedColumns(Distribution):
    """Independent columns of one row, event shape (1, 1, D): column d is N(loc_d, scale_d^2)
    where ``levels[d]`` is 0 (a numeric column), else categorical over 0..levels[d]-1 with
    logits ``logits[..., d, :levels[d]]`` (the rest of the row of logits is ignored).

    ``loc``, ``scale``: (*batch, 1, 1, D); ``logits``: (*batch, 1, 1, D, K) with K >= the most
    levels. Values hold the numeric columns' values and the categorical columns' indices."""

    arg_constraints = {}
    has_rsample = False
    support = constraints.real

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, logits: torch.Tensor, levels: torch.Tensor):
        self.loc, self.scale, self.levels = loc, scale, levels
        k = logits.shape[-1]
        pad = torch.arange(k, device=logits.device) >= levels.clamp(min=1).unsqueeze(-1)  # (D, K): not a category
        self.logits = logits.masked_fill(pad, -math.inf)
        self.categorical = levels > 0  # (D,)
        super().__init__(loc.shape[:-3], loc.shape[-3:], validate_args=False)

    def log_prob_elements(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x_d) of every column (not summed): (*batch, 1, 1, D)."""
        gauss = normal_log_density(value, self.loc, self.scale)  # (exact at a tiny scale too)
        logp = F.log_softmax(self.logits, -1)
        shape = torch.broadcast_shapes(value.shape, logp.shape[:-1])
        index = torch.where(self.categorical, value, torch.zeros_like(value))
        if not bool(TableColumns(self.levels).check(index).all()):  # (a rounded or clamped index: another category)
            raise ValueError(
                f"a categorical column holds a value that is not one of its indices ({self.levels.tolist()} levels)"
            )
        index = index.long().expand(shape)
        cat = logp.expand(*shape, logp.shape[-1]).gather(-1, index.unsqueeze(-1)).squeeze(-1)
        return torch.where(self.categorical, cat, gauss)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.log_prob_elements(value).sum((-3, -2, -1))

    def _mode(self) -> torch.Tensor:
        return self.logits.argmax(-1).to(self.loc.dtype)

    @property
    def mean(self) -> torch.Tensor:
        """The numeric columns' means and the categorical columns' most probable categories."""
        return torch.where(self.categorical, self._mode(), self.loc)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            shape = torch.Size(sample_shape) + self.loc.shape
            gauss = self.loc.expand(shape) + self.scale.expand(shape) * torch.randn(shape, device=self.loc.device)
            probs = F.softmax(self.logits, -1).expand(*shape, self.logits.shape[-1])
            cat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(shape).to(self.loc.dtype)
            return torch.where(self.categorical, cat, gauss)

    def imputation_statistics(self) -> torch.Tensor:
        """What a single imputation averages over posterior draws, (*batch, 1, 1, D, K): a
        numeric column's mean (in slot 0), a categorical column's probabilities."""
        probs = F.softmax(self.logits, -1)
        mean = F.pad(self.loc.unsqueeze(-1), (0, probs.shape[-1] - 1))
        return torch.where(self.categorical.unsqueeze(-1), probs, mean)

    def imputation_point(self, stats: torch.Tensor) -> torch.Tensor:
        """The averaged statistics as values: the mean; the most probable category."""
        return torch.where(self.categorical, stats.argmax(-1).to(stats.dtype), stats[..., 0])
