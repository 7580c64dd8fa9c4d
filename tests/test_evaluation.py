"""Units, diagnostics and the evaluation report against a model with a known likelihood."""

import math

import pytest
import torch
from torch import nn

from dgmkit.conditional import BernoulliHead, Decoder, GaussianEncoder
from dgmkit.evaluation import bits_per_dim, discrete_nll, evaluate, posterior_statistics
from dgmkit.models import VAE
from dgmkit.priors import StandardNormalPrior
from linear_gaussian import D, data, make


def test_bits_per_dim_and_the_dequantization_offset():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # a uniform density on [0, 1]^D has log p(y) = 0; the uniform distribution over 256^D
    # integers has NLL D log 256 = 8 bits/dim: the offset turns one into the other
    nll = discrete_nll(0.0, num_dims=10, log_volume=math.log(256))
    assert nll == pytest.approx(10 * math.log(256))
    assert bits_per_dim(nll, 10) == pytest.approx(8.0)


@torch.no_grad()
def test_evaluate_recovers_the_exact_log_likelihood():
    model, marginal = make(exact_posterior=True)
    x = data(marginal, 40)
    report = evaluate(model, x, iw_samples=50)
    exact = -marginal.log_prob(x.view(40, -1)).mean().item()
    assert report.nll == pytest.approx(exact, abs=1e-8)
    assert report.bpd == pytest.approx(exact / (D * math.log(2)))
    assert report.n == 40 and report.num_dims == D and report.latent_dim == 2
    assert report.elbo == pytest.approx(report.recon - report.kl)


@torch.no_grad()
def test_evaluate_adds_the_dequantization_volume():
    model, marginal = make(perturb=0.1)
    x = data(marginal, 20)
    plain = evaluate(model, x, iw_samples=20, seed=1)
    shifted = evaluate(model, x, iw_samples=20, seed=1, log_volume=math.log(256))
    assert shifted.nll - plain.nll == pytest.approx(D * math.log(256))
    assert plain.elbo - shifted.elbo == pytest.approx(D * math.log(256))


def test_active_units_counts_dimensions_whose_posterior_mean_moves():
    m = 3

    class HalfCollapsed(nn.Module):
        def forward(self, x):  # z_1 follows the data; z_2, z_3 ignore it (posterior = prior)
            out = torch.zeros(x.shape[0], 2 * m)
            out[:, 0] = x.flatten(1).sum(1)
            out[:, m:] = math.log(math.expm1(1.0))  # softplus^-1(1): unit scale
            return out

    model = VAE(
        GaussianEncoder(HalfCollapsed(), m, min_scale=0.0),
        Decoder(nn.Linear(m, 4), BernoulliHead(), (1, 2, 2)),
        StandardNormalPrior(m),
    )
    x = (torch.rand(100, 1, 2, 2) < 0.5).float()
    stats = posterior_statistics(model, x)
    assert stats["active_units"] == 1
    kl = stats["kl_per_dim"]
    assert kl[0] > 0.1 and kl[1] == pytest.approx(0.0, abs=1e-6) and kl[2] == pytest.approx(0.0, abs=1e-6)


def test_eval_notes_follow_the_models_declarations_not_its_name():
    """The MMD line of a model whose codes are pushed towards a prior, and the point-mass note of
    a code model, come from what eval.json records the model declares."""
    from dgmkit.cli.evaluate import format_report

    recon = {"split": "test", "n": 1, "subset": None, "estimate": "reconstruction", "recon": -5.0, "mmd": None,
             "seconds": 0.1}  # fmt: skip
    assert "needs at least 2 datapoints" in format_report({**recon, "codes_match_prior": True})
    assert "MMD" not in format_report({**recon, "codes_match_prior": False})
    bound = {"split": "test", "n": 2, "subset": None, "estimate": "bound", "elbo": -3.0, "elbo_bpd": 0.1, "recon": -2.0,
             "kl": 1.0, "nll": 3.0, "nll_stderr": 0.1, "bpd": 0.1, "iw_samples": 10, "seconds": 0.1}  # fmt: skip
    assert "more draws (k) change nothing" in format_report({**bound, "point_mass_posterior": True})
    assert "change nothing" not in format_report({**bound, "point_mass_posterior": False})
