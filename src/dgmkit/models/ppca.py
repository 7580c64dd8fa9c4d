r"""Probabilistic PCA (Tipping & Bishop 1999): the linear Gaussian latent variable model

    p(z) = N(0, I_M),  p(x|z) = N(W z + mu, sigma^2 I_D)
    p(x) = N(mu, C),   C = W W^T + sigma^2 I
    p(z|x) = N(A^-1 W^T (x - mu), sigma^2 A^-1),  A = W^T W + sigma^2 I

Missing entries (NaN) are left out exactly: with m a datapoint's mask of observed entries and
n_o their number, x_o ~ N(mu_o, W_o W_o^T + sigma^2 I), scored through the M x M matrix
A_o = W^T diag(m) W + sigma^2 I and b = W^T (m (x - mu)) (no D x D matrix per datapoint):

    log det C_oo = (n_o - M) log sigma^2 + log det A_o
    r^T C_oo^-1 r = (|m (x - mu)|^2 - b^T A_o^-1 b) / sigma^2
    p(z|x_o) = N(A_o^-1 b, sigma^2 A_o^-1),   E[x_m | x_o] = mu_m + W_m A_o^-1 b

with the closed-form maximum-likelihood fit: mu is the data mean; with S = U diag(l) U^T the
sample covariance, sigma^2 is the mean of the D - M smallest eigenvalues and
W = U_M (diag(l_M) - sigma^2 I)^(1/2). Everything is exact, so PPCA is the ground truth
against which VAE bounds are checked.

Data with missing entries are fitted by maximum likelihood of the observed entries, sum_n log
p(x_o), by exact EM (Tipping & Bishop 1999, appendix; Ilin & Raiko 2010, section 3.2) from the
closed-form fit to the mean-imputed data. With zt = (z, 1) and w~_d = (w_d, mu_d) (row d of
(W, mu)), the E-step takes each row's p(z | x_o) = N(m_n, S_n) (above) and the M-step sets

    w~_d = (sum_{n: d seen} E[zt zt^T])^-1 sum_{n: d seen} x_nd E[zt]
    sigma^2 = sum_{n, d seen} ((x_nd - w_d^T m_n - mu_d)^2 + w_d^T S_n w_d) / (entries seen)

(W and mu jointly, so no step lowers the likelihood), until an iteration raises the
log-likelihood by less than ``tol`` nats per observed entry (or ``max_iter`` iterations, with a
warning): a rise does not change with the data's units, where the log-likelihood's size does.
"""

import math
import warnings
from typing import ClassVar

import torch
from torch import nn
from torch.distributions import Independent, MultivariateNormal, Normal

from dgmkit.errors import DataError, whole_at_least
from dgmkit.models.base import ClosedFormFit, ExactLatentVariableModel, data_batch

__all__ = ["PPCA"]

EM_TOL = 1e-7  # EM stops when an iteration raises sum_n log p(x_o) by less than this many nats per observed entry
EM_MAX_ITER = 2000


class PPCA(ExactLatentVariableModel, ClosedFormFit):
    """PPCA over events of shape ``event_shape`` (flattened to D numbers).

    >>> m = PPCA(torch.eye(3, 1), torch.zeros(3), 0.5)
    >>> m.log_prob(torch.zeros(1, 3)).shape
    torch.Size([1])
    """

    can_impute: ClassVar[bool] = True  # (the exact log p(x_o) and p(z | x_o))
    exact_imputation: ClassVar[bool] = True
    _eye: torch.Tensor

    def __init__(
        self, W: torch.Tensor, mu: torch.Tensor, sigma2: float | torch.Tensor, event_shape: tuple[int, ...] | None = None
    ):
        super().__init__()
        if W.dim() != 2:  # (a vector W met "not enough values to unpack")
            raise ValueError(f"W must be a matrix (D, M), got shape {tuple(W.shape)}")
        D, M = W.shape
        if mu.shape != (D,):
            raise ValueError(f"mu must have shape ({D},), got {tuple(mu.shape)}")
        sigma2 = torch.as_tensor(sigma2, dtype=W.dtype)
        if not sigma2.is_meta and not 0 < sigma2 < math.inf:  # (built on the meta device, it holds no value to check)
            raise ValueError(f"sigma2 must be > 0 and finite, got {float(sigma2)}")
        if not W.is_meta and not (torch.isfinite(W).all() and torch.isfinite(mu).all()):
            raise ValueError("W and mu must be finite")
        self.W = nn.Parameter(W.clone())
        self.mu = nn.Parameter(mu.clone())
        self.log_sigma2 = nn.Parameter(sigma2.log().reshape(()))
        self.event_shape = tuple(event_shape) if event_shape is not None else (D,)
        if math.prod(self.event_shape) != D:
            raise ValueError(f"event_shape {self.event_shape} does not hold {D} numbers")
        self.register_buffer("_eye", torch.eye(M, dtype=W.dtype), persistent=False)
        # how the last fit ended: {} in closed form; by EM, its iterations and whether it converged
        self.fit_report: dict[str, int | bool] = {}

    @classmethod
    def fit(cls, x: torch.Tensor, latent_dim: int, tol: float = EM_TOL, max_iter: int = EM_MAX_ITER) -> "PPCA":
        """Maximum likelihood on data of shape (N, *event): in closed form, or, where entries are
        missing (NaN), by EM on the observed ones (module docstring; ``tol`` and ``max_iter`` are its
        stopping rule, and ``fit_report`` says how it ended). The model is float64 for float64
        data, else float32 (integers, half precision)."""
        if not 0 < tol < 1:  # (a NaN tol as well)
            raise ValueError(f"tol must be in (0, 1), got {tol}")
        whole_at_least("max_iter", max_iter, 1)
        flat = _fit_data(x, latent_dim)
        # (fitted in units of a power of 2 near the largest magnitude, exactly: the covariance of data of size 1e153
        # overflowed, and eigh failed, or of size 1e-160 underflowed, and was refused as of rank <= latent_dim)
        unit = 2.0 ** math.frexp(flat.nan_to_num(0.0).abs().max().item())[1]
        if bool(torch.isnan(flat).any()):
            W, mu, sigma2, report = _fit_em(flat / unit, latent_dim, tol, max_iter, unit)
        else:
            W, mu, sigma2 = _closed_form(flat / unit, latent_dim)
            report = {}
        dtype = x.dtype if x.dtype == torch.float64 else torch.float32  # (a half-precision fit had no cholesky: no density)
        W, mu, sigma2 = W * unit, mu * unit, _in_units(sigma2, unit, dtype)
        _check_positive_definite(W.to(dtype), sigma2.to(dtype), _largest_variance(W, sigma2))
        model = cls(W.to(dtype), mu.to(dtype), sigma2.to(dtype), event_shape=x.shape[1:])
        model.fit_report = report
        return model

    @torch.no_grad()
    def fit_closed_form(self, x: torch.Tensor) -> dict[str, int | bool]:
        """Refit this model's parameters to x by maximum likelihood (see ``fit``); returns its
        ``fit_report``."""
        fitted = type(self).fit(x, self.latent_dim)
        self.load_state_dict(fitted.state_dict())
        self.fit_report = fitted.fit_report
        return self.fit_report

    def prior(self) -> MultivariateNormal:
        """p(z) = N(0, I_M)."""
        return MultivariateNormal(torch.zeros_like(self._eye[0]), covariance_matrix=self._eye)

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    @property
    def sigma2(self) -> torch.Tensor:
        return self.log_sigma2.exp()

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return data_batch(x, self.event_shape, "PPCA").flatten(1).to(self.W.dtype)

    def marginal(self) -> MultivariateNormal:
        D = self.W.shape[0]
        cov = self.W @ self.W.T + self.sigma2 * torch.eye(D, dtype=self.W.dtype, device=self.W.device)
        return MultivariateNormal(self.mu, covariance_matrix=cov)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), or log p(x_o) of the observed entries of a datapoint with missing ones (NaN)."""
        if len(x) == 0:  # (torch's value check cannot reshape no rows)
            return self.W.new_zeros(0)
        flat = self._flat(x)
        holes = torch.isnan(flat)
        incomplete = holes.any(1)
        if not bool(incomplete.any()):
            return self.marginal().log_prob(flat)
        _refuse_empty_rows(holes)
        out = flat.new_zeros(len(flat))
        if not bool(incomplete.all()):
            out[~incomplete] = self.marginal().log_prob(flat[~incomplete])
        r, seen, A, b = self._observed_parts(flat[incomplete], holes[incomplete])
        out[incomplete] = self._observed_log_prob(r, seen, torch.linalg.cholesky(A), b)
        return out

    def _observed_log_prob(self, r: torch.Tensor, seen: torch.Tensor, L: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """log p(x_o) of rows from their ``_observed_parts`` r, n_o and b, and L, A_o's Cholesky factor."""
        Lb = torch.linalg.solve_triangular(L, b.unsqueeze(-1), upper=False).squeeze(-1)  # b^T A^-1 b = |L^-1 b|^2
        log_det = (seen - self.latent_dim) * self.log_sigma2 + 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        quad = ((r * r).sum(-1) - (Lb * Lb).sum(-1)) / self.sigma2
        return -0.5 * (seen * math.log(2 * math.pi) + log_det + quad)

    def _observed_parts(
        self, flat: torch.Tensor, holes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Of rows (B, D) with missing entries ``holes``: r = m (x - mu) (0 where missing), the
        number of observed entries n_o, A_o = W^T diag(m) W + sigma^2 I (B, M, M) and b = W^T r;
        a row with no observed entry is refused (no datapoint is left to score)."""
        _refuse_empty_rows(holes)
        seen = (~holes).to(flat.dtype)
        r = torch.where(holes, torch.zeros_like(flat), flat - self.mu)
        A = torch.einsum("dm,bd,dn->bmn", self.W, seen, self.W) + self.sigma2 * self._eye
        return r, seen.sum(1), A, r @ self.W

    @classmethod
    def empty(cls, event_shape: tuple[int, ...], latent_dim: int) -> "PPCA":
        """A placeholder of the right shapes, to load fitted parameters into."""
        D = math.prod(event_shape)
        return cls(torch.zeros(D, latent_dim), torch.zeros(D), 1.0, event_shape=event_shape)

    def posterior(self, x: torch.Tensor) -> MultivariateNormal:
        """The exact p(z|x), a full-covariance Gaussian; of a batch with missing entries (NaN), the
        exact p(z|x_o) of each datapoint, N(A_o^-1 b, sigma^2 A_o^-1) (module docstring)."""
        flat = self._flat(x)
        holes = torch.isnan(flat)
        if bool(holes.any()):
            _, _, A, b = self._observed_parts(flat, holes)
            L = torch.linalg.cholesky(A)
            loc = torch.cholesky_solve(b.unsqueeze(-1), L).squeeze(-1)
            return MultivariateNormal(loc, covariance_matrix=self.sigma2 * torch.cholesky_inverse(L))
        M = self.latent_dim
        A = self.W.T @ self.W + self.sigma2 * torch.eye(M, dtype=self.W.dtype, device=self.W.device)
        A_inv = torch.linalg.inv(A)
        loc = (flat - self.mu) @ self.W @ A_inv  # A symmetric
        return MultivariateNormal(loc, covariance_matrix=self.sigma2 * A_inv)

    def likelihood(self, z: torch.Tensor) -> Independent:
        """p(x|z) over the event, for z of shape (*batch, M)."""
        loc = (z @ self.W.T + self.mu).reshape(*z.shape[:-1], *self.event_shape)
        return Independent(Normal(loc, self.sigma2.sqrt().expand_as(loc)), len(self.event_shape))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """E[x | z] at the posterior mean z = E[z | x]."""
        return self.likelihood(self.posterior(x).mean).mean

    @torch.no_grad()
    def conditional_mean(self, x: torch.Tensor) -> torch.Tensor:
        """x with each missing entry (NaN) replaced by the exact E[x_m | x_o] = mu_m + W_m E[z | x_o]."""
        flat = self._flat(x)
        mean = self.posterior(x).mean @ self.W.T + self.mu
        return torch.where(torch.isnan(flat), mean, flat).reshape(len(x), *self.event_shape)

    sample_kind = "float"

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        dev, dt = self.W.device, self.W.dtype
        z = torch.randn(n, self.latent_dim, generator=generator, device=dev, dtype=dt)
        mean = z @ self.W.T + self.mu
        x = mean + self.sigma2.sqrt() * torch.randn(mean.shape, generator=generator, device=dev, dtype=dt)
        return x.reshape(n, *self.event_shape), mean.reshape(n, *self.event_shape)


def _fit_data(x: torch.Tensor, latent_dim: int) -> torch.Tensor:
    """The data of a fit as float64 rows (N, D), missing entries NaN, refusing what has no
    maximum-likelihood fit: no datapoints, infinite entries (torch's eigh failed on them, calling
    the covariance ill-conditioned), a datapoint or a column with no observed entry, fewer than 2
    dimensions, and a latent_dim that is not a whole number in 1..D-1."""
    if x.dim() < 2 or len(x) == 0:
        raise DataError(f"PPCA is fitted to datapoints (N, *event), N >= 1; got a tensor of shape {tuple(x.shape)}")
    flat = x.flatten(1).double()
    D = flat.shape[1]
    if D < 2:
        raise DataError(f"PPCA needs data of at least 2 dimensions (a latent_dim below D), got D = {D}")
    whole_at_least("latent_dim", latent_dim, 1)
    if not latent_dim < D:
        raise ValueError(f"latent_dim must be in 1..{D - 1}, got {latent_dim}")
    bad = flat.isinf()
    if bool(bad.any()):
        raise DataError(
            f"the data hold {int(bad.sum())} infinite entries, e.g. in datapoint {int(bad.any(1).nonzero()[0])}: "
            "PPCA's fit has no maximum-likelihood solution for them; leave out those datapoints"
        )
    holes = flat.isnan()
    _refuse_empty_rows(holes)
    empty = holes.all(0)
    if bool(empty.any()):
        raise DataError(
            f"{int(empty.sum())} of the {D} dimensions have no observed entry (all NaN), e.g. dimension "
            f"{int(empty.nonzero()[0])}: the data say nothing of their mean or spread; leave them out"
        )
    return flat


def _refuse_empty_rows(holes: torch.Tensor) -> None:
    """Refuses (DataError) rows (B, D) of missing entries ``holes`` of which one has no observed entry."""
    empty = holes.all(1)
    if bool(empty.any()):
        raise DataError(
            f"{int(empty.sum())} of the {len(holes)} datapoints have no observed entry (all NaN), e.g. row "
            f"{int(empty.nonzero()[0])}: there is nothing of them to score; leave them out"
        )


def _closed_form(flat: torch.Tensor, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The closed-form maximum-likelihood W, mu and sigma^2 of complete rows (N, D) in float64."""
    mu = flat.mean(0)
    centred = flat - mu
    S = centred.T @ centred / len(flat)
    evals, evecs = torch.linalg.eigh(S)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    sigma2 = evals[latent_dim:].mean()
    _refuse_no_spread(sigma2, evals[0].item(), latent_dim)
    W = evecs[:, :latent_dim] * (evals[:latent_dim] - sigma2).clamp_min(0).sqrt()
    return W, mu, sigma2


def _refuse_no_spread(sigma2: torch.Tensor, largest: float, latent_dim: int, holes: torch.Tensor | None = None) -> None:
    """Refuses (DataError) a noise variance sigma^2 that is 0 beside the data's largest variance;
    ``holes``: the missing entries of data fitted by EM, where a rank below latent_dim is one cause."""
    if sigma2 > 1e-10 * max(largest, 1e-300):  # (1e-12 was taken: float32 found no density)
        return
    if holes is None:
        raise DataError(
            f"the data vary in at most {latent_dim} directions (rank <= latent_dim), so PPCA's noise variance "
            f"sigma^2 is 0 ({sigma2.item():.3g}) and p(x) has no density off that subspace: take a smaller "
            "latent_dim (or data with spread in more directions)"
        )
    complete = int((~holes.any(1)).sum())
    raise DataError(
        f"PPCA's EM over the missing entries drives its noise variance sigma^2 to 0 ({sigma2.item():.3g}): the "
        f"likelihood of the observed entries has no maximum, as where the data vary in at most {latent_dim} "
        f"directions (rank <= latent_dim) or too few entries are observed for latent_dim = {latent_dim} (here "
        f"{complete} of the {len(holes)} datapoints are complete): take a smaller latent_dim"
    )


def _in_units(sigma2: torch.Tensor, unit: float, dtype: torch.dtype) -> torch.Tensor:
    """The noise variance sigma^2 fitted in units ``unit`` in the data's own, refused (DataError) where
    ``dtype`` holds no such number (the data's variances beyond its range, or below its normal numbers)."""
    own = sigma2 * unit * unit
    if not torch.finfo(dtype).tiny < own < torch.finfo(dtype).max:
        raise DataError(
            f"PPCA's noise variance sigma^2 of these data is {own.item():.3g}, outside what {dtype} holds "
            f"({torch.finfo(dtype).tiny:.3g} to {torch.finfo(dtype).max:.3g}): rescale the data"
            + ("" if dtype == torch.float64 else " (or give them in float64)")
        )
    return own


def _largest_variance(W: torch.Tensor, sigma2: torch.Tensor) -> float:
    """The largest eigenvalue of C = W W^T + sigma^2 I: |W|_2^2 + sigma^2."""
    return (torch.linalg.matrix_norm(W, ord=2) ** 2 + sigma2).item()


def _fit_em(
    flat: torch.Tensor, latent_dim: int, tol: float, max_iter: int, unit: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, int | bool]]:
    """W, mu and sigma^2 (float64) maximizing sum_n log p(x_o) of rows (N, D) with missing entries
    (NaN), by EM from the closed-form fit to the mean-imputed rows (module docstring), and how it
    ended: ``em_iterations`` (M-steps) and ``em_converged``; unconverged, it warns, with the
    log-likelihood of the fitted model in the units of the data (``flat`` holds them divided by ``unit``)."""
    holes = flat.isnan()
    seen, x0 = (~holes).double(), flat.nan_to_num(0.0)
    W, mu, sigma2 = _closed_form(torch.where(holes, flat.nanmean(0), flat), latent_dim)
    first, ll = sigma2, -math.inf
    least = tol * seen.sum().item()  # (of its size, tol stopped 0.0013 nats a datapoint short for data in units 1e-150)
    for it in range(max_iter + 1):  # (the last E-step scores the last M-step's model)
        before = ll
        ll, loc, cov = _e_step(PPCA(W, mu, sigma2), flat, holes)
        if ll - before <= least:
            return W, mu, sigma2, {"em_iterations": it, "em_converged": True}
        if it < max_iter:
            W, mu, sigma2 = _m_step(x0, seen, loc, cov)
            _refuse_no_spread(sigma2, _largest_variance(W, sigma2), latent_dim, holes)
    own = ll - seen.sum().item() * math.log(unit)  # (a density in units of unit: log p rises by log unit an entry)
    _warn_unconverged(max_iter, own, ll - before, tol, (first * unit * unit).item(), (sigma2 * unit * unit).item())
    return W, mu, sigma2, {"em_iterations": max_iter, "em_converged": False}


def _warn_unconverged(max_iter: int, ll: float, rise: float, tol: float, first: float, sigma2: float) -> None:
    """Warns (RuntimeWarning) of EM stopped by ``max_iter``, its log-likelihood ``ll`` risen by ``rise`` in
    the last iteration, its noise variance gone from ``first`` to ``sigma2``, and what to do about it."""
    warnings.warn(
        f"PPCA's EM over the missing entries stopped unconverged after max_iter = {max_iter} iterations (the "
        f"log-likelihood of the observed entries, {ll:.6g} nats, rose by {rise:.3g} in the last; tol = {tol:g} nats "
        f"per observed entry; sigma^2 went from {first:.3g} to {sigma2:.3g}): give PPCA.fit a larger max_iter (dgm "
        "train keeps the default), or, where sigma^2 keeps falling toward 0 (too few observed entries for latent_dim, "
        "a likelihood with no maximum), take a smaller latent_dim",
        RuntimeWarning,
        stacklevel=4,
    )


@torch.no_grad()
def _e_step(model: PPCA, flat: torch.Tensor, holes: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """sum_n log p(x_o) of rows (N, D) with missing entries under ``model``, and the mean (N, M)
    and covariance (N, M, M) of each row's p(z | x_o)."""
    r, n_seen, A, b = model._observed_parts(flat, holes)
    L = torch.linalg.cholesky(A)
    ll = model._observed_log_prob(r, n_seen, L, b).sum().item()
    loc = torch.cholesky_solve(b.unsqueeze(-1), L).squeeze(-1)
    return ll, loc, model.sigma2 * torch.cholesky_inverse(L)


def _m_step(
    x0: torch.Tensor, seen: torch.Tensor, loc: torch.Tensor, cov: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W, mu and sigma^2 maximizing the expected log-likelihood of the observed entries of rows
    x0 (N, D) (0 where missing; ``seen``: 1 where observed) given p(z | x_o) = N(loc, cov)."""
    N, D = x0.shape
    M = loc.shape[1]
    ez = torch.cat([loc, torch.ones_like(loc[:, :1])], 1)  # E[(z, 1)]
    second = ez.unsqueeze(2) * ez.unsqueeze(1)
    second[:, :M, :M] += cov  # E[(z, 1) (z, 1)^T]
    G = (seen.T @ second.reshape(N, -1)).reshape(D, M + 1, M + 1)  # summed over the rows that see d
    Wmu = torch.linalg.solve(G, (x0.T @ ez).unsqueeze(-1)).squeeze(-1)
    W, mu = Wmu[:, :M], Wmu[:, M]
    resid = (x0 - loc @ W.T - mu) * seen
    spread = (seen.T @ cov.reshape(N, -1)).reshape(D, M, M)
    sigma2 = ((resid * resid).sum() + torch.einsum("dm,dmn,dn->", W, spread, W)) / seen.sum()
    return W, mu, sigma2


def _check_positive_definite(W: torch.Tensor, sigma2: torch.Tensor, largest: float) -> None:
    """Refuses (DataError) a fit whose covariance C = W W^T + sigma^2 I is not positive definite in
    the precision the model holds it (its data's): sigma^2 far below the largest variance passes the
    rank check in float64 but leaves float32's C singular, and every log p(x) failed."""
    cov = W @ W.T + sigma2 * torch.eye(W.shape[0], dtype=W.dtype, device=W.device)
    if torch.linalg.cholesky_ex(cov).info.item() != 0:
        raise DataError(
            f"PPCA's noise variance sigma^2 = {sigma2.item():.3g} is too small beside the data's largest variance "
            f"{largest:.3g} for its covariance W W^T + sigma^2 I to be positive definite in {W.dtype}: take a smaller "
            "latent_dim (or give the data in float64)"
        )
