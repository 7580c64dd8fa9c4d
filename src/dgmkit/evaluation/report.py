"""The evaluation report of a VAE-like model on one split: ELBO, NLL, bits/dim, diagnostics."""

import math
import time
from dataclasses import asdict, dataclass

import torch

from dgmkit.evaluation.likelihood import importance_sampled_log_likelihood
from dgmkit.evaluation.metrics import bits_per_dim, discrete_nll, posterior_statistics
from dgmkit.models import Autoencoder, ExactLatentVariableModel, ExactLikelihoodModel, VariationallyDequantizedFlow
from dgmkit.objectives import ELBO

__all__ = ["EvalReport", "evaluate"]


@dataclass
class EvalReport:
    """Per-datapoint means in nats. ``elbo`` is negative, ``nll`` and ``bpd`` positive; for
    dequantized data they are the bounds on the integer data (see ``discrete_nll``)."""

    elbo: float | None
    recon: float | None
    kl: float | None
    nll: float | None
    bpd: float | None
    elbo_bpd: float | None
    nll_stderr: float | None
    iw_samples: int
    n: int
    num_dims: int
    active_units: int | None
    latent_dim: int | None
    kl_per_dim: list | None
    seconds: float
    exact: bool = False  # nll is the exact log-likelihood, not an importance-sampled estimate
    note: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate(
    model, x: torch.Tensor, iw_samples: int = 5000, log_volume: float = 0.0, seed: int = 0, batch_size: int = 1000
) -> EvalReport:
    """Evaluate ``model`` on transformed data ``x`` (what the likelihood scores).

    The ELBO uses one posterior sample per datapoint; the NLL uses ``iw_samples`` importance
    samples (0 skips it and reports the ELBO bound as ``nll``)."""
    if isinstance(model, ExactLikelihoodModel):
        return _evaluate_exact(model, x, log_volume)
    if isinstance(model, VariationallyDequantizedFlow):
        return _evaluate_dequantized(model, x, iw_samples, seed)
    if isinstance(model, Autoencoder):
        return _evaluate_autoencoder(model, x, log_volume, batch_size)
    t0 = time.perf_counter()
    model.eval()
    torch.manual_seed(seed)
    num_dims = int(math.prod(x.shape[1:]))
    elbo_fn = ELBO(1)
    elbo = recon = kl = 0.0
    for i in range(0, len(x), batch_size):
        t = elbo_fn(model, x[i : i + batch_size])
        elbo += t.elbo.sum().item()
        recon += t.log_px_z.sum().item()
        kl += t.kl.sum().item()
    n = len(x)
    elbo, recon, kl = elbo / n, recon / n, kl / n
    stats = posterior_statistics(model, x)
    elbo_discrete = -discrete_nll(-elbo, num_dims, log_volume)
    if iw_samples > 0:
        g = torch.Generator(device=x.device).manual_seed(seed)
        ll = importance_sampled_log_likelihood(model, x, k=iw_samples, generator=g)
        nll_cont = -ll.mean().item()
        stderr = ll.std().item() / math.sqrt(n) if n > 1 else float("nan")
    else:
        nll_cont, stderr = -elbo, float("nan")
    nll = discrete_nll(nll_cont, num_dims, log_volume)
    return EvalReport(
        elbo=elbo_discrete,
        recon=recon - num_dims * log_volume,
        kl=kl,
        nll=nll,
        bpd=bits_per_dim(nll, num_dims),
        elbo_bpd=bits_per_dim(-elbo_discrete, num_dims),
        nll_stderr=stderr,
        iw_samples=iw_samples,
        n=n,
        num_dims=num_dims,
        active_units=stats["active_units"],
        latent_dim=stats["latent_dim"],
        kl_per_dim=stats["kl_per_dim"],
        seconds=time.perf_counter() - t0,
    )


@torch.no_grad()
def _evaluate_exact(model, x: torch.Tensor, log_volume: float, batch_size: int = 1000) -> EvalReport:
    """Exact log-likelihood (iw_samples = 0). For a latent variable model with an exact
    posterior the ELBO equals log p(x); recon and kl split it as E_p(z|x)[log p(x|z)] and
    KL(p(z|x) || p(z)). Models without latents (flows, autoregressive) report the NLL only."""
    t0 = time.perf_counter()
    model.eval()
    num_dims = int(math.prod(x.shape[1:]))
    ll = torch.cat([model.log_prob(x[i : i + batch_size]).double() for i in range(0, len(x), batch_size)])
    n = len(x)
    if not torch.isfinite(ll).all():
        bad = int((~torch.isfinite(ll)).sum())
        raise FloatingPointError(f"the model gives a non-finite log-likelihood to {bad} of {n} datapoints")
    nll = discrete_nll(-ll.mean().item(), num_dims, log_volume)
    stderr = ll.std().item() / math.sqrt(n) if n > 1 else float("nan")
    if not isinstance(model, ExactLatentVariableModel):
        return EvalReport(
            elbo=-nll, recon=None, kl=None, nll=nll, bpd=bits_per_dim(nll, num_dims), elbo_bpd=bits_per_dim(nll, num_dims),
            nll_stderr=stderr, iw_samples=0, n=n, num_dims=num_dims, active_units=None, latent_dim=None, kl_per_dim=None,
            seconds=time.perf_counter() - t0, exact=True,
        )  # fmt: skip
    post = model.posterior(x)
    m = post.mean.shape[-1]
    kl = torch.distributions.kl_divergence(post, model.prior()).mean().item()
    var = post.mean.var(0) if n > 1 else torch.zeros(m)
    return EvalReport(
        elbo=-nll,
        recon=-nll + kl,
        kl=kl,
        nll=nll,
        bpd=bits_per_dim(nll, num_dims),
        elbo_bpd=bits_per_dim(nll, num_dims),
        nll_stderr=stderr,
        iw_samples=0,
        n=n,
        num_dims=num_dims,
        active_units=int((var > 0.01).sum()),
        latent_dim=m,
        kl_per_dim=None,
        seconds=time.perf_counter() - t0,
        exact=True,
    )


@torch.no_grad()
def _evaluate_autoencoder(model, x: torch.Tensor, log_volume: float, batch_size: int) -> EvalReport:
    t0 = time.perf_counter()
    model.eval()
    num_dims = int(math.prod(x.shape[1:]))
    recon = sum(
        model.likelihood(model.posterior(x[i : i + batch_size]).mean).log_prob(x[i : i + batch_size]).sum().item()
        for i in range(0, len(x), batch_size)
    ) / len(x)
    stats = posterior_statistics(model, x)
    return EvalReport(
        elbo=None,
        recon=recon - num_dims * log_volume,
        kl=None,
        nll=None,
        bpd=None,
        elbo_bpd=None,
        nll_stderr=None,
        iw_samples=0,
        n=len(x),
        num_dims=num_dims,
        active_units=stats["active_units"],
        latent_dim=stats["latent_dim"],
        kl_per_dim=None,
        seconds=time.perf_counter() - t0,
        note="an autoencoder defines no density over x: no ELBO, NLL or bits/dim; recon is log p(x | z = f(x))",
    )


@torch.no_grad()
def _evaluate_dequantized(model, x: torch.Tensor, k: int, seed: int, batch_size: int = 100, chunk: int = 16) -> EvalReport:
    """A flow with variational dequantization on integer data x: the one-sample bound (elbo)
    and the k-sample importance-weighted bound on log P(x) (nll), both of the integers."""
    t0 = time.perf_counter()
    model.eval()
    torch.manual_seed(seed)
    k = max(1, k)
    num_dims = int(math.prod(x.shape[1:]))
    one, many = [], []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        log_w = torch.cat([model.log_weights(xb, min(chunk, k - s)) for s in range(0, k, chunk)])  # (k, B)
        one.append(log_w[0].double())
        many.append(torch.logsumexp(log_w.double(), 0) - math.log(k))
    one, many = torch.cat(one), torch.cat(many)
    n = len(x)
    nll, elbo = -many.mean().item(), one.mean().item()
    return EvalReport(
        elbo=elbo, recon=None, kl=None, nll=nll, bpd=bits_per_dim(nll, num_dims), elbo_bpd=bits_per_dim(-elbo, num_dims),
        nll_stderr=many.std().item() / math.sqrt(n) if n > 1 else float("nan"), iw_samples=k, n=n, num_dims=num_dims,
        active_units=None, latent_dim=None, kl_per_dim=None, seconds=time.perf_counter() - t0,
        note="variational dequantization: nll is the k-sample importance-weighted bound on -log P(x) of the integers",
    )  # fmt: skip
