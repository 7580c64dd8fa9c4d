"""Speed and memory of the importance-sampled log-likelihood (k = 5000) on 1000 test images.

The 784-512-256-32 MLP Bernoulli VAE (trained for one epoch first, so the numbers are those
of a real model) on 1000 images drawn at random (seed 0) from the static binarized MNIST test
set. Prints the seconds, the peak resident memory during the evaluation, and
``matmul fraction: X``: the decoder's (and encoder's) FLOPs per second divided by the
machine's fp32 matrix-multiply throughput, measured in the same run as the best of several
4096x4096 products before and after the evaluation (this machine's timings vary by 10-20%).

    python benchmarks/eval_speed.py [--k 5000] [--n 1000]
"""

import argparse
import gc
import time

import torch
from _common import REFERENCE, binarized_mnist, count, machine

from dgmkit.config import build_model, build_objective, trainer_options
from dgmkit.data import make_transform
from dgmkit.evaluation import importance_sampled_log_likelihood
from dgmkit.training import Trainer


def peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # Linux: "5" resets the peak RSS (VmHWM)
        f.write("5")


def peak_rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def matmul_peak(size: int = 4096, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - t0))
    return best


def mlp_flops(sizes: list[int]) -> int:
    return 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=count, default=5000)
    ap.add_argument("--n", type=count, default=1000)
    args = ap.parse_args()
    print(f"machine: {machine()}")
    dataset = binarized_mnist()
    cfg = REFERENCE.replace(epochs=1)
    model = build_model(cfg, dataset.event_shape, dataset.num_levels)
    Trainer(
        model,
        build_objective(cfg),
        dataset.train,
        make_transform("bernoulli", dataset),
        progress=False,
        **trainer_options(cfg),
    ).fit()
    idx = torch.randperm(len(dataset.test), generator=torch.Generator().manual_seed(0))[: args.n]
    x = dataset.test.x[idx].float()
    if len(x) < args.n:
        print(f"--n {args.n}: the test split holds {len(x)} images; all of them are scored")
    n = len(x)
    del dataset
    gc.collect()
    importance_sampled_log_likelihood(model, x[:8], k=500)  # warm-up
    peak_before = matmul_peak()
    peak_rss_reset()
    t0 = time.perf_counter()
    ll = importance_sampled_log_likelihood(model, x, k=args.k, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - t0
    rss = peak_rss_mib()
    flops = n * args.k * mlp_flops([32, 256, 512, 784]) + n * mlp_flops([784, 512, 256, 64])
    peak = max(peak_before, matmul_peak())  # the better of before and after: the conservative fraction
    print(f"NLL (k={args.k}, {n} random test images, 1-epoch model): {-ll.mean():.2f} nats")
    print(f"seconds: {seconds:.1f}")
    print(f"peak memory: {rss:.0f} MiB (resident, whole process, during the evaluation)")
    print(f"achieved: {flops / seconds / 1e9:.1f} GFLOP/s; machine fp32 matmul: {peak / 1e9:.1f} GFLOP/s")
    print(f"matmul fraction: {flops / seconds / peak:.3f}")


if __name__ == "__main__":
    main()
