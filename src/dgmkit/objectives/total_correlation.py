r"""Estimates of the aggregate posterior q(z) = 1/N sum_n q(z | x_n) from a minibatch, and the
ELBO's decomposition that beta-TCVAE weights (Chen et al. 2018):

    E_x KL(q(z|x) || p(z)) = I_q(x; z) + KL(q(z) || prod_j q(z_j)) + sum_j KL(q(z_j) || p(z_j)),
                             index-code MI  total correlation (TC)   dimension-wise KL

For each z_i drawn from q(z | x_i) of a batch of M datapoints out of N, log q(z_i) and
log q(z_ij) (each dimension's marginal) are estimated from the batch's posteriors:

- ``mss``, minibatch stratified sampling (Chen et al., appendix C.2): q(z_i) ~ sum_j w_ij
  q(z_i | x_j) with weight 1/N on the datapoint's own posterior (j = i) and the other M - 1
  posteriors standing for the other N - 1 datapoints, (N - 1)/(N (M - 1)) each: unbiased for
  q(z_i) when the batch is drawn uniformly without replacement. (Chen et al. spread the same
  remainder unevenly over the other members; the expectation is the same.)
- ``mws``, minibatch weighted sampling: the batch mixture q(z_i) ~ 1/M sum_j q(z_i | x_j).
  (Chen et al. normalise it by N M instead of M; that shifts log q(z) by -log N and
  sum_j log q(z_j) by -D log N, constants that leave the gradients as they are but make the
  logged terms wrong, so it is normalised here to be a density.)

Per datapoint, with log p(z) factorized over dimensions (a standard normal prior),

    mi     = log q(z_i | x_i) - log q(z_i)
    tc     = log q(z_i) - sum_j log q(z_ij)
    dim_kl = sum_j log q(z_ij) - log p(z_i)

whose sum is the one-draw estimate log q(z_i|x_i) - log p(z_i) of the KL term.
"""

import math

import torch

__all__ = ["ESTIMATORS", "aggregate_log_densities", "stratified_log_weights", "decompose_kl"]

ESTIMATORS = ("mss", "mws")
_LOG_2PI = math.log(2 * math.pi)


def stratified_log_weights(
    batch: int, dataset_size: int, dtype: torch.dtype = torch.float64, device: torch.device | None = None
) -> torch.Tensor:
    """log w (M, M) of minibatch stratified sampling: row i weights the batch's posteriors for
    the estimate of q(z_i); each row sums to 1. Made on ``device`` (no copy from the host)."""
    m, n = batch, dataset_size
    if m < 1 or n < m:
        raise ValueError(f"stratified sampling needs 1 <= batch <= dataset size, got {m} and {n}")
    if m == 1:  # a lone datapoint: its own posterior is all the batch says about q(z)
        return torch.zeros(1, 1, dtype=dtype, device=device)
    w = torch.full((m, m), (n - 1) / (n * (m - 1)), dtype=dtype, device=device)
    w.fill_diagonal_(1.0 / n)
    return w.log()


def _pairwise_log_normal(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(z_i,d; loc_j,d, scale_j,d) for every pair: (M, M, D)."""
    zs = (z[:, None, :] - loc[None, :, :]) / scale[None, :, :]
    return -0.5 * zs.square() - scale.log()[None, :, :] - 0.5 * _LOG_2PI


def aggregate_log_densities(
    z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, dataset_size: int, estimator: str = "mss"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log q(z_i), sum_d log q(z_id)), each (M,), for draws z (M, D) of the diagonal Gaussian
    posteriors N(loc, scale^2) (M, D) of a batch of M out of ``dataset_size`` datapoints."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if z.ndim != 2 or loc.shape != z.shape or scale.shape != z.shape:
        raise ValueError(
            f"need z, loc and scale of the same shape (M, D), got {tuple(z.shape)}, {tuple(loc.shape)}, {tuple(scale.shape)}"
        )
    m = len(z)
    pair = _pairwise_log_normal(z, loc, scale)  # (M, M, D)
    if estimator == "mss":
        log_w = stratified_log_weights(m, dataset_size, dtype=z.dtype, device=z.device)
    else:
        if m < 1:
            raise ValueError("the batch is empty")
        log_w = torch.full((m, m), -math.log(m), dtype=z.dtype, device=z.device)
    log_qz = torch.logsumexp(log_w + pair.sum(-1), dim=1)
    log_qz_dims = torch.logsumexp(log_w[:, :, None] + pair, dim=1).sum(-1)
    return log_qz, log_qz_dims


def decompose_kl(
    z: torch.Tensor,
    loc: torch.Tensor,
    scale: torch.Tensor,
    log_pz: torch.Tensor,
    dataset_size: int,
    estimator: str = "mss",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mi, tc, dim_kl), each (M,), for one draw z (M, D) per datapoint (module docstring);
    ``log_pz`` (M,) is log p(z_i) under a prior that factorizes over dimensions."""
    if log_pz.shape != z.shape[:1]:  # ((M, 1) broadcast every term to (M, M); (3,) for M = 4 was a RuntimeError)
        raise ValueError(f"need log p(z_i) of shape ({len(z)},), one per draw, got {tuple(log_pz.shape)}")
    log_qz, log_qz_dims = aggregate_log_densities(z, loc, scale, dataset_size, estimator)
    eps = (z - loc) / scale
    log_qz_x = (-0.5 * eps.square() - scale.log() - 0.5 * _LOG_2PI).sum(-1)
    return log_qz_x - log_qz, log_qz - log_qz_dims, log_qz_dims - log_pz
