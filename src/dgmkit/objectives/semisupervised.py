r"""Objectives with labels, some of them hidden (label -1): M2's (also the auxiliary models'
of ``models.adgm``, whose terms come from the same enumeration over classes) and the hybrid model's.

M2 (Kingma et al. 2014, arXiv 1406.5298) maximizes, over the whole training set,

    J = sum_labelled L(x, y) + sum_unlabelled U(x) + alpha E_labelled[log q(y|x)],   alpha = a N

(the paper's eq. 9, with a = 0.1): the classification term is a mean over the N_l labelled
examples, so each of them carries alpha / N_l = a N / N_l. The batch mean of the loss is an
unbiased estimate of -J / N:
- where the Trainer adds labelled rows to every batch (``LabelledRows``, the setting
  ``labelled_batch`` > 0), a batch holds ``B_l`` >= 1 labelled and ``B_u`` unlabelled rows,
  each group a uniform draw from its own; each row is weighted by the inverse of its group's
  share in the batch, (N_l / N) (B / B_l) or (N_u / N) (B / B_u);
- where it adds none, a batch is a uniform draw from the whole training set, and each row
  keeps weight 1 (the group weights would drop the labelled term from every batch that happens
  to hold no label, a bias).

With ``num_samples`` = S > 1, each datapoint's L(x, y), U(x) and log q(y|x) are the means of
their estimates from S independent draws of the continuous latents (z, and a in the auxiliary
models; U(x) formed per draw), as the ADGM authors' code averages its 5 draws.

The hybrid model (Nalisnick et al. 2019, arXiv 1902.02767) maximizes
log p(y|x) + (lambda / D) log p(x) (where the label is hidden, the second term alone).
"""

from typing import NamedTuple

import torch
import torch.distributed as dist

from dgmkit.data.labels import HIDDEN, class_indices, labels_are_checked, labels_shown
from dgmkit.errors import whole_at_least
from dgmkit.models.hybrid import HybridFlow
from dgmkit.models.m2 import SemiSupervisedVAE
from dgmkit.objectives.base import Objective, at_least

__all__ = ["LabelledShares", "M2Objective", "M2Terms", "HybridObjective", "HybridObjectiveTerms"]


def _labels(x: torch.Tensor, y: torch.Tensor | None, num_classes: int, beta: float | torch.Tensor) -> torch.Tensor:
    """``y`` as class indices 0..num_classes-1 or -1 (hidden), checked by ``class_indices``
    unless the caller checked them (``data.labels.labels_checked``: the Trainer, once, not in
    every step, where the check reads the labels back from a GPU). Called directly, a label of K
    met an index out of bounds, and -2 was taken as hidden and 2.5 as class 2, silently. A
    ``beta`` of more than one value is labels passed third, where beta goes (they were not read)."""
    if isinstance(beta, torch.Tensor) and beta.dim() > 0:  # (a GraphStep's beta is a 0-dim tensor)
        raise TypeError(
            f"the third argument is beta, the KL weight (a number), got a tensor of shape {tuple(beta.shape)}: "
            "pass the labels as y=... (objective(model, x, y=y))"
        )
    if y is None:
        return torch.full((len(x),), HIDDEN, dtype=torch.long, device=x.device)
    if labels_are_checked():
        return y.long()
    return class_indices(y, len(x), "the labels y", num_classes, hidden=True).to(x.device)


def _group_weights(lab: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Each group's weight, for batches of ``lab`` (True: labelled row) that hold labelled rows
    added to the batch's uniform draw: the group's share of the training set (``share``, the
    labelled one) over its share of the batch (of the global batch in data-parallel training)."""
    b_l, b_u, rows = lab.sum(), (~lab).sum(), torch.full((), len(lab), device=lab.device)  # (no copy from the host)
    if torch.is_grad_enabled() and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        counts = torch.stack([b_l, b_u, rows])
        dist.all_reduce(counts)
        b_l, b_u, rows = counts[0], counts[1], counts[2]
    return share * rows / b_l.clamp(min=1), (1 - share) * rows / b_u.clamp(min=1)


def _at(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """t[b, y_b] (0 where y_b < 0), shape (B,)."""
    return torch.where(labels_shown(y), t.gather(1, y.clamp(min=0)[:, None]).squeeze(1), torch.zeros_like(t[:, 0]))


class LabelledShares:
    """What an objective of partly labelled batches knows of the training set: its size N
    (``setup``), its labelled rows N_l and the R of them added to every batch (``setup_labels``),
    by which ``group_weights`` reweights each group (labelled, unlabelled) to its share of the
    training set, so that the batch mean still estimates the mean over the training set."""

    train_size: int | None = None
    labelled: int | None = None
    added: int = 0  # labelled rows drawn into every batch (``setup_labels``)

    def setup(self, train_size: int) -> None:
        self.train_size = train_size

    def setup_labels(self, labelled: int, added: int = 0) -> None:
        self.labelled = labelled
        self.added = added

    def group_weights(self, lab: torch.Tensor) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(w_l, w_u): each labelled and each unlabelled row's weight (1 and 1 where batches are
        uniform draws, or without ``setup_labels``)."""
        if self.added > 0 and self.labelled is not None and self.train_size:
            return _group_weights(lab, self.labelled / self.train_size)
        return 1.0, 1.0


class M2Terms(NamedTuple):
    """Per-example tensors (B,): ``elbo`` = U(x), the bound on log p(x) with y summed out (for
    every example, labelled or not); ``log_qy`` = log q(y|x) at the label and ``accuracy`` = 1
    where q(y|x) puts the label first (both 0 for unlabelled examples); ``labelled`` = 1 where
    the label is kept. In the auxiliary models (``models.adgm``) ``log_qy`` reads q(y|a,x) at the
    draw of a that the bound used (its log averaged over the ``num_samples`` draws), and so does
    ``accuracy`` while the model trains (``model.training``); in eval mode (validation: the epoch
    line's "valid acc") ``accuracy`` is that of the classifier q(y|x) = E_q(a|x)[q(y|a,x)] of
    ``class_log_probs``, its ``class_samples`` draws of a, as ``dgm eval`` scores it."""

    loss: torch.Tensor
    elbo: torch.Tensor
    log_qy: torch.Tensor
    accuracy: torch.Tensor
    labelled: torch.Tensor


class M2Objective(LabelledShares, Objective[SemiSupervisedVAE]):
    """M2's objective (module docstring) with the classification weight ``alpha`` = a N on the
    mean over the labelled examples, a = ``alpha_fraction``, N the training set's size
    (``setup``) and N_l its labelled examples (``setup_labels``)."""

    score = "elbo"
    score_label = "ELBO"
    takes_labels = True
    label_terms = ("log_qy", "accuracy")

    def __init__(self, alpha_fraction: float = 0.1, num_samples: int = 1):
        self.alpha_fraction = at_least("alpha_fraction", alpha_fraction, 0)
        self.num_samples = whole_at_least("num_samples", num_samples, 1)

    def __call__(
        self, model: SemiSupervisedVAE, x: torch.Tensor, beta: float = 1.0, y: torch.Tensor | None = None
    ) -> M2Terms:
        y = _labels(x, y, model.num_classes, beta)
        s = self.num_samples
        t = model.enumerate(x.repeat_interleave(s, 0) if s > 1 else x)
        u = t.unlabelled()  # (B S,)
        bound, all_log_qy = t.bound, t.log_qy
        if s > 1:  # each datapoint's S draws (rows b S .. b S + S - 1) averaged
            u = u.view(len(x), s).mean(1)
            bound, all_log_qy = bound.view(len(x), s, -1).mean(1), all_log_qy.view(len(x), s, -1).mean(1)
        lab = labels_shown(y)
        bound_y, log_qy = _at(bound, y), _at(all_log_qy, y)
        n = self.train_size or len(x)
        w_l, w_u = self.group_weights(lab)
        # N_l, the labelled examples (without ``setup_labels``: the batch's labelled rows)
        n_l = self.labelled if self.labelled else lab.sum().clamp(min=1)
        alpha = self.alpha_fraction * n / n_l  # alpha = a N on the mean over labelled examples: a N / N_l each
        loss = torch.where(lab, -w_l * (bound_y + alpha * log_qy), -w_u * u)
        # (in eval mode, the classifier dgm eval scores; M2's is all_log_qy already: no second pass)
        classifies = model.training or model.enumerates_classifier
        scores = all_log_qy if classifies else _classifier_log_probs(model, x)
        correct = (scores.argmax(-1) == y) & lab
        return M2Terms(loss, u, log_qy, correct.float(), lab.float())


def _classifier_log_probs(model: SemiSupervisedVAE, x: torch.Tensor) -> torch.Tensor:
    """log q(y|x) as ``dgm eval`` classifies by it (``class_log_probs``: in the auxiliary models
    the mean of q(y|a,x) over their ``class_samples`` draws of a), drawn on a fork of the random
    state, so that the draws that follow (training's, after a validation) are those they were."""
    with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
        return model.class_log_probs(x)


class HybridObjectiveTerms(NamedTuple):
    """Per-example tensors (B,): ``objective`` = log p(y|x) + (lambda / D) log p(x) (the first
    term 0 where the label is hidden), ``log_px`` exact, ``log_py_x`` at the label, ``accuracy``
    1 where p(y|x) puts the label first, ``labelled`` 1 where the label is kept."""

    loss: torch.Tensor
    objective: torch.Tensor
    log_px: torch.Tensor
    log_py_x: torch.Tensor
    accuracy: torch.Tensor
    labelled: torch.Tensor


class HybridObjective(LabelledShares, Objective[HybridFlow]):
    """-(log p(y|x) + (lambda / D) log p(x)) for a ``models.HybridFlow`` over D dimensions.

    The score that training monitors (early stopping, the best checkpoint) is the exact
    log p(x), which needs no label; the objective and the accuracy are logged beside it. Where
    ``setup_labels`` adds labelled rows to every batch, each group (labelled, unlabelled) is
    reweighted to its share of the training set, so that the batch mean still estimates the
    objective's mean over the training set (as M2's)."""

    score = "log_px"
    score_label = "log p(x)"
    takes_labels = True
    label_terms = ("log_py_x", "accuracy")

    def __init__(self, px_weight: float = 1.0):
        self.px_weight = at_least("px_weight", px_weight, 0)

    def __call__(
        self, model: HybridFlow, x: torch.Tensor, beta: float = 1.0, y: torch.Tensor | None = None
    ) -> HybridObjectiveTerms:
        y = _labels(x, y, model.num_classes, beta)
        t = model.joint(x)
        lab = labels_shown(y)
        log_py_x = _at(t.log_py_x, y)
        objective = log_py_x + self.px_weight / model.flow.num_dims * t.log_px
        w_l, w_u = self.group_weights(lab)  # each group to its share, as M2's
        weight = torch.where(lab, w_l, w_u) if isinstance(w_l, torch.Tensor) else 1.0
        correct = (t.log_py_x.argmax(-1) == y) & lab
        return HybridObjectiveTerms(-weight * objective, objective, t.log_px, log_py_x, correct.float(), lab.float())
