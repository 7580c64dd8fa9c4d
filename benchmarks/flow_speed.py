"""Training and sampling speed of a RealNVP: dgmkit against zuko, side by side in one run.

The same architecture in both: 8 affine couplings on alternating (checkered) masks of the
784 pixels, each conditioned by an MLP 392 -> 512 -> 512 -> 2 x 392 (ReLU) on the kept half,
a bounded log-scale, a standard normal base; Adam with the same settings; batches of 128 real
MNIST images, dequantized and logit-transformed once beforehand (the pre-processing is not
timed). Blocks of steps alternate between the two libraries and the medians are compared.

    pip install -r benchmarks/requirements.txt   # zuko, for this benchmark only
    python benchmarks/flow_speed.py
"""

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import dataset, machine, no_arguments  # noqa: E402

from dgmkit.models import FlowModel  # noqa: E402
from dgmkit.transforms import Logit, realnvp  # noqa: E402

D, LAYERS, HIDDEN, BATCH, SAMPLES = 784, 8, (512, 512), 128, 256


def data() -> torch.Tensor:
    x = dataset("mnist").train.x[:20000]
    y = (x.float() + torch.rand(x.shape, generator=torch.Generator().manual_seed(0))) / 256
    z, _ = Logit(0.05)(y.flatten(1))
    return z.contiguous()


def build():
    try:
        import zuko
    except ImportError:
        sys.exit("this benchmark compares with zuko: pip install -r benchmarks/requirements.txt")
    torch.manual_seed(0)
    ours = FlowModel(realnvp(D, list(HIDDEN), LAYERS), (D,), flatten=True)
    theirs = zuko.flows.RealNVP(D, transforms=LAYERS, hidden_features=HIDDEN)
    return ours, theirs, zuko.__version__


def train_block(log_prob, params, x: torch.Tensor, steps: int, g: torch.Generator) -> float:
    opt = torch.optim.Adam(params, lr=1e-4)
    t0 = time.perf_counter()
    for _ in range(steps):
        xb = x[torch.randint(0, len(x), (BATCH,), generator=g)]
        loss = -log_prob(xb).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * BATCH / (time.perf_counter() - t0)


@torch.no_grad()
def sample_block(draw, reps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(reps):
        draw()
    return reps * SAMPLES / (time.perf_counter() - t0)


def main() -> None:
    no_arguments(__doc__)
    x = data()
    ours, theirs, version = build()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_theirs = sum(p.numel() for p in theirs.parameters())
    print(f"# RealNVP {D}-D, {LAYERS} couplings, MLP {HIDDEN}: dgmkit {n_ours} parameters, zuko {version} {n_theirs}")
    print(f"# {machine()}")
    runs = {
        "dgmkit train": lambda g: train_block(ours.log_prob, ours.parameters(), x, 20, g),
        "zuko train": lambda g: train_block(lambda b: theirs().log_prob(b), theirs.parameters(), x, 20, g),
        "dgmkit sample": lambda g: sample_block(lambda: ours.sample(SAMPLES), 10),
        "zuko sample": lambda g: sample_block(lambda: theirs().sample((SAMPLES,)), 10),
    }
    for fn in runs.values():  # warm-up: allocator, kernels
        fn(torch.Generator().manual_seed(0))
    rates = {k: [] for k in runs}
    for rep in range(7):
        for name, fn in runs.items():  # interleaved, so drifts in machine load hit both alike
            rates[name].append(fn(torch.Generator().manual_seed(rep)))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in med.items():
        print(f"{k:14s} {v:9.0f} images/s   (runs: {', '.join(f'{r:.0f}' for r in rates[k])})")
    print(f"ratio train  dgmkit/zuko = {med['dgmkit train'] / med['zuko train']:.3f}   (target >= 1)")
    print(f"ratio sample dgmkit/zuko = {med['dgmkit sample'] / med['zuko sample']:.3f}   (target >= 1)")


if __name__ == "__main__":
    main()
