"""Targeted tests that pin user-visible formulas: LR schedules, the active-units threshold,
and gradient clipping in the trainer."""

import math

import pytest
import torch
from torch import nn

from dgmkit.conditional import BernoulliHead, Decoder, GaussianEncoder
from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import Split, load_dataset, make_transform
from dgmkit.evaluation import active_units, posterior_statistics
from dgmkit.models import VAE
from dgmkit.priors import StandardNormalPrior
from dgmkit.training import Trainer, lr_factor


@pytest.mark.parametrize("epochs", [1, 4, 10])
def test_cosine_lr_factor_is_half_one_plus_cos(epochs):
    for epoch in range(epochs + 1):
        expected = 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
        assert lr_factor("cosine", epoch, epochs) == pytest.approx(expected, abs=1e-12)
    assert lr_factor("cosine", 0, epochs) == pytest.approx(1.0)
    assert lr_factor("cosine", epochs, epochs) == pytest.approx(0.0, abs=1e-12)


def test_exponential_lr_factor_is_gamma_to_the_epoch_with_default_gamma_0_99():
    for epoch in (0, 1, 2, 5, 50):
        assert lr_factor("exponential", epoch, 100) == pytest.approx(0.99**epoch, rel=1e-12)
        assert lr_factor("exponential", epoch, 100, gamma=0.5) == pytest.approx(0.5**epoch, rel=1e-12)
    assert lr_factor("constant", 7, 10) == 1.0


def _fixed_mean_vae(scales):
    """A VAE whose posterior mean in unit u is scales[u] * s(x) with s(x) = +-1 (half each),
    so the unbiased sample variance of the posterior means is exactly scales[u]^2 * n / (n - 1)."""
    m = len(scales)
    a = torch.tensor(scales, dtype=torch.float32)

    class Enc(nn.Module):
        def forward(self, x):
            s = x.flatten(1)[:, :1] * 2 - 1  # +-1 from the first pixel
            out = torch.zeros(x.shape[0], 2 * m)
            out[:, :m] = s * a
            out[:, m:] = math.log(math.expm1(1.0))  # unit scale
            return out

    return VAE(
        GaussianEncoder(Enc(), m, min_scale=0.0),
        Decoder(nn.Linear(m, 4), BernoulliHead(), (1, 2, 2)),
        StandardNormalPrior(m),
    )


def test_active_units_default_threshold_is_0_01():
    n = 200
    x = torch.zeros(n, 1, 2, 2)
    x[: n // 2, 0, 0, 0] = 1.0
    # posterior-mean variances 0.0 (collapsed), ~0.0081 and ~0.0121 (just below / just above
    # the default 0.01), ~0.040 and ~0.25: three active at 0.01, one at 0.1
    scales = [0.0, 0.09, 0.11, 0.2, 0.5]
    model = _fixed_mean_vae(scales)
    stats = posterior_statistics(model, x)
    var = torch.tensor(stats["posterior_mean_variance"])
    expected = torch.tensor(scales) ** 2 * n / (n - 1)
    torch.testing.assert_close(var, expected, atol=1e-6, rtol=1e-5)
    assert stats["active_units"] == 3  # 0.0121, 0.04, 0.25 exceed 0.01
    assert active_units(model, x) == 3
    assert active_units(model, x, threshold=0.1) == 1
    assert posterior_statistics(model, x, threshold=0.001)["active_units"] == 4


def test_trainer_clips_the_gradient_norm_seen_by_the_optimizer():
    clip = 0.5
    digits = load_dataset("digits")
    cfg = RunConfig.of(dataset="digits", hidden=[16], latent_dim=2, batch_size=256, epochs=1, seed=0, device="cpu")
    torch.manual_seed(0)
    model = build_model(cfg, digits.event_shape, digits.num_levels)
    base = build_objective(cfg)

    class Huge(type(base)):  # a loss scaled so that every raw gradient norm is far above ``clip``
        def __call__(self, model, x, beta=1.0):
            terms = base(model, x, beta)
            return terms._replace(loss=terms.loss * 1e4)

    trainer = Trainer(
        model,
        Huge(),
        Split(digits.train.x[:512]),  # two steps of 256 suffice
        make_transform("bernoulli", digits),
        epochs=1,
        batch_size=256,
        grad_clip=clip,
        device="cpu",
        seed=0,
        progress=False,
    )
    norms = []

    def record(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    trainer.optimizer.register_step_pre_hook(record)
    trainer.fit()
    assert norms, "the optimizer never stepped"
    assert max(norms) <= clip * (1 + 1e-4)
    assert min(norms) == pytest.approx(clip, rel=1e-3)  # the huge raw gradients were clipped to exactly c
