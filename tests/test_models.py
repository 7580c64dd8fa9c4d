"""Every likelihood with every network kind: shapes, finite values, gradients, sampling."""

import pytest
import torch

from dgmkit.config import RunConfig, build_model, build_objective
from dgmkit.data import DataTransform
from dgmkit.errors import ConfigError
from dgmkit.evaluation import importance_sampled_log_likelihood

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
