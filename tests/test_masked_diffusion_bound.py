"""The masked (absorbing-state) diffusion's continuous-time bound against exact likelihoods, on 3
entries of 3 levels (all 27 images): the model's own ``bound_terms`` with its masks enumerated
(its ``torch.rand`` replaced by chosen values) and its time by Gauss-Legendre quadrature.

- A network that gives the exact conditionals of a joint p(x): the bound is -log p(x) itself.
- Any network: the continuous-time reverse process (each entry revealed at a time uniform on
  (0, 1), independently, its level drawn from p(x_d | z_tau, tau)) has the exact likelihood
  p(x) = E_tau prod_d p(x_d | z_tau_d, tau_d), by quadrature over the ordered reveal times; the
  bound lies above -log p(x). For a network that ignores the time that p(x) is the uniform mixture
  of all D! orders (``order_log_likelihood``) and the bound the mean of their NLLs.
- The T-step bound falls to the continuous one as 1/T, and the T-step chain's likelihood to the
  continuous-time one."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from dgmkit.models import MaskedDiffusion

D, L = 3, 3
IMAGES = torch.tensor(list(itertools.product(range(L), repeat=D))).view(-1, 1, 1, D)
SETS = [s for s in itertools.product([False, True], repeat=D) if any(s)]  # the masked entries


class _Net(nn.Module):
    """An MLP from the one-hot input and (unless ``timeless``) the time to L logits per entry."""

    def __init__(self, timeless: bool):
        super().__init__()
        self.timeless = timeless
        self.net = nn.Sequential(nn.Linear(D * (L + 1) + 1, 16), nn.Tanh(), nn.Linear(16, D * L))

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        s = torch.zeros_like(s) if self.timeless else 3 * s / 1000  # (3: a network that changes over t)
        return self.net(torch.cat([h.flatten(1), s.view(-1, 1)], 1)).view(-1, L, 1, D)


class _JointConditionals(nn.Module):
    """p(x_d | the unmasked entries) of a joint table p(x) over the L^D images, time ignored."""

    def __init__(self, log_p: torch.Tensor):
        super().__init__()
        self.log_p = log_p  # (L^D,)

    def forward(self, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        level = h.view(len(h), L + 1, D).argmax(1)  # (B, D), L for a mask
        images = IMAGES.view(1, -1, D)
        fits = ((level.unsqueeze(1) == images) | (level.unsqueeze(1) == L)).all(2)  # (B, L^D)
        joint = torch.where(fits, self.log_p, -math.inf)  # (B, L^D)
        per_level = torch.stack(
            [torch.logsumexp(torch.where(images[..., d] == v, joint, -math.inf), 1) for v in range(L) for d in range(D)], 1
        )  # (B, L D): log sum of p over the fitting images with x_d = v, level-major
        return per_level.view(-1, L, 1, D)


def _model(net: nn.Module, steps: int = 0) -> MaskedDiffusion:
    return MaskedDiffusion(net, (1, 1, D), L, steps).double()


def _gauss_legendre(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, w = np.polynomial.legendre.leggauss(n)
    return torch.tensor((u + 1) / 2), torch.tensor(w / 2)


def _with_uniforms(model: MaskedDiffusion, x: torch.Tensor, t: torch.Tensor, r: torch.Tensor, train: bool):
    """``bound_terms``'s diffusion term with its uniforms (B, D) given: the masks chosen."""
    calls = []

    def rand(shape, **kwargs):
        calls.append(shape)
        return r.view(shape)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "rand", rand)
        out = model.bound_terms(x, t, train=train)["diffusion"]
    assert calls == [x.shape]  # (the masks were the chosen ones)
    return out


def _mask_probability(masked: tuple, t: torch.Tensor) -> torch.Tensor:
    return t ** sum(masked) * (1 - t) ** (D - sum(masked))


def _time_form(model: MaskedDiffusion, n: int = 16) -> torch.Tensor:
    """-ELBO of each image in continuous time, as training draws it: (1/t) times the masked
    entries' NLL at t uniform, every mask weighted by its probability, t by quadrature."""
    t, w = _gauss_legendre(n)
    total = torch.zeros(len(IMAGES), dtype=torch.float64)
    for masked in SETS:
        rows = IMAGES.repeat_interleave(n, 0)
        r = torch.where(torch.tensor(masked), 0.0, 1.0).double().expand(len(rows), D)  # masked: r < t
        out = _with_uniforms(model, rows, (1 - t).repeat(len(IMAGES)), r, True).view(-1, n)  # (it reads 1 - t)
        total += (out * w * _mask_probability(masked, t)).sum(1)
    return total


def _count_form(model: MaskedDiffusion, n: int = 16) -> torch.Tensor:
    """-ELBO of each image as ``dgm eval`` draws it: m masks uniform in 1..D, t ~ Beta(m, D - m + 1),
    the m entries uniform; every set enumerated, t by quadrature."""
    t, w = _gauss_legendre(n)
    total = torch.zeros(len(IMAGES), dtype=torch.float64)
    for masked in SETS:
        m = sum(masked)
        rows = IMAGES.repeat_interleave(n, 0)
        at = t.repeat(len(IMAGES)).unsqueeze(1)  # the m-th smallest uniform: t at the masked entries, above it elsewhere
        r = torch.where(torch.tensor(masked), at, (1 + at) / 2)
        count = torch.full((len(rows),), (m - 0.5) / D, dtype=torch.float64)
        out = _with_uniforms(model, rows, count, r, False).view(-1, n)
        beta = t ** (m - 1) * (1 - t) ** (D - m) * m * math.comb(D, m)  # Beta(m, D - m + 1)'s density
        total += (out * w * beta).sum(1) / D / math.comb(D, m)
    return total


def _step_form(model: MaskedDiffusion) -> torch.Tensor:
    """-ELBO of each image in T steps: the mean over steps j of (1/t_j) E[masked entries' NLL], t_j = j / T."""
    steps = model.steps
    t = torch.arange(1, steps + 1, dtype=torch.float64) / steps
    total = torch.zeros(len(IMAGES), dtype=torch.float64)
    for masked in SETS:
        rows = IMAGES.repeat_interleave(steps, 0)
        r = torch.where(torch.tensor(masked), 0.0, 1.0).double().expand(len(rows), D)
        out = _with_uniforms(model, rows, (t - 0.5 / steps).repeat(len(IMAGES)), r, False).view(-1, steps)
        total += (out * _mask_probability(masked, t)).mean(1)
    return total


def _continuous_log_prob(model: MaskedDiffusion, n: int = 10) -> torch.Tensor:
    """log p(x) of every image under the continuous-time reverse process: the sum over the orders
    of the integral over reveal times 1 > t_1 > ... > t_D > 0 of prod_i p(x_sigma(i) | x_sigma(<i), t_i)
    (the D! orders of D uniform times), by quadrature in t_1 = u_1, t_2 = u_1 u_2, ..."""
    u, w = _gauss_legendre(n)
    grid = torch.stack(torch.meshgrid(*[u] * D, indexing="ij"), -1).view(-1, D)
    weight = torch.stack(torch.meshgrid(*[w] * D, indexing="ij"), -1).view(-1, D).prod(1)
    weight = weight * math.prod(grid[:, i] ** (D - 1 - i) for i in range(D))  # the Jacobian
    times, p, b = grid.cumprod(1), len(grid), len(IMAGES)
    x = IMAGES.view(b, D)
    total = torch.zeros(b, dtype=torch.float64)
    for order in itertools.permutations(range(D)):
        log_p, z = torch.zeros(b, p, dtype=torch.float64), torch.full_like(x, L)
        for i, e in enumerate(order):
            zz = z.view(b, 1, D).expand(b, p, D).reshape(-1, 1, 1, D)
            logp = torch.log_softmax(model.logits(zz, times[:, i].repeat(b)), -1).view(b, p, D, L)[:, :, e]
            log_p += logp.gather(2, x[:, e].view(-1, 1, 1).expand(b, p, 1)).squeeze(2)
            z[:, e] = x[:, e]
        total += (log_p.exp() * weight).sum(1)
    return total.log()


def _chain_log_prob(model: MaskedDiffusion) -> torch.Tensor:
    """log p(x) of every image under the T-step chain (each masked entry revealed with probability
    1/j at step j, from p(x_d | z_t) at t = j / T), over the sets of revealed entries."""
    x, sets = IMAGES.view(-1, D), list(itertools.product([False, True], repeat=D))
    prob = {s: torch.full((len(x),), float(not any(s)), dtype=torch.float64) for s in sets}
    for j in range(model.steps, 0, -1):
        nxt = {s: torch.zeros(len(x), dtype=torch.float64) for s in sets}
        for s in sets:
            z = torch.where(torch.tensor(s), x, L).view(-1, 1, 1, D)
            t = torch.full((len(x),), j / model.steps, dtype=torch.float64)
            px = torch.softmax(model.logits(z, t), -1)[:, 0, 0].gather(2, x.unsqueeze(2)).squeeze(2)  # (B, D)
            for s2 in sets:
                if all(b or not a for a, b in zip(s, s2)):  # s2 keeps what s revealed
                    f = [px[:, d] / j if b and not a else 1 - 1 / j if not b else 1.0 for d, (a, b) in enumerate(zip(s, s2))]
                    nxt[s2] += prob[s] * math.prod(f)
        prob = nxt
    return prob[(True,) * D].log()


def test_the_continuous_bound_of_a_joint_s_exact_conditionals_is_its_likelihood():
    """Given p(x_d | x_unmasked) of a joint, every order is the joint's chain rule: the bound is
    tight, in the per-time form of training and the count form of ``dgm eval``."""
    torch.manual_seed(0)
    log_p = torch.log_softmax(2 * torch.randn(L**D, dtype=torch.float64), 0)
    model = _model(_JointConditionals(log_p))
    with torch.no_grad():
        assert _time_form(model) == pytest.approx(-log_p, abs=1e-9)
        assert _count_form(model) == pytest.approx(-log_p, abs=1e-9)
        orders = torch.tensor(list(itertools.permutations(range(D))))
        assert torch.allclose(model.order_log_likelihood(IMAGES, orders), log_p.unsqueeze(1).expand(-1, len(orders)))


@pytest.mark.parametrize("timeless", [True, False])
def test_the_continuous_bound_lies_above_the_continuous_time_process_s_nll(timeless):
    torch.manual_seed(1)
    model = _model(_Net(timeless))
    with torch.no_grad():
        log_p = _continuous_log_prob(model)
        bound = _time_form(model)
        assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-10)
        assert _count_form(model) == pytest.approx(bound, abs=1e-9)  # one bound, written two ways
        gap = bound + log_p
        assert gap.min().item() > 1e-5 and gap.max().item() < 0.5  # a bound, strict for these conditionals, not vacuous
        if timeless:  # the process is then the uniform mixture of all D! orders, its bound their mean NLL
            per = model.order_log_likelihood(IMAGES, torch.tensor(list(itertools.permutations(range(D)))))
            assert torch.allclose(torch.logsumexp(per, 1) - math.log(math.factorial(D)), log_p, atol=1e-12)
            assert torch.allclose(bound, -per.mean(1), atol=1e-12)


def test_the_step_bound_and_chain_fall_to_the_continuous_ones_as_one_over_t():
    torch.manual_seed(1)
    net = _Net(timeless=False)
    with torch.no_grad():
        bound, log_p = _time_form(_model(net)), _continuous_log_prob(_model(net))
        err = {t: (_step_form(_model(net, t)) - bound).abs().max().item() for t in (10, 100, 1000)}
        assert 0 < err[1000] < 1e-3 and err[10] / err[100] == pytest.approx(10, rel=0.1) == err[100] / err[1000]
        chain = {t: (_chain_log_prob(_model(net, t)) - log_p).abs().max().item() for t in (8, 32)}
        assert chain[32] < 0.02 and chain[8] / chain[32] == pytest.approx(4, rel=0.25)
