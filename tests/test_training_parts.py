"""The Trainer's parts: each optional feature attaches itself; bad values and bad combinations
are refused where the part is made or attached, and a new feature needs no new keyword."""

import math
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dgmkit.config import RunConfig, build_model, build_objective, trainer_options
from dgmkit.data import load_dataset, make_transform
from dgmkit.errors import ConfigError
from dgmkit.objectives import ELBO
from dgmkit.training import (
    ChannelsLast,
    KLWarmup,
    LabelledRows,
    MovingAverage,
    Mutation,
    NormalisedGradients,
    Precision,
    StepGuard,
    TimeBudget,
    Trainer,
    TrainingPart,
)

CFG = RunConfig.of(dataset="digits", hidden=[8], latent_dim=2, batch_size=256, epochs=1, seed=0, device="cpu")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _trainer(digits, parts=(), **kw) -> Trainer:
    torch.manual_seed(0)
    model = build_model(CFG, digits.event_shape, digits.num_levels)
    transform = make_transform("bernoulli", digits)
    return Trainer(model, build_objective(CFG), digits.train, transform, progress=False, device="cpu", parts=parts, **kw)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: KLWarmup(beta=-0.1), "beta"),
        (lambda: KLWarmup(beta=math.nan), "beta"),
        (lambda: KLWarmup(epochs=math.inf), "warm-up"),
        (lambda: StepGuard(clip=0.0), "clip"),
        (lambda: StepGuard(skip_factor=1.0), "skip_factor"),
        (lambda: StepGuard(clip=True), "clip"),
        (lambda: StepGuard(skip_norm="5"), "skip_norm"),
        (lambda: Precision("bogus"), "unknown precision"),
        (lambda: MovingAverage(1.0), "decay"),
        (lambda: MovingAverage(0.0), "decay"),
        (lambda: MovingAverage(True), "decay"),
        (lambda: Mutation(1.5), "mutation rate"),
        (lambda: LabelledRows(-1), "labelled rows"),
        (lambda: LabelledRows(2.5), "labelled rows"),
        (lambda: LabelledRows(np.bool_(True)), "labelled rows of a batch must be an integer >= 0, got np.True_"),
        (lambda: MovingAverage(np.float64("nan")), "decay must be a finite number > 0.0, got np.float64"),
        (lambda: TimeBudget(0.0), "time budget"),
        (lambda: NormalisedGradients(0.0), "normalisation"),
        (lambda: NormalisedGradients(math.nan), "normalisation"),
        (lambda: TimeBudget(math.inf), "time budget"),
    ],
)
def test_a_part_refuses_a_bad_value_where_it_is_made(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_numpy_count_of_labelled_rows_is_kept_as_an_int():
    rows = LabelledRows(np.int64(3)).rows
    assert rows == 3 and type(rows) is int


def test_parts_are_checked_as_the_trainer_attaches_them(digits):
    with pytest.raises(TypeError, match="TrainingPart"):
        _trainer(digits, parts=[{"ema": 0.9}])
    with pytest.raises(TypeError, match="clock"):
        TimeBudget(5.0, clock="x")
    with pytest.raises(ConfigError, match="takes no labels"):  # the VAE's ELBO has no use for labelled rows
        _trainer(digits, parts=[LabelledRows(8)])
    assert _trainer(digits, parts=[LabelledRows(0)]).batches.labelled_batch == 0  # none: nothing to refuse


def test_a_later_part_of_a_kind_replaces_an_earlier_one(digits):
    """As a later keyword would: the config's parts, then an override."""

    class Slower(MovingAverage):  # a subclass is a moving average too
        pass

    t = _trainer(digits, parts=[MovingAverage(0.9), StepGuard(clip=1.0), Slower(0.999), Precision("fp32")])
    assert t.ema is not None and t.ema.decay == 0.999 and len(t.step_hooks) == 1 and t.guard.clip == 1.0


def test_numpy_numbers_are_numbers():
    assert MovingAverage(np.float32(0.5)).decay == 0.5 and LabelledRows(np.int64(3)).rows == 3
    assert TimeBudget(np.float32(2.0)).seconds == 2.0 and KLWarmup(np.float64(0.5), np.int64(2)).epochs == 2
    with pytest.raises(ValueError, match="labelled rows"):
        LabelledRows(np.bool_(True))


def test_without_parts_a_trainer_has_none_of_the_features(digits):
    t = _trainer(digits)
    assert (t.beta, t.warmup_epochs, t.ema, t.budget, t.step_hooks) == (1.0, 0.0, None, None, [])
    assert t.precision == "fp32" and t.scaler is None and not t.guard.skips
    assert t.batches.mutation_rate == 0.0 and t.batches.labelled_batch == 0


def test_each_part_puts_in_its_piece(digits):
    budget = TimeBudget(60.0)
    t = _trainer(digits, parts=[KLWarmup(0.5, 2.0), StepGuard(clip=5.0, skip_norm=1e6), MovingAverage(0.9), budget])
    assert (t.beta, t.warmup_epochs) == (0.5, 2.0)
    assert t.guard.clip == 5.0 and t.guard.skip_norm == 1e6 and t.guard.skips
    assert t.ema is not None and t.ema.decay == 0.9 and len(t.step_hooks) == 1
    assert t.budget is budget


def test_a_new_feature_is_a_new_part(digits):
    """A part written outside dgmkit that counts the updates taken, through the hook after each
    step: the Trainer needs no keyword for it."""

    @dataclass
    class CountSteps(TrainingPart):
        taken: int = 0

        def attach(self, trainer: Trainer) -> None:
            trainer.step_hooks.append(self.count)

        def count(self, taken) -> None:
            self.taken += int(taken)

    counter = CountSteps()
    t = _trainer(digits, parts=[counter, StepGuard(skip_norm=1e9)], epochs=2)
    t.fit()
    assert counter.taken == t.step == 2 * t.steps_per_epoch > 0


CONV_MODELS = {  # small conv models of the families that have them, on the 8x8 digits
    "conv VAE": dict(model="vae", encoder="conv", decoder="conv", hidden=[8], latent_dim=2),
    "gated PixelCNN": dict(model="arm", likelihood="categorical", channels=4, arm_layers=2),
    "PixelVAE": dict(model="pixelvae", hidden=[8], latent_sizes=[2, 2], pixelcnn_layers=2, pixelcnn_channels=4),
    "residual HVAE": dict(
        model="hvae",
        posterior="residual",
        res_resolutions=[4, 8],
        res_layers=[1, 1],
        res_width=4,
        res_bottleneck=2,
        res_latent_channels=1,
    ),  # fmt: skip
    "Glow": dict(model="flow", flow="glow", hidden=[8], flow_layers=1, flow_levels=1),
    "VQ-VAE": dict(model="vqvae", codes=4, code_dim=2, vq_width=4, downsample=1, res_blocks=1),
    "diffusion U-Net": dict(model="diffusion", unet_channels=[4], attention=False, fourier=False),
}


@pytest.mark.parametrize("name", sorted(CONV_MODELS))
def test_channels_last_trains_every_conv_family_to_the_same_numbers(name, digits, tmp_path):
    """ChannelsLast changes the memory layout, not the model: the convolution weights are
    channels-last, a run trains to the eager run's numbers up to rounding, and its checkpoint
    resumes (into a model of either layout)."""
    cfg = RunConfig.of(dataset="digits", batch_size=64, epochs=2, seed=0, device="cpu", **CONV_MODELS[name])
    train = digits.train.subset(torch.arange(256))
    runs = {}
    for layout, parts in (("plain", []), ("channels-last", [ChannelsLast()])):
        torch.manual_seed(0)
        model = build_model(cfg, digits.event_shape, digits.num_levels)
        t = Trainer(
            model, build_objective(cfg), train, cfg.model.transform(digits), epochs=1, batch_size=64, seed=0,
            device="cpu", progress=False, run_dir=tmp_path / layout, parts=[*cfg.model.training_parts(), *parts],
        )  # fmt: skip
        runs[layout] = (t, t.fit()[0])
    t, cl = runs["channels-last"]
    plain = runs["plain"][1]
    four_d = [p for p in t.model.parameters() if p.dim() == 4]
    assert four_d and all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d)
    assert cl["train_loss"] == pytest.approx(plain["train_loss"], rel=1e-4, abs=1e-4)
    for layout in runs:  # each run's checkpoint goes on in the other layout
        other = [] if layout == "channels-last" else [ChannelsLast()]
        torch.manual_seed(1)
        more = Trainer(
            build_model(cfg, digits.event_shape, digits.num_levels), build_objective(cfg), train,
            cfg.model.transform(digits), epochs=2, batch_size=64, seed=0, device="cpu", progress=False,
            run_dir=tmp_path / layout, parts=[*cfg.model.training_parts(), *other],
        )  # fmt: skip
        more.resume()
        (m,) = more.fit()
        assert m["epoch"] == 2 and math.isfinite(m["train_loss"])


def test_channels_last_is_refused_in_data_parallel_training():
    """DDP is built around the model's layout before the parts attach: refused, with the reason."""
    under_ddp = SimpleNamespace(parallel=object(), model=torch.nn.Conv2d(1, 2, 3), forward=None)
    with pytest.raises(ConfigError, match="data-parallel"):
        ChannelsLast().attach(under_ddp)
    assert under_ddp.model.weight.is_contiguous()  # nothing was changed


def test_channels_last_hands_the_forward_pass_nhwc_images(digits):
    """Batches of images reach the forward pass in channels-last memory; other batches as they are."""
    seen = []

    class Record(TrainingPart):  # attached first: ChannelsLast wraps it
        def attach(self, trainer: Trainer) -> None:
            trainer.forward = lambda x, beta, *a: seen.append(x)

    t = _trainer(digits, parts=[Record(), ChannelsLast()])
    t.forward(torch.zeros(2, 3, 4, 4), 1.0)
    t.forward(torch.zeros(2, 5), 1.0)
    assert seen[0].is_contiguous(memory_format=torch.channels_last) and not seen[0].is_contiguous()
    assert seen[1].shape == (2, 5) and seen[1].is_contiguous()


# ---------------------------------------------------------------- gradient normalisation
def _adam_normgrad_reference(params, grads_per_step, lr, betas=(0.9, 0.999), eps=1e-8, norm_eps=1e-7):
    """Tomczak & Welling's AdamNormGrad, written out: each tensor's gradient divided by its norm
    (+ 1e-7), then Adam's moments and bias-corrected step."""
    params = [p.detach().clone() for p in params]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for t, grads in enumerate(grads_per_step, 1):
        for i, g in enumerate(grads):
            g = g / (g.norm() + norm_eps)
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            step = lr * math.sqrt(1 - betas[1] ** t) / (1 - betas[0] ** t)
            params[i] = params[i] - step * m[i] / (v[i].sqrt() + eps)
    return params


@pytest.mark.parametrize("fused", [False, True])
def test_normalised_gradients_make_adam_the_reference_adam_normgrad(fused):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    start = [p.detach().clone() for p in net.parameters()]
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01, fused=fused)
    NormalisedGradients().attach(SimpleNamespace(optimizer=optimizer))
    seen = []
    for step in range(6):
        x = torch.randn(16, 5)
        loss = (net(x) ** 2).sum() * 10.0 ** (3 * (step % 3) - 3)  # gradients of very different sizes
        optimizer.zero_grad()
        loss.backward()
        seen.append([p.grad.detach().clone() for p in net.parameters()])
        optimizer.step()
    expected = _adam_normgrad_reference(start, seen, lr=0.01)
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-5, atol=1e-6)


class _StepScaledELBO(ELBO):
    """The ELBO whose loss is 1000 times larger at every odd step: plain Adam weighs those steps
    more, Adam on normalised gradients does not see the difference."""

    scale = 1.0

    def update(self, step: int) -> None:
        self.scale = 1000.0 if step % 2 else 1.0

    def __call__(self, model, x, beta=1.0):
        terms = super().__call__(model, x, beta)
        return terms._replace(loss=terms.loss * self.scale)


def test_a_trainer_with_normalised_gradients_does_not_see_the_size_of_a_step(digits):
    def weights(objective, parts):
        torch.manual_seed(0)
        model = build_model(CFG, digits.event_shape, digits.num_levels)
        transform = make_transform("bernoulli", digits)
        t = Trainer(model, objective, digits.train, transform, progress=False, device="cpu", parts=parts, epochs=2)
        t.fit()
        assert t.step == 2 * t.steps_per_epoch >= 8
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    normalised = weights(ELBO(), [NormalisedGradients()])
    torch.testing.assert_close(weights(_StepScaledELBO(), [NormalisedGradients()]), normalised, rtol=1e-4, atol=1e-5)
    plain = weights(ELBO(), [])
    assert (weights(_StepScaledELBO(), []) - plain).abs().max() > 1e-3  # plain Adam does
    assert (plain - normalised).abs().max() > 1e-3


def test_the_config_setting_adds_the_part():
    on = trainer_options(RunConfig.of(dataset="digits", normalise_gradients=True))["parts"]
    off = trainer_options(RunConfig.of(dataset="digits"))["parts"]
    assert NormalisedGradients() in on and not any(isinstance(p, NormalisedGradients) for p in off)


def test_a_step_skipped_on_the_device_stays_skipped_with_normalised_gradients():
    """The step guard's decision as a tensor (as on a GPU) with fused Adam: a skipped step with a
    non-finite gradient (normalised to NaN by the hook) changes neither the weights nor Adam's
    moments; the next step taken moves them."""
    from dgmkit.training.precision import MixedPrecision

    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01, fused=True)
    NormalisedGradients().attach(SimpleNamespace(optimizer=optimizer))
    amp = MixedPrecision("fp32", torch.device("cpu"))

    def step(loss_scale: float, take: bool) -> None:
        optimizer.zero_grad()
        (net(torch.randn(8, 4)).sum() * loss_scale).backward()
        amp.step(optimizer, torch.tensor(take))

    step(1.0, True)
    before = [p.detach().clone() for p in net.parameters()]
    moments = [s["exp_avg"].clone() for s in optimizer.state.values()]
    step(math.inf, False)
    assert all(torch.equal(p, b) for p, b in zip(net.parameters(), before))
    assert all(torch.equal(s["exp_avg"], m) for s, m in zip(optimizer.state.values(), moments))
    step(1.0, True)
    assert all(torch.isfinite(p).all() and not torch.equal(p, b) for p, b in zip(net.parameters(), before))
