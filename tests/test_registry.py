"""Registry sweeps: every distribution, prior, objective and model family of dgmkit passes one
generic test, and a completeness test fails when a new one is added without an entry here.

(a) distributions: shapes, support, normalisation (enumeration or a grid), samples against
    log_prob, mean and entropy against Monte Carlo, reparameterized gradients;
(b) priors: the same for p(z), with gradients reaching every parameter;
(c) objectives: per-example terms, the score field, the bound against an exact log p(x), which
    parameters the loss trains;
(d) families: build from defaults, one fit step, evaluation by the declared kind, and a run
    folder written by ``dgm train`` that loads back to the same model.
"""

import dataclasses
import importlib
import inspect
import itertools
import math
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Distribution

import dgmkit
import dgmkit.cli.train
from dgmkit.cli.common import split_data
from dgmkit.cli.main import main
from dgmkit.conditional import GaussianEncoder
from dgmkit.config import RunConfig, build_model, build_objective, load_run
from dgmkit.data import load_dataset
from dgmkit.distributions import (
    BernoulliPixels,
    CategoricalPixels,
    Delta,
    DiagonalGaussianMixture,
    DiagonalNormal,
    DiscretizedLogisticMixture,
    FlowDistribution,
    JointSampler,
    PreciseNormal,
    location,
    rsample_and_log_prob,
    student_t,
)
from dgmkit.distributions.flow import standard_normal
from dgmkit.distributions.logit_normal import LogitNormal
from dgmkit.errors import ConfigError
from dgmkit.evaluation import estimate, evaluate
from dgmkit.families import FAMILIES, FIT_PATHS, DataSpec, FamilyConfig, get_family
from dgmkit.models import (
    ClosedFormFit,
    EMFit,
    EnumeratedELBO,
    ExactLikelihoodModel,
    GenerativeModel,
    HelmholtzMachine,
    LatentVariableModel,
    LogLinearLVM,
    SemiSupervisedVAE,
    Term,
    TimeSampledBound,
    VariationalModel,
)
from dgmkit.models.base import ESTIMATE_KINDS
from dgmkit.models.vqvae import UniformCodeGridPrior
from dgmkit.objectives import (
    ELBO,
    IWAE,
    VIMCO,
    DequantizationBound,
    DiffusionBound,
    GumbelSoftmaxELBO,
    MaximumLikelihood,
    Objective,
    Reconstruction,
    ReinforceELBO,
    ReweightedWakeSleep,
    VIMCOBound,
    WakeSleep,
)
from dgmkit.objectives.hierarchical import HierarchicalELBO
from dgmkit.objectives.miwae import MIWAE
from dgmkit.objectives.semisupervised import HybridObjective, M2Objective
from dgmkit.objectives.tcvae import BetaTCVAE
from dgmkit.objectives.vq import VQObjective
from dgmkit.objectives.wae import WAEObjective
from dgmkit.priors import FlowPrior, MixtureOfGaussiansPrior, Prior, StandardNormalPrior, UniformCategoricalPrior, VampPrior
from dgmkit.settings import check
from dgmkit.training import VALID_SEED, Trainer

SRC = Path(dgmkit.__file__).resolve().parent


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def _concrete(cls):
    """dgmkit's own concrete subclasses (not those other test modules define)."""
    return {c for c in _all_subclasses(cls) if not inspect.isabstract(c) and c.__module__.startswith("dgmkit.")}


def _perturb(module: nn.Module, scale: float, seed: int = 0) -> None:
    """Move the weights off their initialisation: flows and output layers start at zero (the
    identity), where no gradient reaches the layers before them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _states(levels_per_element: list[int]) -> torch.Tensor:
    """Every value of a small discrete event, (S, E), in row-major (mixed-radix) order."""
    return torch.tensor(list(itertools.product(*[range(v) for v in levels_per_element])), dtype=torch.float64)


def _state_index(values: torch.Tensor, levels_per_element: list[int]) -> torch.Tensor:
    """The row of ``_states`` that each value (..., E) is."""
    index = torch.zeros(values.shape[:-1], dtype=torch.long)
    for i, v in enumerate(levels_per_element):
        index = index * v + values[..., i].round().long()
    return index


# =====================================================================================
# (a) distributions
# =====================================================================================


@dataclasses.dataclass
class DistCase:
    """``kind``: "discrete" (``levels``: values per event element, enumerated), "continuous"
    (``grid``: (low, high, points) per event element for 1-D/2-D events, else None) or "point"."""

    dist: Distribution
    kind: str
    levels: list[int] | None = None
    grid: tuple[float, float, int] | None = None
    mean_is_expectation: bool = True
    params: list = dataclasses.field(default_factory=list)  # leaves that rsample must reach
    dtype: torch.dtype = torch.float64


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=_g(seed), dtype=torch.float64)


def _helmholtz(seed=0):
    torch.manual_seed(seed)
    m = HelmholtzMachine((1, 1, 2), [2, 1])
    _perturb(m, 1.0, seed)
    return m


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().requires_grad_()


def _case_delta():
    value = _leaf(_randn(2, 3, seed=6))
    return DistCase(Delta(value), "point", params=[value])


def _case_normal():
    loc, scale = _leaf(_randn(2, 2, seed=7)), _leaf(0.5 + _randn(2, 2, seed=8).abs())
    return DistCase(DiagonalNormal(loc, scale), "continuous", grid=(-9.0, 9.0, 361), params=[loc, scale])


def _case_precise_normal():
    loc, scale = _leaf(_randn(2, seed=14)), _leaf(0.5 + _randn(2, seed=15).abs())
    return DistCase(PreciseNormal(loc, scale), "continuous", grid=(-9.0, 9.0, 361), params=[loc, scale])


def _case_student_t():
    df, loc, scale = _leaf(1.5 + _randn(2, seed=16).abs()), _leaf(_randn(2, seed=17)), _leaf(0.5 + _randn(2, seed=18).abs())
    return DistCase(student_t(df, loc, scale), "continuous", grid=(-400.0, 400.0, 160_001), params=[df, loc, scale])


def _case_logit_normal():
    loc, scale = _leaf(_randn(2, 1, 1, 2, seed=12, scale=0.5)), _leaf(0.5 + 0.3 * _randn(2, 1, 1, 2, seed=13).abs())
    return DistCase(LogitNormal(loc, scale), "continuous", grid=(0.0, 1.0, 400), params=[loc, scale])


def _enumerated_binary():
    m = LogLinearLVM((1, 1, 3), 2)
    _perturb(m, 0.7)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    return m.likelihood(z)


def _case_flow():
    from dgmkit.transforms import realnvp

    torch.manual_seed(0)
    bij = realnvp(2, [8], 2).double()
    _perturb(bij, 0.15)
    d = FlowDistribution(standard_normal(2, dtype=torch.float64), bij)
    return DistCase(d, "continuous", grid=(-12.0, 12.0, 481), params=list(bij.parameters()))


def _case_flow_conditional():
    """An IAF posterior: a conditional flow with batch shape (2,) and a context per example."""
    from dgmkit.transforms import iaf

    torch.manual_seed(1)
    bij = iaf(2, [8], 2, context_features=3).double()
    _perturb(bij, 0.3, seed=1)
    loc, scale = _leaf(_randn(2, 2, seed=2, scale=0.5)), _leaf(0.6 + _randn(2, 2, seed=3).abs() * 0.3)
    d = FlowDistribution(DiagonalNormal(loc, scale), bij, context=_randn(2, 3, seed=4))
    return DistCase(d, "continuous", grid=(-12.0, 12.0, 481), params=[loc, scale, *bij.parameters()])


def _tiny_hvae(inference: str = "top-down", seed: int = 0):
    """A two-layer hierarchical VAE with 1-D layers (z = (z_1, z_2) is 2-D), in float64."""
    from dgmkit.families.hvae import HVAEConfig

    torch.manual_seed(seed)
    cfg = HVAEConfig(latent_sizes=[1, 1], posterior=inference, hidden=[6], likelihood="bernoulli")
    m = cfg.build((1, 1, 3), 2).double()
    _perturb(m, 0.5, seed)
    return m


def _case_hvae(which: str):
    m = _tiny_hvae()
    if which == "prior":
        params = list(m.layer_priors.parameters())
        return DistCase(m.prior(), "continuous", grid=(-12.0, 12.0, 481), params=params, mean_is_expectation=False)
    params = [*m.features.parameters(), *m.q_nets.parameters()]
    x = torch.tensor([[[[0.0, 1.0, 1.0]]], [[[1.0, 0.0, 1.0]]]], dtype=torch.float64)
    return DistCase(m.posterior(x), "continuous", grid=(-12.0, 12.0, 481), params=params, mean_is_expectation=False)


def _case_deep(which: str):
    """The residual top-down VAE at its smallest: a 1x1 "image", two latent layers of one channel
    at resolution 1 (z is 2-D), in float64."""
    from dgmkit.families.hvae import HVAEConfig

    torch.manual_seed(0)
    cfg = HVAEConfig(posterior="residual", res_resolutions=[1], res_layers=[2], res_width=4, res_bottleneck=2)
    cfg.res_latent_channels = 1
    m = cfg.build((1, 1, 1), 2).double()
    _perturb(m, 0.3, 0)
    top, below = m.cells
    between = [m.h0, *top.p.parameters(), *top.z_in.parameters(), *top.res.parameters()]  # what z_1's law depends on
    if which == "prior":
        params = [*between, *below.p.parameters()]
        return DistCase(m.prior(), "continuous", grid=(-12.0, 12.0, 481), params=params, mean_is_expectation=False)
    x = torch.tensor([[[[0.0]]], [[[1.0]]]], dtype=torch.float64)
    params = [*m.stem.parameters(), *m.up_blocks.parameters(), *between, *top.q.parameters(), *below.q.parameters()]
    return DistCase(m.posterior(x), "continuous", grid=(-12.0, 12.0, 481), params=params, mean_is_expectation=False)


def _case_autoregressive(levels: int):
    """p(x|z) of a small PixelCNN decoder over 2x2 images (Bernoulli) or 1x3 ones (3-way
    categorical) at two latents, in float64, weights moved off their initialisation."""
    from dgmkit.conditional import BernoulliHead, CategoricalHead
    from dgmkit.conditional.pixelcnn import PixelCNNDecoder

    torch.manual_seed(0)
    shape = (1, 2, 2) if levels == 2 else (1, 1, 3)
    head = BernoulliHead() if levels == 2 else CategoricalHead(levels)
    net = nn.Linear(2, 2 * math.prod(shape))
    decoder = PixelCNNDecoder(net, head, shape, 2, channels=4, layers=2, input_scale=1.0 / (levels - 1)).double()
    _perturb(decoder, 0.7, levels)
    px = decoder(_randn(2, 2, seed=12))
    # documented: the mean has no closed form (NotImplementedError)
    return DistCase(px, "discrete", [levels] * math.prod(shape), mean_is_expectation=False)


# name -> factory; every torch Distribution subclass defined in dgmkit appears here (or in EXCLUDED)
DISTRIBUTIONS = {
    "bernoulli-pixels-image": lambda: DistCase(
        BernoulliPixels(_randn(2, 1, 1, 3, scale=2.0), event_dims=3), "discrete", [2] * 3
    ),
    "bernoulli-pixels-vector": lambda: DistCase(
        BernoulliPixels(_randn(2, 2, 2, seed=1, scale=2.0), event_dims=1), "discrete", [2] * 2
    ),
    "categorical-pixels": lambda: DistCase(
        CategoricalPixels(_randn(2, 1, 1, 2, 3, seed=2), event_dims=3), "discrete", [3] * 2
    ),
    "discretized-logistic": lambda: DistCase(
        DiscretizedLogisticMixture(
            _randn(2, 1, 1, 2, 2, seed=3),
            torch.tanh(_randn(2, 1, 1, 2, 2, seed=4)),
            _randn(2, 1, 1, 2, 2, seed=5, scale=0.5) - 1,
            num_levels=4,
            event_dims=3,
        ),
        "discrete",
        [4] * 2,
    ),  # fmt: skip
    "delta": _case_delta,
    "diagonal-normal": _case_normal,
    "precise-normal": _case_precise_normal,
    "student-t": _case_student_t,
    "diagonal-gaussian-mixture": lambda: DistCase(
        DiagonalGaussianMixture(_randn(3, seed=9), _randn(3, 2, seed=10, scale=2.0), 0.4 + _randn(3, 2, seed=11).abs()),
        "continuous",
        grid=(-10.0, 10.0, 401),
    ),
    "flow": _case_flow,
    "flow-conditional": _case_flow_conditional,
    "logit-normal": _case_logit_normal,
    "helmholtz-prior": lambda: DistCase(_helmholtz().prior(), "discrete", [2] * 3, dtype=torch.float32),
    "helmholtz-posterior": lambda: DistCase(
        _helmholtz().posterior(torch.tensor([[[[0.0, 1.0]]], [[[1.0, 1.0]]]])),
        "discrete",
        [2] * 3,
        dtype=torch.float32,
        mean_is_expectation=False,  # documented: mean-field propagation, sigmoid(R E[h]) and not E[sigmoid(R h)]
    ),
    "enumerated-binary": lambda: DistCase(_enumerated_binary(), "discrete", [2] * 3, dtype=torch.float32),
    # documented: mean is the point of layer-by-layer means, not E[z]
    "hierarchical-posterior": lambda: _case_hvae("posterior"),
    "hierarchical-prior": lambda: _case_hvae("prior"),
    "deep-top-down-posterior": lambda: _case_deep("posterior"),
    "deep-top-down-prior": lambda: _case_deep("prior"),
    "autoregressive-pixels-bernoulli": lambda: _case_autoregressive(2),
    "autoregressive-pixels-categorical": lambda: _case_autoregressive(3),
    "uniform-code-grid": lambda: DistCase(
        UniformCodeGridPrior((2, 2), 3, torch.device("cpu")), "discrete", [3] * 4, mean_is_expectation=False
    ),  # (torch's Categorical: its mean is NaN, no mean of code indices)
}

# Distribution subclasses that are not instantiated on their own
EXCLUDED = {
    "dgmkit.models.helmholtz._Chain": "the shared base of the Helmholtz prior and posterior (no log_prob of its own)",
    "dgmkit.models.hvae._Layered": (
        "the shared base of the hierarchical prior and posterior (a log_prob of each one's _layers_log_prob)"
    ),
    "dgmkit.distributions.levels.LevelPixels": (
        "the shared base of the categorical and discretized logistic pixels (no log_prob_elements of its own)"
    ),
    "dgmkit.models.vqvae.CodeGridPrior": "a view of a trained code prior's log_prob and sample (tests/test_vqvae.py)",
    "dgmkit.distributions.categorical._OneHotCategorical": (
        "torch's OneHotCategorical made without checks, its samples by one_hot: one-hot events, not enumerable "
        "element by element; checked against torch's in tests/test_distributions.py"
    ),
    "dgmkit.distributions.table.MixedColumns": (
        "numeric and categorical columns in one event, neither enumerable nor a grid density: each kind's "
        "normalization is checked in tests/test_imputation.py"
    ),
}


def _dgmkit_distribution_classes() -> set[str]:
    for m in pkgutil.walk_packages(dgmkit.__path__, "dgmkit."):
        importlib.import_module(m.name)
    return {f"{c.__module__}.{c.__qualname__}" for c in _all_subclasses(Distribution) if c.__module__.startswith("dgmkit.")}


def test_every_distribution_is_registered():
    covered = {
        f"{type(DISTRIBUTIONS[n]().dist).__module__}.{type(DISTRIBUTIONS[n]().dist).__qualname__}" for n in DISTRIBUTIONS
    }
    defined = _dgmkit_distribution_classes()
    assert "dgmkit.distributions.logit_normal.LogitNormal" in defined  # the walk reaches every module
    missing = defined - covered - set(EXCLUDED)
    assert not missing, f"distributions without an entry in DISTRIBUTIONS: {sorted(missing)}"
    assert set(EXCLUDED) <= defined, "EXCLUDED names a class that no longer exists"


def _full(case: DistCase) -> tuple[torch.Size, torch.Size]:
    return case.dist.batch_shape, case.dist.event_shape


def _check_support(case: DistCase, x: torch.Tensor) -> None:
    d = case.dist
    assert torch.isfinite(x).all()
    try:
        support = d.support
    except NotImplementedError:  # a flow over R^D declares none
        return
    ok = support.check(x)
    assert ok.all(), f"samples outside the support {support}"


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_distribution_shapes_support_and_log_prob(name):
    case = DISTRIBUTIONS[name]()
    d = case.dist
    batch, event = _full(case)
    torch.manual_seed(0)
    for sample_shape in [(), (5,), (2, 3)]:
        x = d.sample(sample_shape)
        assert x.shape == torch.Size(sample_shape) + batch + event
        _check_support(case, x)
        lp = d.log_prob(x)
        assert lp.shape == torch.Size(sample_shape) + batch
        assert torch.isfinite(lp).all()
        if case.kind == "point":
            assert (lp == 0).all()  # all mass on the value
    if d.has_rsample:
        x = d.rsample((4,))
        assert x.shape == (4, *batch, *event) and x.requires_grad


@pytest.mark.parametrize("name", sorted(DISTRIBUTIONS))
def test_rsample_and_log_prob_repeats_and_agrees_with_log_prob(name):
    d = DISTRIBUTIONS[name]().dist
    z1, lp1 = rsample_and_log_prob(d, (6,), _g(5))
    z2, lp2 = rsample_and_log_prob(d, (6,), _g(5))
    assert torch.equal(z1, z2) and torch.equal(lp1, lp2), "the same generator must give the same draw"
    z3, _ = rsample_and_log_prob(d, (6,), _g(6))
    if DISTRIBUTIONS[name]().kind != "point":
        assert not torch.equal(z1, z3)
    assert z1.shape == (6, *d.batch_shape, *d.event_shape) and lp1.shape == (6, *d.batch_shape)
    # the one-pass log-density (from the noise, or cached by a flow) is log_prob's
    fresh = z1.detach().clone()  # a new tensor: a flow scores it by the forward pass
    torch.testing.assert_close(lp1.detach(), d.log_prob(fresh).detach(), rtol=1e-6, atol=1e-6)
    if isinstance(d, JointSampler):
        z4, lp4 = d.rsample_and_log_prob((3,), generator=_g(7))
        torch.testing.assert_close(lp4.detach(), d.log_prob(z4.detach().clone()).detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(n for n in DISTRIBUTIONS if DISTRIBUTIONS[n]().kind == "discrete"))
def test_discrete_distribution_normalises_and_samples_match(name):
    case = DISTRIBUTIONS[name]()
    d, levels = case.dist, case.levels
    batch, event = _full(case)
    assert math.prod(event) == len(levels)
    states = _states(levels)  # (S, E)
    s = len(states)
    values = states.reshape(s, *([1] * len(batch)), *event).expand(s, *batch, *event)
    log_p = d.log_prob(values.to(case.dtype)).double()  # (S, *batch)
    torch.testing.assert_close(torch.logsumexp(log_p, 0), torch.zeros(batch, dtype=torch.float64), atol=1e-5, rtol=0)
    p = log_p.exp()
    # samples: the frequency of every state matches exp(log_prob) within 5 standard errors
    n = 20_000
    torch.manual_seed(1)
    x = d.sample((n,)).double().reshape(n, *batch, -1)
    idx = _state_index(x, levels)  # (n, *batch)
    freq = torch.stack([(idx == k).double().mean(0) for k in range(s)])  # (S, *batch)
    se = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() <= 5 * se + 1e-3).all(), f"sample frequencies {freq} against probabilities {p}"
    # mean and entropy against the enumeration
    expectation = torch.einsum("s...,se->...e", p, states).reshape(*batch, *event)
    try:
        mean = d.mean
    except NotImplementedError:
        mean = None
    if mean is not None and case.mean_is_expectation:
        torch.testing.assert_close(mean.double(), expectation, atol=1e-5, rtol=1e-5)
    if _has_entropy(d):
        exact_h = -(p * log_p).sum(0)
        torch.testing.assert_close(d.entropy().double(), exact_h, atol=1e-5, rtol=1e-5)


def _has_entropy(d: Distribution) -> bool:
    try:
        d.entropy()
    except NotImplementedError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(n for n in DISTRIBUTIONS if DISTRIBUTIONS[n]().kind == "continuous"))
def test_continuous_distribution_integrates_to_one_and_moments_match(name):
    case = DISTRIBUTIONS[name]()
    d = case.dist
    batch, event = _full(case)
    dims = math.prod(event)
    assert dims <= 2 and case.grid is not None, "keep the table's continuous events 1-D or 2-D"
    low, high, points = case.grid
    width = (high - low) / points
    axis = low + width * (torch.arange(points, dtype=torch.float64) + 0.5)  # midpoints
    grid = torch.cartesian_prod(*[axis] * dims).reshape(-1, dims)  # (G, dims)
    g = len(grid)
    values = grid.reshape(g, *([1] * len(batch)), *event).expand(g, *batch, *event)
    with torch.no_grad():
        log_p = d.log_prob(values.to(case.dtype)).double()  # (G, *batch)
    mass = log_p.exp().sum(0) * width**dims
    torch.testing.assert_close(mass, torch.ones(batch, dtype=torch.float64), atol=2e-3, rtol=0)
    # samples against the density: their mean matches the grid mean within 5 standard errors
    n = 20_000
    torch.manual_seed(2)
    with torch.no_grad():
        x = d.sample((n,)).double().reshape(n, *batch, dims)
    grid_mean = torch.einsum("g...,gd->...d", log_p.exp() * width**dims, grid)
    se = x.std(0) / math.sqrt(n)
    assert ((x.mean(0) - grid_mean).abs() <= 5 * se + 2e-3).all(), (x.mean(0), grid_mean)
    try:
        mean = d.mean
    except NotImplementedError:  # flows and the logit-normal: no closed form
        mean = None
    if mean is not None:
        mean = mean.detach().double().reshape(*batch, dims)
        assert ((x.mean(0) - mean).abs() <= 5 * se).all(), f"mean {mean} against the Monte Carlo mean {x.mean(0)}"
    if _has_entropy(d):
        with torch.no_grad():
            neg = -d.log_prob(x.reshape(n, *batch, *event).to(case.dtype)).double()
            h = d.entropy().double()
        assert ((neg.mean(0) - h).abs() <= 5 * neg.std(0) / math.sqrt(n)).all(), (h, neg.mean(0))


@pytest.mark.parametrize("name", sorted(n for n in DISTRIBUTIONS if DISTRIBUTIONS[n]().dist.has_rsample))
def test_reparameterized_samples_carry_gradients(name):
    case = DISTRIBUTIONS[name]()
    assert case.params, "give the table's reparameterizable entries the leaf tensors they are built from"
    (case.dist.rsample((3,)) ** 2).sum().backward()
    for i, t in enumerate(case.params):
        assert t.grad is not None and t.grad.abs().sum() > 0, f"{name}: rsample does not reach parameter {i}"


def test_delta_puts_all_mass_on_its_value():
    value = _randn(2, 3)
    d = Delta(value)
    assert torch.equal(d.mean, value) and torch.equal(d.stddev, torch.zeros_like(value))
    assert torch.equal(d.sample((4,)), value.expand(4, 2, 3))
    other = value.clone()
    other[1, 2] += 1e-3
    assert d.log_prob(other).tolist() == [0.0, -math.inf]


# =====================================================================================
# (b) priors
# =====================================================================================


def _vamp():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    with torch.no_grad():
        net[1].weight.mul_(0.5)
        net[1].bias.copy_(torch.tensor([0.0, 0.0, 0.5, 0.5]))  # scales softplus(0.5) ~ 1
    encoder = GaussianEncoder(net, 2)
    prior = VampPrior(2, (1, 2, 2), components=3, init=torch.rand(3, 1, 2, 2, generator=_g(3)))
    return prior, encoder


def _flow_prior():
    from dgmkit.transforms import maf

    torch.manual_seed(0)
    prior = FlowPrior(2, maf(2, [8], 2))
    _perturb(prior, 0.3)
    return prior, None


def _layer_prior():
    from dgmkit.priors.conditional import GaussianLayerPrior

    torch.manual_seed(0)
    net = nn.Linear(3, 4)
    with torch.no_grad():
        net.weight.mul_(0.5)
        net.bias.copy_(torch.tensor([0.0, 0.5, 0.5, 0.8]))
    return GaussianLayerPrior(net, 2), _randn(3, seed=5).float()  # context: the layer above, z_{l+1}


# name -> factory returning (prior, its context)
PRIORS = {
    "standard": lambda: (StandardNormalPrior(2), None),
    "mog": lambda: (MixtureOfGaussiansPrior(2, components=3), None),
    "vampprior": _vamp,
    "flow": _flow_prior,
    "uniform-categorical": lambda: (UniformCategoricalPrior(2, 3), None),
    "gaussian-layer": _layer_prior,
}


def test_every_prior_is_registered():
    covered = {type(PRIORS[n]()[0]) for n in PRIORS}
    missing = {c.__name__ for c in _concrete(Prior)} - {c.__name__ for c in covered}
    assert not missing, f"priors without an entry in PRIORS: {missing}"


def _prior_event(prior: Prior) -> tuple[int, ...]:
    return (prior.latent_dim, prior.num_classes) if isinstance(prior, UniformCategoricalPrior) else (prior.latent_dim,)


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_prior_shapes_and_context(name):
    prior, context = PRIORS[name]()
    assert prior.latent_dim == 2
    if prior.context == "encoder":
        assert context is not None
        with pytest.raises(TypeError):
            prior()
        encoder_params = {id(p) for p in context.parameters()}
        assert not encoder_params & {id(p) for p in prior.parameters()}, "the encoder belongs to the VAE, not to the prior"
    elif prior.context == "latent":
        assert torch.is_tensor(context)
        with pytest.raises(TypeError):
            prior()
    else:
        assert prior.context is None
    p = prior(context)
    assert isinstance(p, Distribution)
    assert p.batch_shape == () and p.event_shape == _prior_event(prior)
    torch.manual_seed(0)
    z = p.sample((7,))
    assert z.shape == (7, *_prior_event(prior))
    lp = p.log_prob(z)
    assert lp.shape == (7,) and torch.isfinite(lp).all()


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_prior_normalises_and_samples_match_log_prob(name):
    prior, context = PRIORS[name]()
    with torch.no_grad():
        p = prior(context)
        if isinstance(prior, UniformCategoricalPrior):
            v, k = prior.latent_dim, prior.num_classes
            states = torch.tensor(list(itertools.product(range(k), repeat=v)))  # (S, V)
            z = nn.functional.one_hot(states, k).float()  # (S, V, K)
            log_p = p.log_prob(z)
            torch.testing.assert_close(log_p, torch.full((k**v,), -v * math.log(k)))
            torch.manual_seed(0)
            draws = p.sample((20_000,)).argmax(-1)  # (n, V)
            idx = draws[:, 0] * k + draws[:, 1]
            freq = torch.bincount(idx, minlength=k**v).double() / 20_000
            assert (freq - 1 / k**v).abs().max() < 5 * math.sqrt((1 / 9) * (8 / 9) / 20_000)
            return
        axis = torch.linspace(-10, 10, 401)
        width = float(axis[1] - axis[0])
        grid = torch.cartesian_prod(axis, axis)  # (G, 2)
        dens = p.log_prob(grid).double().exp() * width**2
        assert float(dens.sum()) == pytest.approx(1.0, abs=3e-3)
        torch.manual_seed(1)
        x = p.sample((20_000,)).double()
    grid_mean = (dens[:, None] * grid.double()).sum(0)
    grid_sq = (dens[:, None] * grid.double() ** 2).sum(0)
    se = x.std(0) / math.sqrt(len(x))
    assert ((x.mean(0) - grid_mean).abs() <= 5 * se + 2e-3).all(), (x.mean(0), grid_mean)
    se_sq = (x**2).std(0) / math.sqrt(len(x))
    assert (((x**2).mean(0) - grid_sq).abs() <= 5 * se_sq + 5e-3).all(), ((x**2).mean(0), grid_sq)


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_gradients_reach_every_parameter_of_the_prior(name):
    prior, context = PRIORS[name]()
    params = dict(prior.named_parameters())
    if not params:
        assert name in ("standard", "uniform-categorical"), f"{name} prior has no parameters"
        return
    z = _randn(16, 2, seed=4).float()
    prior(context).log_prob(z).sum().backward()
    for pname, t in params.items():
        assert t.grad is not None and t.grad.abs().sum() > 0, f"{name}: no gradient reaches {pname}"


# =====================================================================================
# (c) objectives
# =====================================================================================


@dataclasses.dataclass
class ObjCase:
    """A tiny model on (1, 4, 4) images that ``cls`` trains. ``data``: "binary" (2 levels),
    "dequantized" ((k + u) / 4) or "integers" (k in 0..3). ``uses_beta``: the loss weights a KL
    term by beta. ``loss_is_negative_score``: in training mode at beta = 1 the loss is -score
    (otherwise it is a surrogate: a relaxation, a score-function or a wake-sleep loss)."""

    settings: dict
    cls: type
    data: str = "binary"
    uses_beta: bool = False
    loss_is_negative_score: bool = True


OBJECTIVES = {
    "elbo": ObjCase(dict(model="vae", hidden=[8], latent_dim=2), ELBO, uses_beta=True),
    "elbo-mog-prior": ObjCase(
        dict(model="vae", hidden=[8], latent_dim=2, prior="mog", prior_components=2), ELBO, uses_beta=True
    ),
    "iwae": ObjCase(dict(model="vae", hidden=[8], latent_dim=2, objective="iwae", iw_k=3), IWAE, uses_beta=True),
    "gumbel-softmax": ObjCase(
        dict(model="dvae", hidden=[8], latent_dim=2, latent_classes=3),
        GumbelSoftmaxELBO,
        uses_beta=True,
        loss_is_negative_score=False,
    ),
    "reinforce": ObjCase(
        dict(model="dvae", hidden=[8], latent_dim=2, latent_classes=3, objective="reinforce"),
        ReinforceELBO,
        uses_beta=True,
        loss_is_negative_score=False,
    ),
    "nvil": ObjCase(
        dict(model="dvae", hidden=[8], latent_dim=2, latent_classes=3, objective="nvil"),
        ReinforceELBO,
        uses_beta=True,
        loss_is_negative_score=False,
    ),
    "vimco": ObjCase(
        dict(model="dvae", hidden=[8], latent_dim=2, latent_classes=3, objective="vimco", iw_k=3),
        VIMCO,
        uses_beta=True,
        loss_is_negative_score=False,
    ),
    "wake-sleep": ObjCase(
        dict(model="helmholtz", layers=[3, 2], objective="wake-sleep"), WakeSleep, loss_is_negative_score=False
    ),
    "reweighted-wake-sleep": ObjCase(
        dict(model="helmholtz", layers=[3, 2], objective="rws", iw_k=3), ReweightedWakeSleep, loss_is_negative_score=False
    ),
    "vimco-helmholtz": ObjCase(
        dict(model="helmholtz", layers=[3, 2], objective="vimco", iw_k=3), VIMCOBound, loss_is_negative_score=False
    ),
    "max-likelihood-made": ObjCase(dict(model="arm", arm="made", made_hidden=[8]), MaximumLikelihood),
    "max-likelihood-flow": ObjCase(
        dict(model="flow", hidden=[8], flow_layers=1, flow_levels=1), MaximumLikelihood, "dequantized"
    ),
    "reconstruction": ObjCase(dict(model="ae", hidden=[8], latent_dim=2), Reconstruction),
    "hierarchical-elbo": ObjCase(dict(model="hvae", hidden=[8], latent_sizes=[1, 1]), HierarchicalELBO, uses_beta=True),
    "hierarchical-elbo-ladder": ObjCase(
        dict(model="hvae", hidden=[8], latent_sizes=[1, 1], posterior="ladder"), HierarchicalELBO, uses_beta=True
    ),
    "hierarchical-elbo-bottom-up": ObjCase(
        dict(model="hvae", hidden=[8], latent_sizes=[1, 1], posterior="bottom-up", prior="mog", prior_components=2),
        HierarchicalELBO,
        uses_beta=True,
    ),
    "beta-tcvae": ObjCase(
        dict(model="vae", hidden=[8], latent_dim=2, objective="tcvae", tc_weight=3.0),
        BetaTCVAE,
        uses_beta=True,
        loss_is_negative_score=False,
    ),
    "miwae": ObjCase(dict(model="vae", hidden=[8], latent_dim=2, objective="miwae", iw_k=3), MIWAE),
    "wae-mmd": ObjCase(
        dict(model="wae", hidden=[8], latent_dim=2), WAEObjective, uses_beta=True, loss_is_negative_score=False
    ),
    "vq-vae": ObjCase(
        dict(model="vqvae", codes=4, code_dim=2, vq_width=4, downsample=1, res_blocks=1),
        VQObjective,
        loss_is_negative_score=False,
    ),
    "m2": ObjCase(dict(model="m2", hidden=[8], latent_dim=2, classes=3), M2Objective),
    "sdgm": ObjCase(dict(model="adgm", skip=True, hidden=[8], latent_dim=1, aux_dim=1, classes=3), M2Objective),
    "hybrid": ObjCase(
        dict(model="hybrid", hidden=[8], flow_layers=1, flow_levels=1, classes=3),
        HybridObjective,
        "dequantized",
        loss_is_negative_score=False,
    ),
    "dequantization-bound": ObjCase(
        dict(model="flow", hidden=[8], flow_layers=1, flow_levels=1, dequantization="variational", dequantization_samples=2),
        DequantizationBound,
        "integers",
    ),
    "diffusion-bound": ObjCase(dict(model="diffusion", unet_channels=[4], attention=False), DiffusionBound, "integers"),
    "diffusion-bound-masked": ObjCase(dict(model="diffusion", process="masked", unet_channels=[4]), DiffusionBound),
}


def _some_labels(objective: Objective, x: torch.Tensor) -> dict:
    """For objectives that take labels: classes 0, 1, 2, ... with every other one hidden (-1)."""
    if not objective.takes_labels:
        return {}
    y = torch.arange(len(x)) % 3
    y[1::2] = -1
    return {"y": y}


def _objective_case(name: str, batch: int = 5):
    case = OBJECTIVES[name]
    cfg = RunConfig.of(**case.settings)
    levels = 2 if case.data == "binary" else 4
    model = build_model(cfg, (1, 4, 4), levels)
    _perturb(model, 0.05)  # flows start at the identity: no gradient reaches their earlier layers there
    g = _g(11)
    k = torch.randint(0, levels, (batch, 1, 4, 4), generator=g)
    if case.data == "binary":
        x = k.float()
    elif case.data == "dequantized":
        x = (k + torch.rand(k.shape, generator=g)) / levels
    else:
        x = k
    return case, cfg, model, build_objective(cfg), x


def test_every_objective_is_registered():
    covered = {type(build_objective(RunConfig.of(**c.settings))) for c in OBJECTIVES.values()}
    assert covered == {c.cls for c in OBJECTIVES.values()}, "an entry's settings build another objective than its cls"
    missing = {c.__name__ for c in _concrete(Objective)} - {c.__name__ for c in covered}
    assert not missing, f"objectives without an entry in OBJECTIVES: {missing}"


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objective_terms_score_and_gradients(name):
    case, cfg, model, objective, x = _objective_case(name)
    assert isinstance(objective, case.cls)
    labels = _some_labels(objective, x)
    assert objective.score in ("elbo", "iwae", "log_px", "bound", "recon", "objective")
    assert isinstance(objective.label, str) and objective.label
    model.train()
    torch.manual_seed(0)
    terms = objective(model, x, **labels)
    assert objective.score in terms._fields, f"{name}: score {objective.score!r} is not a field of {terms._fields}"
    assert terms._fields[0] == "loss"
    for field, value in terms._asdict().items():
        assert value.shape == (len(x),), f"{name}: {field} has shape {tuple(value.shape)}"
        assert torch.isfinite(value).all(), f"{name}: {field} is not finite"
    score = getattr(terms, objective.score)
    if case.loss_is_negative_score and not labels:
        torch.testing.assert_close(terms.loss, -score)
    terms.loss.mean().backward()
    # every parameter is trained by the loss: the decoder and prior through the reconstruction
    # and KL terms, the encoder through reparameterization, the relaxation or the score
    # function, the REINFORCE baseline through its least-squares term, a Helmholtz machine's
    # recognition network through the sleep (and reweighted wake) term
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}: the loss does not train {pname}"


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_beta_weights_the_loss_but_never_the_score(name):
    case, _, model, objective, x = _objective_case(name)
    model.train()
    out = {}
    for beta in (1.0, 0.3):
        torch.manual_seed(5)  # the same draws for both
        out[beta] = objective(model, x, beta)
    s1, s2 = (getattr(out[b], objective.score).detach() for b in (1.0, 0.3))
    torch.testing.assert_close(s1, s2, msg=f"{name}: the score must report beta = 1 whatever the loss uses")
    l1, l2 = out[1.0].loss.detach(), out[0.3].loss.detach()
    if case.uses_beta:
        assert not torch.allclose(l1, l2), f"{name}: beta does not change the loss"
    else:
        torch.testing.assert_close(l1, l2)


def test_wake_sleep_trains_recognition_only_through_the_sleep_phase():
    _, _, model, objective, x = _objective_case("wake-sleep")
    model.eval()  # no sleep phase outside training
    objective(model, x).loss.mean().backward()
    recognition = {id(p) for p in model.recognition_parameters()}
    for pname, p in model.named_parameters():
        if id(p) in recognition:
            assert p.grad is None or not p.grad.any(), f"the wake phase reaches recognition parameter {pname}"
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"the wake phase does not train {pname}"


def _exact_log_px(model, x: torch.Tensor) -> torch.Tensor | None:
    """log p(x) of the tiny models, by enumeration of discrete latents or a grid over 2-D
    Gaussian latents; None where it cannot be computed (a reconstruction objective, the
    integral over 16-D dequantization noise)."""
    if isinstance(model, ExactLikelihoodModel):
        return model.log_prob(x)
    if isinstance(model, SemiSupervisedVAE):  # log sum_y p(y) integral p(x, z|y) dz, on a grid over 2-D z (or z and a)
        axis = torch.linspace(-7, 7, 141)
        z = torch.cartesian_prod(axis, axis)  # (S, 2)
        per_class = []
        for c in range(model.num_classes):
            latent = torch.cat([nn.functional.one_hot(torch.full((len(z),), c), model.num_classes).float(), z], -1)
            log_px_z, log_prior = model.log_joint(x, latent.unsqueeze(1).expand(len(z), len(x), -1))
            per_class.append(torch.logsumexp(log_px_z + log_prior, 0))
        return torch.logsumexp(torch.stack(per_class), 0) + 2 * math.log(float(axis[1] - axis[0]))
    if not isinstance(model, LatentVariableModel):
        return None
    b = len(x)
    if isinstance(model, HelmholtzMachine):
        z = _states([2] * model.latent_dim).float()  # (S, M)
        cell = 0.0
    elif hasattr(getattr(model, "prior_module", None), "num_classes"):  # categorical latents, one-hot (V, K)
        v, k = model.prior_module.latent_dim, model.prior_module.num_classes
        z = nn.functional.one_hot(_states([k] * v).long(), k).float()  # (S, V, K)
        cell = 0.0
    else:
        assert model.latent_dim == 2
        axis = torch.linspace(-7, 7, 281)
        z = torch.cartesian_prod(axis, axis)
        cell = 2 * math.log(float(axis[1] - axis[0]))
    zz = z.unsqueeze(1).expand(len(z), b, *z.shape[1:])
    log_px_z, log_pz = model.log_joint(x, zz)
    return torch.logsumexp(log_px_z + log_pz, 0) + cell


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
@torch.no_grad()
def test_score_is_a_lower_bound_on_the_exact_log_likelihood(name):
    case, _, model, objective, x = _objective_case(name, batch=3)
    model.eval()
    exact = _exact_log_px(model, x)
    if exact is None:
        assert objective.score in ("recon", "bound")
        return
    torch.manual_seed(0)
    scores = torch.stack([getattr(objective(model, x), objective.score) for _ in range(300)]).double()  # (R, B)
    if objective.score == "log_px":
        torch.testing.assert_close(scores[0], exact.double())
        return
    mean, se = scores.mean(0), scores.std(0) / math.sqrt(len(scores))
    assert (mean <= exact.double() + 5 * se + 1e-4).all(), f"{name}: E[{objective.score}] {mean} above log p(x) {exact}"
    assert (mean > exact.double() - 30).all(), f"{name}: a bound {mean} implausibly far below log p(x) {exact}"


# =====================================================================================
# (d) families
# =====================================================================================

# name -> small settings (fast to fit); every registered family appears here
SMALL = {
    "vae": dict(hidden=[8], latent_dim=2),
    "dvae": dict(hidden=[8], latent_dim=2, latent_classes=3),
    "ae": dict(hidden=[8], latent_dim=2),
    "ppca": dict(latent_dim=2),
    "loglinear": dict(states=2, em_iterations=1),
    "helmholtz": dict(layers=[4, 2]),
    "flow": dict(hidden=[8], flow_layers=1, flow_levels=1),
    "arm": dict(arm="made", made_hidden=[8]),
    "hvae": dict(hidden=[8], latent_sizes=[2, 2]),
    "pixelvae": dict(hidden=[8], latent_sizes=[2, 2], pixelcnn_layers=2, pixelcnn_channels=4, cond_channels=1),
    "wae": dict(hidden=[8], latent_dim=2),
    "vqvae": dict(codes=4, code_dim=2, vq_width=4, downsample=1, res_blocks=1),
    "m2": dict(hidden=[8], latent_dim=2, labelled_batch=8),
    "adgm": dict(hidden=[8], latent_dim=2, aux_dim=2, labelled_batch=8, class_samples=4),
    "hybrid": dict(hidden=[8], flow_layers=1, flow_levels=1),
    "diffusion": dict(unet_channels=[4], attention=False, fourier=False),
}
DATASET = {"loglinear": "digits-4x4", "helmholtz": "digits-4x4"}  # the others: the 8x8 digits
FAMILY_INFRASTRUCTURE = {"__init__", "base", "registry", "parts"}


@pytest.fixture(scope="module")
def datasets():
    return {name: load_dataset(name) for name in ("digits", "digits-4x4")}


def test_every_family_is_registered_and_tested():
    modules = {p.stem for p in (SRC / "families").glob("*.py")} - FAMILY_INFRASTRUCTURE
    registered = {cls.__module__.rsplit(".", 1)[1] for cls in FAMILIES.values()}
    assert modules == registered, f"family modules {sorted(modules)} but registered families live in {sorted(registered)}"
    assert set(SMALL) == set(FAMILIES), "every family needs small settings in SMALL"
    assert set(DATASET) <= set(FAMILIES)


def _deterministic_score(model: GenerativeModel, x: torch.Tensor) -> torch.Tensor:
    """A per-datapoint number that depends on every part of the model and on no random draw:
    log p(x) where exact, log p(x | z) at the posterior's location for latent models, the
    flow's density at the bins' centres for a variationally dequantized flow."""
    with torch.no_grad():
        if model.estimate_kind == "exact":
            return model.log_prob(x)
        if model.estimate_kind == "bound" and hasattr(model, "flow"):
            return model.flow.log_prob((x.float() + 0.5) / model.num_levels)
        if model.estimate_kind == "time-sampled":  # a diffusion bound at fixed times and draws
            with torch.random.fork_rng():
                torch.manual_seed(0)
                terms = model.bound_terms(x, torch.linspace(0.05, 0.95, len(x)))
                return -(terms["prior"] + terms["recon"] + terms["diffusion"])
        if isinstance(model, EnumeratedELBO):  # no single posterior location: the bound with fixed draws
            with torch.random.fork_rng():
                torch.manual_seed(0)
                return model.elbo_terms(x)["elbo"]
        return model.likelihood(location(model.posterior(x))).log_prob(x)


def _data(family: FamilyConfig, dataset, split: str, n: int, seed: int = 0) -> tuple[torch.Tensor, "object"]:
    transform = family.transform(dataset)
    x = getattr(dataset, split).x[:n]
    return transform(x, _g(seed)), transform


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_declaration_and_defaults(name, datasets):
    cls = get_family(name)
    assert cls.name == name and isinstance(cls.summary, str) and cls.summary
    assert cls.fit in FIT_PATHS
    family = cls()
    check(family)  # every default passes its own type and range checks
    family.validate()
    for f in dataclasses.fields(cls):
        assert f.metadata.get("help"), f"{name}.{f.name} is not declared with setting(...): it has no help text"
    assert RunConfig.of(model=name).model == family
    assert isinstance(family.describe(), str) and family.describe()
    assert not family.needs_init_data
    dataset = datasets[DATASET.get(name, "digits")]
    x, transform = _data(family, dataset, "valid", 4)
    model = family.build(dataset.event_shape, dataset.num_levels)
    assert isinstance(model, GenerativeModel) and tuple(model.event_shape) == dataset.event_shape
    assert sum(p.numel() for p in model.parameters()) > 0
    # the declared capabilities agree with the model's interfaces
    kind = model.estimate_kind
    assert kind in ESTIMATE_KINDS
    if kind == "exact":
        assert isinstance(model, ExactLikelihoodModel)
    if kind in ("importance-sampled", "bound"):
        assert isinstance(model, VariationalModel)
    if model.has_latents and kind != "reconstruction":
        assert isinstance(model, LatentVariableModel)
    if kind == "time-sampled":
        assert isinstance(model, TimeSampledBound)
    assert (family.default_iw_samples > 0) == (kind in ("importance-sampled", "bound", "time-sampled"))
    # capabilities that the CLI and evaluation read instead of probing the model
    assert model.reconstructs == callable(getattr(model, "reconstruct", None))
    if model.reconstructs:
        assert model.reconstruct(x).shape == x.shape
    assert model.has_layers == all(callable(getattr(model, a, None)) for a in ("path", "top", "descend"))
    if isinstance(model, VariationalModel):
        assert model.point_mass_posterior == isinstance(model.posterior(x), Delta)
    assert family.point_mass_posterior == model.point_mass_posterior  # (the config refuses its iw_samples)
    if model.can_impute:
        holed = x.clone().float()
        holed.view(len(x), -1)[:, 0] = float("nan")
        assert torch.isfinite(location(model.posterior(holed))).all()  # the encoder reads a hole
        if model.exact_imputation:  # E[x_m | x_o] in closed form, the observed entries kept
            filled = model.conditional_mean(holed)
            assert (
                filled.shape == x.shape
                and torch.isfinite(filled).all()
                and torch.equal(filled[~holed.isnan()], holed[~holed.isnan()])
            )
    assert model.can_impute or not model.exact_imputation
    assert model.produces_codes == callable(getattr(model, "codes", None))
    # the family names the p(x|.) its --likelihood (or its one kind of model) scores by; binarizing reads it
    assert family.scored_likelihood() == getattr(family, "likelihood", getattr(family, "data_likelihood", None))
    added = model.evaluation_terms(x, None, estimate(model, x, 2).terms, 2)  # what it adds to its evaluation
    assert all(isinstance(t, Term) and t.values.shape == (len(x),) for t in added.values())
    assert isinstance(model, ClosedFormFit) == (cls.fit == "closed-form")
    assert isinstance(model, EMFit) == (cls.fit == "em")
    assert (family.iterations is not None) == (cls.fit == "em")
    if cls.fit == "gradient":
        objective = family.training_objective()
        assert isinstance(objective, Objective)
        assert objective.score in objective(model.train(), x)._fields
    else:
        with pytest.raises(ConfigError, match="not by a gradient objective"):
            family.training_objective()
    score = _deterministic_score(model.eval(), x)
    assert score.shape == (4,) and torch.isfinite(score).all()


@pytest.mark.parametrize(
    "args, words",
    [
        ((784, 2), "a sequence of sizes"),
        (((), 2), "positive integer sizes"),
        (((1, 0, 8), 2), "positive integer sizes"),
        (((1, 8.0, 8), 2), "positive integer sizes"),
        (((1, True, 8), 2), "positive integer sizes"),
        (((1, 8, 8), 1), "levels must be an integer >= 2"),
        (((1, 8, 8), 2.5), "levels must be an integer >= 2"),
        (((1, 8, 8), 2, torch.zeros(3, 1, 4, 4)), "initialisation data have events of shape (1, 4, 4)"),
        (((1, 8, 8), 2, None, -1), "seed must be an integer >= 0"),
    ],
)
def test_every_family_builds_through_one_checked_data_spec(args, words):
    """``FamilyConfig.build`` checks what it is given once, before any family reads it."""
    for name in ("vae", "ppca", "flow"):
        with pytest.raises(ConfigError, match=re.escape(words)):
            get_family(name)().build(*args)
    spec = DataSpec.of([np.int64(1), 8, 8], np.int64(2), None, np.int64(3))  # numpy integers are integers
    assert spec == DataSpec((1, 8, 8), 2, None, 3) and all(type(v) is int for v in (*spec.event_shape, spec.num_levels))
    assert DataSpec.of((1, 8, 8), 2, torch.zeros(3, 1, 8, 8)) == DataSpec.of((1, 8, 8), 2, torch.ones(5, 1, 8, 8))


def _changed(before: dict, model: nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_fits_one_step_and_evaluates_by_its_declared_kind(name, datasets):
    cfg = RunConfig.of(model=name, **SMALL[name])
    family = cfg.model
    dataset = datasets[DATASET.get(name, "digits")]
    model = build_model(cfg, dataset.event_shape, dataset.num_levels)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_train, transform = _data(family, dataset, "train", 128)
    if family.fit == "gradient":
        trainer = Trainer(
            model, build_objective(cfg), dataset.train.subset(torch.arange(128)), transform,
            valid=dataset.valid.subset(torch.arange(64)), epochs=1, batch_size=64, progress=False, device="cpu",
            parts=family.training_parts(),
        )  # fmt: skip
        (metrics,) = trainer.fit()
        score = trainer.score
        assert math.isfinite(metrics[f"train_{score}"]) and math.isfinite(metrics[f"valid_{score}"])
    elif family.fit == "closed-form":
        model.fit_closed_form(x_train)
        fitted = model.log_prob(x_train).mean().item()
        _perturb(model, 0.01)  # the maximum-likelihood fit beats any nearby parameters
        assert model.log_prob(x_train).mean().item() < fitted
        model.fit_closed_form(x_train)
    else:
        ll_before = model.em_step(x_train)
        with torch.no_grad():
            assert model.log_prob(x_train).mean().item() >= ll_before - 1e-5, "EM lowered the log-likelihood"
    assert _changed(before, model), f"{name}: the fit step left every parameter as it was"
    # evaluation reports the kind the model declares
    x, _ = _data(family, dataset, "test", 32, seed=VALID_SEED)
    # a model of integer data says which values its likelihood takes (data_support), and the
    # family's data are among them (evaluation and the Trainer refuse data that are not)
    support, integers = model.data_support, transform.kind in ("binary", "dynamic-binarize", "integers")
    assert support is not None or not integers, name
    if support is not None:
        assert bool(support.check(x).all()) and (not integers or not bool(support.check(x + 0.5).all())), name
    d = math.prod(dataset.event_shape)
    shift = d * transform.log_volume
    kind = model.estimate_kind
    for k in (10, 0):
        r = evaluate(model, x, iw_samples=k, log_volume=transform.log_volume)
        expected = "bound" if (k == 0 and kind == "importance-sampled") else kind
        assert r.estimate == expected and r.n == 32 and r.num_dims == d
        if kind == "reconstruction":
            assert r.nll is None and r.bpd is None and r.elbo is None
            assert r.recon == pytest.approx(_deterministic_score(model, x).double().mean().item() - shift, rel=1e-5)
            continue
        assert math.isfinite(r.nll) and r.bpd == pytest.approx(r.nll / (d * math.log(2)))
        if kind == "exact":
            assert r.nll == pytest.approx(-model.log_prob(x).double().mean().item() + shift, rel=1e-5)
        if r.recon is not None:
            assert r.elbo == pytest.approx(r.recon - r.kl, abs=1e-3)
        if kind == "exact" and r.elbo is not None:  # an exact posterior: the ELBO is log p(x)
            assert r.elbo == pytest.approx(-r.nll, rel=1e-5)
        if expected == "bound" and kind == "importance-sampled":
            assert r.nll == pytest.approx(-r.elbo, rel=1e-6)
    if kind != "reconstruction":  # the estimate draws at random exactly where the model says so (dgm score's note)
        seeds = [evaluate(model, x, iw_samples=10, log_volume=transform.log_volume, seed=s).nll for s in (0, 1)]
        assert (seeds[0] != seeds[1]) == (model.estimate_draws is not None), name


def _flags(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):  # a switch: --name or --no-name
            out.append(flag if value else "--no-" + key.replace("_", "-"))
            continue
        out += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return out


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_run_folder_loads_back_the_trained_model(name, tmp_path, monkeypatch, capsys):
    built = []

    def capture(*args, **kwargs):
        built.append(build_model(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(dgmkit.cli.train, "build_model", capture)
    out = tmp_path / name
    argv = [
        "train",
        "--model",
        name,
        "--dataset",
        DATASET.get(name, "digits"),
        *_flags(SMALL[name]),
        "--quiet",
        "--out",
        str(out),
    ]
    if get_family(name).fit == "gradient":
        argv += ["--epochs", "1", "--batch-size", "256"]
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    (trained,) = built  # the model the command fitted and saved
    run = load_run(out)
    assert (
        run.cfg.family == name
        and run.cfg.to_dict()
        == RunConfig.of(model=name, dataset=DATASET.get(name, "digits"), **SMALL[name])
        .replace(**({"epochs": 1, "batch_size": 256} if get_family(name).fit == "gradient" else {}))
        .to_dict()
    )
    assert run.model.estimate_kind == trained.estimate_kind
    saved, loaded = trained.state_dict(), run.model.state_dict()
    assert saved.keys() == loaded.keys()
    for key in saved:
        assert torch.equal(saved[key].cpu(), loaded[key]), f"{name}: {key} changed through the run folder"
    x, _ = split_data(run, "valid")
    x = x[:32]
    torch.testing.assert_close(
        _deterministic_score(run.model, x), _deterministic_score(trained.cpu().eval(), x), rtol=0, atol=0
    )


def test_discrete_latents_is_declared_where_the_prior_is_discrete():
    """A model with latents declares ``discrete_latents`` exactly where p(z) has a discrete
    support (one-hot categories, binary units): dgm traverse refuses to sweep such codes."""
    from dgmkit.config import RunConfig
    from dgmkit.config.run import build_model
    from dgmkit.errors import DgmError
    from family_variants import family_variants

    checked = set()
    for name, change in family_variants():
        try:
            model = build_model(RunConfig.of(model=name, **change), (1, 4, 4) if name == "loglinear" else (1, 8, 8), 2)
        except DgmError:  # a choice that needs other settings with it
            continue
        if not model.has_latents or not callable(getattr(model, "prior", None)):
            continue
        try:
            discrete = model.prior().support.is_discrete
        except NotImplementedError:  # a flow prior: a density over R^M
            discrete = False
        assert model.discrete_latents == discrete, (name, change)
        checked.add((name, discrete))
    assert {("dvae", True), ("helmholtz", True), ("loglinear", True), ("vae", False)} <= checked


def test_the_edge_layers_ask_the_model_s_declarations_not_probe_its_attributes():
    """cli/, config/ and evaluation/ read what a model declares on its contract (``decoded_name``,
    ``untaken_sample_note``, ``point_mass_posterior``, ...), never ``getattr``/``hasattr`` of a
    model (a family's config, ``run.cfg.model`` or a RunConfig's ``self.model``, is a settings
    object and may be read so): a probe was how a new family came to edit the edge (issue 33)."""
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "dgmkit"
    probes = []
    for layer in ("cli", "config", "evaluation"):
        for path in sorted((src / layer).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("getattr", "hasattr") and node.args:
                    target = ast.unparse(node.args[0])
                    settings = target.endswith("cfg.model") or layer == "config" and target == "self.model"  # (RunConfig's)
                    if (target == "model" or target.endswith(".model")) and not settings:
                        probes.append(f"{path.relative_to(src)}:{node.lineno}: {ast.unparse(node)}")
    assert not probes, probes
