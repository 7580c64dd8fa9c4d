"""Bernoulli and Gaussian likelihoods over an event of pixels; ``log_prob(x)`` sums over the
image dimensions and returns one value per example."""

import contextlib
from collections.abc import Iterator

import torch
from torch.distributions import Distribution, Independent

from dgmkit.distributions.bernoulli import BernoulliPixels
from dgmkit.distributions.normal import PreciseNormal

__all__ = [
    "bernoulli_pixels",
    "gaussian_pixels",
    "pixel_mean",
    "element_log_probs",
    "observed_log_prob",
    "complete_data",
    "may_be_incomplete",
]

_complete_depth = 0  # how many complete_data() blocks are open


@contextlib.contextmanager
def complete_data() -> Iterator[None]:
    """Within: the data given to models and likelihoods are known to hold no missing entry
    (NaN), checked once by the caller (the Trainer checks its splits when it starts). The
    per-batch look for NaN (``may_be_incomplete``), which on a GPU waits for the device in every
    step, is then left out; the numbers are the same. The setting is process-wide (a counter the
    compiled step can read), for the training loop's single thread: do not hold it across a
    ``yield`` or while another thread scores data that may be incomplete."""
    global _complete_depth
    _complete_depth += 1
    try:
        yield
    finally:
        _complete_depth -= 1


def may_be_incomplete(x: torch.Tensor) -> bool:
    """Whether ``x`` may hold missing entries (NaN): False for integer data and within
    ``complete_data()``; otherwise whether it does."""
    return _complete_depth == 0 and x.is_floating_point() and bool(torch.isnan(x).any())


def bernoulli_pixels(logits: torch.Tensor, event_dims: int) -> BernoulliPixels:
    """Independent Bernoulli pixels with the given logits; mean is sigmoid(logits)."""
    return BernoulliPixels(logits, event_dims)


def gaussian_pixels(loc: torch.Tensor, scale: torch.Tensor, event_dims: int) -> Independent:
    """Independent Gaussian pixels N(loc, scale^2). The caller guarantees scale > 0 (a floor):
    the Gaussian likelihood of a VAE is unbounded when the variance may shrink to zero. Its
    log-density is ``PreciseNormal``'s, exact at a floor below 1e-19 too."""
    return Independent(PreciseNormal(loc, scale, validate_args=False), event_dims, validate_args=False)


def pixel_mean(dist: Distribution) -> torch.Tensor:
    """The mean of a pixel distribution in data units, for display."""
    return dist.mean


def element_log_probs(dist: Distribution, value: torch.Tensor) -> torch.Tensor:
    """log p(x_d) of every pixel of a factorized pixel distribution, not summed over the event
    (for likelihoods of partly observed data): (*batch, *event). A factorized one is an
    ``Independent`` of a distribution of single values (Normal, Bernoulli, Laplace, ...: its
    ``log_prob`` is per element) or one that gives ``log_prob_elements`` (dgmkit's own)."""
    per = getattr(dist, "log_prob_elements", None)
    if per is not None:
        return per(value)
    base = _elementwise_base(dist)
    if base is not None:
        return base.log_prob(value)
    raise ValueError(
        f"missing entries need a likelihood that factorizes over the entries, and p(x|z) is a {_named(dist)}: "
        "torch.distributions.Independent(d, 3) of a distribution d of single values (Normal, Bernoulli, Laplace, ...) "
        "or a distribution with log_prob_elements(x), each entry's log-likelihood"
    )


def _elementwise_base(dist: Distribution) -> Distribution | None:
    """The base of an Independent of distributions of single values (its log_prob per entry), for
    a distribution without ``log_prob_elements`` of its own; else None."""
    if isinstance(dist, Independent) and not hasattr(dist, "log_prob_elements") and dist.base_dist.event_shape == ():
        return dist.base_dist
    return None


def _named(dist: Distribution) -> str:
    """The class's name, and an Independent's base and its event shape."""
    if isinstance(dist, Independent):
        return (
            f"Independent({type(dist.base_dist).__name__}) over its base's event shape {tuple(dist.base_dist.event_shape)}"
        )
    return type(dist).__name__


def observed_log_prob(dist: Distribution, value: torch.Tensor) -> torch.Tensor:
    """log p(x_o): the log-likelihood of the observed entries of ``value`` (NaN marks a missing
    one), summed over the event; ``dist.log_prob(value)`` when nothing is missing. Marginalizing
    the missing entries out of a distribution that factorizes over pixels leaves the product over
    the observed ones."""
    if not may_be_incomplete(value):
        return dist.log_prob(value)
    seen = ~torch.isnan(value)
    per = element_log_probs(dist, _filled(dist, value, seen))
    per = torch.where(seen, per, torch.zeros((), dtype=per.dtype, device=per.device))
    return per.flatten(per.dim() - len(dist.event_shape)).sum(-1)


def _filled(dist: Distribution, value: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
    """``value`` with each missing entry at a point of the likelihood's support, where its
    log-density and gradient are finite (they are then left out): 0, or for an Independent whose
    base excludes 0 (a LogNormal, a Gamma) the base's mean, without gradient."""
    base = _elementwise_base(dist)  # (None: 0, and element_log_probs reads it or names the distribution)
    support = None if base is None else base.support
    # (0 is asked on the CPU: no wait for a GPU, where the support does not hold tensors of the device)
    if base is None or support is None or bool(support.check(torch.zeros((), dtype=value.dtype)).all()):
        return value.nan_to_num(0.0)
    return torch.where(seen, value, base.mean.detach().to(value.dtype).expand_as(value))
