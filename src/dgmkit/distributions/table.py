"""The likelihood of a table's row: a Gaussian per numeric column, a categorical per categorical one."""

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

__all__ = ["MixedColumns"]


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
        var = self.scale**2
        gauss = -((value - self.loc) ** 2) / (2 * var) - self.scale.log() - 0.5 * math.log(2 * math.pi)
        logp = F.log_softmax(self.logits, -1)
        shape = torch.broadcast_shapes(value.shape, logp.shape[:-1])
        index = torch.where(self.categorical, value, torch.zeros_like(value)).round().long()
        index = index.clamp(0, logp.shape[-1] - 1).expand(shape)
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
