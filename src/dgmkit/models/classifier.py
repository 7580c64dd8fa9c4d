"""The classifier capability: a model that also gives a distribution over class labels.

A semi-supervised VAE (M2) classifies with its q(y|x), a hybrid flow with its p(y|x); both
declare it by this interface, so that training and ``dgm eval`` report accuracy without
naming either. It adds the accuracy to the model's ``evaluation_terms``: list it before the
``GenerativeModel`` base, so that its method comes first and passes on to the model's own.
"""

import math
from abc import ABC, abstractmethod

import torch

from dgmkit.data.labels import class_indices, labels_shown
from dgmkit.models.terms import Term

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

    def evaluation_terms(
        self, x: torch.Tensor, y: torch.Tensor | None, estimate: dict[str, torch.Tensor], batch_size: int
    ) -> dict[str, Term]:
        """The model's own terms and, where the split has labels, the share it classifies right."""
        terms = super().evaluation_terms(x, y, estimate, batch_size)  # type: ignore[misc]  # a mixin: the next class in the MRO has it
        if y is not None:  # (a hidden label, HIDDEN: a partly labelled file's, was counted as an error)
            # (a label beyond the classes, which no prediction can match, was counted as an error, silently)
            y = class_indices(y, len(x), "evaluate()'s labels y", self.num_classes, hidden=True).to(x.device)
            right = (self.predict(x, batch_size) == y).double().masked_fill(~labels_shown(y), math.nan)
            shown = int(labels_shown(y).sum())
            hidden = f" ({len(y) - shown} hidden)" if shown < len(y) else ""
            share = right.nansum().item() / shown if shown else math.nan
            note = f"{100 * (1 - share):.2f}% error on {'all ' * (not hidden)}{shown} labels{hidden}"
            undefined = f"all {len(y)} labels are hidden"  # (shown as "n/a: " and the reason, as every term's)
            terms["accuracy"] = Term("accuracy", right, unit="", note=note, undefined=undefined, partial=True, digits=4)
        return terms
