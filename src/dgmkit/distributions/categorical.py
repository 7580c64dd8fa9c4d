"""256-way (or L-way) categorical distribution per pixel."""

import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Distribution, OneHotCategorical, register_kl

from dgmkit.distributions.levels import LevelPixels

__all__ = ["CategoricalPixels", "one_hot_categorical", "one_hot"]


def one_hot(index: torch.Tensor, classes: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``F.one_hot(index, classes).to(dtype)`` without its check of the values on a CPU (a read
    of them back, which a step captured as a CUDA graph, or its emulation in the tests, cannot
    hold); an index outside 0..classes-1 gives a row of zeros.

    >>> one_hot(torch.tensor([2, 0]), 3)
    tensor([[0, 0, 1],
            [1, 0, 0]])
    """
    return (index.unsqueeze(-1) == torch.arange(classes, device=index.device)).to(dtype)


class _OneHotCategorical(OneHotCategorical):
    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        indices = self._categorical.sample(torch.Size(sample_shape))
        return one_hot(indices, self._categorical._num_events, self._categorical.logits.dtype)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p of one-hot ``value`` (..., *batch, K). A value of another width or batch is refused: torch's
        argmax scored a one-hot of 2 or of 4 classes under a prior of 3 as a class of the 3 silently (or raised
        "index 3 is out of bounds"), and V + 1 variables against V was "The size of tensor a ... must match"."""
        k = self._categorical._num_events
        try:
            torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
            fits = value.dim() > 0 and value.shape[-1] == k
        except RuntimeError:
            fits = False
        if not fits:
            raise ValueError(
                f"one-hot categoricals of batch shape {tuple(self.batch_shape)} over {k} classes score one-hot values of "
                f"shape (..., {', '.join(map(str, (*self.batch_shape, k)))}), got {tuple(value.shape)}"
            )
        return super().log_prob(value)


@register_kl(_OneHotCategorical, _OneHotCategorical)
def _kl_one_hot_categoricals(p: _OneHotCategorical, q: _OneHotCategorical) -> torch.Tensor:
    """KL(p || q): inf where q has no mass that p has, 0 terms where p has none, by torch.where:
    torch's categorical KL sets those entries by boolean indexing, a read of the mask back to the
    host (a wait for a GPU in every discrete VAE's step, and a read that a step captured as a CUDA
    graph cannot hold). No mass is a logit of -inf, not a probability that underflows to 0 (torch's
    test): a q of logits (0, -200) in float32 made KL(uniform || q) inf, not 99.31. The -inf logits
    are set to 0 before the difference: 0 * (-inf - b) in the branch that torch.where drops gave
    NaN gradients (every logit of p, for a p of logits (0, -inf, 1)), not a term's zero."""
    a, b = p._categorical, q._categorical
    if a.logits.shape[-1] != b.logits.shape[-1]:  # (was "The size of tensor a (4) must match the size of tensor b (3)")
        raise ValueError(
            f"KL(p || q) of one-hot categoricals needs as many classes in both, got {a.logits.shape[-1]} and "
            f"{b.logits.shape[-1]} (a categorical encoder's q(z|x) and the prior's p(z) over other classes?)"
        )
    a_none, b_none = a.logits == -torch.inf, b.logits == -torch.inf
    t = a.probs * (torch.where(a_none, 0.0, a.logits) - torch.where(b_none, 0.0, b.logits))
    t = torch.where(b_none, torch.inf, t)
    return torch.where(a_none, 0.0, t).sum(-1)


def one_hot_categorical(logits: torch.Tensor) -> OneHotCategorical:
    """``OneHotCategorical(logits=logits)`` checked nowhere: torch's checks the Categorical it
    holds whatever its own ``validate_args`` says, a read of the values (a wait for a GPU in
    every training step, and a read that a step captured as a CUDA graph cannot hold); its
    samples are made by ``one_hot``.

    >>> one_hot_categorical(torch.zeros(3, 4)).log_prob(torch.eye(4)[:3]).exp()
    tensor([0.2500, 0.2500, 0.2500])
    """
    d = _OneHotCategorical.__new__(_OneHotCategorical)
    d._categorical = Categorical(logits=logits, validate_args=False)
    Distribution.__init__(d, d._categorical.batch_shape, d._categorical.param_shape[-1:], validate_args=False)
    return d


class CategoricalPixels(LevelPixels):
    """Independent categorical pixels over the integers 0..L-1.

    ``logits`` has shape (*batch, *event, L); values have shape (*batch, *event) and hold
    integers. ``log_prob`` sums over the event dimensions.

    >>> d = CategoricalPixels(torch.zeros(2, 1, 4, 4, 256), event_dims=3)
    >>> d.log_prob(torch.zeros(2, 1, 4, 4, dtype=torch.long)).shape
    torch.Size([2])
    """

    def __init__(self, logits: torch.Tensor, event_dims: int):
        self.logits = logits
        super().__init__(logits, logits.shape[-1], event_dims)

    def log_prob_elements(self, value: torch.Tensor) -> torch.Tensor:
        """log p(x_d) of every element (not summed over the event): (*batch, *event)."""
        logp = F.log_softmax(self.logits, dim=-1)
        shape = torch.broadcast_shapes(value.shape, self.logits.shape[:-1])
        level, outside = self.in_support(value)
        per = logp.expand(*shape, self.num_levels).gather(-1, level.long().expand(shape).unsqueeze(-1)).squeeze(-1)
        return self.outside_support(per, value, outside)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        probs = F.softmax(self.logits, dim=-1)
        flat = probs.reshape(-1, self.num_levels)
        n = int(torch.Size(sample_shape).numel())
        if n == 0:  # (multinomial refuses to draw none)
            return torch.zeros(*sample_shape, *self.logits.shape[:-1], dtype=torch.long, device=self.logits.device)
        draws = torch.multinomial(flat, n, replacement=True)  # (P, n)
        return draws.T.reshape(*sample_shape, *self.logits.shape[:-1])

    @property
    def mean(self) -> torch.Tensor:
        levels = torch.arange(self.num_levels, device=self.logits.device, dtype=self.logits.dtype)
        return (F.softmax(self.logits, dim=-1) * levels).sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    def entropy(self) -> torch.Tensor:
        """H = -sum_k p_k log p_k per pixel, summed over the event; a level of logit -inf (p = 0)
        adds 0, as torch's Categorical takes it (0 * -inf was NaN)."""
        logp = F.log_softmax(self.logits, dim=-1)
        return self._reduce(-(logp.exp() * logp.clamp(min=torch.finfo(logp.dtype).min)).sum(-1))
