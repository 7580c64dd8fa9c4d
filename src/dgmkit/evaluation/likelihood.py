r"""Importance-sampled log-likelihood (Rezende et al. 2014; Burda et al. 2016):

    log p(x) ~ log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x),   z_i ~ q(z|x)

a stochastic lower bound (in expectation) that tends to log p(x) as k grows. The encoder runs
once per datapoint; the k samples go through the decoder in chunks of at most ``chunk_size``
(datapoint, sample) pairs, so memory stays bounded for any k.
"""

import math

import torch
from torch.distributions import Independent, Normal

from dgmkit._rng import seeded_by

__all__ = ["importance_sampled_log_likelihood"]

_allocator_warmed = False


def _warm_allocator() -> None:
    """Allocate and free one 30 MiB buffer, once per process.

    glibc serves large blocks with mmap and raises its mmap and trim thresholds (up to 32 MiB)
    when such a block is freed. Without this, the decoder's few-MB buffers are unmapped after
    every chunk and page-faulted back in on the next, which costs a third of the run time here.
    This uses the allocator's own adaptive rule; no setting of the process is changed.
    """
    global _allocator_warmed
    if not _allocator_warmed:
        buf = torch.empty(30 * 2**20 // 4)
        buf.fill_(0)
        del buf
        _allocator_warmed = True


@torch.no_grad()
def importance_sampled_log_likelihood(
    model,
    x: torch.Tensor,
    k: int = 5000,
    batch_size: int = 32,
    chunk_size: int = 2048,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-datapoint estimate of log p(x) in nats, shape (N,).

    Datapoints are taken ``batch_size`` at a time; for each batch the samples are drawn in
    chunks of ``chunk_size // batch_size`` per datapoint and their log weights kept, (k, B)
    numbers, before one logsumexp. ``generator`` makes the estimate repeatable.

    2048 rows keep the decoder's GEMMs at the machine's peak while the per-chunk dispatch
    of the small tensor operations stays a few percent of the time (benchmarks/eval_speed.py).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model.eval()
    if x.device.type == "cpu":
        _warm_allocator()
    if _diagonal_normal_log_prob_from_noise(model.posterior(x[:1])) is None:
        return _generic(model, x, k, batch_size, chunk_size, generator)
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        q = model.posterior(xb)
        loc, scale = q.mean, q.stddev  # (B, M)
        log_q = _diagonal_normal_log_prob_from_noise(q)
        p = model.prior()
        per_chunk = max(1, chunk_size // len(xb))
        log_w = torch.empty(k, len(xb), device=xb.device, dtype=loc.dtype)
        for s in range(0, k, per_chunk):
            n = min(per_chunk, k - s)
            eps = torch.randn((n, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype)
            z = loc + scale * eps  # (n, B, M)
            log_w[s : s + n] = model.likelihood(z).log_prob(xb) + p.log_prob(z) - log_q(eps)
        out.append(torch.logsumexp(log_w, dim=0) - math.log(k))
    return torch.cat(out)


def _diagonal_normal_log_prob_from_noise(q):
    """For q = N(loc, diag(scale^2)) and z = loc + scale * eps, log q(z) depends on eps alone:
    -0.5 |eps|^2 - sum log scale - (M/2) log 2 pi. Exact, and cheaper than q.log_prob(z).
    Returns None for any other q."""
    if not (isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1):
        return None
    const = -q.base_dist.scale.log().sum(-1) - 0.5 * q.event_shape[0] * math.log(2 * math.pi)  # (B,)
    return lambda eps: const - 0.5 * eps.pow(2).sum(-1)


def _generic(model, x, k, batch_size, chunk_size, generator) -> torch.Tensor:
    """Any posterior with ``sample`` and ``log_prob`` (for example discrete latents)."""
    out = []
    with seeded_by(generator, x.device):
        for start in range(0, len(x), batch_size):
            xb = x[start : start + batch_size]
            q, p = model.posterior(xb), model.prior()
            per_chunk = max(1, chunk_size // len(xb))
            log_w = []
            for s in range(0, k, per_chunk):
                z = q.sample((min(per_chunk, k - s),))
                log_w.append(model.likelihood(z).log_prob(xb) + p.log_prob(z) - q.log_prob(z))
            out.append(torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k))
    return torch.cat(out)
