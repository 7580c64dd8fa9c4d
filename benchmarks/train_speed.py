"""Training throughput: dgmkit's Trainer against a minimal plain PyTorch loop, same model.

The 784-512-256-32 MLP Bernoulli VAE on static binarized MNIST, batch 128, Adam 1e-3, one
sample per datapoint. Both loops train the same number of steps in this process, after a
warm-up, alternating over several rounds; the median images/s of each is reported, and
``ratio: X`` = dgmkit / plain. The Trainer's time includes everything a real run does per
epoch except validation (no validation split is given): checkpoint writing, metrics, the
NaN guard and the progress bookkeeping.

The Trainer uses Adam's fused kernel, which a minimal loop does not; so the script also times
the plain loop with ``fused=True`` and prints ``ratio (same optimizer)``, which isolates what
the framework itself costs.

    python benchmarks/train_speed.py [--epochs 2] [--rounds 3]
"""

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from _common import REFERENCE, binarized_mnist, count, machine
from torch import nn

from dgmkit.config import build_model, build_objective, trainer_options
from dgmkit.data import make_transform
from dgmkit.training import Trainer


class PlainVAE(nn.Module):
    """The same model written out by hand."""

    def __init__(self, d=784, h=(512, 256), m=32):
        super().__init__()
        self.m = m
        self.enc = nn.Sequential(nn.Linear(d, h[0]), nn.ReLU(), nn.Linear(h[0], h[1]), nn.ReLU(), nn.Linear(h[1], 2 * m))
        self.dec = nn.Sequential(nn.Linear(m, h[1]), nn.ReLU(), nn.Linear(h[1], h[0]), nn.ReLU(), nn.Linear(h[0], d))

    def loss(self, x):
        mu, raw = self.enc(x).split(self.m, dim=-1)
        std = F.softplus(raw) + 1e-4
        z = mu + std * torch.randn_like(std)
        rec = -F.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        kl = (-torch.log(std) + 0.5 * (std**2 + mu**2) - 0.5).sum(-1)
        return -(rec - kl).mean()


def plain_loop(x: torch.Tensor, epochs: int, batch_size: int, seed: int, fused: bool = False) -> float:
    torch.manual_seed(seed)
    model = PlainVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
    n = len(x)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(n)
        for i in range(0, n, batch_size):
            loss = model.loss(x[perm[i : i + batch_size]])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return epochs * n / (time.perf_counter() - t0)


def dgmkit_loop(dataset, epochs: int, batch_size: int, seed: int) -> float:
    cfg = REFERENCE.replace(epochs=epochs, batch_size=batch_size, seed=seed)
    model = build_model(cfg, dataset.event_shape, dataset.num_levels)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(
            model,
            build_objective(cfg),
            dataset.train,
            make_transform("bernoulli", dataset),
            run_dir=run_dir,
            progress=False,
            **trainer_options(cfg),
        )
        t0 = time.perf_counter()
        trainer.fit()
        return epochs * len(dataset.train) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=count, default=2, help="epochs per timed run (391 steps of 128 each)")
    ap.add_argument("--rounds", type=count, default=3)
    args = ap.parse_args()
    dataset = binarized_mnist()
    x = dataset.train.x.float().flatten(1)
    print(f"machine: {machine()}")
    print("warm-up ...", flush=True)
    plain_loop(x[:12800], 1, 128, 0)
    dgmkit_loop(dataset, 1, 128, 0)
    plain, fused, ours = [], [], []
    for r in range(args.rounds):
        plain.append(plain_loop(x, args.epochs, 128, r))
        ours.append(dgmkit_loop(dataset, args.epochs, 128, r))
        fused.append(plain_loop(x, args.epochs, 128, r, fused=True))
        print(
            f"round {r + 1}: plain {plain[-1]:8.0f}   dgmkit {ours[-1]:8.0f}   plain+fused Adam {fused[-1]:8.0f} images/s",
            flush=True,
        )
    p, f, o = statistics.median(plain), statistics.median(fused), statistics.median(ours)
    print(f"plain PyTorch loop:            {p:.0f} images/s (median of {args.rounds})")
    print(f"plain loop with fused Adam:    {f:.0f} images/s")
    print(f"dgmkit Trainer (fused Adam):   {o:.0f} images/s")
    print(f"ratio (same optimizer): {o / f:.3f}")
    print(f"ratio: {o / p:.3f}")


if __name__ == "__main__":
    main()
