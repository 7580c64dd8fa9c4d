"""Clustering with a mixture prior: each datapoint goes to the component k that maximizes
p(k | z) at its posterior location (the mean z = E_q[z|x] where it has one), scored against true labels by accuracy under the
best label matching and by normalized mutual information."""

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

from dgmkit._modes import evaluates
from dgmkit.distributions import location
from dgmkit.errors import DgmError, EvaluationError, whole_at_least
from dgmkit.evaluation.figures import check_finite
from dgmkit.models import CapabilityError, GenerativeModel, LatentVariableModel

__all__ = ["cluster_assignments", "clustering_scores"]


@evaluates
@torch.no_grad()
def cluster_assignments(model: GenerativeModel, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    if not isinstance(model, LatentVariableModel) or model.num_components is None:
        raise CapabilityError("clustering needs a model whose prior is a mixture (for example --prior mog)")
    batch_size = whole_at_least("batch_size", batch_size, 1)  # (0 was range()'s error, -1 torch.cat's, 1.5 a TypeError)
    out = []
    for i in range(0, len(x), batch_size):
        z = location(model.posterior(x[i : i + batch_size]))
        check_finite(z, "posterior locations")  # (argmax over NaN responsibilities put every datapoint in component 0)
        try:
            out.append(model.assign_components(z))
        except DgmError:
            raise
        except ValueError as e:  # (a mixture that gives a finite z no finite density: the model's weights, not a bug)
            raise EvaluationError(f"{e}; the model's weights may be too large; nothing was written") from e
    return torch.cat(out)


def clustering_scores(assign: np.ndarray, labels: np.ndarray) -> dict:
    """``accuracy``: the best one-to-one matching of clusters to labels (Hungarian algorithm;
    with more clusters than labels the unmatched clusters count as errors).
    ``accuracy_majority``: each cluster takes its most frequent label (many-to-one).
    ``nmi``: normalized mutual information (arithmetic normalization; scikit-learn's 1 where the
    clusters and the labels are each one group, 0 / 0)."""
    assign, labels = np.asarray(assign), np.asarray(labels)
    if assign.ndim != 1 or labels.ndim != 1 or len(assign) != len(labels) or len(labels) == 0:
        raise ValueError(
            f"clustering scores take one cluster and one label a datapoint, two vectors of one length >= 1; got "
            f"shapes {assign.shape} and {labels.shape}"
        )
    for name, v in (("cluster assignments", assign), ("labels", labels)):
        if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
            raise ValueError(f"the {name} hold NaN or infinite values: each datapoint needs a cluster and a label")
    for name, v in (("cluster assignments", assign), ("labels", labels)):
        if v.dtype == object and any(e is None for e in v):  # (np.unique's "'<' not supported ... 'NoneType'")
            raise ValueError(f"the {name} hold None: each datapoint needs a cluster and a label")
    clusters, classes = np.unique(assign), np.unique(labels)
    counts = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(counts, (np.searchsorted(clusters, assign), np.searchsorted(classes, labels)), 1)
    rows, cols = linear_sum_assignment(-counts)
    n = len(labels)
    return {
        "accuracy": float(counts[rows, cols].sum() / n),
        "accuracy_majority": float(counts.max(1).sum() / n),
        "nmi": float(normalized_mutual_info_score(labels, assign)),
        "clusters_used": int(len(clusters)),
        "n": int(n),
    }
