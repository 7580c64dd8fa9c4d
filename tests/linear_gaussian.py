"""A VAE whose exact log p(x) and exact posterior are known: the linear Gaussian model
p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I), so p(x) = N(b, W W^T + s^2 I) (probabilistic PCA)."""

import math

import torch
from torch import nn
from torch.distributions import MultivariateNormal

from dgmkit.conditional import Decoder, GaussianEncoder, GaussianHead
from dgmkit.models import VAE
from dgmkit.nn import MLP
from dgmkit.priors import StandardNormalPrior

D, M, SIGMA = 4, 2, 0.5


def make(seed: int = 0, exact_posterior: bool = True, perturb: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    q_mat, _ = torch.linalg.qr(torch.randn(D, M, generator=g, dtype=torch.float64))
    W = q_mat * torch.tensor([2.0, 0.7], dtype=torch.float64)  # orthogonal columns: diagonal posterior
    b = torch.randn(D, generator=g, dtype=torch.float64)
    dec_net = MLP(M, [], D)
    enc_net = nn.Sequential(nn.Flatten(), nn.Linear(D, 2 * M))
    model = VAE(
        GaussianEncoder(enc_net, M), Decoder(dec_net, GaussianHead("fixed", scale=SIGMA), (1, 1, D)), StandardNormalPrior(M)
    ).double()
    cov_post = torch.linalg.inv(torch.eye(M, dtype=torch.float64) + W.T @ W / SIGMA**2)
    assert torch.allclose(cov_post, torch.diag(torch.diagonal(cov_post)))
    A = cov_post @ W.T / SIGMA**2  # posterior mean = A (x - b)
    std = torch.diagonal(cov_post).sqrt()
    with torch.no_grad():
        dec_net[0].weight.copy_(W)
        dec_net[0].bias.copy_(b)
        lin = enc_net[1]
        lin.weight.zero_()
        lin.weight[:M] = A
        lin.bias[:M] = -A @ b
        lin.bias[M:] = torch.log(torch.expm1(std - model.encoder.scale_map.min_scale))  # inverse softplus
        if perturb:
            lin.weight.add_(perturb * torch.randn(lin.weight.shape, generator=g, dtype=torch.float64))
            lin.bias.add_(perturb * torch.randn(lin.bias.shape, generator=g, dtype=torch.float64))
    marginal = MultivariateNormal(b, W @ W.T + SIGMA**2 * torch.eye(D, dtype=torch.float64))
    return model.eval(), marginal


def data(marginal, n: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return marginal.sample((n,)).view(n, 1, 1, D)


LOG2PI = math.log(2 * math.pi)


def loss_and_gradient(objective, model, x: torch.Tensor, seed: int = 2):
    """An objective's loss on ``x``, its draws made from ``seed``, and the gradient of its sum in
    the model's parameters (None for a parameter it does not reach): two objectives that are one
    bound give the same of both."""
    torch.manual_seed(seed)
    loss = objective(model, x).loss
    return loss.detach(), torch.autograd.grad(loss.sum(), list(model.parameters()), allow_unused=True)
