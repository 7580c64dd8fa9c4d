"""256-way (or L-way) categorical distribution per pixel."""

import torch
import torch.nn.functional as F

from dgmkit.distributions.levels import LevelPixels

__all__ = ["CategoricalPixels"]


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
        value = value.long().expand(shape)
        return logp.expand(*shape, self.num_levels).gather(-1, value.unsqueeze(-1)).squeeze(-1)

    def sample(self, sample_shape: torch.Size | list[int] | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        probs = F.softmax(self.logits, dim=-1)
        flat = probs.reshape(-1, self.num_levels)
        n = int(torch.Size(sample_shape).numel())
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
        logp = F.log_softmax(self.logits, dim=-1)
        return self._reduce(-(logp.exp() * logp).sum(-1))
