"""The log-linear latent variable model: exact normalisation and inference by enumeration, and
EM that never lowers the log-likelihood."""

import math

import numpy as np
import pytest
import torch

from dgmkit.data import load_dataset
from dgmkit.errors import DataError
from dgmkit.models import LogLinearLVM
from dgmkit.models.loglinear import grid_edges


def random_model(k=4, seed=0):
    m = LogLinearLVM((1, 3, 3), k)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (m.unary, m.bias, m.pairwise):
            p.copy_(torch.randn(p.shape, generator=g))
        m.log_pi.copy_(torch.log_softmax(torch.randn(k, generator=g), 0))
    return m


def crops() -> torch.Tensor:
    d = load_dataset("digits-4x4")
    return torch.cat([d.train.x, d.valid.x]).float()[:, :, 1:, :3]  # 3x3 crops of real digits


def test_edges_of_a_grid():
    assert grid_edges(2, 2) == [(0, 1), (0, 2), (1, 3), (2, 3)]
    assert len(grid_edges(3, 3)) == 12


@torch.no_grad()
def test_the_model_normalises_and_inference_is_bayes_rule():
    m = random_model()
    states = m.states.view(-1, 1, 3, 3)
    assert m.log_prob(states).exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    cond = m.conditional_log_probs(m.states)  # (512, K)
    assert torch.allclose(torch.logsumexp(cond, 0), torch.zeros(4), atol=1e-5)  # each p(x|z) normalised
    x = states[:7]
    joint = m.log_pi + m.conditional_log_probs(x.flatten(1))
    assert torch.allclose(m.posterior(x).probs, torch.softmax(joint, -1), atol=1e-6)


@torch.no_grad()
def test_a_batch_of_no_images_has_no_log_likelihoods():
    m = random_model()  # (reshape(0, -1) raised torch's "cannot reshape tensor of 0 elements"; PPCA and the ARMs gave (0,))
    none = torch.zeros(0, 1, 3, 3)
    assert m.log_prob(none).shape == (0,)
    assert m.posterior(none).probs.shape == (0, 4)


def test_em_refuses_data_it_has_no_likelihood_of():
    m = random_model()  # each made every parameter NaN (or fitted a 'likelihood' of the value 0.5), silently
    x = crops()[:20]
    half, holed = x.clone(), x.clone()
    half[0, 0, 0, 0], holed[0, 0, 0, 0] = 0.5, float("nan")
    for bad, words in ((x[:0], "at least one datapoint"), (half, "do not fit"), (holed, "missing entries")):
        with pytest.raises(DataError, match=words):
            m.em_step(bad)
    assert all(torch.isfinite(p).all() for p in m.parameters())


@torch.no_grad()
def test_samples_follow_the_model():
    m = random_model(k=2)
    x, _ = m.sample(100_000, torch.Generator().manual_seed(0))
    codes = (x.flatten(1).long() * (2 ** torch.arange(8, -1, -1))).sum(-1)
    freq = torch.bincount(codes, minlength=512).double() / 100_000
    probs = m.log_prob(m.states.view(-1, 1, 3, 3)).exp().double()
    assert (freq - probs).abs().max() < 0.005


def test_em_never_lowers_the_log_likelihood_on_real_data():
    x = crops()
    m = LogLinearLVM((1, 3, 3), 5)
    history = [m.em_step(x) for _ in range(8)]
    history.append(m.log_prob(x).mean().item())
    steps = np.diff(history)
    assert (steps >= -1e-5).all(), steps
    assert history[-1] > history[0] + 0.5


@torch.no_grad()
def test_edges_given_couple_the_pixels_they_name_and_bad_ones_are_refused():
    m = LogLinearLVM((1, 3, 3), 2, edges=[(0, 8)])  # opposite corners, no grid neighbours
    w = 1.5
    for p, v in ((m.unary, 0.0), (m.bias, 0.0), (m.pairwise, w)):
        p.fill_(v)
    p = m.log_prob(m.states.view(-1, 1, 3, 3)).exp().view(2, 2, 2, 2, 2, 2, 2, 2, 2)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)
    corners = p.sum((1, 2, 3, 4, 5, 6, 7))  # p(x_0, x_8), the other pixels uniform
    assert corners[1, 1].item() == pytest.approx(math.exp(w) / (3 + math.exp(w)), abs=1e-6)
    assert corners[0, 1].item() == pytest.approx(1 / (3 + math.exp(w)), abs=1e-6)
    # an index past the 9 pixels failed only at the first likelihood; a negative one coupled pixel 8 silently
    for edges in ([(0, 9)], [(-1, 0)], [(4, 4)], [(0, 1, 2)]):
        with pytest.raises(ValueError, match=r"pairs of two distinct pixel indices in 0\.\.8, got"):
            LogLinearLVM((1, 3, 3), 2, edges=edges)


def test_too_large_a_space_is_refused():
    with pytest.raises(ValueError, match="at most 20"):
        LogLinearLVM((1, 8, 8), 3)
    # the (2^D, K) table of energies: at most 2^31 entries (a K of 10000 on 20 pixels ran out of memory)
    LogLinearLVM((1, 4, 5), 2**31 // 2**20)
    too_many = r"^2049 states are too many for D = 20 pixels: .* \(about 36 GiB .*\(at most 2048 states\)$"
    with pytest.raises(ValueError, match=too_many):
        LogLinearLVM((1, 4, 5), 2049)
    with pytest.raises(ValueError, match=r"^10000 states .* \(about 176 GiB"):
        LogLinearLVM((1, 4, 5), 10000)


def test_an_m_step_that_would_lower_q_is_undone_and_em_still_never_lowers_the_log_likelihood(monkeypatch):
    """A generalized M-step keeps the weights only where Q did not fall: an optimiser whose step
    ruins them (here to NaN, as a diverged line search can) is rolled back to the weights before
    it, and the step still raises the log-likelihood through the mixture weights alone."""
    x = torch.bernoulli(torch.full((100, 1, 3, 3), 0.4), generator=torch.Generator().manual_seed(1))
    m = random_model(k=3)
    before = [p.detach().clone() for p in (m.unary, m.bias, m.pairwise)]
    ll = m.log_prob(x).mean().item()

    class Diverging(torch.optim.LBFGS):
        def step(self, closure):
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))

    monkeypatch.setattr(torch.optim, "LBFGS", Diverging)
    assert m.em_step(x) == pytest.approx(ll)
    for p, old in zip((m.unary, m.bias, m.pairwise), before):
        assert torch.equal(p, old)
    assert m.log_prob(x).mean().item() >= ll - 1e-6 and torch.isfinite(m.log_pi).all()


def test_data_other_than_binary_are_refused_in_words():
    from dgmkit.errors import DataError
    from dgmkit.evaluation import evaluate

    m = random_model()
    x = torch.zeros(2, 1, 3, 3)
    x[1, 0, 1, 1] = 2.0
    with pytest.raises(DataError, match=r"its likelihood scores 0 or 1 in each entry, and the data hold values in \[0, 2\]"):
        evaluate(m, x)
    with pytest.raises(DataError, match=r"the data are a single number \(3\); give datapoints"):
        evaluate(m, torch.tensor(3.0))


def test_a_model_cast_to_float64_draws_the_images_of_its_float32_self():
    model = LogLinearLVM((1, 2, 3), 3)
    single = model.float().sample(20, torch.Generator().manual_seed(0))[0]
    double = model.double().sample(20, torch.Generator().manual_seed(0))[0]  # (failed: float32 rows to fill)
    assert double.dtype == torch.float64 and torch.equal(single.double(), double)


def test_the_likelihood_of_a_state_is_its_conditional():
    """likelihood(one-hot k) is p(x | z = k): the same numbers as the conditional of state k."""
    m = random_model(k=3)
    expected = m.conditional_log_probs(m.states)  # (S, K)
    for k in range(3):
        z = torch.nn.functional.one_hot(torch.tensor(k), 3).float()
        torch.testing.assert_close(m.likelihood(z).log_prob(m.states.view(-1, 1, 3, 3)), expected[:, k])


def test_an_m_step_that_lowers_q_by_a_finite_amount_is_undone(monkeypatch):
    """The generalized M-step keeps only a step that does not lower Q (a NaN step was the only
    case tested)."""
    x = torch.bernoulli(torch.full((100, 1, 3, 3), 0.4), generator=torch.Generator().manual_seed(1))
    m = random_model(k=3)
    before = [p.detach().clone() for p in (m.unary, m.bias, m.pairwise)]

    class Worse(torch.optim.LBFGS):
        def step(self, closure):
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.add_(3.0)

    monkeypatch.setattr(torch.optim, "LBFGS", Worse)
    m.em_step(x)
    for p, old in zip((m.unary, m.bias, m.pairwise), before):
        assert torch.equal(p, old)


def test_an_event_of_no_dimension_is_refused_where_the_model_is_built():
    """event_shape () (one pixel, as a shape) failed with an IndexError at the first log_prob."""
    with pytest.raises(ValueError, match="event_shape must hold at least one dimension"):
        LogLinearLVM((), 2)
    assert LogLinearLVM((1,), 2).log_prob(torch.ones(3, 1)).shape == (3,)
