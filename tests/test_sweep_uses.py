"""Tests from a hand mutation sweep over the disentanglement metrics, the diagnostics, the MCAR masks,
the background model's input mutation, the EMA and the schedules: each checks a property that an
independent computation (by hand, NumPy) or a binomial tolerance with a fixed seed pins down."""

import math

import pytest
import torch

from dgmkit.evaluation.disentanglement import factor_vae_score, mutual_information_gap


def test_mig_normalises_by_the_empirical_entropy_of_a_non_uniform_factor():
    # v takes 0, 0, 1, 2 (probabilities 1/2, 1/4, 1/4): H(v) = 1.5 log 2, not log 3
    v = torch.tensor([0, 0, 1, 2]).repeat(50)
    codes = torch.stack([v.double(), torch.zeros(len(v), dtype=torch.float64)], 1)
    m = mutual_information_gap(codes, v[:, None], bins=3)
    assert float(m.entropy[0]) == pytest.approx(1.5 * math.log(2), abs=1e-12)
    assert float(m.mutual_information[0, 0]) == pytest.approx(1.5 * math.log(2), abs=1e-12)
    assert m.mig == pytest.approx(1.0, abs=1e-12)


def test_factor_vae_score_is_invariant_to_the_scale_of_each_code_dimension():
    # codes = factors plus a little noise, dimension 0 a hundred times larger: dividing each dimension by its
    # standard deviation over the data makes the scale irrelevant, and each fixed factor's dimension votes for it
    sizes = (10, 10)
    scale = torch.tensor([100.0, 1.0], dtype=torch.float64)
    noise_g = torch.Generator().manual_seed(1)

    def encode(f):
        return (f.double() + 0.3 * torch.randn(f.shape, generator=noise_g, dtype=torch.float64)) * scale

    g = torch.Generator().manual_seed(0)
    data = torch.stack([torch.randint(s, (2000,), generator=g) for s in sizes], 1)
    s = factor_vae_score(encode, lambda f: f, sizes, encode(data), votes=100, batch=32, generator=g)
    assert s.assignment.tolist() == [0, 1]
    assert s.accuracy == 1.0 and s.train_accuracy == 1.0


def test_factor_vae_batches_draw_every_value_of_the_other_factors_uniformly():
    # in each batch one factor is held fixed (the constant column); the others are uniform over all their values
    sizes = (2, 3)
    seen = []

    def render(f):
        seen.append(f.clone())
        return f.double()

    data = torch.stack([torch.arange(60) % 2, torch.arange(60) % 3], 1).double()
    factor_vae_score(lambda c: c, render, sizes, data, votes=60, batch=50, generator=torch.Generator().manual_seed(0))
    counts = [torch.zeros(s) for s in sizes]
    for f in seen:
        fixed = [j for j in range(len(sizes)) if bool((f[:, j] == f[0, j]).all())]
        assert len(fixed) == 1
        for j in range(len(sizes)):
            if j != fixed[0]:
                counts[j] += torch.bincount(f[:, j], minlength=sizes[j]).double()
    for j, s in enumerate(sizes):
        n = float(counts[j].sum())
        sd = math.sqrt(n * (1 / s) * (1 - 1 / s))
        assert (counts[j] - n / s).abs().max() < 5 * sd, (j, counts[j])


def test_a_skipped_step_told_by_a_bool_leaves_a_device_counted_average_as_it_is():
    from dgmkit.training.ema import EMA

    model = torch.nn.Linear(3, 2)
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, torch.tensor(True))  # the count now lives in a tensor
    before = {k: v.clone() for k, v in ema.weights.items()}
    with torch.no_grad():
        model.weight.add_(5.0)
    ema.update(model, False)
    assert ema.updates == 1
    assert all(torch.equal(ema.weights[k], before[k]) for k in before)
    ema.update(model, True)  # and a taken one is made with the warm-up's decay (1 + 1) / (10 + 1)
    d = 2 / 11
    expected = before["weight"] + (1 - d) * (model.weight.detach() - before["weight"])
    assert ema.updates == 2 and torch.allclose(ema.weights["weight"], expected, atol=1e-6)


def test_mutation_draws_the_replacement_uniformly_so_it_may_keep_the_old_value():
    # two levels, rate 1/2: a value is replaced with probability 1/2 and the draw equals it half the time, so a
    # quarter of the values change (Ren et al.'s mu (1 - 1/L)), not a half
    from dgmkit.data.mutation import mutate

    x = (torch.arange(40000) % 2).to(torch.uint8).reshape(400, 1, 10, 10)
    y = mutate(x, 0.5, 2, torch.Generator().manual_seed(0))
    n = x.numel()
    changed = float((y != x).double().sum())
    assert abs(changed - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75)
    assert y.dtype == x.dtype and set(y.unique().tolist()) == {0, 1}


def test_the_typical_prior_draws_are_those_the_aggregate_posterior_covers_best_and_the_holes_the_worst():
    from torch.distributions import Independent, Normal

    from dgmkit.distributions import diagonal_normal
    from dgmkit.evaluation.diagnostics import diagnose
    from test_diagnostics import ShiftedGaussian

    class Shifted(ShiftedGaussian):  # q(z | x) = N(x + 1, 0.3^2): the aggregate posterior misses much of N(0, I)
        def posterior(self, x):
            return diagonal_normal(x + 1, torch.full_like(x, 0.3))

    x = 0.5 * torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d = diagnose(Shifted().double(), x, samples=1, holes=400, shown=5, seed=2)

    def ratio(z):  # log q(z) - log p(z), q the mixture of the 300 posteriors, computed directly
        comp = Normal(x + 1, 0.3).log_prob(z[:, None, :]).sum(-1)
        log_q = torch.logsumexp(comp, 1) - math.log(len(x))
        return log_q - Independent(Normal(torch.zeros(2), torch.ones(2)), 1).log_prob(z).double()

    assert d.hole_z.shape == d.typical_z.shape == (5, 2)
    deep, typical = ratio(d.hole_z.double()), ratio(d.typical_z.double())
    assert float(typical.min()) > float(deep.max())
    assert float(deep.max()) < math.log(0.1) < float(typical.min())
