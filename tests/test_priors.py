"""Priors: the mixture density against torch and against its own samples, the VampPrior as a
mixture of posteriors at pseudo-inputs, and saving models with a shared encoder."""

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Categorical, MixtureSameFamily

from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.distributions import DiagonalGaussianMixture, diagonal_normal
from dgmkit.evaluation.clustering import clustering_scores
from dgmkit.priors import MixtureOfGaussiansPrior, StandardNormalPrior
from dgmkit.training import load_checkpoint, save_checkpoint


def test_mixture_log_prob_matches_torch_in_float64():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, generator=g, dtype=torch.float64)
    loc = torch.randn(7, 3, generator=g, dtype=torch.float64) * 3
    scale = torch.rand(7, 3, generator=g, dtype=torch.float64) + 0.05
    z = torch.randn(4, 5, 3, generator=g, dtype=torch.float64) * 4
    ours = DiagonalGaussianMixture(logits, loc, scale).log_prob(z)
    ref = MixtureSameFamily(Categorical(logits=logits), diagonal_normal(loc, scale)).log_prob(z)
    assert ours.shape == (4, 5)
    assert torch.allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mixture_log_prob_of_narrow_components_far_from_zero_keeps_its_precision(dtype):
    """Each of the three terms of the matrix-product form is about sum (mu / s)^2 (here 40 *
    (3/0.001)^2), and in float32 their sum lost up to tens of nats: a float64 reference of the
    direct form is matched to float32's rounding of the result (and bfloat16's, of z itself)."""
    g = torch.Generator().manual_seed(0)
    loc = torch.randn(50, 40, generator=g, dtype=torch.float64) * 3
    scale = torch.full((50, 40), 1e-3, dtype=torch.float64)
    logits = torch.randn(50, generator=g, dtype=torch.float64)
    z = (loc[torch.arange(8) % 50] + scale[:8] * torch.randn(8, 40, generator=g, dtype=torch.float64)).to(dtype)
    ours = DiagonalGaussianMixture(logits.float(), loc.float(), scale.float()).log_prob(z)
    zz, mu, s = z.double(), loc.float().double(), scale.float().double()
    direct = -0.5 * (((zz[:, None] - mu) / s) ** 2).sum(-1) - s.log().sum(-1) - 20 * math.log(2 * math.pi)
    ref = torch.logsumexp(torch.log_softmax(logits.float().double(), -1) + direct, -1)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), ref, rtol=1e-6, atol=1e-3)


def test_mixture_samples_agree_with_log_prob():
    """Histogram of 1-D samples against the density integrated over each bin."""
    d = DiagonalGaussianMixture(torch.tensor([0.0, 1.0]), torch.tensor([[-2.0], [1.5]]), torch.tensor([[0.5], [1.0]]))
    n = 200_000
    z = d.sample((n,))
    assert z.shape == (n, 1)
    edges = torch.linspace(-5, 6, 45)
    freq = torch.histc(z[:, 0], bins=44, min=-5, max=6) / n
    mid = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    # Simpson's rule per bin
    f = lambda t: d.log_prob(t.unsqueeze(-1)).exp()  # noqa: E731
    mass = width / 6 * (f(edges[:-1]) + 4 * f(mid) + f(edges[1:]))
    assert (freq - mass).abs().max() < 0.004  # binomial stderr <= 0.0011


def test_mixture_mean_and_variance_are_the_moments_of_its_density():
    """The closed-form moments against quadrature of the 1-D density (variance raised a bare
    NotImplementedError) and each dimension's own, in 2-D; the entropy's refusal says why."""
    d = DiagonalGaussianMixture(
        torch.tensor([0.0, 1.0, -0.5]).double(),
        torch.tensor([[-2.0, 0.0], [1.5, 3.0], [0.2, -1.0]]).double(),
        torch.tensor([[0.5, 2.0], [1.0, 0.3], [0.7, 1.0]]).double(),
    )
    t = torch.linspace(-30, 30, 200_001, dtype=torch.float64)
    for j in range(2):
        other = DiagonalGaussianMixture(d.logits, d.loc[:, j : j + 1], d.scale[:, j : j + 1])  # (the marginal)
        p = other.log_prob(t[:, None]).exp()
        mean = torch.trapezoid(t * p, t)
        var = torch.trapezoid((t - mean) ** 2 * p, t)
        assert float(torch.trapezoid(p, t)) == pytest.approx(1, abs=1e-9)
        assert float(d.mean[j]) == pytest.approx(float(mean), abs=1e-9)
        assert float(d.variance[j]) == pytest.approx(float(var), rel=1e-9)
    with pytest.raises(NotImplementedError, match="no closed form: estimate it as -E"):
        d.entropy()


def test_mixture_draws_none_as_a_normal_does():
    # (torch.multinomial refuses n = 0: sample((0,)) and sample((2, 0)) were RuntimeErrors)
    d = MixtureOfGaussiansPrior(3, components=4)()
    assert d.sample((0,)).shape == StandardNormalPrior(3)().sample((0,)).shape == (0, 3)
    assert d.sample((2, 0)).shape == (2, 0, 3)


def test_mixture_prior_responsibilities_and_assignment():
    prior = MixtureOfGaussiansPrior(2, components=3)
    with torch.no_grad():
        prior.means.copy_(torch.tensor([[-5.0, 0.0], [0.0, 0.0], [5.0, 0.0]]))
    r = prior.responsibilities(torch.tensor([[-5.0, 0.1], [4.8, 0.0]]))
    assert torch.allclose(r.sum(-1), torch.ones(2))
    assert prior.assign(torch.tensor([[-5.0, 0.1], [4.8, 0.0]])).tolist() == [0, 2]
    # a point far out in one component's direction: its responsibilities underflow to one-hot, its assignment stays
    assert prior.assign(torch.tensor([[1e4, 0.0]])).tolist() == [2]
    # a NaN point, or one with no finite density under any component: refused (argmax gave component 0)
    for z in ([[float("nan"), 0.0]], [[1e30, 0.0]], [[0.0, float("inf")]]):
        with pytest.raises(ValueError, match=r"^1 of 1 latent points have no finite density under any mixture component"):
            prior.assign(torch.tensor(z))
        with pytest.raises(ValueError, match="no component can be assigned"):
            prior.responsibilities(torch.tensor([[0.0, 0.0], *z]))


@pytest.mark.parametrize("flow", ["nice", "realnvp", "glow"])
def test_a_coupling_flow_prior_over_one_latent_dimension_is_refused_by_name(flow):
    # (it was an internal error: "MLP's out_features must be an integer >= 1, got 0")
    from dgmkit.errors import ConfigError

    with pytest.raises(ConfigError, match=f"a {flow} flow prior's couplings .* single dimension: use --flow maf"):
        build_model(RunConfig.of(prior="flow", flow=flow, hidden=[8], latent_dim=1), (1, 4, 4), 2)
    build_model(RunConfig.of(prior="flow", flow="maf", hidden=[8], latent_dim=1), (1, 4, 4), 2)


def test_vampprior_is_the_average_posterior_at_its_pseudo_inputs():
    cfg = RunConfig.of(prior="vampprior", prior_components=6, hidden=[16], latent_dim=3)
    model = build_model(cfg, (1, 4, 4), 2)
    z = torch.randn(5, 3)
    u = torch.nn.functional.hardtanh(model.prior_module.pseudo_inputs, 0, 1)
    per_k = torch.stack([model.encoder(u[k : k + 1]).log_prob(z) for k in range(6)])  # (K, 5)
    expected = torch.logsumexp(per_k, 0) - math.log(6)
    assert torch.allclose(model.prior().log_prob(z), expected, atol=1e-5)
    # the encoder is the prior's context, not its submodule: saved once, under the VAE
    assert [k for k in model.state_dict() if k.startswith("prior_module.")] == ["prior_module.pseudo_inputs"]


def test_vampprior_from_data_and_checkpoint_round_trip(tmp_path):
    data = (torch.rand(50, 1, 4, 4) < 0.5).float()
    cfg = RunConfig.of(prior="vampprior", prior_components=6, pseudo_init="data", hidden=[16], latent_dim=3)
    model = build_model(cfg, (1, 4, 4), 2, init_data=data)
    rows = (model.prior_module.pseudo_inputs.detach() - 0.01) / 0.98
    assert all(any(torch.allclose(r, d, atol=1e-6) for d in data) for r in rows)  # training images, moved inside (0, 1)
    loss = build_objective(cfg)(model, data[:8]).loss.mean()
    loss.backward()
    assert model.prior_module.pseudo_inputs.grad.abs().sum() > 0
    save_checkpoint(tmp_path / "c.safetensors", model, {"config": cfg.to_dict()})
    fresh = build_model(cfg, (1, 4, 4), 2)
    fresh.load_state_dict(load_checkpoint(tmp_path / "c.safetensors")["model"])
    z = torch.randn(4, 3)
    assert torch.allclose(fresh.prior().log_prob(z), model.prior().log_prob(z))


def test_dgm_train_starts_vampprior_pseudo_inputs_at_binarized_training_images(tmp_path, capsys, monkeypatch):
    """--pseudo-init data: the model is built from the training split as the run's transform
    gives it, drawn with the run's seed (not the raw 8-bit images, not the validation split)."""
    from dgmkit.cli import train as train_cli
    from dgmkit.cli.main import main
    from dgmkit.data import load_dataset, make_transform

    built, real = [], train_cli.build_model

    def spy(cfg, shape, levels, init_data=None):
        model = real(cfg, shape, levels, init_data)
        built.append((init_data, model.prior_module.pseudo_inputs.detach().clone()))
        return model

    monkeypatch.setattr(train_cli, "build_model", spy)
    argv = ["--prior", "vampprior", "--pseudo-init", "data", "--prior-components", "6", "--hidden", "16", "--seed", "4"]
    assert main(["train", "--dataset", "digits", *argv, "--latent-dim", "2", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "r")]) == 0  # fmt: skip
    ((init_data, start),) = built
    digits = load_dataset("digits")
    binarized = make_transform("bernoulli", digits)(digits.train.x, torch.Generator().manual_seed(4))
    assert torch.equal(init_data, binarized)
    rows = (start - 0.01) / 0.98
    assert all(any(torch.allclose(r, d, atol=1e-6) for d in binarized) for r in rows)


@pytest.mark.parametrize("prior", ["mog", "vampprior"])
def test_elbo_with_a_mixture_prior_estimates_the_kl_with_the_reconstruction_samples(prior):
    cfg = RunConfig.of(prior=prior, prior_components=5, hidden=[16], latent_dim=3, samples=4)
    model = build_model(cfg, (1, 4, 4), 2)
    x = (torch.rand(6, 1, 4, 4) < 0.5).float()
    torch.manual_seed(11)
    terms = build_objective(cfg)(model, x)
    torch.manual_seed(11)
    q = model.posterior(x)
    z = q.rsample((4,))
    kl = (q.log_prob(z) - model.prior().log_prob(z)).mean(0)
    assert torch.allclose(terms.kl, kl, atol=1e-5)
    assert torch.allclose(terms.log_px_z, model.likelihood(z).log_prob(x).mean(0), atol=1e-5)


def test_the_gradient_of_an_elbo_with_a_mixture_prior_is_that_of_its_monte_carlo_terms():
    """log q(z|x) keeps its gradient in the Monte Carlo KL: the loss's gradient is that of
    -(mean log p(x|z) - mean (log q(z|x) - log p(z))) at the same draws."""
    cfg = RunConfig.of(prior="mog", prior_components=5, hidden=[16], latent_dim=3, samples=4)
    model = build_model(cfg, (1, 4, 4), 2)
    x = (torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    params = list(model.encoder.parameters())
    torch.manual_seed(11)
    got = torch.autograd.grad(build_objective(cfg)(model, x).loss.sum(), params)
    torch.manual_seed(11)
    q = model.posterior(x)
    z = q.rsample((4,))
    elbo = (model.likelihood(z).log_prob(x) - q.log_prob(z) + model.prior().log_prob(z)).mean(0)
    want = torch.autograd.grad(-elbo.sum(), params)
    assert all(torch.allclose(g, w, atol=1e-5) for g, w in zip(got, want))


def test_clustering_scores_are_invariant_to_label_names():
    labels = torch.arange(10).repeat(30).numpy()
    perfect = (labels * 7 + 3) % 10  # a relabelling
    s = clustering_scores(perfect, labels)
    assert s["accuracy"] == 1.0 and s["nmi"] == pytest.approx(1.0) and s["accuracy_majority"] == 1.0
    split = labels * 2 + (torch.arange(300).numpy() // 10) % 2  # every class split into two clusters
    s = clustering_scores(split, labels)
    assert s["accuracy_majority"] == 1.0 and s["accuracy"] == pytest.approx(0.5)


def test_mixture_mean_is_the_integral_of_z_times_its_density():
    d = DiagonalGaussianMixture(
        torch.tensor([0.0, 1.5, -1.0], dtype=torch.float64),
        torch.tensor([[-2.0, 1.0], [1.5, -0.5], [4.0, 3.0]], dtype=torch.float64),
        torch.tensor([[0.5, 1.0], [1.0, 0.7], [0.8, 0.6]], dtype=torch.float64),
    )
    grid = torch.linspace(-12, 14, 521, dtype=torch.float64)
    z = torch.cartesian_prod(grid, grid)  # (n^2, 2)
    density = d.log_prob(z).exp() * (grid[1] - grid[0]) ** 2
    assert float(density.sum()) == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(d.mean, (density[:, None] * z).sum(0), atol=1e-8)


def test_mixture_prior_scales_start_at_init_scale_floor_at_min_scale_and_responsibilities_use_the_weights():
    prior = MixtureOfGaussiansPrior(2, components=2, init_scale=0.7, min_scale=0.05)
    assert torch.allclose(prior().scale, torch.full((2, 2), 0.7))
    with torch.no_grad():
        prior.raw_scales.fill_(-50.0)
        prior.means.zero_()
        prior.logits.copy_(torch.tensor([0.0, math.log(3.0)]))
    assert torch.allclose(prior().scale, torch.full((2, 2), 0.05))
    # equal components: p(k | z) is the mixture weight, 1/4 and 3/4
    assert torch.allclose(prior.responsibilities(torch.zeros(1, 2)), torch.tensor([[0.25, 0.75]]))


def test_vampprior_pseudo_inputs_are_clipped_to_the_unit_interval():
    from dgmkit.priors import VampPrior

    prior = VampPrior(2, (3,), components=2)
    with torch.no_grad():
        prior.pseudo_inputs.copy_(torch.tensor([[-1.0, 0.5, 2.0], [0.2, 1.5, -0.1]]))
    assert torch.equal(prior.pseudo_input_values(), torch.tensor([[0.0, 0.5, 1.0], [0.2, 1.0, 0.0]]))


def test_vampprior_pseudo_inputs_start_at_their_mean_and_std():
    from dgmkit.priors import VampPrior

    torch.manual_seed(0)
    u = VampPrior(2, (50,), components=40, mean=0.3, std=0.02).pseudo_inputs.detach()
    assert u.mean().item() == pytest.approx(0.3, abs=2e-3) and u.std().item() == pytest.approx(0.02, rel=0.05)


def test_vampprior_pseudo_inputs_of_continuous_data_are_free_and_old_runs_keep_their_clip():
    """A table's standardized columns (or another run's latents) span negative values and more
    than 1: clipped to [0, 1], no pseudo-input could be a typical row (and one started at a
    training row was squashed into [0.01, 0.99]). Pixels keep the reference code's clip; a run
    recorded before run format 5 keeps the clip it was trained with."""
    from dgmkit.config import migrate_record
    from dgmkit.families.base import DataSpec
    from dgmkit.priors import VampPrior

    rows = torch.tensor([[-1.5, 0.5, 2.5], [0.2, 3.0, -0.7]])
    free = VampPrior(2, (3,), components=2, init=rows, bounded=False)
    assert torch.equal(free.pseudo_input_values(), rows)
    cfg = RunConfig.from_dict({"model": {"name": "vae", "prior": "vampprior", "prior_components": 2, "hidden": [4]}})
    table, pixels = DataSpec.of((1, 1, 3), None), DataSpec.of((1, 2, 2), 2)
    assert not cfg.model.model_for(table).prior_module.bounded and cfg.model.model_for(pixels).prior_module.bounded
    unit = cfg.replace(pseudo_range="unit")
    assert unit.model.model_for(table).prior_module.bounded
    record = {"format": 4, "config": cfg.to_dict(), "data": {"event_shape": [1, 1, 3], "num_levels": None}}
    del record["config"]["model"]["pseudo_range"]
    assert migrate_record(record, "config.json")["config"]["model"]["pseudo_range"] == "unit"
    record["config"]["model"]["prior"] = "standard"
    assert "pseudo_range" not in migrate_record(record, "config.json")["config"]["model"]
    # started at training rows with missing entries (MIWAE's data): each hole filled with its column's observed mean
    # (a NaN pseudo-input made the first step's loss NaN)
    nan = float("nan")
    holes = torch.tensor([[1.0, nan, 3.0], [nan, nan, 5.0], [2.0, 4.0, nan]]).view(3, 1, 1, 3)
    from_data = cfg.replace(pseudo_init="data", prior_components=3).model.model_for(DataSpec.of((1, 1, 3), None, holes))
    u = from_data.prior_module.pseudo_input_values().sort(0).values
    assert torch.equal(u.flatten(1), torch.tensor([[1.0, 4.0, 3.0], [1.5, 4.0, 4.0], [2.0, 4.0, 5.0]]))


def test_pseudo_range_of_a_vampprior_on_quantized_data_is_refused_as_unread(tmp_path, capsys):
    """On data of levels the encoder reads pixels scaled to [0, 1] and the pseudo-inputs are clipped there whatever
    pseudo_range says: --pseudo-range data (the default) or unit on the digits trained the same model."""
    from dgmkit.cli.main import main
    from dgmkit.errors import ConfigError

    cfg = RunConfig.of(prior="vampprior", prior_components=2, hidden=[4])
    for value in ("data", "unit"):
        with pytest.raises(ConfigError, match=f"^pseudo_range = '{value}' is read only with continuous data"):
            cfg.replace(pseudo_range=value).check_inert(None, ["pseudo_range"], event_shape=(1, 8, 8), num_levels=17)
        cfg.replace(pseudo_range=value).check_inert(None, ["pseudo_range"], event_shape=(1, 1, 4), num_levels=None)
        cfg.replace(pseudo_range=value).check_inert(None, ["pseudo_range"])  # the data not yet known
    cfg.check_inert(event_shape=(1, 8, 8), num_levels=17)  # left out: taken
    for model in ("hvae", "pixelvae"):
        other = RunConfig.of(model=model, prior="vampprior")
        assert "pseudo_range" in other.model.data_inert_settings((1, 8, 8), 2)
        assert "pseudo_range" not in other.model.data_inert_settings((1, 1, 4), None)
    out = tmp_path / "r"
    argv = ["train", "--dataset", "digits", "--prior", "vampprior", "--prior-components", "2", "--hidden", "4",
            "--pseudo-range", "data", "--epochs", "1", "--quiet", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    assert "pseudo_range = 'data' is read only with continuous data" in capsys.readouterr().err and not out.exists()


def test_clustering_scores_refuse_vectors_that_do_not_pair_up_by_name():
    labels = np.array([0, 1, 1, 0])
    for assign in (np.array([0, 1, 1]), np.zeros((4, 1), dtype=np.int64), np.array([], dtype=np.int64)):
        with pytest.raises(ValueError, match="one cluster and one label a datapoint"):
            clustering_scores(assign, labels if len(assign) else assign)
    with pytest.raises(ValueError, match="the labels hold NaN or infinite values"):
        clustering_scores(np.array([0, 1, 1, 0]), np.array([np.nan, 1.0, 1.0, 0.0]))
    for assign, name in (([None, 1, 1, 0], "cluster assignments"), (np.array([0, 1, None, 0]), "labels")):
        with pytest.raises(ValueError, match=f"the {name} hold None: each datapoint needs a cluster and a label"):
            clustering_scores(*((assign, labels) if name != "labels" else (labels, assign)))  # (np.unique's TypeError)
    for named in (labels.astype(np.float32), labels.astype(bool), np.array(list("abba"))):  # any names of classes
        assert clustering_scores(np.array([0, 1, 1, 0]), named)["accuracy"] == 1.0


def test_cluster_assignments_refuse_a_batch_size_that_is_not_a_positive_whole_number_by_name():
    from dgmkit.evaluation.clustering import cluster_assignments

    vae = build_model(RunConfig.of(hidden=[4], latent_dim=2, prior="mog", prior_components=3), (1, 1, 4), 2)
    x = torch.bernoulli(torch.full((5, 1, 1, 4), 0.5))
    for bad in (0, -1, 1.5, True):  # (range()'s error, torch.cat's, a TypeError, a bool taken for 1)
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            cluster_assignments(vae, x, batch_size=bad)
    assert torch.equal(cluster_assignments(vae, x, batch_size=2), cluster_assignments(vae, x))


def test_clustering_scores_from_the_contingency_table():
    """Clusters 0, 1, 2 against classes 0, 1: counts [[3, 1], [1, 2], [1, 2]]. The best one-to-one
    matching takes 3 + 2 of 10, each cluster's majority 3 + 2 + 2, and NMI is I / mean(H_labels, H_clusters)."""
    assign = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1, 0])
    s = clustering_scores(assign, labels)
    assert s["accuracy"] == 0.5 and s["accuracy_majority"] == 0.7
    assert s["clusters_used"] == 3 and s["n"] == 10
    joint = np.array([[3, 1], [1, 2], [1, 2]]) / 10
    pa, pl = joint.sum(1), joint.sum(0)
    mi = sum(p * math.log(p / (pa[i] * pl[j])) for (i, j), p in np.ndenumerate(joint))
    h_a, h_l = -(pa * np.log(pa)).sum(), -(pl * np.log(pl)).sum()
    assert s["nmi"] == pytest.approx(mi / ((h_a + h_l) / 2), rel=1e-9)


def test_the_parts_refuse_sizes_and_scales_that_build_nothing_or_nan_by_name():
    """Built by hand: a prior of 0 dimensions, a mixture of 0 components, an MLP layer of width 0
    and an encoder of 0 latents were built (a warning at most); a Gaussian head of scale NaN and a
    mixture initialised at scale NaN or below its floor were built and gave NaN densities (or
    math's "domain error")."""
    from dgmkit.conditional import GaussianEncoder, GaussianHead
    from dgmkit.nn.mlp import MLP

    for build, needle in (
        (lambda: StandardNormalPrior(0), "latent_dim must be >= 1, got 0"),
        (lambda: MixtureOfGaussiansPrior(2, components=0), "components must be an integer >= 1, got 0"),
        (lambda: MixtureOfGaussiansPrior(2, init_scale=math.nan), "need 0 < min_scale < init_scale"),
        (lambda: MixtureOfGaussiansPrior(2, init_scale=1e-4), "need 0 < min_scale < init_scale"),
        (lambda: MixtureOfGaussiansPrior(2, min_scale=-1.0), "need 0 < min_scale < init_scale"),
        (lambda: GaussianHead("fixed", scale=math.nan), "the Gaussian head's scale must be a finite number > 0, got nan"),
        (lambda: GaussianHead(min_scale=math.inf), "the Gaussian head's min_scale must be a finite number > 0, got inf"),
        (lambda: MLP(4, [8, 0], 2), "MLP's hidden[1] must be an integer >= 1, got 0"),
        (lambda: MLP(4, [8], 0), "MLP's out_features must be an integer >= 1, got 0"),
        (lambda: GaussianEncoder(torch.nn.Linear(4, 4), 0), "latent_dim must be an integer >= 1, got 0"),
    ):
        with pytest.raises(ValueError) as e:
            build()
        assert needle in str(e.value)
    assert MixtureOfGaussiansPrior(2, components=np.int64(3)).components == 3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"components": 0}, "components must be an integer >= 1"),
        ({"components": -1}, "components must be an integer >= 1"),
        ({"components": 2.5}, "components must be an integer >= 1"),
        ({"components": True}, "components must be an integer >= 1"),
        ({"event_shape": 3}, "event_shape is the encoder's input shape"),
        ({"event_shape": (0, 3)}, "event_shape is the encoder's input shape"),
        ({"mean": float("nan")}, "pseudo-input mean must be a finite number"),
        ({"std": -1.0}, "pseudo-input std must be a finite number >= 0"),
    ],
)
def test_a_vampprior_of_no_component_or_of_values_that_are_none_is_refused_where_it_is_built(kwargs, words):
    """A VampPrior of 0 components was built: p(z) a mixture of none, log p(z) = -inf for every z,
    and the first sign was an infinite loss; 2.5 or -1 components met torch.randn's TypeError or
    RuntimeError. The MoG prior refuses them by name; so does the VampPrior (and a mixture of no
    component), and a NumPy count is the int it holds."""
    from dgmkit.priors import VampPrior

    settings = {"latent_dim": 2, "event_shape": (3,), "components": 2, **kwargs}
    with pytest.raises(ValueError, match=words):
        VampPrior(**settings)
    assert VampPrior(2, [1, 3], components=np.int64(4)).pseudo_inputs.shape == (4, 1, 3)
    with pytest.raises(ValueError, match="a component or more"):
        DiagonalGaussianMixture(torch.zeros(0), torch.zeros(0, 2), torch.ones(0, 2))


def test_a_prior_of_true_latent_dimensions_is_refused():
    """``operator.index(True)`` is 1: a bool was taken as one latent dimension."""
    with pytest.raises(TypeError, match="latent_dim must be an integer, got bool"):
        StandardNormalPrior(True)
    assert StandardNormalPrior(np.int64(3)).latent_dim == 3


def _nmi_textbook(u: np.ndarray, v: np.ndarray) -> float:
    """I(U; V) / ((H(U) + H(V)) / 2) of the empirical joint, in any base; 1 where both are one group."""
    joint = np.unique(np.stack([u, v]), axis=1, return_counts=True)[1] / len(u)
    h = lambda w: -sum(p * math.log(p) for p in np.unique(w, return_counts=True)[1] / len(w))  # noqa: E731
    mi = h(u) + h(v) + sum(p * math.log(p) for p in joint)
    return 1.0 if h(u) == h(v) == 0 else mi / ((h(u) + h(v)) / 2)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=25))
def test_clustering_scores_equal_the_best_matching_by_brute_force_and_the_textbook_nmi(pairs):
    """Cluster names 10, 13, .. and class names -7, -14, ..: not 0..K-1, with unequal numbers
    of clusters and classes, and clusters of the K that no datapoint falls in."""
    assign = np.array([10 + 3 * a for a, _ in pairs])
    labels = np.array([-7 * (c + 1) for _, c in pairs])
    clusters, classes = np.unique(assign), np.unique(labels)
    counts = np.array([[np.sum((assign == a) & (labels == c)) for c in classes] for a in clusters])
    small, large = sorted(counts.shape)
    table = counts if counts.shape[0] == small else counts.T
    best = max(sum(table[i, j] for i, j in enumerate(p)) for p in itertools.permutations(range(large), small))
    s = clustering_scores(assign, labels)
    assert s["accuracy"] == pytest.approx(best / len(pairs), abs=1e-12)
    assert s["accuracy_majority"] == pytest.approx(counts.max(1).sum() / len(pairs), abs=1e-12)
    assert s["nmi"] == pytest.approx(_nmi_textbook(assign, labels), abs=1e-9)
    assert s["clusters_used"] == len(clusters) and s["n"] == len(pairs)


@pytest.mark.parametrize("components", [1, 3])
def test_a_mixture_refuses_latents_of_another_width_by_name(components):
    """The mixture's log-density flattened z to rows of M values: with one component (a MoG or a
    VampPrior of K = 1) a z of 2M values per row gave a number per row, the density of its halves
    mixed as if they were two components; otherwise torch's own shape error, naming no mixture."""
    d = MixtureOfGaussiansPrior(2, components)()
    for z in (torch.zeros(5, 4), torch.zeros(5, 3), torch.zeros(4), torch.zeros(())):
        with pytest.raises(ValueError, match=r"a mixture over 2 dimensions scores z of shape \(\.\.\., 2\)"):
            d.log_prob(z)
    assert d.log_prob(torch.zeros(3, 5, 2)).shape == (3, 5)


@pytest.mark.parametrize("bounded", [True, False])
def test_a_vampprior_refuses_pseudo_inputs_that_start_at_nan_or_infinity(bounded):
    """A NaN in ``init`` was taken (clamp keeps NaN): a NaN pseudo-input, whose posterior made log p(z)
    NaN at every z from the first step."""
    from dgmkit.priors import VampPrior

    for bad in (float("nan"), float("inf")):
        init = torch.full((2, 3), 0.5)
        init[1, 2] = bad
        with pytest.raises(ValueError, match="init must be finite: 1 of its 6 values are NaN or infinite"):
            VampPrior(2, (3,), components=2, init=init, bounded=bounded)
    assert torch.isfinite(VampPrior(2, (3,), components=2, init=torch.rand(2, 3), bounded=bounded).pseudo_inputs).all()


@pytest.mark.parametrize("flow", ["maf", "realnvp"])
def test_a_flow_prior_refuses_latents_of_another_width_by_name(flow):
    """A flow prior's p(z) scored z of another width with whatever its first layer made of it: a MAF
    met torch's "mat1 and mat2 shapes cannot be multiplied (5x2 and 3x8)", naming no flow or width."""
    from dgmkit.priors import FlowPrior
    from dgmkit.transforms import VECTOR_FLOWS

    p = FlowPrior(3, VECTOR_FLOWS[flow](3, [8], 2, act="tanh"))()
    for z in (torch.zeros(5, 2), torch.zeros(5, 6), torch.zeros(())):
        with pytest.raises(ValueError, match=r"a flow over 3 dimensions scores x of shape \(\.\.\., 3\)"):
            p.log_prob(z)
    assert p.log_prob(torch.zeros(4, 5, 3)).shape == (4, 5)


def test_a_float64_mixture_draws_float64_noise():
    """The mixture drew its standard normal noise in float32 whatever its precision: a float64
    mixture's draws were float64 tensors holding float32 values (every draw of N(0, 1) exactly a
    float32 number), so a float64 model's prior samples had float32 resolution."""
    d = DiagonalGaussianMixture(torch.zeros(2, dtype=torch.float64), torch.zeros(2, 3).double(), torch.ones(2, 3).double())
    z = d.sample((1000,))
    assert z.dtype == torch.float64
    assert not torch.equal(z.float().double(), z)


def test_a_vampprior_refuses_an_encoder_of_flow_posteriors_by_name():
    """A VAE of an IAF encoder and a VampPrior (refused by dgm train, not by the Python API) met
    "a flow's mean has no closed form; average samples instead" at its first p(z), naming no prior."""
    from torch import nn

    from dgmkit.conditional.iaf_encoder import IAFEncoder
    from dgmkit.priors import VampPrior
    from dgmkit.transforms import VECTOR_FLOWS

    encoder = IAFEncoder(nn.Linear(4, 2 * 2 + 3), 2, 3, VECTOR_FLOWS["maf"](2, [8], 1, context_features=3))
    with pytest.raises(TypeError, match="needs an encoder of diagonal Gaussian posteriors; this encoder gave FlowDistr"):
        VampPrior(2, (4,), components=3)(encoder)


def test_a_vampprior_of_another_input_shape_or_latent_width_than_its_encoder_is_refused_by_name():
    """Built in Python with pseudo-inputs the encoder cannot take, a VampPrior met the encoder's raw
    "mat1 and mat2 shapes cannot be multiplied"; one of another latent width than the encoder's
    said "a mixture over 4 dimensions scores z of shape (..., 4)" only when z of its own width was scored."""
    from torch import nn

    from dgmkit.conditional.encoder import GaussianEncoder
    from dgmkit.priors import VampPrior

    encoder = GaussianEncoder(nn.Sequential(nn.Flatten(), nn.Linear(12, 8)), 4)
    with pytest.raises(ValueError, match=r"pseudo-inputs are of shape \(1, 3, 5\) \(its event_shape\), which the encoder"):
        VampPrior(4, (1, 3, 5), components=3)(encoder)
    with pytest.raises(ValueError, match=r"the VampPrior is over 3 latent dimensions, the encoder.s q\(z\|u\) over 4"):
        VampPrior(3, (1, 3, 4), components=3)(encoder)
    assert VampPrior(4, (1, 3, 4), components=3)(encoder).log_prob(torch.zeros(2, 4)).shape == (2,)

    def out_of_memory(x):  # (a device's error is not one of the pseudo-inputs' shape: it passes as it is)
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(torch.OutOfMemoryError):
        VampPrior(4, (1, 3, 4), components=3)(out_of_memory)


def test_a_diagonal_gaussian_prior_refuses_latents_of_another_width_by_name():
    # (a z of width 1 was broadcast over the prior's 3 dimensions: z = (0,) had the density of (0, 0, 0))
    p = StandardNormalPrior(3)()
    for z in (torch.zeros(5, 1), torch.zeros(2), torch.zeros(())):
        with pytest.raises(ValueError, match=r"over 3 dimensions scores values of shape \(\.\.\., 3\)"):
            p.log_prob(z)
    assert p.log_prob(torch.zeros(4, 2, 3)).shape == (4, 2)


def test_a_mixture_gives_an_infinite_latent_no_density_not_nan():
    m = MixtureOfGaussiansPrior(2, 3).double()
    z = torch.tensor([[math.inf, 0.0], [-math.inf, 1.0], [math.nan, math.inf], [0.5, 0.5]], dtype=torch.float64)
    lp = m().log_prob(z).tolist()
    assert lp[:2] == [-math.inf, -math.inf]  # (as a standard normal's: it was NaN)
    assert math.isnan(lp[2]) and math.isfinite(lp[3])


@pytest.mark.parametrize("shape", [(2, 2), (2, 4), (3, 3)])
def test_a_uniform_categorical_prior_refuses_one_hot_values_of_another_width_or_number_of_variables(shape):
    from dgmkit.priors import UniformCategoricalPrior

    p = UniformCategoricalPrior(2, 3)()  # (2 classes or 4 were scored as one of its 3 silently, 3 variables a RuntimeError)
    with pytest.raises(ValueError, match=r"over 3 classes score one-hot values of shape \(\.\.\., 2, 3\)"):
        p.log_prob(torch.eye(shape[1])[: shape[0]])
    assert p.log_prob(torch.eye(3)[[0, 2]]).item() == pytest.approx(2 * math.log(1 / 3))


@pytest.mark.parametrize("flow", ["maf", "realnvp"])
def test_a_flow_prior_scores_latents_of_another_precision_in_its_own(flow):
    """float64 z against a float32 flow prior was torch's "mat1 and mat2 must have the same dtype" from
    the first layer; it is scored in the flow's precision, as a mixture prior and a flow model score it."""
    from dgmkit.priors import FlowPrior
    from dgmkit.transforms import VECTOR_FLOWS

    torch.manual_seed(0)
    prior = FlowPrior(3, VECTOR_FLOWS[flow](3, [8], 2, act="tanh"))
    z = torch.randn(5, 3, dtype=torch.float64)
    assert torch.equal(prior().log_prob(z), prior().log_prob(z.float()))
    assert prior.double()().log_prob(z.float()).dtype == torch.float64


def test_a_layer_prior_whose_network_does_not_take_the_layer_above_is_refused_by_name():
    """A GaussianLayerPrior's network of another input width met the layer above's draws with torch's
    "mat1 and mat2 shapes cannot be multiplied", naming neither the prior nor the layer above."""
    from dgmkit.priors import GaussianLayerPrior

    prior = GaussianLayerPrior(torch.nn.Linear(3, 4), latent_dim=2)
    with pytest.raises(ValueError, match=r"GaussianLayerPrior does not take the layer above's draws of shape \(2, 5\)"):
        prior(torch.zeros(2, 5))
    assert prior(torch.zeros(2, 3)).log_prob(torch.zeros(2, 2)).shape == (2,)


def test_a_layer_prior_passes_on_an_error_not_of_its_inputs_shape_as_torch_raised_it():
    """Only torch's errors of the input's shape are said as the layer above's width: any other
    RuntimeError of the network (a device's, a library's) was said to be the draws' width."""
    from dgmkit.priors import GaussianLayerPrior

    class Failing(torch.nn.Linear):
        def forward(self, x):
            raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED when calling cublasSgemm")

    prior = GaussianLayerPrior(Failing(3, 4), latent_dim=2)
    with pytest.raises(RuntimeError, match="^CUBLAS_STATUS_EXECUTION_FAILED") as raised:
        prior(torch.zeros(2, 3))
    assert not isinstance(raised.value, ValueError)
