"""A masked diffusion model's bound against the exact likelihood of a mixture of M orders from
the same network (``dgm eval --orders M``), on all 300 test images of the embedded digits.

    dgm train --model diffusion --process masked --dataset digits --unet-channels 32 64 \\
        --epochs 40 --batch-size 64 --ema 0.999 --out runs/masked-digits-ao
    python benchmarks/any_order_digits.py runs/masked-digits-ao

Rows: the count-form bound with 64 times per image (dgm eval's time-sampled estimate); then for
M orders drawn with seed 0 the exact NLL of their mixture, and beside it the mean of the M
per-order NLLs (an upper bound on the mixture's NLL that estimates the any-order bound, the same
bound as the first row's); then M = 4 with seeds 1 to 3 (other orders: the spread of the exact
NLL over the choice of orders, a property of the mixture, not noise of an estimate).
"""

import time

from _common import masked_diffusion_run, the_argument

from dgmkit.cli.common import split_data
from dgmkit.evaluation import evaluate


def main(run_dir: str) -> None:
    run = masked_diffusion_run(run_dir)  # (another run: said in words, not an AttributeError)
    model = run.model.eval()
    x, _ = split_data(run, "test")
    d = x[0].numel()
    print(f"{run_dir}: {len(x)} test images of {d} entries, {model.num_levels} levels")
    t0 = time.perf_counter()
    r = evaluate(model, x, iw_samples=64, seed=0)
    took = time.perf_counter() - t0
    print(f"bound, 64 times per image        : -ELBO {r.nll:8.3f} +- {r.nll_stderr:.3f} nats  ({took:.1f} s)")
    for m, seed in [(1, 0), (2, 0), (4, 0), (8, 0), (16, 0), (32, 0), (4, 1), (4, 2), (4, 3)]:
        t0 = time.perf_counter()
        r = evaluate(model, x, seed=seed, orders=m)
        print(
            f"mixture of {m:2d} orders (seed {seed})   : NLL {r.nll:8.3f} +- {r.nll_stderr:.3f} nats exact; "
            f"mean over the orders {-r.elbo:8.3f}  ({time.perf_counter() - t0:.1f} s)"
        )


if __name__ == "__main__":
    main(the_argument(__doc__, "runs/masked-digits-ao"))
