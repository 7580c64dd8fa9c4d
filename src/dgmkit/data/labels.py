"""Semi-supervised data: keep N labels of a split, balanced over the classes, hide the rest.

>>> s = Split(torch.zeros(6, 1, 1, 1), torch.tensor([0, 0, 0, 1, 1, 1]))
>>> kept = keep_labels(s, 2, num_classes=2, seed=0).y
>>> (kept >= 0).sum().item(), sorted(kept[kept >= 0].tolist())
(2, [0, 1])
"""

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import TypeVar

import numpy as np
import torch

from dgmkit.data.dataset import Split
from dgmkit.errors import DataError, whole_at_least

__all__ = [
    "keep_labels",
    "check_labels",
    "class_indices",
    "labels_checked",
    "labels_are_checked",
    "HIDDEN",
    "labels_shown",
    "check_shown_classes",
]

HIDDEN = -1  # the label of an example whose label is not used

Labels = TypeVar("Labels", torch.Tensor, np.ndarray)


def labels_shown(y: Labels) -> Labels:
    """Which of the labels ``y`` (checked: classes 0, 1, ... or ``HIDDEN``) are shown, a boolean
    mask: the one test of a label's being hidden, for training, evaluation, clustering and plots."""
    return y != HIDDEN


MAX_LABEL = 2**31 - 1  # the largest class index a label may be (a label file's too: ``registry``)


_CHECKED = False  # inside ``labels_checked`` (a plain flag: torch.compile traces a read of it, not a ContextVar's)


@contextlib.contextmanager
def labels_checked() -> Iterator[None]:
    """Within it, the labels an objective is given were checked by its caller (``class_indices``):
    the Trainer checks its labels once, and enters this around its steps, so that no step reads
    them back from a GPU to check them again (a wait every step, and no CUDA graph). A context
    rather than an argument: an objective of one's own keeps its call, (model, x, beta, y=y). The
    flag is the process's, not a thread's."""
    global _CHECKED
    before, _CHECKED = _CHECKED, True
    try:
        yield
    finally:
        _CHECKED = before


def labels_are_checked() -> bool:
    """Whether the labels being given were checked already (inside ``labels_checked``)."""
    return _CHECKED


def class_indices(y: object, n: int, what: str, num_classes: int | None = None, hidden: bool = False) -> torch.Tensor:
    """Labels ``y`` as int64 class indices: a tensor of one label per datapoint, shape (n,), of
    whole numbers (integers, booleans, or floats that are whole, finite and at most ``MAX_LABEL``
    in size), each one of the classes 0..num_classes-1 where ``num_classes`` is given, or
    ``HIDDEN`` where ``hidden``. Every place that takes labels (a split's for training,
    ``evaluate``'s, a Trainer's) checks them here, so each refuses the same labels in the same
    words: one label broadcast against N predictions gave an accuracy of 0.0, 2.5 was read as
    class 2, inf as -2^63, and a label beyond the classes failed at the first step as an index
    out of bounds (a device-side assert on CUDA)."""
    if not isinstance(y, torch.Tensor):
        raise DataError(
            f"{what} must be a torch tensor, one label per datapoint, got {type(y).__name__} "
            "(torch.as_tensor(y) makes one of a NumPy array)"
        )
    if tuple(y.shape) != (n,):
        raise DataError(f"{what} must be one label per datapoint, shape ({n},), got shape {tuple(y.shape)}")
    if y.is_complex() or (
        y.is_floating_point() and not bool((y.isfinite() & (y == y.round()) & (y.abs() <= MAX_LABEL)).all())
    ):
        raise DataError(f"{what} must be class indices, whole numbers; these hold others (or NaN or inf)")
    y = y.long()
    lowest = HIDDEN if hidden else 0
    if num_classes is None and n and y.min() < lowest:  # (a label of -5 was counted as a wrong class)
        raise DataError(f"{what} holds label {int(y.min())}: class indices are 0 or more{f' ({HIDDEN}: hidden)' * hidden}")
    if num_classes is not None and n and (y.min() < lowest or y.max() >= num_classes):
        low, top = int(y.min()), int(y.max())
        if low == 1 and top == num_classes:
            fix = " (labels counted from 1? subtract 1 from each)"
        else:
            fix = "" if hidden else " (set --classes)"
        also = f" and {HIDDEN} (hidden)" if hidden else ""
        raise DataError(f"{what} holds labels {low}..{top}, outside the model's classes 0..{num_classes - 1}{also}{fix}")
    return y


def check_labels(split: Split, num_classes: int, what: str = "the training split", hidden: bool = False) -> torch.Tensor:
    """The split's labels, refused unless every one is a class 0..num_classes-1 (or ``HIDDEN``
    where ``hidden``: a data file's rows whose label it does not show)."""
    if split.y is None:
        raise DataError(f"{what} has no labels; a model trained on labels needs a labelled dataset")
    return class_indices(split.y, len(split.x), what, num_classes, hidden)


def check_shown_classes(y: torch.Tensor, num_classes: int, what: str, setting: str = "num_classes") -> None:
    """Refuse training labels ``y`` (``HIDDEN`` where hidden) that show no example of one of a
    model's ``num_classes`` classes: a class never shown is never learnt, yet keeps its share of
    the model's probability over classes (M2's default 10 classes over a dataset of 2 trained 8
    empty ones, and its uniform p(y) gave them 4/5 of its mass: up to log 5 nats off log p(x);
    labels all of class 0 trained an M2 that names every datapoint 0). Where the classes without
    one are those above the labels shown, the refusal says to set ``setting`` (the CLI's
    --classes) to fewer."""
    shown = y[labels_shown(y)]
    if not len(shown):
        raise DataError(f"{what} shows no label (every one is hidden, {HIDDEN}): a model trained on labels needs some")
    empty = (torch.bincount(shown.cpu(), minlength=num_classes) == 0).nonzero().flatten().tolist()
    if not empty:
        return
    top = int(shown.max()) + 1
    fix = f"set {setting} {top}" if top >= 2 and empty[0] >= top else "give labels of every class"
    named = ", ".join(map(str, empty[:5])) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
    raise DataError(
        f"{what} shows no label of class{'es' if len(empty) > 1 else ''} {named} of the model's {num_classes} "
        f"classes (0..{num_classes - 1}): a class with no example is never learnt, yet keeps a share of the model's "
        f"probability over classes (a uniform p(y): 1/{num_classes} each): {fix}"
    )


def keep_labels(split: Split, n: int | None, num_classes: int, seed: int) -> Split:
    """``split`` with ``n`` labels kept, n / K of each of the K classes, drawn at random with
    ``seed`` (the same draw for the same split and seed), and the others set to ``HIDDEN``;
    ``n = None`` keeps them all. Refused unless n is a positive multiple of K that each class can supply.
    Labels the split hides already (a partly labelled data file's) stay hidden: the n are drawn from those it shows."""
    y = check_labels(split, num_classes, hidden=True)
    if n is None:
        return dataclasses.replace(split, y=y)
    n = whole_at_least("--labels", n, 1, DataError)  # (-2 kept all but one of each class; 2.0 was a TypeError)
    if n % num_classes:
        raise DataError(f"--labels {n} cannot be balanced over {num_classes} classes: give a multiple of {num_classes}")
    shown = int(labels_shown(y).sum())
    if n > shown:
        some = f"labels the training split shows (of its {len(y)} rows; the data hide the others, {HIDDEN})"
        raise DataError(f"--labels {n} is more than the {shown} {some if shown < len(y) else 'training datapoints'}")
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
