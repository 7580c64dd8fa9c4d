"""The classifier capability: a model that also gives a distribution over class labels.

A semi-supervised VAE (M2) classifies with its q(y|x), a hybrid flow with its p(y|x); both
declare it by this interface, so that training and ``dgm eval`` report accuracy without
naming either.
"""

from abc import ABC, abstractmethod

import torch

__all__ = ["Classifier"]


class Classifier(ABC):
    """``num_classes`` labels 0..K-1; ``class_log_probs(x)`` gives log q(y|x) or log p(y|x),
    shape (B, K), for a batch of data (B, *event) as the model scores it."""

    num_classes: int

    @abstractmethod
    def class_log_probs(self, x: torch.Tensor) -> torch.Tensor: ...

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """The most probable class of each datapoint, shape (N,), in batches."""
        return torch.cat([self.class_log_probs(x[i : i + batch_size]).argmax(-1) for i in range(0, len(x), batch_size)])
