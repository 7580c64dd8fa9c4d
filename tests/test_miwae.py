"""MIWAE on a linear-Gaussian model (probabilistic PCA) with missing entries, where everything is
known in closed form: the bound tends to the exact log-likelihood of the observed entries, and
importance-sampled imputations to the exact conditional mean of the missing ones. The per-pixel
log-likelihoods sum to each head's log_prob."""

import math
import re

import pytest
import torch
from torch import nn

from dgmkit.conditional import BernoulliHead, CategoricalHead, Decoder, GaussianEncoder, GaussianHead, LogisticMixtureHead
from dgmkit.distributions import element_log_probs
from dgmkit.models import VAE
from dgmkit.objectives.miwae import MIWAE, impute, miwae_log_weights
from dgmkit.priors import StandardNormalPrior

D, M, SIGMA = 5, 2, 0.5


def _ppca():
    torch.manual_seed(0)
    dec = nn.Linear(M, D)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(D, 2 * M))
    with torch.no_grad():
        enc[1].weight.zero_()
        enc[1].bias[:M] = 0.0
        enc[1].bias[M:] = math.log(math.expm1(1.0 - 1e-4))  # q(z | x) = N(0, I): the prior as proposal
    model = VAE(GaussianEncoder(enc, M), Decoder(dec, GaussianHead("fixed", SIGMA), (1, 1, D)), StandardNormalPrior(M))
    return model.double().eval()


def _exact(model, x, mask):
    """log N(x_o; b_o, C_oo), E[x_m | x_o] = b_m + C_mo C_oo^-1 (x_o - b_o) and the diagonal of
    Var[x_m | x_o] = C_mm - C_mo C_oo^-1 C_om, C = W W^T + sigma^2 I."""
    w, b = model.decoder.net.weight, model.decoder.net.bias
    c = w @ w.T + SIGMA**2 * torch.eye(D, dtype=torch.float64)
    logp, means, variances = [], [], []
    for xi, mi in zip(x.reshape(-1, D), mask.reshape(-1, D)):
        o, m = mi, ~mi
        mvn = torch.distributions.MultivariateNormal(b[o], c[o][:, o])
        logp.append(mvn.log_prob(xi[o]))
        mean, var = xi.clone(), torch.zeros_like(xi)
        mean[m] = b[m] + c[m][:, o] @ torch.linalg.solve(c[o][:, o], xi[o] - b[o])
        var[m] = torch.diagonal(c[m][:, m] - c[m][:, o] @ torch.linalg.solve(c[o][:, o], c[o][:, m]))
        means.append(mean)
        variances.append(var)
    return torch.stack(logp), torch.stack(means).reshape(x.shape), torch.stack(variances).reshape(x.shape)


def test_the_bound_and_the_imputations_converge_to_the_closed_forms():
    model = _ppca()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z = torch.randn(6, M, generator=g, dtype=torch.float64)
        x = model.likelihood(z).mean + SIGMA * torch.randn(6, 1, 1, D, generator=g, dtype=torch.float64)
    mask = torch.rand(6, 1, 1, D, generator=g) < 0.6
    mask[:, ..., 0] = True  # at least one observed entry each
    x_missing = torch.where(mask, x, torch.full_like(x, float("nan")))
    exact, cond_mean, cond_var = _exact(model, x, mask)
    with torch.no_grad():
        log_w, _, _ = miwae_log_weights(model, x_missing, 50000, generator=g)
    bound = torch.logsumexp(log_w, 0) - math.log(50000)
    assert (bound <= exact + 0.01).all()
    assert torch.allclose(bound, exact, atol=0.02)
    single, multiple = impute(model, x_missing, k=50000, draws=4000, generator=g)
    assert torch.equal(single[mask], x[mask]) and not torch.isnan(single).any()
    assert torch.allclose(single[~mask], cond_mean[~mask], atol=0.03)
    # multiple imputations: draws from p(x_m | x_o), whose mean is the conditional mean
    assert multiple.shape == (4000, *x.shape) and torch.equal(multiple[:, mask], x[mask].expand(4000, -1))
    assert torch.allclose(multiple.mean(0)[~mask], cond_mean[~mask], atol=0.05)
    # and their spread is the conditional variance Var[x_m | x_o] = C_mm - C_mo C_oo^-1 C_om
    assert torch.allclose(multiple.var(0)[~mask], cond_var[~mask], rtol=0.1)
    # the training objective is the same bound; with nothing missing it is the IWAE bound of x
    terms = MIWAE(k=5)(model, x_missing)
    assert terms.loss.shape == (6,) and torch.isfinite(terms.loss).all()


@pytest.mark.parametrize(
    "head, params",
    [
        (BernoulliHead(), torch.randn(3, 1, 1, 2, 2)),
        (GaussianHead("predicted"), torch.randn(3, 1, 2, 2, 2)),
        (CategoricalHead(4), torch.randn(3, 1, 4, 2, 2)),
        (LogisticMixtureHead(4, 2), torch.randn(3, 1, 6, 2, 2)),
    ],
    ids=["bernoulli", "gaussian", "categorical", "logistic"],
)
def test_element_log_probs_sum_to_log_prob(head, params):
    px = head(params)
    x = px.sample() if not isinstance(head, GaussianHead) else torch.rand(3, 1, 2, 2)
    per = element_log_probs(px, x)
    assert per.shape == (3, 1, 2, 2)
    assert torch.allclose(per.sum((1, 2, 3)), px.log_prob(x), atol=1e-5)


@torch.no_grad()
def test_the_miwae_bound_of_complete_data_is_exact_at_the_true_posterior():
    """Every importance weight is p(x) when q(z|x) = p(z|x): the bound is log p(x) for any k."""
    from linear_gaussian import data, make

    model, marginal = make(exact_posterior=True)
    x = data(marginal, 8)
    assert torch.allclose(MIWAE(5)(model, x).bound, marginal.log_prob(x.view(8, -1)), atol=1e-9)


def test_the_miwae_bound_is_reduced_in_log_space_where_every_weight_underflows_exp():
    """Datapoints far out in the tail have log weights of thousands of nats below zero, where exp
    is 0 even in float64: log (1/k) sum_i w_i must be a logsumexp, not the log of a mean of exps."""
    from linear_gaussian import data, make

    model, marginal = make(exact_posterior=True)
    x = data(marginal, 4) + 40.0
    exact = marginal.log_prob(x.view(4, -1))
    assert (exact < -1000).all()
    assert torch.allclose(MIWAE(5)(model, x).bound, exact, rtol=1e-9)


def test_the_miwae_bound_of_complete_data_is_the_iwae_bound_in_value_and_gradient():
    from dgmkit.objectives import IWAE
    from linear_gaussian import data, loss_and_gradient, make

    model, marginal = make(perturb=0.3)
    x = data(marginal, 4)
    (miwae, g_miwae), (iwae, g_iwae) = (loss_and_gradient(o, model, x) for o in (MIWAE(6), IWAE(6)))
    assert torch.allclose(miwae, iwae)
    assert any(g.abs().max() > 1e-3 for g in g_iwae if g is not None)
    assert all((a is None and b is None) or torch.allclose(a, b) for a, b in zip(g_miwae, g_iwae))


def test_multiple_imputations_are_draws_of_the_conditional_whatever_the_chunks():
    """The draws are resampled from all k weighted proposals, chunk by chunk: each chunk's draws
    replace the kept ones with the chunk's share of the weight so far. With small chunks and a
    poor proposal (the prior), a merge that kept the wrong side drew from the last chunks alone;
    the draws' mean and variance are the closed form's E[x_m | x_o] and Var[x_m | x_o]."""
    model = _ppca()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        z = torch.randn(4, M, generator=g, dtype=torch.float64)
        x = model.likelihood(z).mean + SIGMA * torch.randn(4, 1, 1, D, generator=g, dtype=torch.float64)
    mask = torch.zeros(4, 1, 1, D, dtype=torch.bool)
    mask[..., :3] = True
    _, cond_mean, cond_var = _exact(model, x, mask)
    holed = torch.where(mask, x, torch.full_like(x, float("nan")))
    _, draws = impute(model, holed, k=20000, draws=4000, generator=g, chunk=50)
    torch.testing.assert_close(draws.mean(0)[~mask], cond_mean[~mask], rtol=0, atol=0.08)
    torch.testing.assert_close(draws.var(0)[~mask], cond_var[~mask], rtol=0.15, atol=0)


@torch.no_grad()
def test_imputations_of_binary_pixels_match_the_exact_conditional_of_a_discrete_latent_model():
    """A VAE of one categorical latent of 4 classes over 5 binary pixels, p(x_m | x_o) by
    enumeration: the single imputation is E[x_m | x_o], and the multiple imputations are draws of
    the joint p(x_m | x_o) (a chi-square test over the 8 patterns of 3 missing pixels), not of
    each pixel's marginal alone (pixels drawn from different latents)."""
    import itertools

    from dgmkit.conditional.categorical_encoder import CategoricalEncoder
    from dgmkit.models.categorical_vae import CategoricalVAE
    from dgmkit.priors.categorical import UniformCategoricalPrior

    torch.manual_seed(1)
    dec, enc = nn.Linear(4, 5), nn.Sequential(nn.Flatten(), nn.Linear(5, 4))
    dec.weight.mul_(6)  # pixels that depend strongly on the class: far from independent given x_o
    head = Decoder(dec, BernoulliHead(), (1, 1, 5))
    model = CategoricalVAE(CategoricalEncoder(enc, 1, 4), head, UniformCategoricalPrior(1, 4)).double().eval()
    p = torch.sigmoid(dec(torch.eye(4, dtype=torch.float64)))  # (class, pixel)
    x = torch.tensor([[1.0, 0, 1, 1, 0], [0, 1, 0, 0, 1]], dtype=torch.float64)
    seen = torch.tensor([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0]], dtype=torch.bool)
    single, draws = impute(
        model,
        torch.where(seen, x, torch.nan).view(2, 1, 1, 5),
        k=20000,
        draws=4000,
        generator=torch.Generator().manual_seed(0),
        chunk=3000,
    )
    single, draws = single.view(2, 5), draws.view(4000, 2, 5)
    for i in range(2):
        post = torch.softmax(torch.where(x[i, seen[i]] == 1, p[:, seen[i]], 1 - p[:, seen[i]]).log().sum(1), 0)
        torch.testing.assert_close(single[i, ~seen[i]], post @ p[:, ~seen[i]], rtol=0, atol=0.01)
        chi2 = 0.0
        for pattern in itertools.product((0.0, 1.0), repeat=3):
            v = torch.tensor(pattern, dtype=torch.float64)
            expected = 4000 * float(post @ torch.where(v == 1, p[:, ~seen[i]], 1 - p[:, ~seen[i]]).prod(1))
            chi2 += (float((draws[:, i, ~seen[i]] == v).all(1).sum()) - expected) ** 2 / expected
        assert chi2 < 24.3  # the 0.999 quantile of chi-square with 7 degrees of freedom


def test_a_row_that_every_draw_gives_probability_0_is_refused_not_imputed_as_nan():
    """An observed 1e20 under a Gaussian p(x|z) of float32 gives every draw the weight 0: the
    imputation was 0/0, written as a missing entry after "imputed 2 missing entries"."""
    from dgmkit.config import RunConfig, build_model
    from dgmkit.errors import EvaluationError

    model = build_model(RunConfig.of(likelihood="gaussian", hidden=[8], latent_dim=2), (1, 1, 4), None).eval()
    x = torch.tensor([[0.1, 0.2, float("nan"), 0.3], [1e20, 0.2, float("nan"), 0.3]]).view(2, 1, 1, 4)
    with pytest.raises(EvaluationError, match=r"non-finite log-likelihood of the observed entries .*\(-inf\) to 1 of 2"):
        impute(model, x, k=8, generator=torch.Generator().manual_seed(0))
    single, _ = impute(model, x[:1], k=8, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(single).all()
    x[1, 0, 0, 2] = 0.5  # complete: nothing to impute, its values kept whatever its weights
    single, _ = impute(model, x, k=8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(single[1], x[1]) and torch.isfinite(single[0]).all()
    for chunk in (8, 3):  # multiple imputations too (a softmax of -inf alone was NaN: multinomial raised)
        single, multiple = impute(model, x, k=8, draws=3, generator=torch.Generator().manual_seed(0), chunk=chunk)
        assert multiple is not None and torch.equal(multiple[:, 1], x[1].expand(3, -1, -1, -1))
        assert torch.isfinite(multiple[:, 0]).all()
    x[1, 0, 0, 2] = float("nan")
    with pytest.raises(EvaluationError, match="nothing to impute from"):
        impute(model, x, k=8, draws=3, generator=torch.Generator().manual_seed(0), chunk=3)


def test_a_row_whose_first_chunk_of_draws_all_have_weight_0_is_imputed_from_the_later_ones(monkeypatch):
    """The running estimate divided by exp(total) with total = -inf after the first chunk:
    exp(-inf - -inf) is NaN, carried into the imputation though later draws had weight (the final
    check looks at the total alone). Weights of -inf there now impute as weights of -1e30 (0 after
    exp) do: bit for bit, from the same draws."""
    import dgmkit.objectives.miwae as miwae

    model = _ppca()
    x = torch.tensor([[0.3, float("nan"), -0.2, float("nan"), 0.1]] * 2, dtype=torch.float64).view(2, 1, 1, D)
    original = miwae.miwae_log_weights

    def first_chunk_weightless(value):
        calls = []

        def log_weights(model, x, k, generator=None, q=None):
            log_w, z, px = original(model, x, k, generator, q=q)
            calls.append(k)
            if len(calls) == 1:
                log_w = log_w.clone()
                log_w[:, 0] = value
            return log_w, z, px

        return log_weights

    results = []
    for value in (-math.inf, -1e30):
        monkeypatch.setattr(miwae, "miwae_log_weights", first_chunk_weightless(value))
        results.append(impute(model, x, k=12, draws=3, generator=torch.Generator().manual_seed(0), chunk=4))
    (single, draws), (single_ref, draws_ref) = results
    assert torch.isfinite(single).all() and torch.isfinite(draws).all()
    assert torch.equal(single, single_ref) and torch.equal(draws, draws_ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_impute_batched_draws_on_the_models_device_for_data_on_the_cpu():
    """impute takes x to the model's device (``evaluates``); its generators were made on x's, a
    CPU generator for a model on the GPU, which torch's sampling there refuses."""
    import dgmkit.evaluation.imputation as imputation
    from dgmkit.config import RunConfig, build_model

    model = build_model(RunConfig.of(likelihood="gaussian", hidden=[8], latent_dim=2), (1, 1, 4), None).cuda().eval()
    x = torch.tensor([[0.5, float("nan"), 1.0, -0.3]] * 3).view(3, 1, 1, 4)
    single, draws = imputation.impute_batched(model, x, k=20, draws=2)
    assert single.device == x.device and torch.isfinite(single).all() and draws is not None
    assert torch.equal(single[~torch.isnan(x)], x[~torch.isnan(x)])


def test_impute_batched_keeps_the_observed_entries_of_x_in_its_dtype_and_sizes_its_chunks_by_the_model(monkeypatch):
    """float64 data given to a float32 model came back as float32 (observed entries rounded); the
    draws at a time ignored a model's large rows of p(x|z) (a categorical likelihood's levels),
    some 47 MB a level for 100 8x8 images."""
    import dgmkit.evaluation.imputation as imputation
    from dgmkit.config import RunConfig, build_model

    model = build_model(RunConfig.of(likelihood="gaussian", hidden=[8], latent_dim=2), (1, 1, 4), None).eval()
    x = torch.tensor([[0.123456789012345, float("nan"), 1.0000000001, -0.3]] * 3, dtype=torch.float64).view(3, 1, 1, 4)
    single, draws = imputation.impute_batched(model, x, k=20, draws=2)
    # the single imputation of a seed is the same with multiple imputations or without (their resampling drew
    # from the importance draws' stream: --draws changed it once k took more than one chunk)
    alone, _ = imputation.impute_batched(model, x, k=2500, draws=0, seed=3)
    assert torch.equal(imputation.impute_batched(model, x, k=2500, draws=4, seed=3)[0], alone)
    seen = ~torch.isnan(x)
    assert single.dtype == torch.float64 and draws is not None and draws.dtype == torch.float64
    assert torch.equal(single[seen], x[seen]) and torch.equal(draws[:, seen], x[seen].expand(2, -1))
    asked = []
    monkeypatch.setattr(model, "importance_rows", lambda budget: 5)
    monkeypatch.setattr(imputation, "impute", lambda *a, **kw: asked.append((len(a[1]), kw["chunk"])) or (a[1], None))
    imputation.impute_batched(model, torch.zeros(12, 1, 1, 4), k=100)
    assert asked == [(5, 1), (5, 1), (2, 2)]  # rows of p(x|z) at once, draws x datapoints: at most 5
    from dgmkit.errors import DataError

    for bad in ({"k": 10.5}, {"draws": 2.5}, {"seed": 1.5}, {"batch_size": 0}, {"k": True}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be an integer"):
            imputation.impute_batched(model, x, **bad)
    with pytest.raises(DataError, match="one or more datapoints"):
        imputation.impute_batched(model, x[:0])


def test_impute_keeps_the_observed_entries_of_x_in_its_dtype_for_a_model_of_another_precision():
    """impute itself (not impute_batched) gave float64 data to a float32 model and returned x as the
    model took it: float32, each observed entry rounded (0.123456789012345 came back 0.12345679104...)."""
    from dgmkit.config import RunConfig, build_model
    from dgmkit.errors import DataError

    model = build_model(RunConfig.of(likelihood="gaussian", hidden=[8], latent_dim=2), (1, 1, 4), None).eval()
    x = torch.tensor([[0.123456789012345, float("nan"), 1.0000000001, -0.3]] * 3, dtype=torch.float64).view(3, 1, 1, 4)
    seen = ~torch.isnan(x)
    for m, data in ((model, x), (model.double(), x.float())):
        single, draws = impute(m, data, k=20, draws=2, generator=torch.Generator().manual_seed(0))
        assert single.dtype == data.dtype and draws is not None and draws.dtype == data.dtype
        assert torch.equal(single[seen], data[seen]) and torch.equal(draws[:, seen], data[seen].expand(2, -1))
        assert torch.isfinite(single).all()
    with pytest.raises(DataError, match=re.escape("impute() needs at least one datapoint")):
        impute(model, x[:0])


def test_impute_batched_checks_all_its_data_first_and_names_a_bad_row_by_its_index_in_x(monkeypatch):
    """Each batch was checked alone, inside impute: a bad row of a later batch was named by its
    index in its batch (row 20 of 50 for x's row 120), after the batches before it were imputed."""
    import dgmkit.evaluation.imputation as imputation
    from dgmkit.config import RunConfig, build_model
    from dgmkit.errors import DataError

    model = build_model(RunConfig.of(likelihood="bernoulli", hidden=[8], latent_dim=2), (1, 1, 4), None).eval()
    x = torch.ones(150, 1, 1, 4)
    x[:, ..., 0] = float("nan")
    calls = []
    real = imputation.impute
    monkeypatch.setattr(imputation, "impute", lambda *a, **kw: calls.append(len(a[1])) or real(*a, **kw))
    for row, value, words in ((120, float("nan"), "row 120"), (130, float("inf"), "datapoint 130"), (140, 3.0, "[3, 3]")):
        bad = x.clone()
        bad[row, ..., 1:] = value
        with pytest.raises(DataError, match=re.escape(words)):
            imputation.impute_batched(model, bad, k=5, batch_size=50)
        assert calls == []  # refused before any batch was imputed
    assert imputation.impute_batched(model, x, k=5, batch_size=50)[0].shape == x.shape and calls == [50, 50, 50]


def test_the_single_imputation_is_the_same_whatever_the_multiple_imputations_of_images():
    """The batches were sized by the draws (draws x rows x pixels under 4e6 values), so --draws 64 of
    28x28 images took 79 datapoints at a time, not 100: the importance draws fell to other rows, and
    the single imputation changed with --draws; the resampled draws are decoded a chunk at a time instead."""
    import dgmkit.evaluation.imputation as imputation
    from dgmkit.config import RunConfig, build_model

    torch.manual_seed(0)
    model = build_model(RunConfig.of(hidden=[16], latent_dim=2), (1, 28, 28), None).eval()
    x = (torch.rand(120, 1, 28, 28, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    x[:, :, :14] = float("nan")
    alone, _ = imputation.impute_batched(model, x, k=8, draws=0, seed=2)
    single, multiple = imputation.impute_batched(model, x, k=8, draws=64, seed=2)
    assert torch.equal(single, alone) and multiple is not None and multiple.shape == (64, *x.shape)
    assert set(multiple.unique().tolist()) == {0.0, 1.0}  # (draws of p(x|z) in the missing entries)
    assert not torch.isnan(multiple).any()


def test_a_nan_weight_is_refused_as_nan_with_or_without_multiple_imputations(monkeypatch):
    """One NaN log weight reached torch.multinomial (a RuntimeError) with draws, and was refused
    as "of every draw: nothing to impute from" without them."""
    import dgmkit.objectives.miwae as miwae
    from dgmkit.errors import EvaluationError

    model = _ppca()
    x = torch.tensor([[0.3, float("nan"), -0.2, float("nan"), 0.1]] * 2, dtype=torch.float64).view(2, 1, 1, D)
    original = miwae.miwae_log_weights

    def one_nan(model, x, k, generator=None, q=None):
        log_w, z, px = original(model, x, k, generator, q=q)
        log_w = log_w.clone()
        log_w[0, 1] = float("nan")
        return log_w, z, px

    monkeypatch.setattr(miwae, "miwae_log_weights", one_nan)
    for draws in (0, 3):
        with pytest.raises(EvaluationError, match=r"non-finite log importance weight \(NaN.*\(nan\) to 1 of 2"):
            impute(model, x, k=8, draws=draws, generator=torch.Generator().manual_seed(0), chunk=4)


def test_the_multiple_imputations_are_decoded_once_not_at_every_chunk(monkeypatch):
    """Each chunk of importance draws decoded every multiple imputation's pick (draws x B rows of
    p(x|z) a chunk): with the chunks small (28x28 images in batches of 100: 51 draws a chunk), --draws
    1000 of k = 3000 took 13 times as long as before; the picked latents are kept and decoded once."""
    from dgmkit.config import RunConfig, build_model

    model = build_model(RunConfig.of(likelihood="gaussian", hidden=[8], latent_dim=2), (1, 1, 4), None).eval()
    x = torch.tensor([[0.5, float("nan"), 1.0, -0.3]] * 3).view(3, 1, 1, 4)
    rows = []
    decode = model.likelihood
    monkeypatch.setattr(model, "likelihood", lambda z: rows.append(z.shape[:-1].numel()) or decode(z))

    def decoded(draws: int) -> int:
        rows.clear()
        impute(model, x, k=8, draws=draws, generator=torch.Generator().manual_seed(0), chunk=2)
        return sum(rows)

    assert decoded(5) - decoded(0) == 5 * 3  # (4 chunks: 60 rows before)
    single, multiple = impute(model, x, k=8, draws=5, generator=torch.Generator().manual_seed(0), chunk=2)
    assert multiple is not None and multiple.shape == (5, *x.shape) and torch.isfinite(multiple).all()
    assert torch.equal(multiple[:, ~torch.isnan(x)], x[~torch.isnan(x)].expand(5, -1))


def test_training_on_data_with_an_entry_missing_in_every_row_says_so(tmp_path, capsys):
    """A column all NaN in the training rows: the model learns nothing of it (a VAE trained on it
    imputed it with an untrained decoder's output, without a word); it is said once, a column
    missing in some rows is not."""
    import numpy as np

    from dgm_cli import dgm

    x = np.random.default_rng(0).normal(size=(60, 4)).astype(np.float32)
    x[::3, 1] = np.nan
    argv = ["--model", "vae", "--objective", "miwae", "--likelihood", "gaussian", "--epochs", "1"]
    np.save(tmp_path / "some.npy", x)
    code, out, _ = dgm(capsys, "train", "--dataset", tmp_path / "some.npy", *argv, "--out", tmp_path / "a")
    assert code == 0 and "in every training row" not in out
    x[:, 2] = np.nan
    np.save(tmp_path / "never.npy", x)
    code, out, _ = dgm(capsys, "train", "--dataset", tmp_path / "never.npy", *argv, "--out", tmp_path / "b")
    said = "note: 1 of the 4 entries of a datapoint of never.npy are missing (NaN) in every training row, e.g. entry 2"
    assert code == 0 and out.count(said) == 1, out
