"""Student's t, made without torch's checks at any level, with a log density and entropy that
keep float32's precision at any degrees of freedom."""

import math

import torch
from torch.distributions import Chi2, Distribution, StudentT
from torch.distributions.utils import broadcast_all

__all__ = ["student_t", "AccurateStudentT"]


def _series_from(dtype: torch.dtype) -> float:
    """The df from which the series replace the lgamma/digamma differences: where the series,
    truncated at 1/a^7 (a = df/2), are within the dtype's precision (7e-8 at a = 3 and 1e-15 at
    a = 30), while the differences below it are still exact to it (their terms are ~a log a)."""
    return 60.0 if dtype == torch.float64 else 6.0


def _lgamma_ratio_series(a: torch.Tensor) -> torch.Tensor:
    """lgamma(a + 1/2) - lgamma(a) - log(a)/2 for large a: the Stirling series of the two lgammas,
    whose B_{n+1}(1/2) - B_{n+1}(0) coefficients give -1/(8a) + 1/(192a^3) - 1/(640a^5) +
    17/(14336a^7); truncated there it is within 7e-8 from a = 3 (df = 6)."""
    z = 1.0 / a
    z2 = z * z
    return z * (-1 / 8 + z2 * (1 / 192 + z2 * (-1 / 640 + z2 * (17 / 14336))))


def _digamma_ratio_series(a: torch.Tensor) -> torch.Tensor:
    """(a + 1/2) (digamma(a + 1/2) - digamma(a)) - 1/2 for large a: (a + 1/2) times the derivative
    of ``_lgamma_ratio_series`` plus 1/(2a), expanded to 1/a^7: within 7e-8 from a = 3."""
    z = 1.0 / a
    coefficients = (3 / 8, 1 / 16, -1 / 64, -1 / 128, 1 / 128, 1 / 256, -17 / 2048)
    total = torch.zeros_like(z)
    for c in reversed(coefficients):
        total = (total + c) * z
    return total


def log_normalizer_excess(df: torch.Tensor) -> torch.Tensor:
    """lgamma((df+1)/2) - lgamma(df/2) - log(df)/2, the df-dependent part of the t's log density.

    Torch computes it as a difference of lgammas of size (df/2) log(df/2), which in float32 loses
    all of it (-1/(4df) + ...) once df passes ~1e4: errors of 1e-2 nats at df = 1e4 and of tens of
    nats at 1e7. The lgammas are kept below ``_series_from(dtype)``, the series (its 0.5 log(a) and
    -0.5 log(df) cancelled exactly to -0.5 log 2) above; each branch sees only its own range of df
    (clamped), so neither makes an inf or a NaN gradient where it is not chosen."""
    switch = _series_from(df.dtype)
    small = df.clamp(max=switch)
    by_lgamma = torch.lgamma(0.5 * (small + 1.0)) - torch.lgamma(0.5 * small) - 0.5 * small.log()
    by_series = _lgamma_ratio_series(0.5 * df.clamp(min=switch)) - 0.5 * math.log(2.0)
    return torch.where(df < switch, by_lgamma, by_series)


def _entropy_excess(df: torch.Tensor) -> torch.Tensor:
    """((df+1)/2) (digamma((df+1)/2) - digamma(df/2)), the t's entropy's df-dependent term, by
    digammas below ``_series_from(dtype)`` and by its series above (the digamma difference, ~1/df,
    cancels in float32 as the lgamma one does)."""
    switch = _series_from(df.dtype)
    small = df.clamp(max=switch)
    by_digamma = 0.5 * (small + 1.0) * (torch.digamma(0.5 * (small + 1.0)) - torch.digamma(0.5 * small))
    by_series = 0.5 + _digamma_ratio_series(0.5 * df.clamp(min=switch))
    return torch.where(df < switch, by_digamma, by_series)


def _log1p_square(residual: torch.Tensor, scale: torch.Tensor, df: torch.Tensor) -> torch.Tensor:
    """log(1 + t^2), t = (x - mu) / (sigma sqrt(df)); as 2 (log|x - mu| - log sigma - log(df)/2) where
    |t| > 1e15 (the 1 is below float precision there, and t^2 or its gradient would overflow): a
    tiny scale's residual has a finite log density and gradient, not -inf and inf. In float16
    (largest 65504) from |t| > 100, where t^2 is still finite and the 1 is 1e-4 nats. Each branch
    sees a harmless stand-in where it is not chosen (no 0 * inf = NaN in the backward pass)."""
    switch = 100.0 if residual.dtype == torch.float16 else 1e15  # (1e15 * sigma is inf in float16: never chosen)
    big = residual.abs() > switch * scale * df.sqrt()
    t = torch.where(big, 0.0, residual) / scale * df.rsqrt()
    log_t = torch.where(big, residual, 1.0).abs().log() - scale.log() - 0.5 * df.log()
    return torch.where(big, 2.0 * log_t, torch.log1p(t.square()))


class AccurateStudentT(StudentT):
    """Torch's ``StudentT`` with a log density and entropy exact to float32 at every df (see
    ``log_normalizer_excess``) and a mean and variance chosen by ``torch.where``, not by boolean
    indexing (a read of the values: no CUDA graph holds it). Sampling is torch's."""

    @property
    def mean(self) -> torch.Tensor:
        """mu, NaN where df <= 1 (no mean)."""
        return torch.where(self.df > 1, self.loc, math.nan)

    @property
    def variance(self) -> torch.Tensor:
        """sigma^2 df / (df - 2) where df > 2, inf where 1 < df <= 2, NaN where df <= 1."""
        finite = self.df > 2
        df = torch.where(finite, self.df, 3.0)  # no 0 or negative denominator in the branch unused
        return torch.where(finite, self.scale.pow(2) * df / (df - 2), torch.where(self.df > 1, math.inf, math.nan))

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """-((df+1)/2) log(1 + y^2/df) - log sigma - log(pi)/2 + lgamma((df+1)/2) - lgamma(df/2) -
        log(df)/2, y = (x - mu)/sigma, the last three by ``log_normalizer_excess``; the df + 1 is
        split so that its 1 is not rounded away at large df."""
        if self._validate_args:
            self._validate_sample(value)
        tail = _log1p_square(value - self.loc, self.scale, self.df)
        log_kernel = -0.5 * self.df * tail - 0.5 * tail
        return log_kernel - self.scale.log() - 0.5 * math.log(math.pi) + log_normalizer_excess(self.df)

    def entropy(self) -> torch.Tensor:
        """log sigma + log(pi)/2 + ((df+1)/2)(digamma((df+1)/2) - digamma(df/2)) - (lgamma((df+1)/2) -
        lgamma(df/2) - log(df)/2): torch's formula, regrouped so both differences are series at large df."""
        return self.scale.log() + 0.5 * math.log(math.pi) + _entropy_excess(self.df) - log_normalizer_excess(self.df)


def student_t(df: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> AccurateStudentT:
    """``StudentT(df, loc, scale)`` checked nowhere: torch's checks the chi-squared it holds
    whatever its own ``validate_args`` says, a read of ``df`` (a wait for a GPU in every training
    step, and a read that a step captured as a CUDA graph cannot hold). The caller keeps
    ``df``, ``scale`` > 0 (softplus plus a floor). Its log density and entropy are accurate in
    float32 up to df = 1e8 (``AccurateStudentT``).

    >>> student_t(torch.tensor(3.0), torch.tensor(0.0), torch.tensor(1.0)).log_prob(torch.tensor(0.0))
    tensor(-1.0009)
    """
    d = AccurateStudentT.__new__(AccurateStudentT)
    d.df, d.loc, d.scale = broadcast_all(df, loc, scale)
    d._chi2 = Chi2(d.df, validate_args=False)
    Distribution.__init__(d, d.df.size(), validate_args=False)
    return d
