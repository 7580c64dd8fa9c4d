"""Sampling speed of an autoregressive model: the cached path against the naive path (a full
network pass per pixel), side by side, drawing the same images from the same uniforms.

    python benchmarks/arm_sampling.py [RUN_DIR]

With a run folder (a trained --model arm run) its model is used; without one, a
randomly initialised gated PixelCNN of 64 channels and 8 layers on 28x28 binary images (the speed does
not depend on the weights).
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, run_of, the_argument  # noqa: E402

from dgmkit.conditional import BernoulliHead  # noqa: E402
from dgmkit.models.autoregressive import AutoregressiveModel, GatedPixelCNN  # noqa: E402


def main() -> None:
    if len(sys.argv) > 1:
        what = the_argument(__doc__)
        run = run_of(what)
        if not isinstance(run.model, AutoregressiveModel):  # (no cached and naive paths to time: said in words)
            sys.exit(f"{what} holds {run.cfg.model.describe()}, not an autoregressive model (a --model arm run)")
        model = run.model
    else:
        torch.manual_seed(0)
        model, what = GatedPixelCNN(BernoulliHead(), (1, 28, 28), channels=64, layers=8).eval(), "random weights"
    n_naive, n_cached = 8, 256
    print(f"# {type(model).__name__} ({what}), images {model.event_shape}; {machine()}")
    u = torch.rand(n_cached, model.num_dims, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model.sample_from_noise(u[:2], cached=True)  # warm-up
    t0 = time.perf_counter()
    cached = model.sample_from_noise(u, cached=True)
    t_cached = time.perf_counter() - t0
    t0 = time.perf_counter()
    naive = model.sample_from_noise(u[:n_naive], cached=False)
    t_naive = time.perf_counter() - t0
    same = torch.equal(naive, cached[:n_naive])
    print(f"naive : {n_naive:4d} images in {t_naive:7.1f} s = {n_naive / t_naive:8.3f} images/s")
    print(f"cached: {n_cached:4d} images in {t_cached:7.1f} s = {n_cached / t_cached:8.3f} images/s")
    print(f"speed-up {(n_cached / t_cached) / (n_naive / t_naive):.1f}x; the first {n_naive} images identical: {same}")


if __name__ == "__main__":
    main()
