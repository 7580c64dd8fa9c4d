r"""Estimators for discrete latent variables.

Both train a :class:`dgmkit.models.CategoricalVAE` and report the true discrete ELBO,
E_q[log p(x|z)] - KL(q(z|x) || p(z)), from a one-sample estimate with an exact discrete z
(the KL between categoricals is in closed form).

- :class:`GumbelSoftmaxELBO` (Jang et al. 2017, arXiv 1611.01144; Maddison et al. 2017): the
  reconstruction term is taken at the relaxed sample softmax((logits + g) / tau), g ~ Gumbel,
  a biased but low-variance gradient whose bias vanishes as tau -> 0 while its variance grows
  (hence the floor tau_min). The temperature is
  annealed tau_t = max(tau_min, tau_0 exp(-r t)). The discrete sample for the reported ELBO is
  the argmax of the same perturbed logits (the Gumbel-max trick: an exact sample of q).
- :class:`ReinforceELBO` (Williams 1992; Mnih & Gregor 2014, arXiv 1402.0030): the unbiased
  score-function gradient (f(z) - b(x)) grad log q(z|x), f = log p(x|z), of the reconstruction
  term, with a learned input-dependent baseline b(x) fitted by least squares to f; the KL
  term's gradient is exact (closed form). With ``normalise=True`` it is NVIL's form (Mnih &
  Gregor 2014, section 3.3): the signal centred by a running mean and divided by a running
  standard deviation (at least 1), the encoder's whole gradient scaled alike.
- :class:`VIMCO` (Mnih & Rezende 2016, arXiv 1602.06725): the score-function gradient of the
  k-sample importance-weighted bound L = log (1/k) sum_j w_j, w_j = p(x, z_j) / q(z_j|x), with a
  baseline for each draw from the other draws alone (no network): L less the bound whose w_j is
  replaced by the geometric mean of the others' weights. Unbiased, and its learning signals are
  each draw's share of the bound.

The first two report the ELBO from one draw, VIMCO from the mean over its k draws; all three
the same quantity, so their runs compare (VIMCO trains a tighter bound than the ELBO it reports).
"""

import math
import numbers
from typing import cast

import torch
from torch.distributions import kl_divergence

from dgmkit.distributions.categorical import one_hot
from dgmkit.errors import shown_value, true_or_false, whole_at_least
from dgmkit.models import CategoricalVAE
from dgmkit.nn.moments import RunningMoments
from dgmkit.objectives.base import Objective, at_least, unit_weight
from dgmkit.objectives.elbo import ELBOTerms
from dgmkit.objectives.importance import log_importance_weights, log_mean_exp, refuse_empty

__all__ = ["GumbelSoftmaxELBO", "ReinforceELBO", "VIMCO", "DiscreteTerms", "SMALLEST_TEMPERATURE"]

# float32's smallest normal number, 1.2e-38: the step holds tau in float32, where a smaller one is
# subnormal or 0 (and 1e-46 was 0: the relaxed sample 0/0, NaN)
SMALLEST_TEMPERATURE = float(torch.finfo(torch.float32).tiny)


DiscreteTerms = ELBOTerms  # the ELBO's terms, whichever gradient estimator made them


def _gumbel(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    u = torch.rand(shape, device=like.device, dtype=like.dtype).clamp(1e-10, 1 - 1e-7)
    return -torch.log(-torch.log(u))


class GumbelSoftmaxELBO(Objective[CategoricalVAE]):
    """The Gumbel-softmax (concrete) relaxation of the module docstring. ``temperature`` tau_0,
    ``temperature_min`` tau_min and ``anneal_rate`` r set the temperature of optimizer step t,
    tau_t = max(tau_min, tau_0 exp(-r t)), which ``update(step)`` sets (the Trainer calls it
    before every step); r = 0 here keeps tau_0 throughout, while the ``dvae`` family (``dgm train
    --model dvae``) anneals at r = 3e-5 a step. ``straight_through``: the decoder sees the hard
    one-hot sample in the forward pass and the relaxed sample's gradient in the backward pass."""

    def __init__(
        self,
        temperature: float = 1.0,
        temperature_min: float = 0.5,
        anneal_rate: float = 0.0,
        straight_through: bool = False,
    ):
        for name, value in (("temperature", temperature), ("temperature_min", temperature_min)):
            if not isinstance(value, numbers.Real) or isinstance(value, bool):  # ("1": a TypeError of '<='; True: 1)
                raise ValueError(f"{name} must be a number, got {shown_value(value)}")
        if not 0 < temperature_min <= temperature < math.inf:  # (NaN is never)
            raise ValueError(f"need 0 < temperature_min <= temperature, finite, got {temperature_min}, {temperature}")
        if temperature_min < SMALLEST_TEMPERATURE:
            raise ValueError(
                f"temperature_min must be >= {SMALLEST_TEMPERATURE}, float32's smallest normal, got {temperature_min}"
            )
        self.temperature0 = temperature
        self.temperature_min = temperature_min
        self.anneal_rate = at_least("anneal_rate", anneal_rate, 0)  # (a negative rate would raise it without end)
        self.straight_through = true_or_false("straight_through", straight_through)
        self.temperature = temperature
        self._tau: torch.Tensor | None = None  # the temperature as the step reads it (see ``_temperature``)

    def update(self, step: int) -> None:
        self.temperature = max(self.temperature_min, self.temperature0 * math.exp(-self.anneal_rate * step))
        if self._tau is not None:
            self._tau.fill_(self.temperature)

    def _temperature(self, like: torch.Tensor) -> torch.Tensor:
        """The temperature as a tensor on ``like``'s device, changed in place by ``update``: under
        torch.compile a number that changes in every step would compile the step again (and
        again, or end CUDA graphs), a tensor's value does not."""
        if self._tau is None or self._tau.device != like.device:  # (float32: a 0-d tensor keeps like's dtype)
            self._tau = torch.tensor(self.temperature, device=like.device, dtype=torch.float32)
        return self._tau

    def __call__(self, model: CategoricalVAE, x: torch.Tensor, beta: float = 1.0) -> DiscreteTerms:
        refuse_empty(x, "the discrete ELBO")  # (torch's "cannot reshape tensor of 0 elements" in the KL otherwise)
        q = model.posterior(x)
        logits = q.base_dist.logits  # type: ignore[attr-defined]  # (B, V, K), normalized; q: Independent(OneHotCategorical), typed Distribution
        perturbed = logits + _gumbel(logits.shape, logits)
        hard = one_hot(perturbed.argmax(-1), logits.shape[-1], logits.dtype)  # an exact sample of q
        kl = kl_divergence(q, model.prior())
        if model.training:
            # (less the largest first: the winner at 0 and the others at most 0, so no tau overflows them to
            # +-inf together; perturbed / 1e-40 was -inf or +inf in every class, a NaN sample)
            top = perturbed.amax(-1, keepdim=True).detach()
            soft = torch.softmax((perturbed - top) / self._temperature(perturbed), -1)
            z = hard + soft - soft.detach() if self.straight_through else soft
            relaxed = model.log_px_given_z(x, z)  # (of the observed entries: a missing one, NaN, was NaN here)
            with torch.no_grad():
                log_px_z = model.log_px_given_z(x, hard)
            loss = -(relaxed - beta * kl)
        else:
            log_px_z = model.log_px_given_z(x, hard)
            loss = -(log_px_z - kl)
        return DiscreteTerms(loss, log_px_z - kl, log_px_z, kl)


class ReinforceELBO(Objective[CategoricalVAE]):
    """Needs a model with a baseline network (``CategoricalVAE(..., baseline=net)``).

    ``normalise=True`` is NVIL's form (Mnih & Gregor 2014, section 3.3; the model needs
    ``signal_moments``, a :class:`dgmkit.nn.RunningMoments`): the signal f - b(x) is centred by the
    running mean c of f - b(x) and divided by max(1, sqrt(v)), v its running variance, and b(x) is
    fitted to f - c. The closed-form KL's gradient is divided by the same max(1, sqrt(v)), so that
    the encoder's (and a learned prior's) whole gradient is the unbiased one over that factor, as
    NVIL scales its whole learning signal; the decoder's is unscaled. The signal uses the moments of
    the batches before (they are updated after it, in training only), so it is unbiased given them."""

    def __init__(self, normalise: bool = False):
        self.normalise = true_or_false("normalise", normalise)

    def __call__(self, model: CategoricalVAE, x: torch.Tensor, beta: float = 1.0) -> DiscreteTerms:
        refuse_empty(x, "the discrete ELBO")  # (and NVIL's moments would take its none as a signal of mean 0)
        q = model.posterior(x)
        z = q.sample()  # (B, V, K), no gradient path
        log_px_z = model.log_px_given_z(x, z)  # f(z), of the observed entries: its gradient trains the decoder
        kl = kl_divergence(q, model.prior())
        b = model.baseline_value(x)
        centre, scale = self._centre_and_scale(model, log_px_z)
        signal = ((log_px_z - b).detach() - centre) / scale
        surrogate = log_px_z + signal * q.log_prob(z)  # grad: decoder grad f + (f - b - c) / s grad log q
        baseline_fit = (log_px_z.detach() - centre - b).pow(2)  # trains b(x) only
        kl_term = kl
        if self.normalise:  # the KL's gradient (q's, exact) on the same scale: the encoder's whole gradient over s
            kl_term = kl.detach() + (kl - kl.detach()) / scale
            if model.training:
                cast(RunningMoments, model.signal_moments).update(log_px_z - b)
        loss = -(surrogate - beta * kl_term) + baseline_fit
        return DiscreteTerms(loss, (log_px_z - kl).detach(), log_px_z.detach(), kl.detach())

    def _centre_and_scale(
        self, model: CategoricalVAE, log_px_z: torch.Tensor
    ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(c, max(1, sqrt(v))) of the model's running moments, in f's precision; (0, 1) without ``normalise``."""
        if not self.normalise:
            return 0.0, 1.0
        moments = model.signal_moments
        if moments is None:
            raise ValueError(
                "NVIL's normalised signal needs the model's running moments of it: build the model as "
                "CategoricalVAE(..., baseline=net, signal_moments=dgmkit.nn.RunningMoments())"
            )
        return moments.mean.to(log_px_z.dtype), moments.scale().to(log_px_z.dtype)


def _leave_one_out(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For ``log_w`` (k, B): the largest log weight m (B,), log sum_i w_i / e^m (B,), and for each
    draw j, log (sum_{i != j} w_i + w_-j) / e^m (k, B), log w_-j = mean_{i != j} log w_i, in O(kB)
    memory (not a (k, k, B) tensor: k = 5000 draws of 128 datapoints made 12.8 GB of it). The sum
    over the others is scaled by the largest of them (the first or, for the largest draw, the
    second largest weight), so that it is >= 1 and its subtraction loses nothing."""
    k = log_w.shape[0]
    if k < 2:  # (torch's "selected index k out of range" in topk otherwise)
        raise ValueError(f"VIMCO's leave-one-out baselines need k >= 2 draws a datapoint, log_w (k, B); got k = {k}")
    # log w_-j (k, B) over the finite weights: a draw of weight 0 (log w = -inf) makes the others'
    # geometric mean 0 but not its own (-inf - -inf would be NaN there)
    zero = log_w == -math.inf
    finite = log_w.masked_fill(zero, 0.0)
    zeros_among_others = zero.sum(0, keepdim=True) - zero.long()
    others = ((finite.sum(0, keepdim=True) - finite) / (k - 1)).masked_fill(zeros_among_others > 0, -math.inf)
    top, at = log_w.topk(2, dim=0)  # (2, B): the largest two, where the largest is
    first = torch.arange(k, device=log_w.device).view(k, *([1] * (log_w.dim() - 1))) == at[0]
    scaled = (log_w - top[0]).exp()
    total = scaled.sum(0)  # (B,), >= 1
    # the largest draw's others, by the second largest (exp of its own, maybe inf there, is not summed)
    rest_of_first = torch.where(first, 0.0, (log_w - top[1]).exp()).sum(0)
    rest = torch.where(first, rest_of_first, total - scaled)  # each >= 1, scaled by its own reference
    ref = torch.where(first, top[1], top[0])  # (k, B): the largest of the others
    log_loo = ref - top[0] + torch.log(rest + (others - ref).exp())
    return top[0], total.log(), log_loo


def leave_one_out_bounds(log_w: torch.Tensor) -> torch.Tensor:
    """VIMCO's baselines: for each draw j of ``log_w`` (k, B), log (1/k) (sum_{i != j} w_i + w_-j),
    where log w_-j = mean_{i != j} log w_i (the geometric mean of the other weights stands in for
    w_j), all in log space; shape (k, B). Needs k >= 2. Not for differentiation."""
    top, _, log_loo = _leave_one_out(log_w)
    return top + log_loo - math.log(log_w.shape[0])


def vimco_signals(log_w: torch.Tensor) -> torch.Tensor:
    """L - L_-j for each draw j of ``log_w`` (k, B): the bound less ``leave_one_out_bounds``, formed
    from the weights relative to the largest, so that no |L| (tens to hundreds of nats, whose
    float32 rounding, ~1e-5, rivals a signal of ~1/k at large k) enters the difference."""
    _, log_total, log_loo = _leave_one_out(log_w)
    return log_total - log_loo


def vimco_surrogate(log_w: torch.Tensor, log_qz: torch.Tensor) -> torch.Tensor:
    """L + sum_j (L - L_-j) log q(z_j|x), per datapoint (B,), for k >= 2 draws z_j of q that carry
    no gradient: ``log_w`` (k, B), the log weights (``log_qz`` in them), and ``log_qz`` (k, B). Its
    gradient is VIMCO's: the bound L = log mean_j w_j with the draws held fixed, plus each draw's
    score weighted by its signal (``vimco_signals``, held fixed)."""
    return log_mean_exp(log_w) + (vimco_signals(log_w.detach()) * log_qz).sum(0)


class VIMCO(Objective[CategoricalVAE]):
    """The variational inference for Monte Carlo objectives estimator of the module docstring,
    with ``k`` >= 2 draws a datapoint (``vimco_surrogate``; a Helmholtz machine's is
    ``wake_sleep.VIMCOBound``). With beta < 1 (KL warm-up) the
    weights are p(x|z) (p(z)/q(z|x))^beta, as the IWAE objective's. It reports the ELBO (the mean
    of the k draws' log p(x|z), less the closed-form KL), as the other estimators do."""

    def __init__(self, k: int = 5):
        self.k = whole_at_least("k, VIMCO's draws a datapoint", k, 2)  # (one draw has no others to be its baseline)

    def __call__(self, model: CategoricalVAE, x: torch.Tensor, beta: float = 1.0) -> DiscreteTerms:
        q, prior = model.posterior(x), model.prior()
        w = log_importance_weights(model, x, self.k, q=q, prior=prior, reparameterized=False)  # z: exact draws of q
        log_w = w.log_w if unit_weight(beta) else w.log_px_z + beta * (w.log_pz - w.log_qz)
        surrogate = vimco_surrogate(log_w, w.log_qz)
        kl = kl_divergence(q, prior)
        log_px_z = w.log_px_z.mean(0)
        return DiscreteTerms(-surrogate, (log_px_z - kl).detach(), log_px_z.detach(), kl.detach())
