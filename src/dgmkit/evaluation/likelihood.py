r"""Importance-sampled log-likelihood (Rezende et al. 2014; Burda et al. 2016):

    log p(x) ~ log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x),   z_i ~ q(z|x)

a stochastic lower bound (in expectation) that tends to log p(x) as k grows. The encoder runs
once per datapoint; the k samples go through the decoder in chunks of at most ``chunk_size``
(datapoint, sample) pairs, so memory stays bounded for any k.
"""

import math

import torch

__all__ = ["importance_sampled_log_likelihood"]


@torch.no_grad()
def importance_sampled_log_likelihood(
    model,
    x: torch.Tensor,
    k: int = 5000,
    batch_size: int = 32,
    chunk_size: int = 16384,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-datapoint estimate of log p(x) in nats, shape (N,).

    Datapoints are taken ``batch_size`` at a time; for each batch the samples are drawn in
    chunks of ``chunk_size // batch_size`` per datapoint and their log weights kept, (k, B)
    numbers, before one logsumexp. ``generator`` makes the estimate repeatable.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        q = model.posterior(xb)
        loc, scale = q.mean, q.stddev  # (B, M)
        p = model.prior()
        per_chunk = max(1, chunk_size // len(xb))
        log_w = torch.empty(k, len(xb), device=xb.device)
        for s in range(0, k, per_chunk):
            n = min(per_chunk, k - s)
            eps = torch.randn((n, *loc.shape), generator=generator, device=loc.device, dtype=loc.dtype)
            z = loc + scale * eps  # (n, B, M)
            log_w[s : s + n] = model.likelihood(z).log_prob(xb) + p.log_prob(z) - q.log_prob(z)
        out.append(torch.logsumexp(log_w, dim=0) - math.log(k))
    return torch.cat(out)
