"""The Helmholtz machine (sigmoid belief network) and the wake-sleep family of objectives."""

import itertools
import math

import pytest
import torch

from dgmkit.evaluation import importance_sampled_log_likelihood
from dgmkit.models import HelmholtzMachine
from dgmkit.objectives import ReweightedWakeSleep, WakeSleep

SIZES = [2, 2]  # 16 latent configurations: small enough to enumerate


def tiny(seed=0, sharp_recognition=True):
    torch.manual_seed(seed)
    m = HelmholtzMachine((1, 1, 3), SIZES)
    with torch.no_grad():
        for p in m.generative.parameters() if not sharp_recognition else m.parameters():
            p.mul_(3)  # make every layer matter
    return m


def all_h():
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=sum(SIZES))))  # (16, 4)


def all_x():
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=3))).view(8, 1, 1, 3)


@torch.no_grad()
def test_prior_posterior_and_model_normalise():
    m = tiny()
    h = all_h()
    assert m.prior().log_prob(h).exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    x = all_x()
    q = m.posterior(x)
    total_q = q.log_prob(h.unsqueeze(1).expand(16, 8, 4)).exp().sum(0)
    assert torch.allclose(total_q, torch.ones(8), atol=1e-5)
    log_joint = m.likelihood(h.unsqueeze(1)).log_prob(x) + m.prior().log_prob(h).unsqueeze(1)  # (16, 8)
    assert torch.logsumexp(log_joint, 0).exp().sum().item() == pytest.approx(1.0, abs=1e-5)  # sum_x p(x) = 1


@torch.no_grad()
def test_samples_follow_the_prior():
    m = tiny()
    h = m.prior().sample((100_000,))
    codes = (h * torch.tensor([8.0, 4.0, 2.0, 1.0])).sum(-1).long()
    freq = torch.bincount(codes, minlength=16).double() / 100_000
    probs = m.prior().log_prob(all_h()).exp().double()
    assert (freq - probs).abs().max() < 0.006


@torch.no_grad()
def test_importance_sampling_converges_to_the_enumerated_likelihood():
    m = tiny(sharp_recognition=False)  # a peaked, mismatched q makes the estimator's variance large
    x = all_x()
    h = all_h().unsqueeze(1)
    exact = torch.logsumexp(m.likelihood(h).log_prob(x) + m.prior().log_prob(h), 0)
    est = importance_sampled_log_likelihood(m, x, k=200_000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(est, exact, atol=0.02)


def test_rws_generative_gradient_is_the_iwae_gradient():
    m = tiny()
    x = all_x()
    torch.manual_seed(5)
    ReweightedWakeSleep(k=7, sleep=False)(m.eval(), x).loss.sum().backward()
    ours = [p.grad.clone() for p in m.generative.parameters()]
    m.zero_grad()
    torch.manual_seed(5)
    q = m.posterior(x)
    h = q.sample((7,))
    log_w = m.likelihood(h).log_prob(x) + m.prior().log_prob(h) - q.log_prob(h)
    (-(torch.logsumexp(log_w, 0) - math.log(7))).sum().backward()
    for a, p in zip(ours, m.generative.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


def test_wake_and_sleep_phases_update_disjoint_parameters():
    m = tiny()
    x = all_x()
    torch.manual_seed(9)
    WakeSleep()(m.eval(), x).loss.sum().backward()  # wake phase only
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.recognition.parameters())
    wake_grads = [p.grad.clone() for p in m.generative.parameters()]
    m.zero_grad()
    torch.manual_seed(9)
    WakeSleep()(m.train(), x).loss.sum().backward()  # wake + sleep
    for a, p in zip(wake_grads, m.generative.parameters()):
        assert torch.allclose(a, p.grad)  # the sleep phase does not touch the generative model
    assert all(p.grad.abs().sum() > 0 for p in m.recognition.parameters())


def _recognition_gradient(m, loss):
    m.zero_grad()
    loss.backward()
    return torch.cat([p.grad.flatten() for p in m.recognition.parameters()])


def test_the_q_updates_follow_the_true_posterior_by_enumeration():
    """The updates of q against their definitions, exact over the 16 h: the sleep phase's mean
    gradient is that of E_p(x,h)[-log q(h|x)] (Hinton et al. 1995); reweighted wake-sleep's q-wake
    update tends, as k grows, to that of E_p(h|x)[-log q(h|x)], KL(p(h|x) || q(h|x)) plus a
    constant (Bornschein & Bengio 2015). A q-wake term left out or a sleep term of the wrong sign
    is off by the whole gradient."""
    m, x = tiny().double(), all_x().double()
    h = all_h().double().unsqueeze(1).expand(16, 8, 4)
    with torch.no_grad():
        log_joint = m.likelihood(h).log_prob(x) + m.prior().log_prob(h)  # (16, 8)
    exact_wake = _recognition_gradient(m, -(torch.softmax(log_joint, 0) * m.posterior(x).log_prob(h)).sum())
    exact_sleep = _recognition_gradient(m, -(log_joint.exp() * m.posterior(x).log_prob(h)).sum())
    torch.manual_seed(0)
    rws = ReweightedWakeSleep(k=2000, sleep=False)(m.eval(), x.repeat(25, 1, 1, 1)).loss.sum() / 25
    wake = _recognition_gradient(m, rws)
    sleep = _recognition_gradient(m, WakeSleep()(m.train(), x.repeat(12_500, 1, 1, 1)).loss.mean())  # 100000 dreams
    assert (wake - exact_wake).norm() < 0.06 * exact_wake.norm()
    assert (sleep - exact_sleep).norm() < 0.03 * exact_sleep.norm()


def test_wake_sleep_training_raises_the_likelihood():
    torch.manual_seed(0)
    data = (torch.rand(1, 1, 1, 6) < 0.5).float().expand(200, 1, 1, 6).clone()
    data[100:] = 1 - data[100:]  # two modes
    m = HelmholtzMachine((1, 1, 6), [4])
    before = importance_sampled_log_likelihood(m, data, k=500).mean()
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(300):
        loss = ReweightedWakeSleep(k=5)(m.train(), data).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = importance_sampled_log_likelihood(m.eval(), data, k=500).mean()
    assert after > before + 1.5 and after > -math.log(2) - 0.3  # near the two-mode optimum, -log 2


def test_vimco_follows_the_gradient_of_the_k_sample_bound_by_enumeration():
    """VIMCO's mean gradient, of both networks, is that of E[log (1/k) sum_j w_j] over k = 2 draws of
    q (exact: the 16^2 pairs of the 16 h enumerated), for one datapoint; the generative part is RWS's
    p-wake update (no sleep phase), the recognition part the score-function estimator."""
    from dgmkit.objectives import VIMCOBound

    m, x = tiny().double(), all_x()[5:6].double()
    h = all_h().double().unsqueeze(1)  # (16, 1, 4)
    q = m.posterior(x)
    log_q = q.log_prob(h)[:, 0]  # (16,)
    log_w = (m.likelihood(h).log_prob(x) + m.prior().log_prob(h))[:, 0] - log_q
    pairs = torch.tensor(list(itertools.product(range(16), repeat=2)))
    exact_bound = (log_q[pairs].sum(1).exp() * (torch.logsumexp(log_w[pairs], 1) - math.log(2))).sum()
    m.zero_grad()
    (-exact_bound).backward()
    exact = torch.cat([p.grad.flatten() for p in m.parameters()])
    torch.manual_seed(0)
    groups = []
    for _ in range(10):
        m.zero_grad()
        VIMCOBound(k=2)(m.train(), x.expand(8000, 1, 1, 3)).loss.mean().backward()
        groups.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    g = torch.stack(groups)
    mean, se = g.mean(0), g.std(0) / 10**0.5
    assert ((mean - exact).abs() / (se + 1e-6)).max() < 5, (mean, exact, se)
    assert exact.abs().max() > 20 * se.max()  # (a gradient of which the noise would not hide a wrong part)


def test_vimco_reports_the_k_sample_bound_and_needs_two_draws():
    from dgmkit.errors import ConfigError
    from dgmkit.objectives import VIMCOBound

    m, x = tiny(), all_x()
    torch.manual_seed(1)
    t = VIMCOBound(k=3)(m.eval(), x)
    assert t.iwae.shape == (8,) and bool((t.iwae >= t.elbo - 1e-6).all())  # (Jensen: the bound of 3 draws >= their mean)
    torch.manual_seed(1)
    w = ReweightedWakeSleep(k=3)(m.eval(), x)
    torch.testing.assert_close(t.iwae, w.iwae)  # the same draws: the same bound and terms
    torch.testing.assert_close(t.elbo, w.elbo)
    for k in (1, 0, 1.5):
        with pytest.raises(ValueError, match="VIMCO's draws"):
            VIMCOBound(k=k)
    from dgmkit.config import RunConfig

    with pytest.raises(ConfigError, match="--objective vimco needs --iw-k 2 or more"):
        RunConfig.of(model="helmholtz", objective="vimco", iw_k=1)


@pytest.mark.parametrize(
    "sizes, said",
    [([2.5], "layer 1 size must be an integer >= 1, got 2.5"), ([3, "2"], "layer 2 size must be an integer >= 1, got '2'"),
     ([True], "layer 1 size must be an integer >= 1, got True"), ([0], "layer 1 size must be an integer >= 1, got 0"),
     (3, "sizes must be a list .* got 3"), ([], "sizes must be a list .* got \\[\\]")],
)  # fmt: skip
def test_layer_sizes_that_are_no_counts_are_refused_by_name(sizes, said):
    """A size of 2.5, "2" or True failed in torch or in a comparison (a TypeError naming no layer); 3 was not iterable."""
    with pytest.raises(ValueError, match=said):
        HelmholtzMachine((1, 1, 3), sizes)
    assert HelmholtzMachine((1, 1, 3), (2, 1)).sizes == [2, 1]  # (a tuple, as any sequence of counts, is taken)
