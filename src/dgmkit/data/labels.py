"""Semi-supervised data: keep N labels of a split, balanced over the classes, hide the rest.

>>> s = Split(torch.zeros(6, 1, 1, 1), torch.tensor([0, 0, 0, 1, 1, 1]))
>>> kept = keep_labels(s, 2, num_classes=2, seed=0).y
>>> (kept >= 0).sum().item(), sorted(kept[kept >= 0].tolist())
(2, [0, 1])
"""

import dataclasses

import torch

from dgmkit.data.dataset import Split
from dgmkit.errors import DataError, whole_at_least

__all__ = ["keep_labels", "check_labels", "HIDDEN"]

HIDDEN = -1  # the label of an example whose label is not used


def check_labels(split: Split, num_classes: int, what: str = "the training split") -> torch.Tensor:
    """The split's labels, refused unless every one is a class 0..num_classes-1."""
    if split.y is None:
        raise DataError(f"{what} has no labels; a model trained on labels needs a labelled dataset")
    y = split.y.long()
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        low, top = int(y.min()), int(y.max())
        fix = "labels counted from 1? subtract 1 from each" if low == 1 and top == num_classes else "set --classes"
        raise DataError(f"{what} holds labels {low}..{top}, outside the model's classes 0..{num_classes - 1} ({fix})")
    return y


def keep_labels(split: Split, n: int | None, num_classes: int, seed: int) -> Split:
    """``split`` with ``n`` labels kept, n / K of each of the K classes, drawn at random with
    ``seed`` (the same draw for the same split and seed), and the others set to ``HIDDEN``;
    ``n = None`` keeps them all. Refused unless n is a positive multiple of K that each class can supply."""
    y = check_labels(split, num_classes)
    if n is None:
        return dataclasses.replace(split, y=y)
    n = whole_at_least("--labels", n, 1, DataError)  # (-2 kept all but one of each class; 2.0 was a TypeError)
    if n % num_classes:
        raise DataError(f"--labels {n} cannot be balanced over {num_classes} classes: give a multiple of {num_classes}")
    if n > len(y):
        raise DataError(f"--labels {n} is more than the {len(y)} training datapoints")
    per_class = n // num_classes
    g = torch.Generator().manual_seed(seed)
    kept = torch.full_like(y, HIDDEN)
    for c in range(num_classes):
        members = torch.nonzero(y == c).flatten()
        if len(members) < per_class:
            top = int(y.max()) + 1
            fewer = f" (its labels take {top} values: --classes {top}?)" if top < num_classes and not len(members) else ""
            raise DataError(
                f"--labels {n} needs {per_class} examples of class {c}; the training split holds {len(members)}{fewer}"
            )
        pick = members[torch.randperm(len(members), generator=g)[:per_class]]
        kept[pick] = c
    return dataclasses.replace(split, y=kept)
