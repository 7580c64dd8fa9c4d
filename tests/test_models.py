"""Every likelihood with every network kind: shapes, finite values, gradients, sampling."""

import inspect

import numpy as np
import pytest
import torch

from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import DataTransform
from dgmkit.errors import ConfigError
from dgmkit.evaluation import importance_sampled_log_likelihood
from dgmkit.models.base import CapabilityError

TRANSFORM = {"bernoulli": "binary", "gaussian": "dequantize", "categorical": "integers", "logistic": "integers"}


def batch(likelihood: str, shape, levels: int, n: int = 3) -> torch.Tensor:
    raw = torch.randint(0, levels, (n, *shape), dtype=torch.uint8)
    if likelihood == "bernoulli":
        raw = raw % 2
    return DataTransform(TRANSFORM[likelihood], levels)(raw, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "categorical", "logistic"])
@pytest.mark.parametrize("net", ["mlp", "conv"])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_model_forward_backward_sample(likelihood, net, shape):
    levels = 2 if likelihood == "bernoulli" else 17
    gaussian_variance = "predicted" if net == "conv" else "learned"
    cfg = RunConfig.of(
        likelihood=likelihood,
        encoder=net,
        hidden=[16],
        latent_dim=3,
        logistic_components=2,
        gaussian_variance=gaussian_variance,
    )
    model = build_model(cfg, shape, levels)
    x = batch(likelihood, shape, levels)
    terms = build_objective(cfg.replace(samples=2))(model, x)
    assert terms.elbo.shape == (3,) and torch.isfinite(terms.elbo).all()
    assert (terms.kl >= 0).all()
    if likelihood != "gaussian":
        assert (terms.log_px_z <= 0).all()  # a probability of discrete data
    terms.loss.mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    samples, means = model.sample(4)
    assert samples.shape == (4, *shape) and means.shape == (4, *shape)
    assert model.reconstruct(x).shape == x.shape
    ll = importance_sampled_log_likelihood(model, x, k=8)
    assert ll.shape == (3,) and torch.isfinite(ll).all()


def test_conv_needs_sizes_divisible_by_four():
    with pytest.raises(ConfigError, match="divisible by 4"):
        build_model(RunConfig.of(encoder="conv"), (1, 1, 10), 2)


def test_decoder_keeps_sample_dimensions():
    model = build_model(RunConfig.of(hidden=[8], latent_dim=2), (1, 8, 8), 2)
    px = model.likelihood(torch.zeros(5, 3, 2))
    assert px.batch_shape == (5, 3) and px.event_shape == (1, 8, 8)
    assert px.log_prob(torch.zeros(3, 1, 8, 8)).shape == (5, 3)


@pytest.mark.parametrize("posterior", ["gaussian", "iaf"])
@torch.no_grad()
def test_latent_scale_sets_the_encoders_scale_and_no_weight(posterior):
    """``latent_scale``: q(z|x)'s standard deviation (an IAF posterior's base) is softplus(raw) +
    1e-4 or exp(clamp(raw, -6, 2) / 2) of the encoder network's raw output, written out here by
    hand; the VampPrior's components (q(z|u_k)) follow; the weights drawn for a seed are the same
    under either setting."""
    import math

    import torch.nn.functional as F

    prior = "vampprior" if posterior == "gaussian" else "mog"  # the VampPrior needs a Gaussian q(z|x)

    def built(kind):
        cfg = RunConfig.of(
            hidden=[16], latent_dim=3, prior=prior, prior_components=4, posterior=posterior, latent_scale=kind
        )
        return build_model(cfg, (1, 4, 4), 2)

    soft, clipped = built("softplus"), built("clipped-log-variance")
    assert soft.state_dict().keys() == clipped.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(soft.state_dict().values(), clipped.state_dict().values()))
    x = (torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    by_hand = {"softplus": lambda r: F.softplus(r) + 1e-4, "clipped": lambda r: torch.exp(0.5 * r.clamp(-6, 2))}
    for p in clipped.parameters():
        p.mul_(30.0)  # raw outputs far outside [-6, 2]
    soft.load_state_dict(clipped.state_dict())
    for name, model in (("softplus", soft), ("clipped", clipped)):
        raw = model.encoder.net(x)[:, 3:6]
        q = model.encoder(x)
        base = q.base if posterior == "iaf" else q
        assert torch.allclose(base.stddev, by_hand[name](raw), rtol=1e-5, atol=0)
        if name == "clipped":
            assert base.stddev.min() >= math.exp(-3) - 1e-6 and base.stddev.max() <= math.exp(1) + 1e-6
            assert (raw.abs() > 6).any()  # the clip binds
        if prior == "vampprior":  # its components are q(z|u_k), bounded only by the clip
            components = model.prior().scale
            bounded = math.exp(-3) - 1e-6 <= components.min() and components.max() <= math.exp(1) + 1e-6
            assert bounded == (name == "clipped"), (name, components)


def test_the_vampprior_needs_a_gaussian_posterior():
    with pytest.raises(ConfigError, match="needs a Gaussian q"):
        build_model(RunConfig.of(hidden=[8], latent_dim=2, prior="vampprior", posterior="iaf"), (1, 4, 4), 2)


def test_models_built_by_hand_refuse_sizes_and_schedules_that_build_nothing_or_nan_by_name():
    """A DDPM schedule of 0 steps divided by zero and one of decreasing betas was built (a noise
    schedule that falls); a log-linear model of 0 states was math's "domain error"; a learned
    schedule of width 0, a dequantizer of one level, an autoregressive network of 0 channels, a
    MADE of 0 masks and a PPCA of NaN weights were built."""
    import math

    from dgmkit.conditional import BernoulliHead
    from dgmkit.models import MADEARM, PPCA, CausalConvARM, LogitNormalDequantizer, LogLinearLVM
    from dgmkit.models.noise_schedule import DDPMSchedule, LearnedSchedule

    for build, needle in (
        (lambda: DDPMSchedule(0), "steps must be an integer >= 1, got 0"),
        (lambda: DDPMSchedule(1000, 20.0, 0.1), "the betas need 0 < beta_min <= beta_max"),
        (lambda: LearnedSchedule(5.0, -13.3), "a noise schedule increases"),
        (lambda: LearnedSchedule(hidden=0), "hidden must be an integer >= 1, got 0"),
        (lambda: LogLinearLVM((1, 2, 2), 0), "num_states must be an integer >= 1, got 0"),
        (lambda: LogitNormalDequantizer(1, 1), "num_levels must be an integer >= 2, got 1"),
        (lambda: CausalConvARM(BernoulliHead(), (1, 4, 4), channels=0), "channels must be an integer >= 1, got 0"),
        (lambda: MADEARM(BernoulliHead(), (1, 2, 2), masks=0), "masks must be an integer >= 1, got 0"),
        (lambda: PPCA(torch.full((4, 2), math.nan), torch.zeros(4), 1.0), "W and mu must be finite"),
        (lambda: PPCA(torch.ones(4, 2), torch.zeros(4), math.inf), "sigma2 must be > 0 and finite"),
    ):
        with pytest.raises(ValueError) as e:
            build()
        assert needle in str(e.value)


def test_networks_built_by_hand_refuse_sizes_of_no_units_by_name():
    """A gated layer, a convolutional encoder's or decoder's hidden layer of width 0, a MADE of 0
    parameters a dimension and a ConvConditioner of 0 hidden channels were built (a warning at
    most); one stage's channels given for two were NumPy's "not enough values to unpack"."""
    from dgmkit.nn import MADE, ConvConditioner, ConvDecoderNet, ConvEncoderNet, GatedMLP

    for build, needle in (
        (lambda: GatedMLP(4, [0], 2), "GatedDense's out_features must be an integer >= 1, got 0"),
        (lambda: ConvEncoderNet((1, 8, 8), 4, channels=(8,)), "ConvEncoderNet takes the channels of its two stages"),
        (lambda: ConvEncoderNet((1, 8, 8), 4, hidden=0), "ConvEncoderNet's hidden must be an integer >= 1, got 0"),
        (lambda: ConvDecoderNet(4, (1, 8, 8), 1, channels=(8, 0)), "ConvDecoderNet's channels[1] must be an integer"),
        (lambda: MADE(4, [8], 0), "MADE's params_per_dim must be an integer >= 1, got 0"),
        (lambda: ConvConditioner(2, 4, hidden=0), "ConvConditioner's hidden must be an integer >= 1, got 0"),
    ):
        with pytest.raises(ValueError) as e:
            build()
        assert needle in str(e.value)


def test_a_models_sample_and_an_estimate_refuse_a_generator_that_is_no_torch_generator():
    """model.sample(n, 5) or generator=np.random.default_rng() failed in torch or with "'int'
    object has no attribute 'device'", by model; an exact estimate ignored it. Both refuse it by name."""
    import numpy as np

    from dgmkit.evaluation import estimate
    from dgmkit.models import PPCA, VAE

    ppca = PPCA(torch.randn(4, 2), torch.zeros(4), 1.0)
    vae = build_model(RunConfig.of(hidden=[8], latent_dim=2), (1, 2, 2), 2)
    for bad in (5, np.random.default_rng(0)):
        for model in (ppca, vae):
            name = type(model).__name__
            for args, kwargs in (((bad,), {}), ((), {"generator": bad})):  # (positional, or by keyword)
                with pytest.raises(TypeError, match=rf"^{name}\.sample's generator must be a torch\.Generator or None"):
                    model.sample(2, *args, **kwargs)
        with pytest.raises(TypeError, match=r"^generator must be a torch\.Generator or None"):
            estimate(ppca, torch.zeros(3, 4), generator=bad)  # (exact: it draws nothing)
    assert isinstance(vae, VAE) and vae.sample(2, torch.Generator().manual_seed(0))[0].shape == (2, 1, 2, 2)
    assert torch.equal(
        ppca.sample(2, generator=torch.Generator().manual_seed(1))[0], ppca.sample(2, torch.Generator().manual_seed(1))[0]
    )


def test_a_model_of_ones_own_whose_sample_takes_another_second_argument_is_given_it():
    """The check of sample's generator took the argument after n for it: a model of one's own
    with sample(n, temperature, generator=None) was refused 'sample's generator ... got 0.5' for
    model.sample(3, 0.5). The generator is found by its name, wherever it is given."""
    from dgmkit.models import GenerativeModel

    class Tempered(GenerativeModel):
        event_shape = (2,)

        def log_prob(self, x):
            return x.sum(-1)

        def sample(self, n, temperature=1.0, generator=None):
            return torch.randn(n, 2, generator=generator) * temperature, None

    class Wrapping(GenerativeModel):  # (passes its arguments on: the inner sample checks them)
        event_shape = (2,)

        def log_prob(self, x):
            return x.sum(-1)

        def sample(self, n, *args, **kwargs):
            return Tempered().sample(n, *args, **kwargs)

    for model in (Tempered(), Wrapping()):
        g = torch.Generator().manual_seed(0)
        assert torch.equal(model.sample(3, 0.5, g)[0], torch.randn(3, 2, generator=torch.Generator().manual_seed(0)) * 0.5)
        assert model.sample(3, 0.5)[0].shape == (3, 2)
        for args, kwargs in (((0.5, 5), {}), ((0.5,), {"generator": 5}), ((), {"generator": 5})):
            with pytest.raises(TypeError, match=r"^Tempered\.sample's generator must be a torch\.Generator or None"):
                model.sample(3, *args, **kwargs)


def test_a_models_sample_refuses_a_count_that_is_not_a_whole_number():
    """n is checked before any draw, in words that name it, by every model that defines sample."""
    import numpy as np

    from dgmkit.models import PPCA, GenerativeModel

    model = PPCA(torch.randn(4, 2), torch.zeros(4), 1.0)
    for bad in (2.5, -1, True, "3", torch.tensor(3)):
        with pytest.raises(
            ValueError, match=r"PPCA.sample's n \(how many to draw\) must be an integer in 0\.\.1099511627776"
        ):
            model.sample(bad)
    with pytest.raises(ValueError, match=r"must be an integer in 0\.\.1099511627776, got 10{30}$"):
        model.sample(10**30)  # (torch's TypeError, "Overflow when unpacking long long", from deep inside)
    assert model.sample(np.int64(2))[0].shape == (2, 4) and model.sample(0)[0].shape == (0, 4)

    def every(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from every(sub)

    own = [cls for cls in every(GenerativeModel) if "sample" in cls.__dict__]
    assert len(own) > 10 and all(getattr(cls.__dict__["sample"], "_counts_checked", False) for cls in own)


_SAMPLED = [(name, {}) for name in sorted(__import__("dgmkit.families", fromlist=["FAMILIES"]).FAMILIES)] + [
    ("arm", dict(arm="made", made_masks=2)),  # (the models of their own sample)
    ("diffusion", dict(process="masked")),
    ("flow", dict(dequantization="variational")),
    ("hvae", dict(posterior="residual", res_resolutions=[2, 4])),
]


@pytest.mark.parametrize("double", [False, True])
@pytest.mark.parametrize("name, settings", _SAMPLED)
def test_every_family_draws_no_samples_as_empty_outputs_leaving_the_random_streams_as_they_were(name, settings, double):
    """sample(0) gives each output with none of its rows (one draw's shape and type otherwise),
    where several of torch's distributions refuse to draw none (the discrete and VQ-VAEs) or to
    reshape none (the hierarchical and pixel VAEs' priors, diffusion), and draws nothing. Nor does
    it run the network: it made one draw and cut it (a diffusion model's whole chain, an
    autoregressive model's pixel loop); no module's forward runs now."""
    model = build_model(RunConfig.of(model=name, **settings), (1, 4, 4), 2).eval()
    model = model.double() if double else model
    if name == "ae":  # (no distribution: a plain autoencoder)
        with pytest.raises(CapabilityError, match="defines no distribution to sample from"):
            model.sample(0)
        return
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(7)
    some = model.sample(2)
    after_global, g_state = torch.random.get_rng_state(), g.get_state()
    calls = []
    hooks = [m.register_forward_pre_hook(lambda m, args: calls.append(type(m).__name__)) for m in model.modules()]
    none = model.sample(0, generator=g) if "generator" in inspect.signature(model.sample).parameters else model.sample(0)
    for hook in hooks:
        hook.remove()
    assert calls == []
    assert isinstance(none, tuple) and len(none) == len(some)
    for a, b in zip(none, some, strict=True):
        assert a.shape == (0, *b.shape[1:]) and a.dtype == b.dtype
    assert torch.equal(torch.random.get_rng_state(), after_global) and torch.equal(g.get_state(), g_state)


def test_no_samples_still_checks_the_options_and_a_sample_of_ones_own_is_drawn_once_and_cut():
    """sample(0, steps=...) of a diffusion model and sample(0, temperature=...) of a flow refuse
    what sample(2, ...) refuses; a subclass whose own sample returns something else does not
    inherit the promise of its base's sample_kind (its sample(0) is one draw, cut)."""
    from dgmkit.models import VAE

    diffusion = build_model(RunConfig.of(model="diffusion"), (1, 4, 4), 2)
    with pytest.raises(ValueError, match=r"sampling steps must be an integer in 1\.\.100000"):
        diffusion.sample(0, steps=10**30)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        build_model(RunConfig.of(model="flow"), (1, 4, 4), 2).sample(0, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0, got inf"):
        build_model(RunConfig.of(model="flow"), (1, 4, 4), 2).sample(2, None, float("inf"))  # (by position)
    arm = build_model(RunConfig.of(model="arm"), (1, 4, 4), 2)
    for n in (0, 2):  # (cached="no" was true: the cached path ran)
        with pytest.raises(ValueError, match="^cached must be True or False, got 'no'$"):
            arm.sample(n, cached="no")
    steps = diffusion.sample(2, torch.Generator().manual_seed(0), steps=np.int64(3))[0]  # (a NumPy count, made an int)
    assert torch.equal(steps, diffusion.sample(2, torch.Generator().manual_seed(0), steps=3)[0])

    class Labelled(VAE):
        def sample(self, n, generator=None):
            x, mean = super().sample(n, generator)
            return x, mean, torch.zeros(n, dtype=torch.long)

    vae = build_model(RunConfig.of(model="vae"), (1, 4, 4), 2)
    vae.__class__ = Labelled
    assert Labelled.sample_kind is None and VAE.sample_kind == "float"
    x, mean, y = vae.sample(0)
    assert x.shape == (0, 1, 4, 4) and y.shape == (0,) and y.dtype == torch.long


def test_a_model_of_ones_own_draws_no_samples_whatever_its_sample_returns():
    """sample(0) cut every output of one draw to none of its rows: a model of one's own whose
    sample returns (x, None) (as this file's Tempered does), a NamedTuple or a dict met
    "'NoneType' object is not subscriptable", a plain tuple or "unhashable type: 'slice'",
    where its own sample(0) had given them. Tensors are cut; the rest kept, of its type."""
    from typing import NamedTuple

    from dgmkit.models import GenerativeModel

    class Drawn(NamedTuple):
        x: torch.Tensor
        mean: torch.Tensor

    class Own(GenerativeModel):
        event_shape = (2,)

        def __init__(self, kind):
            super().__init__()
            self.kind = kind

        def log_prob(self, x):
            return x.sum(-1)

        def sample(self, n, generator=None):
            x = torch.randn(n, 2, generator=generator)
            return {"none": (x, None), "named": Drawn(x, x + 1), "dict": {"x": x, "n": n}, "list": [x, x]}[self.kind]

    none, named, as_dict, as_list = (Own(k).sample(0) for k in ("none", "named", "dict", "list"))
    assert none[0].shape == (0, 2) and none[1] is None
    assert isinstance(named, Drawn) and named.mean.shape == (0, 2)
    assert as_dict["x"].shape == (0, 2) and isinstance(as_list, list) and as_list[1].shape == (0, 2)


@pytest.mark.parametrize("family", ["vae", "hvae", "pixelvae", "dvae", "wae", "vqvae", "m2", "adgm", "helmholtz", "ppca"])
def test_every_posterior_refuses_data_that_are_no_batch_of_its_datapoints_in_one_way(family):
    """q(z|x) of a NumPy array met "'numpy.ndarray' object has no attribute 'to'" (the WAE, the
    VQ-VAE, the Helmholtz machine), "order must be str" (M2, the ADGM), or was taken (the
    hierarchical and pixel VAEs: a lazy posterior that failed later); a lone datapoint of an image
    model was read as a batch of one of another shape. Each is refused by one check, in one set of words."""
    from dgmkit.data import load_dataset

    digits = load_dataset("digits")
    cfg = RunConfig.of(model=family)
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    x = cfg.model.transform(digits)(digits.test.x[:3])
    with pytest.raises(TypeError, match=r"takes the data as a torch tensor \(B, 1, 8, 8\), got ndarray"):
        model.posterior(x.numpy())
    with pytest.raises(ValueError, match=r"given data of shape \(3, 64\); the model's datapoints are of shape \(1, 8, 8\)"):
        model.posterior(x.flatten(1))
    with pytest.raises(ValueError, match=r": a batch is \(B, 1, 8, 8\) \(one datapoint is a batch of one"):
        model.posterior(x[0])
    assert model.posterior(x).batch_shape == (3,)
