"""dgmkit's MADE against a minimal reference MADE written here, trained side by side.

Both: one hidden layer of 500 ReLU units, natural order, Bernoulli outputs; the reference draws
hidden degrees uniformly (the usual rule), dgmkit spreads them evenly. The first 10000 static
binarized MNIST training images, Adam 1e-3, batches of 100, 8 epochs; mean NLL (nats) on those
10000 training images and on all 10000 validation images after each epoch. Agreement says the masks and
likelihood are right, so a gap to a paper's number lies in the training protocol.

    python benchmarks/made_reference.py
"""

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import binarized_mnist, machine, no_arguments  # noqa: E402

from dgmkit.conditional import BernoulliHead  # noqa: E402
from dgmkit.models.autoregressive import MADEARM  # noqa: E402


class ReferenceMADE(torch.nn.Module):
    def __init__(self, d: int = 784, h: int = 500):
        super().__init__()
        rng = np.random.RandomState(0)
        m0, m1 = np.arange(d), rng.randint(0, d - 1, size=h)
        self.l1, self.l2 = torch.nn.Linear(d, h), torch.nn.Linear(h, d)
        self.register_buffer("k1", torch.tensor((m0[None, :] <= m1[:, None]).astype(np.float32)))
        self.register_buffer("k2", torch.tensor((m1[None, :] < m0[:, None]).astype(np.float32)))

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)
        h = torch.relu(F.linear(v, self.l1.weight * self.k1, self.l1.bias))
        return F.binary_cross_entropy_with_logits(
            F.linear(h, self.l2.weight * self.k2, self.l2.bias), v, reduction="none"
        ).sum(1)


def main() -> None:
    no_arguments(__doc__)
    torch.manual_seed(0)
    data = binarized_mnist()
    x, xv = data.train.x[:10000].float(), data.valid.x.float()
    ours = MADEARM(BernoulliHead(), (1, 28, 28), hidden=[500])
    ref = ReferenceMADE()
    print(f"# {machine()}")
    for name, model, nll in (("dgmkit", ours, lambda v: -ours.log_prob(v)), ("reference", ref, ref.nll)):
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        g = torch.Generator().manual_seed(0)
        for epoch in range(1, 9):
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), 100):
                loss = nll(x[perm[i : i + 100]]).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                print(f"{name:9s} epoch {epoch}  train {nll(x).mean():8.3f}  valid {nll(xv).mean():8.3f}", flush=True)


if __name__ == "__main__":
    main()
