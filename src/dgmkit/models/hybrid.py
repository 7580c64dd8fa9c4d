r"""A hybrid model of x and y with one invertible network (Nalisnick et al. 2019, arXiv 1902.02767):

    p(x, y) = p(y | x) p(x),   z = T(x),
    log p(x) = log N(z; 0, I) + log|det dT/dx|   (the flow, exact),
    p(y | x) = softmax(W z + b)_y               (a generalized linear model of the flattened z).

One pass of the flow gives both factors, so one model reports accuracy, bits/dim and a density
for out-of-distribution detection.
"""

import math
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

from dgmkit.devices import widened
from dgmkit.errors import whole_at_least
from dgmkit.models.base import ExactLikelihoodModel
from dgmkit.models.classifier import Classifier
from dgmkit.models.flow import FlowModel

__all__ = ["HybridFlow", "HybridTerms"]


class HybridTerms(NamedTuple):
    """``log_px`` (B,): the flow's exact log p(x); ``log_py_x`` (B, K): log p(y|x) for every class."""

    log_px: torch.Tensor
    log_py_x: torch.Tensor


class HybridFlow(Classifier, ExactLikelihoodModel):
    """``flow``'s exact density and a linear classifier on its flattened output z (D features).

    >>> from dgmkit.transforms import realnvp
    >>> m = HybridFlow(FlowModel(realnvp(4, [8]), (4,), flatten=True), num_classes=3)
    >>> t = m.joint(torch.zeros(2, 4))
    >>> t.log_px.shape, t.log_py_x.shape
    (torch.Size([2]), torch.Size([2, 3]))
    """

    sample_temperature: ClassVar[bool] = True

    def __init__(self, flow: FlowModel, num_classes: int):
        super().__init__()
        if not isinstance(flow, FlowModel):
            raise TypeError(f"the hybrid model's flow must be a FlowModel, got {type(flow).__name__}")
        self.flow = flow
        self.event_shape = flow.event_shape
        self.num_classes = whole_at_least("the hybrid flow's num_classes", num_classes, 2)
        self.head = nn.Linear(flow.num_dims, num_classes)

    def joint(self, x: torch.Tensor) -> HybridTerms:
        z, ladj = self.flow.transform(x)  # (B, D), (B,)
        log_px = ladj - 0.5 * z.pow(2).sum(-1) - 0.5 * self.flow.num_dims * math.log(2 * math.pi)
        return HybridTerms(log_px, F.log_softmax(widened(self.head(z.flatten(1))), dim=-1))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self.flow.log_prob(x)

    @property
    def data_support(self) -> constraints.Constraint | None:
        """Its flow's (a Logit's [0, 1])."""
        return self.flow.data_support

    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        return self.joint(x).log_py_x

    sample_kind = "float"

    @torch.no_grad()
    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.flow.sample(n, generator, temperature=temperature)
