"""A check of a training gradient that no value shows: autograd's directional derivative of a
loss, with its random numbers fixed by a seed, against a central finite difference (float64).
A detached or non-reparameterized draw leaves every value as it was and changes the gradient."""

import torch


def check_directional_derivative(loss, params: list[torch.Tensor], seed: int = 0, h: float = 1e-6) -> None:
    """``loss()``: a scalar computed from ``params`` with draws from torch's global RNG."""
    g = torch.Generator().manual_seed(seed + 10)
    direction = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    torch.manual_seed(seed)
    grads = torch.autograd.grad(loss(), params, allow_unused=True)
    analytic = float(sum((gr * v).sum() for gr, v in zip(grads, direction) if gr is not None))
    values = []
    with torch.no_grad():
        for step in (h, -2 * h, h):  # up, down, back
            for p, v in zip(params, direction):
                p.add_(step * v)
            if len(values) < 2:
                torch.manual_seed(seed)
                values.append(loss().item())
    numeric = (values[0] - values[1]) / (2 * h)
    assert abs(analytic - numeric) <= 1e-5 * (1 + abs(numeric)), (analytic, numeric)
