r"""Importance weights: the one primitive that the variational objectives reduce.

For a model with a proposal q(z|x) and a joint p(x, z) (``models.VariationalModel``), k draws
z_i ~ q(z|x) give the log importance weights

    log w_i = log p(x | z_i) + log p(z_i) - log q(z_i | x)

and every estimator here is a reduction of them:

- the ELBO: their mean (``ELBO`` keeps the reconstruction term and takes the KL in closed
  form where one is registered);
- the k-sample importance-weighted bound, IWAE (Burda et al. 2016, arXiv 1509.00519):
  log-mean-exp, log (1/k) sum_i w_i, which increases with k towards log p(x);
- reweighted wake-sleep (Bornschein & Bengio 2015): the self-normalized weights softmax_i(log w_i);
- the importance-sampled log-likelihood of evaluation: log-mean-exp over many draws, in chunks
  so that memory stays bounded for any k;
- the variational-dequantization bound (Ho et al. 2019), where z is the dequantization noise.
"""

import math
from typing import NamedTuple, cast

import torch
from torch.distributions import Distribution

from dgmkit._modes import evaluates, needs_kind
from dgmkit.distributions.sampling import rsample_and_log_prob
from dgmkit.errors import whole_at_least
from dgmkit.models import LatentVariableModel, VariationalModel

__all__ = [
    "ImportanceWeights",
    "log_importance_weights",
    "log_px_at_draws",
    "check_per_datapoint",
    "log_mean_exp",
    "iwae_bound",
    "importance_sampled_log_likelihood",
]


class ImportanceWeights(NamedTuple):
    """Tensors of shape (k, B) (z: (k, B, *latent)); ``log_w`` is their sum. ``px``: p(x|z) at
    the draws (batch shape (k, B)) where asked for (``keep_likelihood``)."""

    z: torch.Tensor
    log_px_z: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor
    px: Distribution | None = None

    @property
    def log_w(self) -> torch.Tensor:
        return self.log_px_z + self.log_pz - self.log_qz


def log_importance_weights(
    model: VariationalModel,
    x: torch.Tensor,
    k: int,
    q: Distribution | None = None,
    prior: Distribution | None = None,
    generator: torch.Generator | None = None,
    reparameterized: bool = True,
    keep_likelihood: bool = False,
) -> ImportanceWeights:
    """k draws from q(z|x) (``model.posterior(x)`` unless given) and their weight terms.

    ``prior``: p(z) if the caller has it (it does not change between chunks of draws). A model
    whose proposal and joint come out of one pass (``joint_pass``: a deep top-down VAE) gives all
    four terms at once. ``keep_likelihood``: also p(x|z) at the draws (``px``; a single-layer
    latent variable model), for imputation from the same decoder pass. Reparameterized draws with
    gradients on need a posterior with rsample (a ValueError otherwise, as the ELBO's)."""
    whole_at_least("k, the number of importance draws", k, 1)  # (0 or 2.5: torch's words, from deep inside)
    refuse_empty(x, "importance weights")
    fused = getattr(model, "joint_pass", None)
    if fused is not None and reparameterized and not keep_likelihood:
        return _checked(ImportanceWeights(*fused(x, k, generator)), k, len(x))
    q = model.posterior(x) if q is None else q
    if reparameterized and not q.has_rsample and torch.is_grad_enabled():  # (z drawn without a gradient path)
        raise ValueError(
            "a reparameterized gradient of importance weights (IWAE, MIWAE) needs a continuous posterior; without one "
            "the encoder's gradient leaves out the score term and is biased: for discrete latents train with VIMCO or "
            "reweighted wake-sleep, or compute the bound under torch.no_grad()"
        )
    z, log_qz = rsample_and_log_prob(q, (k,), generator, reparameterized, device=x.device)
    if keep_likelihood:  # a single-layer latent variable model's
        lvm = cast(LatentVariableModel, model)
        px = lvm.likelihood(z)
        log_px_z, log_pz = lvm.log_joint(x, z, prior, px=px)
        return _checked(ImportanceWeights(z, log_px_z, log_pz, log_qz, px), k, len(x))
    log_px_z, log_pz = model.log_joint(x, z, prior)
    return _checked(ImportanceWeights(z, log_px_z, log_pz, log_qz), k, len(x))


def log_px_at_draws(model: LatentVariableModel, x: torch.Tensor, k: int, q: Distribution) -> torch.Tensor:
    """log p(x | z_i) at k draws z_i ~ q(z|x), reparameterized where q allows it, shape (k, B):
    the reconstruction term alone, for an ELBO whose KL is in closed form (no log q(z) or log p(z)
    is formed)."""
    refuse_empty(x, "the reconstruction term log p(x|z)")
    z = q.rsample((k,)) if q.has_rsample else q.sample((k,))
    log_px_z = model.log_px_given_z(x, z)
    check_per_datapoint(log_px_z, "log p(x|z), the likelihood's log_prob,", (k, len(x)))
    return log_px_z


def refuse_empty(x: torch.Tensor, what: str) -> None:
    """A ValueError naming ``what`` where ``x`` holds no datapoint (torch's "cannot reshape tensor of
    0 elements", from inside a distribution's log_prob, otherwise)."""
    if len(x) == 0:
        raise ValueError(f"{what} of an empty batch (0 datapoints): give one or more")


_TERMS = {
    "log_px_z": "log p(x|z), the likelihood's log_prob,",
    "log_pz": "log p(z), the prior's log_prob,",
    "log_qz": "log q(z|x), the posterior's log_prob,",
}


def _checked(w: ImportanceWeights, k: int, b: int) -> ImportanceWeights:
    """``w`` if each term holds one value per draw and datapoint, (k, B) (``check_per_datapoint``)."""
    for name, what in _TERMS.items():
        check_per_datapoint(getattr(w, name), what, (k, b))
    return w


def check_per_datapoint(t: torch.Tensor, what: str, shape: tuple[int, ...]) -> None:
    """A ValueError unless ``t`` holds one value per draw and datapoint, of ``shape``, naming the
    part (``what``) whose distribution scores a part of a latent vector or image on its own (a
    factorized distribution whose event shape is not the whole vector)."""
    if tuple(t.shape) != shape:
        raise ValueError(
            f"{what} has shape {tuple(t.shape)} where one value per draw and datapoint, {shape}, was expected: "
            "its distribution's event shape must be a whole latent vector (a prior's and posterior's: "
            "(latent_dim,)) or a whole image; torch.distributions.Independent(d, n) makes the last n "
            "batch dimensions of d its event"
        )


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """log (1/k) sum_i exp(log_w_i) along ``dim``, computed stably."""
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def iwae_bound(model: VariationalModel, x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-sample importance-weighted bound per datapoint, shape (B,)."""
    return log_mean_exp(log_importance_weights(model, x, k).log_w)


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


CPU_BATCH, CPU_CHUNK = 32, 2048  # datapoints at a time, and rows (draws x datapoints) per chunk
GPU_BATCH, GPU_CHUNK = 250, 65536
# working memory of one chunk for a model that says how many rows fit (``importance_rows``)
CPU_CHUNK_BYTES, GPU_CHUNK_BYTES = 2 * 2**30, 8 * 2**30


@evaluates
@torch.no_grad()
def importance_sampled_log_likelihood(
    model: VariationalModel,
    x: torch.Tensor,
    k: int = 5000,
    batch_size: int | None = None,
    chunk_size: int | None = None,
    generator: torch.Generator | None = None,
    first: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-datapoint estimate of log p(x) in nats, shape (N), in the model's dtype (the sums are
    in float64; Rezende et al. 2014; Burda et al. 2016):

        log p(x) ~ log (1/k) sum_i p(x, z_i) / q(z_i|x),   z_i ~ q(z|x)

    a stochastic lower bound (in expectation) that tends to log p(x) as k grows. Datapoints are
    taken ``batch_size`` at a time; q(z|x) and p(z) are computed once per batch and the draws
    made in chunks of ``chunk_size // batch_size`` per datapoint. 2048 rows keep the decoder's
    GEMMs at the machine's peak while the per-chunk dispatch stays a few percent of the time
    (benchmarks/eval_speed.py). The chunks' log-weights are reduced as they come, by a running
    logsumexp in float64, so memory stays that of one chunk for any k. Those are the defaults on
    a CPU (None); on a GPU, where each chunk costs a kernel launch per layer whatever its size,
    the defaults are 250 datapoints and chunks of 65536 rows (a few hundred MB for an MNIST MLP
    decoder): ``GPU_BATCH``, ``GPU_CHUNK``. A model whose p(x|z) is large per row (a PixelCNN
    decoder) caps both by its ``importance_rows`` within ``CPU_CHUNK_BYTES`` or ``GPU_CHUNK_BYTES``.
    ``first=True`` also returns the first draw's log weight, a one-sample ELBO, shape (N,).
    """
    needs_kind(model, VariationalModel, "importance_sampled_log_likelihood", "a model with a proposal q(z|x)")
    whole_at_least("k", k, 1)
    batch_size, chunk_size = _importance_sizes(model, x, batch_size, chunk_size)
    if x.device.type == "cpu":
        _warm_allocator()
    out, one = [], []
    for start in range(0, len(x), batch_size):
        log_px, w0 = _batch_log_likelihood(model, x[start : start + batch_size], k, chunk_size, generator)
        out.append(log_px)
        one.append(w0)
    return (torch.cat(out), torch.cat(one)) if first else torch.cat(out)


def _importance_sizes(
    model: VariationalModel, x: torch.Tensor, batch_size: int | None, chunk_size: int | None
) -> tuple[int, int]:
    """The datapoints per batch and the rows (draws x datapoints) per chunk of
    ``importance_sampled_log_likelihood``: those given, else the device's defaults, capped where
    the model says how many rows fit (``importance_rows``) and, on a GPU, by the memory that a
    probe of a few rows takes (a 256-way categorical decoder or a deep hierarchy's activations
    take megabytes a row: 65536 rows would not fit)."""
    gpu = x.device.type == "cuda"
    budget = GPU_CHUNK_BYTES if gpu else CPU_CHUNK_BYTES
    rows = model.importance_rows(budget)
    if gpu and chunk_size is None and len(x):
        measured = _rows_that_fit(model, x[:1], budget)
        rows = measured if rows is None else min(rows, measured)
    batch_size = (GPU_BATCH if gpu else CPU_BATCH) if batch_size is None else whole_at_least("batch_size", batch_size, 1)
    chunk_size = (GPU_CHUNK if gpu else CPU_CHUNK) if chunk_size is None else whole_at_least("chunk_size", chunk_size, 1)
    if rows is not None:  # a chunk holds at least one draw for each datapoint of the batch
        chunk_size = min(chunk_size, max(1, rows))
        batch_size = min(batch_size, chunk_size)
    return batch_size, chunk_size


PROBE_ROWS = (32, 96)


def _rows_that_fit(model: VariationalModel, x1: torch.Tensor, budget_bytes: int) -> int:
    """On CUDA: how many rows of log-weights fit in ``budget_bytes``, from the peak memory of two
    probes of ``PROBE_ROWS`` draws for one datapoint ``x1``: their difference is the memory a row
    takes, without what a pass takes whatever its rows (the encoder's pass, a VampPrior's
    pseudo-inputs, a convolution's workspace). Each probe has its own random stream: the run's is
    untouched. It resets the device's peak-memory statistics: ``torch.cuda.max_memory_allocated``
    then reports the evaluation's peak, from the probes on."""
    device = x1.device
    peaks = []
    for rows in PROBE_ROWS:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.random.fork_rng(devices=[device]):
            log_importance_weights(model, x1, rows)
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
    small, large = PROBE_ROWS
    per_row = (peaks[1] - peaks[0]) / (large - small)
    if per_row <= 0:  # (the allocator's rounding hid the difference: the whole of the larger probe)
        per_row = peaks[1] / large
    return max(1, int(budget_bytes // max(per_row, 1.0)))


def _batch_log_likelihood(
    model: VariationalModel, xb: torch.Tensor, k: int, chunk_size: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch's importance-sampled log p(x), shape (B,), and its first draw's log weight:
    k draws in chunks of ``chunk_size`` rows, reduced by a running logsumexp in float64."""
    fused = getattr(model, "joint_pass", None) is not None  # its one pass makes q and p itself
    q = None if fused else model.posterior(xb)
    prior = cast(LatentVariableModel, model).prior() if model.has_latents and not fused else None
    per_chunk = max(1, chunk_size // len(xb))
    total: torch.Tensor | None = None  # log sum_i w_i over the draws so far
    first: torch.Tensor | None = None
    for s in range(0, k, per_chunk):
        n = min(per_chunk, k - s)
        w = log_importance_weights(model, xb, n, q=q, prior=prior, generator=generator).log_w
        if first is None:
            first = w[0]
        part = torch.logsumexp(w, dim=0).double()
        total = part if total is None else torch.logaddexp(total, part)
    assert total is not None and first is not None  # k >= 1 draws
    return (total - math.log(k)).to(first.dtype), first
